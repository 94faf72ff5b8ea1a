/* test_api.c: the embedding API (include/blo.h) through its public
 * functions only, every error path included, plus the autodiff layer's
 * custom operation (ad_custom_op) that differentiable natives rest on.
 * Run under valgrind or ASan: the allocator hooks also check that every byte
 * the library takes through them comes back. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>

#include "check_run.h"
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blo.h"
#include "capture_sink.h"
#include "../../runtime/ad.h"

/* ---- helpers ---- */

static sink out_sink, err_sink;

static blo_state *open_capturing(void) {
  memset(&out_sink, 0, sizeof out_sink);
  memset(&err_sink, 0, sizeof err_sink);
  blo_config c;
  blo_config_defaults(&c);
  c.write_fn = sink_write;
  c.write_ud = &out_sink;
  c.error_fn = sink_error;
  c.error_ud = &err_sink;
  blo_state *S = blo_open(&c);
  ck_assert_ptr_nonnull(S);
  return S;
}

static int run(blo_state *S, const char *src) { return blo_eval_string(S, "t.blo", src, strlen(src)); }

static double num(blo_state *S, const char *path) {
  double x = NAN;
  ck_assert_int_eq(blo_get_number(S, path, &x), BLO_OK);
  return x;
}

/* An allocator that counts live blocks and can fail after a number of
 * calls.  Blocks, not bytes: the leak check must not depend on the old_size
 * the library passes back. */
typedef struct { long calls, fail_after; long long live; long failures; } counting;

static void *count_realloc(void *ud, void *p, size_t old, size_t n) {
  counting *c = ud;
  (void)old;
  if (n == 0) {
    if (p) c->live--;
    free(p);
    return NULL;
  }
  if (c->fail_after >= 0 && c->calls >= c->fail_after) { c->failures++; return NULL; }
  c->calls++;
  void *q = realloc(p, n);
  if (!q) return NULL;
  if (!p) c->live++;
  return q;
}

/* ---- configuration, open, close ---- */

START_TEST(config_defaults_and_version) {
  blo_config c;
  memset(&c, 0x5a, sizeof c);
  blo_config_defaults(&c);
  ck_assert_ptr_nonnull(c.realloc_fn);
  ck_assert_ptr_null(c.write_fn);
  ck_assert_ptr_null(c.error_fn);
  ck_assert_int_eq(c.allow_files, 1);
  ck_assert_uint_eq(c.mem_cap, 0);
  ck_assert_uint_eq(c.seed, 0);
  ck_assert_str_eq(blo_version(), BLO_VERSION);
  blo_config_defaults(NULL);
}
END_TEST

START_TEST(open_close_defaults) {
  blo_state *S = blo_open(NULL);
  ck_assert_ptr_nonnull(S);
  ck_assert_int_eq(run(S, "let a = 1 + 2\nprint a"), BLO_OK);   /* output discarded */
  ck_assert_double_eq(num(S, "a"), 3);
  ck_assert_int_eq(blo_last_error(S)->status, BLO_OK);
  ck_assert_str_eq(blo_last_error_text(S), "");
  blo_close(S);
  blo_close(NULL);
  /* NULL states are refused, not dereferenced */
  ck_assert_int_eq(blo_eval_string(NULL, "x", "1", 1), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_last_error(NULL)->status, BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_set_number(NULL, "x", 1), BLO_ERROR_ARGUMENT);
}
END_TEST

START_TEST(output_goes_to_callback) {
  blo_state *S = open_capturing();
  ck_assert_int_eq(run(S, "print \"hello\", 1.5, [1, 2]"), BLO_OK);
  ck_assert_str_eq(out_sink.buf, "hello 1.5 [1, 2]\n");
  ck_assert_int_eq(err_sink.calls, 0);
  blo_close(S);
}
END_TEST

START_TEST(seed_from_config) {
  blo_config c;
  blo_config_defaults(&c);
  c.seed = 42;
  blo_state *A = blo_open(&c), *B = blo_open(&c);
  c.seed = 43;
  blo_state *C = blo_open(&c);
  ck_assert_int_eq(run(A, "let r = rand()"), BLO_OK);
  ck_assert_int_eq(run(B, "let r = rand()"), BLO_OK);
  ck_assert_int_eq(run(C, "let r = rand()"), BLO_OK);
  ck_assert_double_eq(num(A, "r"), num(B, "r"));
  ck_assert_double_ne(num(A, "r"), num(C, "r"));
  blo_close(A);
  blo_close(B);
  blo_close(C);
}
END_TEST

/* ---- errors ---- */

START_TEST(syntax_error_is_located) {
  blo_state *S = open_capturing();
  ck_assert_int_eq(blo_eval_string(S, "bad.blo", "let x = 1\nlet = 2\n", 18), BLO_ERROR_SYNTAX);
  const blo_error *e = blo_last_error(S);
  ck_assert_int_eq(e->status, BLO_ERROR_SYNTAX);
  ck_assert_str_eq(e->file, "bad.blo");
  ck_assert_int_eq(e->line, 2);
  ck_assert_int_gt(e->col, 0);
  ck_assert_ptr_nonnull(strstr(blo_last_error_text(S), "bad.blo:2:"));
  ck_assert_ptr_nonnull(strstr(err_sink.buf, "bad.blo:2:"));
  /* nothing of a chunk that does not parse runs */
  blo_kind k;
  ck_assert_int_eq(blo_kind_of(S, "x", &k), BLO_ERROR_ARGUMENT);
  blo_close(S);
}
END_TEST

START_TEST(runtime_error_keeps_state) {
  blo_state *S = open_capturing();
  ck_assert_int_eq(run(S, "let keep = 7"), BLO_OK);
  ck_assert_int_eq(run(S, "let before = 1\nlet z = [1, 2, 3] + [1, 2]\nlet after = 2"), BLO_ERROR_RUNTIME);
  const blo_error *e = blo_last_error(S);
  ck_assert_int_eq(e->status, BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(e->message, "shape mismatch"));
  ck_assert_str_eq(e->file, "t.blo");
  ck_assert_int_eq(e->line, 2);
  ck_assert_int_gt(e->col, 8);
  const char *txt = blo_last_error_text(S);
  ck_assert_ptr_nonnull(strstr(txt, "t.blo:2:"));
  ck_assert_ptr_nonnull(strstr(txt, ": error: shape mismatch in '+': [3] and [2]"));
  ck_assert_ptr_nonnull(strstr(txt, "let z = [1, 2, 3] + [1, 2]\n"));
  ck_assert_ptr_nonnull(strstr(txt, "^"));
  ck_assert_str_eq(err_sink.buf, txt);
  ck_assert_double_eq(num(S, "keep"), 7);
  ck_assert_double_eq(num(S, "before"), 1);
  blo_kind k;
  ck_assert_int_eq(blo_kind_of(S, "after", &k), BLO_ERROR_ARGUMENT);
  /* the next successful call clears the error */
  ck_assert_int_eq(run(S, "keep = keep + 1"), BLO_OK);
  ck_assert_int_eq(blo_last_error(S)->status, BLO_OK);
  ck_assert_double_eq(num(S, "keep"), 8);
  blo_close(S);
}
END_TEST

START_TEST(eval_file_and_missing_file) {
  blo_state *S = open_capturing();
  char path[] = "/tmp/blo_test_api_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  const char *src = "let from_file = 5\nprint from_file * 2\n";
  ck_assert_int_eq(write(fd, src, strlen(src)), (ssize_t)strlen(src));
  close(fd);
  ck_assert_int_eq(blo_eval_file(S, path), BLO_OK);
  ck_assert_str_eq(out_sink.buf, "10\n");
  ck_assert_double_eq(num(S, "from_file"), 5);
  unlink(path);
  ck_assert_int_eq(blo_eval_file(S, path), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "cannot open"));
  ck_assert_int_eq(blo_eval_file(S, NULL), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_eval_string(S, "x", NULL, 0), BLO_ERROR_ARGUMENT);
  blo_close(S);
}
END_TEST

START_TEST(check_runs_nothing_and_reports_each_problem) {
  blo_state *S = open_capturing();
  const char *ok = "fn f(a) = a * k\nlet k = 2\nprint f(3)\n";
  ck_assert_int_eq(blo_check_string(S, "ok", ok, strlen(ok)), BLO_OK);
  ck_assert_str_eq(out_sink.buf, "");
  ck_assert_str_eq(err_sink.buf, "");
  /* nothing was defined */
  ck_assert_int_ne(blo_eval_string(S, "use", "print k", 7), BLO_OK);
  err_sink.buf[0] = 0;
  err_sink.n = 0;
  const char *bad = "let learning_rate = 1\nprint lerning_rate + 1\nprint norm(learning_rate, 2)\n";
  ck_assert_int_eq(blo_check_string(S, "bad", bad, strlen(bad)), BLO_ERROR_RUNTIME);
  ck_assert_str_eq(out_sink.buf, "");
  ck_assert_ptr_nonnull(strstr(err_sink.buf, "bad:2:7: error: unknown name 'lerning_rate' (did you mean 'learning_rate'?)\n"));
  ck_assert_ptr_nonnull(strstr(err_sink.buf, "bad:3:7: error: norm() takes 1 argument, got 2"));
  /* the last error is the last problem */
  ck_assert_int_eq(blo_last_error(S)->line, 3);
  ck_assert_int_eq(blo_last_error(S)->col, 7);
  ck_assert_int_eq(blo_check_string(S, "syn", "let = 1", 7), BLO_ERROR_SYNTAX);
  ck_assert_int_eq(blo_check_string(S, "x", NULL, 0), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_check_file(S, NULL), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_check_file(S, "/nonexistent/file.blo"), BLO_ERROR_RUNTIME);
  ck_assert_int_eq(blo_check_string(NULL, "x", "", 0), BLO_ERROR_ARGUMENT);
  blo_close(S);
}
END_TEST

