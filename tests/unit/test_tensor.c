/* test_tensor.c: unit tests for runtime/tensor.c and runtime/linalg.c.
 *
 * Fast kernels are checked against the reference kernels and against naive
 * index arithmetic written here; linear algebra against closed forms.  Every
 * test runs on a context with a counting allocator and ends by freeing the
 * context and asserting that no block is left, so a leak on any path (error
 * paths included) fails the test.  Run under valgrind with CK_FORK=no.
 */
#define _POSIX_C_SOURCE 200809L
#include "tensor.h"

#include <check.h>

#include "check_run.h"
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------
 * fixture: counting allocator with failure injection
 * --------------------------------------------------------------------- */

typedef struct {
  long live;      /* blocks currently allocated */
  long allocs;    /* allocating calls so far */
  long fail_from; /* allocating calls with index >= fail_from return NULL (-1: never) */
} acct;

static void *count_realloc(void *ud, void *p, size_t old, size_t nsz) {
  acct *a = ud;
  (void)old;
  if (nsz == 0) {
    if (p) { a->live--; free(p); }
    return NULL;
  }
  if (!p) {
    long k = a->allocs++;
    if (a->fail_from >= 0 && k >= a->fail_from) return NULL;
    void *q = malloc(nsz);
    if (q) a->live++;
    return q;
  }
  return realloc(p, nsz);
}

static tn_ctx C;
static acct A;

static void setup(void) {
  memset(&A, 0, sizeof A);
  A.fail_from = -1;
  tn_ctx_init(&C, count_realloc, &A);
}

static void teardown(void) { tn_ctx_free(&C); }

/* Ends a test: everything released means nothing left after freeing the pool. */
#define LEAK_CHECK()                                                        \
  do {                                                                      \
    tn_ctx_free(&C);                                                        \
    ck_assert_msg(A.live == 0, "%ld blocks leaked", A.live);                \
    ck_assert_msg(C.mem_used == 0, "mem_used %zu after free", C.mem_used);  \
  } while (0)

#define R(t) tn_release(&C, (t))

/* ---------------------------------------------------------------------
 * helpers
 * --------------------------------------------------------------------- */

static blo_tensor *mk(int rank, size_t d0, size_t d1, size_t d2, size_t d3) {
  size_t s[4] = {d0, d1, d2, d3};
  blo_tensor *t = tn_new(&C, rank, s);
  ck_assert_msg(t != NULL, "tn_new failed: %s", C.err);
  return t;
}

static blo_tensor *mkv(int rank, size_t d0, size_t d1, const double *v) {
  blo_tensor *t = mk(rank, d0, d1, 1, 1);
  memcpy(t->data, v, t->size * sizeof(double));
  return t;
}

static tn_rng G;

static void fill_rand(blo_tensor *t, double lo, double hi) {
  for (size_t i = 0; i < t->size; i++) t->data[i] = lo + (hi - lo) * tn_rng_uniform(&G);
}

static blo_tensor *rnd(int rank, size_t d0, size_t d1, size_t d2, size_t d3) {
  blo_tensor *t = mk(rank, d0, d1, d2, d3);
  fill_rand(t, -1, 1);
  return t;
}

static double maxabs(const blo_tensor *t) {
  double m = 0;
  for (size_t i = 0; i < t->size; i++) if (fabs(t->data[i]) > m) m = fabs(t->data[i]);
  return m;
}

/* |x - y| <= atol + rtol |y| elementwise, same shape; NaN matches NaN */
static void assert_close_(const blo_tensor *x, const blo_tensor *y, double rtol, double atol, const char *what,
                          int line) {
  char s1[96], s2[96];
  ck_assert_msg(x && y, "line %d %s: NULL tensor (%s)", line, what, C.err);
  ck_assert_msg(tn_same_shape(x, y), "line %d %s: shapes %s vs %s", line, what, tn_shape_str(x, s1, 96),
                tn_shape_str(y, s2, 96));
  for (size_t i = 0; i < x->size; i++) {
    double a = x->data[i], b = y->data[i];
    if (isnan(a) && isnan(b)) continue;
    if (a == b) continue;
    ck_assert_msg(fabs(a - b) <= atol + rtol * fabs(b), "line %d %s: element %zu: %.17g vs %.17g", line, what, i,
                  a, b);
  }
}
#define assert_close(x, y, rtol, atol) assert_close_((x), (y), (rtol), (atol), #x " ~ " #y, __LINE__)

static void assert_vals_(const blo_tensor *t, const double *v, double tol, int line) {
  ck_assert_msg(t != NULL, "line %d: NULL (%s)", line, C.err);
  for (size_t i = 0; i < t->size; i++)
    ck_assert_msg(fabs(t->data[i] - v[i]) <= tol, "line %d: element %zu: %.17g, expected %.17g", line, i,
                  t->data[i], v[i]);
}
#define assert_vals(t, tol, ...)                                        \
  do {                                                                  \
    const double v_[] = {__VA_ARGS__};                                  \
    ck_assert_uint_eq((t)->size, sizeof v_ / sizeof v_[0]);             \
    assert_vals_((t), v_, (tol), __LINE__);                             \
  } while (0)

static void assert_shape_(const blo_tensor *t, int rank, const size_t *s, int line) {
  char b1[96], b2[96];
  ck_assert_msg(t != NULL, "line %d: NULL (%s)", line, C.err);
  int ok = t->rank == rank;
  for (int i = 0; ok && i < rank; i++) ok = t->shape[i] == s[i];
  ck_assert_msg(ok, "line %d: shape %s, expected %s", line, tn_shape_str(t, b1, 96), tn_shape_str_raw(rank, s, b2, 96));
}
#define assert_shape(t, rank, ...)                                       \
  do {                                                                   \
    const size_t s_[] = {0, __VA_ARGS__};                                \
    assert_shape_((t), (rank), s_ + 1, __LINE__);                        \
  } while (0)

#define assert_err(expr, msg)                                                               \
  do {                                                                                      \
    C.err[0] = 0;                                                                           \
    ck_assert_msg(!(expr), "expected failure of %s", #expr);                                \
    ck_assert_msg(strcmp(C.err, (msg)) == 0, "error text '%s', expected '%s'", C.err, (msg)); \
  } while (0)

/* ---------------------------------------------------------------------
 * context, lifetime, pool
 * --------------------------------------------------------------------- */

START_TEST(test_shape_str) {
  char b[96];
  size_t s[4] = {2, 3, 0, 7};
  ck_assert_str_eq(tn_shape_str_raw(2, s, b, sizeof b), "[2, 3]");
  ck_assert_str_eq(tn_shape_str_raw(0, s, b, sizeof b), "[]");
  ck_assert_str_eq(tn_shape_str_raw(4, s, b, sizeof b), "[2, 3, 0, 7]");
  ck_assert_str_eq(tn_shape_str_raw(2, s, b, 4), "[2,"); /* truncates, stays terminated */
  ck_assert_int_eq(tn_error(&C, "x %d", 5), -1);
  ck_assert_str_eq(C.err, "x 5");
  LEAK_CHECK();
}
END_TEST

START_TEST(test_lifetime) {
  blo_tensor *s = tn_scalar(&C, 2.5);
  ck_assert_int_eq(s->rank, 0);
  ck_assert_uint_eq(s->size, 1);
  ck_assert(s->data[0] == 2.5);
  blo_tensor *z = tn_zeros(&C, 3, (size_t[]){2, 3, 4});
  assert_shape(z, 3, 2, 3, 4);
  ck_assert_uint_eq(z->size, 24);
  ck_assert_uint_eq(z->shape[3], 1);
  ck_assert(maxabs(z) == 0);
  blo_tensor *f = tn_from(&C, 2, (size_t[]){2, 2}, (double[]){1, 2, 3, 4});
  blo_tensor *c = tn_copy(&C, f);
  ck_assert(c->data != f->data);
  assert_vals(c, 0, 1, 2, 3, 4);
  ck_assert(tn_same_shape(c, f));
  ck_assert(!tn_same_shape(c, z));
  blo_tensor *zl = tn_zeros_like(&C, f);
  assert_shape(zl, 2, 2, 2);
  ck_assert(maxabs(zl) == 0);
  blo_tensor *e = tn_zeros(&C, 2, (size_t[]){0, 5});
  ck_assert_uint_eq(e->size, 0);
  /* refcounting */
  ck_assert_ptr_eq(tn_retain(f), f);
  ck_assert_int_eq(f->refcount, 2);
  R(f);
  ck_assert_int_eq(f->refcount, 1);
  tn_release(&C, NULL);
  assert_err(tn_new(&C, 7, (size_t[]){1, 1, 1, 1, 1, 1, 1}), "rank 7 is not supported (maximum 6)");
  R(s); R(z); R(f); R(c); R(zl); R(e);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_pool_steady_state) {
  blo_tensor *a = rnd(2, 30, 20, 1, 1), *b = rnd(1, 20, 1, 1, 1);
  for (int i = 0; i < 3; i++) { /* warm-up */
    blo_tensor *x = tn_binary(&C, TN_ADD, a, b), *y = tn_binary(&C, TN_MUL, x, a);
    blo_tensor *s = tn_reduce(&C, TN_SUM, y, 0);
    R(x); R(y); R(s);
  }
  size_t before = C.n_sys_alloc, used = C.mem_used;
  long allocs = A.allocs;
  for (int i = 0; i < 1000; i++) {
    blo_tensor *x = tn_binary(&C, TN_ADD, a, b), *y = tn_binary(&C, TN_MUL, x, a);
    blo_tensor *s = tn_reduce(&C, TN_SUM, y, 0);
    ck_assert(x && y && s);
    R(x); R(y); R(s);
  }
  ck_assert_uint_eq(C.n_sys_alloc, before);
  ck_assert_int_eq(A.allocs, allocs); /* and the allocator really saw nothing */
  ck_assert_uint_eq(C.mem_used, used);
  /* a slightly smaller size of the same class reuses the pooled buffer */
  blo_tensor *p = mk(1, 100, 1, 1, 1);
  double *d = p->data;
  R(p);
  size_t n0 = C.n_sys_alloc;
  p = mk(1, 97, 1, 1, 1);
  ck_assert_ptr_eq(p->data, d);
  ck_assert_uint_eq(C.n_sys_alloc, n0);
  ck_assert_uint_ge(p->cap, 97 * sizeof(double));
  ck_assert_uint_le(p->cap, 125 * sizeof(double)); /* class slack is at most 25% */
  R(p); R(a); R(b);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_mem_live_peak) {
  /* live bytes count tensors, not pooled buffers; the peak is their high-water mark */
  size_t live = C.mem_live;
  C.mem_peak = live;
  blo_tensor *a = mk(1, 1000, 1, 1, 1), *b = mk(1, 3000, 1, 1, 1);
  ck_assert_uint_eq(C.mem_live, live + a->cap + b->cap);
  ck_assert_uint_ge(a->cap, 1000 * sizeof(double));
  ck_assert_uint_le(a->cap, 1250 * sizeof(double));
  size_t both = C.mem_live;
  R(b);
  ck_assert_uint_eq(C.mem_live, live + a->cap);
  ck_assert_uint_eq(C.mem_peak, both);
  blo_tensor *c = mk(1, 3000, 1, 1, 1); /* from the pool: live again, peak unchanged */
  ck_assert_uint_eq(C.mem_live, both);
  ck_assert_uint_eq(C.mem_peak, both);
  blo_tensor *s = mk(0, 1, 1, 1, 1);   /* a scalar keeps its data in the header */
  ck_assert_uint_eq(C.mem_live, both);
  R(a); R(c); R(s);
  ck_assert_uint_eq(C.mem_live, live);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_mem_cap) {
  C.mem_cap = 1000;
  assert_err(tn_new(&C, 1, (size_t[]){200}), "memory cap exceeded: 1600 bytes requested, cap 1000 bytes");
  blo_tensor *ok = tn_new(&C, 1, (size_t[]){100});
  ck_assert(ok != NULL);
  ck_assert_uint_le(C.mem_used, 1000);
  R(ok);
  /* pooled buffers count against the cap but are given back when needed */
  C.mem_cap = 4096;
  blo_tensor *big = tn_new(&C, 1, (size_t[]){400});
  ck_assert(big != NULL);
  R(big);
  blo_tensor *other = tn_new(&C, 1, (size_t[]){300});
  ck_assert_msg(other != NULL, "%s", C.err);
  ck_assert_uint_le(C.mem_used, 4096);
  /* errors from kernels propagate and leave nothing behind */
  blo_tensor *x = tn_binary(&C, TN_ADD, other, other);
  ck_assert(x == NULL);
  ck_assert(strncmp(C.err, "memory cap exceeded: 2400 bytes requested, cap 4096 bytes", 60) == 0);
  R(other);
  C.mem_cap = 0;
  ck_assert_uint_eq(C.n_sys_alloc >= 3, 1);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_default_allocator) {
  tn_ctx c;
  tn_ctx_init(&c, NULL, NULL);
  ck_assert(c.realloc_fn != NULL);
  blo_tensor *t = tn_zeros(&c, 2, (size_t[]){3, 3});
  ck_assert(t && t->data[8] == 0);
  ck_assert_uint_gt(c.mem_used, 0);
  tn_release(&c, t);
  tn_ctx_trim(&c);
  ck_assert_uint_eq(c.mem_used, 0);
  t = tn_scalar(&c, 1);
  tn_release(&c, t);
  tn_ctx_free(&c);
  ck_assert_uint_eq(c.mem_used, 0);
  LEAK_CHECK();
}
END_TEST

/* Every operation, with allocation failing at each successive point, must
 * either succeed or fail with "out of memory" and leak nothing. */
typedef blo_tensor *(*opfn)(blo_tensor **in);
static blo_tensor *op_bin(blo_tensor **in) { return tn_binary(&C, TN_ADD, in[0], in[1]); }
static blo_tensor *op_mm(blo_tensor **in) { return tn_matmul(&C, in[4], in[2]); }
static blo_tensor *op_mv(blo_tensor **in) { return tn_matmul(&C, in[0], in[2]); }
static blo_tensor *op_red(blo_tensor **in) { return tn_reduce(&C, TN_LOGSUMEXP, in[2], 1); }
static blo_tensor *op_sm(blo_tensor **in) { return tn_softmax(&C, in[2], 0); }
static blo_tensor *op_cat(blo_tensor **in) { return tn_concat(&C, in, 2, 0); }
static blo_tensor *op_stack(blo_tensor **in) { return tn_stack(&C, in, 2, 1); }
static blo_tensor *op_solve(blo_tensor **in) { return tn_linsolve(&C, in[4], in[1]); }
static blo_tensor *op_inv(blo_tensor **in) { return tn_inv(&C, in[4]); }
static blo_tensor *op_chol(blo_tensor **in) { return tn_chol(&C, in[4]); }
static blo_tensor *op_pinv(blo_tensor **in) { return tn_pinv(&C, in[2]); }
static blo_tensor *op_lstsq(blo_tensor **in) { return tn_lstsq(&C, in[3], in[0]); }
static blo_tensor *op_sumto(blo_tensor **in) { return tn_sum_to(&C, in[2], 1, (size_t[]){4}); }
static blo_tensor *op_take(blo_tensor **in) { return tn_take(&C, in[2], in[5], 0); }
static blo_tensor *op_index(blo_tensor **in) {
  tn_index_t ix[2] = {{TN_IX_SLICE, 1, 3}, {TN_IX_INDEX, -1, 0}};
  return tn_index(&C, in[2], ix, 2);
}
static blo_tensor *op_eigh(blo_tensor **in) {
  blo_tensor *e, *v;
  if (tn_eigh(&C, in[4], &e, &v) < 0) return NULL;
  R(v);
  return e;
}
static blo_tensor *op_det(blo_tensor **in) {
  double d;
  return tn_det(&C, in[4], &d) < 0 ? NULL : tn_scalar(&C, d);
}

START_TEST(test_alloc_failure_paths) {
  static const opfn ops[] = {op_bin, op_mm, op_mv, op_red, op_sm, op_cat, op_stack, op_solve, op_inv, op_chol,
                             op_pinv, op_lstsq, op_sumto, op_take, op_index, op_eigh, op_det};
  tn_ctx_free(&C);
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
    int succeeded = 0;
    for (long k = 0; k < 64 && !succeeded; k++) {
      memset(&A, 0, sizeof A);
      A.fail_from = -1;
      tn_ctx_init(&C, count_realloc, &A);
      blo_tensor *in[6];
      in[0] = rnd(1, 3, 1, 1, 1);
      in[1] = rnd(1, 3, 1, 1, 1);
      in[2] = rnd(2, 3, 4, 1, 1);
      in[3] = rnd(2, 3, 2, 1, 1);
      in[4] = tn_from(&C, 2, (size_t[]){3, 3}, (double[]){4, 1, 0, 1, 5, 2, 0, 2, 6});
      in[5] = tn_from(&C, 1, (size_t[]){2}, (double[]){2, 0});
      A.fail_from = A.allocs + k;
      C.err[0] = 0;
      blo_tensor *r = ops[o](in);
      A.fail_from = -1;
      if (r) succeeded = 1;
      else ck_assert_msg(strstr(C.err, "out of memory") != NULL, "op %zu fail %ld: '%s'", o, k, C.err);
      R(r);
      for (int i = 0; i < 6; i++) R(in[i]);
      tn_ctx_free(&C);
      ck_assert_msg(A.live == 0, "op %zu with failure at %ld: %ld blocks leaked", o, k, A.live);
    }
    ck_assert_msg(succeeded, "op %zu never succeeded", o);
  }
  tn_ctx_init(&C, count_realloc, &A);
  LEAK_CHECK();
}
END_TEST

