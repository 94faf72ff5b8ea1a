"""test_blo.py: the Python package (python/blo) against libblo.

Run by tests/run_python.sh; prints "python: N passed, M failed".  Numbers are
checked against closed forms, NumPy, finite differences, or the blo program
itself (BLO: path of the CLI)."""
import gc
import os
import subprocess
import sys
import tempfile
import threading
import unittest
import warnings

import numpy as np

import blo

BLO = os.environ.get("BLO", "blo")


def collect(state_kwargs=None):
    out = []
    s = blo.State(output=out.append, **(state_kwargs or {}))
    return s, out


class Basics(unittest.TestCase):
    def test_version_tables(self):
        self.assertRegex(blo.version(), r"^\d+\.\d+\.\d+$")
        self.assertEqual(blo.__version__, blo.version())
        kw = dict(blo.keywords())
        self.assertEqual(len(kw), 21)
        self.assertIn("solve", kw)
        self.assertIn("with", kw["solve"])
        names = [b[0] for b in blo.builtins()]
        self.assertIn("sum", names)
        self.assertEqual(len(names), len(set(names)))
        self.assertTrue(all(sig and doc for _, sig, doc in blo.builtins()))
        self.assertTrue(blo.input_complete("let x = 1"))
        self.assertFalse(blo.input_complete("fn f(x) {"))
        self.assertFalse(blo.input_complete('let s = "ab'))

    def test_eval_and_output(self):
        s, out = collect()
        s.eval('print "héllo", 1 + 2')
        self.assertEqual("".join(out), "héllo 3\n")
        s.eval("let x = 4")
        s.eval("let y = x * 2")   # definitions persist
        self.assertEqual(s["y"], 8.0)
        self.assertIsInstance(s["y"], float)
        self.assertEqual(s.eval_echo("y + 1"), "9")
        self.assertIsNone(s.eval_echo("let z = 1"))
        self.assertEqual(s.eval_echo('"q"'), '"q"')

    def test_output_default_is_stdout(self):
        import io
        s = blo.State()
        old, sys.stdout = sys.stdout, io.StringIO()
        try:
            s.eval('print "to stdout"')
            got = sys.stdout.getvalue()
        finally:
            sys.stdout = old
        self.assertEqual(got, "to stdout\n")

    def test_run_file_with_args(self):
        s, out = collect()
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "a.blo")
            with open(p, "w") as f:
                f.write('let n = len(args)\nprint args[0], args[1]\n')
            s.run_file(p, args=["first", "2nd"])
            self.assertEqual(s["n"], 2.0)
            self.assertEqual("".join(out), "first 2nd\n")
            self.assertEqual(s["args"], ["first", "2nd"])
            with self.assertRaises(blo.EvalError) as c:
                s.run_file(os.path.join(d, "missing.blo"))
            self.assertIn("cannot open", c.exception.message)
            with self.assertRaises(blo.EvalError):
                s.run_file(d)      # a directory
        s.set_args([])
        self.assertEqual(s["args"], [])

    def test_context_manager_and_close(self):
        with blo.State() as s:
            s.eval("let a = 1")
        with self.assertRaises(blo.ArgumentError):
            s.eval("let b = 2")
        with self.assertRaises(blo.ArgumentError):
            s["a"]
        s.close()   # twice is fine

    def test_introspection(self):
        s = blo.State()
        s.eval('let t = zeros(2, 3)\nlet r = {F = 1, sub = {g = 2}}\nfn area(w, h) = w * h\n'
               'let l = ["a", {b = 1}]')
        self.assertEqual(s.kind("t"), "tensor")
        self.assertEqual(s.kind("r"), "record")
        self.assertEqual(s.kind("area"), "function")
        self.assertEqual(s.kind("l"), "list")
        self.assertEqual(s.describe("t"), "tensor [2, 3]")
        self.assertEqual(s.describe("l"), "list of 2")
        self.assertIsNone(s.describe("nothing"))
        self.assertEqual(s.format("r"), "{F = 1, sub = {g = 2}}")
        self.assertIsNone(s.format("nothing"))
        self.assertEqual(s.fields("r"), ["F", "sub"])
        self.assertEqual(s.fields("t"), [])
        for n in ("t", "r", "area", "l", "args"):
            self.assertIn(n, s.globals())
        self.assertIn("r.sub.g", s)
        self.assertNotIn("r.sub.h", s)
        self.assertEqual(s.help("area"), ("area(w, h)", "function defined in the script"))
        sig, doc = s.help("sum")
        self.assertIn("sum(", sig)
        self.assertEqual(s.help("while")[0], "while (keyword)")
        self.assertIsNone(s.help("t"))
        self.assertIsNone(s.help("no_such"))
        f = s["area"]
        self.assertIsInstance(f, blo.Opaque)
        self.assertEqual(f.kind, "function")
        self.assertIn("function", repr(f))
        self.assertEqual(s.get("nothing", 7), 7)
        self.assertEqual(s.get("r.F"), 1.0)

    def test_completions(self):
        s = blo.State()
        s.eval("let result_a = {F = 1, Fx = 2, g = 3}\nlet resolution = 2")
        self.assertEqual(s.completions("result_a.F"), ["result_a.F", "result_a.Fx"])
        c = s.completions("res")
        self.assertIn("result_a", c)
        self.assertIn("resolution", c)
        self.assertIn("return", s.completions("ret"))       # a keyword
        self.assertIn("sum", s.completions("su"))
        self.assertEqual(s.completions("nothing."), [])
        s.eval("problem pz {\n outer x : [1] = [1]\n inner y : [1] = [0]\n"
               " inner minimize sum((y - x)^2)\n outer minimize sum(y^2)\n}\nlet pzz = 1")
        self.assertEqual(s.complete("let r = solve p"), (14, ["pz"]))
        self.assertEqual(s.complete("solve pz with {hypergrad = c")[1], ["cg"])
        self.assertEqual(s.complete("solve pz with {outer_st")[1], ["outer_steps"])
        self.assertEqual(s.complete("solve pz with {inner_opt = a")[1], ["adam"])
        # the cursor is a character offset; text after it is ignored
        self.assertEqual(s.complete("print 'é' + res + 1", 15), (12, ["reshape", "resolution", "result_a"]))


