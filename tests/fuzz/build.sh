#!/bin/sh
# Builds the libFuzzer target tests/fuzz/fuzz_eval (run from the build
# directory; `make fuzz` calls it).  The library is compiled again from its
# sources with clang's coverage and sanitizer flags: the gcc-built libblo
# cannot be reused, since libFuzzer needs every library function
# instrumented.  Objects go to tests/fuzz/obj and are rebuilt when their
# source or any header is newer.  Also writes the dictionary tests/fuzz/blo.dict.
#
#   usage: build.sh SRCDIR SOURCE...   (the library's sources, as in Makefile.am)
#   environment: FUZZ_CC (clang), CAIRO_CFLAGS, FUZZ_LIBS (libraries to link)
set -eu
srcdir=$1
shift
cc=${FUZZ_CC:-clang}
out=tests/fuzz
mkdir -p "$out/obj"
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
cflags="-std=c11 -g -O1 $san -D_POSIX_C_SOURCE=200809L -DHAVE_CONFIG_H -I. -I$srcdir/include -Igrammar -I$srcdir/grammar -I$srcdir/runtime -I$srcdir/interp -I$srcdir/stdlib ${CAIRO_CFLAGS:-}"
headers=$(ls "$srcdir"/include/*.h "$srcdir"/grammar/*.h "$srcdir"/runtime/*.h "$srcdir"/interp/*.h "$srcdir"/stdlib/*.h grammar/*.h config.h 2>/dev/null | sort -u)
objs=""
for s in "$@"; do
  case $s in *.c) ;; *) continue ;; esac
  if [ -f "$s" ]; then src=$s; else src=$srcdir/$s; fi
  obj=$out/obj/$(echo "$s" | tr / _ | sed 's/\.c$/.o/')
  objs="$objs $obj"
  # shellcheck disable=SC2086
  if [ -f "$obj" ] && [ -z "$(find "$src" $headers -newer "$obj" 2>/dev/null)" ]; then continue; fi
  case $s in
    grammar/lexer.c|grammar/parser.c) warn="-w" ;;          # generated code
    *) warn="-Wall -Wextra -Wno-unused-parameter" ;;
  esac
  echo "  FUZZCC   $s"
  # shellcheck disable=SC2086
  $cc $cflags $warn -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
done
# shellcheck disable=SC2086
if [ ! -f "$out/fuzz_eval" ] || [ -n "$(find "$srcdir/tests/fuzz/fuzz_eval.c" $objs -newer "$out/fuzz_eval")" ]; then
  echo "  FUZZLD   $out/fuzz_eval"
  # shellcheck disable=SC2086
  $cc $cflags -Wall -Wextra -fsanitize=fuzzer "$srcdir/tests/fuzz/fuzz_eval.c" $objs ${FUZZ_LIBS:-} -o "$out/fuzz_eval"
fi

# Dictionary: operators and constructs, the lexer's keywords, and every
# identifier-shaped string literal of the builtin tables and the solve,
# method and optimizer option parsers (builtin, method and option names).
{
  cat "$srcdir/tests/fuzz/operators.dict"
  echo "# keywords (grammar/lexer.l)"
  sed -n 's/^"\([a-z_]*\)"[[:space:]].*TOK(.*/"\1"/p' "$srcdir/grammar/lexer.l"
  echo "# builtin, method and option names (stdlib/*.c, runtime/*.c)"
  cat "$srcdir"/stdlib/*.c "$srcdir"/runtime/*.c | grep -o '"[a-z_][a-z0-9_]*"' | sed -n '/^"..*.."$/p' | sort -u
} >"$out/blo.dict"
echo "  DICT     $out/blo.dict ($(grep -c '^"' "$out/blo.dict") entries)"