/* ---------------------------------------------------------------------
 * elementwise
 * --------------------------------------------------------------------- */

START_TEST(test_unary_values) {
  double xs[] = {-1000, -2.5, -1, -0.0, 0, 0.3, 1, 2.5, 1000};
  blo_tensor *x = mkv(1, 9, 1, xs);
  for (int op = 0; op < TN_UNARY_COUNT; op++) {
    blo_tensor *y = tn_unary(&C, (tn_unary_op)op, x);
    for (int i = 0; i < 9; i++) {
      double e = tn_unary_scalar((tn_unary_op)op, xs[i]), g = y->data[i];
      ck_assert_msg((isnan(e) && isnan(g)) || e == g, "%s(%g): %g vs %g", tn_unary_name((tn_unary_op)op), xs[i], g, e);
    }
    R(y);
  }
  R(x);
  ck_assert(tn_unary_scalar(TN_SIGMOID, -1000) == 0);
  ck_assert(tn_unary_scalar(TN_SIGMOID, 1000) == 1);
  ck_assert(fabs(tn_unary_scalar(TN_SIGMOID, 0.7) - 1 / (1 + exp(-0.7))) < 1e-16);
  ck_assert(fabs(tn_unary_scalar(TN_SIGMOID, -0.7) - 1 / (1 + exp(0.7))) < 1e-16);
  ck_assert(tn_unary_scalar(TN_SOFTPLUS, 1000) == 1000);
  ck_assert(tn_unary_scalar(TN_SOFTPLUS, -1000) == 0);
  ck_assert(fabs(tn_unary_scalar(TN_SOFTPLUS, 0.5) - log(1 + exp(0.5))) < 1e-15);
  ck_assert(fabs(tn_unary_scalar(TN_SOFTPLUS, -0.5) - log(1 + exp(-0.5))) < 1e-15);
  ck_assert(tn_unary_scalar(TN_RELU, -2) == 0 && tn_unary_scalar(TN_RELU, 2) == 2);
  ck_assert(isnan(tn_unary_scalar(TN_RELU, NAN)));
  ck_assert(tn_unary_scalar(TN_SIGN, -3) == -1 && tn_unary_scalar(TN_SIGN, 3) == 1 && tn_unary_scalar(TN_SIGN, 0) == 0);
  ck_assert(tn_unary_scalar(TN_STEP, 0) == 0 && tn_unary_scalar(TN_STEP, 1e-300) == 1);
  ck_assert(tn_unary_scalar(TN_NOT, 0) == 1 && tn_unary_scalar(TN_NOT, -2) == 0);
  ck_assert(tn_unary_scalar(TN_FLOOR, -1.5) == -2);
  ck_assert(tn_unary_scalar(TN_ISNAN, NAN) == 1 && tn_unary_scalar(TN_ISNAN, INFINITY) == 0);
  ck_assert(tn_unary_scalar(TN_SQUARE, -3) == 9 && tn_unary_scalar(TN_RECIP, 4) == 0.25);
  ck_assert(tn_unary_scalar(TN_NEG, 2) == -2 && tn_unary_scalar(TN_ABS, -2) == 2);
  ck_assert_str_eq(tn_unary_name(TN_EXP), "exp");
  LEAK_CHECK();
}
END_TEST

/* The C library functions: each kernel gives exactly the C library's value
 * (every element, on the vector path and the scalar path), closed forms hold,
 * and outside the domain the result is NaN or an infinity as in C and NumPy. */
START_TEST(test_unary_libm) {
  static const struct { tn_unary_op op; double (*f)(double); } fns[] = {
    {TN_TAN, tan}, {TN_ATAN, atan}, {TN_ASIN, asin}, {TN_ACOS, acos}, {TN_SINH, sinh},
    {TN_COSH, cosh}, {TN_ERF, erf}, {TN_LOG1P, log1p}, {TN_EXPM1, expm1}};
  static const char *const names[] = {"tan", "atan", "asin", "acos", "sinh", "cosh", "erf", "log1p", "expm1"};
  double xs[] = {-1000, -3, -1.5, -1, -0.999, -0.5, -1e-12, -0.0, 0, 1e-300, 0.25, 0.5, 0.999, 1, 1.5, 3, 700, 1000,
                 INFINITY, -INFINITY, NAN};
  enum { NX = sizeof xs / sizeof xs[0] };
  blo_tensor *x = mkv(1, NX, 1, xs);
  for (size_t k = 0; k < sizeof fns / sizeof fns[0]; k++) {
    ck_assert_str_eq(tn_unary_name(fns[k].op), names[k]);
    blo_tensor *y = tn_unary(&C, fns[k].op, x);
    for (int i = 0; i < NX; i++) {
      double e = fns[k].f(xs[i]), g = y->data[i], s = tn_unary_scalar(fns[k].op, xs[i]);
      ck_assert_msg((isnan(e) && isnan(g) && isnan(s)) || (memcmp(&e, &g, sizeof e) == 0 && memcmp(&e, &s, sizeof e) == 0),
                    "%s(%g): %.17g, scalar %.17g, C library %.17g", names[k], xs[i], g, s, e);
    }
    R(y);
  }
  R(x);
  const double pi = 3.14159265358979323846;
  /* closed forms (to rounding) */
  ck_assert(fabs(tn_unary_scalar(TN_TAN, pi / 4) - 1) <= 2 * DBL_EPSILON);
  ck_assert(fabs(tn_unary_scalar(TN_TAN, pi / 3) - sqrt(3)) <= 4 * DBL_EPSILON);
  ck_assert(tn_unary_scalar(TN_ATAN, 1) == pi / 4 && tn_unary_scalar(TN_ATAN, INFINITY) == pi / 2);
  ck_assert(tn_unary_scalar(TN_ASIN, 1) == pi / 2 && tn_unary_scalar(TN_ASIN, -1) == -pi / 2);
  ck_assert(fabs(tn_unary_scalar(TN_ASIN, 0.5) - pi / 6) <= DBL_EPSILON);
  ck_assert(tn_unary_scalar(TN_ACOS, -1) == pi && tn_unary_scalar(TN_ACOS, 1) == 0);
  ck_assert(fabs(tn_unary_scalar(TN_ACOS, 0.5) - pi / 3) <= 2 * DBL_EPSILON);
  ck_assert(fabs(tn_unary_scalar(TN_SINH, log(2)) - 0.75) <= DBL_EPSILON);
  ck_assert(fabs(tn_unary_scalar(TN_COSH, log(2)) - 1.25) <= 2 * DBL_EPSILON);
  ck_assert(tn_unary_scalar(TN_ERF, 0) == 0 && tn_unary_scalar(TN_ERF, INFINITY) == 1 &&
            tn_unary_scalar(TN_ERF, -INFINITY) == -1);
  ck_assert(tn_unary_scalar(TN_ERF, -0.5) == -tn_unary_scalar(TN_ERF, 0.5)); /* odd */
  ck_assert(fabs(tn_unary_scalar(TN_LOG1P, exp(1) - 1) - 1) <= 2 * DBL_EPSILON);
  ck_assert(fabs(tn_unary_scalar(TN_EXPM1, log(2)) - 1) <= 2 * DBL_EPSILON);
  /* small arguments keep their digits (log(1 + x) and exp(x) - 1 would give 0) */
  ck_assert(tn_unary_scalar(TN_LOG1P, 1e-20) == 1e-20 && tn_unary_scalar(TN_EXPM1, 1e-20) == 1e-20);
  /* domain edges */
  ck_assert(isnan(tn_unary_scalar(TN_ASIN, 2)) && isnan(tn_unary_scalar(TN_ASIN, -1.0000001)));
  ck_assert(isnan(tn_unary_scalar(TN_ACOS, 2)) && isnan(tn_unary_scalar(TN_ACOS, -INFINITY)));
  ck_assert(tn_unary_scalar(TN_LOG1P, -1) == -INFINITY && isnan(tn_unary_scalar(TN_LOG1P, -2)));
  ck_assert(tn_unary_scalar(TN_EXPM1, -INFINITY) == -1 && tn_unary_scalar(TN_EXPM1, 1000) == INFINITY);
  ck_assert(tn_unary_scalar(TN_SINH, -1000) == -INFINITY && tn_unary_scalar(TN_COSH, -1000) == INFINITY);
  ck_assert(isnan(tn_unary_scalar(TN_TAN, INFINITY)));
  LEAK_CHECK();
}
END_TEST

START_TEST(test_atan2) {
  const double pi = 3.14159265358979323846;
  ck_assert_str_eq(tn_binary_name(TN_ATAN2), "atan2");
  ck_assert(tn_binary_scalar(TN_ATAN2, 1, -1) == 3 * pi / 4);
  ck_assert(tn_binary_scalar(TN_ATAN2, 1, 0) == pi / 2 && tn_binary_scalar(TN_ATAN2, -1, 0) == -pi / 2);
  ck_assert(tn_binary_scalar(TN_ATAN2, 0, -1) == pi && tn_binary_scalar(TN_ATAN2, -0.0, -1) == -pi);
  ck_assert(tn_binary_scalar(TN_ATAN2, 0, 0) == 0 && tn_binary_scalar(TN_ATAN2, 1, 1) == pi / 4);
  ck_assert(isnan(tn_binary_scalar(TN_ATAN2, NAN, 1)));
  /* broadcasting [3,1] with [4]: element (i, j) is atan2(a[i], b[j]), the C library's value */
  double av[] = {-2, 0.5, 3}, bv[] = {-1, 0, 0.25, 4};
  blo_tensor *a = tn_from(&C, 2, (size_t[]){3, 1}, av), *b = tn_from(&C, 1, (size_t[]){4}, bv);
  blo_tensor *o = tn_binary(&C, TN_ATAN2, a, b);
  ck_assert_ptr_nonnull(o);
  ck_assert_int_eq(o->rank, 2);
  ck_assert(o->shape[0] == 3 && o->shape[1] == 4);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 4; j++) ck_assert(o->data[i * 4 + j] == atan2(av[i], bv[j]));
  R(o);
  blo_tensor *c = tn_from(&C, 1, (size_t[]){3}, av);
  ck_assert_ptr_null(tn_binary(&C, TN_ATAN2, b, c));
  ck_assert_str_eq(C.err, "shape mismatch in 'atan2': [4] and [3]");
  R(c);
  R(a);
  R(b);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_binary_scalar_semantics) {
  ck_assert(tn_binary_scalar(TN_LT, 1, 2) == 1 && tn_binary_scalar(TN_LT, 2, 2) == 0);
  ck_assert(tn_binary_scalar(TN_LE, 2, 2) == 1 && tn_binary_scalar(TN_GT, 3, 2) == 1);
  ck_assert(tn_binary_scalar(TN_GE, 1, 2) == 0 && tn_binary_scalar(TN_EQ, 2, 2) == 1);
  ck_assert(tn_binary_scalar(TN_NE, 2, 2) == 0 && tn_binary_scalar(TN_NE, NAN, NAN) == 1);
  ck_assert(tn_binary_scalar(TN_AND, 2, -0.5) == 1 && tn_binary_scalar(TN_AND, 2, 0) == 0);
  ck_assert(tn_binary_scalar(TN_OR, 0, -3) == 1 && tn_binary_scalar(TN_OR, 0, 0) == 0);
  ck_assert(tn_binary_scalar(TN_POW, 2, 10) == 1024 && tn_binary_scalar(TN_POW, 4, 0.5) == 2);
  ck_assert(tn_binary_scalar(TN_MAX2, 1, 3) == 3 && tn_binary_scalar(TN_MIN2, 1, 3) == 1);
  ck_assert(isnan(tn_binary_scalar(TN_MAX2, NAN, 3)) && isnan(tn_binary_scalar(TN_MAX2, 3, NAN)));
  ck_assert(tn_binary_scalar(TN_DIV, 1, 4) == 0.25 && tn_binary_scalar(TN_SUB, 1, 4) == -3);
  ck_assert_str_eq(tn_binary_name(TN_ADD), "+");
  ck_assert_str_eq(tn_binary_name(TN_LE), "<=");
  LEAK_CHECK();
}
END_TEST