START_TEST(eval_file_on_a_directory) {
  /* fopen() succeeds on a directory and fread() then fails: that must be an
   * error naming the path, not an empty script that runs fine. */
  blo_state *S = open_capturing();
  char dir[] = "/tmp/blo_test_api_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  ck_assert_int_eq(blo_eval_file(S, dir), BLO_ERROR_RUNTIME);
  ck_assert_int_eq(blo_last_error(S)->status, BLO_ERROR_RUNTIME);
  ck_assert_str_eq(blo_last_error(S)->message, "is a directory");
  ck_assert_str_eq(blo_last_error(S)->file, dir);
  char want[256];
  snprintf(want, sizeof want, "%s: error: is a directory\n", dir);
  ck_assert_str_eq(err_sink.buf, want);
  ck_assert_str_eq(blo_last_error_text(S), want);
  rmdir(dir);
  /* the state still works */
  ck_assert_int_eq(run(S, "let ok = 2"), BLO_OK);
  ck_assert_double_eq(num(S, "ok"), 2);
  blo_close(S);
}
END_TEST

START_TEST(file_access_refused_by_config) {
  char dir[] = "/tmp/blo_test_api_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char csv[512], code[1200];
  snprintf(csv, sizeof csv, "%s/a.csv", dir);
  FILE *f = fopen(csv, "w");
  ck_assert_ptr_nonnull(f);
  fputs("1,2\n3,4\n", f);
  fclose(f);
  snprintf(code, sizeof code, "let A = load_csv(\"%s\")", csv);
  blo_config c;
  blo_config_defaults(&c);
  blo_state *S = blo_open(&c);
  ck_assert_int_eq(run(S, code), BLO_OK);
  int rank;
  size_t shape[4];
  ck_assert_int_eq(blo_get_shape(S, "A", &rank, shape), BLO_OK);
  ck_assert_int_eq(rank, 2);
  blo_close(S);
  c.allow_files = 0;
  S = blo_open(&c);
  ck_assert_int_eq(run(S, code), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "file access is disabled"));
  snprintf(code, sizeof code, "save_csv(\"%s/b.csv\", [1, 2])", dir);
  ck_assert_int_eq(run(S, code), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "file access is disabled"));
  snprintf(code, sizeof code, "%s/b.csv", dir);
  ck_assert_int_eq(access(code, F_OK), -1);
  blo_close(S);
  unlink(csv);
  rmdir(dir);
}
END_TEST

START_TEST(memory_cap) {
  blo_config c;
  blo_config_defaults(&c);
  c.mem_cap = 1 << 20;
  blo_state *S = blo_open(&c);
  ck_assert_int_eq(run(S, "let small = zeros(100, 100)"), BLO_OK);
  ck_assert_int_eq(run(S, "let big = zeros(1000, 1000)"), BLO_ERROR_MEMORY);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "memory cap"));
  /* still usable */
  ck_assert_int_eq(run(S, "let fine = sum(small) + 1"), BLO_OK);
  ck_assert_double_eq(num(S, "fine"), 1);
  static double data[200000];
  size_t shape[1] = {200000};
  ck_assert_int_eq(blo_set_tensor(S, "host", 1, shape, data), BLO_ERROR_MEMORY);
  ck_assert_int_eq(blo_last_error(S)->status, BLO_ERROR_MEMORY);
  blo_close(S);
}
END_TEST

static int nat_cube(blo_state *S, void *ud, int nargs, const blo_array *args, blo_array *out);
static int cube_d(blo_state *S, void *ud, const blo_array *x, const blo_array *y, const blo_array *in,
                  blo_array *out);
static const blo_native alloc_native = {"cube", nat_cube, cube_d, cube_d, NULL, 1, 1, NULL, NULL};

static const char *alloc_script =
  "let x = zeros(50) + 1\n"
  "let gc = grad(sum(cube(x)), x)\n"
  "let r = {a = x, b = \"text\", c = [1, \"a\"]}\n"
  "fn f(v) = sum(v * v)\n"
  "let g = grad(f(x), x)\n"
  "let h = hvp(f(x), x, x)\n"
  "let s = 0\n"
  "for i in 0..20 { s = s + sum(x * i) }\n"
  "print s, sum(g), r.b\n";

START_TEST(failing_allocator) {
  /* Fail at every possible allocation in turn: open fails cleanly or the
   * evaluation reports BLO_ERROR_MEMORY; never a crash, never a leak. */
  counting probe = {0, -1, 0, 0};
  blo_config c;
  blo_config_defaults(&c);
  c.realloc_fn = count_realloc;
  c.alloc_ud = &probe;
  blo_state *S = blo_open(&c);
  ck_assert_ptr_nonnull(S);
  ck_assert_int_eq(blo_register(S, &alloc_native), BLO_OK);
  ck_assert_int_eq(run(S, alloc_script), BLO_OK);
  blo_close(S);
  ck_assert_int_eq(probe.live, 0);
  long total = probe.calls;
  ck_assert_int_gt(total, 10);
  int opened_failures = 0, eval_failures = 0;
  for (long n = 0; n <= total; n++) {
    counting cnt = {0, n, 0, 0};
    c.alloc_ud = &cnt;
    S = blo_open(&c);
    if (!S) {
      opened_failures++;
      ck_assert_int_eq(cnt.live, 0);
      continue;
    }
    int rc = blo_register(S, &alloc_native);
    if (rc == BLO_OK) rc = run(S, alloc_script);
    if (cnt.failures) {
      ck_assert_msg(rc == BLO_ERROR_MEMORY, "fail after %ld: status %d, %s", n, rc, blo_last_error(S)->message);
      eval_failures++;
    } else {
      ck_assert_int_eq(rc, BLO_OK);
    }
    blo_close(S);
    ck_assert_msg(cnt.live == 0, "fail after %ld: %lld blocks leaked", n, cnt.live);
  }
  ck_assert_int_gt(opened_failures, 0);
  ck_assert_int_gt(eval_failures, 0);
}
END_TEST

START_TEST(nothing_printed_uninvited) {
  fflush(stdout);
  fflush(stderr);
  char path[] = "/tmp/blo_test_api_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  int o1 = dup(1), o2 = dup(2);
  dup2(fd, 1);
  dup2(fd, 2);
  blo_state *S = blo_open(NULL);
  run(S, "print 1\nlet = = 2");
  run(S, "print 2\nlet y = [1] + [1, 2]");
  run(S, "let x = undefined_name");
  blo_eval_file(S, "/nonexistent/file.blo");
  blo_close(S);
  fflush(stdout);
  fflush(stderr);
  dup2(o1, 1);
  dup2(o2, 2);
  close(o1);
  close(o2);
  off_t size = lseek(fd, 0, SEEK_END);
  close(fd);
  unlink(path);
  ck_assert_int_eq(size, 0);
}
END_TEST

/* ---- data in and out ---- */

START_TEST(tensor_roundtrip_and_views) {
  blo_state *S = open_capturing();
  double data[6] = {1, 2, 3, 4, 5, 6};
  size_t shape[2] = {2, 3};
  ck_assert_int_eq(blo_set_tensor(S, "A", 2, shape, data), BLO_OK);
  data[0] = 100;   /* copied in: the state does not see the host's array */
  ck_assert_int_eq(run(S, "let B = A * 2\nlet s = sum(A)"), BLO_OK);
  ck_assert_double_eq(num(S, "s"), 21);
  int rank = -1;
  size_t sh[4] = {0};
  ck_assert_int_eq(blo_get_shape(S, "B", &rank, sh), BLO_OK);
  ck_assert_int_eq(rank, 2);
  ck_assert_uint_eq(sh[0], 2);
  ck_assert_uint_eq(sh[1], 3);
  double outb[6];
  ck_assert_int_eq(blo_get_tensor(S, "B", outb, 6), BLO_OK);
  for (int i = 0; i < 6; i++) ck_assert_double_eq(outb[i], 2 * (i + 1));
  ck_assert_int_eq(blo_get_tensor(S, "B", outb, 5), BLO_ERROR_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "too small"));
  const double *view;
  size_t n;
  ck_assert_int_eq(blo_view_tensor(S, "B", &view, &n), BLO_OK);
  ck_assert_uint_eq(n, 6);
  ck_assert_double_eq(view[5], 12);
  blo_array arr;
  ck_assert_int_eq(blo_view_array(S, "B", &arr), BLO_OK);
  ck_assert_int_eq(arr.rank, 2);
  ck_assert_uint_eq(arr.shape[1], 3);
  ck_assert_uint_eq(arr.size, 6);
  ck_assert_ptr_eq(arr.data, view);
  /* numbers are rank 0 */
  ck_assert_int_eq(blo_set_number(S, "k", 2.5), BLO_OK);
  ck_assert_int_eq(blo_get_shape(S, "k", &rank, sh), BLO_OK);
  ck_assert_int_eq(rank, 0);
  ck_assert_int_eq(blo_get_tensor(S, "k", outb, 1), BLO_OK);
  ck_assert_double_eq(outb[0], 2.5);
  ck_assert_int_eq(blo_view_array(S, "k", &arr), BLO_OK);
  ck_assert_int_eq(arr.rank, 0);
  ck_assert_double_eq(arr.data[0], 2.5);
  double one = 4;
  ck_assert_int_eq(blo_set_tensor(S, "r0", 0, NULL, &one), BLO_OK);
  ck_assert_double_eq(num(S, "r0"), 4);
  /* a single-element tensor reads as a number, a longer one does not */
  size_t s1 = 1;
  ck_assert_int_eq(blo_set_tensor(S, "t1", 1, &s1, &one), BLO_OK);
  ck_assert_double_eq(num(S, "t1"), 4);
  double x;
  ck_assert_int_eq(blo_get_number(S, "B", &x), BLO_ERROR_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "not a number"));
  blo_close(S);
}
END_TEST

