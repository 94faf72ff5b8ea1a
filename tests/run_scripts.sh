#!/bin/sh
# Script tests: each tests/scripts/NAME.blo runs from its directory; its stdout
# must equal NAME.out (when present) and, when NAME.err exists, it must fail
# with exit code 1 and that exact stderr; otherwise it must exit 0.
# A first-line comment "# args: a b" passes arguments to the script.
# SCRIPT_DIR names another directory of such scripts (tests/run_json.sh).
BLO=${BLO:-$(pwd)/blo}
SRCDIR=${SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
dir=${SCRIPT_DIR:-"$SRCDIR/tests/scripts"}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
for f in "$dir"/*.blo; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .blo)
  args=$(sed -n '1s/^# args: //p' "$f")
  # shellcheck disable=SC2086
  (cd "$dir" && "$BLO" "$name.blo" $args >"$tmp/out" 2>"$tmp/err" </dev/null)
  code=$?
  ok=1
  if [ -f "$dir/$name.err" ]; then
    [ "$code" -eq 1 ] || { echo "FAIL $name: exit code $code, expected 1"; ok=0; }
    if ! diff -u "$dir/$name.err" "$tmp/err" >"$tmp/diff"; then
      echo "FAIL $name: stderr differs"; cat "$tmp/diff"; ok=0
    fi
  else
    [ "$code" -eq 0 ] || { echo "FAIL $name: exit code $code"; cat "$tmp/err"; ok=0; }
  fi
  if [ -f "$dir/$name.out" ] && ! diff -u "$dir/$name.out" "$tmp/out" >"$tmp/diff"; then
    echo "FAIL $name: stdout differs"; cat "$tmp/diff"; ok=0
  fi
  if [ $ok -eq 1 ]; then pass=$((pass + 1)); echo "PASS $name"; else fail=$((fail + 1)); fi
done
echo "run_scripts: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