class Arrays(unittest.TestCase):
    def roundtrip(self, a):
        s = blo.State()
        s["A"] = a
        back = s["A"]
        want = np.asarray(a, dtype=np.float64)
        if want.ndim == 0:
            self.assertIsInstance(back, float)
            self.assertEqual(back, float(want))
            return
        self.assertEqual(back.dtype, np.float64)
        self.assertEqual(back.shape, want.shape)
        self.assertTrue(np.array_equal(back, want))
        self.assertTrue(back.flags.c_contiguous and back.flags.writeable)
        # the script sees the same row-major layout: sum and first/last elements
        s.eval("let total = sum(A)")
        self.assertAlmostEqual(s["total"], float(np.sum(want)), delta=1e-12 * max(1, np.abs(want).sum()))

    def test_every_rank(self):
        rng = np.random.default_rng(0)
        self.roundtrip(3.5)
        self.roundtrip(np.float64(-2))
        self.roundtrip(np.array(7.25))
        for rank in range(1, 7):
            shape = tuple(int(n) for n in rng.integers(1, 4, size=rank))
            self.roundtrip(rng.standard_normal(shape))

    def test_index_order(self):
        s = blo.State()
        a = np.arange(24, dtype=float).reshape(2, 3, 4)
        s["A"] = a
        s.eval("let e = A[1, 2, 3]\nlet r = A[0][1]")
        self.assertEqual(s["e"], a[1, 2, 3])
        self.assertTrue(np.array_equal(s["r"], a[0, 1]))

    def test_noncontiguous_and_dtypes(self):
        base = np.arange(60, dtype=float).reshape(6, 10)
        for a in (base[::2, 1::3], base.T, base[:, 3], np.asfortranarray(base),
                  base.astype(np.float32) / 7, base.astype(np.int64), base[::-1, ::-2].astype(np.float32),
                  np.array([[True, False], [False, True]])):
            self.roundtrip(a)
        s = blo.State()
        f32 = (np.arange(5, dtype=np.float32) / 3)
        s["v"] = f32
        # float32 values widen exactly
        self.assertTrue(np.array_equal(s["v"], f32.astype(np.float64)))
        s["lst"] = [[1, 2], [3, 4]]
        self.assertTrue(np.array_equal(s["lst"], [[1.0, 2.0], [3.0, 4.0]]))

    def test_copies_are_independent(self):
        s = blo.State()
        a = np.ones(3)
        s["a"] = a
        a[0] = 5          # the state holds a copy
        got = s["a"]
        self.assertEqual(got[0], 1.0)
        got[1] = 9        # so does Python
        self.assertEqual(s["a"][1], 1.0)

    def test_view(self):
        s = blo.State()
        s.eval("let w = [1, 2, 3]\nlet n = 4")
        with s.view("w") as v:
            self.assertTrue(np.array_equal(v, [1, 2, 3]))
            self.assertFalse(v.flags.writeable)
            with self.assertRaises(ValueError):
                v[0] = 2
            with self.assertRaises(blo.ArgumentError):   # nothing may free it meanwhile
                s.eval("let w = 0")
            with self.assertRaises(blo.ArgumentError):
                s["w"] = 1
            w2 = np.array(v)
        s.eval("let w = 0")   # usable after the block
        self.assertTrue(np.array_equal(w2, [1, 2, 3]))
        with s.view("n") as v:
            self.assertEqual(v.shape, ())
            self.assertEqual(float(v), 4.0)
        with self.assertRaises(blo.ArgumentError):
            with s.view("nothing"):
                pass
        s.eval('let str = "x"')
        with self.assertRaises(blo.ArgumentError):
            with s.view("str"):
                pass
        s.eval("let after = 1")

    def test_strings_records_lists(self):
        s = blo.State()
        s["name"] = "wörld"
        s.eval('let g = "hello " + name\nlet z = "a\\0b"\n'
               'let r = {F = 1.5, v = [1, 2], s = "t", sub = {k = 2}, l = [{x = 1}, "y", [3, 4]]}\n'
               'let empty = []')
        self.assertEqual(s["g"], "hello wörld")
        self.assertEqual(s["z"], "a\0b")
        r = s["r"]
        self.assertEqual(list(r), ["F", "v", "s", "sub", "l"])
        self.assertEqual(r["F"], 1.5)
        self.assertTrue(np.array_equal(r["v"], [1, 2]))
        self.assertEqual(r["s"], "t")
        self.assertEqual(r["sub"], {"k": 2.0})
        self.assertEqual(r["l"][0], {"x": 1.0})
        self.assertEqual(r["l"][1], "y")
        self.assertTrue(np.array_equal(r["l"][2], [3, 4]))
        self.assertEqual(s["r.l[1]"], "y")
        self.assertEqual(s["empty"], [])

    def test_records_and_lists_round_trip(self):
        s = blo.State()
        rng = np.random.default_rng(4)
        m = rng.standard_normal((3, 2))
        cfg = {"lr": 0.1 / 3, "name": 'q"uote\\', "flag": True, "w": m, "sub": {"k": [1.5, np.inf], "e": []},
               "items": ["a", {"x": 2}], "big": 1e300, "tiny": 5e-324, "neg": -0.0, "n": np.float32(0.25)}
        s["cfg"] = cfg
        back = s["cfg"]
        self.assertEqual(list(back), list(cfg))
        self.assertEqual(back["lr"], 0.1 / 3)                     # bit for bit
        self.assertEqual(back["name"], 'q"uote\\')
        self.assertEqual(back["flag"], 1.0)
        self.assertTrue(np.array_equal(back["w"], m))             # every bit of every entry
        self.assertTrue(np.array_equal(back["sub"]["k"], [1.5, np.inf]))
        self.assertEqual(back["sub"]["e"], [])
        self.assertEqual(back["items"], ["a", {"x": 2.0}])
        self.assertEqual((back["big"], back["tiny"], back["n"]), (1e300, 5e-324, 0.25))
        s.eval("let lr2 = cfg.lr * 3\nlet total = sum(cfg.w)")
        self.assertAlmostEqual(s["total"], float(m.sum()), delta=1e-14)
        s["names"] = ["x", "y"]
        self.assertEqual(s["names"], ["x", "y"])

    def test_bad_values(self):
        s = blo.State()
        with self.assertRaises(blo.ArgumentError):
            s["A"] = np.zeros((1,) * 7)          # rank 7
        with self.assertRaises(blo.ArgumentError):
            s["A"] = np.zeros((2, 0))            # zero dimension
        with self.assertRaises(blo.ArgumentError):
            s["let"] = 1                         # a keyword
        with self.assertRaises(blo.ArgumentError):
            s["a.b"] = 1                         # not a name
        with self.assertRaises(blo.ArgumentError):
            s["x"] = "nul\0inside"
        with self.assertRaises(TypeError):
            s["d"] = None
        with self.assertRaises(TypeError):
            s["d"] = {"a": object()}
        with self.assertRaises(blo.ArgumentError):
            s["d"] = {"not a name": 1}
        with self.assertRaises(blo.ArgumentError):
            s["while"] = {"a": 1}
        with self.assertRaises(TypeError):
            s["d"] = object()
        with self.assertRaises(TypeError):
            s[3] = 1
        with self.assertRaises(blo.ArgumentError) as c:
            s["nothing"]
        self.assertIn("no value named 'nothing'", c.exception.message)
        with self.assertRaises(blo.ArgumentError):
            s.kind("nothing")
        s["ok"] = 1
        self.assertEqual(s["ok"], 1.0)


