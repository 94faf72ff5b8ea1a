#!/bin/sh
# The Jupyter kernel's tests (tests/python/test_kernel.py): the kernel driven
# through jupyter_client, and examples/quickstart.ipynb run through nbclient.
# Skipped, with the reason, when there is no Python or it lacks NumPy,
# ipykernel or jupyter_client.
SRCDIR=${SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
BLO=${BLO:-$SRCDIR/blo}
if [ -z "$PYTHON" ] || [ "$PYTHON" = ":" ]; then
  echo "jupyter: skipped (configured --without-python, or no Python 3 found)"
  exit 77
fi
for m in numpy:python3-numpy ipykernel:python3-ipykernel jupyter_client:python3-jupyter-client; do
  if ! "$PYTHON" -c "import ${m%%:*}" >/dev/null 2>&1; then
    echo "jupyter: skipped ($PYTHON has no ${m%%:*}: apt-get install ${m#*:})"
    exit 77
  fi
done
lib=$(dirname "$BLO")/.libs/libblo.so
if [ ! -f "$lib" ]; then
  echo "jupyter: $lib not found"
  echo "jupyter: 0 passed, 1 failed"
  exit 1
fi
. "$SRCDIR/tests/python/sanitizer_env.sh"
# The kernel is a child process: it inherits these through the spec's env and
# the environment.
BLO_LIBRARY=$(cd "$(dirname "$lib")" && pwd)/libblo.so
PYTHONPATH=$SRCDIR/python${PYTHONPATH:+:$PYTHONPATH}
PYTHONDONTWRITEBYTECODE=1
export BLO_LIBRARY PYTHONPATH PYTHONDONTWRITEBYTECODE SRCDIR
exec "$PYTHON" "$SRCDIR/tests/python/test_kernel.py"
