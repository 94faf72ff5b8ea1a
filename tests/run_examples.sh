#!/bin/sh
# Example tests: each example runs in its fast mode (fewer steps,
# argument "fast") in a scratch directory; its own assertions check the
# qualitative finding it reproduces (e.g. warm start beats cold start), so a
# nonzero exit code is a failure.  Its figures and CSV file must be written.
# Examples that need Fashion-MNIST are skipped when it is not installed
# (Debian package dataset-fashion-mnist, or FASHION_MNIST=dir).
# Examples that need the MNIST digits are skipped when they are absent
# (`make mnist` writes them to data/mnist; or MNIST_DIR=dir); they get the
# directory as their second argument.
BLO=${BLO:-$(pwd)/blo}
SRCDIR=${SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
MNIST=${MNIST_DIR:-$SRCDIR/data/mnist}
case $MNIST in /*) ;; *) MNIST=$(pwd)/$MNIST ;; esac
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
skip=0
# name: files it must write
for spec in \
  "cold_vs_warm: cold_vs_warm.csv cold_vs_warm_w.png cold_vs_warm_F.png" \
  "fo_bias: fo_bias.csv fo_bias.png" \
  "antidistill_fourier: antidistill_fourier.csv antidistill_K.png antidistill_eps.png antidistill_targets.png" \
  "distill_binary: distill_binary.csv distill_binary.png distill_binary_compare.png" \
  "maml_sine: maml_sine.csv maml_sine.png maml_sine_fit.png" \
  "hyperopt_ridge: hyperopt_ridge.csv hyperopt_ridge.png" \
  "distill_fashion: distill_fashion.csv distill_fashion.png" \
  "penalty_denoise: penalty_denoise.csv penalty_denoise.png" \
  "fewshot_cnn: fewshot_cnn.csv fewshot_cnn_methods.csv fewshot_cnn.png" \
  "distill_mnist: distill_mnist.csv distill_mnist.png" \
  "poison_penalty: poison_penalty.csv poison_penalty.png"; do
  name=${spec%%:*}
  files=${spec#*:}
  f="$SRCDIR/examples/$name.blo"
  [ -f "$f" ] || continue
  case $name in
    distill_fashion|penalty_denoise)
      if [ ! -d "${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}" ]; then
        skip=$((skip + 1)); echo "SKIP $name: Fashion-MNIST is not installed"; continue
      fi ;;
  esac
  # fewshot_cnn reads the IDX files, the MNIST examples the .npy digits, from their second argument
  dataarg=""
  case $name in
    fewshot_cnn)
      dataarg=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
      if [ ! -r "$dataarg/t10k-images-idx3-ubyte.gz" ]; then
        skip=$((skip + 1)); echo "SKIP $name: Fashion-MNIST is not installed"; continue
      fi ;;
    distill_mnist|poison_penalty)
      if [ ! -f "$MNIST/images.npy" ] || [ ! -f "$MNIST/labels.npy" ]; then
        skip=$((skip + 1)); echo "SKIP $name: no MNIST digits in $MNIST (make mnist)"; continue
      fi
      dataarg=$MNIST ;;
  esac
  mkdir -p "$tmp/$name"
  (cd "$tmp/$name" && "$BLO" "$f" fast ${dataarg:+"$dataarg"} >out 2>err </dev/null)
  code=$?
  ok=1
  if [ "$code" -ne 0 ]; then
    echo "FAIL $name: exit code $code"; cat "$tmp/$name/out" "$tmp/$name/err"; ok=0
  fi
  for out in $files; do
    [ -s "$tmp/$name/$out" ] || { [ $ok -eq 0 ] || echo "FAIL $name: $out not written"; ok=0; }
  done
  if [ $ok -eq 1 ]; then pass=$((pass + 1)); echo "PASS $name"; else fail=$((fail + 1)); fi
done
echo "run_examples: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
