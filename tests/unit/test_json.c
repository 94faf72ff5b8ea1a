/* test_json.c: load_json through the embedding API.  With jansson: numeric
 * arrays written with 17 significant digits load bit for bit in row-major
 * order, rank 6 is a tensor and rank 7 a list, NUL in strings is kept,
 * allow_files and the memory cap are honoured, and errors point at the call.
 * Without jansson: the builtin exists and names the package to install. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>

#include "check_run.h"
#include "scratch_dir.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "../../include/blo.h"

static void setup(void) { scratch_make("test_json"); }
static void teardown(void) { scratch_remove(); }

static int run(blo_state *S, const char *src) { return blo_eval_string(S, "t.blo", src, strlen(src)); }

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

#ifdef HAVE_JANSSON

/* The element at (i, j, k) of the fixture: values of every magnitude. */
static double elem(int i, int j, int k) { return sin(1.0 + i) * pow(10.0, 3 * j - 6) - k / 7.0; }

START_TEST(json_tensor_bits) {
  enum { A = 4, B = 5, C = 3 };
  const char *p = path_of("t.json");
  FILE *f = fopen(p, "w");
  ck_assert_ptr_nonnull(f);
  fputs("{\"t\": [", f);
  for (int i = 0; i < A; i++) {
    fputs(i ? ", [" : "[", f);
    for (int j = 0; j < B; j++) {
      fputs(j ? ", [" : "[", f);
      for (int k = 0; k < C; k++) fprintf(f, "%s%.17g", k ? ", " : "", elem(i, j, k));
      fputs("]", f);
    }
    fputs("]", f);
  }
  fputs("]}", f);
  fclose(f);
  blo_state *S = blo_open(NULL);
  char code[512];
  snprintf(code, sizeof code, "let d = load_json(\"%s\")\nlet t = d.t", p);
  ck_assert_int_eq(run(S, code), BLO_OK);
  int rank;
  size_t shape[8];
  ck_assert_int_eq(blo_get_shape(S, "t", &rank, shape), BLO_OK);
  ck_assert_int_eq(rank, 3);
  ck_assert_uint_eq(shape[0], A);
  ck_assert_uint_eq(shape[1], B);
  ck_assert_uint_eq(shape[2], C);
  double got[A * B * C];
  ck_assert_int_eq(blo_get_tensor(S, "t", got, A * B * C), BLO_OK);
  for (int i = 0; i < A; i++)
    for (int j = 0; j < B; j++)
      for (int k = 0; k < C; k++) {
        double want = elem(i, j, k);
        ck_assert_msg(memcmp(&got[(i * B + j) * C + k], &want, sizeof want) == 0, "t[%d, %d, %d] = %.17g, want %.17g",
                      i, j, k, got[(i * B + j) * C + k], want);
      }
  blo_close(S);
}
END_TEST

START_TEST(json_rank_limit_and_nul) {
  const char *p6 = path_of("r6.json"), *p7 = path_of("r7.json"), *ps = path_of("s.json");
  write_text(p6, "[[[[[[1, 2]]]]]]");
  write_text(p7, "[[[[[[[1, 2]]]]]]]");
  write_text(ps, "\"a\\u0000b\"");
  blo_state *S = blo_open(NULL);
  char code[1024];
  snprintf(code, sizeof code, "let a = load_json(\"%s\")\nlet b = load_json(\"%s\")\nlet s = load_json(\"%s\")", p6, p7,
           ps);
  ck_assert_int_eq(run(S, code), BLO_OK);
  blo_kind k;
  ck_assert_int_eq(blo_kind_of(S, "a", &k), BLO_OK);
  ck_assert_int_eq(k, BLO_TENSOR);
  int rank;
  size_t shape[8];
  ck_assert_int_eq(blo_get_shape(S, "a", &rank, shape), BLO_OK);
  ck_assert_int_eq(rank, 6);
  ck_assert_uint_eq(shape[5], 2);
  ck_assert_int_eq(blo_kind_of(S, "b", &k), BLO_OK);
  ck_assert_int_eq(k, BLO_LIST);
  const char *s;
  size_t n;
  ck_assert_int_eq(blo_get_lstring(S, "s", &s, &n), BLO_OK);
  ck_assert_uint_eq(n, 3);
  ck_assert(memcmp(s, "a\0b", 3) == 0);
  blo_close(S);
}
END_TEST