/* Naive broadcasting written with explicit multi-indices (independent of tensor.c). */
static blo_tensor *bcast_naive(tn_binary_op op, const blo_tensor *a, const blo_tensor *b) {
  int r = a->rank > b->rank ? a->rank : b->rank;
  size_t s[TN_MAX_RANK] = {1, 1, 1, 1, 1, 1};
  for (int i = 0; i < r; i++) {
    int ia = a->rank - r + i, ib = b->rank - r + i;
    size_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
    if (da != db && da != 1 && db != 1) return NULL;
    s[i] = da == 1 ? db : da;
  }
  blo_tensor *o = tn_new(&C, r, s);
  ck_assert_msg(o != NULL, "tn_new failed: %s", C.err);
  size_t idx[TN_MAX_RANK];
  for (size_t f = 0; f < o->size; f++) {
    size_t rem = f;
    for (int i = r - 1; i >= 0; i--) { idx[i] = rem % s[i]; rem /= s[i]; }
    size_t fa = 0, fb = 0;
    for (int i = 0; i < a->rank; i++) fa = fa * a->shape[i] + (a->shape[i] == 1 ? 0 : idx[r - a->rank + i]);
    for (int i = 0; i < b->rank; i++) fb = fb * b->shape[i] + (b->shape[i] == 1 ? 0 : idx[r - b->rank + i]);
    o->data[f] = tn_binary_scalar(op, a->data[fa], b->data[fb]);
  }
  return o;
}

START_TEST(test_broadcast_cases) {
  /* [3,1] + [4] -> [3,4] */
  blo_tensor *a = tn_from(&C, 2, (size_t[]){3, 1}, (double[]){1, 2, 3});
  blo_tensor *b = tn_from(&C, 1, (size_t[]){4}, (double[]){10, 20, 30, 40});
  blo_tensor *c = tn_binary(&C, TN_ADD, a, b);
  assert_shape(c, 2, 3, 4);
  assert_vals(c, 0, 11, 21, 31, 41, 12, 22, 32, 42, 13, 23, 33, 43);
  R(a); R(b); R(c);
  /* [2,1,3] * [4,1] -> [2,4,3] */
  a = rnd(3, 2, 1, 3, 1);
  b = rnd(2, 4, 1, 1, 1);
  c = tn_binary(&C, TN_MUL, a, b);
  assert_shape(c, 3, 2, 4, 3);
  for (size_t i = 0; i < 2; i++)
    for (size_t j = 0; j < 4; j++)
      for (size_t k = 0; k < 3; k++)
        ck_assert(c->data[(i * 4 + j) * 3 + k] == a->data[i * 3 + k] * b->data[j]);
  R(a); R(b); R(c);
  /* scalar (rank 0, [1], [1,1,1]) with rank 3, both orders */
  blo_tensor *x = rnd(3, 2, 3, 4, 1);
  blo_tensor *scal[3] = {tn_scalar(&C, 2.0), tn_from(&C, 1, (size_t[]){1}, (double[]){2.0}),
                         tn_from(&C, 3, (size_t[]){1, 1, 1}, (double[]){2.0})};
  for (int k = 0; k < 3; k++) {
    blo_tensor *p = tn_binary(&C, TN_SUB, x, scal[k]), *q = tn_binary(&C, TN_SUB, scal[k], x);
    assert_shape(p, 3, 2, 3, 4);
    assert_shape(q, 3, 2, 3, 4);
    for (size_t i = 0; i < x->size; i++) {
      ck_assert(p->data[i] == x->data[i] - 2.0);
      ck_assert(q->data[i] == 2.0 - x->data[i]);
    }
    R(p); R(q);
  }
  /* [1,1,1,1] with [3] -> [1,1,1,3] (scalar side of higher rank) */
  blo_tensor *s4 = tn_from(&C, 4, (size_t[]){1, 1, 1, 1}, (double[]){5});
  blo_tensor *v = tn_from(&C, 1, (size_t[]){3}, (double[]){1, 2, 3});
  c = tn_binary(&C, TN_GE, v, s4);
  assert_shape(c, 4, 1, 1, 1, 3);
  assert_vals(c, 0, 0, 0, 0);
  R(c); R(s4); R(v);
  /* rank 0 with rank 0 */
  c = tn_binary(&C, TN_POW, scal[0], scal[0]);
  ck_assert_int_eq(c->rank, 0);
  ck_assert(c->data[0] == 4.0);
  R(c);
  for (int k = 0; k < 3; k++) R(scal[k]);
  R(x);
  /* size-0 axes broadcast like any other size */
  a = mk(2, 0, 3, 1, 1);
  b = rnd(1, 3, 1, 1, 1);
  c = tn_binary(&C, TN_ADD, a, b);
  assert_shape(c, 2, 0, 3);
  R(a); R(b); R(c);
  /* mismatch */
  a = mk(2, 2, 3, 1, 1);
  b = mk(1, 4, 1, 1, 1);
  assert_err(tn_binary(&C, TN_ADD, a, b), "shape mismatch in '+': [2, 3] and [4]");
  assert_err(tn_binary(&C, TN_LT, b, a), "shape mismatch in '<': [4] and [2, 3]");
  int rr;
  size_t sh[4];
  ck_assert_int_eq(tn_broadcast_shape(&C, "f", a, b, &rr, sh), -1);
  ck_assert_str_eq(C.err, "shape mismatch in 'f': [2, 3] and [4]");
  R(a); R(b);
  LEAK_CHECK();
}
END_TEST

/* rank 0 to TN_MAX_RANK, sizes 1 to 3 */
static void rand_shape(int *rank, size_t s[TN_MAX_RANK]) {
  *rank = (int)(tn_rng_next(&G) % (TN_MAX_RANK + 1));
  for (int i = 0; i < TN_MAX_RANK; i++) s[i] = 1 + tn_rng_next(&G) % 3;
}

static blo_tensor *rndn(int rank, const size_t *s) {
  blo_tensor *t = tn_new(&C, rank, s);
  ck_assert_msg(t != NULL, "tn_new failed: %s", C.err);
  fill_rand(t, -1, 1);
  return t;
}

START_TEST(test_broadcast_random_vs_naive) {
  int checked = 0;
  for (int trial = 0; trial < 400; trial++) {
    int ra, rb;
    size_t sa[TN_MAX_RANK], sb[TN_MAX_RANK] = {1, 1, 1, 1, 1, 1};
    rand_shape(&ra, sa);
    /* b derives from a's trailing axes, with random 1s, so most pairs broadcast */
    rb = (int)(tn_rng_next(&G) % (TN_MAX_RANK + 1));
    for (int i = 0; i < rb; i++) {
      int ia = ra - rb + i;
      size_t d = ia >= 0 ? sa[ia] : 1 + tn_rng_next(&G) % 3;
      sb[i] = tn_rng_next(&G) % 3 == 0 ? 1 : d;
    }
    for (int i = 0; i < ra; i++) if (tn_rng_next(&G) % 4 == 0) sa[i] = 1;
    blo_tensor *a = rndn(ra, sa), *b = rndn(rb, sb);
    tn_binary_op op = (tn_binary_op)(tn_rng_next(&G) % TN_BINARY_COUNT);
    blo_tensor *want = bcast_naive(op, a, b);
    blo_tensor *got = tn_binary(&C, op, a, b);
    if (want) {
      checked++;
      assert_close(got, want, 0, 0);
      /* sum_to undoes broadcasting: sum_to(broadcast_to(a, s), a.shape) = a * (size ratio) */
      blo_tensor *bt = tn_broadcast_to(&C, a, want->rank, want->shape);
      assert_shape_(bt, want->rank, want->shape, __LINE__);
      blo_tensor *st = tn_sum_to(&C, bt, a->rank, a->shape);
      blo_tensor *sc = tn_affine(&C, a, (double)want->size / (double)a->size, 0);
      assert_close(st, sc, 1e-13, 1e-13);
      R(bt); R(st); R(sc);
    } else {
      ck_assert(got == NULL);
      ck_assert(strncmp(C.err, "shape mismatch in '", 19) == 0);
    }
    R(want); R(got); R(a); R(b);
  }
  ck_assert_int_gt(checked, 200);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_sum_to_broadcast_to) {
  blo_tensor *t = tn_from(&C, 2, (size_t[]){2, 3}, (double[]){1, 2, 3, 4, 5, 6});
  blo_tensor *r = tn_sum_to(&C, t, 1, (size_t[]){3});
  assert_shape(r, 1, 3);
  assert_vals(r, 0, 5, 7, 9);
  R(r);
  r = tn_sum_to(&C, t, 2, (size_t[]){2, 1});
  assert_shape(r, 2, 2, 1);
  assert_vals(r, 0, 6, 15);
  R(r);
  r = tn_sum_to(&C, t, 0, NULL);
  ck_assert_int_eq(r->rank, 0);
  assert_vals(r, 0, 21);
  R(r);
  r = tn_sum_to(&C, t, 3, (size_t[]){1, 1, 3}); /* a target of higher rank is not a reduction */
  ck_assert(r == NULL);
  assert_err(tn_sum_to(&C, t, 1, (size_t[]){4}), "sum_to: cannot sum [2, 3] down to [4]");
  r = tn_broadcast_to(&C, t, 3, (size_t[]){2, 2, 3});
  assert_shape(r, 3, 2, 2, 3);
  assert_vals(r, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6);
  R(r);
  assert_err(tn_broadcast_to(&C, t, 2, (size_t[]){3, 3}), "broadcast_to: cannot broadcast [2, 3] to [3, 3]");
  /* axpy and affine */
  blo_tensor *y = tn_zeros_like(&C, t);
  ck_assert_int_eq(tn_axpy_inplace(&C, 2.0, t, y), 0);
  ck_assert_int_eq(tn_axpy_inplace(&C, -1.0, t, y), 0);
  assert_close(y, t, 0, 0);
  blo_tensor *v = mk(1, 6, 1, 1, 1);
  ck_assert_int_eq(tn_axpy_inplace(&C, 1.0, v, y), -1);
  ck_assert_str_eq(C.err, "axpy: shape mismatch: [6] and [2, 3]");
  r = tn_affine(&C, t, 2, -1);
  assert_vals(r, 0, 1, 3, 5, 7, 9, 11);
  R(r); R(y); R(v); R(t);
  LEAK_CHECK();
}
END_TEST

/* ---------------------------------------------------------------------
 * products
 * --------------------------------------------------------------------- */

static void check_matmul(int ra, size_t a0, size_t a1, int rb, size_t b0, size_t b1) {
  blo_tensor *a = rnd(ra, a0, a1, 1, 1), *b = rnd(rb, b0, b1, 1, 1);
  blo_tensor *f = tn_matmul(&C, a, b), *r = tn_matmul_ref(&C, a, b);
  size_t k = ra == 2 ? a1 : a0;
  ck_assert_msg(f && r, "%s", C.err);
  assert_close(f, r, 1e-12, 1e-14 * (double)(k + 1));
  R(a); R(b); R(f); R(r);
}

/* tn_matmul_t (BLAS with transpose flags) vs tn_matmul_t_ref (plain loops)
 * and vs tn_matmul on materialized transposes; shapes are the stored ones */
static void check_matmul_t(int ra, size_t a0, size_t a1, int ta, int rb, size_t b0, size_t b1, int tb) {
  blo_tensor *a = rnd(ra, a0, a1, 1, 1), *b = rnd(rb, b0, b1, 1, 1);
  blo_tensor *f = tn_matmul_t(&C, a, ta, b, tb), *r = tn_matmul_t_ref(&C, a, ta, b, tb);
  blo_tensor *at = ta ? tn_transpose(&C, a) : tn_copy(&C, a), *bt = tb ? tn_transpose(&C, b) : tn_copy(&C, b);
  blo_tensor *m = tn_matmul(&C, at, bt);
  size_t k = ra == 2 ? (ta ? a0 : a1) : a0;
  ck_assert_msg(f && r && m, "%s", C.err);
  assert_close(f, r, 1e-12, 1e-14 * (double)(k + 1));
  assert_close(f, m, 1e-12, 1e-14 * (double)(k + 1));
  R(a); R(b); R(f); R(r); R(at); R(bt); R(m);
}

/* Batched products op(a) @ op(b) with a of rank ra and b of rank rb (2 or 3;
 * at least one 3): tn_matmul_t (BLAS) vs tn_matmul_t_ref (plain loops), and
 * each batch element vs the 2-D product of the slices (an independent
 * computation through the rank-2 kernel).  Shapes are the logical ones:
 * op(a) [B,m,k] or [m,k], op(b) [B,k,n] or [k,n]. */
static void check_bmm(int ra, int ta, int rb, int tb, size_t B, size_t m, size_t k, size_t n) {
  blo_tensor *a = ra == 3 ? (ta ? rnd(3, B, k, m, 1) : rnd(3, B, m, k, 1)) : (ta ? rnd(2, k, m, 1, 1) : rnd(2, m, k, 1, 1));
  blo_tensor *b = rb == 3 ? (tb ? rnd(3, B, n, k, 1) : rnd(3, B, k, n, 1)) : (tb ? rnd(2, n, k, 1, 1) : rnd(2, k, n, 1, 1));
  blo_tensor *f = tn_matmul_t(&C, a, ta, b, tb), *r = tn_matmul_t_ref(&C, a, ta, b, tb);
  ck_assert_msg(f && r, "%s", C.err);
  ck_assert_int_eq(f->rank, 3);
  ck_assert(f->shape[0] == B && f->shape[1] == m && f->shape[2] == n);
  assert_close(f, r, 1e-12, 1e-14 * (double)(k + 1));
  for (size_t bi = 0; bi < B; bi++) {
    blo_tensor *as = ra == 3 ? mk(2, a->shape[1], a->shape[2], 1, 1) : tn_copy(&C, a);
    blo_tensor *bs = rb == 3 ? mk(2, b->shape[1], b->shape[2], 1, 1) : tn_copy(&C, b);
    if (ra == 3) memcpy(as->data, a->data + bi * m * k, m * k * sizeof(double));
    if (rb == 3) memcpy(bs->data, b->data + bi * k * n, k * n * sizeof(double));
    blo_tensor *p = tn_matmul_t(&C, as, ta, bs, tb), *fs = mk(2, m, n, 1, 1);
    memcpy(fs->data, f->data + bi * m * n, m * n * sizeof(double));
    assert_close(fs, p, 1e-12, 1e-14 * (double)(k + 1));
    R(as); R(bs); R(p); R(fs);
  }
  R(a); R(b); R(f); R(r);
}

