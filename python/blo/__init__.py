"""blo: run .blo bilevel-optimization scripts from Python.

A pure-Python binding over libblo (the C library behind the `blo` program)
through ctypes; NumPy is its only requirement.  See docs/PYTHON.md.

    import blo, numpy as np
    s = blo.State()
    s["X"] = np.random.randn(30, 5)
    s.eval("let G = X' @ X")
    G = s["G"]                      # a NumPy copy
"""
import codecs
import collections
import contextlib
import ctypes
import inspect
import math
import re
import sys
import threading
import warnings

import numpy as np

from . import _lib
from ._errors import (Error, ParseError, EvalError, OutOfMemory, ArgumentError, Interrupted,
                      BloWarning, BY_STATUS)
from ._lib import lib

__all__ = ["State", "Error", "ParseError", "EvalError", "OutOfMemory", "ArgumentError", "Interrupted",
           "BloWarning", "Progress", "Expr", "Opaque", "version", "keywords", "builtins", "input_complete",
           "tqdm_progress"]

__version__ = lib.blo_version().decode()


def version():
    """The version of the libblo that was loaded."""
    return lib.blo_version().decode()


Progress = collections.namedtuple(
    "Progress", "problem step steps F f hypergrad_norm inner_grad_norm elapsed quiet done")
Progress.__doc__ = """One report of a solve: outer step (1-based) of steps planned, the outer
and inner objectives F and f, the norms of the hypergradient and of the inner
gradient, seconds elapsed, quiet (the script asked for quiet = true), and done
(the final report after the loop ended for any reason)."""


class Expr(str):
    """Solve-option text passed to blo as code, not as a string: Expr("eta / 2")."""


class Opaque:
    """A value Python cannot hold (a function, builtin or problem): its kind and description."""

    def __init__(self, kind, description):
        self.kind = kind
        self.description = description

    def __repr__(self):
        return "<blo %s>" % self.description


def _b(s):
    return s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s


def _s(b):
    return b.decode("utf-8", "surrogateescape") if b is not None else None


def keywords():
    """The keywords of the language with one line of help each: a list of (name, doc)."""
    out, i = [], 0
    name, doc = ctypes.c_char_p(), ctypes.c_char_p()
    while lib.blo_keyword_info(i, ctypes.byref(name), ctypes.byref(doc)):
        out.append((_s(name.value), _s(doc.value)))
        i += 1
    return out


def builtins():
    """The builtin functions: a list of (name, signature, doc) in the interpreter's order."""
    out, i = [], 0
    name, sig, doc = ctypes.c_char_p(), ctypes.c_char_p(), ctypes.c_char_p()
    while lib.blo_builtin_info(i, ctypes.byref(name), ctypes.byref(sig), ctypes.byref(doc)):
        out.append((_s(name.value), _s(sig.value), _s(doc.value)))
        i += 1
    return out


def input_complete(code):
    """False when code ends inside an open bracket, block or string (read another line)."""
    b = _b(code)
    return bool(lib.blo_input_complete(b, len(b)))


_CALL_RE = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*\(.*\)\s*$", re.S)


