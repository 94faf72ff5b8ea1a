#!/bin/sh
# Runs every example (fast mode) and the flagship under valgrind memcheck:
# any invalid access, use of uninitialised memory or leak fails it.
#   sh tests/valgrind_examples.sh        (after a build, from the top directory)
# Slow (minutes), so not part of make check.  tests/valgrind.supp holds the
# only suppression: fontconfig's process-lifetime cache.
top=$(cd "$(dirname "$0")/.." && pwd)
run="$top/libtool --mode=execute valgrind --leak-check=full --error-exitcode=9"
run="$run --errors-for-leak-kinds=definite,indirect --suppressions=$top/tests/valgrind.supp"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
for f in "$top"/examples/*.blo; do
  name=$(basename "$f" .blo)
  case $name in quickstart|least_squares) arg= ;; *) arg=fast ;; esac
  if (cd "$tmp" && $run "$top/blo" "$f" $arg >/dev/null 2>"$tmp/$name.vg"); then
    pass=$((pass + 1)); echo "PASS $name"
  else
    fail=$((fail + 1)); echo "FAIL $name"; grep -A20 "ERROR SUMMARY\|definitely lost\|Invalid\|uninitialised" "$tmp/$name.vg" | head -40
  fi
done
echo "valgrind_examples: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
