"""blo.kernel: a Jupyter kernel for .blo cells (an ipykernel wrapper kernel).

Cells run in one blo.State.  print output is a stream; each figure plot()
writes is shown inline (display_data, PNG or SVG); a last expression's value
is the cell's result; errors are shown located, with the caret; a solve shows
a progress line that updates in place; interrupting the kernel stops a
running evaluation at its next step.  Lines starting with ':' are the REPL's
commands (:help [name], :vars, :load FILE, :reset).  Completion and
inspection use the interpreter's own tables (keywords, builtins, globals,
record fields).  Install with `python3 -m blo.kernel install [--user]`;
docs/JUPYTER.md.
"""
import base64
import re
import time
import uuid

from ipykernel.kernelbase import Kernel

import blo

COMMANDS = ("help", "vars", "load", "reset")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\.?$|$")

HELP_TEXT = """Commands (a line starting with ':'):
  :help [name]   this list, or the signature and description of a builtin
  :vars          variables with their kinds and shapes
  :load FILE     run a script in this session
  :reset         forget every variable and function
Enter statements or expressions; a last expression's value is shown.
Interrupt the kernel to stop a running computation (a solve stops at its next step).
Tab completes names and record fields; Shift-Tab shows a builtin's documentation.
Builtins (:help NAME for one):
"""


def _word_before(code, pos):
    """The name or dotted path that ends at pos, and where it starts."""
    m = _WORD.search(code[:pos])
    return m.group(0), m.start()


def _word_at(code, pos):
    """The identifier under or just before the cursor."""
    start = pos
    while start > 0 and (code[start - 1].isalnum() or code[start - 1] == "_"):
        start -= 1
    end = pos
    while end < len(code) and (code[end].isalnum() or code[end] == "_"):
        end += 1
    return code[start:end]


