#!/bin/sh
# Runs the libFuzzer target for FUZZ_TIME seconds (run from the build
# directory after build.sh; `make fuzz` calls both).
#   FUZZ_TIME  seconds of fuzzing (default 60)
#   FUZZ_JOBS  0: one process (the default); N > 0: -fork=N, N child
#              processes that keep going past a crash (-ignore_crashes=1)
# The seed corpus is copied at each run from tests/scripts/*.blo and
# examples/*.blo into tests/fuzz/corpus (which keeps what the fuzzer adds);
# crash, leak, timeout and out-of-memory inputs go to tests/fuzz/artifacts/.
# FUZZ_ARGS adds libFuzzer options (e.g. -seed=1, -only_ascii=1).
# Exit status: 0 if no new artifact was written, 1 otherwise.
set -u
srcdir=$1
out=tests/fuzz
time=${FUZZ_TIME:-60}
jobs=${FUZZ_JOBS:-0}
[ -x "$out/fuzz_eval" ] || { echo "run.sh: $out/fuzz_eval is missing; run build.sh first" >&2; exit 2; }
mkdir -p "$out/corpus" "$out/artifacts"
cp "$srcdir"/tests/scripts/*.blo "$srcdir"/examples/*.blo "$out/corpus/"
# Findings are crash-, leak-, timeout- and oom- files; slow-unit- files only
# say that an input took long in wall-clock time (a loaded machine).
findings() { ls "$out/artifacts" | grep -c -E '^(crash|leak|timeout|oom)-'; }
before=$(findings)
# One BLAS thread: the CPU budget is per process, and the fuzzer must stay
# within the cores it was given.
OPENBLAS_NUM_THREADS=1
export OPENBLAS_NUM_THREADS
# -timeout (wall clock) is a backstop far above the harness's 1 s CPU budget:
# an input reaches it only if the evaluator ignores the interrupt flag.
# -rss_limit_mb bounds memory the harness's caps do not cover.
set -- -max_total_time="$time" -timeout=25 -rss_limit_mb=2048 -max_len=8192 \
  -dict="$out/blo.dict" -artifact_prefix="$out/artifacts/" -print_final_stats=1 -report_slow_units=20
if [ "$jobs" -gt 0 ]; then
  set -- "$@" -fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1
fi
# shellcheck disable=SC2086
"$out/fuzz_eval" "$@" ${FUZZ_ARGS:-} "$out/corpus" >"$out/fuzz.log" 2>&1
rc=$?
after=$(findings)
found=$((after - before))
grep -E '^(stat::|Done |INFO: (Seed|exiting)|#[0-9]+[[:space:]]+DONE)' "$out/fuzz.log"
execs=$(grep -o -E '^#[0-9]+' "$out/fuzz.log" | tail -n 1 | tr -d '#')
times >"$out/times.txt"   # in this shell: a subshell would not see the fuzzer's time
echo "fuzz: ${execs:-0} executions; CPU time of the fuzzer (user, system): $(tail -n 1 "$out/times.txt")"
if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
  tail -n 40 "$out/fuzz.log"
  echo "fuzz: FAILED: exit status $rc, $found new input(s) in $out/artifacts/ (log: $out/fuzz.log)"
  exit 1
fi
echo "fuzz: no crash in ${time}s (log: $out/fuzz.log)"
