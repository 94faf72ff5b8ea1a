/* test_eval.c: the evaluator on hostile input, through the public API:
 * stores whose index expressions rebind their target, numbers used as
 * indices, expressions nested deeper than the evaluator may recurse, ranges
 * beyond 2^53 and strings holding NUL bytes.  Each case checks the exact
 * message and location of its error, or the printed result. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blo.h"
#include "capture_sink.h"

static sink out;

static blo_state *open_state(void) {
  memset(&out, 0, sizeof out);
  blo_config c;
  blo_config_defaults(&c);
  c.write_fn = sink_write;
  c.write_ud = &out;
  blo_state *S = blo_open(&c);
  ck_assert_ptr_nonnull(S);
  return S;
}

static int run(blo_state *S, const char *src) { return blo_eval_string(S, "t.blo", src, strlen(src)); }

/* src runs and prints exactly want (which may hold NUL bytes: wlen). */
static void expect_out_n(const char *src, const char *want, size_t wlen) {
  blo_state *S = open_state();
  int rc = run(S, src);
  if (rc != BLO_OK) ck_abort_msg("'%s' failed: %s", src, blo_last_error(S)->message);
  ck_assert_msg(out.n == wlen && memcmp(out.buf, want, wlen) == 0, "'%s' printed '%s', expected '%s'", src, out.buf,
                want);
  blo_close(S);
}

static void expect_out(const char *src, const char *want) { expect_out_n(src, want, strlen(want)); }

/* src fails with a runtime (or, syntax = 1, a syntax) error msg at line:col. */
static void expect_error(const char *src, int syntax, const char *msg, int line, int col) {
  blo_state *S = open_state();
  int rc = run(S, src);
  const blo_error *e = blo_last_error(S);
  ck_assert_msg(rc == (syntax ? BLO_ERROR_SYNTAX : BLO_ERROR_RUNTIME), "'%.80s': status %d (%s)", src, rc,
                e->message);
  ck_assert_msg(strcmp(e->message, msg) == 0, "'%.80s': message '%s', expected '%s'", src, e->message, msg);
  ck_assert_msg(e->line == line && e->col == col, "'%.80s': at %d:%d, expected %d:%d", src, e->line, e->col, line,
                col);
  /* the state still runs a script afterwards */
  ck_assert_int_eq(run(S, "let ok_after = 1"), BLO_OK);
  blo_close(S);
}

/* ---- stores whose index expressions change the target ---- */

START_TEST(store_after_index_rebinds_target) {
  /* the index runs first; the store goes into the value bound when it is done */
  expect_out("let l = [1, 2, 3]\nfn f() { l = [7, 8, 9]; return 1 }\nl[f()] = 5\nprint l", "[7, 5, 9]\n");
  expect_out("let x = zeros(3)\nfn f() { x = [4, 4, 4]; return 2 }\nx[f()] = 1\nprint x", "[4, 4, 1]\n");
  expect_out("let r = {a = [1, 2, 3]}\nfn f() { r = {a = [6, 6, 6], b = 1}; return 0 }\nr.a[f()] = 0\nprint r",
             "{a = [0, 6, 6], b = 1}\n");
  expect_out("let r = {a = 1}\nfn f() { r = {a = 2, b = 3}; return 9 }\nr.c = f()\nprint r", "{a = 2, b = 3, c = 9}\n");
  /* the old value, still held elsewhere, is left alone */
  expect_out("let l = [1, 2, 3]\nlet keep = l\nfn f() { l = [0, 0]; return 0 }\nl[f()] = 5\nprint l, keep",
             "[5, 0] [1, 2, 3]\n");
}
END_TEST

