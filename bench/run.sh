#!/bin/sh
# bench/run.sh: blo's benchmark suite (bench/README.md).  Runs each workload
# three ways -- blo, PyTorch, hand-written C + OpenBLAS -- with the same data,
# algorithm, iteration counts, float64 and thread count, checks that the three
# agree on the final outer objective F, and prints median times, the ratios
# blo/C and torch/blo, blo's peak memory (W4) and whether the targets are met.
# W5 (a LeNet) has no C column; CONV (one convolution layer against the
# matrix products beneath it) has no torch column.
#
#   make bench          or, from the top build directory after a build,
#   sh bench/run.sh
#
# Environment (all optional):
#   BLO                  the blo executable (default ./blo)
#   PYTHON               the Python with torch (default /usr/bin/python3)
#   CC                   C compiler for the references (default cc)
#   BENCH_REPEATS        runs per measurement, the median is shown (default 5)
#   BENCH_SLOW_REPEATS   runs of torch on W3, ~17 s each (default 1)
#   BENCH_THREADS_LIST   thread counts (default "1 2")
#   BENCH_ONLY           a subset of "W1 W2 W3 W4 W5 CONV AD" (default all)
#   BENCH_QUICK=1        small step counts, to check the runner itself
#   BENCH_FMNIST         Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist)
#   BENCH_TOL            relative tolerance on F (default 1e-6)
set -u

here=$(cd "$(dirname "$0")" && pwd)
BLO=${BLO:-./blo}
PYTHON=${PYTHON:-/usr/bin/python3}
CC=${CC:-cc}
REPEATS=${BENCH_REPEATS:-5}
SLOW_REPEATS=${BENCH_SLOW_REPEATS:-1}
THREADS_LIST=${BENCH_THREADS_LIST:-"1 2"}
ONLY=${BENCH_ONLY:-"W1 W2 W3 W4 W5 CONV AD"}
QUICK=${BENCH_QUICK:-0}
FMNIST=${BENCH_FMNIST:-/usr/share/datasets/fashion-mnist}
TOL=${BENCH_TOL:-1e-6}

# sizes and step counts (bench/README.md)
W1_OUTER=20; W2_OUTER=50; W3_OUTER=20000; W4_KS="10 100 1000"
W5_FWD=20; W5_BWD=10; W5_HYPER=3; CONV_COUNT=20
if [ "$QUICK" = 1 ]; then W1_OUTER=2; W2_OUTER=4; W3_OUTER=500; W4_KS="10 100"; W5_FWD=2; W5_BWD=1; W5_HYPER=1; CONV_COUNT=2; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/blo-bench.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
touch "$work/start"   # to notice a rebuild of blo during the run
start_all=$(date +%s)
ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo '?')
loadavg() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'; }
load_start=$(loadavg)

say() { printf '%s\n' "$*" >&2; }
want() { case " $ONLY " in *" $1 "*) return 0 ;; esac; return 1; }

# ---- what is available ----
if ! "$BLO" -e 'print 1' >/dev/null 2>&1; then
  say "bench: cannot run blo as '$BLO' (build first: make; or set BLO=path/to/blo)"
  exit 1
fi
have_torch=0
if "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
  have_torch=1
  torch_version=$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null)
else
  say "bench: torch is not available to $PYTHON: the PyTorch column is skipped (install it with: apt-get install python3-torch)"
fi
have_c=1
for r in w1 w2 w3 conv; do
  libs="-lopenblas -lm"
  [ $r = w2 ] && libs="-lopenblas -lz -lm"
  # shellcheck disable=SC2086
  if ! $CC -O2 -std=c11 -I"$here" -o "$work/ref_$r" "$here/ref_$r.c" $libs 2>"$work/cc.err"; then
    say "bench: cannot compile bench/ref_$r.c (needs libopenblas-dev, zlib1g-dev): the C column is skipped"
    cat "$work/cc.err" >&2
    have_c=0
  fi
done
rss_tool=""
if [ -x /usr/bin/time ] && /usr/bin/time -v true >/dev/null 2>&1; then
  rss_tool="time"
elif $CC -O2 -o "$work/maxrss" "$here/maxrss.c" 2>/dev/null; then
  rss_tool="wrapper"
fi
have_w2=1
if [ ! -r "$FMNIST/train-images-idx3-ubyte.gz" ] || [ ! -r "$FMNIST/train-labels-idx1-ubyte.gz" ]; then
  say "bench: Fashion-MNIST not found in $FMNIST (set BENCH_FMNIST): W2 is skipped"
  have_w2=0