START_TEST(test_bmm) {
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      check_bmm(3, ta, 3, tb, 4, 3, 5, 2);   /* [B,n,k] @ [B,k,m] */
      check_bmm(2, ta, 3, tb, 4, 3, 5, 2);   /* [n,k] @ [B,k,m]: a broadcasts */
      check_bmm(3, ta, 2, tb, 4, 3, 5, 2);   /* [B,n,k] @ [k,m]: one dgemm when !ta */
      check_bmm(3, ta, 3, tb, 1, 3, 5, 2);   /* B = 1 */
      check_bmm(2, ta, 3, tb, 1, 6, 4, 3);
      check_bmm(3, ta, 2, tb, 1, 6, 4, 3);
      check_bmm(3, ta, 3, tb, 3, 37, 53, 29);
      check_bmm(3, ta, 2, tb, 5, 40, 33, 17);
      check_bmm(2, ta, 3, tb, 5, 40, 33, 17);
      check_bmm(3, ta, 3, tb, 2, 1, 7, 1);   /* 1 x 1 results */
    }
  /* a known product: stacking the 2-D products */
  blo_tensor *a = tn_from(&C, 3, (size_t[]){2, 1, 2}, (double[]){1, 2, 3, 4});
  blo_tensor *b = tn_from(&C, 3, (size_t[]){2, 2, 1}, (double[]){5, 6, 7, 8});
  blo_tensor *w = tn_from(&C, 2, (size_t[]){2, 1}, (double[]){5, 6});
  blo_tensor *p = tn_matmul(&C, a, b);
  assert_vals(p, 0, 17, 53);   /* [1*5+2*6], [3*7+4*8] */
  R(p);
  p = tn_matmul(&C, a, w);
  assert_vals(p, 0, 17, 39);   /* [1*5+2*6], [3*5+4*6] */
  R(p);
  /* errors name both shapes: inner sizes, batch sizes, ranks */
  blo_tensor *x = mk(3, 2, 3, 4, 1), *y = mk(3, 2, 5, 6, 1), *z = mk(3, 3, 4, 6, 1), *v = mk(1, 4, 1, 1, 1);
  blo_tensor *r4 = mk(4, 2, 2, 3, 4);
  assert_err(tn_matmul(&C, x, y), "shape mismatch in '@': [2, 3, 4] and [2, 5, 6]");
  assert_err(tn_matmul_ref(&C, x, y), "shape mismatch in '@': [2, 3, 4] and [2, 5, 6]");
  assert_err(tn_matmul(&C, x, z), "shape mismatch in '@': [2, 3, 4] and [3, 4, 6]");
  assert_err(tn_matmul_ref(&C, x, z), "shape mismatch in '@': [2, 3, 4] and [3, 4, 6]");
  assert_err(tn_matmul(&C, x, v), "shape mismatch in '@': [2, 3, 4] and [4]");
  assert_err(tn_matmul(&C, v, y), "shape mismatch in '@': [4] and [2, 5, 6]");
  assert_err(tn_matmul(&C, r4, x), "shape mismatch in '@': [2, 2, 3, 4] and [2, 3, 4]");
  assert_err(tn_matmul(&C, r4, r4), "matmul: operands must be vectors, matrices or batches of matrices (rank 3), got [2, 2, 3, 4] @ [2, 2, 3, 4]");
  assert_err(tn_matmul(&C, w, y), "shape mismatch in '@': [2, 1] and [2, 5, 6]");
  R(a); R(b); R(w); R(x); R(y); R(z); R(v); R(r4);
  /* empty dimensions: k = 0 gives zeros, B = 0 an empty result */
  a = mk(3, 2, 3, 0, 1);
  b = mk(2, 0, 4, 1, 1);
  p = tn_matmul(&C, a, b);
  ck_assert(p && p->rank == 3 && p->shape[0] == 2 && p->shape[1] == 3 && p->shape[2] == 4);
  ck_assert(maxabs(p) == 0);
  R(p); R(a); R(b);
  a = mk(3, 0, 3, 2, 1);
  b = mk(3, 0, 2, 4, 1);
  p = tn_matmul(&C, a, b);
  ck_assert(p && p->rank == 3 && p->size == 0);
  R(p); R(a); R(b);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_matmul_t_vs_ref) {
  check_matmul_t(2, 5, 3, 1, 2, 5, 4, 0);    /* [5,3]' @ [5,4] */
  check_matmul_t(2, 3, 5, 0, 2, 4, 5, 1);    /* [3,5] @ [4,5]' */
  check_matmul_t(2, 53, 37, 1, 2, 29, 53, 1); /* both */
  check_matmul_t(2, 70, 130, 1, 2, 70, 90, 0);
  check_matmul_t(2, 64, 33, 1, 1, 64, 1, 0); /* [64,33]' @ [64]: dgemv with CblasTrans */
  check_matmul_t(2, 2000, 50, 1, 1, 2000, 1, 0);
  check_matmul_t(1, 33, 1, 0, 2, 70, 33, 1); /* [33] @ [70,33]' */
  check_matmul_t(1, 5, 1, 1, 1, 5, 1, 1);    /* vectors: flags ignored */
  check_matmul_t(2, 1, 1, 1, 2, 1, 1, 1);
  /* flags off: the same as tn_matmul, bit for bit */
  blo_tensor *a = rnd(2, 37, 53, 1, 1), *b = rnd(2, 53, 29, 1, 1), *v = rnd(1, 53, 1, 1, 1);
  blo_tensor *p = tn_matmul_t(&C, a, 0, b, 0), *q = tn_matmul(&C, a, b);
  assert_close(p, q, 0, 0);
  R(p); R(q);
  /* shapes and errors use the transposed (logical) shapes */
  p = tn_matmul_t(&C, a, 1, a, 0);
  assert_shape(p, 2, 53, 53);
  R(p);
  assert_err(tn_matmul_t(&C, a, 1, v, 0), "matmul: shape mismatch: [53, 37] @ [53]");
  assert_err(tn_matmul_t_ref(&C, a, 1, v, 0), "matmul: shape mismatch: [53, 37] @ [53]");
  R(a); R(b); R(v);
  /* empty dimensions */
  a = mk(2, 0, 2, 1, 1);
  b = mk(2, 0, 3, 1, 1);
  p = tn_matmul_t(&C, a, 1, b, 0);  /* [2,0] @ [0,3] -> zeros */
  assert_shape(p, 2, 2, 3);
  ck_assert(maxabs(p) == 0);
  R(p); R(a); R(b);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_matmul_vs_ref) {
  check_matmul(2, 3, 5, 2, 5, 4);   /* [m,k]@[k,n] */
  check_matmul(2, 37, 53, 2, 53, 29);
  check_matmul(2, 130, 70, 2, 70, 90);
  check_matmul(2, 1, 1, 2, 1, 1);
  check_matmul(2, 3, 5, 1, 5, 1);   /* [m,k]@[k] */
  check_matmul(2, 64, 33, 1, 33, 1);
  check_matmul(1, 5, 1, 2, 5, 4);   /* [k]@[k,n] */
  check_matmul(1, 33, 1, 2, 33, 70);
  check_matmul(1, 5, 1, 1, 5, 1);   /* [k]@[k] */
  check_matmul(1, 1000, 1, 1, 1000, 1);
  /* shapes of each combination */
  blo_tensor *m = rnd(2, 3, 5, 1, 1), *v5 = rnd(1, 5, 1, 1, 1), *w = rnd(2, 5, 4, 1, 1), *v3 = rnd(1, 3, 1, 1, 1);
  blo_tensor *p;
  p = tn_matmul(&C, m, w); assert_shape(p, 2, 3, 4); R(p);
  p = tn_matmul(&C, m, v5); assert_shape(p, 1, 3); R(p);
  p = tn_matmul(&C, v5, w); assert_shape(p, 1, 4); R(p);
  p = tn_matmul(&C, v5, v5); ck_assert_int_eq(p->rank, 0); ck_assert(fabs(p->data[0] - tn_dot(v5, v5)) < 1e-14); R(p);
  p = tn_matmul(&C, v3, m); assert_shape(p, 1, 5); R(p);
  assert_err(tn_matmul(&C, m, v3), "matmul: shape mismatch: [3, 5] @ [3]");
  assert_err(tn_matmul_ref(&C, m, v3), "matmul: shape mismatch: [3, 5] @ [3]");
  blo_tensor *t3 = mk(3, 2, 3, 5, 1), *s = tn_scalar(&C, 1);
  assert_err(tn_matmul(&C, t3, v5), "shape mismatch in '@': [2, 3, 5] and [5]");
  assert_err(tn_matmul(&C, s, v5), "matmul: operands must be vectors, matrices or batches of matrices (rank 3), got [] @ [5]");
  R(m); R(v5); R(w); R(v3); R(t3); R(s);
  /* a known product */
  blo_tensor *a = tn_from(&C, 2, (size_t[]){2, 3}, (double[]){1, 2, 3, 4, 5, 6});
  blo_tensor *b = tn_from(&C, 2, (size_t[]){3, 2}, (double[]){7, 8, 9, 10, 11, 12});
  p = tn_matmul(&C, a, b);
  assert_vals(p, 0, 58, 64, 139, 154);
  R(p);
  assert_err(tn_matmul(&C, a, a), "matmul: shape mismatch: [2, 3] @ [2, 3]");
  R(a); R(b);
  /* empty dimensions: k = 0 gives zeros, m = 0 gives an empty result */
  a = mk(2, 2, 0, 1, 1);
  b = mk(2, 0, 3, 1, 1);
  p = tn_matmul(&C, a, b);
  assert_shape(p, 2, 2, 3);
  ck_assert(maxabs(p) == 0);
  R(p);
  blo_tensor *c34 = mk(2, 3, 4, 1, 1);
  p = tn_matmul(&C, b, c34);
  assert_shape(p, 2, 0, 4);
  R(p);
  R(a); R(b); R(c34);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_outer_transpose_dot) {
  blo_tensor *u = tn_from(&C, 1, (size_t[]){2}, (double[]){1, 2});
  blo_tensor *v = tn_from(&C, 1, (size_t[]){3}, (double[]){3, 4, 5});
  blo_tensor *o = tn_outer(&C, u, v);
  assert_shape(o, 2, 2, 3);
  assert_vals(o, 0, 3, 4, 5, 6, 8, 10);
  assert_err(tn_outer(&C, u, o), "outer: expected two vectors, got [2] and [2, 3]");
  blo_tensor *t = tn_transpose(&C, o);
  assert_shape(t, 2, 3, 2);
  assert_vals(t, 0, 3, 6, 4, 8, 5, 10);
  R(t);
  ck_assert(tn_dot(u, u) == 5);
  ck_assert(isnan(tn_dot(u, v)));
  R(u); R(v); R(o);
  /* large non-square rank 2 (crosses the tile size), transpose twice is identity */
  blo_tensor *a = rnd(2, 67, 45, 1, 1);
  t = tn_transpose(&C, a);
  for (size_t i = 0; i < 67; i++)
    for (size_t j = 0; j < 45; j++) ck_assert(t->data[j * 67 + i] == a->data[i * 45 + j]);
  blo_tensor *tt = tn_transpose(&C, t);
  assert_close(tt, a, 0, 0);
  R(a); R(t); R(tt);
  /* rank 3 and 4 reverse axes */
  a = rnd(3, 2, 3, 4, 1);
  t = tn_transpose(&C, a);
  assert_shape(t, 3, 4, 3, 2);
  for (size_t i = 0; i < 2; i++)
    for (size_t j = 0; j < 3; j++)
      for (size_t k = 0; k < 4; k++) ck_assert(t->data[(k * 3 + j) * 2 + i] == a->data[(i * 3 + j) * 4 + k]);
  R(a); R(t);
  a = rnd(4, 2, 3, 4, 5);
  t = tn_transpose(&C, a);
  assert_shape(t, 4, 5, 4, 3, 2);
  for (size_t i = 0; i < 2; i++)
    for (size_t j = 0; j < 3; j++)
      for (size_t k = 0; k < 4; k++)
        for (size_t l = 0; l < 5; l++)
          ck_assert(t->data[((l * 4 + k) * 3 + j) * 2 + i] == a->data[((i * 3 + j) * 4 + k) * 5 + l]);
  R(a); R(t);
  /* rank 0/1 copies */
  a = tn_scalar(&C, 3);
  t = tn_transpose(&C, a);
  ck_assert(t != a && t->rank == 0 && t->data[0] == 3);
  R(a); R(t);
  a = rnd(1, 4, 1, 1, 1);
  t = tn_transpose(&C, a);
  assert_close(t, a, 0, 0);
  R(a); R(t);
  LEAK_CHECK();
}
END_TEST

/* ---------------------------------------------------------------------
 * reductions, softmax
 * --------------------------------------------------------------------- */

static void check_reduce_all_ops(blo_tensor *a) {
  for (int op = TN_SUM; op <= TN_LOGSUMEXP; op++)
    for (int axis = -1; axis < a->rank; axis++) {
      blo_tensor *f = tn_reduce(&C, (tn_reduce_op)op, a, axis), *r = tn_reduce_ref(&C, (tn_reduce_op)op, a, axis);
      ck_assert_msg(f && r, "op %d axis %d: %s", op, axis, C.err);
      /* result shape: the axis removed */
      ck_assert_int_eq(f->rank, axis < 0 ? 0 : a->rank - 1);
      for (int i = 0, j = 0; axis >= 0 && i < a->rank; i++)
        if (i != axis) ck_assert_uint_eq(f->shape[j++], a->shape[i]);
      if (op == TN_ARGMAX || op == TN_ARGMIN) assert_close(f, r, 0, 0);
      else assert_close(f, r, 1e-12, 1e-13);
      R(f); R(r);
    }
}