START_TEST(store_target_becomes_unindexable) {
  expect_error("let l = [1, 2, 3]\nfn f() { l = 0; return 1 }\nl[f()] = 5", 0, "cannot index-assign into a number", 3,
               1);
  expect_error("let l = [[1], \"s\"]\nfn f() { l = 0; return 1 }\nl[0][f()] = 5", 0,
               "cannot index-assign into a number", 3, 1);
  expect_error("let x = [1, 2, 3]\nfn f() { x = 1.5; return 1 }\nx[f()] = 5", 0, "cannot index-assign into a number", 3,
               1);
  expect_error("let x = [1, 2, 3]\nfn f() { x = \"abc\"; return 1 }\nx[f()] = 5", 0,
               "cannot index-assign into a string", 3, 1);
  expect_error("let r = {a = [1, 2, 3]}\nfn f() { r = 0; return 1 }\nr.a[f()] = 5", 0, "cannot set field 'a' of a number",
               3, 1);
  expect_error("let r = {a = [1, 2, 3]}\nfn f() { r = {b = 1}; return 1 }\nr.a[f()] = 5", 0,
               "record has no field 'a' (fields: b)", 3, 1);
}
END_TEST

START_TEST(nested_store_evaluates_each_index_once) {
  /* m[k()][0] = 9: k runs once, and the row is written back where k said */
  expect_out("let calls = 0\nlet m = [[1, 2], [3, 4]]\nfn k() { calls = calls + 1; return 1 }\n"
             "m[k()][0] = 9\nprint m, calls",
             "[[1, 2], [9, 4]] 1\n");
  expect_out("let calls = 0\nlet l = [[1, 2], \"s\"]\nfn k() { calls = calls + 1; return calls - 1 }\n"
             "l[k()][k()] = 5\nprint l, calls",
             "[[1, 5], \"s\"] 2\n");
  expect_out("let r = {a = {b = [1, 2, 3]}}\nlet s = r\nr.a.b[1:] = 0\nprint r, s",
             "{a = {b = [1, 0, 0]}} {a = {b = [1, 2, 3]}}\n");
  expect_error("fn f() = [1, 2]\nf()[0] = 1", 0, "cannot assign to this expression", 2, 1);
}
END_TEST

/* A native that defines many globals, which grows (moves) the global table. */
static int nat_define(blo_state *S, void *ud, int nargs, const blo_array *args, blo_array *o) {
  (void)ud;
  (void)nargs;
  (void)args;
  char name[32];
  for (int i = 0; i < 2000; i++) {
    snprintf(name, sizeof name, "g%d", i);
    int rc = blo_set_number(S, name, i);
    if (rc) return rc;
  }
  int rc = blo_native_output(S, o, 0, NULL);
  if (rc) return rc;
  o->data[0] = 1;
  return BLO_OK;
}

START_TEST(store_after_native_moves_globals) {
  blo_state *S = open_state();
  blo_native d = {"define_many", nat_define, NULL, NULL, NULL, 0, 0, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &d), BLO_OK);
  ck_assert_int_eq(run(S, "let x = [1, 2, 3]\nlet l = [1, 2]\nlet r = {a = [0, 0]}\n"
                          "x[define_many()] = 7\nl[define_many()] = 8\nr.a[define_many()] = 9\nprint x, l, r, g1999"),
                   BLO_OK);
  ck_assert_str_eq(out.buf, "[1, 7, 3] [1, 8] {a = [0, 9]} 1999\n");
  blo_close(S);
}
END_TEST

/* ---- numbers used as indices ---- */

