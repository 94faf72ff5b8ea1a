#!/bin/sh
# MPI tests: each tests/mpi/NAME.blo runs under `mpirun -np 2` and `-np 3`,
# both with --oversubscribe (Open MPI refuses more ranks than cores otherwise,
# and a CI machine may have one core).  A script that checks the
# collectives must exit 0 and print "ok" (it asserts every result against a
# value computed without communication); an err_*.blo script must end the
# job with exit code 1, its stderr holding every "# expect: TEXT" line of its
# head, and print nothing; then `print` from rank 0 and, with -a, from every
# rank.  Each mpirun has a timeout, so a hang fails.
# Skipped (with a message) when blo was built without MPI.
BLO=${BLO:-$(pwd)/blo}
SRCDIR=${SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
dir="$SRCDIR/tests/mpi"
if [ "${BLO_MPI:-no}" != yes ]; then
  echo "run_mpi: skipped (blo was built without MPI: configure found no MPI, or --without-mpi)"
  exit 77
fi
MPIRUN=${MPIRUN:-mpirun}
if ! command -v "$MPIRUN" >/dev/null 2>&1; then
  echo "run_mpi: skipped (no $MPIRUN: install openmpi-bin)"
  exit 77
fi
# CI runs as root; Open MPI refuses that unless told it is intended.
OMPI_ALLOW_RUN_AS_ROOT=1
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
# In a sanitizer build, Open MPI's own process-lifetime allocations (many in
# components it has unloaded, so no suppression can name them) would fail
# every run: leaks change no exit code here, and sanitizer_check fails a run
# whose leak report has a frame in blo's code, or any other sanitizer error.
LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}exitcode=0"
export LSAN_OPTIONS
sanitizer_check() {  # label, stderr file; 0 if clean
  if grep -q "ERROR: AddressSanitizer\|runtime error:" "$2"; then
    echo "FAIL $1: sanitizer error"; return 1
  fi
  if grep -q "ERROR: LeakSanitizer" "$2" &&
     grep -Eq "^ +#[0-9]+ .* in [A-Za-z_0-9]+ ([^ ]*/)?(interp|stdlib|runtime|grammar)/[a-z_]+\\.[cy]:|\((\S*/)?(blo|libblo\.so[.0-9]*)\+0x" "$2"; then
    echo "FAIL $1: memory leaked in blo"; return 1
  fi
  return 0
}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
for f in "$dir"/*.blo; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .blo)
  for np in "2 --oversubscribe" "3 --oversubscribe"; do
    label="$name (-np $np)"
    # shellcheck disable=SC2086
    (cd "$dir" && timeout 60 "$MPIRUN" -np $np "$BLO" "$name.blo" >"$tmp/out" 2>"$tmp/err" </dev/null)
    code=$?
    ok=1
    case $name in
      err_*)
        [ "$code" -eq 1 ] || { echo "FAIL $label: exit code $code, expected 1"; ok=0; }
        sed -n 's/^# expect: //p' "$f" >"$tmp/expect"
        [ -s "$tmp/expect" ] || { echo "FAIL $label: no '# expect:' line"; ok=0; }
        while IFS= read -r want; do
          grep -qF -- "$want" "$tmp/err" || { echo "FAIL $label: stderr lacks '$want'"; ok=0; }
        done <"$tmp/expect"
        [ ! -s "$tmp/out" ] || { echo "FAIL $label: printed output"; ok=0; }
        ;;
      *)
        [ "$code" -eq 0 ] || { echo "FAIL $label: exit code $code"; ok=0; }
        grep -qx ok "$tmp/out" || { echo "FAIL $label: no 'ok' line"; ok=0; }
        ;;
    esac
    sanitizer_check "$label" "$tmp/err" || ok=0
    [ "$code" -eq 124 ] && echo "  (timed out after 60 s)"
    if [ $ok -eq 1 ]; then
      pass=$((pass + 1)); echo "PASS $label"
    else
      fail=$((fail + 1)); sed 's/^/  | /' "$tmp/err" | head -n 20
    fi
  done
done
# Output: rank 0 only by default; with -a every rank's, prefixed [rank].
check_print() {  # label, expected stdout (sorted), blo options...
  label=$1; want=$2; shift 2
  timeout 60 "$MPIRUN" -np 3 --oversubscribe "$BLO" "$@" -e 'print "rank", rank(), "of", nranks()
print format("%d+\n%d-", rank(), rank())' </dev/null 2>"$tmp/err" | LC_ALL=C sort >"$tmp/out"
  if printf '%s\n' "$want" | diff -u - "$tmp/out" >"$tmp/diff" && sanitizer_check "$label" "$tmp/err"; then
    pass=$((pass + 1)); echo "PASS $label"
  else
    fail=$((fail + 1)); echo "FAIL $label"; cat "$tmp/diff" "$tmp/err"
  fi
}
check_print "print from rank 0 (-np 3)" "0+
0-
rank 0 of 3"
check_print "print -a from every rank (-np 3)" "[0] 0+
[0] 0-
[0] rank 0 of 3
[1] 1+
[1] 1-
[1] rank 1 of 3
[2] 2+
[2] 2-
[2] rank 2 of 3" -a
echo "run_mpi: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