class Errors(unittest.TestCase):
    def test_syntax_error_located(self):
        s = blo.State()
        with self.assertRaises(blo.ParseError) as c:
            s.eval("let x = (1 +\nlet y = 2", name="cell.blo")
        e = c.exception
        self.assertIsInstance(e, blo.Error)
        self.assertEqual(e.file, "cell.blo")
        self.assertEqual(e.status, 1)
        self.assertGreater(e.line, 0)
        self.assertIn("error:", e.text)
        self.assertIn("^", e.text)
        self.assertEqual(str(e), e.text)
        s.eval("let ok = 1")
        self.assertEqual(s["ok"], 1.0)

    def test_runtime_error_located_and_state_usable(self):
        s = blo.State()
        s.eval("let a = 1")
        with self.assertRaises(blo.EvalError) as c:
            s.eval("let b = 2\nlet c = [1, 2] + [1, 2, 3]")
        e = c.exception
        self.assertEqual((e.file, e.line, e.column), ("<python>", 2, 16))
        self.assertIn("[2] and [3]", e.message)
        self.assertTrue(e.text.startswith("<python>:2:16: error: "))
        self.assertIn("\n  let c = [1, 2] + [1, 2, 3]\n", e.text)
        self.assertEqual(s["b"], 2.0)      # ran before the error
        s.eval("let d = a + b")
        self.assertEqual(s["d"], 3.0)
        with self.assertRaises(blo.EvalError) as c:
            s.eval('assert(1 == 2, "custom")')
        self.assertIn("custom", c.exception.message)

    def test_memory_cap(self):
        s = blo.State(mem_cap=10000)
        with self.assertRaises(blo.OutOfMemory):
            s.eval("let big = zeros(1000, 1000)")
        with self.assertRaises(blo.OutOfMemory):
            s["big"] = np.zeros(5000)
        s.eval("let small = zeros(10)")
        self.assertEqual(s["small"].shape, (10,))
        with self.assertRaises(ValueError):
            blo.State(mem_cap=-1)

    def test_files_refused(self):
        s = blo.State(allow_files=False)
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(blo.EvalError) as c:
                s.eval('save_npy("%s/a.npy", [1, 2])' % d)
            self.assertIn("disabled", c.exception.message)
            self.assertEqual(os.listdir(d), [])
            t = blo.State(allow_files=True)
            t.eval('save_npy("%s/a.npy", [1, 2])' % d)
            self.assertTrue(np.array_equal(np.load(os.path.join(d, "a.npy")), [1, 2]))

    def test_seed_and_threads(self):
        a, b = blo.State(seed=5), blo.State(seed=5, threads=1)
        a.eval("let r = randn(4)")
        b.eval("let r = randn(4)")
        self.assertTrue(np.array_equal(a["r"], b["r"]))
        c = blo.State(seed=6)
        c.eval("let r = randn(4)")
        self.assertFalse(np.array_equal(a["r"], c["r"]))
        with self.assertRaises(ValueError):
            blo.State(threads=0)

    def test_warning(self):
        got = []
        s = blo.State(warn=got.append)
        s.eval("problem p {\n outer x : [1] = [1]\n inner y : [1] = [0]\n"
               " inner minimize sum((y - x)^2)\n outer minimize sum(y^2)\n}\n"
               "let y = [5]\nlet r = solve p with {outer_steps = 1, start = \"cold\"}")
        self.assertTrue(got and ": warning: " in got[0], got)
        s2 = blo.State()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            s2.eval("problem p {\n outer x : [1] = [1]\n inner y : [1] = [0]\n"
                    " inner minimize sum((y - x)^2)\n outer minimize sum(y^2)\n}\n"
                    "let y = [5]\nlet r = solve p with {outer_steps = 1, start = \"cold\"}")
        self.assertTrue(any(issubclass(x.category, blo.BloWarning) for x in w))

    def test_output_callback_raising(self):
        def bad(text):
            raise RuntimeError("sink broke")
        s = blo.State(output=bad)
        with self.assertRaises(RuntimeError):
            s.eval('print "x"')
        s.eval("let fine = 1")      # the error does not linger
        self.assertEqual(s["fine"], 1.0)

    def test_interrupt_from_another_thread(self):
        s = blo.State()
        t = threading.Timer(0.3, s.interrupt)
        t.start()
        with self.assertRaises(blo.Interrupted) as c:
            s.eval("let i = 0\nwhile true { let i = i + 1 }")
        t.join()
        self.assertEqual(c.exception.status, 5)
        s.eval("let after = 2")     # the flag was cleared
        self.assertEqual(s["after"], 2.0)


