#!/bin/sh
# The Python package's tests (tests/python/test_blo.py) against the libblo of
# this build, with the Python configure found.  Skipped, with the reason, when
# there is no Python or it lacks NumPy.  Under --enable-sanitizers the ASan
# and UBSan runtimes are preloaded (python itself is not instrumented) and
# leak checking is off: the interpreter keeps memory until exit by design.
SRCDIR=${SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
BLO=${BLO:-$SRCDIR/blo}
if [ -z "$PYTHON" ] || [ "$PYTHON" = ":" ]; then
  echo "python: skipped (configured --without-python, or no Python 3 found)"
  exit 77
fi
if ! "$PYTHON" -c 'import numpy' >/dev/null 2>&1; then
  echo "python: skipped ($PYTHON has no numpy: apt-get install python3-numpy)"
  exit 77
fi
lib=$(dirname "$BLO")/.libs/libblo.so
if [ ! -f "$lib" ]; then
  echo "python: $lib not found"
  echo "python: 0 passed, 1 failed"
  exit 1
fi
. "$SRCDIR/tests/python/sanitizer_env.sh"
BLO_LIBRARY=$lib PYTHONPATH=$SRCDIR/python${PYTHONPATH:+:$PYTHONPATH} PYTHONDONTWRITEBYTECODE=1 BLO=$BLO \
  exec "$PYTHON" "$SRCDIR/tests/python/test_blo.py"