START_TEST(index_numbers_checked) {
  expect_error("let x = [1, 2, 3]\nprint x[1e300]", 0, "index 1e+300 out of range for axis 0 of size 3", 2, 7);
  expect_error("let x = [1, 2, 3]\nprint x[-1e19]", 0, "index -1e+19 out of range for axis 0 of size 3", 2, 7);
  expect_error("let x = [1, 2, 3]\nprint x[0/0]", 0, "index must be a finite integer, got nan", 2, 10);
  expect_error("let x = [1, 2, 3]\nprint x[1/0]", 0, "index must be a finite integer, got inf", 2, 10);
  expect_error("let x = [1, 2, 3]\nprint x[1.5]", 0, "index must be an integer, got 1.5", 2, 9);
  expect_error("let x = [1, 2, 3]\nprint x[0/0:3]", 0, "slice bound must be a finite integer, got nan", 2, 10);
  expect_error("let x = [1, 2, 3]\nprint x[:-1/0]", 0, "slice bound must be a finite integer, got -inf", 2, 12);
  expect_error("let x = [1, 2, 3]\nprint x[0.5:]", 0, "slice bound must be an integer, got 0.5", 2, 9);
  expect_error("let x = [1, 2, 3]\nx[1e300] = 1", 0, "index 1e+300 out of range for axis 0 of size 3", 2, 1);
  expect_error("let l = [1, \"a\"]\nprint l[1e300]", 0, "index 1e+300 out of range for a list of length 2", 2, 9);
  expect_error("let l = [1, \"a\"]\nprint l[0/0]", 0, "index must be a finite integer, got nan", 2, 10);
  expect_error("let l = [1, \"a\"]\nl[-1e19] = 0", 0, "index -1e+19 out of range for a list of length 2", 2, 3);
  expect_error("let l = [1, \"a\"]\nl[0.5] = 0", 0, "index must be an integer, got 0.5", 2, 3);
  expect_error("let s = \"abc\"\nprint s[1e19]", 0, "index 1e+19 out of range for a string of length 3", 2, 9);
}
END_TEST

START_TEST(slice_bounds_clamp) {
  expect_out("let x = [1, 2, 3]\nprint x[1e19:], x[-1e300:1e300], x[:-1e19], x[-2:1e300], x[1:-1e300]",
             "[] [1, 2, 3] [] [2, 3] []\n");
  expect_out("let X = [[1, 2], [3, 4]]\nprint shape(X[-1e300:, 1e300:]), X[0, -9007199254740993:]", "[2, 0] [1, 2]\n");
  expect_out("let x = [1, 2, 3]\nx[-1e300:1e300] = 7\nprint x", "[7, 7, 7]\n");
}
END_TEST

/* ---- nesting depth ---- */

/* prefix, then unit repeated k times, then suffix: a heap string to free. */
static char *repeat(const char *prefix, const char *unit, int k, const char *suffix) {
  size_t pl = strlen(prefix), ul = strlen(unit), sl = strlen(suffix);
  char *s = malloc(pl + ul * (size_t)k + sl + 1);
  ck_assert_ptr_nonnull(s);
  memcpy(s, prefix, pl);
  for (int i = 0; i < k; i++) memcpy(s + pl + ul * (size_t)i, unit, ul);
  memcpy(s + pl + ul * (size_t)k, suffix, sl + 1);
  return s;
}

/* src fails with "expression nested too deeply" (a syntax error when the
 * parser sees it) on line `line`, at a column inside that line. */
static void expect_too_deep(char *src, int syntax, int line) {
  blo_state *S = open_state();
  int rc = run(S, src);
  const blo_error *e = blo_last_error(S);
  ck_assert_msg(rc == (syntax ? BLO_ERROR_SYNTAX : BLO_ERROR_RUNTIME), "'%.60s...': status %d (%s)", src, rc, e->message);
  ck_assert_str_eq(e->message, "expression nested too deeply");
  ck_assert_int_eq(e->line, line);
  ck_assert_int_ge(e->col, 1);
  ck_assert_int_eq(run(S, "let ok_after = 1"), BLO_OK);
  blo_close(S);
  free(src);
}

