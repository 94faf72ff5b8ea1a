#!/bin/sh
# blo --check: every example and every script test that is meant to run must
# pass the check (no false alarms); tests/check/NAME.blo with NAME.err must
# fail with exit code 1 and exactly that stderr; the check never runs the
# script (no stdout); several files are checked in one call, the exit code is
# 1 when any fails; usage errors exit 2.
BLO=${BLO:-$(pwd)/blo}
SRCDIR=${SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; [ -f "$tmp/err" ] && cat "$tmp/err"; }

# valid scripts: exit 0, nothing on stdout or stderr
for f in "$SRCDIR"/examples/*.blo "$SRCDIR"/tests/scripts/*.blo "$SRCDIR"/tests/check/ok_*.blo; do
  [ -e "$f" ] || continue
  [ -f "${f%.blo}.err" ] && continue
  "$BLO" --check "$f" >"$tmp/out" 2>"$tmp/err" </dev/null
  code=$?
  if [ "$code" -eq 0 ] && [ ! -s "$tmp/out" ] && [ ! -s "$tmp/err" ]; then ok "valid $(basename "$f")"; else bad "valid $(basename "$f") (exit $code)"; fi
done

# scripts with mistakes: every one reported, in order, and nothing runs
for f in "$SRCDIR"/tests/check/*.blo; do
  name=$(basename "$f" .blo)
  [ -f "$SRCDIR/tests/check/$name.err" ] || continue
  (cd "$SRCDIR/tests/check" && "$BLO" --check "$name.blo" >"$tmp/out" 2>"$tmp/err" </dev/null)
  code=$?
  if [ "$code" -eq 1 ] && [ ! -s "$tmp/out" ] && diff -u "$SRCDIR/tests/check/$name.err" "$tmp/err" >"$tmp/diff"; then
    ok "errors $name"
  else
    bad "errors $name (exit $code)"; cat "$tmp/diff" 2>/dev/null
  fi
done

# the script tests whose error the check can see before running report the same first line
for f in "$SRCDIR"/tests/scripts/err_unknown_name.blo "$SRCDIR"/tests/scripts/bilevel_err_option.blo \
         "$SRCDIR"/tests/scripts/err_pi_call.blo "$SRCDIR"/tests/scripts/err_suggest_var.blo; do
  name=$(basename "$f" .blo)
  (cd "$SRCDIR/tests/scripts" && "$BLO" --check "$name.blo" >"$tmp/out" 2>"$tmp/err" </dev/null)
  code=$?
  if [ "$code" -eq 1 ] && [ "$(head -1 "$tmp/err")" = "$(head -1 "$SRCDIR/tests/scripts/$name.err")" ]; then
    ok "same as run $name"
  else
    bad "same as run $name (exit $code)"; head -1 "$SRCDIR/tests/scripts/$name.err"
  fi
done

# several files: each checked in a state of its own, exit 1 if any fails
printf 'let a = 1\n' >"$tmp/a.blo"
printf 'print a\n' >"$tmp/b.blo"
"$BLO" --check "$tmp/a.blo" "$tmp/a.blo" >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 0 ] && [ ! -s "$tmp/err" ]; then ok "two clean files"; else bad "two clean files"; fi
"$BLO" --check "$tmp/a.blo" "$tmp/b.blo" >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 1 ] && grep -q "b.blo:1:7: error: unknown name 'a'" "$tmp/err"; then ok "definitions do not leak between files"; else bad "definitions do not leak between files"; fi
"$BLO" --check "$tmp/missing.blo" >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 1 ] && grep -q "cannot open" "$tmp/err"; then ok "missing file"; else bad "missing file"; fi
printf 'let = 2\nlet b = (\n' >"$tmp/syn.blo"
"$BLO" --check "$tmp/syn.blo" >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 1 ] && grep -q "syn.blo:1:5: error: syntax error" "$tmp/err"; then ok "syntax error"; else bad "syntax error"; fi
rm -f "$tmp/err"
"$BLO" --check >"$tmp/out" 2>"$tmp/err2"
if [ $? -eq 2 ] && grep -q "needs a file" "$tmp/err2"; then ok "no file"; else bad "no file"; fi

echo "run_check: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