START_TEST(test_reduce_vs_ref) {
  size_t shapes[][4] = {{7, 1, 1, 1}, {1, 1, 1, 1}, {5, 6, 1, 1}, {1, 9, 1, 1}, {3, 4, 5, 1},
                        {2, 1, 3, 1}, {2, 3, 4, 5}, {3, 1, 2, 4}, {1000, 1, 1, 1}, {40, 50, 1, 1}};
  int ranks[] = {1, 1, 2, 2, 3, 3, 4, 4, 1, 2};
  for (int k = 0; k < 10; k++) {
    blo_tensor *a = rnd(ranks[k], shapes[k][0], shapes[k][1], shapes[k][2], shapes[k][3]);
    check_reduce_all_ops(a);
    /* positive values keep PROD well scaled; ties exercise first-occurrence arg* */
    for (size_t i = 0; i < a->size; i++) a->data[i] = 0.5 + floor(4 * tn_rng_uniform(&G)) / 4;
    check_reduce_all_ops(a);
    R(a);
  }
  /* rank 0 input: only axis -1 */
  blo_tensor *s = tn_scalar(&C, -2);
  check_reduce_all_ops(s);
  assert_err(tn_reduce(&C, TN_SUM, s, 0), "sum: axis 0 out of range for a tensor of rank 0");
  R(s);
  /* NaN and infinities: both kernels agree and propagate */
  blo_tensor *n = tn_from(&C, 2, (size_t[]){3, 3}, (double[]){1, NAN, 2, -INFINITY, -INFINITY, -INFINITY, INFINITY, 1, 5});
  check_reduce_all_ops(n);
  blo_tensor *m = tn_reduce(&C, TN_LOGSUMEXP, n, 1);
  ck_assert(isnan(m->data[0]) && m->data[1] == -INFINITY && m->data[2] == INFINITY);
  R(m);
  m = tn_reduce(&C, TN_ARGMAX, n, 1);
  assert_vals(m, 0, 1, 0, 0);
  R(m); R(n);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_reduce_values) {
  blo_tensor *a = tn_from(&C, 2, (size_t[]){2, 3}, (double[]){1, 5, 3, 4, 2, 6});
  blo_tensor *r;
#define RV(op, ax, ...) r = tn_reduce(&C, op, a, ax); assert_vals(r, 1e-12, __VA_ARGS__); R(r); \
  r = tn_reduce_ref(&C, op, a, ax); assert_vals(r, 1e-12, __VA_ARGS__); R(r)
  RV(TN_SUM, -1, 21);
  RV(TN_SUM, 0, 5, 7, 9);
  RV(TN_SUM, 1, 9, 12);
  RV(TN_MEAN, 1, 3, 4);
  RV(TN_MAX, 0, 4, 5, 6);
  RV(TN_MIN, 1, 1, 2);
  RV(TN_PROD, -1, 720);
  RV(TN_NORM, 1, sqrt(35), sqrt(56));
  RV(TN_ARGMAX, -1, 5);
  RV(TN_ARGMIN, 0, 0, 1, 0);
  RV(TN_LOGSUMEXP, 0, log(exp(1) + exp(4)), log(exp(5) + exp(2)), log(exp(3) + exp(6)));
#undef RV
  R(a);
  /* first occurrence of ties */
  a = tn_from(&C, 1, (size_t[]){5}, (double[]){1, 3, 3, 0, 0});
  r = tn_reduce(&C, TN_ARGMAX, a, 0); assert_vals(r, 0, 1); R(r);
  r = tn_reduce(&C, TN_ARGMIN, a, -1); assert_vals(r, 0, 3); R(r);
  R(a);
  /* stability: logsumexp of large values, norm of huge and tiny values */
  a = tn_from(&C, 1, (size_t[]){3}, (double[]){1000, 1000, 1000});
  r = tn_reduce(&C, TN_LOGSUMEXP, a, -1); assert_vals(r, 1e-12, 1000 + log(3)); R(r);
  R(a);
  a = tn_from(&C, 2, (size_t[]){2, 2}, (double[]){3e200, 4e-200, 4e200, 3e-200});
  r = tn_reduce(&C, TN_NORM, a, 0);
  ck_assert(fabs(r->data[0] / 5e200 - 1) < 1e-14 && fabs(r->data[1] / 5e-200 - 1) < 1e-14);
  R(r);
  r = tn_reduce(&C, TN_NORM, a, -1);
  ck_assert(fabs(r->data[0] / 5e200 - 1) < 1e-14);
  R(r);
  R(a);
  /* empty tensors */
  a = mk(2, 0, 3, 1, 1);
  assert_err(tn_reduce(&C, TN_MEAN, a, -1), "mean of an empty tensor");
  assert_err(tn_reduce_ref(&C, TN_MAX, a, 0), "max along axis 0 of size 0 (shape [0, 3])");
  r = tn_reduce(&C, TN_SUM, a, 0); assert_shape(r, 1, 3); assert_vals(r, 0, 0, 0, 0); R(r);
  r = tn_reduce(&C, TN_PROD, a, -1); assert_vals(r, 0, 1); R(r);
  r = tn_reduce(&C, TN_MEAN, a, 1); assert_shape(r, 1, 0); R(r); /* nothing to average, nothing reported */
  assert_err(tn_reduce(&C, TN_SUM, a, 2), "sum: axis 2 out of range for a tensor of rank 2");
  R(a);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_unsqueeze_reduced) {
  blo_tensor *a = rnd(3, 2, 3, 4, 1);
  for (int axis = 0; axis < 3; axis++) {
    blo_tensor *m = tn_reduce(&C, TN_MAX, a, axis);
    blo_tensor *u = tn_unsqueeze_reduced(&C, m, a, axis);
    ck_assert_int_eq(u->rank, 3);
    for (int i = 0; i < 3; i++) ck_assert_uint_eq(u->shape[i], i == axis ? 1 : a->shape[i]);
    /* broadcasts back: a - max <= 0 everywhere with exact zeros at the max */
    blo_tensor *d = tn_binary(&C, TN_SUB, a, u);
    assert_shape(d, 3, 2, 3, 4);
    blo_tensor *dm = tn_reduce(&C, TN_MAX, d, axis);
    ck_assert(maxabs(dm) == 0);
    R(m); R(u); R(d); R(dm);
  }
  blo_tensor *s = tn_reduce(&C, TN_SUM, a, -1);
  blo_tensor *u = tn_unsqueeze_reduced(&C, s, a, -1);
  ck_assert(u == s && s->refcount == 2);
  R(u); R(s); R(a);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_softmax) {
  blo_tensor *a = rnd(3, 3, 4, 5, 1);
  for (int axis = -1; axis < 3; axis++) {
    blo_tensor *p = tn_softmax(&C, a, axis);
    blo_tensor *s = tn_reduce(&C, TN_SUM, p, axis);
    for (size_t i = 0; i < s->size; i++) ck_assert(fabs(s->data[i] - 1) < 1e-14);
    /* matches exp(x - logsumexp) */
    blo_tensor *l = tn_reduce(&C, TN_LOGSUMEXP, a, axis), *lu = tn_unsqueeze_reduced(&C, l, a, axis);
    blo_tensor *d = tn_binary(&C, TN_SUB, a, lu), *e = tn_unary(&C, TN_EXP, d);
    assert_close(p, e, 1e-13, 1e-15);
    R(p); R(s); R(l); R(lu); R(d); R(e);
  }
  R(a);
  /* stable at 1000: equals the softmax of the shifted input, no NaN */
  a = tn_from(&C, 1, (size_t[]){3}, (double[]){1000, 999, 998});
  blo_tensor *b = tn_from(&C, 1, (size_t[]){3}, (double[]){2, 1, 0});
  blo_tensor *p = tn_softmax(&C, a, 0), *q = tn_softmax(&C, b, 0);
  assert_close(p, q, 1e-15, 0);
  double z = 1 + exp(-1) + exp(-2);
  assert_vals(p, 1e-15, 1 / z, exp(-1) / z, exp(-2) / z);
  R(a); R(b); R(p); R(q);
  a = tn_from(&C, 1, (size_t[]){2}, (double[]){-1000, 1000});
  p = tn_softmax(&C, a, -1);
  assert_vals(p, 0, 0, 1);
  assert_err(tn_softmax(&C, a, 1), "softmax: axis 1 out of range for a tensor of rank 1");
  R(a); R(p);
  LEAK_CHECK();
}
END_TEST

/* ---------------------------------------------------------------------
 * shape, indexing
 * --------------------------------------------------------------------- */

START_TEST(test_reshape_concat_stack) {
  blo_tensor *a = tn_from(&C, 2, (size_t[]){2, 3}, (double[]){1, 2, 3, 4, 5, 6});
  blo_tensor *r = tn_reshape(&C, a, 3, (size_t[]){3, 1, 2});
  assert_shape(r, 3, 3, 1, 2);
  assert_vals(r, 0, 1, 2, 3, 4, 5, 6);
  R(r);
  assert_err(tn_reshape(&C, a, 1, (size_t[]){4}), "reshape: cannot reshape [2, 3] (6 elements) into [4]");
  r = tn_reshape(&C, a, 1, (size_t[]){6}); assert_shape(r, 1, 6); R(r);
  blo_tensor *one = tn_from(&C, 1, (size_t[]){1}, (double[]){7});
  r = tn_reshape(&C, one, 0, NULL); ck_assert_int_eq(r->rank, 0); ck_assert(r->data[0] == 7); R(r);
  /* concat */
  blo_tensor *b = tn_from(&C, 2, (size_t[]){2, 2}, (double[]){7, 8, 9, 10});
  blo_tensor *c = tn_from(&C, 2, (size_t[]){1, 3}, (double[]){-1, -2, -3});
  blo_tensor *ab[2] = {a, b}, *ac[2] = {a, c}, *aa[3] = {a, a, a};
  r = tn_concat(&C, ab, 2, 1);
  assert_shape(r, 2, 2, 5);
  assert_vals(r, 0, 1, 2, 3, 7, 8, 4, 5, 6, 9, 10);
  R(r);
  r = tn_concat(&C, ac, 2, 0);
  assert_shape(r, 2, 3, 3);
  assert_vals(r, 0, 1, 2, 3, 4, 5, 6, -1, -2, -3);
  R(r);
  assert_err(tn_concat(&C, ab, 2, 0), "concat: shape mismatch along axis 0: [2, 3] and [2, 2]");
  assert_err(tn_concat(&C, ab, 2, 2), "concat: axis 2 out of range for a tensor of rank 2");
  assert_err(tn_concat(&C, ab, 0, 0), "concat: no tensors to concatenate");
  /* stack */
  r = tn_stack(&C, aa, 3, 0);
  assert_shape(r, 3, 3, 2, 3);
  for (int k = 0; k < 3; k++) for (int i = 0; i < 6; i++) ck_assert(r->data[k * 6 + i] == a->data[i]);
  R(r);
  blo_tensor *ac2[2] = {a, a};
  ac2[1] = tn_affine(&C, a, 10, 0);
  r = tn_stack(&C, ac2, 2, 1);
  assert_shape(r, 3, 2, 2, 3);
  assert_vals(r, 0, 1, 2, 3, 10, 20, 30, 4, 5, 6, 40, 50, 60);
  R(r);
  r = tn_stack(&C, ac2, 2, 2);
  assert_shape(r, 3, 2, 3, 2);
  assert_vals(r, 0, 1, 10, 2, 20, 3, 30, 4, 40, 5, 50, 6, 60);
  R(r);
  R(ac2[1]);
  assert_err(tn_stack(&C, ab, 2, 0), "stack: shape mismatch: [2, 3] and [2, 2]");
  assert_err(tn_stack(&C, ab, 2, 3), "stack: axis 3 out of range for a result of rank 3");
  blo_tensor *s0[2] = {one, one};
  s0[0] = tn_scalar(&C, 1); s0[1] = tn_scalar(&C, 2);
  r = tn_stack(&C, s0, 2, 0); assert_shape(r, 1, 2); assert_vals(r, 0, 1, 2); R(r);
  R(s0[0]); R(s0[1]);
  R(a); R(b); R(c); R(one);
  LEAK_CHECK();
}
END_TEST

/* naive a[ix] on a rank-3 tensor with all entries normalised */
static blo_tensor *index_naive(const blo_tensor *a, const tn_index_t *ix) {
  size_t lo[3], hi[3], s[3];
  int r = 0;
  for (int i = 0; i < 3; i++) {
    lo[i] = (size_t)ix[i].start; hi[i] = (size_t)ix[i].stop;
    if (ix[i].kind != TN_IX_INDEX) s[r++] = hi[i] - lo[i];
  }
  blo_tensor *o = mk(r, r > 0 ? s[0] : 1, r > 1 ? s[1] : 1, r > 2 ? s[2] : 1, 1);
  size_t f = 0;
  for (size_t i = lo[0]; i < hi[0]; i++)
    for (size_t j = lo[1]; j < hi[1]; j++)
      for (size_t k = lo[2]; k < hi[2]; k++)
        o->data[f++] = a->data[(i * a->shape[1] + j) * a->shape[2] + k];
  return o;
}