fi

# ---- running and recording ----
# run KEY IMPL CMD...: one run; appends "F time" to $work/KEY.IMPL
run() {
  key=$1 impl=$2
  shift 2
  if ! "$@" >"$work/out" 2>"$work/err"; then
    say "bench: $key $impl failed: $*"
    cat "$work/err" >&2
    echo "nan nan" >>"$work/$key.$impl"
    return
  fi
  line=$(sed -n 's/^RESULT F=\([^ ]*\) time=\([^ ]*\).*/\1 \2/p' "$work/out")
  [ -n "$line" ] || line="nan nan"
  echo "$line" >>"$work/$key.$impl"
}

# median of column 2 of a results file
median() {
  [ -s "$1" ] || { echo "-"; return; }
  awk '{print $2}' "$1" | sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) { print "-"; exit }
    if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.4g\n", m }'
}
# a ratio with 2 decimals
r2() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.2f\n", v }'; }

# measure KEY LABEL REPS_TORCH BLO_CMD -- TORCH_CMD -- C_CMD [-- C2_CMD]
# (each command is a string; the run order is interleaved per repeat; C2 is
# a second C variant, shown on a line of its own under the workload's row)
measure() {
  key=$1 label=$2 treps=$3 bcmd=$4 tcmd=$5 ccmd=$6 c2cmd=${7:-}
  rm -f "$work/$key".*
  i=1
  while [ "$i" -le "$REPEATS" ]; do
    say "  $label: run $i/$REPEATS"
    # shellcheck disable=SC2086
    run "$key" blo $bcmd
    # shellcheck disable=SC2086
    [ $have_c = 1 ] && [ -n "$ccmd" ] && run "$key" c $ccmd
    # shellcheck disable=SC2086
    [ $have_c = 1 ] && [ -n "$c2cmd" ] && run "$key" c2 $c2cmd
    # shellcheck disable=SC2086
    [ $have_torch = 1 ] && [ -n "$tcmd" ] && [ "$i" -le "$treps" ] && run "$key" torch $tcmd
    i=$((i + 1))
  done
  [ -n "$c2cmd" ] && echo "$c2cmd" >"$work/c2cmd.$key"
  echo "$key|$label" >>"$work/rows"
}