START_TEST(bad_shapes_and_names) {
  blo_state *S = open_capturing();
  double d[4] = {0};
  size_t shape[7] = {2, 2, 1, 1, 1, 1, 1}, zero[2] = {0, 2};
  ck_assert_int_eq(blo_set_tensor(S, "t", 7, shape, d), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_set_tensor(S, "t", -1, shape, d), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_set_tensor(S, "t", 2, zero, d), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_set_tensor(S, "t", 2, NULL, d), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_set_tensor(S, "t", 2, shape, NULL), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_set_tensor(S, "2bad", 2, shape, d), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_set_tensor(S, NULL, 2, shape, d), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_set_number(S, "a.b", 1), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_set_string(S, "s", NULL), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_last_error(S)->status, BLO_ERROR_ARGUMENT);
  double x;
  ck_assert_int_eq(blo_get_number(S, "missing", &x), BLO_ERROR_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "no value named 'missing'"));
  ck_assert_int_eq(blo_get_number(S, NULL, &x), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_get_number(S, "", &x), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_get_number(S, "args.", &x), BLO_ERROR_ARGUMENT);
  int rank;
  size_t sh[4];
  ck_assert_int_eq(blo_get_shape(S, "args", &rank, sh), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_get_tensor(S, "args", &x, 1), BLO_ERROR_ARGUMENT);
  const double *v;
  size_t n;
  ck_assert_int_eq(blo_view_tensor(S, "args", &v, &n), BLO_ERROR_ARGUMENT);
  const char *s;
  ck_assert_int_eq(blo_get_string(S, "args", &s), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_get_field_number(S, "args", "x", &x), BLO_ERROR_ARGUMENT);
  blo_close(S);
}
END_TEST

START_TEST(records_strings_and_paths) {
  blo_state *S = open_capturing();
  ck_assert_int_eq(run(S, "let r = {a = 1, b = [1, 2], c = {d = 5}, s = \"hi\"}"), BLO_OK);
  double x;
  ck_assert_int_eq(blo_get_field_number(S, "r", "a", &x), BLO_OK);
  ck_assert_double_eq(x, 1);
  ck_assert_int_eq(blo_get_field_number(S, "r", "zz", &x), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_get_field_number(S, "r", "b", &x), BLO_ERROR_ARGUMENT);
  ck_assert_double_eq(num(S, "r.c.d"), 5);
  int rank;
  size_t sh[4];
  ck_assert_int_eq(blo_get_shape(S, "r.b", &rank, sh), BLO_OK);
  ck_assert_int_eq(rank, 1);
  ck_assert_uint_eq(sh[0], 2);
  ck_assert_int_eq(blo_get_number(S, "r.a.x", &x), BLO_ERROR_ARGUMENT);
  const char *s;
  ck_assert_int_eq(blo_get_string(S, "r.s", &s), BLO_OK);
  ck_assert_str_eq(s, "hi");
  ck_assert_int_eq(blo_set_string(S, "greeting", "hello"), BLO_OK);
  ck_assert_int_eq(run(S, "let g2 = greeting + \" world\""), BLO_OK);
  ck_assert_int_eq(blo_get_string(S, "g2", &s), BLO_OK);
  ck_assert_str_eq(s, "hello world");
  const char *names[5] = {0};
  for (size_t i = 0; i < 5; i++) names[i] = blo_field_name(S, "r", i);
  ck_assert_str_eq(names[0], "a");
  ck_assert_str_eq(names[3], "s");
  ck_assert_ptr_null(names[4]);
  ck_assert_str_eq(blo_field_name(S, "r.c", 0), "d");
  ck_assert_ptr_null(blo_field_name(S, "r.b", 0));
  blo_kind k;
  ck_assert_int_eq(blo_kind_of(S, "r", &k), BLO_OK);
  ck_assert_int_eq(k, BLO_RECORD);
  ck_assert_int_eq(blo_kind_of(S, "r.b", &k), BLO_OK);
  ck_assert_int_eq(k, BLO_TENSOR);
  ck_assert_int_eq(blo_kind_of(S, "args", &k), BLO_OK);
  ck_assert_int_eq(k, BLO_LIST);
  ck_assert_str_eq(blo_describe(S, "r.b"), "tensor [2]");
  ck_assert_str_eq(blo_describe(S, "r.a"), "number");
  ck_assert_ptr_null(blo_describe(S, "nope"));
  ck_assert_str_eq(blo_format(S, "r"), "{a = 1, b = [1, 2], c = {d = 5}, s = \"hi\"}");
  ck_assert_ptr_null(blo_format(S, "nope"));
  blo_close(S);
}
END_TEST

START_TEST(globals_iteration_and_args) {
  blo_state *S = open_capturing();
  const char *argv[] = {"one", "two"};
  ck_assert_int_eq(blo_set_args(S, 2, argv), BLO_OK);
  ck_assert_int_eq(run(S, "let n = len(args)\nlet first = args[0]\nfn sq(x) = x * x"), BLO_OK);
  ck_assert_double_eq(num(S, "n"), 2);
  ck_assert_int_eq(blo_set_args(S, -1, argv), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_set_args(S, 2, NULL), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_set_args(S, 0, NULL), BLO_OK);
  int seen = 0;
  size_t it = 0;
  const char *name;
  while ((name = blo_next_global(S, &it)) != NULL)
    if (!strcmp(name, "n") || !strcmp(name, "first") || !strcmp(name, "sq") || !strcmp(name, "args")) seen++;
  ck_assert_int_eq(seen, 4);
  ck_assert_ptr_null(blo_next_global(S, &it));
  ck_assert_ptr_null(blo_next_global(S, NULL));
  blo_close(S);
}
END_TEST

START_TEST(builtin_table_and_help) {
  blo_state *S = open_capturing();
  const char *name, *sig, *doc, *other;
  size_t i = 0;
  int found_sum = 0;
  for (; blo_builtin_info(i, &name, &sig, &doc); i++) {
    ck_assert_ptr_nonnull(sig);
    ck_assert_ptr_nonnull(doc);
    for (size_t j = 0; j < i; j++) {       /* no duplicates */
      ck_assert_int_eq(blo_builtin_info(j, &other, NULL, NULL), 1);
      ck_assert_str_ne(other, name);
    }
    if (!strcmp(name, "sum")) found_sum = 1;
  }
  ck_assert_int_gt(i, 20);
  ck_assert_int_eq(found_sum, 1);
  ck_assert_int_eq(blo_builtin_info(i, NULL, NULL, NULL), 0);
  ck_assert_int_eq(blo_help(S, "sum", &sig, &doc), BLO_OK);
  ck_assert_ptr_nonnull(strstr(sig, "sum("));
  ck_assert_int_eq(run(S, "fn area(w, h) = w * h\nlet v = 1"), BLO_OK);
  ck_assert_int_eq(blo_help(S, "area", &sig, &doc), BLO_OK);
  ck_assert_str_eq(sig, "area(w, h)");
  ck_assert_int_eq(blo_help(S, "v", &sig, &doc), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_help(S, "no_such_thing", &sig, &doc), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_help(S, NULL, &sig, &doc), BLO_ERROR_ARGUMENT);
  blo_close(S);
}
END_TEST

/* Paths index lists ("l[1]", "r.hist[0].x"); blo_length counts items and
 * fields; malformed indexes and indexes past the end name nothing. */
START_TEST(list_paths_and_length) {
  blo_state *S = open_capturing();
  ck_assert_int_eq(run(S, "let l = [{a = 1}, \"two\", [\"x\", [4, 5]], {x = 6, hist = [{y = 7}]}]\n"
                          "let r = {hist = [{x = 8}, {x = 9}], e = []}\nlet n = 1"), BLO_OK);
  size_t n = 99;
  ck_assert_int_eq(blo_length(S, "l", &n), BLO_OK);
  ck_assert_uint_eq(n, 4);
  ck_assert_double_eq(num(S, "l[0].a"), 1);
  const char *str;
  ck_assert_int_eq(blo_get_string(S, "l[1]", &str), BLO_OK);
  ck_assert_str_eq(str, "two");
  ck_assert_int_eq(blo_length(S, "l[2]", &n), BLO_OK);
  ck_assert_uint_eq(n, 2);
  ck_assert_int_eq(blo_get_string(S, "l[2][0]", &str), BLO_OK);
  ck_assert_str_eq(str, "x");
  double v[2];
  ck_assert_int_eq(blo_get_tensor(S, "l[2][1]", v, 2), BLO_OK);
  ck_assert_double_eq(v[0], 4);
  ck_assert_double_eq(v[1], 5);
  ck_assert_double_eq(num(S, "l[3].x"), 6);
  ck_assert_double_eq(num(S, "l[3].hist[0].y"), 7);
  ck_assert_double_eq(num(S, "r.hist[1].x"), 9);
  ck_assert_int_eq(blo_length(S, "r", &n), BLO_OK);
  ck_assert_uint_eq(n, 2);
  ck_assert_int_eq(blo_length(S, "r.e", &n), BLO_OK);
  ck_assert_uint_eq(n, 0);
  blo_kind k;
  ck_assert_int_eq(blo_kind_of(S, "l[3]", &k), BLO_OK);
  ck_assert_int_eq(k, BLO_RECORD);
  ck_assert_str_eq(blo_field_name(S, "l[3]", 1), "hist");
  static const char *const bad[] = {"l[4]", "l[-1]", "l[]", "l[1", "l[ 1]", "l[0x1]", "l[1]x", "l.[0]",
                                    "n[0]", "r.hist[2]", "l[0].x", "l[2][1][0]", "l[99999999999]", "[0]", "r.e[0]", "l[2]."};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    double x;
    ck_assert_msg(blo_get_number(S, bad[i], &x) == BLO_ERROR_ARGUMENT, "%s", bad[i]);
    ck_assert_msg(strstr(blo_last_error(S)->message, "no value named") != NULL, "%s: %s", bad[i],
                  blo_last_error(S)->message);
  }
  ck_assert_int_eq(blo_length(S, "n", &n), BLO_ERROR_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "not a list or a record"));
  ck_assert_int_eq(blo_length(S, "l[1]", &n), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_length(S, "nothing", &n), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_length(S, "l", NULL), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_length(NULL, "l", &n), BLO_ERROR_ARGUMENT);
  blo_close(S);
}
END_TEST

/* The keyword table: each name is a keyword (a script cannot bind it), has
 * a line of documentation, and appears once. */