START_TEST(test_index_check) {
  blo_tensor *a = mk(2, 3, 4, 1, 1);
  tn_index_t ix[2] = {{TN_IX_INDEX, -1, 0}, {TN_IX_SLICE, -3, 100}};
  ck_assert_int_eq(tn_index_check(&C, a, ix, 2), 0);
  ck_assert(ix[0].start == 2 && ix[0].stop == 3);
  ck_assert(ix[1].start == 1 && ix[1].stop == 4);
  ck_assert_int_eq(tn_index_check(&C, a, ix, 2), 0); /* idempotent */
  ck_assert(ix[0].start == 2 && ix[1].start == 1 && ix[1].stop == 4);
  tn_index_t s[2] = {{TN_IX_SLICE, -100, -1}, {TN_IX_SLICE, 3, 1}};
  ck_assert_int_eq(tn_index_check(&C, a, s, 2), 0);
  ck_assert(s[0].start == 0 && s[0].stop == 2);
  ck_assert(s[1].start == 3 && s[1].stop == 3); /* empty, not negative */
  tn_index_t all[1] = {{TN_IX_ALL, 9, 9}};
  ck_assert_int_eq(tn_index_check(&C, a, all, 1), 0);
  ck_assert(all[0].start == 0 && all[0].stop == 3);
  tn_index_t bad[1] = {{TN_IX_INDEX, 5, 0}};
  ck_assert_int_eq(tn_index_check(&C, a, bad, 1), -1);
  ck_assert_str_eq(C.err, "index 5 out of range for axis 0 of size 3");
  tn_index_t bad2[2] = {{TN_IX_ALL, 0, 0}, {TN_IX_INDEX, -5, 0}};
  ck_assert_int_eq(tn_index_check(&C, a, bad2, 2), -1);
  ck_assert_str_eq(C.err, "index -5 out of range for axis 1 of size 4");
  tn_index_t three[3] = {{TN_IX_ALL, 0, 0}, {TN_IX_ALL, 0, 0}, {TN_IX_ALL, 0, 0}};
  ck_assert_int_eq(tn_index_check(&C, a, three, 3), -1);
  ck_assert_str_eq(C.err, "too many indices: 3 for a tensor of rank 2");
  assert_err(tn_index(&C, a, three, 3), "too many indices: 3 for a tensor of rank 2");
  R(a);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_index_random) {
  blo_tensor *a = rnd(3, 4, 5, 6, 1);
  for (int trial = 0; trial < 300; trial++) {
    tn_index_t ix[3], norm[3];
    int nix = (int)(tn_rng_next(&G) % 4);
    for (int i = 0; i < 3; i++) {
      long d = (long)a->shape[i];
      ix[i].kind = (int)(tn_rng_next(&G) % 3);
      ix[i].start = (long)(tn_rng_next(&G) % (unsigned)(2 * d + 4)) - d - 2;
      ix[i].stop = (long)(tn_rng_next(&G) % (unsigned)(2 * d + 4)) - d - 2;
      if (ix[i].kind == TN_IX_INDEX) ix[i].start = (long)(tn_rng_next(&G) % (unsigned)(2 * d)) - d;
      if (i >= nix) ix[i].kind = TN_IX_ALL;
    }
    memcpy(norm, ix, sizeof ix);
    ck_assert_int_eq(tn_index_check(&C, a, norm, 3), 0);
    blo_tensor *want = index_naive(a, norm);
    blo_tensor *got = tn_index(&C, a, ix, nix); /* unnormalised, fewer entries */
    assert_close(got, want, 0, 0);
    /* index_add roundtrip: scattering the gathered values reproduces a on the region */
    blo_tensor *z = tn_zeros_like(&C, a);
    ck_assert_int_eq(tn_index_add(&C, z, ix, nix, got), 0);
    ck_assert_int_eq(tn_index_add(&C, z, norm, 3, got), 0);
    blo_tensor *back = tn_index(&C, z, ix, nix);
    blo_tensor *twice = tn_affine(&C, got, 2, 0);
    assert_close(back, twice, 0, 0);
    /* outside the region z stays zero: total mass matches */
    blo_tensor *s1 = tn_reduce(&C, TN_NORM, z, -1), *s2 = tn_reduce(&C, TN_NORM, twice, -1);
    assert_close(s1, s2, 1e-13, 0);
    /* index_set with a broadcast scalar, then read back */
    blo_tensor *w = tn_copy(&C, a), *seven = tn_scalar(&C, 7);
    ck_assert_int_eq(tn_index_set(&C, w, ix, nix, seven), 0);
    blo_tensor *rd = tn_index(&C, w, ix, nix);
    for (size_t i = 0; i < rd->size; i++) ck_assert(rd->data[i] == 7);
    R(want); R(got); R(z); R(back); R(twice); R(s1); R(s2); R(w); R(seven); R(rd);
  }
  R(a);
  LEAK_CHECK();
}
END_TEST

/* flat offset of multi-index idx in a contiguous tensor of shape s */
static size_t flat_of(int rank, const size_t *s, const size_t *idx) {
  size_t f = 0;
  for (int i = 0; i < rank; i++) f = f * s[i] + idx[i];
  return f;
}

/* multi-index of flat offset f */
static void unflat(int rank, const size_t *s, size_t f, size_t *idx) {
  for (int i = rank - 1; i >= 0; i--) { idx[i] = f % s[i]; f /= s[i]; }
}

/* Ranks 5 and 6 through every kernel with a fixed-size layout: creation,
 * reductions along each axis, transpose, reshape, indexing, concat/stack,
 * each against index arithmetic written here. */
START_TEST(test_rank5_6) {
  size_t s6[6] = {2, 3, 1, 2, 3, 2}, s5[5] = {3, 2, 4, 1, 2};
  blo_tensor *a = rndn(6, s6), *b = rndn(5, s5);
  ck_assert_int_eq(a->rank, 6);
  ck_assert_uint_eq(a->size, 72);
  char buf[160];
  ck_assert_str_eq(tn_shape_str(a, buf, sizeof buf), "[2, 3, 1, 2, 3, 2]");
  check_reduce_all_ops(a);
  check_reduce_all_ops(b);
  /* sum along each axis against a naive loop */
  for (int ax = 0; ax < 6; ax++) {
    blo_tensor *r = tn_reduce(&C, TN_SUM, a, ax);
    blo_tensor *w = tn_zeros(&C, 5, r->shape);
    size_t idx[6], ridx[5];
    for (size_t f = 0; f < a->size; f++) {
      unflat(6, s6, f, idx);
      for (int i = 0, j = 0; i < 6; i++) if (i != ax) ridx[j++] = idx[i];
      w->data[flat_of(5, r->shape, ridx)] += a->data[f];
    }
    assert_close(r, w, 1e-14, 1e-15);
    R(r); R(w);
  }
  /* transpose reverses all six axes */
  blo_tensor *t = tn_transpose(&C, a);
  ck_assert_str_eq(tn_shape_str(t, buf, sizeof buf), "[2, 3, 2, 1, 3, 2]");
  for (size_t f = 0; f < a->size; f++) {
    size_t idx[6], ridx[6];
    unflat(6, s6, f, idx);
    for (int i = 0; i < 6; i++) ridx[i] = idx[5 - i];
    ck_assert(t->data[flat_of(6, t->shape, ridx)] == a->data[f]);
  }
  R(t);
  /* reshape to rank 6 and back keeps the data */
  blo_tensor *v = tn_reshape(&C, a, 1, (size_t[]){72});
  blo_tensor *v6 = tn_reshape(&C, v, 6, (size_t[]){1, 2, 2, 3, 3, 2});
  ck_assert_int_eq(v6->rank, 6);
  for (size_t i = 0; i < 72; i++) ck_assert(v6->data[i] == a->data[i]);
  assert_err(tn_reshape(&C, v, 7, (size_t[]){1, 2, 2, 3, 3, 2, 1}), "reshape: rank 7 is not supported (maximum 6)");
  R(v); R(v6);
  /* a[1, :, 0, 1:2, -1] (an index and slices on the leading five axes) */
  tn_index_t ix[5] = {{TN_IX_INDEX, 1, 2}, {TN_IX_ALL, 0, 0}, {TN_IX_INDEX, 0, 1}, {TN_IX_SLICE, 1, 2},
                      {TN_IX_INDEX, -1, 0}};
  blo_tensor *g = tn_index(&C, a, ix, 5);
  ck_assert_str_eq(tn_shape_str(g, buf, sizeof buf), "[3, 1, 2]");
  for (size_t i = 0; i < 3; i++)
    for (size_t k = 0; k < 2; k++)
      ck_assert(g->data[i * 2 + k] == a->data[flat_of(6, s6, (size_t[]){1, i, 0, 1, 2, k})]);
  /* scattering back adds exactly there */
  blo_tensor *z = tn_zeros_like(&C, a);
  ck_assert_int_eq(tn_index_add(&C, z, ix, 5, g), 0);
  double tot = 0;
  for (size_t f = 0; f < z->size; f++) tot += fabs(z->data[f]);
  double want = 0;
  for (size_t f = 0; f < g->size; f++) want += fabs(g->data[f]);
  ck_assert(fabs(tot - want) <= 1e-14 * want);
  R(g); R(z);
  /* stack of two rank-5 tensors is rank 6; of rank-6 ones an error */
  blo_tensor *st = tn_stack(&C, (blo_tensor *[]){b, b}, 2, 5);
  ck_assert_str_eq(tn_shape_str(st, buf, sizeof buf), "[3, 2, 4, 1, 2, 2]");
  for (size_t f = 0; f < b->size; f++) ck_assert(st->data[2 * f] == b->data[f] && st->data[2 * f + 1] == b->data[f]);
  assert_err(tn_stack(&C, (blo_tensor *[]){a, a}, 2, 0), "stack: result rank 7 exceeds the maximum 6");
  blo_tensor *cc = tn_concat(&C, (blo_tensor *[]){a, a}, 2, 2);
  ck_assert_str_eq(tn_shape_str(cc, buf, sizeof buf), "[2, 3, 2, 2, 3, 2]");
  R(st); R(cc);
  /* a rank-5 operand broadcasts against a rank-6 one along its leading axis */
  blo_tensor *b5 = rndn(5, (size_t[]){3, 1, 2, 1, 2});
  blo_tensor *sum = tn_binary(&C, TN_ADD, a, b5), *nv = bcast_naive(TN_ADD, a, b5);
  assert_close(sum, nv, 0, 0);
  blo_tensor *back = tn_sum_to(&C, sum, 5, b5->shape);
  ck_assert_str_eq(tn_shape_str(back, buf, sizeof buf), "[3, 1, 2, 1, 2]");
  R(sum); R(nv); R(back); R(b5);
  R(a); R(b);
  LEAK_CHECK();
}
END_TEST

/* conv2d's three kernels (im2col + dgemm) against their reference loops at
 * shapes with non-square images, kh != kw, stride 2, padding 1 and 2; the
 * adjoints satisfy <F(x, w), g> = <x, BX(g, w)> = <w, BW(x, g)>. */
START_TEST(test_conv2d_vs_ref) {
  struct { size_t N, C, H, W, O, kh, kw, sh, sw, ph, pw; } cs[] = {
    {1, 1, 4, 4, 1, 2, 2, 1, 1, 0, 0}, {2, 3, 8, 8, 4, 3, 3, 1, 1, 0, 0}, {2, 3, 7, 9, 4, 3, 2, 2, 2, 1, 1},
    {3, 2, 5, 6, 3, 1, 3, 2, 1, 0, 2}, {1, 4, 6, 5, 2, 5, 5, 1, 2, 2, 1}, {2, 1, 9, 7, 5, 2, 4, 3, 2, 1, 0},
    {1, 2, 3, 3, 2, 3, 3, 2, 2, 1, 1}, {2, 6, 12, 10, 8, 5, 3, 1, 1, 2, 1}};
  for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
    tn_conv_opt o = {cs[k].sh, cs[k].sw, cs[k].ph, cs[k].pw};
    blo_tensor *x = rndn(4, (size_t[]){cs[k].N, cs[k].C, cs[k].H, cs[k].W});
    blo_tensor *w = rndn(4, (size_t[]){cs[k].O, cs[k].C, cs[k].kh, cs[k].kw});
    blo_tensor *y = tn_conv2d(&C, x, w, &o), *yr = tn_conv2d_ref(&C, x, w, &o);
    ck_assert_msg(y && yr, "case %zu: %s", k, C.err);
    size_t oh = (cs[k].H + 2 * cs[k].ph - cs[k].kh) / cs[k].sh + 1, ow = (cs[k].W + 2 * cs[k].pw - cs[k].kw) / cs[k].sw + 1;
    assert_shape_(y, 4, (size_t[]){cs[k].N, cs[k].O, oh, ow}, __LINE__);
    assert_close(y, yr, 1e-12, 1e-13);
    blo_tensor *g = rndn(4, y->shape);
    blo_tensor *dx = tn_conv2d_bx(&C, g, w, cs[k].H, cs[k].W, &o), *dxr = tn_conv2d_bx_ref(&C, g, w, cs[k].H, cs[k].W, &o);
    blo_tensor *dw = tn_conv2d_bw(&C, x, g, cs[k].kh, cs[k].kw, &o), *dwr = tn_conv2d_bw_ref(&C, x, g, cs[k].kh, cs[k].kw, &o);
    ck_assert_msg(dx && dxr && dw && dwr, "case %zu: %s", k, C.err);
    ck_assert(tn_same_shape(dx, x) && tn_same_shape(dw, w));
    assert_close(dx, dxr, 1e-12, 1e-13);
    assert_close(dw, dwr, 1e-12, 1e-13);
    double yg = tn_dot(yr, g), xdx = tn_dot(x, dxr), wdw = tn_dot(w, dwr);
    ck_assert_msg(fabs(yg - xdx) <= 1e-12 * (1 + fabs(yg)) && fabs(yg - wdw) <= 1e-12 * (1 + fabs(yg)),
                  "case %zu: adjoint identity %.17g %.17g %.17g", k, yg, xdx, wdw);
    R(x); R(w); R(y); R(yr); R(g); R(dx); R(dxr); R(dw); R(dwr);
  }
  /* errors name both shapes */
  blo_tensor *x = rndn(4, (size_t[]){2, 3, 8, 8}), *w = rndn(4, (size_t[]){4, 2, 3, 3}), *x3 = rndn(3, (size_t[]){3, 8, 8});
  blo_tensor *big = rndn(4, (size_t[]){4, 3, 9, 3});
  tn_conv_opt o = {1, 1, 0, 0}, o0 = {0, 1, 0, 0};
  assert_err(tn_conv2d(&C, x, w, &o), "conv2d: input [2, 3, 8, 8] has 3 channels, weight [4, 2, 3, 3] expects 2");
  assert_err(tn_conv2d_ref(&C, x, w, &o), "conv2d: input [2, 3, 8, 8] has 3 channels, weight [4, 2, 3, 3] expects 2");
  assert_err(tn_conv2d(&C, x3, w, &o), "conv2d: input must have shape [N, C, H, W], got [3, 8, 8]");
  assert_err(tn_conv2d(&C, x, x3, &o), "conv2d: weight must have shape [O, C, kh, kw], got [3, 8, 8] (input [2, 3, 8, 8])");
  assert_err(tn_conv2d(&C, x, big, &o), "conv2d: kernel of weight [4, 3, 9, 3] does not fit the input [2, 3, 8, 8] padded to 8x8");
  assert_err(tn_conv2d(&C, x, big, &o0), "conv2d: stride must be at least 1");
  R(x); R(w); R(x3); R(big);
  LEAK_CHECK();
}
END_TEST