RIDGE = """
seed(0)
let Xtr = randn(20, 4)
let ytr = Xtr @ [1, -2, 0, 0.5] + 0.3 * randn(20)
let Xva = randn(50, 4)
let yva = Xva @ [1, -2, 0, 0.5] + 0.3 * randn(50)
problem ridge {
  outer lam : [4] = fill(4, -1.0) in [-6, 2]
  inner w   : [4] = zeros(4)
  inner minimize mean((Xtr @ w - ytr)^2) + sum(exp(lam) * w^2)
  outer minimize mean((Xva @ w - yva)^2)
}
"""


class Solving(unittest.TestCase):
    OPTS = dict(start="warm", inner_steps=30, inner_opt="sgd(lr=0.05)", outer_steps=25,
                outer_opt="adam(lr=0.1)", hypergrad="cg(iters=20)", seed=0)

    def test_option_text(self):
        self.assertEqual(blo.option_text("warm"), '"warm"')
        self.assertEqual(blo.option_text("cg(iters=20)"), "cg(iters=20)")
        self.assertEqual(blo.option_text("trace.csv"), '"trace.csv"')
        self.assertEqual(blo.option_text('a"b\\'), '"a\\"b\\\\"')
        self.assertEqual(blo.option_text(blo.Expr("eta / 2")), "eta / 2")
        self.assertEqual(blo.option_text(True), "true")
        self.assertEqual(blo.option_text(0.1), "0.1")
        self.assertEqual(blo.option_text(float("inf")), "(1 / 0)")
        self.assertEqual(blo.option_text({"a": 1, "b": "x"}), '{a = 1.0, b = "x"}')
        self.assertEqual(blo.option_text([1, 2]), "[1.0, 2.0]")
        self.assertEqual(blo.option_text(np.array([0.5])), "[0.5]")
        with self.assertRaises(TypeError):
            blo.option_text(object())

    def test_solve_matches_cli_to_the_last_digit(self):
        opts = ", ".join("%s = %s" % (k, blo.option_text(v)) for k, v in self.OPTS.items())
        script = RIDGE + ("let r = solve ridge with {%s}\n" % opts) + \
            'print format("%.17g %.17g", r.F, r.f)\nfor v in lam { print format("%.17g", v) }\n' \
            'for v in w { print format("%.17g", v) }\n'
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "ridge.blo")
            with open(p, "w") as f:
                f.write(script)
            cli = subprocess.run([BLO, p], capture_output=True, text=True, check=True).stdout.split()
        s = blo.State()
        s.eval(RIDGE)
        r = s.solve("ridge", **self.OPTS)
        self.assertIsInstance(r, dict)
        self.assertEqual(float(cli[0]), r["F"])
        self.assertEqual(float(cli[1]), r["f"])
        got = list(s["lam"]) + list(s["w"])
        self.assertEqual([float(x) for x in cli[2:]], got)
        self.assertEqual(s["result"]["F"], r["F"])     # bound under result
        r2 = s.solve("ridge", result="second", outer_steps=1)
        self.assertIn("second", s.globals())
        self.assertIn("F", r2)

    def test_progress_and_stop(self):
        s = blo.State()
        s.eval(RIDGE)
        seen = []
        s.solve("ridge", progress=seen.append, outer_steps=7, inner_steps=5)
        self.assertEqual([p.step for p in seen if not p.done], list(range(1, 8)))
        self.assertTrue(seen[-1].done)
        self.assertTrue(all(p.problem == "ridge" and p.steps == 7 for p in seen))
        self.assertTrue(all(p.F > 0 and p.elapsed >= 0 for p in seen))
        steps = []

        def stop_at_3(p):
            steps.append(p.step)
            return p.step < 3 if not p.done else None
        with self.assertRaises(blo.Interrupted) as c:
            s.solve("ridge", progress=stop_at_3, outer_steps=50, inner_steps=5)
        self.assertIn("step 3", c.exception.message)
        self.assertEqual(steps[:3], [1, 2, 3])
        self.assertEqual(len(steps), 4)          # 3 steps and the final report

        def boom(p):
            raise KeyError("from progress")
        with self.assertRaises(KeyError):
            s.solve("ridge", progress=boom, outer_steps=5, inner_steps=5)
        s.solve("ridge", outer_steps=2, inner_steps=5)    # usable afterwards

    def test_progress_true_and_global(self):
        s = blo.State()
        s.eval(RIDGE)
        import io
        old, sys.stderr = sys.stderr, io.StringIO()
        try:
            s.solve("ridge", progress=True, outer_steps=3, inner_steps=5)
            drawn = sys.stderr.getvalue()
        finally:
            sys.stderr = old
        self.assertIn("3/3", drawn)      # tqdm or the text line both show step/steps
        seen = []
        s.set_progress(seen.append)
        s.eval("let q = solve ridge with {outer_steps = 2, inner_steps = 3}")
        self.assertEqual([p.step for p in seen], [1, 2, 2])
        s.set_progress(None)
        s.eval("let q = solve ridge with {outer_steps = 2, inner_steps = 3}")
        self.assertEqual(len(seen), 3)

    def test_solve_errors(self):
        s = blo.State()
        s.eval(RIDGE + "let notp = 1")
        with self.assertRaises(blo.ArgumentError):
            s.solve("nothing")
        with self.assertRaises(blo.ArgumentError):
            s.solve("notp")
        with self.assertRaises(blo.ArgumentError):
            s.solve("ridge", result="let")
        with self.assertRaises(blo.EvalError) as c:
            s.solve("ridge", no_such_option=1)
        self.assertIn("no_such_option", c.exception.message)
        with self.assertRaises(blo.ParseError) as c:
            s.solve("ridge", hypergrad=blo.Expr("cg(iters=)"))
        self.assertEqual(c.exception.file, "<blo_solve>")
        with self.assertRaises(TypeError):
            s.solve("ridge", hypergrad=object())
        r = s.solve("ridge", outer_steps=1, inner_steps=2)
        self.assertIn("F", r)


