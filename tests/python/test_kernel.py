"""test_kernel.py: the Jupyter kernel (python/blo/kernel) driven through
jupyter_client, and examples/quickstart.ipynb executed through nbclient.

Run by tests/run_jupyter.sh; prints "jupyter: N passed, M failed".  The
kernel spec is installed with `python3 -m blo.kernel install --prefix` into a
temporary directory that JUPYTER_PATH points at."""
import base64
import os
import subprocess
import sys
import tempfile
import time
import unittest

SRCDIR = os.environ.get("SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))
PREFIX = tempfile.mkdtemp(prefix="blo_kernel_")
WORK = tempfile.mkdtemp(prefix="blo_kernel_work_")


def setUpModule():
    subprocess.run([sys.executable, "-m", "blo.kernel", "install", "--prefix", PREFIX], check=True,
                   stdout=subprocess.DEVNULL)
    os.environ["JUPYTER_PATH"] = os.path.join(PREFIX, "share", "jupyter")
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"


def tearDownModule():
    subprocess.run(["rm", "-rf", PREFIX, WORK])


class Kernel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from jupyter_client.manager import start_new_kernel
        cls.km, cls.kc = start_new_kernel(kernel_name="blo", startup_timeout=60, cwd=WORK)

    @classmethod
    def tearDownClass(cls):
        cls.kc.stop_channels()
        cls.km.shutdown_kernel(now=True)

    def reply(self, msg_id, timeout=60):
        while True:
            m = self.kc.get_shell_msg(timeout=timeout)
            if m["parent_header"].get("msg_id") == msg_id:
                return m["content"]

    def iopub(self, msg_id, timeout=60):
        """The iopub messages of a request, up to its idle status."""
        out = []
        while True:
            m = self.kc.get_iopub_msg(timeout=timeout)
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            if m["msg_type"] == "status":
                if m["content"]["execution_state"] == "idle":
                    return out
                continue
            out.append((m["msg_type"], m["content"]))

    def run_cell(self, code, timeout=60):
        msg_id = self.kc.execute(code)
        msgs = self.iopub(msg_id, timeout)
        return self.reply(msg_id, timeout), msgs

    @staticmethod
    def text(msgs, name="stdout"):
        return "".join(c["text"] for t, c in msgs if t == "stream" and c["name"] == name)

    def test_print_and_echo(self):
        r, msgs = self.run_cell('print "hello", 6 * 7\nlet v = [1, 2]\nv * 2')
        self.assertEqual(r["status"], "ok")
        self.assertEqual(self.text(msgs), "hello 42\n")
        results = [c for t, c in msgs if t == "execute_result"]
        self.assertEqual(len(results), 1)
        self.assertEqual(results[0]["data"]["text/plain"], "[2, 4]")
        r, msgs = self.run_cell("let quiet = 1")
        self.assertEqual([t for t, _ in msgs if t == "execute_result"], [])
        r, msgs = self.run_cell("quiet + v[1]")     # state persists across cells
        self.assertEqual([c["data"]["text/plain"] for t, c in msgs if t == "execute_result"], ["3"])

    def test_inline_png(self):
        r, msgs = self.run_cell('plot("a.png", y = [1, 3, 2])\nplot("b.png", x = [1, 2], y = [2, 1])\n'
                                'print "after"')
        self.assertEqual(r["status"], "ok")
        figs = [c for t, c in msgs if t == "display_data" and "image/png" in c["data"]]
        self.assertEqual(len(figs), 2)
        for f, name in zip(figs, ("a.png", "b.png")):
            png = base64.b64decode(f["data"]["image/png"])
            self.assertTrue(png.startswith(b"\x89PNG\r\n\x1a\n"))
            with open(os.path.join(WORK, name), "rb") as fh:
                self.assertEqual(png, fh.read())       # the file plot wrote, as is
        # the figures come before the text printed after them
        kinds = [t for t, _ in msgs]
        self.assertLess(kinds.index("display_data"), kinds.index("stream"))
        r, msgs = self.run_cell('plot("c.svg", y = [1, 2])')
        svg = [c for t, c in msgs if t == "display_data" and "image/svg+xml" in c["data"]]
        self.assertEqual(len(svg), 1)
        self.assertIn("<svg", svg[0]["data"]["image/svg+xml"])

    def test_errors_are_located(self):
        r, msgs = self.run_cell("let a = 1\nlet b = [1, 2] + [1, 2, 3]")
        self.assertEqual(r["status"], "error")
        self.assertEqual(r["ename"], "EvalError")
        errs = [c for t, c in msgs if t == "error"]
        self.assertEqual(len(errs), 1)
        tb = "\n".join(errs[0]["traceback"])
        self.assertIn(":2:16: error: shape mismatch in '+': [2] and [3]", tb)
        self.assertIn("  let b = [1, 2] + [1, 2, 3]\n                 ^", tb)
        r, msgs = self.run_cell("let c = (1 +")
        self.assertEqual(r["ename"], "ParseError")
        r, msgs = self.run_cell("a + 1")       # usable after errors; a was set before the error
        self.assertEqual(r["status"], "ok")
        self.assertEqual([c["data"]["text/plain"] for t, c in msgs if t == "execute_result"], ["2"])

    def test_interrupt_stops_a_solve(self):
        r, _ = self.run_cell("problem slow {\n outer x : [1] = [3]\n inner y : [1] = [0]\n"
                             " inner minimize sum((y - x)^2)\n outer minimize sum(y^2)\n}")
        self.assertEqual(r["status"], "ok")
        msg_id = self.kc.execute("let r = solve slow with {outer_steps = 100000000, inner_steps = 50}")
        time.sleep(1.5)
        t0 = time.monotonic()
        self.km.interrupt_kernel()
        msgs = self.iopub(msg_id, timeout=30)
        r = self.reply(msg_id, timeout=30)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(r["status"], "error")
        self.assertEqual(r["ename"], "Interrupted")
        self.assertIn("interrupted at outer step", r["evalue"])
        # the live progress line: one display, updated in place, ended by the final report
        disp = [c for t, c in msgs if t == "display_data" and "transient" in c]
        upd = [c for t, c in msgs if t == "update_display_data"]
        self.assertEqual(len(disp), 1)
        self.assertGreater(len(upd), 1)
        did = disp[0]["transient"]["display_id"]
        self.assertTrue(all(u["transient"]["display_id"] == did for u in upd))
        self.assertIn("slow: step ", disp[0]["data"]["text/plain"])
        self.assertIn("steps, F = ", upd[-1]["data"]["text/plain"])     # the done report
        # x moved during the solve and the kernel is usable
        r, msgs = self.run_cell("x[0] < 3")
        self.assertEqual([c["data"]["text/plain"] for t, c in msgs if t == "execute_result"], ["1"])
        # an interrupt while idle does not stop the next cell
        self.km.interrupt_kernel()
        time.sleep(0.3)
        r, _ = self.run_cell("let fine = 1")
        self.assertEqual(r["status"], "ok")

    def test_interrupt_stops_a_loop(self):
        msg_id = self.kc.execute("let i = 0\nwhile true { let i = i + 1 }")
        time.sleep(1)
        self.km.interrupt_kernel()
        r = self.reply(msg_id, timeout=30)
        self.iopub(msg_id)
        self.assertEqual(r["ename"], "Interrupted")

    def complete(self, code, pos=None):
        pos = len(code) if pos is None else pos
        return self.reply(self.kc.complete(code, pos))

    def test_completion(self):
        self.run_cell("let result_one = {F = 1, Fx = 2, g = 3}\nlet resolution = 2")
        c = self.complete("print reso")
        self.assertEqual(c["matches"], ["resolution"])
        self.assertEqual((c["cursor_start"], c["cursor_end"]), (6, 10))
        c = self.complete("let z = result_one.F")
        self.assertEqual(c["matches"], ["result_one.F", "result_one.Fx"])
        self.assertEqual(c["cursor_start"], 8)
        c = self.complete("whi")
        self.assertIn("while", c["matches"])                  # keywords
        import blo
        want = sorted(n for n, _, _ in blo.builtins() if n.startswith("lin"))
        self.assertTrue(want)
        self.assertEqual(self.complete("lin")["matches"], want)  # the builtin table
        c = self.complete(":he")
        self.assertEqual(c["matches"], [":help"])
        self.assertEqual(c["cursor_start"], 0)
        c = self.complete("x = sum(1) + y", 3)            # mid-line: the word before the cursor
        self.assertEqual(c["cursor_start"], 3)
        # context: problems after solve, methods after hypergrad =, options inside with { }
        self.run_cell("problem cproblem {\n outer x : [1] = [1]\n inner y : [1] = [0]\n"
                      " inner minimize sum((y - x)^2)\n outer minimize sum(y^2)\n}\nlet cnot = 1")
        self.assertEqual(self.complete("let r = solve c")["matches"], ["cproblem"])
        c = self.complete("let r = solve cproblem with {\n  hypergrad = neu")
        self.assertEqual(c["matches"], ["neumann"])
        self.assertEqual(self.complete("let r = solve cproblem with {\n  outer_s")["matches"], ["outer_steps"])
        c = self.complete("print \"é\", resolu")     # cursor positions count characters
        self.assertEqual((c["matches"], c["cursor_start"]), (["resolution"], 11))

    def test_inspect_and_help(self):
        import blo
        sig = dict((n, (s, d)) for n, s, d in blo.builtins())["linsolve"]
        r = self.reply(self.kc.inspect("let w = linsolve(A, b)", 11))
        self.assertTrue(r["found"])
        self.assertEqual(r["data"]["text/plain"], "%s\n  %s" % sig)
        r = self.reply(self.kc.inspect("while", 2))
        self.assertIn("(keyword)", r["data"]["text/plain"])
        r = self.reply(self.kc.inspect("no_such_name", 3))
        self.assertFalse(r["found"])
        r, msgs = self.run_cell(":help linsolve")
        self.assertEqual(self.text(msgs), "%s\n  %s\n" % sig)
        r, msgs = self.run_cell(":help")
        self.assertIn(":vars", self.text(msgs))
        self.assertIn("linsolve", self.text(msgs))
        self.run_cell("let t = zeros(2, 3)")
        r, msgs = self.run_cell(":vars")
        self.assertRegex(self.text(msgs), r"\n  t +tensor \[2, 3\]\n")
        r, msgs = self.run_cell(":nonsense")
        self.assertIn("unknown command", self.text(msgs))
        r = self.reply(self.kc.is_complete("fn f(x) {"))
        self.assertEqual(r["status"], "incomplete")
        r = self.reply(self.kc.is_complete("let a = 1"))
        self.assertEqual(r["status"], "complete")

    def test_load_and_reset(self):
        p = os.path.join(WORK, "defs.blo")
        with open(p, "w") as f:
            f.write("let from_file = 5\n")
        r, _ = self.run_cell(":load " + p)
        self.assertEqual(r["status"], "ok")
        r, msgs = self.run_cell("from_file")
        self.assertEqual([c["data"]["text/plain"] for t, c in msgs if t == "execute_result"], ["5"])
        r, msgs = self.run_cell(":reset")
        self.assertIn("session reset", self.text(msgs))
        r, _ = self.run_cell("from_file")
        self.assertEqual(r["status"], "error")
        r, msgs = self.run_cell('plot("after_reset.png", y = [1, 2])')   # hooks survive a reset
        self.assertTrue(any(t == "display_data" for t, _ in msgs))


class Notebook(unittest.TestCase):
    def test_quickstart_notebook_runs(self):
        try:
            import nbformat
            from nbclient import NotebookClient
        except ImportError:
            self.skipTest("nbclient not installed")
        path = os.path.join(SRCDIR, "examples", "quickstart.ipynb")
        nb = nbformat.read(path, as_version=4)
        self.assertEqual(nb.metadata.kernelspec.name, "blo")
        NotebookClient(nb, timeout=300, kernel_name="blo", resources={"metadata": {"path": WORK}}).execute()
        outs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        self.assertFalse([o for o in outs if o.output_type == "error"])
        pngs = [o for o in outs if o.output_type == "display_data" and "image/png" in o.data]
        self.assertGreaterEqual(len(pngs), 1)
        text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
        self.assertIn("validation error", text)


def main():
    loader = unittest.defaultTestLoader
    suite = loader.loadTestsFromModule(sys.modules[__name__])
    if len(sys.argv) > 1:
        suite = loader.loadTestsFromNames(sys.argv[1:], sys.modules[__name__])
    r = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(r.failures) + len(r.errors)
    print("jupyter: %d passed, %d failed" % (r.testsRun - failed - len(r.skipped), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