/* pooling against loops written here; avgpool2d_bwd is avgpool2d's adjoint */
START_TEST(test_pool2d) {
  struct { size_t N, C, H, W, kh, kw, sh, sw; } cs[] = {
    {1, 1, 4, 4, 2, 2, 2, 2}, {2, 3, 7, 6, 3, 2, 2, 2}, {1, 2, 5, 9, 2, 3, 1, 3}, {3, 1, 6, 6, 3, 3, 3, 3}};
  for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
    tn_conv_opt o = {cs[k].sh, cs[k].sw, 0, 0};
    blo_tensor *x = rndn(4, (size_t[]){cs[k].N, cs[k].C, cs[k].H, cs[k].W}), *arg;
    blo_tensor *mx = tn_maxpool2d(&C, x, cs[k].kh, cs[k].kw, &o, &arg), *av = tn_avgpool2d(&C, x, cs[k].kh, cs[k].kw, &o);
    ck_assert_msg(mx && av && arg, "%s", C.err);
    size_t oh = (cs[k].H - cs[k].kh) / cs[k].sh + 1, ow = (cs[k].W - cs[k].kw) / cs[k].sw + 1;
    assert_shape_(mx, 4, (size_t[]){cs[k].N, cs[k].C, oh, ow}, __LINE__);
    for (size_t p = 0; p < cs[k].N * cs[k].C; p++)
      for (size_t u = 0; u < oh; u++)
        for (size_t v = 0; v < ow; v++) {
          double m = -INFINITY, s = 0;
          for (size_t i = 0; i < cs[k].kh; i++)
            for (size_t j = 0; j < cs[k].kw; j++) {
              double e = x->data[(p * cs[k].H + u * cs[k].sh + i) * cs[k].W + v * cs[k].sw + j];
              if (e > m) m = e;
              s += e;
            }
          size_t q = (p * oh + u) * ow + v;
          ck_assert(mx->data[q] == m && x->data[(size_t)arg->data[q]] == m);
          ck_assert(fabs(av->data[q] - s / (double)(cs[k].kh * cs[k].kw)) <= 1e-15);
        }
    blo_tensor *g = rndn(4, av->shape), *dx = tn_avgpool2d_bwd(&C, g, cs[k].kh, cs[k].kw, cs[k].H, cs[k].W, &o);
    ck_assert(dx && tn_same_shape(dx, x));
    double l = tn_dot(av, g), r = tn_dot(x, dx);
    ck_assert_msg(fabs(l - r) <= 1e-13 * (1 + fabs(l)), "%.17g vs %.17g", l, r);
    R(x); R(mx); R(av); R(arg); R(g); R(dx);
  }
  /* ties: the first maximum in row-major order */
  blo_tensor *t = tn_from(&C, 4, (size_t[]){1, 1, 2, 2}, (double[]){1, 3, 3, 2}), *arg;
  tn_conv_opt o2 = {2, 2, 0, 0};
  blo_tensor *m = tn_maxpool2d(&C, t, 2, 2, &o2, &arg);
  ck_assert(m->data[0] == 3 && arg->data[0] == 1);
  R(m); R(arg);
  assert_err(tn_maxpool2d(&C, t, 3, 2, &o2, NULL), "maxpool2d: window 3x2 is larger than the input [1, 1, 2, 2]");
  blo_tensor *v = rndn(2, (size_t[]){2, 2});
  assert_err(tn_avgpool2d(&C, v, 1, 1, &o2), "avgpool2d: input must have shape [N, C, H, W], got [2, 2]");
  R(t); R(v);
  LEAK_CHECK();
}
END_TEST

/* cross-entropy against -mean(sum(p * log(softmax(z)))) from the softmax kernel */
START_TEST(test_cross_entropy) {
  size_t sh[2] = {5, 4};
  blo_tensor *z = rndn(2, sh), *p = rndn(2, sh);
  for (size_t i = 0; i < z->size; i++) z->data[i] *= 30; /* wide logits: exp overflows without the shift */
  blo_tensor *s = tn_softmax(&C, z, 1);
  double want = 0;
  for (size_t i = 0; i < z->size; i++) want -= p->data[i] * log(s->data[i]) / 5.0;
  blo_tensor *l = tn_cross_entropy(&C, z, p);
  ck_assert_msg(fabs(l->data[0] - want) <= 1e-12 * fabs(want), "%.17g vs %.17g", l->data[0], want);
  R(l);
  /* logits of 1000: the naive exp overflows, the shifted form does not */
  for (size_t i = 0; i < z->size; i++) z->data[i] = 1000 + (double)(i % 4);
  l = tn_cross_entropy(&C, z, p);
  ck_assert(isfinite(l->data[0]));
  R(l);
  blo_tensor *v = rndn(1, (size_t[]){5});
  assert_err(tn_cross_entropy(&C, v, p),
             "cross_entropy: logits [5] and labels [5, 4]: want logits [N, K] and labels [N, K] or [N]");
  R(z); R(p); R(s); R(v);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_index_cases) {
  double v[12];
  for (int i = 0; i < 12; i++) v[i] = i;
  blo_tensor *a = tn_from(&C, 2, (size_t[]){3, 4}, v);
  tn_index_t row[1] = {{TN_IX_INDEX, 1, 0}};
  blo_tensor *r = tn_index(&C, a, row, 1);
  assert_shape(r, 1, 4);
  assert_vals(r, 0, 4, 5, 6, 7);
  R(r);
  tn_index_t el[2] = {{TN_IX_INDEX, -1, 0}, {TN_IX_INDEX, -2, 0}};
  r = tn_index(&C, a, el, 2);
  ck_assert_int_eq(r->rank, 0);
  assert_vals(r, 0, 10);
  R(r);
  tn_index_t col[2] = {{TN_IX_ALL, 0, 0}, {TN_IX_SLICE, 1, 3}};
  r = tn_index(&C, a, col, 2);
  assert_shape(r, 2, 3, 2);
  assert_vals(r, 0, 1, 2, 5, 6, 9, 10);
  /* index_set broadcasting a row vector over the region, index_add shape check */
  blo_tensor *rowv = tn_from(&C, 1, (size_t[]){2}, (double[]){-1, -2});
  ck_assert_int_eq(tn_index_set(&C, a, col, 2, rowv), 0);
  assert_vals(a, 0, 0, -1, -2, 3, 4, -1, -2, 7, 8, -1, -2, 11);
  ck_assert_int_eq(tn_index_add(&C, a, col, 2, rowv), -1);
  ck_assert_str_eq(C.err, "index_add: shape mismatch: source is [2], indexed region is [3, 2]");
  blo_tensor *bad = mk(1, 3, 1, 1, 1);
  ck_assert_int_eq(tn_index_set(&C, a, col, 2, bad), -1);
  ck_assert_str_eq(C.err, "index_set: cannot broadcast [3] to the indexed region [3, 2]");
  tn_index_t empty[1] = {{TN_IX_SLICE, 2, 2}};
  blo_tensor *e = tn_index(&C, a, empty, 1);
  assert_shape(e, 2, 0, 4);
  R(e); R(bad); R(rowv); R(r);
  tn_index_t oob[1] = {{TN_IX_INDEX, 3, 0}};
  assert_err(tn_index(&C, a, oob, 1), "index 3 out of range for axis 0 of size 3");
  R(a);
  /* rank 0 with no indices is a copy */
  a = tn_scalar(&C, 4);
  r = tn_index(&C, a, NULL, 0);
  ck_assert(r->rank == 0 && r->data[0] == 4);
  R(r); R(a);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_take) {
  blo_tensor *a = tn_from(&C, 2, (size_t[]){3, 2}, (double[]){1, 2, 3, 4, 5, 6});
  blo_tensor *idx = tn_from(&C, 1, (size_t[]){4}, (double[]){2, 0, -1, 0});
  blo_tensor *r = tn_take(&C, a, idx, 0);
  assert_shape(r, 2, 4, 2);
  assert_vals(r, 0, 5, 6, 1, 2, 5, 6, 1, 2);
  R(r);
  blo_tensor *ic = tn_from(&C, 1, (size_t[]){3}, (double[]){1, 1, 0});
  r = tn_take(&C, a, ic, 1);
  assert_shape(r, 2, 3, 3);
  assert_vals(r, 0, 2, 2, 1, 4, 4, 3, 6, 6, 5);
  R(r);
  /* take_add is the adjoint of take: <take(a), g> = <a, take_add(0, g)> */
  blo_tensor *b = rnd(3, 5, 3, 2, 1), *ib = tn_from(&C, 1, (size_t[]){6}, (double[]){4, 0, 4, 2, -5, 1});
  for (int axis = 0; axis < 3; axis++) {
    blo_tensor *ix = axis == 0 ? ib : ic;
    blo_tensor *t = tn_take(&C, b, ix, axis);
    ck_assert_msg(t != NULL, "%s", C.err);
    blo_tensor *g = rnd(t->rank, t->shape[0], t->shape[1], t->shape[2], 1);
    blo_tensor *z = tn_zeros_like(&C, b);
    ck_assert_int_eq(tn_take_add(&C, z, ix, axis, g), 0);
    ck_assert(fabs(tn_dot(t, g) - tn_dot(b, z)) < 1e-13);
    R(t); R(g); R(z);
  }
  R(b); R(ib);
  blo_tensor *frac = tn_from(&C, 1, (size_t[]){2}, (double[]){0, 1.5});
  assert_err(tn_take(&C, a, frac, 0), "take: index 1.5 is not an integer");
  blo_tensor *big = tn_from(&C, 1, (size_t[]){1}, (double[]){3});
  assert_err(tn_take(&C, a, big, 0), "index 3 out of range for axis 0 of size 3");
  blo_tensor *nan = tn_from(&C, 1, (size_t[]){1}, (double[]){NAN});
  assert_err(tn_take(&C, a, nan, 0), "take: index nan is not an integer");
  blo_tensor *m = mk(2, 1, 1, 1, 1);
  assert_err(tn_take(&C, a, m, 0), "take: index must be a vector, got [1, 1]");
  assert_err(tn_take(&C, a, idx, 2), "take: axis 2 out of range for a tensor of rank 2");
  blo_tensor *z = tn_zeros_like(&C, a);
  ck_assert_int_eq(tn_take_add(&C, z, idx, 0, a), -1);
  ck_assert_str_eq(C.err, "take_add: shape mismatch: source is [3, 2], expected [4, 2]");
  ck_assert(maxabs(z) == 0);
  R(z); R(a); R(idx); R(ic); R(frac); R(big); R(nan); R(m);
  LEAK_CHECK();
}
END_TEST

/* ---------------------------------------------------------------------
 * random numbers
 * --------------------------------------------------------------------- */

START_TEST(test_rng_fixed_values) {
  tn_rng r;
  /* splitmix64's published first output for seed 0 */
  tn_rng_seed(&r, 0);
  ck_assert(r.s[0] == 0xe220a8397b1dcdafULL);
  /* Values computed once (and cross-checked against an independent Python
   * implementation of splitmix64 + xoshiro256** + the polar method); they must
   * never change on any machine. */
  tn_rng_seed(&r, 42);
  ck_assert(tn_rng_next(&r) == 1546998764402558742ULL);
  ck_assert(tn_rng_next(&r) == 6990951692964543102ULL);
  ck_assert(tn_rng_next(&r) == 12544586762248559009ULL);
  tn_rng_seed(&r, 42);
  ck_assert(tn_rng_uniform(&r) == 0x1.5780b2e0c2ecp-4);
  tn_rng_seed(&r, 42);
  ck_assert(tn_rng_normal(&r) == -0x1.73d2feb0fb377p-1);
  ck_assert(r.has_spare);
  ck_assert(tn_rng_normal(&r) == -0x1.b088028693f9cp-3); /* the cached spare */
  ck_assert(!r.has_spare);
  ck_assert(tn_rng_normal(&r) == 0x1.c5e21f7812a4cp-3);
  /* reseeding drops the spare */
  tn_rng_seed(&r, 42);
  ck_assert(!r.has_spare);
  ck_assert(tn_rng_normal(&r) == -0x1.73d2feb0fb377p-1);
  /* different seeds differ */
  tn_rng r2;
  tn_rng_seed(&r2, 43);
  tn_rng_seed(&r, 42);
  ck_assert(tn_rng_next(&r) != tn_rng_next(&r2));
  LEAK_CHECK();
}
END_TEST

START_TEST(test_rng_moments) {
  tn_rng r;
  tn_rng_seed(&r, 12345);
  enum { N = 100000 };
  double s = 0, ss = 0, us = 0, umin = 1, umax = 0;
  for (int i = 0; i < N; i++) {
    double x = tn_rng_normal(&r);
    s += x;
    ss += x * x;
  }
  for (int i = 0; i < N; i++) {
    double u = tn_rng_uniform(&r);
    us += u;
    if (u < umin) umin = u;
    if (u > umax) umax = u;
  }
  double mean = s / N, var = ss / N - mean * mean, umean = us / N;
  /* 5 standard errors (two-sided p < 6e-7): SE(mean) = 1/sqrt(N) = 0.00316,
   * SE(var) = sqrt(2/N) = 0.00447 for a normal, SE(uniform mean) = sqrt(1/12/N) = 0.000913 */
  ck_assert_msg(fabs(mean) < 5 * 0.00316, "normal mean %g", mean);
  ck_assert_msg(fabs(var - 1) < 5 * 0.00447, "normal variance %g", var);
  ck_assert_msg(fabs(umean - 0.5) < 5 * 0.000913, "uniform mean %g", umean);
  ck_assert(umin >= 0 && umax < 1);
  LEAK_CHECK();
}
END_TEST

/* ---------------------------------------------------------------------
 * linear algebra
 * --------------------------------------------------------------------- */

/* well-conditioned: random plus n on the diagonal */
static blo_tensor *rand_wellcond(size_t n) {
  blo_tensor *a = rnd(2, n, n, 1, 1);
  for (size_t i = 0; i < n; i++) a->data[i * n + i] += (double)n;
  return a;
}

static blo_tensor *eye(size_t n) {
  blo_tensor *e = mk(2, n, n, 1, 1);
  memset(e->data, 0, n * n * sizeof(double));
  for (size_t i = 0; i < n; i++) e->data[i * n + i] = 1;
  return e;
}

static double fro(const blo_tensor *t) {
  blo_tensor *n = tn_reduce(&C, TN_NORM, t, -1);
  double v = n->data[0];
  R(n);
  return v;
}