for th in $THREADS_LIST; do
  export OPENBLAS_NUM_THREADS="$th" OMP_NUM_THREADS="$th" BENCH_THREADS="$th"
  say "bench: $th thread(s)"
  if want W1; then
    measure "w1cg.$th" "W1 ridge cg(20)      $th" "$REPEATS" \
      "$BLO $here/w1.blo cg 20 100 $W1_OUTER" "$PYTHON $here/w1.py cg 20 100 $W1_OUTER" "$work/ref_w1 cg 20 100 $W1_OUTER"
    measure "w1un.$th" "W1 ridge unroll(100) $th" "$REPEATS" \
      "$BLO $here/w1.blo unroll 100 100 $W1_OUTER" "$PYTHON $here/w1.py unroll 100 100 $W1_OUTER" \
      "$work/ref_w1 unroll 100 100 $W1_OUTER"
  fi
  if want W2 && [ $have_w2 = 1 ]; then
    # the C reference fuses its two large products over row blocks at 1
    # thread (faster there); the other layout is measured too, for the gap
    alt=0; [ "$th" = 1 ] || alt=1
    measure "w2.$th" "W2 distill unroll(10) $th" "$REPEATS" \
      "$BLO $here/w2.blo 10 $W2_OUTER 10000 $FMNIST" "$PYTHON $here/w2.py 10 $W2_OUTER 10000 $FMNIST" \
      "$work/ref_w2 10 $W2_OUTER 10000 $FMNIST" "env REF_FUSED=$alt $work/ref_w2 10 $W2_OUTER 10000 $FMNIST"
  fi
  if want W5; then
    for m in "fwd $W5_FWD" "bwd $W5_BWD" "hyper $W5_HYPER"; do
      md=${m%% *} cnt=${m#* }
      measure "w5$md.$th" "$(printf 'W5 LeNet %-5s %s' "$md" "$th")" "$REPEATS" \
        "$BLO $here/w5.blo $md $cnt" "$PYTHON $here/w5.py $md $cnt" ""
    done
  fi
  if want CONV; then
    for l in conv1 conv2; do
      measure "$l.$th" "$(printf 'CONV %s fwd+bwd   %s' "$l" "$th")" "$REPEATS" \
        "$BLO $here/conv.blo $l $CONV_COUNT" "" "$work/ref_conv $l $CONV_COUNT" \
        "env REF_BATCH=1 $work/ref_conv $l $CONV_COUNT"
    done
  fi
  if want W3; then
    measure "w3.$th" "W3 P6 unroll(10)     $th" "$SLOW_REPEATS" \
      "$BLO $here/w3.blo $W3_OUTER 10" "$PYTHON $here/w3.py $W3_OUTER 10" "$work/ref_w3 $W3_OUTER 10"
  fi
done

# ---- the table ----
echo
echo "blo benchmark suite ($(date '+%Y-%m-%d %H:%M'); $ncpu CPUs; torch ${torch_version:-not available})"
echo "times: median seconds of the solve (data loading and process start excluded), over the runs shown in ()"
echo
printf '%-24s %-21s %-9s %-5s %-11s %-11s %-11s %-7s %-9s\n' \
  "workload          thr" "F (blo)" "max rel" "agree" "blo s" "torch s" "C s" "blo/C" "torch/blo"
printf '%s\n' "---------------------------------------------------------------------------------------------------------------"
mismatch=0
: >"$work/ratios"
if [ -s "$work/rows" ]; then
  while IFS='|' read -r key label; do
    fb=$(awk 'NR == 1 {print $1}' "$work/$key.blo")
    # largest relative difference of any run's F (blo, torch, C) from blo's first F
    rel=$(cat "$work/$key".* | awk -v ref="$fb" '
      { if ($1 == "nan" || ref == "nan") { bad = 1; next }
        d = $1 - ref; if (d < 0) d = -d; s = ref < 0 ? -ref : ref; r = s > 0 ? d / s : d; if (r > m) m = r }
      END { if (bad) print "nan"; else printf "%.1e\n", m }')
    ok=$(awk -v r="$rel" -v t="$TOL" 'BEGIN { print (r != "nan" && r + 0 <= t + 0) ? "ok" : "MISMATCH" }')
    [ "$ok" = ok ] || mismatch=1
    tb=$(median "$work/$key.blo")
    tt=$(median "$work/$key.torch")
    tc=$(median "$work/$key.c")
    nb=$(wc -l <"$work/$key.blo" | tr -d ' ')
    nt=$( [ -s "$work/$key.torch" ] && wc -l <"$work/$key.torch" | tr -d ' ' || echo 0)
    nc=$( [ -s "$work/$key.c" ] && wc -l <"$work/$key.c" | tr -d ' ' || echo 0)
    # ratios of the medians, unrounded for the targets, 2 decimals in the table
    rbc=$(awk -v a="$tb" -v b="$tc" 'BEGIN { if (b == "-" || b + 0 == 0) print "-"; else printf "%.6g\n", a / b }')
    rtb=$(awk -v a="$tt" -v b="$tb" 'BEGIN { if (a == "-" || b + 0 == 0) print "-"; else printf "%.6g\n", a / b }')
    printf '%-24s %-21s %-9s %-5s %-11s %-11s %-11s %-7s %-9s\n' "$label" "$fb" "$rel" "$ok" \
      "$tb ($nb)" "$tt ($nt)" "$tc ($nc)" "$(r2 "$rbc")" "$(r2 "$rtb")"
    rtc=$(awk -v a="$tt" -v b="$tc" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.6g\n", a / b }')
    echo "${key%%.*} ${key##*.} $rbc $rtb $rtc" >>"$work/ratios"
    if [ -s "$work/$key.c2" ]; then
      tc2=$(median "$work/$key.c2")
      nc2=$(wc -l <"$work/$key.c2" | tr -d ' ')
      rbc2=$(awk -v a="$tb" -v b="$tc2" 'BEGIN { if (b == "-" || b + 0 == 0) print "-"; else printf "%.6g\n", a / b }')
      lay="fused blocks"; grep -q 'REF_FUSED=0' "$work/c2cmd.$key" 2>/dev/null && lay="whole-matrix"
      grep -q 'REF_BATCH=1' "$work/c2cmd.$key" 2>/dev/null && lay="whole batch"
      printf '%-24s %-21s %-9s %-5s %-11s %-11s %-11s %-7s\n' "  C, $lay" "" "" "" "" "" "$tc2 ($nc2)" "$(r2 "$rbc2")"
    fi
  done <"$work/rows"
fi
echo
echo "agree: every run's F (blo, torch, C) within relative $TOL of blo's; max rel = the largest relative difference"
[ $mismatch = 1 ] && echo "MISMATCH: the implementations disagree on F (see the rows marked MISMATCH)"

# ---- W4: blo's peak memory ----
w4_unroll="-" w4_cg="-"
if want W4; then
  if [ -z "$rss_tool" ]; then
    echo
    echo "W4 skipped: neither /usr/bin/time nor a C compiler for bench/maxrss.c"
  else
    export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 BENCH_THREADS=1
    say "bench: W4 memory"
    # peak RSS in KB of one blo run
    peak() {
      if [ "$rss_tool" = time ]; then
        /usr/bin/time -v "$@" >/dev/null 2>"$work/tv" || { say "bench: W4 run failed: $*"; cat "$work/tv" >&2; }
        sed -n 's/.*Maximum resident set size (kbytes): *//p' "$work/tv"
      else
        "$work/maxrss" "$work/rss" "$@" >/dev/null 2>"$work/err" || say "bench: W4 run failed: $*"
        cat "$work/rss"
      fi
    }
    n=500   # size of y on W1
    echo
    echo "W4: peak RSS of blo on W1 (n = size(y) = $n, 2 outer steps, 1 thread; $( [ "$rss_tool" = time ] && echo '/usr/bin/time -v' || echo 'getrusage via bench/maxrss.c'))"
    printf '%-22s %-12s %-16s %-16s %-8s\n' "method" "peak RSS MB" "growth vs K=10" "(K-10)*n*8" "ratio"
    printf '%s\n' "------------------------------------------------------------------------------"
    : >"$work/w4"
    for m in unroll cg; do
      base=""
      for K in $W4_KS; do
        say "  W4 $m $K"
        if [ $m = unroll ]; then kb=$(peak "$BLO" "$here/w1.blo" unroll "$K" "$K" 2); lab="unroll($K), T = $K"
        else kb=$(peak "$BLO" "$here/w1.blo" cg "$K" 100 2); lab="cg($K), T = 100"; fi
        [ -n "$base" ] || base=$kb
        awk -v lab="$lab" -v kb="$kb" -v base="$base" -v K="$K" -v n="$n" -v m="$m" 'BEGIN {
          g = (kb - base) * 1024; s = (K - 10) * n * 8
          printf "%-22s %-12.2f %-16s %-16s %-8s\n", lab, kb / 1024, sprintf("%+.2f MB", g / 1048576),
                 sprintf("%.2f MB", s / 1048576), (s > 0 ? sprintf("%.2f", g / s) : "-")
          print m, K, g, s > "/dev/stderr" }' 2>>"$work/w4"
      done
    done
    # unroll: growth no faster than the stored iterates (ratio <= 1.25, 256 KB of slack for page
    # granularity); cg: no growth with its iterations (at most 512 KB at the largest count)
    w4_unroll=$(awk '$1 == "unroll" && $2 > 10 { if ($3 > 1.25 * $4 + 262144) bad = 1; n++ }
                     END { print (n && !bad) ? "met" : "not met" }' "$work/w4")
    w4_cg=$(awk '$1 == "cg" { last = $3; n++ } END { print (n > 1 && last <= 524288) ? "met" : "not met" }' "$work/w4")
    echo
    echo "unroll(K): growth no faster than the K stored iterates (growth <= 1.25 (K-10)*n*8 + 256 KB): $w4_unroll"
    echo "cg(K): no growth with its iterations (growth at the largest K <= 512 KB): $w4_cg"
    echo "(cg(K, tol = 0) stops early once its recursive residual underflows to 0, after ~390 iterations here)"
  fi
fi

# ---- AD: cost of a gradient and an HVP relative to one evaluation (1 thread) ----
ad_g=n/a; ad_h=n/a
if want AD; then
  echo
  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$BLO" "$here/ad_cost.blo" >"$work/ad" 2>&1 || say "bench: ad_cost.blo failed"
  grep '^ad_cost' "$work/ad"
  read -r _ rg rh rm <<EOF_AD
$(grep '^ad_ratios' "$work/ad")
EOF_AD
  ad_g=$(awk -v r="$rg" 'BEGIN { print (r != "" && r <= 4) ? "met" : "not met" }')
  ad_h=$(awk -v r="$rh" 'BEGIN { print (r != "" && r <= 10) ? "met" : "not met" }')
fi

# ---- targets ----
# ratio W COLUMN: the ratios of workload W (w1cg, w1un, w2, w3) at every thread count
ratios() { awk -v w="$1" -v c="$2" '$1 == w { printf "%s%s", sep, ($c == "-" ? "-" : sprintf("%.3f", $c)); sep = "/" }' "$work/ratios"; }
# verdict W COLUMN OP LIMIT: met when every ratio of W satisfies it
verdict() {
  awk -v w="$1" -v c="$2" -v op="$3" -v lim="$4" '$1 == w { n++; v = $c
      if (v == "-") { miss = 1; next }
      if ((op == "<=" && v + 0 > lim + 0) || (op == ">=" && v + 0 < lim + 0)) bad = 1 }
    END { if (!n || miss) print "n/a"; else print bad ? "not met" : "met" }' "$work/ratios"
}
both() { a=$(verdict "$1" "$3" "$4" "$5"); b=$(verdict "$2" "$3" "$4" "$5")
  if [ "$a" = met ] && [ "$b" = met ]; then echo met; elif [ "$a" = n/a ] || [ "$b" = n/a ]; then
    [ "$a" = "not met" ] || [ "$b" = "not met" ] && echo "not met" || echo n/a; else echo "not met"; fi; }
w1c=$(both w1cg w1un 3 "<=" 1.3)
w2c=$(verdict w2 3 "<=" 1.3)
w1t=$(both w1cg w1un 4 ">=" 3)
w2t=$(verdict w2 4 ">=" 3)
w3t=$(verdict w3 4 ">=" 20)
w5t=$( a=$(verdict w5fwd 4 ">=" 1); b=$(verdict w5bwd 4 ">=" 1); c=$(verdict w5hyper 4 ">=" 1)
  if [ "$a" = met ] && [ "$b" = met ] && [ "$c" = met ]; then echo met
  elif [ "$a" = "not met" ] || [ "$b" = "not met" ] || [ "$c" = "not met" ]; then echo "not met"; else echo n/a; fi )
convc=$(both conv1 conv2 3 "<=" 1.5)
echo
echo "targets (ratios listed per thread count: $THREADS_LIST)"
printf '  %-52s %-8s %s\n' "blo within 1.3x of C on W1 (blo/C <= 1.3)" "$w1c" "cg $(ratios w1cg 3), unroll $(ratios w1un 3)"
printf '  %-52s %-8s %s\n' "blo within 1.3x of C on W2 (blo/C <= 1.3)" "$w2c" "$(ratios w2 3)"
printf '  %-52s %-8s %s\n' "blo >= 3x faster than torch on W1 (torch/blo >= 3)" "$w1t" "cg $(ratios w1cg 4), unroll $(ratios w1un 4)"
printf '  %-52s %-8s %s\n' "blo >= 3x faster than torch on W2 (torch/blo >= 3)" "$w2t" "$(ratios w2 4)"
printf '  %-52s %-8s %s\n' "  (torch/C = torch/blo if blo matched C)" "" \
  "W1 cg $(ratios w1cg 5), unroll $(ratios w1un 5); W2 $(ratios w2 5)"
printf '  %-52s %-8s %s\n' "blo >= 20x faster than torch on W3 (torch/blo >= 20)" "$w3t" "$(ratios w3 4)"
printf '  %-52s %-8s %s\n' "W5: blo no slower than torch (torch/blo >= 1)" "$w5t" \
  "fwd $(ratios w5fwd 4), bwd $(ratios w5bwd 4), hyper $(ratios w5hyper 4)"
printf '  %-52s %-8s %s\n' "CONV: conv2d fwd+bwd within 1.5x of its dgemm floor" "$convc" "conv1 $(ratios conv1 3), conv2 $(ratios conv2 3)"
printf '  %-52s %-8s\n' "W4: unroll memory grows no faster than its iterates" "$w4_unroll"
printf '  %-52s %-8s\n' "W4: cg memory does not grow with its iterations" "$w4_cg"
printf '  %-52s %-8s %s\n' "AD: a gradient costs <= 4x an evaluation" "$ad_g" "${rg:-}"
printf '  %-52s %-8s %s\n' "AD: a Hessian-vector product costs <= 10x" "$ad_h" "${rh:-}"
[ "$QUICK" = 1 ] && echo "  (BENCH_QUICK=1: reduced step counts, the figures are not the benchmark's)"
echo
bdir=$(dirname "$BLO")
if [ -n "$(find "$BLO" "$bdir/.libs" -newer "$work/start" -name '*blo*' 2>/dev/null | head -n 1)" ]; then
  echo "WARNING: $BLO or its library was rebuilt during this run: the figures mix two builds"
fi
echo "total time $(( $(date +%s) - start_all )) s; load average at the start $load_start, at the end $(loadavg)"
[ $mismatch = 0 ]