START_TEST(keyword_table) {
  blo_state *S = open_capturing();
  const char *name, *doc, *other;
  size_t i = 0;
  for (; blo_keyword_info(i, &name, &doc); i++) {
    ck_assert_ptr_nonnull(doc);
    ck_assert_int_gt(strlen(doc), 5);
    for (size_t j = 0; j < i; j++) {
      ck_assert_int_eq(blo_keyword_info(j, &other, NULL), 1);
      ck_assert_str_ne(other, name);
    }
    char src[64];
    snprintf(src, sizeof src, "let %s = 1", name);
    ck_assert_msg(run(S, src) == BLO_ERROR_SYNTAX, "'%s' is not a keyword", name);
    ck_assert_int_eq(blo_set_number(S, name, 1), BLO_ERROR_ARGUMENT);
  }
  ck_assert_uint_eq(i, 21);
  ck_assert_int_eq(blo_keyword_info(i, NULL, NULL), 0);
  ck_assert_int_eq(blo_keyword_info((size_t)-1, &name, &doc), 0);
  blo_close(S);
}
END_TEST

/* The candidates of blo_complete joined by spaces, into buf. */
static const char *completions(blo_state *S, const char *src, size_t *start) {
  static char buf[4096];
  size_t n = blo_complete(S, src, strlen(src), start), k = 0;
  buf[0] = 0;
  for (size_t i = 0; i < n; i++) {
    const char *c = blo_completion(S, i);
    ck_assert_ptr_nonnull(c);
    k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s", i ? " " : "", c);
    ck_assert_uint_lt(k, sizeof buf);
  }
  ck_assert_ptr_null(blo_completion(S, n));
  return buf;
}

START_TEST(context_completion) {
  blo_state *S = open_capturing();
  /* no candidate on a fresh state: nothing to sort (found by the fuzzer) */
  ck_assert_uint_eq(blo_complete(S, "zzq_nothing", 11, NULL), 0);
  ck_assert_ptr_null(blo_completion(S, 0));
  ck_assert_int_eq(run(S, "problem pa {\n outer x : [1] = [1]\n inner y : [1] = [0]\n"
                          " inner minimize sum((y - x)^2)\n outer minimize sum(y^2)\n}\n"
                          "problem pb {\n outer x2 : [1] = [1]\n inner y2 : [1] = [0]\n"
                          " inner minimize sum((y2 - x2)^2)\n outer minimize sum(y2^2)\n}\n"
                          "let pc = 1\nlet rec = {alpha = 1, alps = {deep = 2, deeper = 3}, beta = 4}\n"
                          "let whilst = 5"), BLO_OK);
  size_t st = 99;
  /* after solve: problems only (pc is a number) */
  ck_assert_str_eq(completions(S, "let r = solve p", &st), "pa pb");
  ck_assert_uint_eq(st, 14);
  ck_assert_str_eq(completions(S, "solve ", &st), "pa pb");
  ck_assert_uint_eq(st, 6);
  /* the methods after hypergrad =, the optimizers after inner_opt = / outer_opt = */
  ck_assert_str_eq(completions(S, "solve pa with {hypergrad = ", &st),
                   "cg exact fo forward neumann penalty t1t2 ufo unroll");
  ck_assert_str_eq(completions(S, "solve pa with {outer_steps = 3,\n  hypergrad=f", NULL), "fo forward");
  ck_assert_str_eq(completions(S, "let r = solve pa with {inner_opt = ", NULL), "adam lbfgs momentum newton sgd");
  ck_assert_str_eq(completions(S, "let r = solve pa with {outer_opt = ", NULL), "adam momentum sgd");
  ck_assert_str_eq(completions(S, "solve pa with {outer_opt = s", NULL), "sgd");
  /* option names at a field position of the record after with, across lines */
  ck_assert_str_eq(completions(S, "let r = solve pa with {\n  outer_", &st), "outer_opt outer_steps outer_tol");
  ck_assert_str_eq(completions(S, "solve pa with {start = \"cold\", inner_s", NULL),
                   "inner_spread inner_starts inner_steps");
  ck_assert_str_eq(completions(S, "solve pa with {hypergrad = cg(iters = 3, inner_", NULL),
                   "");   /* inside cg( ): ordinary names, not the options */
  ck_assert_str_eq(completions(S, "solve pa with {hypergrad = cg(iters = 3, whi", NULL), "while whilst");
  ck_assert_str_eq(completions(S, "let z = {inner_", NULL), "");   /* a record not after with */
  /* comparisons are not `option =` */
  ck_assert_str_eq(completions(S, "let b = hypergrad == whi", NULL), "while whilst");
  /* records: fields after a dot, nested */
  ck_assert_str_eq(completions(S, "print rec.al", &st), "rec.alpha rec.alps");
  ck_assert_uint_eq(st, 6);
  ck_assert_str_eq(completions(S, "rec.alps.de", NULL), "rec.alps.deep rec.alps.deeper");
  ck_assert_str_eq(completions(S, "rec.nothing.", NULL), "");
  ck_assert_str_eq(completions(S, "pc.", NULL), "");
  /* elsewhere: keywords, builtins, globals, sorted and distinct */
  ck_assert_str_eq(completions(S, "whil", NULL), "while whilst");
  ck_assert_str_eq(completions(S, "let q = linsp", NULL), "linspace");
  ck_assert_str_eq(completions(S, "3.1", NULL), "");
  /* the cursor bounds the text; text after it is ignored */
  ck_assert_uint_eq(blo_complete(S, "whil + 1", 4, &st), 2);
  ck_assert_uint_eq(st, 0);
  ck_assert_uint_eq(blo_complete(S, "x", 99, &st), blo_complete(S, "x", 1, NULL));
  ck_assert_uint_eq(blo_complete(NULL, "x", 1, &st), 0);
  ck_assert_uint_eq(blo_complete(S, NULL, 0, NULL), 0);
  ck_assert_ptr_null(blo_completion(NULL, 0));
  blo_close(S);
}
END_TEST

/* ---- interactive helpers ---- */

START_TEST(repl_echo) {
  blo_state *S = open_capturing();
  const char *echo = (const char *)1;
  ck_assert_int_eq(blo_eval_repl(S, NULL, "1 + 2", 5, &echo), BLO_OK);
  ck_assert_str_eq(echo, "3");
  ck_assert_int_eq(blo_eval_repl(S, NULL, "let x = [1, 2]", 14, &echo), BLO_OK);
  ck_assert_ptr_null(echo);
  ck_assert_int_eq(blo_eval_repl(S, NULL, "x * 2", 5, &echo), BLO_OK);
  ck_assert_str_eq(echo, "[2, 4]");
  ck_assert_int_eq(blo_eval_repl(S, NULL, "\"s\"", 3, &echo), BLO_OK);
  ck_assert_str_eq(echo, "\"s\"");
  ck_assert_int_eq(blo_eval_repl(S, NULL, "x\nlet y = 3", 11, &echo), BLO_OK);
  ck_assert_ptr_null(echo);   /* only a trailing expression statement is echoed */
  /* an expression statement inside a called function is not the echo */
  const char *src = "fn f() {\n  1 + 1\n  return\n}\nf()";
  ck_assert_int_eq(blo_eval_repl(S, NULL, src, strlen(src), &echo), BLO_OK);
  ck_assert_ptr_null(echo);
  ck_assert_int_eq(blo_eval_repl(S, NULL, "zeros(100, 100)", 15, &echo), BLO_OK);
  ck_assert_str_eq(echo, "<tensor [100, 100], 10000 elements>");
  ck_assert_int_eq(blo_eval_repl(S, NULL, "x + [1, 2, 3]", 13, &echo), BLO_ERROR_RUNTIME);
  ck_assert_ptr_null(echo);
  ck_assert_int_eq(blo_eval_repl(S, NULL, "print 5", 7, NULL), BLO_OK);
  ck_assert_int_eq(blo_eval_repl(NULL, NULL, "1", 1, &echo), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_eval_repl(S, NULL, NULL, 1, &echo), BLO_ERROR_ARGUMENT);
  blo_close(S);
}
END_TEST

static int complete(const char *s) { return blo_input_complete(s, strlen(s)); }

START_TEST(input_completeness) {
  ck_assert_int_eq(complete("let x = 1"), 1);
  ck_assert_int_eq(complete("fn f(x) {"), 0);
  ck_assert_int_eq(complete("fn f(x) {\n  return x\n}"), 1);
  ck_assert_int_eq(complete("let v = [1, 2,"), 0);
  ck_assert_int_eq(complete("let v = [1, 2,\n 3]"), 1);
  ck_assert_int_eq(complete("print sum(x"), 0);
  ck_assert_int_eq(complete("let r = {a = 1,"), 0);
  ck_assert_int_eq(complete("let y = 1 + \\"), 0);
  ck_assert_int_eq(complete("let = )"), 1);      /* an error: evaluate it to report it */
  ck_assert_int_eq(complete(""), 1);
  ck_assert_int_eq(blo_input_complete(NULL, 0), 1);
}
END_TEST

/* ---- interrupts ---- */

static void *set_flag_later(void *p) {
  struct timespec ts = {0, 100 * 1000 * 1000};
  nanosleep(&ts, NULL);
  *(volatile int *)p = 1;
  return NULL;
}

START_TEST(interrupt_flag_stops_loops) {
  blo_state *S = open_capturing();
  static volatile int flag;
  flag = 0;
  blo_set_interrupt_flag(S, &flag);
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, set_flag_later, (void *)&flag), 0);
  ck_assert_int_eq(run(S, "let i = 0\nwhile 1 { i = i + 1 }"), BLO_INTERRUPTED);
  pthread_join(th, NULL);
  ck_assert_int_eq(blo_last_error(S)->status, BLO_INTERRUPTED);
  ck_assert_int_eq(flag, 0);    /* cleared when reported */
  ck_assert_double_gt(num(S, "i"), 0);
  ck_assert_int_eq(run(S, "i = 0"), BLO_OK);
  blo_set_interrupt_flag(S, NULL);
  blo_close(S);
}
END_TEST