class Register(unittest.TestCase):
    def test_plain_functions(self):
        s = blo.State()
        s.register("hypot2", lambda a, b: np.hypot(a, b))
        s.register("total", lambda *xs: sum(float(np.sum(x)) for x in xs), doc="adds everything")
        s.register("nothing", lambda x: None)
        s.register("scalar_in", lambda x: (type(x).__name__, x)[1] * 2)
        s.eval("let h = hypot2([3, 5], [4, 12])\nlet t = total(1, [2, 3], [[4]])\nlet t0 = total()\n"
               "let n = nothing(1)\nlet m = scalar_in(4)")
        self.assertTrue(np.array_equal(s["h"], [5, 13]))
        self.assertEqual(s["t"], 10.0)
        self.assertEqual(s["t0"], 0.0)
        self.assertIsNone(s["n"])
        self.assertEqual(s["m"], 8.0)
        self.assertEqual(s.help("total"), ("total(x1)", "adds everything"))
        self.assertEqual(s.help("hypot2")[0], "hypot2(x1, x2)")
        # rank-6 output
        s.register("six", lambda x: np.ones((1, 2, 1, 2, 1, 2)) * x)
        s.eval("let o = six(3)")
        self.assertEqual(s["o"].shape, (1, 2, 1, 2, 1, 2))
        # replacing keeps the binding, the new function runs
        s.register("hypot2", lambda a, b: a + b)
        s.eval("let h = hypot2(1, 2)")
        self.assertEqual(s["h"], 3.0)

    def test_errors_from_python_are_located(self):
        s = blo.State()

        def bad(x):
            raise ValueError("no good")
        s.register("bad", bad)
        with self.assertRaises(blo.EvalError) as c:
            s.eval("let a = 1\nlet y = bad(2)")
        e = c.exception
        self.assertIn("bad(): python: ValueError: no good", e.message)
        self.assertEqual(e.line, 2)
        self.assertIsInstance(e.__cause__, ValueError)
        s.register("two", lambda a, b: a)
        with self.assertRaises(blo.EvalError) as c:
            s.eval("let y = two(1)")
        s.register("rank7", lambda x: np.zeros((1,) * 7))
        with self.assertRaises(blo.EvalError) as c:
            s.eval("let y = rank7(1)")
        self.assertIn("rank 0 to 6", c.exception.message)
        s.register("text", lambda x: "str")
        with self.assertRaises(blo.EvalError):
            s.eval("let y = text(1)")
        with self.assertRaises(blo.EvalError):
            s.eval('let y = two("a", 1)')     # strings are refused by natives
        with self.assertRaises(blo.ArgumentError):
            s.register("let", lambda x: x)
        with self.assertRaises(TypeError):
            s.register("f", 3)
        with self.assertRaises(blo.ArgumentError):   # derivatives need exactly one argument
            s.register("f2", lambda a, b: a, vjp=lambda x, y, g: g, nargs=2)
        capped = blo.State(mem_cap=1000)
        capped.register("big", lambda x: np.zeros(10000))
        with self.assertRaises(blo.OutOfMemory):
            capped.eval("let y = big(1)")
        s.eval("let fine = 1")
        self.assertEqual(s["fine"], 1.0)

    def test_derivatives_against_closed_form(self):
        s = blo.State()
        s.register("cube", lambda x: x ** 3, vjp=lambda x, y, g: 3 * x ** 2 * g, jvp=lambda x, y, t: 3 * x ** 2 * t)
        s.eval("let x = [1, -2, 0.5]\nlet g = grad(sum(cube(x)), x)\n"
               "let jv = jvp(cube(x), x, [1, 1, 1])")
        x = np.array([1, -2, 0.5])
        self.assertTrue(np.allclose(s["g"], 3 * x ** 2, rtol=1e-15, atol=0))
        self.assertTrue(np.allclose(s["jv"], 3 * x ** 2, rtol=1e-15, atol=0))
        s.register("novjp", lambda x: x * 2)
        with self.assertRaises(blo.EvalError):
            s.eval("let g = grad(sum(novjp(x)), x)")
        s.register("wrongshape", lambda x: x * 2, vjp=lambda x, y, g: np.zeros(7))
        with self.assertRaises(blo.EvalError) as c:
            s.eval("let g = grad(sum(wrongshape(x)), x)")
        self.assertIn("vjp returned shape [7], expected [3]", c.exception.message)

    def test_vjp_inside_cg_hypergradient_matches_finite_differences(self):
        """A Python function linear in w (w -> A w) inside the inner objective; the
        cg hypergradient of the validation loss equals central differences of the
        closed-form solution map w*(lam) = (A'A/n + diag(exp lam))^-1 A'y/n."""
        rng = np.random.default_rng(3)
        n, d = 25, 4
        A = rng.standard_normal((n, d))
        y = A @ np.array([1.0, -1.0, 0.5, 0.0]) + 0.2 * rng.standard_normal(n)
        V = rng.standard_normal((40, d))
        yv = V @ np.array([1.0, -1.0, 0.5, 0.0]) + 0.2 * rng.standard_normal(40)
        lam0 = np.array([-1.0, -0.5, 0.0, 0.3])
        s = blo.State()
        calls = {"f": 0, "vjp": 0}

        def apply_A(w):
            calls["f"] += 1
            return A @ w

        def apply_AT(w, out, g):
            calls["vjp"] += 1
            return A.T @ g
        s.register("applyA", apply_A, vjp=apply_AT, jvp=lambda w, out, t: A @ t)
        s["yt"], s["V"], s["yv"], s["lam0"] = y, V, yv, lam0
        s.eval("problem p {\n  outer lam : [4] = lam0\n  inner w : [4] = zeros(4)\n"
               "  inner minimize mean((applyA(w) - yt)^2) + sum(exp(lam) * w^2)\n"
               "  outer minimize mean((V @ w - yv)^2)\n}\n"
               "let g = hypergrad(p, cg(iters = 50, tol = 1e-14), start = \"cold\", inner_steps = 3000, "
               "inner_opt = sgd(lr = 0.2), inner_tol = 1e-13)")

        def F(lam):
            w = np.linalg.solve(A.T @ A / n + np.diag(np.exp(lam)), A.T @ y / n)
            return np.mean((V @ w - yv) ** 2)
        h = 1e-5
        fd = np.array([(F(lam0 + h * e) - F(lam0 - h * e)) / (2 * h) for e in np.eye(d)])
        g = s["g"]
        self.assertGreater(calls["vjp"], 0)
        self.assertLess(np.linalg.norm(g - fd) / np.linalg.norm(fd), 1e-6, (g, fd))


class Threads(unittest.TestCase):
    def test_two_states_two_threads(self):
        def work(k, out):
            s = blo.State(output=lambda t: None)
            s.eval(RIDGE.replace("seed(0)", "seed(%d)" % k))
            r = s.solve("ridge", outer_steps=40, inner_steps=30, hypergrad="cg(iters=20)", start="warm")
            out[k] = (r["F"], s["lam"].copy())
        seq = {}
        for k in (1, 2):
            work(k, seq)
        par = {}
        ts = [threading.Thread(target=work, args=(k, par)) for k in (1, 2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for k in (1, 2):
            self.assertEqual(par[k][0], seq[k][0])
            self.assertTrue(np.array_equal(par[k][1], seq[k][1]))
        self.assertNotEqual(seq[1][0], seq[2][0])

    def test_gc_closes(self):
        s = blo.State()
        s.register("f", lambda x: x)
        del s
        gc.collect()


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    if len(sys.argv) > 1:
        suite = unittest.defaultTestLoader.loadTestsFromNames(sys.argv[1:], sys.modules[__name__])
    r = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(r.failures) + len(r.errors)
    print("python: %d passed, %d failed" % (r.testsRun - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
