#!/bin/sh
# Every example's figures, rendered in fast mode, checked structurally: each
# plot call is rewritten (tests/figure_check.py) to ask plot for what it drew
# (info = true) and assert tick labels on each axis inside its range, no
# point outside the axes, and a labelled colour bar on image grids.
# Examples whose data is not installed are skipped, as in run_examples.sh.
BLO=${BLO:-$(pwd)/blo}
SRCDIR=${SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
PYTHON=${PYTHON:-python3}
MNIST=${MNIST_DIR:-$SRCDIR/data/mnist}
case $MNIST in /*) ;; *) MNIST=$(pwd)/$MNIST ;; esac
FASHION=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "SKIP run_figures: no python3 to rewrite the examples"
  echo "run_figures: 0 passed, 0 failed"
  exit 77
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
for f in "$SRCDIR"/examples/*.blo; do
  name=$(basename "$f" .blo)
  grep -q 'plot(' "$f" || continue
  dataarg=""
  case $name in
    distill_fashion|penalty_denoise)
      [ -d "$FASHION" ] || { echo "SKIP $name: Fashion-MNIST is not installed"; continue; } ;;
    fewshot_cnn)
      [ -r "$FASHION/t10k-images-idx3-ubyte.gz" ] || { echo "SKIP $name: Fashion-MNIST is not installed"; continue; }
      dataarg=$FASHION ;;
    distill_mnist|poison_penalty)
      [ -f "$MNIST/images.npy" ] || { echo "SKIP $name: no MNIST digits in $MNIST"; continue; }
      dataarg=$MNIST ;;
  esac
  mkdir -p "$tmp/$name"
  "$PYTHON" "$SRCDIR/tests/figure_check.py" "$f" >"$tmp/$name/$name.blo" || { fail=$((fail + 1)); echo "FAIL $name: rewrite"; continue; }
  nplots=$(grep -c '__fig(plot(' "$tmp/$name/$name.blo")
  (cd "$tmp/$name" && "$BLO" "$name.blo" fast ${dataarg:+"$dataarg"} >out 2>err </dev/null)
  code=$?
  if [ "$code" -eq 0 ] && [ "$nplots" -gt 0 ] && ! grep -q "outside xlim/ylim" "$tmp/$name/err"; then
    pass=$((pass + 1)); echo "PASS $name ($nplots plot calls)"
  else
    fail=$((fail + 1)); echo "FAIL $name (exit $code)"; grep -E "error|outside" "$tmp/$name/err" | head -5
  fi
done
echo "run_figures: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