/* Recursion without a loop: 2^61 calls, so only an interrupt ends it. */
#define RECURSE_DEF "fn f(n) {\n  if n <= 0 { return 0 }\n  return f(n - 1) + f(n - 1)\n}\n"
static const char *const RECURSE = RECURSE_DEF "f(60)";

START_TEST(interrupt_flag_stops_recursion) {
  blo_state *S = open_capturing();
  static volatile int flag;
  flag = 0;
  blo_set_interrupt_flag(S, &flag);
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, set_flag_later, (void *)&flag), 0);
  ck_assert_int_eq(run(S, RECURSE), BLO_INTERRUPTED);
  pthread_join(th, NULL);
  ck_assert_str_eq(blo_last_error(S)->message, "interrupted");
  ck_assert_int_eq(flag, 0);
  ck_assert_int_eq(run(S, "let after = f(3)"), BLO_OK);
  ck_assert_double_eq(num(S, "after"), 0);
  blo_set_interrupt_flag(S, NULL);
  blo_close(S);
}
END_TEST

/* A native that raises the flag it is given, as a host's watchdog would. */
static int nat_raise(blo_state *S, void *ud, int nargs, const blo_array *args, blo_array *out) {
  (void)nargs;
  (void)args;
  *(volatile int *)ud = 1;
  return blo_native_output(S, out, 0, NULL);
}

START_TEST(interrupt_flag_from_native) {
  blo_state *S = open_capturing();
  static volatile int flag;
  flag = 0;
  blo_set_interrupt_flag(S, &flag);
  blo_native d = {"raise_flag", nat_raise, NULL, NULL, (void *)&flag, 0, 0, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &d), BLO_OK);
  ck_assert_int_eq(run(S, RECURSE_DEF "raise_flag()\nf(60)"), BLO_INTERRUPTED);
  ck_assert_int_eq(flag, 0);
  /* raised where nothing polls it afterwards: the run succeeds, and the flag
   * does not outlive it to stop the next one */
  ck_assert_int_eq(run(S, "let z = 1\nraise_flag()"), BLO_OK);
  ck_assert_int_eq(flag, 0);
  ck_assert_int_eq(run(S, "let w = f(2)\nfor i in 0..3 { w = w + i }"), BLO_OK);
  ck_assert_double_eq(num(S, "w"), 3);
  /* the same through blo_call */
  flag = 1;
  ck_assert_int_eq(blo_call(S, "f", 1, (const blo_array[]){{0, {0}, 1, (double[]){60}}}, NULL), BLO_INTERRUPTED);
  ck_assert_int_eq(flag, 0);
  blo_set_interrupt_flag(S, NULL);
  blo_close(S);
}
END_TEST

/* ---- natives ---- */

static int nat_scale(blo_state *S, void *ud, int nargs, const blo_array *args, blo_array *out) {
  double k = ud ? *(const double *)ud : 2;
  (void)nargs;
  int rc = blo_native_output(S, out, args[0].rank, args[0].shape);
  if (rc) return rc;
  for (size_t i = 0; i < out->size; i++) out->data[i] = k * args[0].data[i];
  return BLO_OK;
}

/* a * b + c elementwise on equal sizes; any number of trailing arguments ignored */
static int nat_fma(blo_state *S, void *ud, int nargs, const blo_array *args, blo_array *out) {
  (void)ud;
  if (args[0].size != args[1].size || args[0].size != args[2].size)
    return blo_native_error(S, "sizes differ: %zu, %zu, %zu", args[0].size, args[1].size, args[2].size);
  int rc = blo_native_output(S, out, args[0].rank, args[0].shape);
  if (rc) return rc;
  for (size_t i = 0; i < out->size; i++) out->data[i] = args[0].data[i] * args[1].data[i] + args[2].data[i];
  return nargs >= 3 ? BLO_OK : BLO_ERROR_RUNTIME;
}

static int nat_nothing(blo_state *S, void *ud, int nargs, const blo_array *args, blo_array *out) {
  (void)S; (void)ud; (void)nargs; (void)args; (void)out;
  return BLO_OK;
}

static int nat_fail(blo_state *S, void *ud, int nargs, const blo_array *args, blo_array *out) {
  (void)S; (void)ud; (void)nargs; (void)args; (void)out;
  return 17;
}

static int nat_huge(blo_state *S, void *ud, int nargs, const blo_array *args, blo_array *out) {
  (void)ud; (void)nargs; (void)args;
  size_t shape[2] = {1000, 1000};
  return blo_native_output(S, out, 2, shape);
}

/* cube(x) = x^3 elementwise */
static int nat_cube(blo_state *S, void *ud, int nargs, const blo_array *args, blo_array *out) {
  (void)ud; (void)nargs;
  int rc = blo_native_output(S, out, args[0].rank, args[0].shape);
  if (rc) return rc;
  for (size_t i = 0; i < out->size; i++) out->data[i] = args[0].data[i] * args[0].data[i] * args[0].data[i];
  return BLO_OK;
}

static int cube_d(blo_state *S, void *ud, const blo_array *x, const blo_array *y, const blo_array *in,
                  blo_array *out) {
  (void)S; (void)ud; (void)y;
  for (size_t i = 0; i < out->size; i++) out->data[i] = 3 * x->data[i] * x->data[i] * in->data[i];
  return BLO_OK;
}

/* lin(x) = A x for a fixed 2x2 A (the user data) */
static int nat_lin(blo_state *S, void *ud, int nargs, const blo_array *args, blo_array *out) {
  const double *A = ud;
  (void)nargs;
  if (args[0].rank != 1 || args[0].size != 2) return blo_native_error(S, "expects a vector of 2");
  size_t two = 2;
  int rc = blo_native_output(S, out, 1, &two);
  if (rc) return rc;
  out->data[0] = A[0] * args[0].data[0] + A[1] * args[0].data[1];
  out->data[1] = A[2] * args[0].data[0] + A[3] * args[0].data[1];
  return BLO_OK;
}

static int lin_jvp(blo_state *S, void *ud, const blo_array *x, const blo_array *y, const blo_array *in,
                   blo_array *out) {
  const double *A = ud;
  (void)S; (void)x; (void)y;
  out->data[0] = A[0] * in->data[0] + A[1] * in->data[1];
  out->data[1] = A[2] * in->data[0] + A[3] * in->data[1];
  return BLO_OK;
}

static int lin_vjp(blo_state *S, void *ud, const blo_array *x, const blo_array *y, const blo_array *in,
                   blo_array *out) {
  const double *A = ud;
  (void)S; (void)x; (void)y;
  out->data[0] = A[0] * in->data[0] + A[2] * in->data[1];
  out->data[1] = A[1] * in->data[0] + A[3] * in->data[1];
  return BLO_OK;
}

static int bad_vjp(blo_state *S, void *ud, const blo_array *x, const blo_array *y, const blo_array *in,
                   blo_array *out) {
  (void)ud; (void)x; (void)y; (void)in; (void)out;
  return blo_native_error(S, "no gradient today");
}

static void expect_vec(blo_state *S, const char *path, const double *want, size_t n, double tol) {
  double got[16];
  ck_assert_int_eq(blo_get_tensor(S, path, got, 16), BLO_OK);
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(fabs(got[i] - want[i]) <= tol, "%s[%zu] = %.17g, want %.17g", path, i, got[i], want[i]);
}

START_TEST(native_plain_calls) {
  blo_state *S = open_capturing();
  double k = 3;
  blo_native d = {"scale", nat_scale, NULL, NULL, &k, 1, 1, "scale(x)", "multiplies by k"};
  ck_assert_int_eq(blo_register(S, &d), BLO_OK);
  blo_native f = {"fma3", nat_fma, NULL, NULL, NULL, 3, -1, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &f), BLO_OK);
  blo_native z = {"nothing", nat_nothing, NULL, NULL, NULL, 0, 0, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &z), BLO_OK);
  ck_assert_int_eq(run(S, "let a = scale([1, 2])\nlet b = scale(4)\nlet g = scale\nlet c = g(1)\n"
                          "let d = fma3([1, 2], [3, 4], [5, 6])\nlet e = nothing()"), BLO_OK);
  double want_a[2] = {3, 6}, want_d[2] = {8, 14};
  expect_vec(S, "a", want_a, 2, 0);
  ck_assert_double_eq(num(S, "b"), 12);
  ck_assert_double_eq(num(S, "c"), 3);
  expect_vec(S, "d", want_d, 2, 0);
  blo_kind kind;
  ck_assert_int_eq(blo_kind_of(S, "e", &kind), BLO_OK);
  ck_assert_int_eq(kind, BLO_NIL);
  ck_assert_int_eq(blo_kind_of(S, "scale", &kind), BLO_OK);
  ck_assert_int_eq(kind, BLO_BUILTIN);
  const char *sig, *doc;
  ck_assert_int_eq(blo_help(S, "scale", &sig, &doc), BLO_OK);
  ck_assert_str_eq(sig, "scale(x)");
  ck_assert_str_eq(doc, "multiplies by k");
  ck_assert_int_eq(blo_help(S, "fma3", &sig, &doc), BLO_OK);
  ck_assert_str_eq(sig, "fma3(...)");
  /* re-registering replaces the callbacks and user data, keeping the slot */
  double k2 = 10;
  d.ud = &k2;
  ck_assert_int_eq(blo_register(S, &d), BLO_OK);
  ck_assert_int_eq(run(S, "let a2 = scale(1)\nlet c2 = g(1)"), BLO_OK);
  ck_assert_double_eq(num(S, "a2"), 10);
  ck_assert_double_eq(num(S, "c2"), 10);
  blo_close(S);
}
END_TEST

