"""_errors.py: the exceptions raised by the blo package."""


class Error(Exception):
    """An error reported by libblo.

    message  the message alone ("shape mismatch in '+': [2] and [3]")
    file     the chunk or script it happened in ("" if none)
    line     1-based line, 0 if unknown
    column   1-based column, 0 if unknown
    status   the blo_status number
    text     the located form: "file:line:col: error: message", the source line and a caret
    str(e) is text when there is one, else message.
    """

    def __init__(self, message, file="", line=0, column=0, status=0, text=""):
        super().__init__(text or message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.status = status
        self.text = text or message


class ParseError(Error):
    """The code did not parse (BLO_ERROR_SYNTAX)."""


class EvalError(Error):
    """Evaluation failed: shapes, names, assert, I/O, a failing registered function (BLO_ERROR_RUNTIME)."""


class OutOfMemory(Error):
    """The allocator failed or the state's memory cap was hit (BLO_ERROR_MEMORY)."""


class ArgumentError(Error, ValueError):
    """Python passed something libblo refuses: a bad name, rank, shape, kind (BLO_ERROR_ARGUMENT)."""


class Interrupted(Error):
    """State.interrupt() or a progress callback stopped the evaluation (BLO_INTERRUPTED)."""


BY_STATUS = {1: ParseError, 2: EvalError, 3: OutOfMemory, 4: ArgumentError, 5: Interrupted}


class BloWarning(UserWarning):
    """A warning from libblo (a hypergradient method that broke down, a cold start
    overwriting an inner variable), located like an error."""