START_TEST(deep_expressions_are_errors) {
  /* left spines: no parenthesis, one level per operator */
  expect_too_deep(repeat("print 1", "+1", 8000, ""), 1, 1);
  expect_too_deep(repeat("let r = {a = 1}\nprint r", ".a", 20000, ""), 1, 2);
  expect_too_deep(repeat("print 1", "'", 20000, ""), 1, 1);
  expect_too_deep(repeat("let l = [1, 2]\nprint l", "[0]", 20000, ""), 1, 2);
  expect_too_deep(repeat("let x = 1.5\nprint grad(x", "*x", 8000, ", x)"), 1, 2);
  expect_too_deep(repeat("let x = 1\nfn f(y) = y\nprint f", "(0)", 20000, ""), 1, 3);
  /* right spines and brackets: the parser's own stack */
  char *open = repeat("print ", "(", 100000, "1");
  expect_too_deep(repeat(open, ")", 100000, ""), 1, 1);
  free(open);
  expect_too_deep(repeat("print ", "-", 100000, "1"), 1, 1);
  expect_too_deep(repeat("print 2", "^2", 100000, ""), 1, 1);
  expect_too_deep(repeat("print ", "[", 100000, "1"), 1, 1);
  expect_too_deep(repeat("let x = 1\n", "if x { ", 50000, "x = 2"), 1, 2);
}
END_TEST

START_TEST(deep_but_reasonable_expressions_run) {
  /* 300 terms, 100 parentheses, a chain of 100 fields: well inside the bound */
  char *src = repeat("print 1", "+1", 299, "");
  expect_out(src, "300\n");
  free(src);
  char *open = repeat("print ", "(", 100, "2");
  src = repeat(open, ")", 100, "");
  expect_out(src, "2\n");
  free(open);
  free(src);
  src = repeat("let x = 2\nprint grad(x", "*x", 199, ", x)");
  expect_out(src, "1.6069380442589903e+62\n");   /* 200 * 2^199 */
  free(src);
}
END_TEST

START_TEST(deep_recursion_through_expressions_is_an_error) {
  /* each call nests 400 levels of '+', and the calls nest 150 deep: the
   * evaluator's bound on its recursion, not the parser's, stops it */
  char *body = repeat("fn f(n) {\n  if n <= 0 { return 0 }\n  return ", "1 + (", 400, "f(n - 1)");
  char *src = repeat(body, ")", 400, "\n}\nprint f(150)");
  blo_state *S = open_state();
  ck_assert_int_eq(run(S, src), BLO_ERROR_RUNTIME);
  ck_assert_str_eq(blo_last_error(S)->message, "expression nested too deeply");
  ck_assert_int_eq(blo_last_error(S)->line, 3);
  ck_assert_int_eq(run(S, "print f(2)"), BLO_OK);
  ck_assert_str_eq(out.buf, "800\n");
  blo_close(S);
  free(body);
  free(src);
}
END_TEST

START_TEST(deeply_nested_values) {
  /* a list nested 10^6 deep is built, printed (cut off), and freed */
  blo_state *S = open_state();
  ck_assert_int_eq(run(S, "let l = [\"x\", 0]\nfor i in 0..1000000 { l = [l, \"s\"] }\nlet t = str(l)\nprint len(t) < 10000"),
                   BLO_OK);
  ck_assert_str_eq(out.buf, "1\n");
  ck_assert_int_eq(run(S, "l = 0"), BLO_OK);
  ck_assert_int_eq(run(S, "let r = {a = 0}\nfor i in 0..1000000 { r = {a = r} }\nprint len(str(r)) < 10000"), BLO_OK);
  blo_close(S);
}
END_TEST

/* ---- ranges beyond 2^53 ---- */

