#!/bin/sh
# The load_json script tests, run by run_scripts.sh's rules: JSON_SCRIPTS is
# tests/scripts/json (every mapping and error) when blo is built with
# jansson, tests/scripts/nojson (the error naming the package) when not.
SRCDIR=${SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
SCRIPT_DIR=${JSON_SCRIPTS:?set by make check: the directory of JSON script tests}
export SRCDIR SCRIPT_DIR
exec sh "$SRCDIR/tests/run_scripts.sh"
