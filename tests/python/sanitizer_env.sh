# Sourced by the Python test drivers with $lib the libblo.so under test: when
# it was built with ASan/UBSan, preload their runtimes into python (which is
# not instrumented) and turn leak checking off (python frees little at exit).
if ldd "$lib" 2>/dev/null | grep -q libasan; then
  asan=$(ldd "$lib" | sed -n 's/.*\(libasan[^ ]*\) => \([^ ]*\).*/\2/p' | head -n1)
  ubsan=$(ldd "$lib" | sed -n 's/.*\(libubsan[^ ]*\) => \([^ ]*\).*/\2/p' | head -n1)
  LD_PRELOAD="$asan${ubsan:+ $ubsan}${LD_PRELOAD:+ $LD_PRELOAD}"
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
  export LD_PRELOAD ASAN_OPTIONS
fi