START_TEST(json_allow_files) {
  const char *p = path_of("x.json");
  write_text(p, "[1, 2]");
  blo_config c;
  blo_config_defaults(&c);
  c.allow_files = 0;
  blo_state *S = blo_open(&c);
  char code[512];
  snprintf(code, sizeof code, "let x = load_json(\"%s\")", p);
  ck_assert_int_eq(run(S, code), BLO_ERROR_RUNTIME);
  ck_assert_str_eq(blo_last_error(S)->message, "load_json: file access is disabled by the host");
  blo_close(S);
}
END_TEST

/* A numeric array above the cap fails in the tensor layer, inside a record
 * and a list that are released; the same file loads without the cap. */
START_TEST(json_memory_cap) {
  const char *p = path_of("big.json");
  FILE *f = fopen(p, "w");
  ck_assert_ptr_nonnull(f);
  fputs("{\"a\": [\"s\", [", f);
  for (int i = 0; i < 20000; i++) fprintf(f, "%s%d", i ? ", " : "", i);
  fputs("]]}", f);
  fclose(f);
  blo_config c;
  blo_config_defaults(&c);
  c.mem_cap = 64 << 10;
  blo_state *S = blo_open(&c);
  char code[512];
  snprintf(code, sizeof code, "let x = load_json(\"%s\")", p);
  ck_assert_int_eq(run(S, code), BLO_ERROR_MEMORY);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "memory cap exceeded"));
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "at $.a[1]"));
  blo_close(S);
  S = blo_open(NULL);
  snprintf(code, sizeof code, "let x = load_json(\"%s\")\nlet s = sum(x.a[1])", p);
  ck_assert_int_eq(run(S, code), BLO_OK);
  double s;
  ck_assert_int_eq(blo_get_number(S, "s", &s), BLO_OK);
  ck_assert(s == 19999.0 * 20000.0 / 2);
  blo_close(S);
}
END_TEST

/* Errors deep in a document leave nothing behind (the sanitizer build checks
 * for leaks) and are reported at the call. */
START_TEST(json_errors_at_call) {
  const char *p = path_of("e.json");
  write_text(p, "{\"x\": [[1, 2], {\"k\": \"v\", \"l\": [1, {\"m\": null}]}]}");
  blo_state *S = blo_open(NULL);
  char code[512];
  snprintf(code, sizeof code, "let a = 1\nlet b =   load_json(\"%s\")", p);
  ck_assert_int_eq(run(S, code), BLO_ERROR_RUNTIME);
  const blo_error *e = blo_last_error(S);
  ck_assert_int_eq(e->line, 2);
  ck_assert_int_eq(e->col, 11);
  ck_assert_ptr_nonnull(strstr(e->message, "at $.x[1].l[1].m: null has no blo value"));
  blo_close(S);
}
END_TEST

#else

START_TEST(json_unavailable) {
  const char *p = path_of("x.json");
  write_text(p, "[1, 2]");
  blo_state *S = blo_open(NULL);
  char code[512];
  snprintf(code, sizeof code, "let x = load_json(\"%s\")", p);
  ck_assert_int_eq(run(S, code), BLO_ERROR_RUNTIME);
  ck_assert_str_eq(blo_last_error(S)->message,
                   "load_json: blo was built without jansson (apt-get install libjansson-dev, then ./configure)");
  blo_close(S);
}
END_TEST

#endif

int main(void) {
  Suite *s = suite_create("json");
  TCase *tc = tcase_create("json");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
#ifdef HAVE_JANSSON
  tcase_add_test(tc, json_tensor_bits);
  tcase_add_test(tc, json_rank_limit_and_nul);
  tcase_add_test(tc, json_allow_files);
  tcase_add_test(tc, json_memory_cap);
  tcase_add_test(tc, json_errors_at_call);
#else
  tcase_add_test(tc, json_unavailable);
#endif
  suite_add_tcase(s, tc);
  return check_run(s, "test_json", CK_NOFORK);
}