def _quote(s):
    out = ['"']
    for ch in s:
        out.append({'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}.get(ch, ch))
    out.append('"')
    return "".join(out)


def _number_text(x):
    x = float(x)
    if math.isnan(x):
        return "(0 / 0)"
    if math.isinf(x):
        return "(1 / 0)" if x > 0 else "(-1 / 0)"
    return repr(x)


def option_text(v):
    """The blo expression for a solve option given in Python (see State.solve)."""
    if isinstance(v, Expr):
        return str(v)
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return _number_text(v)
    if isinstance(v, str):
        return v.strip() if _CALL_RE.match(v) else _quote(v)
    if isinstance(v, dict):
        return "{" + ", ".join("%s = %s" % (k, option_text(x)) for k, x in v.items()) + "}"
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(option_text(x) for x in v) + "]"
    raise TypeError("blo: a solve option cannot be a %s" % type(v).__name__)


def _numeric(v):
    try:
        a = np.asarray(v)
    except (TypeError, ValueError):
        return False
    return a.dtype.kind in "biuf"


def _literal(v):
    """The blo literal for a Python value bound to a global."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return _number_text(v)
    if isinstance(v, str):
        return _quote(v)
    if isinstance(v, dict):
        for k in v:
            if not isinstance(k, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
                raise ArgumentError("blo: record field names are identifiers, got %r" % (k,),
                                    status=_lib.ERROR_ARGUMENT)
        return "{" + ", ".join("%s = %s" % (k, _literal(x)) for k, x in v.items()) + "}"
    if isinstance(v, np.ndarray):
        if v.ndim == 0:
            return _number_text(v)
        return _literal([x for x in _as_array(v)])
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    raise TypeError("blo: cannot bind a %s" % type(v).__name__)


def tqdm_progress(**tqdm_args):
    """A progress callback drawing a tqdm bar (tqdm.auto: a widget in notebooks),
    or None when tqdm is not installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    bar = [None]

    def cb(p):
        if p.quiet:
            return True
        if bar[0] is None:
            bar[0] = tqdm(total=p.steps, desc=p.problem, **tqdm_args)
        bar[0].set_postfix(F="%.4g" % p.F, f="%.4g" % p.f, refresh=False)
        bar[0].update(p.step - bar[0].n)   # redraws at most every mininterval
        if p.done:
            bar[0].close()
            bar[0] = None
        return True

    return cb


def _text_progress(stream):
    def cb(p):
        if p.quiet:
            return True
        if p.done:
            stream.write("\r\033[K")
        else:
            stream.write("\r%s: step %d/%d  F = %.6g  f = %.6g  |hg| = %.2e  %.1fs\033[K" % (
                p.problem, p.step, p.steps, p.F, p.f, p.hypergrad_norm, p.elapsed))
        stream.flush()
        return True
    return cb


def _as_array(x):
    """x as a C-contiguous float64 array (a copy when x is not already one)."""
    a = np.array(x, dtype=np.float64, order="C", copy=False)
    if a.ndim > _lib.MAX_RANK:
        raise ArgumentError("blo: arrays have rank 0 to 6, got %d" % a.ndim, status=_lib.ERROR_ARGUMENT)
    return a


def _array_of(a):
    """Fills a blo_array describing the contiguous float64 array a (kept alive by the caller)."""
    arr = _lib.Array()
    arr.rank = a.ndim
    for i, n in enumerate(a.shape):
        arr.shape[i] = n
    arr.size = a.size
    arr.data = a.ctypes.data_as(_lib.c_double_p)
    return arr


def _from_array(arr, copy=True):
    """A NumPy array of the blo_array (rank 0: a float)."""
    if arr.rank == 0:
        return float(arr.data[0])
    shape = tuple(arr.shape[i] for i in range(arr.rank))
    if arr.size == 0:
        return np.zeros(shape)
    buf = (ctypes.c_double * arr.size).from_address(ctypes.addressof(arr.data.contents))
    a = np.frombuffer(buf, dtype=np.float64).reshape(shape)
    return a.copy() if copy else a


class State:
    """One blo interpreter state: globals, functions, problems persist across calls.

    allow_files  False refuses file access to scripts (load_csv, plot, save_npy, traces, ...)
    mem_cap      bytes of tensor data allowed (None: unlimited)
    threads      OpenBLAS threads; process-wide, since OpenBLAS has one pool (None: unchanged)
    seed         initial random seed (scripts may call seed())
    output       callable(str) receiving script output; None writes to sys.stdout
    warn         callable(str) receiving warnings; None issues them as blo.BloWarning

    A state is used by one thread at a time; two states in two threads run in
    parallel (libblo releases the GIL while it computes).
    """

    def __init__(self, allow_files=True, mem_cap=None, threads=None, seed=0, output=None, warn=None):
        if threads is not None:
            if int(threads) < 1:
                raise ValueError("blo: threads must be at least 1")
            if _lib.openblas_set_num_threads:
                _lib.openblas_set_num_threads(int(threads))
        self._output = output
        self._warn = warn
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = None          # an exception a callback raised, re-raised after the C call
        self._reraise = False
        self._lock = threading.RLock()  # one C call at a time; callbacks may re-enter
        self._views = 0               # open view() blocks
        self._natives = {}            # name -> ctypes callbacks kept alive
        self._figure_cb = None
        self._flag = ctypes.c_int(0)
        cfg = _lib.Config()
        lib.blo_config_defaults(ctypes.byref(cfg))
        self._write_cb = _lib.WRITE_FN(self._on_write)
        self._error_cb = _lib.ERROR_FN(self._on_error)
        cfg.write_fn = self._write_cb
        cfg.error_fn = self._error_cb
        cfg.allow_files = 1 if allow_files else 0
        if mem_cap is not None and int(mem_cap) < 0:
            raise ValueError("blo: mem_cap must be a number of bytes >= 0, or None")
        cfg.mem_cap = int(mem_cap or 0)
        cfg.seed = int(seed)
        self._S = lib.blo_open(ctypes.byref(cfg))
        if not self._S:
            raise MemoryError("blo: cannot open a state")
        lib.blo_set_interrupt_flag(self._S, ctypes.byref(self._flag))

    # ---- life cycle ----

    def close(self):
        """Frees the state; any later use raises ArgumentError."""
        S, self._S = getattr(self, "_S", None), None
        if S:
            lib.blo_close(S)

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _state(self):
        if not self._S:
            raise ArgumentError("blo: the state is closed", status=_lib.ERROR_ARGUMENT)
        if self._views:
            raise ArgumentError("blo: the state is in use by a view() block", status=_lib.ERROR_ARGUMENT)
        return self._S

    # ---- callbacks from C: never let an exception cross into C ----

    def _keep(self, exc, reraise=False):
        """Keeps the first exception a callback raised; reraise: raise it as is
        after the call (else a failed call raises blo's error from it)."""
        if self._pending is None:
            self._pending = exc
            self._reraise = reraise
        if not isinstance(exc, Exception):
            self._flag.value = 1  # Ctrl-C in a callback: stop the evaluation at its next step

    def _on_write(self, ud, text, n):
        try:
            s = self._decoder.decode(ctypes.string_at(text, n))
            if self._output is not None:
                self._output(s)
            else:
                sys.stdout.write(s)
        except BaseException as e:  # noqa: B902 - re-raised after the call
            self._keep(e)

    def _on_error(self, ud, formatted):
        try:
            text = _s(formatted)
            if ": warning: " not in text.split("\n", 1)[0]:
                return  # errors are raised from blo_last_error
            if self._warn is not None:
                self._warn(text)
            else:
                warnings.warn(text, BloWarning, stacklevel=4)
        except BaseException as e:  # noqa: B902
            self._keep(e)

    # ---- errors ----

    def _check(self, rc):
        """Raises what a failed call (rc) or a callback during it left, else returns."""
        pending, self._pending = self._pending, None
        if pending is not None and (self._reraise or not isinstance(pending, Exception)):
            raise pending  # KeyboardInterrupt, SystemExit, a progress callback's error
        if rc == _lib.OK:
            if pending is not None:
                raise pending
            return
        e = lib.blo_last_error(self._S).contents
        text = _s(lib.blo_last_error_text(self._S))
        cls = BY_STATUS.get(rc, Error)
        err = cls(_s(e.message) or "", _s(e.file) or "", e.line, e.col, rc, text)
        if pending is not None:
            raise err from pending
        raise err

    def _call(self, fn, *args):
        with self._lock:
            S = self._state()
            self._decoder.reset()
            rc = fn(S, *args)
            self._flush()
            self._check(rc)

    def _flush(self):
        tail = self._decoder.decode(b"", final=True)
        if tail:
            (self._output or sys.stdout.write)(tail)

    # ---- evaluating code ----

    def eval(self, code, name="<python>"):
        """Evaluates code (definitions persist).  Raises a blo.Error subclass on failure."""
        b = _b(code)
        self._call(lib.blo_eval_string, _b(name), b, len(b))

    def eval_echo(self, code, name="<cell>"):
        """Like eval; returns the printed value of a last expression statement, as
        the REPL echoes it (None when there is none)."""
        b = _b(code)
        echo = ctypes.c_char_p()
        self._call(lib.blo_eval_repl, _b(name), b, len(b), ctypes.byref(echo))
        return _s(echo.value)

    def run_file(self, path, args=()):
        """Runs the script at path, with the script's `args` list set to args (strings)."""
        self.set_args(args)
        self._call(lib.blo_eval_file, _b(str(path)))

    def set_args(self, args):
        """Sets the list `args` seen by scripts."""
        items = [_b(str(a)) for a in args]
        argv = (ctypes.c_char_p * max(1, len(items)))(*items)
        self._call(lib.blo_set_args, len(items), argv)

    def interrupt(self):
        """Asks a running evaluation to stop at its next step (loop iteration, call,
        solve step); it then raises blo.Interrupted.  Safe from another thread or
        a signal handler."""
        self._flag.value = 1

    # ---- values ----

    def __setitem__(self, name, value):
        """s["X"] = value binds a global to a copy: a number, a string, or anything
        numpy.asarray makes numeric (any dtype, any strides, rank 0 to 6)."""
        if not isinstance(name, str):
            raise TypeError("blo: names are strings")
        n = _b(name)
        if isinstance(value, str):
            if "\0" in value:
                raise ArgumentError("blo: strings bound from Python cannot hold NUL", status=_lib.ERROR_ARGUMENT)
            self._call(lib.blo_set_string, n, _b(value))
            return
        if isinstance(value, (bool, int, float, np.integer, np.floating, np.bool_)):
            self._call(lib.blo_set_number, n, float(value))
            return
        if isinstance(value, dict) or (
                isinstance(value, (list, tuple)) and any(isinstance(x, (str, dict, list, tuple)) for x in value)
                and not _numeric(value)):
            self._bind_literal(name, value)
            return
        if value is None:
            raise TypeError("blo: None cannot be bound (blo has no nil literal)")
        try:
            a = _as_array(value)
        except (TypeError, ValueError) as e:
            if isinstance(e, Error):
                raise
            raise TypeError("blo: cannot bind a %s: %s" % (type(value).__name__, e)) from None
        shape = (ctypes.c_size_t * max(1, a.ndim))(*a.shape)
        if a.ndim == 0:
            self._call(lib.blo_set_number, n, float(a))
            return
        if a.size == 0:
            raise ArgumentError("blo: cannot bind '%s': zero dimension in shape %s" % (name, a.shape),
                                status=_lib.ERROR_ARGUMENT)
        self._call(lib.blo_set_tensor, n, a.ndim, shape, a.ctypes.data_as(_lib.c_double_p))

    def _bind_literal(self, name, value):
        """Records and lists: bound by evaluating `let name = <literal>`, the
        literal written exactly (floats by repr, which reads back bit for bit)."""
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name) or name in dict(keywords()):
            raise ArgumentError("blo: '%s' is not a valid name" % name, status=_lib.ERROR_ARGUMENT)
        self.eval("let %s = %s" % (name, _literal(value)), name="<python>")

    def __getitem__(self, path):
        """s["w"], s["res.F"], s["hist[0]"]: a copy as Python data.  Numbers become
        floats, tensors NumPy arrays (float64), strings str, records dicts, lists
        lists, nil None; functions, builtins and problems an Opaque."""
        with self._lock:
            self._state()
            return self._get(path)

    def get(self, path, default=None):
        """s[path], or default when there is no such value."""
        try:
            return self[path]
        except ArgumentError:
            return default

    def __contains__(self, path):
        with self._lock:
            self._state()
            k = ctypes.c_int()
            return lib.blo_kind_of(self._S, _b(path), ctypes.byref(k)) == _lib.OK

    def _get(self, path):
        S, p = self._S, _b(path)
        k = ctypes.c_int()
        self._check(lib.blo_kind_of(S, p, ctypes.byref(k)))
        kind = k.value
        if kind == _lib.NIL:
            return None
        if kind in (_lib.NUMBER, _lib.TENSOR):
            arr = _lib.Array()
            self._check(lib.blo_view_array(S, p, ctypes.byref(arr)))
            return _from_array(arr, copy=True)
        if kind == _lib.STRING:
            ptr = ctypes.POINTER(ctypes.c_char)()
            n = ctypes.c_size_t()
            self._check(lib.blo_get_lstring(S, p, ctypes.byref(ptr), ctypes.byref(n)))
            return _s(ctypes.string_at(ptr, n.value))
        if kind in (_lib.LIST, _lib.RECORD):
            n = ctypes.c_size_t()
            self._check(lib.blo_length(S, p, ctypes.byref(n)))
            if kind == _lib.LIST:
                return [self._get("%s[%d]" % (path, i)) for i in range(n.value)]
            names = [_s(lib.blo_field_name(S, p, i)) for i in range(n.value)]
            return {f: self._get(path + "." + f) for f in names}
        return Opaque(_lib.KIND_NAMES[kind], _s(lib.blo_describe(S, p)))

    @contextlib.contextmanager
    def view(self, path):
        """with s.view("w") as w: ...  a zero-copy, read-only NumPy view of a
        tensor.  Inside the block every other call on the state raises
        ArgumentError, so the memory cannot go away under the view; do not keep
        the array (or slices of it) past the block: its memory belongs to the
        state and is freed or reused afterwards."""
        with self._lock:
            S = self._state()
            arr = _lib.Array()
            self._check(lib.blo_view_array(S, _b(path), ctypes.byref(arr)))
            if arr.rank == 0:
                a = np.frombuffer((ctypes.c_double * 1).from_address(ctypes.addressof(arr.data.contents)),
                                  dtype=np.float64).reshape(())
            else:
                a = _from_array(arr, copy=False)
            a.flags.writeable = False
            self._views += 1
        try:
            yield a
        finally:
            self._views -= 1

    def kind(self, path):
        """"number", "tensor", "string", "list", "record", "function", "builtin", "problem" or "nil"."""
        with self._lock:
            self._state()
            k = ctypes.c_int()
            self._check(lib.blo_kind_of(self._S, _b(path), ctypes.byref(k)))
            return _lib.KIND_NAMES[k.value]

    def describe(self, path):
        """"tensor [2, 3]", "record", "list of 4", ... (None if there is no such value)."""
        with self._lock:
            return _s(lib.blo_describe(self._state(), _b(path)))

    def format(self, path):
        """The value as the script's print shows it (None if there is no such value)."""
        with self._lock:
            return _s(lib.blo_format(self._state(), _b(path)))

    def globals(self):
        """The names of the globals, sorted."""
        with self._lock:
            S = self._state()
            it = ctypes.c_size_t(0)
            names = []
            while True:
                n = lib.blo_next_global(S, ctypes.byref(it))
                if n is None:
                    return sorted(names)
                names.append(_s(n))

    def fields(self, path):
        """Field names of the record at path ([] if it is not a record)."""
        with self._lock:
            S = self._state()
            out = []
            while True:
                f = lib.blo_field_name(S, _b(path), len(out))
                if f is None:
                    return out
                out.append(_s(f))

    def help(self, name):
        """(signature, doc) of a function, native or builtin as scripts see name,
        or of a keyword; None if name is none of these."""
        with self._lock:
            S = self._state()
            sig, doc = ctypes.c_char_p(), ctypes.c_char_p()
            if lib.blo_help(S, _b(name), ctypes.byref(sig), ctypes.byref(doc)) == _lib.OK:
                return _s(sig.value), _s(doc.value)
        for kw, d in keywords():
            if kw == name:
                return kw + " (keyword)", d
        return None

    def complete(self, code, cursor=None):
        """Completion as the REPL's Tab does it, aware of the context: after
        `solve ` the problems, after `hypergrad = ` the methods, after
        `inner_opt = ` the optimizers, inside `with { }` the solve options,
        after `name.` the record's fields, else keywords, builtins and
        globals.  cursor: a character offset into code (default: its end).
        Returns (start, matches): the completed word is code[start:cursor]."""
        if cursor is None:
            cursor = len(code)
        before = _b(code[:cursor])
        with self._lock:
            S = self._state()
            start = ctypes.c_size_t()
            n = lib.blo_complete(S, before, len(before), ctypes.byref(start))
            matches = [_s(lib.blo_completion(S, i)) for i in range(n)]
        return len(_s(before[:start.value])), matches

    def completions(self, text):
        """The matches of complete(text): the candidates for its last word."""
        return self.complete(text)[1]

    # ---- solving ----

    def solve(self, problem, result="result", progress=None, **options):
        """Runs `let result = solve problem with {options}` and returns the result
        record as a dict (the variables hold the solution, as in a script).

        options are the solve options (docs/BILEVEL.md) as keywords: numbers,
        bools, dicts (records), lists, strings.  A string of the form name(...)
        is code, so hypergrad="cg(iters=20)" works; any other string is a blo
        string (start="warm"); blo.Expr("...") passes any expression.

        progress: callable(blo.Progress) called once per outer step and once
        more with done=True; returning False stops the solve (blo.Interrupted).
        progress=True draws a tqdm bar when tqdm is importable, else a line on
        stderr.
        """
        if progress is True:
            progress = tqdm_progress() or _text_progress(sys.stderr)
        text = ", ".join("%s = %s" % (k, option_text(v)) for k, v in options.items())
        cb = self._progress_cb(progress) if progress else _lib.PROGRESS_FN()
        self._call(lib.blo_solve, _b(problem), _b(text), _b(result), cb, None)
        with self._lock:
            return self._get(result)

    def _progress_cb(self, fn):
        def on_progress(ud, p):
            try:
                q = p.contents
                r = fn(Progress(_s(q.problem), q.step, q.steps, q.F, q.f, q.hypergrad_norm,
                                q.inner_grad_norm, q.elapsed, bool(q.quiet), bool(q.done)))
                return 1 if r is False else 0
            except BaseException as e:  # noqa: B902 - stops the solve, re-raised after it
                self._keep(e, reraise=True)
                return 1
        return _lib.PROGRESS_FN(on_progress)

    def set_progress(self, fn):
        """Installs fn (as for solve's progress) for every solve the state runs,
        including those written in scripts; None removes it."""
        with self._lock:
            S = self._state()
            self._global_progress = self._progress_cb(fn) if fn else None
            lib.blo_set_progress(S, self._global_progress or _lib.PROGRESS_FN(), None)

    def set_figure_hook(self, fn):
        """fn(path, format) is called after each figure plot() writes ("png",
        "svg" or "pdf"); None removes it.  The Jupyter kernel shows figures this way."""
        def on_figure(ud, path, fmt):
            try:
                fn(_s(path), _s(fmt))
            except BaseException as e:  # noqa: B902
                self._keep(e)
        with self._lock:
            S = self._state()
            self._figure_cb = _lib.FIGURE_FN(on_figure) if fn else None
            lib.blo_set_figure_hook(S, self._figure_cb or _lib.FIGURE_FN(), None)

    # ---- Python functions callable from scripts ----

    def register(self, name, f, vjp=None, jvp=None, nargs=None, sig=None, doc=None):
        """Makes f callable from scripts as name(...).

        f receives each argument as a float (a number) or a NumPy array (a copy)
        and returns a number, an array-like (rank 0 to 6) or None (nothing).
        With derivative callbacks f takes exactly one argument x and
            vjp(x, y, g) returns J(x)^T g, shaped like x
            jvp(x, y, t) returns J(x) t,   shaped like y
        where y = f(x); then name(...) may sit in differentiated code: grad,
        problems' objectives, hypergradients (second-order products through it
        omit f's own curvature: exact when f is linear in x).
        nargs: an int or (min, max) with max -1 for any; default from f's
        signature.  sig and doc are what :help shows.  An exception in a
        callback becomes a located blo.EvalError whose __cause__ is it.
        """
        if not callable(f):
            raise TypeError("blo: register needs a callable")
        if nargs is None:
            if vjp or jvp:
                nargs = (1, 1)
            else:
                nargs = _arity(f)
        elif isinstance(nargs, int):
            nargs = (nargs, nargs)
        if sig is None:
            sig = "%s(%s)" % (name, ", ".join("x%d" % (i + 1) for i in range(max(nargs[0], 1))))
        if doc is None:
            doc = (inspect.getdoc(f) or "Python function %s" % getattr(f, "__qualname__", repr(f))).split("\n")[0]

        def fn(S, ud, n, args, out):
            try:
                vals = [_from_array(args[i]) for i in range(n)]
                y = f(*vals)
                if y is None:
                    return _lib.OK
                a = _as_array(y)
                shape = (ctypes.c_size_t * max(1, a.ndim))(*a.shape)
                rc = lib.blo_native_output(S, out, a.ndim, shape)
                if rc != _lib.OK:
                    return rc
                ctypes.memmove(out.contents.data, a.ctypes.data, a.nbytes)
                return _lib.OK
            except BaseException as e:  # noqa: B902
                return self._native_failed(S, name, e)

        def deriv(cb, what):
            def d(S, ud, x, y, vin, out):
                try:
                    r = _as_array(cb(_from_array(x.contents), _from_array(y.contents), _from_array(vin.contents)))
                    o = out.contents
                    want = tuple(o.shape[i] for i in range(o.rank))
                    if r.shape != want and not (r.size == o.size and r.ndim <= 1 and len(want) <= 1):
                        lib.blo_native_error(S, b"%s", _b("%s returned shape %s, expected %s" % (
                            what, list(r.shape), list(want))))
                        return _lib.ERROR_RUNTIME
                    ctypes.memmove(o.data, r.ctypes.data, r.nbytes)
                    return _lib.OK
                except BaseException as e:  # noqa: B902
                    return self._native_failed(S, name, e)
            return _lib.DERIV_FN(d)

        cbs = (_lib.NATIVE_FN(fn), deriv(jvp, "jvp") if jvp else _lib.DERIV_FN(),
               deriv(vjp, "vjp") if vjp else _lib.DERIV_FN())
        nat = _lib.Native(_b(name), cbs[0], cbs[1], cbs[2], None, nargs[0], nargs[1], _b(sig), _b(doc))
        with self._lock:
            S = self._state()
            rc = lib.blo_register(S, ctypes.byref(nat))
            if rc == _lib.OK:
                self._natives[name] = cbs  # the C side holds these pointers
            self._check(rc)

    def _native_failed(self, S, name, e):
        self._keep(e)
        lib.blo_native_error(S, b"%s", _b("python: %s: %s" % (type(e).__name__, e)))
        return _lib.ERROR_RUNTIME


def _arity(f):
    try:
        ps = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        return (0, -1)
    lo = hi = 0
    for p in ps:
        if p.kind == p.VAR_POSITIONAL:
            hi = -1
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if p.default is p.empty:
                lo += 1
            if hi != -1:
                hi += 1
    return (lo, hi)