START_TEST(native_errors) {
  blo_state *S = open_capturing();
  blo_native f = {"fma3", nat_fma, NULL, NULL, NULL, 3, 4, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &f), BLO_OK);
  blo_native fl = {"fails", nat_fail, NULL, NULL, NULL, 0, -1, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &fl), BLO_OK);
  ck_assert_int_eq(run(S, "let ok = 1\nlet d = fma3([1, 2], [3], [5, 6])"), BLO_ERROR_RUNTIME);
  const blo_error *e = blo_last_error(S);
  ck_assert_str_eq(e->message, "fma3(): sizes differ: 2, 1, 2");
  ck_assert_int_eq(e->line, 2);
  ck_assert_int_eq(run(S, "fma3(1, 2)"), BLO_ERROR_RUNTIME);          /* too few */
  ck_assert_int_eq(run(S, "fma3(1, 2, 3, 4, 5)"), BLO_ERROR_RUNTIME); /* too many */
  ck_assert_int_eq(run(S, "fma3(1, \"a\", 3)"), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "argument 2 is a string"));
  ck_assert_int_eq(run(S, "fma3(1, 2, 3, x = 4)"), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "named"));
  ck_assert_int_eq(run(S, "fails()"), BLO_ERROR_RUNTIME);
  ck_assert_str_eq(blo_last_error(S)->message, "fails() failed (status 17)");
  /* a native that is not differentiable, inside grad */
  ck_assert_int_eq(run(S, "let x = [1, 2]\nlet g = grad(sum(fma3(x, x, x)), x)"), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "not differentiable"));
  /* output beyond the memory cap */
  blo_close(S);
  blo_config c;
  blo_config_defaults(&c);
  c.mem_cap = 1 << 20;
  S = blo_open(&c);
  blo_native h = {"huge", nat_huge, NULL, NULL, NULL, 0, 0, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &h), BLO_OK);
  ck_assert_int_eq(run(S, "let big = huge()"), BLO_ERROR_MEMORY);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "memory cap"));
  /* blo_native_output and blo_native_error outside a native */
  blo_array a;
  size_t two = 2;
  ck_assert_int_eq(blo_native_output(S, &a, 1, &two), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_native_output(NULL, &a, 1, &two), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_native_error(S, "x"), BLO_ERROR_RUNTIME);
  blo_close(S);
}
END_TEST

START_TEST(native_registration_errors) {
  blo_state *S = open_capturing();
  blo_native d = {"9lives", nat_scale, NULL, NULL, NULL, 1, 1, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &d), BLO_ERROR_ARGUMENT);
  d.name = "with space";
  ck_assert_int_eq(blo_register(S, &d), BLO_ERROR_ARGUMENT);
  d.name = NULL;
  ck_assert_int_eq(blo_register(S, &d), BLO_ERROR_ARGUMENT);
  d.name = "ok_name";
  d.fn = NULL;
  ck_assert_int_eq(blo_register(S, &d), BLO_ERROR_ARGUMENT);
  d.fn = nat_scale;
  d.min_args = 3;
  d.max_args = 2;
  ck_assert_int_eq(blo_register(S, &d), BLO_ERROR_ARGUMENT);
  d.min_args = 2;
  d.max_args = 2;
  d.vjp = cube_d;
  ck_assert_int_eq(blo_register(S, &d), BLO_ERROR_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "exactly 1"));
  ck_assert_int_eq(blo_register(S, NULL), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_register(NULL, &d), BLO_ERROR_ARGUMENT);
  /* 64 natives fit, the 65th does not */
  blo_native n = {NULL, nat_scale, NULL, NULL, NULL, 1, 1, NULL, NULL};
  char name[32];
  for (int i = 0; i < BLO_MAX_NATIVES; i++) {
    snprintf(name, sizeof name, "n%d", i);
    n.name = name;
    ck_assert_int_eq(blo_register(S, &n), BLO_OK);
  }
  n.name = "one_too_many";
  ck_assert_int_eq(blo_register(S, &n), BLO_ERROR_ARGUMENT);
  /* each slot calls its own native */
  ck_assert_int_eq(run(S, "let v = n0(1) + n37(2) + n63(3)"), BLO_OK);
  ck_assert_double_eq(num(S, "v"), 12);
  blo_close(S);
}
END_TEST

START_TEST(native_shadows_builtin) {
  blo_state *S = open_capturing();
  blo_native d = {"sum", nat_scale, NULL, NULL, NULL, 1, 1, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &d), BLO_OK);
  ck_assert_int_eq(run(S, "let s = sum([1, 2])"), BLO_OK);
  double want[2] = {2, 4};
  expect_vec(S, "s", want, 2, 0);
  /* a script binding replaces it, like any global */
  ck_assert_int_eq(run(S, "let sum = 5\nlet t = sum + 1"), BLO_OK);
  ck_assert_double_eq(num(S, "t"), 6);
  blo_close(S);
}
END_TEST

START_TEST(native_derivatives) {
  blo_state *S = open_capturing();
  blo_native cube = {"cube", nat_cube, cube_d, cube_d, NULL, 0, 0, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &cube), BLO_OK);
  static double A[4] = {1, 2, 3, 4};
  blo_native lin = {"lin", nat_lin, lin_jvp, lin_vjp, A, 1, 1, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &lin), BLO_OK);
  ck_assert_int_eq(run(S, "let x = [1, 2]\n"
                          "let w = [3, -1]\n"
                          "let g = grad(sum(cube(x)), x)\n"            /* 3 x^2 */
                          "let g2 = grad(sum(w * cube(x)) + sum(x), x)\n"
                          "let j = jvp(sum(cube(x)), x, [1, 1])\n"    /* sum 3 x^2 */
                          "let gl = grad(sum(lin(x)^2), x)\n"          /* 2 A'A x */
                          "let hl = hvp(sum(lin(x)^2), x, [1, 0])\n"   /* 2 A'A e1, exact: lin is linear */
                          "let hc = hvp(sum(cube(x)), x, [1, 0])\n"    /* curvature of a native is omitted */
                          "let plain = cube(x)\n"),
                   BLO_OK);
  double g[2] = {3, 12}, g2[2] = {3 * 3 + 1, -12 + 1}, gl[2] = {2 * (10 * 1 + 14 * 2), 2 * (14 * 1 + 20 * 2)},
         hl[2] = {20, 28}, hc[2] = {0, 0}, plain[2] = {1, 8};
  expect_vec(S, "g", g, 2, 1e-12);
  expect_vec(S, "g2", g2, 2, 1e-12);
  ck_assert_double_eq_tol(num(S, "j"), 15, 1e-12);
  expect_vec(S, "gl", gl, 2, 1e-12);
  expect_vec(S, "hl", hl, 2, 1e-12);
  expect_vec(S, "hc", hc, 2, 0);
  expect_vec(S, "plain", plain, 2, 0);
  /* with only one direction registered, the other mode is a clear error */
  blo_native rev = {"rev_only", nat_cube, NULL, cube_d, NULL, 1, 1, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &rev), BLO_OK);
  ck_assert_int_eq(run(S, "let a = grad(sum(rev_only(x)), x)"), BLO_OK);
  expect_vec(S, "a", g, 2, 1e-12);
  ck_assert_int_eq(run(S, "let b = jvp(sum(rev_only(x)), x, [1, 1])"), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "forward-mode"));
  blo_native fwd = {"fwd_only", nat_cube, cube_d, NULL, NULL, 1, 1, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &fwd), BLO_OK);
  ck_assert_int_eq(run(S, "let b = jvp(sum(fwd_only(x)), x, [1, 1])"), BLO_OK);
  ck_assert_double_eq_tol(num(S, "b"), 15, 1e-12);
  ck_assert_int_eq(run(S, "let c = grad(sum(fwd_only(x)), x)"), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "reverse-mode"));
  /* an error inside a derivative callback reaches the script's error */
  blo_native bad = {"bad", nat_cube, cube_d, bad_vjp, NULL, 1, 1, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &bad), BLO_OK);
  ck_assert_int_eq(run(S, "let d = grad(sum(bad(x)), x)"), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "no gradient today"));
  /* derivative natives take exactly one argument */
  ck_assert_int_eq(run(S, "cube(x, x)"), BLO_ERROR_RUNTIME);
  blo_close(S);
}
END_TEST

/* A native op with derivative callbacks inside an inner objective: cg and
 * exact take their products at a held point, replaying the recording,
 * which calls the op's jvp again with each new tangent.  f = 0.5 |A y|^2 +
 * 0.5 |y|^2 - x.y, F = 0.5 |y - t|^2: y* = H^-1 x and dF/dx = H^-1 (y* - t),
 * H = A'A + I. */
/* the source of problem NAME: f = 0.5 |OP(y)|^2 + 0.5 |y|^2 - x.y, F = 0.5 |y - t|^2 */
static const char *native_problem(char *buf, size_t n, const char *name, const char *op) {
  snprintf(buf, n,
           "problem %s {\n"
           "  outer x = [1, -1]\n"
           "  inner y = [0, 0]\n"
           "  inner minimize 0.5 * sum(%s(y)^2) + 0.5 * sum(y^2) - sum(x * y)\n"
           "  outer minimize 0.5 * sum((y - t)^2)\n"
           "}\n",
           name, op);
  return buf;
}

START_TEST(native_in_implicit_hypergradient) {
  blo_state *S = open_capturing();
  static double A[4] = {1, 2, 3, 4};
  char src[512];
  blo_native lin = {"lin", nat_lin, lin_jvp, lin_vjp, A, 1, 1, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &lin), BLO_OK);
  ck_assert_int_eq(run(S, "let t = [0.5, 0.2]"), BLO_OK);
  ck_assert_int_eq(run(S, native_problem(src, sizeof src, "nq", "lin")), BLO_OK);
  ck_assert_int_eq(run(S, "let hc = hypergrad(nq, cg(), inner_steps = 800, inner_opt = sgd(lr = 0.05))\n"
                          "let he = hypergrad(nq, exact(), inner_steps = 800, inner_opt = sgd(lr = 0.05))\n"),
                   BLO_OK);
  /* H = [[11, 14], [14, 21]], det 35 */
  const double Hi[4] = {21.0 / 35, -14.0 / 35, -14.0 / 35, 11.0 / 35}, x[2] = {1, -1}, t[2] = {0.5, 0.2};
  double ys[2], r[2], d[2];
  for (int i = 0; i < 2; i++) ys[i] = Hi[2 * i] * x[0] + Hi[2 * i + 1] * x[1];
  for (int i = 0; i < 2; i++) r[i] = ys[i] - t[i];
  for (int i = 0; i < 2; i++) d[i] = Hi[2 * i] * r[0] + Hi[2 * i + 1] * r[1];
  expect_vec(S, "hc", d, 2, 1e-12);
  expect_vec(S, "he", d, 2, 1e-12);
  /* without a jvp the products cannot be taken: a clear error, no crash */
  blo_native rev = {"rev_only", nat_lin, NULL, lin_vjp, A, 1, 1, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &rev), BLO_OK);
  ck_assert_int_eq(run(S, native_problem(src, sizeof src, "nr", "rev_only")), BLO_OK);
  ck_assert_int_eq(run(S, "let hr = hypergrad(nr, cg(), inner_steps = 50, inner_opt = sgd(lr = 0.05))"),
                   BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "forward-mode"));
  blo_close(S);
}
END_TEST

