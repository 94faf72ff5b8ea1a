#!/bin/sh
# One command from a fresh Debian 12 machine to a running blo:
# installs what is missing, generates, configures, builds, and runs the
# flagship example.  Pass configure options as arguments.
set -e
cd "$(dirname "$0")"
pkgs="build-essential autoconf automake libtool pkg-config bison flex libopenblas-dev liblapacke-dev libreadline-dev check zlib1g-dev libcairo2-dev libjansson-dev dataset-fashion-mnist clang libclang-rt-14-dev"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
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
