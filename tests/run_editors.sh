#!/bin/sh
# The editor support files (editors/): current with the scanner and the
# builtin tables, covering every name, highlighting a sample as intended
# (TextMate rules applied in Python, Vim itself when installed).  Needs only
# a Python 3; the cross-check against the library also needs NumPy.
SRCDIR=${SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
BLO=${BLO:-$SRCDIR/blo}
PY=$PYTHON
if [ -z "$PY" ] || [ "$PY" = ":" ]; then PY=$(command -v python3); fi
if [ -z "$PY" ]; then
  echo "editors: skipped (no Python 3 found)"
  exit 77
fi
lib=$(dirname "$BLO")/.libs/libblo.so
. "$SRCDIR/tests/python/sanitizer_env.sh"
BLO_LIBRARY=$lib PYTHONDONTWRITEBYTECODE=1 SRCDIR=$SRCDIR exec "$PY" "$SRCDIR/tests/editors/test_editors.py"
