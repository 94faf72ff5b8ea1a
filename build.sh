#!/bin/sh
# One command from a fresh Debian 12 machine to a running blo:
# installs what is missing, generates, configures, builds, and runs the
# flagship example.  Pass configure options as arguments.
set -e
cd "$(dirname "$0")"
pkgs="build-essential autoconf automake libtool pkg-config bison flex libopenblas-dev liblapacke-dev libreadline-dev check zlib1g-dev libcairo2-dev libjansson-dev dataset-fashion-mnist clang libclang-rt-14-dev"
# Optional: the Python package's NumPy, the Jupyter kernel's ipykernel and
# the packages its tests drive it with, tqdm for progress bars.  Installed
# when running as root; otherwise their tests are skipped with a message.
opt="python3-numpy python3-ipykernel python3-jupyter-client python3-nbclient python3-tqdm"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
optmissing=""
for p in $opt; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || optmissing="$optmissing $p"
done
if [ "$(id -u)" = 0 ]; then
  missing="$missing$optmissing"
elif [ -n "$optmissing" ]; then
  echo "optional, for the Python package and the Jupyter kernel: sudo apt-get install -y$optmissing"
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "blo needs these Debian packages; install them with:"
    echo "  sudo apt-get install -y$missing"
    exit 1
  fi
fi
[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure "$@"
make -j"$(nproc)"
./blo examples/quickstart.blo