class BloKernel(Kernel):
    implementation = "blo"
    implementation_version = blo.__version__
    language = "blo"
    language_version = blo.version()
    language_info = {
        "name": "blo",
        "mimetype": "text/x-blo",
        "file_extension": ".blo",
        "pygments_lexer": "text",
    }
    banner = "blo %s: bilevel optimization scripts (:help for help)" % blo.version()
    # seconds between two redraws of the progress line
    progress_interval = 0.1

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._open()

    def _open(self):
        self.state = blo.State(output=self._out, warn=self._err)
        self.state.set_figure_hook(self._figure)
        self.state.set_progress(self._progress)
        self._bar = None

    # ---- output ----

    def _send(self, kind, content):
        self.send_response(self.iopub_socket, kind, content)

    def _out(self, text):
        self._send("stream", {"name": "stdout", "text": text})

    def _err(self, text):
        self._send("stream", {"name": "stderr", "text": text if text.endswith("\n") else text + "\n"})

    def _figure(self, path, fmt):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            self._err("figure %s: %s" % (path, e))
            return
        if fmt == "png":
            bundle = {"image/png": base64.b64encode(data).decode("ascii"), "text/plain": "<figure %s>" % path}
        elif fmt == "svg":
            bundle = {"image/svg+xml": data.decode("utf-8", "replace"), "text/plain": "<figure %s>" % path}
        else:
            bundle = {"text/plain": "<figure written to %s (PDF is not shown inline)>" % path}
        self._send("display_data", {"data": bundle, "metadata": {}})

    def _progress(self, p):
        """One line per solve, updated in place (update_display_data)."""
        if p.quiet:
            return True
        now = time.monotonic()
        line = "%s: step %d/%d  F = %.6g  f = %.6g  |hypergrad| = %.3g  %.1f s" % (
            p.problem, p.step, p.steps, p.F, p.f, p.hypergrad_norm, p.elapsed)
        if p.done:
            line = "%s: %d of %d steps, F = %.6g, f = %.6g, %.2f s" % (
                p.problem, p.step, p.steps, p.F, p.f, p.elapsed)
        content = {"data": {"text/plain": line}, "metadata": {}}
        if self._bar is None:
            self._bar = ["blo-progress-%s" % uuid.uuid4().hex, 0.0]
            content["transient"] = {"display_id": self._bar[0]}
            self._send("display_data", content)
            self._bar[1] = now
        elif p.done or now - self._bar[1] >= self.progress_interval:
            content["transient"] = {"display_id": self._bar[0]}
            self._send("update_display_data", content)
            self._bar[1] = now
        if p.done:
            self._bar = None
        return True

    # ---- execution ----

    def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False):
        self._bar = None
        self.state._flag.value = 0   # an interrupt that arrived while idle stops nothing
        try:
            if code.lstrip().startswith(":"):
                self._commands(code)
                echo = None
            else:
                echo = self.state.eval_echo(code, name="<cell %d>" % self.execution_count)
        except blo.Error as e:
            return self._error(e)
        except KeyboardInterrupt:
            # a SIGINT (interrupt_mode "signal") that reached Python between steps
            return self._error(blo.Interrupted("interrupted", status=5))
        if echo is not None and not silent:
            self._send("execute_result", {"execution_count": self.execution_count,
                                          "data": {"text/plain": echo}, "metadata": {}})
        return {"status": "ok", "execution_count": self.execution_count, "payload": [],
                "user_expressions": {}}

    def _error(self, e):
        name = type(e).__name__
        tb = [e.text]
        self._send("error", {"ename": name, "evalue": e.message, "traceback": tb})
        return {"status": "error", "execution_count": self.execution_count, "ename": name,
                "evalue": e.message, "traceback": tb}

    def _commands(self, code):
        for line in code.splitlines():
            line = line.strip()
            if not line:
                continue
            if not line.startswith(":"):
                raise blo.ParseError("a cell of commands takes one :command per line, got '%s'" % line,
                                     status=1)
            cmd, _, arg = line[1:].partition(" ")
            arg = arg.strip()
            if cmd in ("help", "h", "?"):
                self._out(self._help(arg))
            elif cmd == "vars":
                names = self.state.globals()
                w = max([4] + [len(n) for n in names])
                self._out("".join("  %-*s  %s\n" % (w, n, self.state.describe(n)) for n in names)
                          or "  (no variables)\n")
            elif cmd == "load":
                if not arg:
                    self._out("usage: :load FILE\n")
                else:
                    self.state.run_file(arg)
            elif cmd == "reset":
                self.state.close()
                self._open()
                self._out("session reset\n")
            else:
                self._out("unknown command ':%s' (try :help)\n" % cmd)

    def _help(self, arg):
        if not arg:
            out, col = [HELP_TEXT], 0
            for name, _, _ in blo.builtins():
                if col + len(name) + 2 > 78:
                    out.append("\n")
                    col = 0
                out.append("  " + name)
                col += len(name) + 2
            return "".join(out) + "\n"
        h = self.state.help(arg)
        if h:
            return "%s\n  %s\n" % h
        d = self.state.describe(arg)
        return "%s is a %s\n" % (arg, d) if d else "no help for '%s'\n" % arg

    # ---- completion, inspection ----

    def do_complete(self, code, cursor_pos):
        word, start = _word_before(code, cursor_pos)
        line_start = code.rfind("\n", 0, cursor_pos) + 1
        line = code[line_start:cursor_pos]
        if line.lstrip().startswith(":") and " " not in line.strip():
            word = line.lstrip()[1:]
            matches = [":" + c for c in COMMANDS if c.startswith(word)]
            start = cursor_pos - len(word) - 1
        else:
            start, matches = self.state.complete(code, cursor_pos)
        return {"status": "ok", "matches": matches, "cursor_start": start, "cursor_end": cursor_pos,
                "metadata": {}}

    def do_inspect(self, code, cursor_pos, detail_level=0, omit_sections=()):
        name = _word_at(code, cursor_pos)
        text = None
        if name:
            h = self.state.help(name)
            if h:
                text = "%s\n  %s" % h
            else:
                d = self.state.describe(name)
                if d:
                    text = "%s: %s" % (name, d)
                    if detail_level:
                        text += "\n" + (self.state.format(name) or "")
        return {"status": "ok", "found": text is not None,
                "data": {"text/plain": text} if text else {}, "metadata": {}}

    def do_is_complete(self, code):
        if code.lstrip().startswith(":"):
            return {"status": "complete"}
        return {"status": "complete" if blo.input_complete(code) else "incomplete", "indent": ""}

    # ---- interrupts: the control thread sets the state's flag ----

    async def interrupt_request(self, stream, ident, parent):
        """interrupt_mode "message": the request arrives on the control thread
        while the shell thread is inside libblo (which released the GIL), and
        the evaluation stops at its next step."""
        self.state.interrupt()
        self.session.send(stream, "interrupt_reply", {"status": "ok"}, parent, ident=ident)

    def do_shutdown(self, restart):
        self.state.close()
        if restart:
            self._open()
        return {"status": "ok", "restart": restart}