/* ||x - y||_F <= tol ||y||_F */
static void assert_rel_(const blo_tensor *x, const blo_tensor *y, double tol, int line) {
  ck_assert_msg(x && y, "line %d: NULL (%s)", line, C.err);
  blo_tensor *d = tn_binary(&C, TN_SUB, x, y);
  ck_assert_msg(tn_same_shape(x, y), "line %d: shapes differ", line);
  double e = fro(d), s = fro(y);
  ck_assert_msg(e <= tol * (s > 0 ? s : 1), "line %d: relative error %g", line, e / (s > 0 ? s : 1));
  R(d);
}
#define assert_rel(x, y, tol) assert_rel_((x), (y), (tol), __LINE__)

START_TEST(test_linsolve_inv_det) {
  for (size_t n = 1; n <= 40; n += 13) {
    blo_tensor *Am = rand_wellcond(n), *b = rnd(1, n, 1, 1, 1), *B = rnd(2, n, 3, 1, 1);
    blo_tensor *x = tn_linsolve(&C, Am, b), *Ax = tn_matmul(&C, Am, x);
    assert_rel(Ax, b, 1e-12);
    blo_tensor *X = tn_linsolve(&C, Am, B), *AX = tn_matmul(&C, Am, X);
    assert_shape(X, 2, n, 3);
    assert_rel(AX, B, 1e-12);
    blo_tensor *Ai = tn_inv(&C, Am), *AiA = tn_matmul(&C, Ai, Am), *I = eye(n);
    assert_rel(AiA, I, 1e-12);
    /* det(A) = prod(eig) is hard to check generally; det(A) det(A^-1) = 1 is */
    double d1, d2;
    ck_assert_int_eq(tn_det(&C, Am, &d1), 0);
    ck_assert_int_eq(tn_det(&C, Ai, &d2), 0);
    ck_assert_msg(fabs(d1 * d2 - 1) < 1e-10, "det product %g", d1 * d2);
    R(Am); R(b); R(B); R(x); R(Ax); R(X); R(AX); R(Ai); R(AiA); R(I);
  }
  double d;
  blo_tensor *K = tn_from(&C, 2, (size_t[]){3, 3}, (double[]){6, 1, 1, 4, -2, 5, 2, 8, 7});
  ck_assert_int_eq(tn_det(&C, K, &d), 0);
  ck_assert_msg(fabs(d - (-306)) < 1e-12, "det %g", d);
  R(K);
  K = tn_from(&C, 2, (size_t[]){2, 2}, (double[]){0, 1, 1, 0}); /* needs a pivot: sign flips */
  ck_assert_int_eq(tn_det(&C, K, &d), 0);
  ck_assert(d == -1);
  blo_tensor *Ki = tn_inv(&C, K);
  assert_vals(Ki, 0, 0, 1, 1, 0);
  R(Ki); R(K);
  /* singular */
  blo_tensor *S = tn_from(&C, 2, (size_t[]){3, 3}, (double[]){1, 2, 3, 2, 4, 6, 1, 0, 1});
  blo_tensor *b3 = tn_from(&C, 1, (size_t[]){3}, (double[]){1, 2, 3}), *b4 = mk(1, 4, 1, 1, 1);
  assert_err(tn_linsolve(&C, S, b3), "linsolve: matrix is singular");
  assert_err(tn_inv(&C, S), "inv: matrix is singular");
  ck_assert_int_eq(tn_det(&C, S, &d), 0);
  ck_assert(d == 0);
  assert_err(tn_linsolve(&C, S, b4), "linsolve: shape mismatch: A is [3, 3], b is [4]");
  blo_tensor *R23 = mk(2, 2, 3, 1, 1);
  assert_err(tn_inv(&C, R23), "inv: matrix must be square, got [2, 3]");
  assert_err(tn_linsolve(&C, R23, b3), "linsolve: matrix must be square, got [2, 3]");
  ck_assert_int_eq(tn_det(&C, b3, &d), -1);
  ck_assert_str_eq(C.err, "det: matrix must be square, got [3]");
  /* NaN input is reported, not printed */
  blo_tensor *Nn = tn_from(&C, 2, (size_t[]){2, 2}, (double[]){1, NAN, 0, 1});
  assert_err(tn_inv(&C, Nn), "inv: input contains NaN");
  /* 0x0 systems */
  blo_tensor *E = mk(2, 0, 0, 1, 1), *e0 = mk(1, 0, 1, 1, 1);
  blo_tensor *x0 = tn_linsolve(&C, E, e0);
  assert_shape(x0, 1, 0);
  ck_assert_int_eq(tn_det(&C, E, &d), 0);
  ck_assert(d == 1);
  R(x0); R(E); R(e0); R(Nn);
  R(S); R(b3); R(b4); R(R23);
  LEAK_CHECK();
}
END_TEST

START_TEST(test_chol_eigh) {
  size_t n = 6;
  blo_tensor *Bm = rnd(2, n, n, 1, 1), *Bt = tn_transpose(&C, Bm), *BBt = tn_matmul(&C, Bm, Bt);
  blo_tensor *I = eye(n), *Am = tn_binary(&C, TN_ADD, BBt, I); /* SPD */
  blo_tensor *L = tn_chol(&C, Am);
  ck_assert_msg(L != NULL, "%s", C.err);
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++) ck_assert(L->data[i * n + j] == 0);
  blo_tensor *Lt = tn_transpose(&C, L), *LLt = tn_matmul(&C, L, Lt);
  assert_rel(LLt, Am, 1e-14);
  /* eigh: A = V diag(e) V', V'V = I, ascending */
  blo_tensor *e, *V;
  ck_assert_int_eq(tn_eigh(&C, Am, &e, &V), 0);
  assert_shape(e, 1, n);
  assert_shape(V, 2, n, n);
  for (size_t i = 1; i < n; i++) ck_assert(e->data[i - 1] <= e->data[i]);
  ck_assert(e->data[0] >= 1 - 1e-12); /* B B' + I */
  blo_tensor *Ve = tn_binary(&C, TN_MUL, V, e); /* scales column j by e[j] */
  blo_tensor *Vt = tn_transpose(&C, V), *rec = tn_matmul(&C, Ve, Vt), *VtV = tn_matmul(&C, Vt, V);
  assert_rel(rec, Am, 1e-13);
  assert_rel(VtV, I, 1e-13);
  R(e); R(V); R(Ve); R(Vt); R(rec); R(VtV);
  blo_tensor *K = tn_from(&C, 2, (size_t[]){2, 2}, (double[]){2, 1, 1, 2});
  ck_assert_int_eq(tn_eigh(&C, K, &e, &V), 0);
  assert_vals(e, 1e-14, 1, 3);
  /* eigenvector of 3 is (1,1)/sqrt(2) up to sign */
  ck_assert(fabs(fabs(V->data[1]) - sqrt(0.5)) < 1e-14 && fabs(V->data[1] - V->data[3]) < 1e-14);
  R(e); R(V);
  /* not positive definite */
  blo_tensor *N = tn_from(&C, 2, (size_t[]){2, 2}, (double[]){1, 2, 2, 1});
  assert_err(tn_chol(&C, N), "chol: matrix is not positive definite");
  blo_tensor *R23 = mk(2, 2, 3, 1, 1);
  assert_err(tn_chol(&C, R23), "chol: matrix must be square, got [2, 3]");
  ck_assert_int_eq(tn_eigh(&C, R23, &e, &V), -1);
  ck_assert(e == NULL && V == NULL);
  ck_assert_str_eq(C.err, "eigh: matrix must be square, got [2, 3]");
  R(N); R(R23); R(K);
  R(Bm); R(Bt); R(BBt); R(I); R(Am); R(L); R(Lt); R(LLt);
  LEAK_CHECK();
}
END_TEST

/* Moore-Penrose: A P A = A, P A P = P, (A P)' = A P, (P A)' = P A */
static void check_penrose(const blo_tensor *Am, const blo_tensor *P, double tol) {
  blo_tensor *AP = tn_matmul(&C, Am, P), *PA = tn_matmul(&C, P, Am);
  blo_tensor *APA = tn_matmul(&C, AP, Am), *PAP = tn_matmul(&C, PA, P);
  blo_tensor *APt = tn_transpose(&C, AP), *PAt = tn_transpose(&C, PA);
  assert_rel(APA, Am, tol);
  assert_rel(PAP, P, tol);
  assert_rel(APt, AP, tol);
  assert_rel(PAt, PA, tol);
  R(AP); R(PA); R(APA); R(PAP); R(APt); R(PAt);
}

START_TEST(test_pinv_lstsq) {
  /* rank 2 matrix [5,4] = u v' + w z' */
  blo_tensor *u = rnd(1, 5, 1, 1, 1), *v = rnd(1, 4, 1, 1, 1), *w = rnd(1, 5, 1, 1, 1), *z = rnd(1, 4, 1, 1, 1);
  blo_tensor *o1 = tn_outer(&C, u, v), *o2 = tn_outer(&C, w, z), *Am = tn_binary(&C, TN_ADD, o1, o2);
  blo_tensor *P = tn_pinv(&C, Am);
  assert_shape(P, 2, 4, 5);
  check_penrose(Am, P, 1e-12);
  /* the wide transpose too */
  blo_tensor *At = tn_transpose(&C, Am), *Pt = tn_pinv(&C, At);
  assert_shape(Pt, 2, 5, 4);
  check_penrose(At, Pt, 1e-12);
  /* lstsq of a rank-deficient system is the minimum-norm solution pinv(A) b */
  blo_tensor *b = rnd(1, 5, 1, 1, 1), *x = tn_lstsq(&C, Am, b), *Pb = tn_matmul(&C, P, b);
  assert_shape(x, 1, 4);
  assert_rel(x, Pb, 1e-10);
  R(x); R(Pb);
  /* full-rank square: pinv = inv */
  blo_tensor *S = rand_wellcond(5), *Si = tn_inv(&C, S), *Sp = tn_pinv(&C, S);
  assert_rel(Sp, Si, 1e-12);
  R(S); R(Si); R(Sp);
  /* overdetermined full rank: residual orthogonal to the columns, A'(A x - b) = 0 */
  blo_tensor *F = rnd(2, 8, 3, 1, 1), *B = rnd(2, 8, 2, 1, 1), *X = tn_lstsq(&C, F, B);
  assert_shape(X, 2, 3, 2);
  blo_tensor *FX = tn_matmul(&C, F, X), *res = tn_binary(&C, TN_SUB, FX, B), *Ft = tn_transpose(&C, F);
  blo_tensor *g = tn_matmul(&C, Ft, res);
  ck_assert_msg(maxabs(g) < 1e-13, "normal equations residual %g", maxabs(g));
  R(F); R(B); R(X); R(FX); R(res); R(Ft); R(g);
  blo_tensor *b4 = mk(1, 4, 1, 1, 1);
  assert_err(tn_lstsq(&C, Am, b4), "lstsq: shape mismatch: A is [5, 4], b is [4]");
  assert_err(tn_pinv(&C, b4), "pinv: expected a matrix, got [4]");
  /* empty and zero matrices */
  blo_tensor *E = mk(2, 0, 3, 1, 1), *Ep = tn_pinv(&C, E);
  assert_shape(Ep, 2, 3, 0);
  blo_tensor *Z = tn_zeros(&C, 2, (size_t[]){2, 3}), *Zp = tn_pinv(&C, Z);
  assert_shape(Zp, 2, 3, 2);
  ck_assert(maxabs(Zp) == 0);
  R(E); R(Ep); R(Z); R(Zp); R(b4);
  R(u); R(v); R(w); R(z); R(o1); R(o2); R(Am); R(P); R(At); R(Pt); R(b);
  LEAK_CHECK();
}
END_TEST

/* ---------------------------------------------------------------------
 * runner
 * --------------------------------------------------------------------- */

static TCase *tc(Suite *s, const char *name) {
  TCase *t = tcase_create(name);
  tcase_add_checked_fixture(t, setup, teardown);
  tcase_set_timeout(t, 60);
  suite_add_tcase(s, t);
  return t;
}

static Suite *tensor_suite(void) {
  Suite *s = suite_create("tensor");
  TCase *t = tc(s, "lifetime");
  tcase_add_test(t, test_shape_str);
  tcase_add_test(t, test_lifetime);
  tcase_add_test(t, test_pool_steady_state);
  tcase_add_test(t, test_mem_live_peak);
  tcase_add_test(t, test_mem_cap);
  tcase_add_test(t, test_default_allocator);
  tcase_add_test(t, test_alloc_failure_paths);
  t = tc(s, "elementwise");
  tcase_add_test(t, test_unary_values);
  tcase_add_test(t, test_unary_libm);
  tcase_add_test(t, test_atan2);
  tcase_add_test(t, test_binary_scalar_semantics);
  tcase_add_test(t, test_broadcast_cases);
  tcase_add_test(t, test_broadcast_random_vs_naive);
  tcase_add_test(t, test_sum_to_broadcast_to);
  t = tc(s, "products");
  tcase_add_test(t, test_matmul_vs_ref);
  tcase_add_test(t, test_matmul_t_vs_ref);
  tcase_add_test(t, test_bmm);
  tcase_add_test(t, test_outer_transpose_dot);
  t = tc(s, "reductions");
  tcase_add_test(t, test_reduce_vs_ref);
  tcase_add_test(t, test_reduce_values);
  tcase_add_test(t, test_unsqueeze_reduced);
  tcase_add_test(t, test_softmax);
  t = tc(s, "shape");
  tcase_add_test(t, test_reshape_concat_stack);
  tcase_add_test(t, test_index_check);
  tcase_add_test(t, test_index_random);
  tcase_add_test(t, test_index_cases);
  tcase_add_test(t, test_rank5_6);
  t = tc(s, "networks");
  tcase_add_test(t, test_conv2d_vs_ref);
  tcase_add_test(t, test_pool2d);
  tcase_add_test(t, test_cross_entropy);
  tcase_add_test(t, test_take);
  t = tc(s, "rng");
  tcase_add_test(t, test_rng_fixed_values);
  tcase_add_test(t, test_rng_moments);
  t = tc(s, "linalg");
  tcase_add_test(t, test_linsolve_inv_det);
  tcase_add_test(t, test_chol_eigh);
  tcase_add_test(t, test_pinv_lstsq);
  return s;
}

int main(void) {
  tn_rng_seed(&G, 20240601);
  return check_run(tensor_suite(), "test_tensor", CK_FORK);
}