/* The autodiff layer's custom op directly: y = 2x with x on a tape. */
static int ad_twice(tn_ctx *ctx, void *ud, const blo_tensor *x, const blo_tensor *y, const blo_tensor *in,
                    blo_tensor *out) {
  (void)ctx; (void)x; (void)y;
  *(int *)ud += 1;
  for (size_t i = 0; i < out->size; i++) out->data[i] = 2 * in->data[i];
  return 0;
}

static int ad_refuse(tn_ctx *ctx, void *ud, const blo_tensor *x, const blo_tensor *y, const blo_tensor *in,
                     blo_tensor *out) {
  (void)ud; (void)x; (void)y; (void)in; (void)out;
  return tn_error(ctx, "refused");
}

START_TEST(ad_custom_op_direct) {
  tn_ctx ctx;
  tn_ctx_init(&ctx, NULL, NULL);
  int calls = 0;
  ad_custom op = {"twice", ad_twice, ad_twice, &calls};
  ad_tape *tp = ad_tape_new(&ctx);
  size_t n = 3;
  double xs[3] = {1, 2, 3}, ts[3] = {1, 0, -1};
  ad_val x = ad_const(tn_from(&ctx, 1, &n, xs));
  x.t = tn_from(&ctx, 1, &n, ts);
  ck_assert_int_eq(ad_leaf(&ctx, tp, &x), 0);
  blo_tensor *y = tn_affine(&ctx, x.v, 2, 0);
  ad_val out, s;
  ck_assert_int_eq(ad_custom_op(&ctx, tp, &op, x, y, &out), 0);
  ck_assert_int_ge(out.node, 0);
  ck_assert_ptr_nonnull(out.t);
  ck_assert_double_eq(out.t->data[0], 2);
  ck_assert_double_eq(out.t->data[2], -2);
  ck_assert_int_eq(calls, 1);
  ck_assert_int_eq(ad_reduce(&ctx, tp, TN_SUM, out, -1, &s), 0);
  ck_assert_int_eq(ad_backward(&ctx, tp, s, NULL), 0);
  blo_tensor *g, *gt;
  ck_assert_int_eq(ad_adjoint(&ctx, tp, x.node, &g, &gt), 0);
  for (int i = 0; i < 3; i++) ck_assert_double_eq(g->data[i], 2);
  for (int i = 0; i < 3; i++) ck_assert_double_eq(gt->data[i], 0);
  ck_assert_int_eq(calls, 2);
  tn_release(&ctx, g);
  tn_release(&ctx, gt);
  ad_val_release(&ctx, &s);
  ad_val_release(&ctx, &out);
  /* missing directions and callback failures are errors with messages */
  ad_custom none = {"nod", NULL, NULL, NULL};
  ck_assert_int_eq(ad_custom_op(&ctx, tp, &none, x, tn_copy(&ctx, x.v), &out), -1);
  ck_assert_ptr_nonnull(strstr(ctx.err, "forward-mode"));
  ad_val xc = ad_const(tn_retain(x.v));
  xc.node = x.node;
  ck_assert_int_eq(ad_custom_op(&ctx, tp, &none, xc, tn_copy(&ctx, x.v), &out), -1);
  ck_assert_ptr_nonnull(strstr(ctx.err, "reverse-mode"));
  ad_custom refuse = {"ref", ad_refuse, ad_refuse, NULL};
  ck_assert_int_eq(ad_custom_op(&ctx, tp, &refuse, x, tn_copy(&ctx, x.v), &out), -1);
  ck_assert_str_eq(ctx.err, "refused");
  /* a constant input: no tape node, no callbacks */
  ad_val k = ad_const(tn_retain(x.v));
  ck_assert_int_eq(ad_custom_op(&ctx, tp, &none, k, tn_copy(&ctx, x.v), &out), 0);
  ck_assert_int_eq(out.node, -1);
  ck_assert_ptr_null(out.t);
  ad_val_release(&ctx, &out);
  ck_assert_int_eq(ad_custom_op(&ctx, tp, &none, k, NULL, &out), -1);
  ad_val_release(&ctx, &k);
  ad_val_release(&ctx, &xc);
  ad_val_release(&ctx, &x);
  ad_tape_free(&ctx, tp);
  tn_ctx_free(&ctx);
}
END_TEST

/* ---- calling script functions ---- */

START_TEST(call_script_functions) {
  blo_state *S = open_capturing();
  ck_assert_int_eq(run(S, "fn norm2(v) = sum(v * v)\nfn boom(v) = v + [1, 2]\nlet notfn = 3"), BLO_OK);
  double d[3] = {1, 2, 2};
  blo_array a = {1, {3}, 3, d};
  ck_assert_int_eq(blo_call(S, "norm2", 1, &a, "n2"), BLO_OK);
  ck_assert_double_eq(num(S, "n2"), 9);
  ck_assert_int_eq(blo_call(S, "sum", 1, &a, "s"), BLO_OK);     /* a builtin */
  ck_assert_double_eq(num(S, "s"), 5);
  double k = 4;
  blo_native sc = {"scale", nat_scale, NULL, NULL, &k, 1, 1, NULL, NULL};
  ck_assert_int_eq(blo_register(S, &sc), BLO_OK);
  double two = 2;
  blo_array num2 = {0, {0}, 1, &two};
  ck_assert_int_eq(blo_call(S, "scale", 1, &num2, "sc"), BLO_OK);
  ck_assert_double_eq(num(S, "sc"), 8);
  ck_assert_int_eq(blo_call(S, "norm2", 1, &a, NULL), BLO_OK);
  /* errors */
  ck_assert_int_eq(blo_call(S, "nope", 1, &a, "r"), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_call(S, "notfn", 1, &a, "r"), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_call(S, "grad", 1, &a, "r"), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_call(S, "pi", 0, NULL, "r"), BLO_ERROR_ARGUMENT);   /* a constant, as in scripts */
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "constant"));
  ck_assert_int_eq(blo_call(S, "norm2", 1, &a, "bad name"), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_call(S, "norm2", 1, NULL, "r"), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_call(S, NULL, 0, NULL, "r"), BLO_ERROR_ARGUMENT);
  blo_array bad = {5, {1}, 1, d};
  ck_assert_int_eq(blo_call(S, "norm2", 1, &bad, "r"), BLO_ERROR_ARGUMENT);
  blo_array zero = {1, {0}, 0, d};
  ck_assert_int_eq(blo_call(S, "norm2", 1, &zero, "r"), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_call(S, "norm2", 2, (blo_array[]){a, a}, "r"), BLO_ERROR_RUNTIME);
  ck_assert_int_eq(blo_call(S, "boom", 1, &a, "r"), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "shape mismatch"));
  ck_assert_int_eq(blo_last_error(S)->line, 2);
  ck_assert_ptr_nonnull(strstr(err_sink.buf, "shape mismatch"));
  blo_kind kind;
  ck_assert_int_eq(blo_kind_of(S, "r", &kind), BLO_ERROR_ARGUMENT);
  blo_close(S);
}
END_TEST

/* ---- solve ---- */

static const char *ridge_src =
  "let X = [[1, 0], [0, 1], [1, 1]]\n"
  "let yv = [1, 2, 3]\n"
  "problem ridge {\n"
  "  outer lam : [2] = [0, 0]\n"
  "  inner w : [2] = zeros(2)\n"
  "  inner minimize mean((X @ w - yv)^2) + sum(exp(lam) * w^2)\n"
  "  outer minimize mean((X @ w - yv)^2)\n"
  "}\n";

typedef struct { int calls; int stop_at; long last_step; double last_F; int done; int quiet; double elapsed; } prog;

static int on_progress(void *ud, const blo_progress *p) {
  prog *g = ud;
  ck_assert_int_eq(g->done, 0);            /* nothing after the final report */
  ck_assert(p->elapsed >= g->elapsed);
  g->elapsed = p->elapsed;
  g->quiet = p->quiet;
  if (p->done) { g->done = 1; return 0; }
  g->calls++;
  g->last_step = p->step;
  g->last_F = p->F;
  ck_assert_str_eq(p->problem, "ridge");
  return g->stop_at > 0 && g->calls >= g->stop_at;
}