START_TEST(ranges_beyond_2_53) {
  /* 2^53 + 1 is not a double: the loop would never pass it */
  expect_error("for i in 9007199254740992..9007199254740994 { print i }", 0,
               "range reaches 9007199254740992 = 2^53, past which adding 1 is inexact", 1, 10);
  expect_error("let n = 0\nfor i in 9007199254740990..1/0 { n = n + 1 }", 0,
               "range reaches 9007199254740992 = 2^53, past which adding 1 is inexact", 2, 10);
  expect_error("let r = 9007199254740990..9007199254740994", 0,
               "range reaches 9007199254740992 = 2^53, past which adding 1 is inexact", 1, 9);
  expect_error("let r = 0..1/0", 0, "range bounds must be finite, got 0..inf", 1, 9);
  expect_error("for i in 0/0..3 { print i }", 0, "range bounds must be numbers, got nan..3", 1, 10);
  /* just below 2^53 every step is exact */
  expect_out("for i in 9007199254740989..9007199254740992 { print i - 9007199254740980 }", "9\n10\n11\n");
  expect_out("print (9007199254740989..9007199254740992) - 9007199254740980, 0.5..3", "[9, 10, 11] [0.5, 1.5, 2.5]\n");
  expect_out("let n = 0\nfor i in 0..1/0 { n = n + 1\n if n == 5 { break } }\nprint n", "5\n");
}
END_TEST

/* ---- strings holding NUL bytes ---- */

START_TEST(strings_with_nul) {
  static const char want1[] = "a\0b 3 4 1\n";
  expect_out_n("let s = \"a\\0b\"\nprint s, len(s), len(s + \"c\"), len(s[1])", want1, sizeof want1 - 1);
  expect_out("print \"a\\0b\" == \"a\\0c\", \"a\\0b\" == \"a\", \"a\\0b\" == \"a\\0b\", \"a\\0b\" != \"a\"", "0 0 1 1\n");
  static const char want2[] = "[\"x\0y\", 1] {k = \"\0\"}\n";
  expect_out_n("print [\"x\\0y\", 1], {k = \"\\0\"}", want2, sizeof want2 - 1);
  static const char want3[] = "  a\0b|a\0|x\0y7\n";
  expect_out_n("print format(\"%5s|%.2s|x\\0y%d\", \"a\\0b\", \"a\\0b\", 7)", want3, sizeof want3 - 1);
  static const char want4[] = "a\0b2\n";
  expect_out_n("print str(\"a\\0b\") + str(2)", want4, sizeof want4 - 1);
  /* C-string arguments (names, paths, numbers) must not hide a tail after a NUL */
  expect_error("print num(\"1\\0x\")", 0, "num: argument 1 must not contain a NUL byte", 1, 7);
  expect_error("print has({a = 1}, \"a\\0b\")", 0, "has: argument 2 must not contain a NUL byte", 1, 7);

  blo_state *S = open_state();
  ck_assert_int_eq(run(S, "let s = \"a\\0bc\""), BLO_OK);
  const char *t = NULL;
  size_t n = 0;
  ck_assert_int_eq(blo_get_lstring(S, "s", &t, &n), BLO_OK);
  ck_assert_uint_eq(n, 4);
  ck_assert(memcmp(t, "a\0bc", 5) == 0);
  ck_assert_int_eq(blo_get_string(S, "s", &t), BLO_OK);   /* the C view stops at the NUL */
  ck_assert_str_eq(t, "a");
  blo_close(S);
}
END_TEST

int main(void) {
  Suite *s = suite_create("eval");
  TCase *tc = tcase_create("eval");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, store_after_index_rebinds_target);
  tcase_add_test(tc, store_target_becomes_unindexable);
  tcase_add_test(tc, nested_store_evaluates_each_index_once);
  tcase_add_test(tc, store_after_native_moves_globals);
  tcase_add_test(tc, index_numbers_checked);
  tcase_add_test(tc, slice_bounds_clamp);
  tcase_add_test(tc, deep_expressions_are_errors);
  tcase_add_test(tc, deep_but_reasonable_expressions_run);
  tcase_add_test(tc, deep_recursion_through_expressions_is_an_error);
  tcase_add_test(tc, deeply_nested_values);
  tcase_add_test(tc, ranges_beyond_2_53);
  tcase_add_test(tc, strings_with_nul);
  suite_add_tcase(s, tc);
  return check_run(s, "test_eval", CK_FORK);
}
