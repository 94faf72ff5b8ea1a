"""test_editors.py: the editor support files (editors/) are current, cover the
language's keywords and builtins, and highlight a script as intended.
Prints "editors: N passed, M failed"."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

SRCDIR = os.environ.get("SRCDIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(SRCDIR, "editors"))
import gen_editors  # noqa: E402

SAMPLE = '''# a comment with sum( inside
let w = zeros(3)   # trailing
fn loss(v) = sum(v^2) + 1.5e-3
problem p {
  outer x : [1] = [1] in [0, 2]
  inner y : [1] = [0]
  inner minimize sum((y - x)^2)
  outer minimize sum(y^2)
}
let r = solve p with {hypergrad = cg(iters = 20), quiet = true}
print "text with let and \\"sum(\\" inside", r.F
'''


class Generated(unittest.TestCase):
    def test_files_are_current(self):
        r = subprocess.run([sys.executable, os.path.join(SRCDIR, "editors", "gen_editors.py"), "--check"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_tables_match_the_library(self):
        """The scanner rules and C tables the generator reads are the ones the
        library reports (when the Python package can load it)."""
        try:
            sys.path.insert(0, os.path.join(SRCDIR, "python"))
            import blo
        except ImportError as e:
            self.skipTest("blo package unavailable: %s" % e)
        self.assertEqual(sorted(gen_editors.keywords()), sorted(k for k, _ in blo.keywords()))
        self.assertEqual(gen_editors.builtins(), sorted(set(b for b, _, _ in blo.builtins())))

    def test_every_name_in_every_file(self):
        kws, bis = gen_editors.keywords(), gen_editors.builtins()
        for path in gen_editors.FILES:
            if "ftdetect" in path:
                continue
            with open(os.path.join(SRCDIR, path)) as f:
                text = f.read()
            words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
            for n in kws + bis:
                self.assertIn(n, words, "%s lacks %s" % (path, n))

    def test_emacs_parens_balance(self):
        with open(os.path.join(SRCDIR, "editors", "emacs", "blo-mode.el")) as f:
            src = f.read()
        depth, i = 0, 0
        while i < len(src):
            ch = src[i]
            if ch == ";":
                i = src.index("\n", i)
            elif ch == '"':
                i += 1
                while src[i] != '"':
                    i += 2 if src[i] == "\\" else 1
            elif ch == "?":
                i += 2 if src[i + 1] != "\\" else 3   # character literals ?( ?\n
                continue
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                self.assertGreaterEqual(depth, 0)
            i += 1
        self.assertEqual(depth, 0)


class TextMate(unittest.TestCase):
    """Applies the grammar's top-level patterns the way a TextMate engine does
    (leftmost match, patterns in order), with Python's re standing in for
    Oniguruma (the grammar uses the common subset)."""

    def tokens(self, line):
        with open(os.path.join(SRCDIR, "editors", "blo.tmLanguage.json")) as f:
            g = json.load(f)
        rules = []

        def flat(p):
            if "include" in p:
                flat(g["repository"][p["include"][1:]])
            elif "patterns" in p and "match" not in p and "begin" not in p:
                for q in p["patterns"]:
                    flat(q)
            else:
                rules.append(p)
        for p in g["patterns"]:
            flat(p)
        out, pos = [], 0
        while pos < len(line):
            best = None
            for r in rules:
                m = re.compile(r.get("match") or r["begin"]).search(line, pos)
                if m and (best is None or m.start() < best[0].start()):
                    best = (m, r)
            if not best:
                break
            m, r = best
            end = m.end()
            if "begin" in r:
                # inside: the rule's own patterns (escapes) first, then its end
                inner = [re.compile(q["match"]) for q in r.get("patterns", [])]
                endre, end = re.compile(r["end"]), m.end()
                while end < len(line):
                    q = next((x for x in (i.match(line, end) for i in inner) if x), None)
                    if q:
                        end = q.end()
                        continue
                    e = endre.match(line, end)
                    if e:
                        end = e.end()
                        break
                    end += 1
            if "captures" in r:
                for k, c in r["captures"].items():
                    out.append((m.group(int(k)), c["name"]))
            else:
                out.append((line[m.start():end], r["name"]))
            pos = max(end, pos + 1)
        return out

    def test_sample(self):
        toks = [t for line in SAMPLE.splitlines() for t in self.tokens(line)]
        d = {}
        for text, scope in toks:
            d.setdefault(text, set()).add(scope)
        self.assertEqual(d["# a comment with sum( inside"], {"comment.line.number-sign.blo"})
        self.assertIn("keyword.other.statement.blo", d["let"])
        self.assertIn("support.function.builtin.blo", d["zeros"])
        self.assertIn("support.function.builtin.blo", d["cg"])
        self.assertEqual(d["loss"], {"entity.name.function.blo"})
        self.assertEqual(d["p"] - {"keyword.other.bilevel.blo"}, {"entity.name.type.problem.blo"})
        self.assertIn("keyword.other.bilevel.blo", d["minimize"])
        self.assertIn("keyword.other.bilevel.blo", d["solve"])
        self.assertIn("constant.numeric.blo", d["1.5e-3"])
        self.assertIn("constant.language.boolean.blo", d["true"])
        self.assertIn('"text with let and \\"sum(\\" inside"', d)
        self.assertNotIn("x", d)      # plain names stay plain
        self.assertNotIn("hypergrad", d)


class Vim(unittest.TestCase):
    def test_vim_highlights_the_sample(self):
        if not shutil.which("vim"):
            self.skipTest("vim not installed")
        d = tempfile.mkdtemp()
        try:
            src = os.path.join(d, "s.blo")
            with open(src, "w") as f:
                f.write(SAMPLE)
            out = os.path.join(d, "out.txt")
            # the syntax group of the first character of each word, line by line
            script = os.path.join(d, "probe.vim")
            with open(script, "w") as f:
                f.write("let res = []\n"
                        "for l in range(1, line('$'))\n"
                        "  let txt = getline(l)\n"
                        "  let c = 0\n"
                        "  while 1\n"
                        "    let m = matchstrpos(txt, '\\<\\h\\w*\\|\\d[0-9.e-]*', c)\n"
                        "    if m[1] < 0 | break | endif\n"
                        "    call add(res, m[0] . ' ' . synIDattr(synID(l, m[1] + 1, 1), 'name'))\n"
                        "    let c = m[2]\n"
                        "  endwhile\n"
                        "endfor\n"
                        "call writefile(res, '%s')\n"
                        "qa!\n" % out)
            r = subprocess.run(["vim", "-N", "-u", "NONE", "-i", "NONE", "-es",
                                "--cmd", "set rtp^=" + os.path.join(SRCDIR, "editors", "vim"),
                                "-c", "filetype on", "-c", "syntax on", "-c", "edit " + src,
                                "-c", "source " + script], capture_output=True, text=True, timeout=60)
            with open(out) as f:
                got = [tuple((line + " ").split(" ", 1)) for line in f.read().splitlines()]
        finally:
            shutil.rmtree(d)
        groups = {}
        for w, gname in got:
            groups.setdefault(w, set()).add(gname.strip())
        self.assertEqual(groups["comment"], {"bloComment"})
        self.assertIn("bloStatement", groups["let"])
        self.assertIn("bloBuiltin", groups["zeros"])
        self.assertIn("bloBuiltin", groups["sum"] - {"bloComment", "bloString"})
        self.assertEqual(groups["loss"], {"bloFunction"})
        self.assertIn("bloBilevel", groups["solve"])
        self.assertIn("bloNumber", groups["1.5e-3"])
        self.assertIn("bloBoolean", groups["true"])
        self.assertIn("bloString", groups["text"])
        self.assertEqual(groups["x"], {""})


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    r = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(r.failures) + len(r.errors)
    print("editors: %d passed, %d failed" % (r.testsRun - failed - len(r.skipped), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