START_TEST(solve_and_progress) {
  blo_state *S = open_capturing();
  if (run(S, ridge_src) != BLO_OK) {
    /* the bilevel runtime is not there yet: only the argument checks */
    ck_assert_int_eq(blo_solve(S, "nothing", NULL, NULL, NULL, NULL), BLO_ERROR_ARGUMENT);
    blo_close(S);
    return;
  }
  prog g = {0};
  int rc = blo_solve(S, "ridge", "outer_steps = 5, inner_steps = 20, quiet = true", "res", on_progress, &g);
  ck_assert_msg(rc == BLO_OK, "%s", blo_last_error(S)->message);
  double F = num(S, "res.F");
  ck_assert(isfinite(F));
  int rank;
  size_t sh[4];
  ck_assert_int_eq(blo_get_shape(S, "lam", &rank, sh), BLO_OK);
  ck_assert_int_eq(rank, 1);
  ck_assert_int_eq(g.calls, 5);
  ck_assert_int_eq(g.last_step, 5);
  ck_assert_int_eq(g.done, 1);     /* one final report, after the loop */
  ck_assert_int_eq(g.quiet, 1);    /* the script's quiet = true reaches the host */
  /* cancelling from the callback */
  prog stop = {.stop_at = 2};
  ck_assert_int_eq(blo_solve(S, "ridge", "outer_steps = 50, quiet = true", "res2", on_progress, &stop),
                   BLO_INTERRUPTED);
  ck_assert_int_eq(stop.calls, 2);
  ck_assert_int_eq(stop.done, 1);  /* also when the solve was stopped */
  /* the state-wide callback applies to solves run by scripts too */
  prog all = {0};
  blo_set_progress(S, on_progress, &all);
  ck_assert_int_eq(run(S, "let r3 = solve ridge with {outer_steps = 3}"), BLO_OK);
  ck_assert_int_eq(all.calls, 3);
  ck_assert_int_eq(all.done, 1);
  ck_assert_int_eq(all.quiet, 0);
  blo_set_progress(S, NULL, NULL);
  /* errors */
  ck_assert_int_eq(blo_solve(S, "X", NULL, NULL, NULL, NULL), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_solve(S, "nothing", NULL, NULL, NULL, NULL), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_solve(S, "ridge; print 1", NULL, NULL, NULL, NULL), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_solve(S, "ridge", "no_such_option = 1", NULL, NULL, NULL), BLO_ERROR_RUNTIME);
  ck_assert_int_eq(blo_solve(S, "ridge", "outer_steps = ", NULL, NULL, NULL), BLO_ERROR_SYNTAX);
  blo_close(S);
}
END_TEST

/* Names given to the API are identifiers, never keywords, and option text
 * is a record's fields only: nothing the host passes runs as a statement. */
START_TEST(names_and_options_are_not_code) {
  blo_state *S = open_capturing();
  ck_assert_int_eq(run(S, ridge_src), BLO_OK);
  /* option text that closes the record and adds statements */
  ck_assert_int_ne(blo_solve(S, "ridge", "}\nlet injected = 1\nlet zz = {", "res", NULL, NULL), BLO_OK);
  blo_kind kind;
  ck_assert_int_eq(blo_kind_of(S, "injected", &kind), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_kind_of(S, "zz", &kind), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_kind_of(S, "res", &kind), BLO_ERROR_ARGUMENT);
  ck_assert_int_ne(blo_solve(S, "ridge", "outer_steps = 1} + {b = 2", "res", NULL, NULL), BLO_OK);
  ck_assert_int_ne(blo_solve(S, "ridge", "outer_steps = 1}; let injected = 2; let q = {a = 1", "res", NULL, NULL),
                   BLO_OK);
  ck_assert_int_eq(blo_kind_of(S, "injected", &kind), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_kind_of(S, "res", &kind), BLO_ERROR_ARGUMENT);
  /* the fields themselves still work, over several lines and with a trailing comma */
  ck_assert_int_eq(blo_solve(S, "ridge", "outer_steps = 2,\n inner_steps = 5, quiet = true,", "res", NULL, NULL),
                   BLO_OK);
  ck_assert_double_eq(num(S, "res.steps"), 2);
  ck_assert_int_eq(blo_solve(S, "ridge", "", "res0", NULL, NULL), BLO_OK);
  ck_assert_int_eq(blo_kind_of(S, "res0", &kind), BLO_OK);
  ck_assert_int_eq(kind, BLO_RECORD);
  /* an error inside the options is located in the option text */
  ck_assert_int_eq(blo_solve(S, "ridge", "outer_steps = 1, inner_steps = nope", "res", NULL, NULL),
                   BLO_ERROR_RUNTIME);
  ck_assert_str_eq(blo_last_error(S)->file, "<blo_solve>");
  ck_assert_int_eq(blo_last_error(S)->line, 1);
  ck_assert_int_eq(blo_last_error(S)->col, 32);
  /* keywords are not names */
  static const char *const keywords[] = {"let", "fn", "if", "else", "for", "in", "while", "break", "continue",
                                         "return", "print", "problem", "outer", "inner", "minimize", "maximize",
                                         "every", "solve", "with", "true", "false"};
  double d = 1;
  size_t shape[1] = {1};
  for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++) {
    const char *k = keywords[i];
    ck_assert_int_eq(blo_set_tensor(S, k, 1, shape, &d), BLO_ERROR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "keyword"));
    ck_assert_int_eq(blo_set_number(S, k, 1), BLO_ERROR_ARGUMENT);
    ck_assert_int_eq(blo_set_string(S, k, "s"), BLO_ERROR_ARGUMENT);
    ck_assert_int_eq(blo_get_number(S, k, &d), BLO_ERROR_ARGUMENT);
    ck_assert_int_eq(blo_call(S, "abs", 0, NULL, k), BLO_ERROR_ARGUMENT);
    ck_assert_int_eq(blo_solve(S, "ridge", "outer_steps = 1", k, NULL, NULL), BLO_ERROR_ARGUMENT);
    ck_assert_int_eq(blo_solve(S, k, NULL, NULL, NULL, NULL), BLO_ERROR_ARGUMENT);
    blo_native nd = {k, nat_scale, NULL, NULL, NULL, 1, 1, NULL, NULL};
    ck_assert_int_eq(blo_register(S, &nd), BLO_ERROR_ARGUMENT);
  }
  ck_assert_int_eq(blo_get_number(S, "res.let", &d), BLO_ERROR_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "keyword"));
  ck_assert_int_eq(blo_set_number(S, "a b", 1), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_set_number(S, "", 1), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_call(S, "let", 0, NULL, NULL), BLO_ERROR_ARGUMENT);
  ck_assert_int_eq(blo_call(S, "no such", 0, NULL, NULL), BLO_ERROR_ARGUMENT);
  /* `outer` is a keyword that scripts also call as a builtin: blo_call may too */
  double u[2] = {1, 2}, v[2] = {3, 5};
  blo_array args[2] = {{1, {2}, 2, u}, {1, {2}, 2, v}};
  ck_assert_int_eq(blo_call(S, "outer", 2, args, "op"), BLO_OK);
  double o[4];
  ck_assert_int_eq(blo_get_tensor(S, "op", o, 4), BLO_OK);
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) ck_assert_double_eq(o[2 * i + j], u[i] * v[j]);
  blo_close(S);
}
END_TEST

/* ---- threads ---- */

typedef struct { double k; double result; int rc; } job;

static void *thread_job(void *p) {
  job *j = p;
  blo_config c;
  blo_config_defaults(&c);
  c.seed = (unsigned long long)j->k;
  blo_state *S = blo_open(&c);
  if (!S) { j->rc = -1; return NULL; }
  blo_native d = {"scale", nat_scale, NULL, NULL, &j->k, 1, 1, NULL, NULL};
  j->rc = blo_register(S, &d);
  const char *src =
    "let s = 0\n"
    "for i in 0..300 {\n"
    "  let v = ones(20) * i\n"
    "  s = s + sum(scale(v)) + sum(grad(sum(v^2), v)) - 40 * i\n"
    "}\n"
    "let check = s\n";
  for (int rep = 0; rep < 5 && j->rc == BLO_OK; rep++) j->rc = blo_eval_string(S, "job", src, strlen(src));
  if (j->rc == BLO_OK) j->rc = blo_get_number(S, "check", &j->result);
  blo_close(S);
  return NULL;
}

START_TEST(two_states_two_threads) {
  job a = {2, 0, 0}, b = {3, 0, 0};
  pthread_t ta, tb;
  ck_assert_int_eq(pthread_create(&ta, NULL, thread_job, &a), 0);
  ck_assert_int_eq(pthread_create(&tb, NULL, thread_job, &b), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  ck_assert_int_eq(a.rc, BLO_OK);
  ck_assert_int_eq(b.rc, BLO_OK);
  /* sum over i of 20 k i = 20 k * 44850 */
  ck_assert_double_eq(a.result, 20.0 * 2 * 44850);
  ck_assert_double_eq(b.result, 20.0 * 3 * 44850);
}
END_TEST

int main(void) {
  Suite *s = suite_create("api");
  TCase *tc = tcase_create("api");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, config_defaults_and_version);
  tcase_add_test(tc, open_close_defaults);
  tcase_add_test(tc, output_goes_to_callback);
  tcase_add_test(tc, seed_from_config);
  tcase_add_test(tc, syntax_error_is_located);
  tcase_add_test(tc, check_runs_nothing_and_reports_each_problem);
  tcase_add_test(tc, runtime_error_keeps_state);
  tcase_add_test(tc, eval_file_and_missing_file);
  tcase_add_test(tc, eval_file_on_a_directory);
  tcase_add_test(tc, file_access_refused_by_config);
  tcase_add_test(tc, memory_cap);
  tcase_add_test(tc, failing_allocator);
  tcase_add_test(tc, nothing_printed_uninvited);
  tcase_add_test(tc, tensor_roundtrip_and_views);
  tcase_add_test(tc, bad_shapes_and_names);
  tcase_add_test(tc, records_strings_and_paths);
  tcase_add_test(tc, globals_iteration_and_args);
  tcase_add_test(tc, builtin_table_and_help);
  tcase_add_test(tc, list_paths_and_length);
  tcase_add_test(tc, keyword_table);
  tcase_add_test(tc, context_completion);
  tcase_add_test(tc, repl_echo);
  tcase_add_test(tc, input_completeness);
  tcase_add_test(tc, interrupt_flag_stops_loops);
  tcase_add_test(tc, interrupt_flag_stops_recursion);
  tcase_add_test(tc, interrupt_flag_from_native);
  tcase_add_test(tc, native_plain_calls);
  tcase_add_test(tc, native_errors);
  tcase_add_test(tc, native_registration_errors);
  tcase_add_test(tc, native_shadows_builtin);
  tcase_add_test(tc, native_derivatives);
  tcase_add_test(tc, native_in_implicit_hypergradient);
  tcase_add_test(tc, ad_custom_op_direct);
  tcase_add_test(tc, call_script_functions);
  tcase_add_test(tc, solve_and_progress);
  tcase_add_test(tc, names_and_options_are_not_code);
  tcase_add_test(tc, two_states_two_threads);
  suite_add_tcase(s, tc);
  return check_run(s, "test_api", CK_NOFORK);
}
