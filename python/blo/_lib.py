"""_lib.py: finds libblo.so and declares the C API of include/blo.h for ctypes.

The library is looked up, in order, at $BLO_LIBRARY, in the build tree this
package sits in (../../.libs/libblo.so: PYTHONPATH=python in a built
checkout), at the libdir `make install` recorded in _paths.py, and through
the dynamic linker (ctypes.util.find_library).
"""
import ctypes
import ctypes.util
import os

MAX_RANK = 6

OK, ERROR_SYNTAX, ERROR_RUNTIME, ERROR_MEMORY, ERROR_ARGUMENT, INTERRUPTED = range(6)
(NIL, NUMBER, TENSOR, STRING, LIST, RECORD, FUNCTION, BUILTIN, PROBLEM) = range(9)
KIND_NAMES = ("nil", "number", "tensor", "string", "list", "record", "function", "builtin", "problem")

c_size_p = ctypes.POINTER(ctypes.c_size_t)
c_double_p = ctypes.POINTER(ctypes.c_double)

REALLOC_FN = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t)
WRITE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t)
ERROR_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)
FIGURE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p)


class Config(ctypes.Structure):
    _fields_ = [("realloc_fn", REALLOC_FN), ("alloc_ud", ctypes.c_void_p),
                ("write_fn", WRITE_FN), ("write_ud", ctypes.c_void_p),
                ("error_fn", ERROR_FN), ("error_ud", ctypes.c_void_p),
                ("allow_files", ctypes.c_int), ("mem_cap", ctypes.c_size_t),
                ("seed", ctypes.c_ulonglong),
                # blo.h's communicator slot (an MPI_Comm when libblo has MPI);
                # left as blo_config_defaults sets it: one rank
                ("comm", ctypes.c_void_p)]


class ErrorInfo(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int), ("message", ctypes.c_char_p), ("file", ctypes.c_char_p),
                ("line", ctypes.c_int), ("col", ctypes.c_int)]


class Array(ctypes.Structure):
    _fields_ = [("rank", ctypes.c_int), ("shape", ctypes.c_size_t * MAX_RANK),
                ("size", ctypes.c_size_t), ("data", c_double_p)]


NATIVE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                             ctypes.POINTER(Array), ctypes.POINTER(Array))
DERIV_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(Array),
                            ctypes.POINTER(Array), ctypes.POINTER(Array), ctypes.POINTER(Array))


class Native(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("fn", NATIVE_FN), ("jvp", DERIV_FN), ("vjp", DERIV_FN),
                ("ud", ctypes.c_void_p), ("min_args", ctypes.c_int), ("max_args", ctypes.c_int),
                ("sig", ctypes.c_char_p), ("doc", ctypes.c_char_p)]


class ProgressInfo(ctypes.Structure):
    _fields_ = [("problem", ctypes.c_char_p), ("step", ctypes.c_long), ("steps", ctypes.c_long),
                ("F", ctypes.c_double), ("f", ctypes.c_double), ("hypergrad_norm", ctypes.c_double),
                ("inner_grad_norm", ctypes.c_double), ("elapsed", ctypes.c_double),
                ("quiet", ctypes.c_int), ("done", ctypes.c_int)]


PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ProgressInfo))


def _candidates():
    env = os.environ.get("BLO_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "..", "..", ".libs", "libblo.so")
    try:
        from . import _paths
        yield os.path.join(_paths.LIBDIR, "libblo.so")
        yield os.path.join(_paths.LIBDIR, "libblo.so.0")
    except ImportError:
        pass
    found = ctypes.util.find_library("blo")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        if os.path.sep in path and not os.path.exists(path):
            tried.append(path)
            continue
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("blo: cannot find libblo.so; build blo (make), install it (make install), "
                      "or set BLO_LIBRARY to its path.  Tried: " + ", ".join(tried))


lib = _load()


def _decl(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)


_S = ctypes.c_void_p
_cp = ctypes.c_char_p
_i = ctypes.c_int
_decl("blo_version", _cp)
_decl("blo_config_defaults", None, ctypes.POINTER(Config))
_decl("blo_open", _S, ctypes.POINTER(Config))
_decl("blo_close", None, _S)
_decl("blo_eval_string", _i, _S, _cp, ctypes.c_char_p, ctypes.c_size_t)
_decl("blo_eval_file", _i, _S, _cp)
_decl("blo_eval_repl", _i, _S, _cp, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_char_p))
_decl("blo_input_complete", _i, ctypes.c_char_p, ctypes.c_size_t)
_decl("blo_last_error", ctypes.POINTER(ErrorInfo), _S)
_decl("blo_last_error_text", _cp, _S)
_decl("blo_set_args", _i, _S, _i, ctypes.POINTER(ctypes.c_char_p))
_decl("blo_set_interrupt_flag", None, _S, ctypes.POINTER(ctypes.c_int))
_decl("blo_set_tensor", _i, _S, _cp, _i, c_size_p, c_double_p)
_decl("blo_set_number", _i, _S, _cp, ctypes.c_double)
_decl("blo_set_string", _i, _S, _cp, _cp)
_decl("blo_get_number", _i, _S, _cp, c_double_p)
_decl("blo_get_shape", _i, _S, _cp, ctypes.POINTER(_i), c_size_p)
_decl("blo_get_tensor", _i, _S, _cp, c_double_p, ctypes.c_size_t)
_decl("blo_view_array", _i, _S, _cp, ctypes.POINTER(Array))
_decl("blo_get_lstring", _i, _S, _cp, ctypes.POINTER(ctypes.POINTER(ctypes.c_char)), c_size_p)
_decl("blo_kind_of", _i, _S, _cp, ctypes.POINTER(_i))
_decl("blo_describe", _cp, _S, _cp)
_decl("blo_format", _cp, _S, _cp)
_decl("blo_next_global", _cp, _S, c_size_p)
_decl("blo_field_name", _cp, _S, _cp, ctypes.c_size_t)
_decl("blo_length", _i, _S, _cp, c_size_p)
_decl("blo_keyword_info", _i, ctypes.c_size_t, ctypes.POINTER(_cp), ctypes.POINTER(_cp))
_decl("blo_complete", ctypes.c_size_t, _S, _cp, ctypes.c_size_t, c_size_p)
_decl("blo_completion", _cp, _S, ctypes.c_size_t)
_decl("blo_builtin_info", _i, ctypes.c_size_t, ctypes.POINTER(_cp), ctypes.POINTER(_cp), ctypes.POINTER(_cp))
_decl("blo_help", _i, _S, _cp, ctypes.POINTER(_cp), ctypes.POINTER(_cp))
_decl("blo_register", _i, _S, ctypes.POINTER(Native))
_decl("blo_native_output", _i, _S, ctypes.POINTER(Array), _i, c_size_p)
_decl("blo_native_error", _i, _S, _cp, _cp)
_decl("blo_set_progress", None, _S, PROGRESS_FN, ctypes.c_void_p)
_decl("blo_solve", _i, _S, _cp, _cp, _cp, PROGRESS_FN, ctypes.c_void_p)
_decl("blo_set_figure_hook", None, _S, FIGURE_FN, ctypes.c_void_p)

# OpenBLAS's thread count is process-wide; libblo links OpenBLAS, so its
# symbols are reachable through this handle when present.
try:
    openblas_set_num_threads = lib.openblas_set_num_threads
    openblas_set_num_threads.restype = None
    openblas_set_num_threads.argtypes = [ctypes.c_int]
except AttributeError:
    openblas_set_num_threads = None
