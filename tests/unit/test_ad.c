/* test_ad.c: unit tests for runtime/ad.c (automatic differentiation).
 *
 * For every operation (and several shapes/axes of each) the harness builds the
 * scalar E = sum(w * op(inputs)) with fixed random weights w and checks
 *  (1) reverse gradient vs central finite differences (five-point stencil,
 *      h = 1e-5 scaled by max(1, |x|); rel <= 1e-6);
 *  (2) forward JVP along a random v vs <grad, v> (rel <= 1e-10) and vs the FD
 *      directional derivative (rel <= 1e-6);
 *  (3) forward-over-reverse: tangent v on all inputs; the adjoint tangents equal
 *      the FD of the gradient along v (rel <= 1e-6);
 *  (4) mixed products: tangent on one input only; the adjoint tangents of every
 *      input (including the others) equal the FD of their gradients (rel <= 1e-6).
 * Every test runs on a counting allocator and asserts that nothing is left
 * allocated after tn_ctx_free.  Then come the worked examples, conventions
 * (max ties, prod with zeros, norm at 0, pow), error paths, fault injection
 * and the steady-state no-allocation test.
 *
 * Conventions tested (see ad.c): max/min reductions share the adjoint equally
 * among ties; max2/min2 give ties to a; prod's derivative is exact with zeros;
 * norm's gradient at 0 is 0; pow's exponent derivative is only formed when the
 * exponent is differentiated.
 */
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ad.h"

#define MAXIN 4
#define TOL_FD 1e-6
#define TOL_EXACT 1e-10
#define H 1e-5

/* ------------------------------------------------------------------------ */
/* counting allocator (leak check) with optional failure injection          */

typedef struct {
  long long live; /* bytes currently allocated */
  long calls;     /* successful allocating calls */
  long fail_at;   /* fail allocating calls once calls reaches this (-1: never) */
  int burst;      /* > 0: fail only that many calls, then succeed again */
} alloc_state;

static void *count_realloc(void *ud, void *p, size_t old, size_t nw) {
  alloc_state *s = ud;
  if (nw == 0) {
    if (p) s->live -= (long long)old;
    free(p);
    return NULL;
  }
  if (s->fail_at >= 0 && s->calls >= s->fail_at) {
    if (s->burst > 0 && --s->burst == 0) s->fail_at = -1;
    return NULL;
  }
  void *q = realloc(p, nw);
  if (q) {
    s->calls++;
    s->live += (long long)nw - (p ? (long long)old : 0);
  }
  return q;
}

static void ctx_open(tn_ctx *ctx, alloc_state *st) {
  memset(st, 0, sizeof *st);
  st->fail_at = -1;
  tn_ctx_init(ctx, count_realloc, st);
}

static void ctx_close(tn_ctx *ctx, alloc_state *st) {
  tn_ctx_free(ctx);
  ck_assert_msg(st->live == 0, "%lld bytes still allocated after tn_ctx_free", st->live);
}

static const ad_val NOV = {NULL, NULL, -1};

static blo_tensor *vec(tn_ctx *ctx, int n, const double *v) {
  size_t s = (size_t)n;
  return tn_from(ctx, 1, &s, v);
}

/* ------------------------------------------------------------------------ */
/* operation cases                                                          */

typedef struct {
  int op, axis, n;
  double c;
  int nix;
  tn_index_t ix[4];
  int nidx;
  double idx[8];
  int rank;
  size_t shape[4];
} prm;

typedef int (*op_fn)(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p);

/* input domains: keep every op smooth within +-h of the sample.  D_ZERO1/2:
 * D_ANY with exactly one / two exact zeros (flat positions 0 and 1: the same
 * lane along the last axis, different lanes along the others) for prod.
 * D_UNIT: inside (-1, 1) (asin, acos, log1p). */
enum { D_ANY, D_POS, D_AWAY, D_EVEN, D_ODD, D_FRAC, D_DISTINCT, D_ZERO1, D_ZERO2, D_WELL, D_UNIT };

typedef struct {
  int rank;
  size_t shape[4];
  int dom;
} inspec;

typedef struct {
  const char *name;
  op_fn f;
  prm p;
  int nin;
  inspec in[MAXIN];
} opcase;

#define T0(d) {0, {1, 1, 1, 1}, d}
#define T1(a, d) {1, {a, 1, 1, 1}, d}
#define T2(a, b, d) {2, {a, b, 1, 1}, d}
#define T3(a, b, c, d) {3, {a, b, c, 1}, d}
#define T4(a, b, c, e, d) {4, {a, b, c, e}, d}

static int f_unary(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  return ad_unary(ctx, tp, (tn_unary_op)p->op, x[0], y);
}

/* zero-derivative unary ops: y = op(x) * x, so grad = w * op(x) iff op is constant */
static int f_unary_mulx(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  ad_val u;
  if (ad_unary(ctx, tp, (tn_unary_op)p->op, x[0], &u)) return -1;
  ck_assert_int_eq(u.node, -1); /* a constant: not recorded */
  ck_assert_ptr_null(u.t);
  int rc = ad_binary(ctx, tp, TN_MUL, u, x[0], y);
  ad_val_release(ctx, &u);
  return rc;
}

static int f_binary(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  return ad_binary(ctx, tp, (tn_binary_op)p->op, x[0], x[1], y);
}

/* comparisons/logic: y = cmp(a, b) * (a + b) */
static int f_cmp(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  ad_val u, s;
  if (ad_binary(ctx, tp, (tn_binary_op)p->op, x[0], x[1], &u)) return -1;
  ck_assert_int_eq(u.node, -1);
  ck_assert_ptr_null(u.t);
  if (ad_binary(ctx, tp, TN_ADD, x[0], x[1], &s)) { ad_val_release(ctx, &u); return -1; }
  int rc = ad_binary(ctx, tp, TN_MUL, u, s, y);
  ad_val_release(ctx, &u);
  ad_val_release(ctx, &s);
  return rc;
}

/* x ^ c with a constant exponent (negative bases allowed for integer c) */
static int f_powc(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  blo_tensor *c = tn_scalar(ctx, p->c);
  if (!c) return -1;
  int rc = ad_binary(ctx, tp, TN_POW, x[0], ad_const(c), y);
  tn_release(ctx, c);
  return rc;
}

static int f_matmul(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  return ad_matmul(ctx, tp, x[0], x[1], y);
}

/* op(a) @ op(b), flags in p->n: bit 0 transposes a, bit 1 b (BLAS flags, no copy) */
static int f_matmul_t(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  return ad_matmul_t(ctx, tp, x[0], p->n & 1, x[1], (p->n >> 1) & 1, y);
}

static int f_transpose(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  return ad_transpose(ctx, tp, x[0], y);
}

static int f_reduce(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  return ad_reduce(ctx, tp, (tn_reduce_op)p->op, x[0], p->axis, y);
}

/* argmax/argmin: y = arg(x, axis) * sum(x, axis); the arg part is constant */
static int f_argred(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  ad_val u, s;
  if (ad_reduce(ctx, tp, (tn_reduce_op)p->op, x[0], p->axis, &u)) return -1;
  ck_assert_int_eq(u.node, -1);
  ck_assert_ptr_null(u.t);
  if (ad_reduce(ctx, tp, TN_SUM, x[0], p->axis, &s)) { ad_val_release(ctx, &u); return -1; }
  int rc = ad_binary(ctx, tp, TN_MUL, u, s, y);
  ad_val_release(ctx, &u);
  ad_val_release(ctx, &s);
  return rc;
}

static int f_softmax(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  return ad_softmax(ctx, tp, x[0], p->axis, y);
}

static int f_reshape(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  return ad_reshape(ctx, tp, x[0], p->rank, p->shape, y);
}

static int f_concat(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  return ad_concat(ctx, tp, x, p->n, p->axis, y);
}

static int f_stack(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  return ad_stack(ctx, tp, x, p->n, p->axis, y);
}

static int f_index(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  tn_index_t ix[4];
  memcpy(ix, p->ix, sizeof ix);
  if (tn_index_check(ctx, x[0].v, ix, p->nix)) return -1;
  return ad_index(ctx, tp, x[0], ix, p->nix, y);
}

static int f_take(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  blo_tensor *idx = vec(ctx, p->nidx, p->idx);
  if (!idx) return -1;
  int rc = ad_take(ctx, tp, x[0], idx, p->axis, y);
  idx->data[0] = 0; /* the tape keeps its own copy: scribbling on ours is harmless */
  tn_release(ctx, idx);
  return rc;
}

static int f_linsolve(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  return ad_linsolve(ctx, tp, x[0], x[1], y);
}

/* a small chain: releases its temporaries and reports failure */
#define STEP(call) do { if (call) goto fail; } while (0)

/* y = W2 @ tanh(W1 @ x + b): W1 [3,2], x [2], b [3], W2 [2,3] -> [2] */
static int f_mlp(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  ad_val h = NOV, a = NOV, t = NOV;
  int rc = -1;
  STEP(ad_matmul(ctx, tp, x[0], x[1], &h));
  STEP(ad_binary(ctx, tp, TN_ADD, h, x[2], &a));
  STEP(ad_unary(ctx, tp, TN_TANH, a, &t));
  STEP(ad_matmul(ctx, tp, x[3], t, y));
  rc = 0;
fail:
  ad_val_release(ctx, &h);
  ad_val_release(ctx, &a);
  ad_val_release(ctx, &t);
  return rc;
}

/* an inner objective f(x, y), x, y [3]:
 * 0.5 sum(y^2 exp(x)) - sum(x sin y) + logsumexp(x + y) -> scalar */
static int f_inner(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  ad_val y2 = NOV, ex = NOV, q = NOV, s1 = NOV, sy = NOV, xs = NOV, s2 = NOV, xy = NOV, l = NOV, d = NOV,
         hh = NOV;
  blo_tensor *half = tn_scalar(ctx, 0.5);
  int rc = -1;
  if (!half) return -1;
  STEP(ad_unary(ctx, tp, TN_SQUARE, x[1], &y2));
  STEP(ad_unary(ctx, tp, TN_EXP, x[0], &ex));
  STEP(ad_binary(ctx, tp, TN_MUL, y2, ex, &q));
  STEP(ad_reduce(ctx, tp, TN_SUM, q, -1, &s1));
  STEP(ad_binary(ctx, tp, TN_MUL, s1, ad_const(half), &hh));
  STEP(ad_unary(ctx, tp, TN_SIN, x[1], &sy));
  STEP(ad_binary(ctx, tp, TN_MUL, x[0], sy, &xs));
  STEP(ad_reduce(ctx, tp, TN_SUM, xs, -1, &s2));
  STEP(ad_binary(ctx, tp, TN_ADD, x[0], x[1], &xy));
  STEP(ad_reduce(ctx, tp, TN_LOGSUMEXP, xy, -1, &l));
  STEP(ad_binary(ctx, tp, TN_SUB, hh, s2, &d));
  STEP(ad_binary(ctx, tp, TN_ADD, d, l, y));
  rc = 0;
fail:
  tn_release(ctx, half);
  ad_val_release(ctx, &y2); ad_val_release(ctx, &ex); ad_val_release(ctx, &q);
  ad_val_release(ctx, &s1); ad_val_release(ctx, &sy); ad_val_release(ctx, &xs);
  ad_val_release(ctx, &s2); ad_val_release(ctx, &xy); ad_val_release(ctx, &l);
  ad_val_release(ctx, &d); ad_val_release(ctx, &hh);
  return rc;
}

/* cross-entropy style: Z = X @ T (X [4,3], T [3,2]); y = lse(Z, 1) - Z[:, 0] -> [4] */
static int f_xent(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  ad_val z = NOV, l = NOV, c = NOV;
  tn_index_t ix[2] = {{TN_IX_ALL, 0, 0}, {TN_IX_INDEX, 0, 0}};
  int rc = -1;
  STEP(ad_matmul(ctx, tp, x[0], x[1], &z));
  STEP(ad_reduce(ctx, tp, TN_LOGSUMEXP, z, 1, &l));
  STEP(tn_index_check(ctx, z.v, ix, 2));
  STEP(ad_index(ctx, tp, z, ix, 2, &c));
  STEP(ad_binary(ctx, tp, TN_SUB, l, c, y));
  rc = 0;
fail:
  ad_val_release(ctx, &z);
  ad_val_release(ctx, &l);
  ad_val_release(ctx, &c);
  return rc;
}

/* x [3,4]: y = norm(x, 0) * prod(sigmoid(x), 0) + max(x, 0) -> [4] */
static int f_chain(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  ad_val n = NOV, s = NOV, pr = NOV, m = NOV, np = NOV;
  int rc = -1;
  STEP(ad_reduce(ctx, tp, TN_NORM, x[0], 0, &n));
  STEP(ad_unary(ctx, tp, TN_SIGMOID, x[0], &s));
  STEP(ad_reduce(ctx, tp, TN_PROD, s, 0, &pr));
  STEP(ad_reduce(ctx, tp, TN_MAX, x[0], 0, &m));
  STEP(ad_binary(ctx, tp, TN_MUL, n, pr, &np));
  STEP(ad_binary(ctx, tp, TN_ADD, np, m, y));
  rc = 0;
fail:
  ad_val_release(ctx, &n); ad_val_release(ctx, &s); ad_val_release(ctx, &pr);
  ad_val_release(ctx, &m); ad_val_release(ctx, &np);
  return rc;
}

/* x [2,3], A [3,3]: y = softmax(concat(x, stack(x0, x1)) @ A, 1) -> [4,3]
 * exercises concat/stack/index/matmul/softmax together */
static int f_join(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  ad_val r0 = NOV, r1 = NOV, st = NOV, cat = NOV, z = NOV, rows[2], parts[2];
  tn_index_t i0[1] = {{TN_IX_INDEX, 0, 1}}, i1[1] = {{TN_IX_INDEX, 1, 2}};
  int rc = -1;
  STEP(ad_index(ctx, tp, x[0], i0, 1, &r0));
  STEP(ad_index(ctx, tp, x[0], i1, 1, &r1));
  rows[0] = r1;
  rows[1] = r0;
  STEP(ad_stack(ctx, tp, rows, 2, 0, &st));
  parts[0] = x[0];
  parts[1] = st;
  STEP(ad_concat(ctx, tp, parts, 2, 0, &cat));
  STEP(ad_matmul(ctx, tp, cat, x[1], &z));
  STEP(ad_softmax(ctx, tp, z, 1, y));
  rc = 0;
fail:
  ad_val_release(ctx, &r0); ad_val_release(ctx, &r1); ad_val_release(ctx, &st);
  ad_val_release(ctx, &cat); ad_val_release(ctx, &z);
  return rc;
}

/* a [3,4], b [4]: y = atan2(sinh(a), cosh(b)) + erf(a) * log1p(cosh(b)) -> [3,4] */
static int f_trig(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  ad_val sa = NOV, cb = NOV, at = NOV, ea = NOV, lc = NOV, m = NOV;
  int rc = -1;
  STEP(ad_unary(ctx, tp, TN_SINH, x[0], &sa));
  STEP(ad_unary(ctx, tp, TN_COSH, x[1], &cb));
  STEP(ad_binary(ctx, tp, TN_ATAN2, sa, cb, &at));
  STEP(ad_unary(ctx, tp, TN_ERF, x[0], &ea));
  STEP(ad_unary(ctx, tp, TN_LOG1P, cb, &lc));
  STEP(ad_binary(ctx, tp, TN_MUL, ea, lc, &m));
  STEP(ad_binary(ctx, tp, TN_ADD, at, m, y));
  rc = 0;
fail:
  ad_val_release(ctx, &sa); ad_val_release(ctx, &cb); ad_val_release(ctx, &at);
  ad_val_release(ctx, &ea); ad_val_release(ctx, &lc); ad_val_release(ctx, &m);
  return rc;
}

/* a [5] in (-1, 1): y = tan(a) + atan(expm1(a)) * asin(a) - acos(a) -> [5] */
static int f_trig2(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  ad_val ta = NOV, em = NOV, at = NOV, as = NOV, m = NOV, ac = NOV, s = NOV;
  int rc = -1;
  STEP(ad_unary(ctx, tp, TN_TAN, x[0], &ta));
  STEP(ad_unary(ctx, tp, TN_EXPM1, x[0], &em));
  STEP(ad_unary(ctx, tp, TN_ATAN, em, &at));
  STEP(ad_unary(ctx, tp, TN_ASIN, x[0], &as));
  STEP(ad_binary(ctx, tp, TN_MUL, at, as, &m));
  STEP(ad_unary(ctx, tp, TN_ACOS, x[0], &ac));
  STEP(ad_binary(ctx, tp, TN_ADD, ta, m, &s));
  STEP(ad_binary(ctx, tp, TN_SUB, s, ac, y));
  rc = 0;
fail:
  ad_val_release(ctx, &ta); ad_val_release(ctx, &em); ad_val_release(ctx, &at); ad_val_release(ctx, &as);
  ad_val_release(ctx, &m); ad_val_release(ctx, &ac); ad_val_release(ctx, &s);
  return rc;
}

/* conv2d(x, w) with stride (shape[0], shape[1]) and padding (shape[2], shape[3]) */
static int f_conv(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  tn_conv_opt o = {p->shape[0], p->shape[1], p->shape[2], p->shape[3]};
  return ad_conv2d(ctx, tp, x[0], x[1], &o, y);
}

/* maxpool2d (op 0) or avgpool2d (op 1), window (shape[0], shape[1]), stride (shape[2], shape[3]) */
static int f_pool(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  tn_conv_opt o = {p->shape[2], p->shape[3], 0, 0};
  return p->op == 0 ? ad_maxpool2d(ctx, tp, x[0], p->shape[0], p->shape[1], &o, y)
                    : ad_avgpool2d(ctx, tp, x[0], p->shape[0], p->shape[1], &o, y);
}

/* one-hot rows [N, K] of the classes (3 i + 1) mod K: constant labels */
static blo_tensor *fixed_labels(tn_ctx *ctx, size_t N, size_t K) {
  size_t sh[2] = {N, K};
  blo_tensor *t = tn_zeros(ctx, 2, sh);
  if (t) for (size_t i = 0; i < N; i++) t->data[i * K + (3 * i + 1) % K] = 1.0;
  return t;
}

/* cross_entropy(z, p) with both differentiated (soft labels, any rows), or
 * (nin 1) against constant one-hot labels */
static int f_cross_entropy(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  (void)p;
  if (p->n == 2) return ad_cross_entropy(ctx, tp, x[0], x[1], y);
  blo_tensor *lab = fixed_labels(ctx, x[0].v->shape[0], x[0].v->shape[1]);
  if (!lab) return -1;
  int rc = ad_cross_entropy(ctx, tp, x[0], ad_const(lab), y);
  tn_release(ctx, lab);
  return rc;
}

/* a small CNN: x [2,2,6,6] (distinct values: no ties in the pool), w [3,2,2,2], b [3]:
 * cross_entropy(reshape(tanh(conv2d(maxpool2d(x, 2), w) + b), [2, 12]), labels) */
static int f_cnn(tn_ctx *ctx, ad_tape *tp, const ad_val *x, ad_val *y, const prm *p) {
  ad_val m = NOV, c = NOV, br = NOV, a = NOV, t = NOV, r = NOV;
  tn_conv_opt o2 = {2, 2, 0, 0}, o1 = {1, 1, 0, 0};
  size_t bs[3] = {3, 1, 1}, rs[2] = {2, 12};
  blo_tensor *lab = fixed_labels(ctx, 2, 12);
  int rc = -1;
  (void)p;
  if (!lab) return -1;
  STEP(ad_maxpool2d(ctx, tp, x[0], 2, 2, &o2, &m));
  STEP(ad_conv2d(ctx, tp, m, x[1], &o1, &c));
  STEP(ad_reshape(ctx, tp, x[2], 3, bs, &br));
  STEP(ad_binary(ctx, tp, TN_ADD, c, br, &a));
  STEP(ad_unary(ctx, tp, TN_TANH, a, &t));
  STEP(ad_reshape(ctx, tp, t, 2, rs, &r));
  STEP(ad_cross_entropy(ctx, tp, r, ad_const(lab), y));
  rc = 0;
fail:
  tn_release(ctx, lab);
  ad_val_release(ctx, &m); ad_val_release(ctx, &c); ad_val_release(ctx, &br);
  ad_val_release(ctx, &a); ad_val_release(ctx, &t); ad_val_release(ctx, &r);
  return rc;
}

#define UN(op_, dom, sh) {"unary " #op_ " " #sh, f_unary, {.op = op_}, 1, {sh}}
#define UZ(op_, dom) {"zero-derivative " #op_, f_unary_mulx, {.op = op_}, 1, {T2(3, 4, dom)}}
#define BI(op_, a, b) {"binary " #op_ " " #a " " #b, f_binary, {.op = op_}, 2, {a, b}}
#define CMP(op_, a, b) {"compare " #op_, f_cmp, {.op = op_}, 2, {a, b}}
#define RED(op_, ax, sh) {"reduce " #op_ " axis " #ax " " #sh, f_reduce, {.op = op_, .axis = ax}, 1, {sh}}
#define BINARY_SET(op_, da, db)                    \
  BI(op_, T2(3, 4, da), T2(3, 4, db)),             \
  BI(op_, T2(3, 1, da), T1(4, db)),                \
  BI(op_, T0(da), T2(2, 3, db)),                   \
  BI(op_, T2(2, 3, da), T0(db)),                   \
  BI(op_, T3(2, 1, 3, da), T2(3, 1, db)),          \
  BI(op_, T0(da), T0(db))
#define REDUCE_SET(op_, d)                          \
  RED(op_, -1, T2(3, 4, d)),                        \
  RED(op_, 0, T2(3, 4, d)),                         \
  RED(op_, 1, T2(3, 4, d)),                         \
  RED(op_, 0, T3(2, 3, 4, d)),                      \
  RED(op_, 1, T3(2, 3, 4, d)),                      \
  RED(op_, 2, T3(2, 3, 4, d)),                      \
  RED(op_, 0, T1(5, d)),                            \
  RED(op_, -1, T0(d))

static const opcase cases[] = {
  /* unary, [3,4] and other ranks */
  UN(TN_NEG, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_EXP, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_LOG, D_POS, T2(3, 4, D_POS)),
  UN(TN_SQRT, D_POS, T2(3, 4, D_POS)),
  UN(TN_ABS, D_AWAY, T2(3, 4, D_AWAY)),
  UN(TN_SIN, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_COS, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_TANH, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_SIGMOID, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_SOFTPLUS, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_RELU, D_AWAY, T2(3, 4, D_AWAY)),
  UN(TN_SQUARE, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_RECIP, D_AWAY, T2(3, 4, D_AWAY)),
  UN(TN_EXP, D_ANY, T0(D_ANY)),
  UN(TN_SQRT, D_POS, T0(D_POS)),
  UN(TN_TANH, D_ANY, T1(5, D_ANY)),
  UN(TN_LOG, D_POS, T3(2, 3, 2, D_POS)),
  UN(TN_RECIP, D_AWAY, T3(2, 1, 3, D_AWAY)),
  UN(TN_SOFTPLUS, D_ANY, T1(6, D_ANY)),
  UN(TN_TAN, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_ATAN, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_ASIN, D_UNIT, T2(3, 4, D_UNIT)),
  UN(TN_ACOS, D_UNIT, T2(3, 4, D_UNIT)),
  UN(TN_SINH, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_COSH, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_ERF, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_LOG1P, D_UNIT, T2(3, 4, D_UNIT)),
  UN(TN_EXPM1, D_ANY, T2(3, 4, D_ANY)),
  UN(TN_TAN, D_UNIT, T0(D_UNIT)),
  UN(TN_ATAN, D_ANY, T1(5, D_ANY)),
  UN(TN_ASIN, D_UNIT, T1(6, D_UNIT)),
  UN(TN_ACOS, D_UNIT, T0(D_UNIT)),
  UN(TN_SINH, D_ANY, T0(D_ANY)),
  UN(TN_COSH, D_ANY, T3(2, 1, 3, D_ANY)),
  UN(TN_ERF, D_ANY, T1(5, D_ANY)),
  UN(TN_LOG1P, D_POS, T3(2, 3, 2, D_POS)),
  UN(TN_EXPM1, D_ANY, T0(D_ANY)),
  UZ(TN_SIGN, D_AWAY),
  UZ(TN_STEP, D_AWAY),
  UZ(TN_FLOOR, D_FRAC),
  UZ(TN_NOT, D_AWAY),
  UZ(TN_ISNAN, D_ANY),
  /* binary with broadcasting: same shape, [3,1]x[4], scalar x matrix, matrix x
   * scalar, rank 3 x rank 2, scalar x scalar */
  BINARY_SET(TN_ADD, D_ANY, D_ANY),
  BINARY_SET(TN_SUB, D_ANY, D_ANY),
  BINARY_SET(TN_MUL, D_ANY, D_ANY),
  BINARY_SET(TN_DIV, D_ANY, D_AWAY),
  BINARY_SET(TN_POW, D_POS, D_ANY),
  BINARY_SET(TN_MAX2, D_EVEN, D_ODD),
  BINARY_SET(TN_MIN2, D_EVEN, D_ODD),
  BINARY_SET(TN_MAX2, D_ODD, D_EVEN),
  BINARY_SET(TN_MIN2, D_ODD, D_EVEN),
  /* atan2(a, b) is smooth away from the ray a = 0, b <= 0: a away from 0,
   * or b positive */
  BINARY_SET(TN_ATAN2, D_AWAY, D_ANY),
  BINARY_SET(TN_ATAN2, D_ANY, D_POS),
  CMP(TN_LT, T2(3, 1, D_EVEN), T1(4, D_ODD)),
  CMP(TN_LE, T2(3, 1, D_EVEN), T1(4, D_ODD)),
  CMP(TN_GT, T2(3, 1, D_EVEN), T1(4, D_ODD)),
  CMP(TN_GE, T2(3, 1, D_EVEN), T1(4, D_ODD)),
  CMP(TN_EQ, T2(3, 1, D_EVEN), T1(4, D_ODD)),
  CMP(TN_NE, T2(3, 1, D_EVEN), T1(4, D_ODD)),
  CMP(TN_AND, T2(3, 1, D_AWAY), T1(4, D_AWAY)),
  CMP(TN_OR, T2(3, 1, D_AWAY), T1(4, D_AWAY)),
  {"pow x^3 (negative bases, constant exponent)", f_powc, {.c = 3}, 1, {T1(5, D_ANY)}},
  {"pow x^-2 (constant exponent)", f_powc, {.c = -2}, 1, {T2(2, 3, D_AWAY)}},
  {"pow x^0.5 (constant exponent)", f_powc, {.c = 0.5}, 1, {T2(2, 3, D_POS)}},
  /* matmul rank combinations */
  {"matmul [3,4]@[4,2]", f_matmul, {0}, 2, {T2(3, 4, D_ANY), T2(4, 2, D_ANY)}},
  {"matmul [3,4]@[4]", f_matmul, {0}, 2, {T2(3, 4, D_ANY), T1(4, D_ANY)}},
  {"matmul [4]@[4,2]", f_matmul, {0}, 2, {T1(4, D_ANY), T2(4, 2, D_ANY)}},
  {"matmul [4]@[4]", f_matmul, {0}, 2, {T1(4, D_ANY), T1(4, D_ANY)}},
  {"matmul [1,3]@[3,1]", f_matmul, {0}, 2, {T2(1, 3, D_ANY), T2(3, 1, D_ANY)}},
  /* transposed operands (ad_matmul_t): [4,3]'@[4,2], [3,4]@[2,4]', [4,3]'@[2,4]', [4,3]'@[4], [4]@[2,4]' */
  {"matmul_t a'@b", f_matmul_t, {.n = 1}, 2, {T2(4, 3, D_ANY), T2(4, 2, D_ANY)}},
  {"matmul_t a@b'", f_matmul_t, {.n = 2}, 2, {T2(3, 4, D_ANY), T2(2, 4, D_ANY)}},
  {"matmul_t a'@b'", f_matmul_t, {.n = 3}, 2, {T2(4, 3, D_ANY), T2(2, 4, D_ANY)}},
  {"matmul_t a'@v", f_matmul_t, {.n = 1}, 2, {T2(4, 3, D_ANY), T1(4, D_ANY)}},
  {"matmul_t v@b'", f_matmul_t, {.n = 2}, 2, {T1(4, D_ANY), T2(2, 4, D_ANY)}},
  {"matmul_t v@v (flags ignored)", f_matmul_t, {.n = 3}, 2, {T1(4, D_ANY), T1(4, D_ANY)}},
  /* batched products (rank 3); a rank-2 operand is shared over the batch and
   * its gradient sums over B */
  {"bmm [2,3,4]@[2,4,2]", f_matmul, {0}, 2, {T3(2, 3, 4, D_ANY), T3(2, 4, 2, D_ANY)}},
  {"bmm [3,4]@[2,4,2]", f_matmul, {0}, 2, {T2(3, 4, D_ANY), T3(2, 4, 2, D_ANY)}},
  {"bmm [2,3,4]@[4,2]", f_matmul, {0}, 2, {T3(2, 3, 4, D_ANY), T2(4, 2, D_ANY)}},
  {"bmm [1,3,4]@[1,4,2]", f_matmul, {0}, 2, {T3(1, 3, 4, D_ANY), T3(1, 4, 2, D_ANY)}},
  {"bmm [3,2,2]@[2,1]", f_matmul, {0}, 2, {T3(3, 2, 2, D_ANY), T2(2, 1, D_ANY)}},
  {"bmm_t a'@b [2,4,3]'@[2,4,2]", f_matmul_t, {.n = 1}, 2, {T3(2, 4, 3, D_ANY), T3(2, 4, 2, D_ANY)}},
  {"bmm_t a@b' [2,3,4]@[2,4]'", f_matmul_t, {.n = 2}, 2, {T3(2, 3, 4, D_ANY), T2(2, 4, D_ANY)}},
  {"bmm_t a'@b' [4,3]'@[2,2,4]'", f_matmul_t, {.n = 3}, 2, {T2(4, 3, D_ANY), T3(2, 2, 4, D_ANY)}},
  {"bmm_t a'@b [2,4,3]'@[4,2]", f_matmul_t, {.n = 1}, 2, {T3(2, 4, 3, D_ANY), T2(4, 2, D_ANY)}},
  /* transpose, ranks 0..3 */
  {"transpose []", f_transpose, {0}, 1, {T0(D_ANY)}},
  {"transpose [4]", f_transpose, {0}, 1, {T1(4, D_ANY)}},
  {"transpose [3,4]", f_transpose, {0}, 1, {T2(3, 4, D_ANY)}},
  {"transpose [2,3,4]", f_transpose, {0}, 1, {T3(2, 3, 4, D_ANY)}},
  /* reductions: all axes of ranks 0..3 */
  REDUCE_SET(TN_SUM, D_ANY),
  REDUCE_SET(TN_MEAN, D_ANY),
  REDUCE_SET(TN_MAX, D_DISTINCT),
  REDUCE_SET(TN_MIN, D_DISTINCT),
  REDUCE_SET(TN_PROD, D_ANY),
  REDUCE_SET(TN_NORM, D_AWAY),
  REDUCE_SET(TN_LOGSUMEXP, D_ANY),
  RED(TN_PROD, -1, T2(3, 4, D_ZERO1)),
  RED(TN_PROD, 0, T2(3, 4, D_ZERO1)),
  RED(TN_PROD, 1, T2(3, 4, D_ZERO1)),
  RED(TN_PROD, -1, T1(5, D_ZERO2)),
  RED(TN_PROD, -1, T2(2, 3, D_ZERO2)),
  RED(TN_PROD, 0, T2(3, 4, D_ZERO2)),
  RED(TN_PROD, 1, T2(3, 4, D_ZERO2)),
  RED(TN_PROD, 1, T3(2, 3, 4, D_ZERO2)),
  RED(TN_PROD, 2, T3(2, 3, 4, D_ZERO2)),
  {"argmax axis 1", f_argred, {.op = TN_ARGMAX, .axis = 1}, 1, {T2(3, 4, D_DISTINCT)}},
  {"argmin axis 0", f_argred, {.op = TN_ARGMIN, .axis = 0}, 1, {T2(3, 4, D_DISTINCT)}},
  {"argmax all", f_argred, {.op = TN_ARGMAX, .axis = -1}, 1, {T3(2, 3, 2, D_DISTINCT)}},
  /* softmax */
  {"softmax [5] all", f_softmax, {.axis = -1}, 1, {T1(5, D_ANY)}},
  {"softmax [3,4] all", f_softmax, {.axis = -1}, 1, {T2(3, 4, D_ANY)}},
  {"softmax [3,4] axis 0", f_softmax, {.axis = 0}, 1, {T2(3, 4, D_ANY)}},
  {"softmax [3,4] axis 1", f_softmax, {.axis = 1}, 1, {T2(3, 4, D_ANY)}},
  {"softmax [2,3,2] axis 2", f_softmax, {.axis = 2}, 1, {T3(2, 3, 2, D_ANY)}},
  {"softmax [2,3,2] axis 1", f_softmax, {.axis = 1}, 1, {T3(2, 3, 2, D_ANY)}},
  /* reshape */
  {"reshape [3,4]->[2,6]", f_reshape, {.rank = 2, .shape = {2, 6}}, 1, {T2(3, 4, D_ANY)}},
  {"reshape [2,3,2]->[12]", f_reshape, {.rank = 1, .shape = {12}}, 1, {T3(2, 3, 2, D_ANY)}},
  {"reshape [4]->[2,2,1]", f_reshape, {.rank = 3, .shape = {2, 2, 1}}, 1, {T1(4, D_ANY)}},
  {"reshape [1]->[]", f_reshape, {.rank = 0}, 1, {T1(1, D_ANY)}},
  /* concat / stack */
  {"concat 3 x [.,3] axis 0", f_concat, {.n = 3, .axis = 0}, 3, {T2(2, 3, D_ANY), T2(1, 3, D_ANY), T2(3, 3, D_ANY)}},
  {"concat [2,1],[2,3] axis 1", f_concat, {.n = 2, .axis = 1}, 2, {T2(2, 1, D_ANY), T2(2, 3, D_ANY)}},
  {"concat [2,1],[2,3] axis -1", f_concat, {.n = 2, .axis = -1}, 2, {T2(2, 1, D_ANY), T2(2, 3, D_ANY)}},
  {"concat rank 3 axis 2", f_concat, {.n = 2, .axis = 2}, 2, {T3(2, 2, 1, D_ANY), T3(2, 2, 2, D_ANY)}},
  {"concat rank 3 axis 1", f_concat, {.n = 2, .axis = 1}, 2, {T3(2, 1, 2, D_ANY), T3(2, 3, 2, D_ANY)}},
  {"concat [2],[3]", f_concat, {.n = 2, .axis = 0}, 2, {T1(2, D_ANY), T1(3, D_ANY)}},
  {"stack 3 x [2,3] axis 0", f_stack, {.n = 3, .axis = 0}, 3, {T2(2, 3, D_ANY), T2(2, 3, D_ANY), T2(2, 3, D_ANY)}},
  {"stack 3 x [2,3] axis 1", f_stack, {.n = 3, .axis = 1}, 3, {T2(2, 3, D_ANY), T2(2, 3, D_ANY), T2(2, 3, D_ANY)}},
  {"stack 3 x [2,3] axis 2", f_stack, {.n = 3, .axis = 2}, 3, {T2(2, 3, D_ANY), T2(2, 3, D_ANY), T2(2, 3, D_ANY)}},
  {"stack 3 x [] axis 0", f_stack, {.n = 3, .axis = 0}, 3, {T0(D_ANY), T0(D_ANY), T0(D_ANY)}},
  {"stack 2 x [4] axis -1", f_stack, {.n = 2, .axis = -1}, 2, {T1(4, D_ANY), T1(4, D_ANY)}},
  /* indexing / slicing */
  {"index a[1]", f_index, {.nix = 1, .ix = {{TN_IX_INDEX, 1, 0}}}, 1, {T2(3, 4, D_ANY)}},
  {"index a[0:2, -1]", f_index, {.nix = 2, .ix = {{TN_IX_SLICE, 0, 2}, {TN_IX_INDEX, -1, 0}}}, 1, {T2(3, 4, D_ANY)}},
  {"index a[:, 1:3, 2]", f_index, {.nix = 3, .ix = {{TN_IX_ALL, 0, 0}, {TN_IX_SLICE, 1, 3}, {TN_IX_INDEX, 2, 0}}}, 1,
   {T3(2, 3, 4, D_ANY)}},
  {"index a[2, 3]", f_index, {.nix = 2, .ix = {{TN_IX_INDEX, 2, 0}, {TN_IX_INDEX, 3, 0}}}, 1, {T2(3, 4, D_ANY)}},
  {"index a[1:10] (clamped)", f_index, {.nix = 1, .ix = {{TN_IX_SLICE, 1, 10}}}, 1, {T1(4, D_ANY)}},
  {"take rows [2,0,2]", f_take, {.axis = 0, .nidx = 3, .idx = {2, 0, 2}}, 1, {T2(4, 3, D_ANY)}},
  {"take cols [1,1,0,3,-1]", f_take, {.axis = 1, .nidx = 5, .idx = {1, 1, 0, 3, -1}}, 1, {T2(3, 4, D_ANY)}},
  {"take [0,4,4] of [5]", f_take, {.axis = 0, .nidx = 3, .idx = {0, 4, 4}}, 1, {T1(5, D_ANY)}},
  /* linear solve */
  {"linsolve A [3,3], b [3]", f_linsolve, {0}, 2, {T2(3, 3, D_WELL), T1(3, D_ANY)}},
  {"linsolve A [3,3], b [3,2]", f_linsolve, {0}, 2, {T2(3, 3, D_WELL), T2(3, 2, D_ANY)}},
  /* convolution: stride (s0, s1), padding (s2, s3) in .shape; kh != kw, non-square images */
  {"conv2d [2,3,5,4]*[2,3,2,3]", f_conv, {.shape = {1, 1, 0, 0}}, 2, {T4(2, 3, 5, 4, D_ANY), T4(2, 3, 2, 3, D_ANY)}},
  {"conv2d stride 2 padding 1", f_conv, {.shape = {2, 2, 1, 1}}, 2, {T4(2, 2, 6, 5, D_ANY), T4(3, 2, 3, 2, D_ANY)}},
  {"conv2d stride [1,2] padding [2,0]", f_conv, {.shape = {1, 2, 2, 0}}, 2, {T4(1, 2, 4, 7, D_ANY), T4(2, 2, 3, 3, D_ANY)}},
  /* pooling: window (s0, s1), stride (s2, s3) */
  {"maxpool2d 2 [2,2,4,4]", f_pool, {.op = 0, .shape = {2, 2, 2, 2}}, 1, {T4(2, 2, 4, 4, D_DISTINCT)}},
  {"maxpool2d [3,2] stride [1,2]", f_pool, {.op = 0, .shape = {3, 2, 1, 2}}, 1, {T4(1, 2, 5, 4, D_DISTINCT)}},
  {"avgpool2d 2 [2,2,4,6]", f_pool, {.op = 1, .shape = {2, 2, 2, 2}}, 1, {T4(2, 2, 4, 6, D_ANY)}},
  {"avgpool2d [2,3] stride 1", f_pool, {.op = 1, .shape = {2, 3, 1, 1}}, 1, {T4(1, 1, 4, 5, D_ANY)}},
  /* cross-entropy: soft labels (both differentiated), constant class labels */
  {"cross_entropy soft labels [4,3]", f_cross_entropy, {.n = 2}, 2, {T2(4, 3, D_ANY), T2(4, 3, D_ANY)}},
  {"cross_entropy class labels [5,4]", f_cross_entropy, {.n = 1}, 1, {T2(5, 4, D_ANY)}},
  {"cnn maxpool-conv-tanh-cross_entropy", f_cnn, {0}, 3, {T4(2, 2, 6, 6, D_DISTINCT), T4(3, 2, 2, 2, D_ANY), T1(3, D_ANY)}},
  /* compositions: second order through chains, mixed blocks */
  {"mlp W2 tanh(W1 x + b)", f_mlp, {0}, 4, {T2(3, 2, D_ANY), T1(2, D_ANY), T1(3, D_ANY), T2(2, 3, D_ANY)}},
  {"inner objective f(x, y)", f_inner, {0}, 2, {T1(3, D_ANY), T1(3, D_ANY)}},
  {"cross-entropy", f_xent, {0}, 2, {T2(4, 3, D_ANY), T2(3, 2, D_ANY)}},
  {"norm*prod+max chain", f_chain, {0}, 1, {T2(3, 4, D_DISTINCT)}},
  {"stack/concat/index/softmax chain", f_join, {0}, 2, {T2(2, 3, D_ANY), T2(3, 3, D_ANY)}},
  {"atan2/sinh/cosh/erf/log1p chain", f_trig, {0}, 2, {T2(3, 4, D_ANY), T1(4, D_ANY)}},
  {"tan/expm1/atan/asin/acos chain", f_trig2, {0}, 1, {T1(5, D_UNIT)}},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

/* ------------------------------------------------------------------------ */
/* input generation                                                         */

static double unif(tn_rng *r, double lo, double hi) { return lo + (hi - lo) * tn_rng_uniform(r); }

static blo_tensor *gen_input(tn_ctx *ctx, const inspec *s, tn_rng *r) {
  blo_tensor *t = tn_new(ctx, s->rank, s->shape);
  ck_assert_ptr_nonnull(t);
  size_t n = t->size;
  for (size_t i = 0; i < n; i++) {
    double u = unif(r, 0.2, 0.8), k = (double)(int)(tn_rng_next(r) % 3) - 1.0;
    switch (s->dom) {
    case D_ANY: t->data[i] = unif(r, -1.5, 1.5); break;
    case D_POS: t->data[i] = unif(r, 0.5, 2.0); break;
    case D_AWAY: t->data[i] = (tn_rng_uniform(r) < 0.5 ? -1 : 1) * unif(r, 0.3, 1.5); break;
    case D_EVEN: t->data[i] = 2 * k + u; break;       /* even + (0.2..0.8) */
    case D_ODD: t->data[i] = 2 * k + 1 + u; break;    /* odd + (0.2..0.8): >= 0.4 from D_EVEN */
    case D_FRAC: t->data[i] = k + u; break;           /* >= 0.2 from integers (floor) */
    case D_ZERO1: case D_ZERO2: t->data[i] = unif(r, -1.5, 1.5); break;
    case D_WELL: t->data[i] = 0.3 * tn_rng_normal(r); break;
    case D_UNIT: t->data[i] = unif(r, -0.9, 0.9); break;
    default: t->data[i] = 0; break;
    }
  }
  if (s->dom == D_WELL && s->rank == 2 && s->shape[0] == s->shape[1])
    for (size_t i = 0; i < s->shape[0]; i++) t->data[i * s->shape[0] + i] += 2.0;
  if (s->dom == D_ZERO1) t->data[tn_rng_next(r) % n] = 0.0;
  if (s->dom == D_ZERO2) t->data[0] = t->data[1] = 0.0;
  if (s->dom == D_DISTINCT) { /* a random permutation of a grid, spacing 3/n: no ties near */
    for (size_t i = 0; i < n; i++) t->data[i] = -1.5 + 3.0 * ((double)i + 0.5) / (double)n;
    for (size_t i = n; i > 1; i--) {
      size_t j = (size_t)(tn_rng_next(r) % i);
      double tmp = t->data[i - 1];
      t->data[i - 1] = t->data[j];
      t->data[j] = tmp;
    }
  }
  return t;
}

static blo_tensor *randn_like(tn_ctx *ctx, const blo_tensor *a, tn_rng *r) {
  blo_tensor *t = tn_new(ctx, a->rank, a->shape);
  ck_assert_ptr_nonnull(t);
  for (size_t i = 0; i < t->size; i++) t->data[i] = tn_rng_normal(r);
  return t;
}

/* ------------------------------------------------------------------------ */
/* evaluation helpers                                                       */

/* E = sum(w * f(x)) */
static int eval_E(tn_ctx *ctx, ad_tape *tp, const opcase *c, const ad_val *x, blo_tensor *w, ad_val *E) {
  ad_val y, p;
  *E = NOV;
  if (c->f(ctx, tp, x, &y, &c->p)) return -1;
  int rc = ad_binary(ctx, tp, TN_MUL, ad_const(w), y, &p);
  ad_val_release(ctx, &y);
  if (rc) return -1;
  rc = ad_reduce(ctx, tp, TN_SUM, p, -1, E);
  ad_val_release(ctx, &p);
  return rc;
}

/* plain E(x) */
static double E_at(tn_ctx *ctx, const opcase *c, blo_tensor *const *x, blo_tensor *w) {
  ad_val in[MAXIN], E;
  for (int i = 0; i < c->nin; i++) in[i] = ad_const(x[i]);
  ck_assert_msg(eval_E(ctx, NULL, c, in, w, &E) == 0, "%s: %s", c->name, ctx->err);
  double e = E.v->data[0];
  ck_assert_ptr_null(E.t);
  ad_val_release(ctx, &E);
  return e;
}

/* forward mode only (no tape): E and its tangent along t */
static double jvp_at(tn_ctx *ctx, const opcase *c, blo_tensor *const *x, blo_tensor *const *t,
                     blo_tensor *w, double *Et) {
  ad_val in[MAXIN], E;
  for (int i = 0; i < c->nin; i++) { in[i] = ad_const(x[i]); in[i].t = t[i]; }
  ck_assert_msg(eval_E(ctx, NULL, c, in, w, &E) == 0, "%s: %s", c->name, ctx->err);
  ck_assert_int_eq(E.node, -1);
  *Et = E.t ? E.t->data[0] : 0.0;
  double e = E.v->data[0];
  ad_val_release(ctx, &E);
  return e;
}

/* reverse mode with optional leaf tangents: gradients g[i] and (if gt) adjoint tangents */
static double grads(tn_ctx *ctx, const opcase *c, blo_tensor *const *x, blo_tensor *const *t,
                    blo_tensor *w, blo_tensor **g, blo_tensor **gt) {
  ad_tape *tp = ad_tape_new(ctx);
  ad_val in[MAXIN], E;
  ck_assert_ptr_nonnull(tp);
  for (int i = 0; i < c->nin; i++) {
    in[i].v = x[i];
    in[i].t = t ? t[i] : NULL;
    in[i].node = -1;
    ck_assert_int_eq(ad_leaf(ctx, tp, &in[i]), 0);
    ck_assert_int_eq(in[i].node, i);
  }
  ck_assert_msg(eval_E(ctx, tp, c, in, w, &E) == 0, "%s: %s", c->name, ctx->err);
  ck_assert_int_eq(E.v->rank, 0);
  ck_assert_msg(ad_backward(ctx, tp, E, NULL) == 0, "%s: backward: %s", c->name, ctx->err);
  for (int i = 0; i < c->nin; i++) {
    ck_assert_int_eq(ad_adjoint(ctx, tp, in[i].node, &g[i], gt ? &gt[i] : NULL), 0);
    ck_assert(tn_same_shape(g[i], x[i]));
    if (gt) ck_assert(tn_same_shape(gt[i], x[i]));
  }
  double e = E.v->data[0];
  ad_val_release(ctx, &E);
  ad_tape_free(ctx, tp);
  return e;
}

/* The tangent-only sweep (ad_backward_ex without leaf gradients) must give
 * the same adjoint tangents as the full forward-over-reverse sweep. */
static void check_tangent_only(tn_ctx *ctx, const opcase *c, blo_tensor *const *x, blo_tensor *const *t,
                               blo_tensor *w, blo_tensor *const *gt) {
  ad_tape *tp = ad_tape_new(ctx);
  ad_val in[MAXIN], E;
  ck_assert_ptr_nonnull(tp);
  for (int i = 0; i < c->nin; i++) {
    in[i].v = x[i];
    in[i].t = t[i];
    in[i].node = -1;
    ck_assert_int_eq(ad_leaf(ctx, tp, &in[i]), 0);
  }
  ck_assert_msg(eval_E(ctx, tp, c, in, w, &E) == 0, "%s: %s", c->name, ctx->err);
  ck_assert_msg(ad_backward_ex(ctx, tp, E, NULL, 0) == 0, "%s: backward: %s", c->name, ctx->err);
  for (int i = 0; i < c->nin; i++) {
    blo_tensor *g0, *t0;
    ck_assert_int_eq(ad_adjoint(ctx, tp, in[i].node, &g0, &t0), 0);
    ck_assert(tn_same_shape(t0, x[i]));
    ck_assert(tn_same_shape(g0, x[i]));
    for (size_t j = 0; j < t0->size; j++) {
      ck_assert_double_eq(g0->data[j], 0); /* no gradient in this mode */
      ck_assert_msg(fabs(t0->data[j] - gt[i]->data[j]) <= 1e-14 * (1 + fabs(gt[i]->data[j])),
                    "%s: tangent-only sweep: input %d [%zu]: %.17g vs %.17g", c->name, i, j, t0->data[j],
                    gt[i]->data[j]);
    }
    tn_release(ctx, g0);
    tn_release(ctx, t0);
  }
  ad_val_release(ctx, &E);
  ad_tape_free(ctx, tp);
}

/* new copy of x + s * v (v NULL: copy) */
static blo_tensor *axpy(tn_ctx *ctx, const blo_tensor *x, double s, const blo_tensor *v) {
  blo_tensor *r = tn_copy(ctx, x);
  ck_assert_ptr_nonnull(r);
  if (v)
    for (size_t i = 0; i < r->size; i++) r->data[i] += s * v->data[i];
  return r;
}

static double sq(double x) { return x * x; }

/* ||a - b|| / max(||b||, FD_FLOOR) over the concatenation of n tensor pairs, b
 * the finite-difference reference.  The floor is where central differences
 * with h = 1e-5 stop resolving anything: a derivative that is exactly 0 (e.g.
 * the product of a lane holding several zeros) has an FD estimate of
 * O(h^2) = 1e-10, and rounding contributes ~1e-11 |E|. */
#define FD_FLOOR 1e-6
static double relerr(blo_tensor *const *a, blo_tensor *const *b, int n) {
  double d = 0, nb = 0;
  for (int k = 0; k < n; k++) {
    ck_assert_uint_eq(a[k]->size, b[k]->size);
    for (size_t i = 0; i < a[k]->size; i++) {
      d += sq(a[k]->data[i] - b[k]->data[i]);
      nb += sq(b[k]->data[i]);
    }
  }
  return sqrt(d) / fmax(sqrt(nb), FD_FLOOR);
}

/* five-point central difference: f'(0) ~ (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h,
 * truncation O(h^4), so with h = 1e-5 only rounding (~1e-11 |E|) remains */
static const double FD_STEP[4] = {-2, -1, 1, 2};
static double fd5(const double *e, double h) { /* differences first: equal values cancel exactly */
  return ((e[0] - e[3]) + 8 * (e[2] - e[1])) / (12 * h);
}

static void release_all(tn_ctx *ctx, blo_tensor **t, int n) {
  for (int i = 0; i < n; i++) { tn_release(ctx, t[i]); t[i] = NULL; }
}

/* A new tape of E recorded at x, input i the leaf leaves[i]. */
static ad_tape *record_case(tn_ctx *ctx, const opcase *c, blo_tensor *const *x, blo_tensor *w, int *leaves,
                            ad_val *E) {
  ad_tape *tp = ad_tape_new(ctx);
  ad_val in[MAXIN];
  ck_assert_ptr_nonnull(tp);
  for (int i = 0; i < c->nin; i++) {
    in[i] = ad_const(x[i]);
    ck_assert_int_eq(ad_leaf(ctx, tp, &in[i]), 0);
    leaves[i] = in[i].node;
  }
  ck_assert_msg(eval_E(ctx, tp, c, in, w, E) == 0, "%s: %s", c->name, ctx->err);
  return tp;
}

/* Replay: a tape recorded without tangents, given the tangents t afterwards
 * (ad_retangent), must give the adjoint tangents gt of a sweep that carried
 * them from the start; a second replay with 2t must give exactly 2 gt (the
 * old tangents leave no trace), and the primal gradient g is unchanged. */
static void check_replay(tn_ctx *ctx, const opcase *c, blo_tensor *const *x, blo_tensor *const *t,
                         blo_tensor *w, blo_tensor *const *g, blo_tensor *const *gt) {
  ad_val E;
  int leaves[MAXIN];
  blo_tensor *t2[MAXIN];
  ad_tape *tp = record_case(ctx, c, x, w, leaves, &E);
  for (int i = 0; i < c->nin; i++) t2[i] = t[i] ? axpy(ctx, t[i], 1.0, t[i]) : NULL;
  for (int pass = 0; pass < 3; pass++) {
    blo_tensor *const *tk = pass == 1 ? t2 : t;
    double s = pass == 1 ? 2.0 : 1.0;
    ck_assert_msg(ad_retangent(ctx, tp, c->nin, leaves, tk) == 0, "%s: replay: %s", c->name, ctx->err);
    ck_assert_msg(ad_backward_ex(ctx, tp, E, NULL, pass == 2) == 0, "%s: backward: %s", c->name, ctx->err);
    for (int i = 0; i < c->nin; i++) {
      blo_tensor *g0, *t0;
      ck_assert_int_eq(ad_adjoint(ctx, tp, leaves[i], &g0, &t0), 0);
      for (size_t j = 0; j < t0->size; j++) {
        double want = s * gt[i]->data[j];
        ck_assert_msg(fabs(t0->data[j] - want) <= 1e-14 * (1 + fabs(want)),
                      "%s: replay %d: input %d [%zu]: %.17g vs %.17g", c->name, pass, i, j, t0->data[j], want);
        if (pass == 2) ck_assert_double_eq(g0->data[j], g[i]->data[j]);
      }
      tn_release(ctx, g0);
      tn_release(ctx, t0);
    }
  }
  /* a sweep for one leaf only gives that leaf the same adjoint tangent */
  ck_assert_int_eq(ad_retangent(ctx, tp, c->nin, leaves, t), 0);
  for (int i = 0; i < c->nin; i++) {
    blo_tensor *t0;
    ck_assert_msg(ad_backward_sel(ctx, tp, E, NULL, 0, &leaves[i], 1) == 0, "%s: %s", c->name, ctx->err);
    ck_assert_int_eq(ad_adjoint(ctx, tp, leaves[i], NULL, &t0), 0);
    for (size_t j = 0; j < t0->size; j++)
      ck_assert_msg(fabs(t0->data[j] - gt[i]->data[j]) <= 1e-14 * (1 + fabs(gt[i]->data[j])),
                    "%s: sweep for input %d only [%zu]: %.17g vs %.17g", c->name, i, j, t0->data[j], gt[i]->data[j]);
    tn_release(ctx, t0);
  }
  release_all(ctx, t2, c->nin);
  ad_val_release(ctx, &E);
  ad_tape_free(ctx, tp);
}

/* A tape recorded at x0 = x + 1e-3 v and moved to x (ad_set_leaf) must give
 * what a recording at x gives: value E0, gradient g, adjoint tangents gt,
 * after a second move away and back as well.  A tape bound to its point (a
 * zero-derivative operation of a taped value) must refuse to move. */
static void check_move(tn_ctx *ctx, const opcase *c, blo_tensor *const *x, blo_tensor *const *v,
                       blo_tensor *const *t, blo_tensor *w, double E0, blo_tensor *const *g, blo_tensor *const *gt) {
  ad_val E;
  int leaves[MAXIN];
  blo_tensor *x0[MAXIN];
  for (int i = 0; i < c->nin; i++) x0[i] = axpy(ctx, x[i], 1e-3, v[i]);
  ad_tape *tp = record_case(ctx, c, x0, w, leaves, &E);
  if (!ad_tape_movable(tp)) {
    ck_assert_int_eq(ad_set_leaf(ctx, tp, leaves[0], x[0]), -1);
    ck_assert_msg(strstr(ctx->err, "cannot be moved") != NULL, "%s: %s", c->name, ctx->err);
  } else {
    for (int pass = 0; pass < 3; pass++) {
      blo_tensor *const *to = pass == 1 ? x0 : x;
      for (int i = 0; i < c->nin; i++)
        ck_assert_msg(ad_set_leaf(ctx, tp, leaves[i], to[i]) == 0, "%s: move: %s", c->name, ctx->err);
      if (pass == 1) continue;
      blo_tensor *e;
      ck_assert_msg(ad_value(ctx, tp, E.node, &e) == 0, "%s: value: %s", c->name, ctx->err);
      ck_assert_msg(fabs(e->data[0] - E0) <= 1e-13 * (1 + fabs(E0)), "%s: moved value %.17g vs %.17g", c->name,
                    e->data[0], E0);
      tn_release(ctx, e);
      for (int grads_too = 0; grads_too < 2; grads_too++) {
        ck_assert_int_eq(ad_retangent(ctx, tp, c->nin, leaves, t), 0);
        ck_assert_msg(ad_backward_ex(ctx, tp, E, NULL, grads_too) == 0, "%s: backward: %s", c->name, ctx->err);
        for (int i = 0; i < c->nin; i++) {
          blo_tensor *g0, *t0;
          ck_assert_int_eq(ad_adjoint(ctx, tp, leaves[i], &g0, &t0), 0);
          for (size_t j = 0; j < t0->size; j++) {
            double wt = gt[i]->data[j], wg = g[i]->data[j];
            ck_assert_msg(fabs(t0->data[j] - wt) <= 1e-13 * (1 + fabs(wt)),
                          "%s: moved, input %d [%zu]: tangent %.17g vs %.17g", c->name, i, j, t0->data[j], wt);
            if (grads_too)
              ck_assert_msg(fabs(g0->data[j] - wg) <= 1e-13 * (1 + fabs(wg)),
                            "%s: moved, input %d [%zu]: gradient %.17g vs %.17g", c->name, i, j, g0->data[j], wg);
          }
          tn_release(ctx, g0);
          tn_release(ctx, t0);
        }
      }
    }
  }
  release_all(ctx, x0, c->nin);
  ad_val_release(ctx, &E);
  ad_tape_free(ctx, tp);
}

/* ------------------------------------------------------------------------ */
/* the harness                                                              */

START_TEST(test_op_case) {
  const opcase *c = &cases[_i];
  alloc_state st;
  tn_ctx ctx;
  tn_rng rng;
  const int n = c->nin;
  blo_tensor *x[MAXIN] = {0}, *v[MAXIN] = {0}, *g[MAXIN] = {0}, *fd[MAXIN] = {0};
  blo_tensor *xs[MAXIN] = {0}, *gq[4][MAXIN] = {{0}}, *g2[MAXIN] = {0}, *gt[MAXIN] = {0};
  blo_tensor *ts[MAXIN] = {0}, *fd2[MAXIN] = {0};

  ctx_open(&ctx, &st);
  tn_rng_seed(&rng, 1000 + (uint64_t)_i);
  for (int i = 0; i < n; i++) x[i] = gen_input(&ctx, &c->in[i], &rng);
  for (int i = 0; i < n; i++) v[i] = randn_like(&ctx, x[i], &rng);

  /* weights shaped like the op's output */
  ad_val in[MAXIN], y;
  for (int i = 0; i < n; i++) in[i] = ad_const(x[i]);
  ck_assert_msg(c->f(&ctx, NULL, in, &y, &c->p) == 0, "%s: %s", c->name, ctx.err);
  blo_tensor *w = randn_like(&ctx, y.v, &rng);
  ad_val_release(&ctx, &y);

  /* (1) reverse gradient vs central differences */
  double E0 = grads(&ctx, c, x, NULL, w, g, NULL);
  ck_assert_double_eq_tol(E0, E_at(&ctx, c, x, w), 1e-13 * (1 + fabs(E0)));
  for (int i = 0; i < n; i++) {
    fd[i] = tn_zeros_like(&ctx, x[i]);
    for (size_t j = 0; j < x[i]->size; j++) {
      double h = H * fmax(1.0, fabs(x[i]->data[j])), e[4];
      for (int k = 0; k < n; k++) xs[k] = x[k];
      blo_tensor *xp = tn_copy(&ctx, x[i]);
      xs[i] = xp;
      for (int q = 0; q < 4; q++) {
        xp->data[j] = x[i]->data[j] + FD_STEP[q] * h;
        e[q] = E_at(&ctx, c, xs, w);
      }
      fd[i]->data[j] = fd5(e, h);
      tn_release(&ctx, xp);
    }
  }
  double e1 = relerr(g, fd, n);
  ck_assert_msg(e1 <= TOL_FD, "%s: gradient vs FD rel err %.3g", c->name, e1);

  /* (2) JVP along v: equals <grad, v> and the FD directional derivative */
  double Et, gv = 0, ev[4];
  double Ej = jvp_at(&ctx, c, x, v, w, &Et);
  ck_assert_double_eq_tol(Ej, E0, 1e-13 * (1 + fabs(E0)));
  for (int i = 0; i < n; i++) gv += tn_dot(g[i], v[i]);
  ck_assert_msg(fabs(Et - gv) <= TOL_EXACT * fmax(fabs(gv), 1e-8), "%s: jvp %.17g vs <g,v> %.17g", c->name, Et,
                gv);
  for (int q = 0; q < 4; q++) {
    for (int i = 0; i < n; i++) xs[i] = axpy(&ctx, x[i], FD_STEP[q] * H, v[i]);
    ev[q] = E_at(&ctx, c, xs, w);
    release_all(&ctx, xs, n);
  }
  double dfd = fd5(ev, H);
  ck_assert_msg(fabs(Et - dfd) <= TOL_FD * fmax(fabs(dfd), FD_FLOOR), "%s: jvp %.17g vs FD %.17g", c->name, Et, dfd);

  /* (3)/(4) forward-over-reverse: tangent on every input (s = -1) or on input s
   * only; all adjoint tangents vs the FD of the gradients along that direction */
  double e3max = 0;
  for (int s = -1; s < n; s++) {
    for (int i = 0; i < n; i++) ts[i] = (s < 0 || s == i) ? v[i] : NULL;
    grads(&ctx, c, x, ts, w, g2, gt);
    check_tangent_only(&ctx, c, x, ts, w, gt);
    check_replay(&ctx, c, x, ts, w, g, gt);
    check_move(&ctx, c, x, v, ts, w, E0, g, gt);
    for (int i = 0; i < n; i++) /* tangents must not change the primal gradient */
      for (size_t j = 0; j < g[i]->size; j++) ck_assert_double_eq(g2[i]->data[j], g[i]->data[j]);
    /* adjoints may be shared references (both inputs of a+b get the same
     * tensor): difference into fresh tensors, never in place */
    for (int q = 0; q < 4; q++) {
      for (int i = 0; i < n; i++) xs[i] = axpy(&ctx, x[i], FD_STEP[q] * H, ts[i]);
      grads(&ctx, c, xs, NULL, w, gq[q], NULL);
      release_all(&ctx, xs, n);
    }
    for (int i = 0; i < n; i++) {
      fd2[i] = tn_zeros_like(&ctx, x[i]);
      for (size_t j = 0; j < x[i]->size; j++) {
        double e[4];
        for (int q = 0; q < 4; q++) e[q] = gq[q][i]->data[j];
        fd2[i]->data[j] = fd5(e, H);
      }
    }
    for (int q = 0; q < 4; q++) release_all(&ctx, gq[q], n);
    double e3 = relerr(gt, fd2, n);
    e3max = fmax(e3max, e3);
    ck_assert_msg(e3 <= TOL_FD, "%s: adjoint tangent (tangent on %s) vs FD of gradient: rel err %.3g", c->name,
                  s < 0 ? "all inputs" : s == 0 ? "input 0" : s == 1 ? "input 1" : "input >1", e3);
    release_all(&ctx, g2, n);
    release_all(&ctx, gt, n);
    release_all(&ctx, fd2, n);
  }

  if (getenv("TEST_AD_VERBOSE"))
    printf("%-60s grad %.1e  jvp %.1e/%.1e  hvp max %.1e\n", c->name, e1, fabs(Et - gv) / fmax(fabs(gv), 1e-8),
           fabs(Et - dfd) / fmax(fabs(dfd), FD_FLOOR), e3max);
  release_all(&ctx, x, n);
  release_all(&ctx, v, n);
  release_all(&ctx, g, n);
  release_all(&ctx, fd, n);
  tn_release(&ctx, w);
  ctx_close(&ctx, &st);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* worked examples                                                          */

/* E = sum(x^3): grad, JVP, HVP */
START_TEST(test_example_cube) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  const double xv[2] = {1, 2}, ones[2] = {1, 1}, e0[2] = {1, 0};
  blo_tensor *x = vec(&ctx, 2, xv), *three = tn_scalar(&ctx, 3), *g, *gt;
  ad_tape *tp = ad_tape_new(&ctx);
  ad_val a = ad_const(x), p, E;

  /* gradient */
  ck_assert_int_eq(ad_leaf(&ctx, tp, &a), 0);
  ck_assert_int_eq(ad_binary(&ctx, tp, TN_POW, a, ad_const(three), &p), 0);
  ck_assert_int_eq(ad_reduce(&ctx, tp, TN_SUM, p, -1, &E), 0);
  ck_assert_double_eq_tol(E.v->data[0], 9.0, 1e-15);
  ck_assert_int_eq(ad_backward(&ctx, tp, E, NULL), 0);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, a.node, &g, NULL), 0);
  ck_assert_double_eq_tol(g->data[0], 3.0, 1e-14);
  ck_assert_double_eq_tol(g->data[1], 12.0, 1e-14);
  tn_release(&ctx, g);
  ad_val_release(&ctx, &p);
  ad_val_release(&ctx, &E);
  ad_tape_reset(&ctx, tp);
  ck_assert_int_eq(ad_tape_size(tp), 0);

  /* JVP along [1, 1] = 3 + 12 = 15 (no tape) */
  blo_tensor *v = vec(&ctx, 2, ones);
  a = ad_const(x);
  a.t = v;
  ck_assert_int_eq(ad_binary(&ctx, NULL, TN_POW, a, ad_const(three), &p), 0);
  ck_assert_int_eq(ad_reduce(&ctx, NULL, TN_SUM, p, -1, &E), 0);
  ck_assert_double_eq_tol(E.t->data[0], 15.0, 1e-14);
  ad_val_release(&ctx, &p);
  ad_val_release(&ctx, &E);
  tn_release(&ctx, v);

  /* HVP along [1, 0]: H = diag(6x) -> [6, 0] */
  v = vec(&ctx, 2, e0);
  a = ad_const(x);
  a.t = v;
  ck_assert_int_eq(ad_leaf(&ctx, tp, &a), 0);
  ck_assert_int_eq(ad_binary(&ctx, tp, TN_POW, a, ad_const(three), &p), 0);
  ck_assert_int_eq(ad_reduce(&ctx, tp, TN_SUM, p, -1, &E), 0);
  ck_assert_int_eq(ad_backward(&ctx, tp, E, NULL), 0);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, a.node, &g, &gt), 0);
  ck_assert_double_eq_tol(g->data[0], 3.0, 1e-14);
  ck_assert_double_eq_tol(g->data[1], 12.0, 1e-14);
  ck_assert_double_eq_tol(gt->data[0], 6.0, 1e-14);
  ck_assert_double_eq_tol(gt->data[1], 0.0, 1e-14);
  tn_release(&ctx, g);
  tn_release(&ctx, gt);
  ad_val_release(&ctx, &p);
  ad_val_release(&ctx, &E);
  tn_release(&ctx, v);
  tn_release(&ctx, x);
  tn_release(&ctx, three);
  ad_tape_free(&ctx, tp);
  ctx_close(&ctx, &st);
}
END_TEST

/* mixed product: a = [0.5, -1], x = [1, 2] with tangent [1, 1]; E = sum(a * x^2):
 * adjoint tangent of a = d/de (x + e v)^2 = 2 x v = [2, 4]; that of x = 2 a v = [1, -2] */
START_TEST(test_example_mixed) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  const double av[2] = {0.5, -1}, xv[2] = {1, 2}, ones[2] = {1, 1};
  blo_tensor *A = vec(&ctx, 2, av), *X = vec(&ctx, 2, xv), *V = vec(&ctx, 2, ones), *g, *gt;
  ad_tape *tp = ad_tape_new(&ctx);
  ad_val a = ad_const(A), x = ad_const(X), x2, p, E;
  x.t = V;
  ck_assert_int_eq(ad_leaf(&ctx, tp, &a), 0);
  ck_assert_int_eq(ad_leaf(&ctx, tp, &x), 0);
  ck_assert_int_eq(ad_unary(&ctx, tp, TN_SQUARE, x, &x2), 0);
  ck_assert_int_eq(ad_binary(&ctx, tp, TN_MUL, a, x2, &p), 0);
  ck_assert_int_eq(ad_reduce(&ctx, tp, TN_SUM, p, -1, &E), 0);
  ck_assert_double_eq_tol(E.v->data[0], -3.5, 1e-15);
  ck_assert_double_eq_tol(E.t->data[0], 0.5 * 2 * 1 + -1 * 2 * 2, 1e-15); /* JVP: sum(a 2 x v) = -3 */
  ck_assert_int_eq(ad_backward(&ctx, tp, E, NULL), 0);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, a.node, &g, &gt), 0);
  ck_assert_double_eq_tol(g->data[0], 1.0, 1e-15);
  ck_assert_double_eq_tol(g->data[1], 4.0, 1e-15);
  ck_assert_double_eq_tol(gt->data[0], 2.0, 1e-15);
  ck_assert_double_eq_tol(gt->data[1], 4.0, 1e-15);
  tn_release(&ctx, g);
  tn_release(&ctx, gt);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, x.node, &g, &gt), 0);
  ck_assert_double_eq_tol(g->data[0], 1.0, 1e-15);  /* 2 a x */
  ck_assert_double_eq_tol(g->data[1], -4.0, 1e-15);
  ck_assert_double_eq_tol(gt->data[0], 1.0, 1e-15); /* 2 a v */
  ck_assert_double_eq_tol(gt->data[1], -2.0, 1e-15);
  tn_release(&ctx, g);
  tn_release(&ctx, gt);
  /* an intermediate node's adjoint is available too: dE/d(x^2) = a */
  ck_assert_int_eq(ad_adjoint(&ctx, tp, x2.node, &g, NULL), 0);
  ck_assert_double_eq(g->data[0], 0.5);
  ck_assert_double_eq(g->data[1], -1.0);
  tn_release(&ctx, g);
  ad_val_release(&ctx, &x2);
  ad_val_release(&ctx, &p);
  ad_val_release(&ctx, &E);
  tn_release(&ctx, A);
  tn_release(&ctx, X);
  tn_release(&ctx, V);
  ad_tape_free(&ctx, tp);
  ctx_close(&ctx, &st);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* conventions                                                              */

/* one reduction of a vector on a fresh tape; returns grad (and adjoint tangent
 * for tangent t) */
static void reduce_grad(tn_ctx *ctx, tn_reduce_op op, int n, const double *xv, const double *tv, double *g,
                        double *gt, double *z) {
  blo_tensor *X = vec(ctx, n, xv), *T = tv ? vec(ctx, n, tv) : NULL, *G, *GT;
  ad_tape *tp = ad_tape_new(ctx);
  ad_val x = ad_const(X), E;
  x.t = T;
  ck_assert_int_eq(ad_leaf(ctx, tp, &x), 0);
  ck_assert_int_eq(ad_reduce(ctx, tp, op, x, -1, &E), 0);
  *z = E.v->data[0];
  ck_assert_int_eq(ad_backward(ctx, tp, E, NULL), 0);
  ck_assert_int_eq(ad_adjoint(ctx, tp, x.node, &G, &GT), 0);
  for (int i = 0; i < n; i++) {
    g[i] = G->data[i];
    if (gt) gt[i] = GT->data[i];
  }
  tn_release(ctx, G);
  tn_release(ctx, GT);
  ad_val_release(ctx, &E);
  tn_release(ctx, X);
  tn_release(ctx, T);
  ad_tape_free(ctx, tp);
}

START_TEST(test_max_ties_share) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  const double x[4] = {1, 3, 3, 2}, xm[4] = {-1, 0, -1, 5};
  double g[4], z;
  reduce_grad(&ctx, TN_MAX, 4, x, NULL, g, NULL, &z);
  ck_assert_double_eq(z, 3);
  ck_assert_double_eq(g[0], 0);
  ck_assert_double_eq(g[1], 0.5);
  ck_assert_double_eq(g[2], 0.5);
  ck_assert_double_eq(g[3], 0);
  reduce_grad(&ctx, TN_MIN, 4, xm, NULL, g, NULL, &z);
  ck_assert_double_eq(z, -1);
  ck_assert_double_eq(g[0], 0.5);
  ck_assert_double_eq(g[1], 0);
  ck_assert_double_eq(g[2], 0.5);
  ck_assert_double_eq(g[3], 0);
  ctx_close(&ctx, &st);
}
END_TEST

START_TEST(test_max2_ties_to_a) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  const double av[2] = {1, 2}, bv[2] = {1, 3};
  blo_tensor *A = vec(&ctx, 2, av), *B = vec(&ctx, 2, bv), *ga, *gb;
  for (int op = 0; op < 2; op++) {
    ad_tape *tp = ad_tape_new(&ctx);
    ad_val a = ad_const(A), b = ad_const(B), m, E;
    ck_assert_int_eq(ad_leaf(&ctx, tp, &a), 0);
    ck_assert_int_eq(ad_leaf(&ctx, tp, &b), 0);
    ck_assert_int_eq(ad_binary(&ctx, tp, op ? TN_MIN2 : TN_MAX2, a, b, &m), 0);
    ck_assert_int_eq(ad_reduce(&ctx, tp, TN_SUM, m, -1, &E), 0);
    ck_assert_int_eq(ad_backward(&ctx, tp, E, NULL), 0);
    ck_assert_int_eq(ad_adjoint(&ctx, tp, a.node, &ga, NULL), 0);
    ck_assert_int_eq(ad_adjoint(&ctx, tp, b.node, &gb, NULL), 0);
    ck_assert_double_eq(ga->data[0], 1); /* tie: to a */
    ck_assert_double_eq(gb->data[0], 0);
    ck_assert_double_eq(ga->data[1], op ? 1 : 0); /* min(2,3) = a ; max(2,3) = b */
    ck_assert_double_eq(gb->data[1], op ? 0 : 1);
    tn_release(&ctx, ga);
    tn_release(&ctx, gb);
    ad_val_release(&ctx, &m);
    ad_val_release(&ctx, &E);
    ad_tape_free(&ctx, tp);
  }
  tn_release(&ctx, A);
  tn_release(&ctx, B);
  ctx_close(&ctx, &st);
}
END_TEST

/* prod: exact product-of-others with one and with two zeros, and the HVP */
START_TEST(test_prod_zeros) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  const double x1[3] = {2, 0, 3}, x2[3] = {0, 0, 3}, t[3] = {1, 1, 1};
  double g[3], gt[3], z;
  reduce_grad(&ctx, TN_PROD, 3, x1, t, g, gt, &z);
  ck_assert_double_eq(z, 0);
  ck_assert_double_eq(g[0], 0);
  ck_assert_double_eq(g[1], 6);
  ck_assert_double_eq(g[2], 0);
  /* H_ij = prod of the rest: H = [[0,3,0],[3,0,2],[0,2,0]], H 1 = [3, 5, 2] */
  ck_assert_double_eq(gt[0], 3);
  ck_assert_double_eq(gt[1], 5);
  ck_assert_double_eq(gt[2], 2);
  reduce_grad(&ctx, TN_PROD, 3, x2, t, g, gt, &z);
  ck_assert_double_eq(g[0], 0);
  ck_assert_double_eq(g[1], 0);
  ck_assert_double_eq(g[2], 0);
  /* H = [[0,3,0],[3,0,0],[0,0,0]] -> H 1 = [3, 3, 0] */
  ck_assert_double_eq(gt[0], 3);
  ck_assert_double_eq(gt[1], 3);
  ck_assert_double_eq(gt[2], 0);
  ck_assert(!isnan(g[0]) && !isnan(gt[2]));
  ctx_close(&ctx, &st);
}
END_TEST

START_TEST(test_norm_at_zero) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  const double x[3] = {0, 0, 0}, t[3] = {1, 2, 3};
  double g[3], gt[3], z;
  reduce_grad(&ctx, TN_NORM, 3, x, t, g, gt, &z);
  ck_assert_double_eq(z, 0);
  for (int i = 0; i < 3; i++) {
    ck_assert_double_eq(g[i], 0);
    ck_assert(isfinite(gt[i]));
  }
  ctx_close(&ctx, &st);
}
END_TEST

/* pow: a constant exponent never forms log(a), so negative bases give finite
 * first and second derivatives (tangent on the base only) */
START_TEST(test_pow_constant_exponent_negative_base) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  const double xv[2] = {-2, -0.5}, ones[2] = {1, 1};
  blo_tensor *X = vec(&ctx, 2, xv), *V = vec(&ctx, 2, ones), *B = tn_scalar(&ctx, 2), *g, *gt;
  ad_tape *tp = ad_tape_new(&ctx);
  ad_val x = ad_const(X), p, E;
  x.t = V;
  ck_assert_int_eq(ad_leaf(&ctx, tp, &x), 0);
  ck_assert_int_eq(ad_binary(&ctx, tp, TN_POW, x, ad_const(B), &p), 0);
  ck_assert_int_eq(ad_reduce(&ctx, tp, TN_SUM, p, -1, &E), 0);
  ck_assert_double_eq_tol(E.t->data[0], 2 * -2 + 2 * -0.5, 1e-15);
  ck_assert_int_eq(ad_backward(&ctx, tp, E, NULL), 0);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, x.node, &g, &gt), 0);
  ck_assert_double_eq_tol(g->data[0], -4, 1e-15);
  ck_assert_double_eq_tol(g->data[1], -1, 1e-15);
  ck_assert_double_eq_tol(gt->data[0], 2, 1e-15);
  ck_assert_double_eq_tol(gt->data[1], 2, 1e-15);
  tn_release(&ctx, g);
  tn_release(&ctx, gt);
  ad_val_release(&ctx, &p);
  ad_val_release(&ctx, &E);
  tn_release(&ctx, X);
  tn_release(&ctx, V);
  tn_release(&ctx, B);
  ad_tape_free(&ctx, tp);
  ctx_close(&ctx, &st);
}
END_TEST

/* detach: E = sum(x * detach(x)) has gradient x (not 2x) and no tangent
 * through the detached factor */
START_TEST(test_detach) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  const double xv[3] = {1, -2, 0.5}, tv[3] = {1, 1, 2};
  blo_tensor *X = vec(&ctx, 3, xv), *V = vec(&ctx, 3, tv), *g, *gt;
  ad_tape *tp = ad_tape_new(&ctx);
  ad_val x = ad_const(X), d, p, E;
  x.t = V;
  ck_assert_int_eq(ad_leaf(&ctx, tp, &x), 0);
  ck_assert_int_eq(ad_detach(&ctx, x, &d), 0);
  ck_assert_int_eq(d.node, -1);
  ck_assert_ptr_null(d.t);
  ck_assert_ptr_eq(d.v, X);
  ck_assert_int_eq(ad_binary(&ctx, tp, TN_MUL, x, d, &p), 0);
  ck_assert_int_eq(ad_reduce(&ctx, tp, TN_SUM, p, -1, &E), 0);
  ck_assert_double_eq_tol(E.t->data[0], 1 - 2 + 1, 1e-15); /* sum(v * x) */
  ck_assert_int_eq(ad_backward(&ctx, tp, E, NULL), 0);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, x.node, &g, &gt), 0);
  for (int i = 0; i < 3; i++) {
    ck_assert_double_eq(g->data[i], xv[i]);
    ck_assert_double_eq(gt->data[i], 0);
  }
  tn_release(&ctx, g);
  tn_release(&ctx, gt);
  ad_val_release(&ctx, &d);
  ad_val_release(&ctx, &p);
  ad_val_release(&ctx, &E);
  tn_release(&ctx, X);
  tn_release(&ctx, V);
  ad_tape_free(&ctx, tp);
  ctx_close(&ctx, &st);
}
END_TEST

/* What a replayed Hessian-vector product costs in matrix products, for
 * E = ||X w - t||^2 + sum(exp(lam) * w^2), tangent v on w:
 *   recording: X w (1); new tangents: none until a sweep reads them;
 *   sweep for w (H_ww v): X v and X' u (2);  sweep for lam only (H_lam,w v):
 *   none, since neither X v nor X' u reaches lam.
 * and the replayed products equal the closed forms 2 X'X v + 2 exp(lam) v and
 * 2 exp(lam) w v. */
START_TEST(test_replay_product_count) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  const double xv[6] = {1, 2, -1, 0.5, 3, -2}, wv[2] = {0.3, -0.7}, tv[3] = {1, -1, 2}, lv[2] = {0.1, -0.2},
               vv[2] = {1.5, -0.5};
  size_t sx[2] = {3, 2};
  blo_tensor *X = tn_from(&ctx, 2, sx, xv), *W = vec(&ctx, 2, wv), *T = vec(&ctx, 3, tv), *L = vec(&ctx, 2, lv),
             *V = vec(&ctx, 2, vv), *h;
  ad_tape *tp = ad_tape_new(&ctx);
  const ad_val none = {NULL, NULL, -1};
  ad_val w = ad_const(W), lam = ad_const(L), p = none, r = none, q = none, e1 = none, el = none, ww = none, m = none,
         e2 = none, E = none;
  ck_assert_int_eq(ad_leaf(&ctx, tp, &w), 0);
  ck_assert_int_eq(ad_leaf(&ctx, tp, &lam), 0);
  size_t before = ctx.n_products;
  ck_assert_int_eq(ad_matmul(&ctx, tp, ad_const(X), w, &p), 0);
  ck_assert_int_eq(ad_binary(&ctx, tp, TN_SUB, p, ad_const(T), &r), 0);
  ck_assert_int_eq(ad_unary(&ctx, tp, TN_SQUARE, r, &q), 0);
  ck_assert_int_eq(ad_reduce(&ctx, tp, TN_SUM, q, -1, &e1), 0);
  ck_assert_int_eq(ad_unary(&ctx, tp, TN_EXP, lam, &el), 0);
  ck_assert_int_eq(ad_unary(&ctx, tp, TN_SQUARE, w, &ww), 0);
  ck_assert_int_eq(ad_binary(&ctx, tp, TN_MUL, el, ww, &m), 0);
  ck_assert_int_eq(ad_reduce(&ctx, tp, TN_SUM, m, -1, &e2), 0);
  ck_assert_int_eq(ad_binary(&ctx, tp, TN_ADD, e1, e2, &E), 0);
  ck_assert_uint_eq(ctx.n_products - before, 1);
  int leaves[2] = {w.node, lam.node};
  blo_tensor *tg[2] = {V, NULL};
  for (int pass = 0; pass < 2; pass++) {
    before = ctx.n_products;
    ck_assert_int_eq(ad_retangent(&ctx, tp, 2, leaves, tg), 0);
    ck_assert_uint_eq(ctx.n_products - before, 0);                 /* computed on demand */
    before = ctx.n_products;
    ck_assert_int_eq(ad_backward_sel(&ctx, tp, E, NULL, 0, &leaves[pass], 1), 0);
    ck_assert_uint_eq(ctx.n_products - before, (pass == 0 ? 2 : 0)); /* X v, X' u only for w */
    ck_assert_int_eq(ad_adjoint(&ctx, tp, leaves[pass], NULL, &h), 0);
    for (int i = 0; i < 2; i++) {
      double want;
      if (pass == 0) { /* 2 X'X v + 2 exp(lam) v */
        want = 2 * exp(lv[i]) * vv[i];
        for (int k = 0; k < 3; k++) want += 2 * xv[2 * k + i] * (xv[2 * k] * vv[0] + xv[2 * k + 1] * vv[1]);
      } else {         /* d/dlam_i of 2 exp(lam_i) w_i v_i */
        want = 2 * exp(lv[i]) * wv[i] * vv[i];
      }
      ck_assert_double_eq_tol(h->data[i], want, 1e-14 * (1 + fabs(want)));
    }
    tn_release(&ctx, h);
  }
  ad_val *all[] = {&p, &r, &q, &e1, &el, &ww, &m, &e2, &E};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) ad_val_release(&ctx, all[i]);
  tn_release(&ctx, X); tn_release(&ctx, W); tn_release(&ctx, T); tn_release(&ctx, L); tn_release(&ctx, V);
  ad_tape_free(&ctx, tp);
  ctx_close(&ctx, &st);
}
END_TEST

/* seeded backward of a vector output: grad = A' s; a node out does not depend
 * on has zero adjoint; a constant output gives all-zero adjoints */
START_TEST(test_seed_and_unreached) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  const double av[6] = {1, 2, 3, 4, 5, 6}, xv[3] = {1, -1, 2}, sv[2] = {2, -1};
  size_t sa[2] = {2, 3};
  blo_tensor *A = tn_from(&ctx, 2, sa, av), *X = vec(&ctx, 3, xv), *S = vec(&ctx, 2, sv), *g, *gt;
  ad_tape *tp = ad_tape_new(&ctx);
  ad_val x = ad_const(X), u = ad_const(X), y, e;
  ck_assert_int_eq(ad_leaf(&ctx, tp, &x), 0);
  ck_assert_int_eq(ad_leaf(&ctx, tp, &u), 0); /* unused leaf */
  ck_assert_int_eq(ad_matmul(&ctx, tp, ad_const(A), x, &y), 0);
  ck_assert_int_eq(ad_unary(&ctx, tp, TN_EXP, u, &e), 0); /* recorded, but not reached from y */
  ck_assert_int_eq(ad_backward(&ctx, tp, y, NULL), -1);     /* not a scalar */
  ck_assert_ptr_nonnull(strstr(ctx.err, "scalar"));
  ck_assert_int_eq(ad_backward(&ctx, tp, y, X), -1);        /* seed of the wrong shape */
  ck_assert_ptr_nonnull(strstr(ctx.err, "seed"));
  ck_assert_int_eq(ad_backward(&ctx, tp, y, S), 0);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, x.node, &g, &gt), 0);
  ck_assert_double_eq(g->data[0], 2 * 1 - 4);
  ck_assert_double_eq(g->data[1], 2 * 2 - 5);
  ck_assert_double_eq(g->data[2], 2 * 3 - 6);
  for (int i = 0; i < 3; i++) ck_assert_double_eq(gt->data[i], 0);
  tn_release(&ctx, g);
  tn_release(&ctx, gt);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, u.node, &g, NULL), 0);
  for (int i = 0; i < 3; i++) ck_assert_double_eq(g->data[i], 0);
  tn_release(&ctx, g);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, e.node, &g, NULL), 0);
  for (int i = 0; i < 3; i++) ck_assert_double_eq(g->data[i], 0);
  tn_release(&ctx, g);
  /* backward of a constant: every adjoint is zero */
  blo_tensor *one = tn_scalar(&ctx, 1);
  ck_assert_int_eq(ad_backward(&ctx, tp, ad_const(one), NULL), 0);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, x.node, &g, NULL), 0);
  for (int i = 0; i < 3; i++) ck_assert_double_eq(g->data[i], 0);
  tn_release(&ctx, g);
  tn_release(&ctx, one);
  /* a single-element output of rank > 0 needs no seed: y[0:1] -> [1] */
  {
    tn_index_t ix[1] = {{TN_IX_SLICE, 0, 1}};
    ad_val y0;
    ck_assert_int_eq(ad_index(&ctx, tp, y, ix, 1, &y0), 0);
    ck_assert_int_eq(y0.v->rank, 1);
    ck_assert_int_eq(ad_backward(&ctx, tp, y0, NULL), 0);
    ck_assert_int_eq(ad_adjoint(&ctx, tp, x.node, &g, NULL), 0);
    for (int i = 0; i < 3; i++) ck_assert_double_eq(g->data[i], av[i]); /* row 0 of A */
    tn_release(&ctx, g);
    ad_val_release(&ctx, &y0);
  }
  /* a second backward replaces (does not add to) the adjoints */
  ck_assert_int_eq(ad_backward(&ctx, tp, y, S), 0);
  ck_assert_int_eq(ad_backward(&ctx, tp, y, S), 0);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, x.node, &g, NULL), 0);
  ck_assert_double_eq(g->data[0], -2);
  tn_release(&ctx, g);
  ad_val_release(&ctx, &y);
  ad_val_release(&ctx, &e);
  tn_release(&ctx, A);
  tn_release(&ctx, X);
  tn_release(&ctx, S);
  ad_tape_free(&ctx, tp);
  ctx_close(&ctx, &st);
}
END_TEST

/* a leaf used many times: adjoints accumulate (x + x + x*x) */
START_TEST(test_accumulation) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  const double xv[2] = {3, -1}, tv[2] = {1, 2};
  blo_tensor *X = vec(&ctx, 2, xv), *V = vec(&ctx, 2, tv), *g, *gt;
  ad_tape *tp = ad_tape_new(&ctx);
  ad_val x = ad_const(X), s, q, r, E;
  x.t = V;
  ck_assert_int_eq(ad_leaf(&ctx, tp, &x), 0);
  ck_assert_int_eq(ad_binary(&ctx, tp, TN_ADD, x, x, &s), 0);
  ck_assert_int_eq(ad_binary(&ctx, tp, TN_MUL, x, x, &q), 0);
  ck_assert_int_eq(ad_binary(&ctx, tp, TN_ADD, s, q, &r), 0);
  ck_assert_int_eq(ad_reduce(&ctx, tp, TN_SUM, r, -1, &E), 0);
  ck_assert_int_eq(ad_backward(&ctx, tp, E, NULL), 0);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, x.node, &g, &gt), 0);
  ck_assert_double_eq(g->data[0], 2 + 6);  /* 2 + 2x */
  ck_assert_double_eq(g->data[1], 2 - 2);
  ck_assert_double_eq(gt->data[0], 2);     /* 2 v */
  ck_assert_double_eq(gt->data[1], 4);
  tn_release(&ctx, g);
  tn_release(&ctx, gt);
  ad_val_release(&ctx, &s);
  ad_val_release(&ctx, &q);
  ad_val_release(&ctx, &r);
  ad_val_release(&ctx, &E);
  tn_release(&ctx, X);
  tn_release(&ctx, V);
  ad_tape_free(&ctx, tp);
  ctx_close(&ctx, &st);
}
END_TEST

/* concat/stack of many inputs (beyond the on-stack pointer buffer), some
 * without tangents: E = sum(y^2) -> grad 2 x, adjoint tangent 2 v */
START_TEST(test_many_inputs) {
  enum { N = 40 };
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  ad_tape *tp = ad_tape_new(&ctx);
  blo_tensor *X[N], *V[N], *g, *gt;
  ad_val x[N];
  size_t one = 1;
  for (int i = 0; i < N; i++) {
    double xv = 0.1 * i - 1, vv = i % 3 ? 0.5 * i : 0;
    X[i] = _i ? tn_scalar(&ctx, xv) : tn_from(&ctx, 1, &one, &xv);
    V[i] = i % 3 ? tn_scalar(&ctx, vv) : NULL;
    if (V[i] && !_i) { tn_release(&ctx, V[i]); V[i] = tn_from(&ctx, 1, &one, &vv); }
    x[i] = ad_const(X[i]);
    x[i].t = V[i];
    ck_assert_int_eq(ad_leaf(&ctx, tp, &x[i]), 0);
  }
  ad_val y, y2, E;
  ck_assert_int_eq(_i ? ad_stack(&ctx, tp, x, N, 0, &y) : ad_concat(&ctx, tp, x, N, 0, &y), 0);
  ck_assert_int_eq(y.v->rank, 1);
  ck_assert_uint_eq(y.v->size, N);
  ck_assert_int_eq(ad_unary(&ctx, tp, TN_SQUARE, y, &y2), 0);
  ck_assert_int_eq(ad_reduce(&ctx, tp, TN_SUM, y2, -1, &E), 0);
  ck_assert_int_eq(ad_backward(&ctx, tp, E, NULL), 0);
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(ad_adjoint(&ctx, tp, x[i].node, &g, &gt), 0);
    ck_assert_double_eq(g->data[0], 2 * X[i]->data[0]);
    ck_assert_double_eq(gt->data[0], V[i] ? 2 * V[i]->data[0] : 0.0);
    tn_release(&ctx, g);
    tn_release(&ctx, gt);
  }
  /* a replay through the 40-input node (its inputs go through a pooled
   * buffer): tangents 3v give adjoint tangents 6v */
  int leaves[N];
  blo_tensor *V3[N];
  for (int i = 0; i < N; i++) {
    leaves[i] = x[i].node;
    V3[i] = V[i] ? tn_affine(&ctx, V[i], 3.0, 0.0) : NULL;
  }
  ck_assert_int_eq(ad_retangent(&ctx, tp, N, leaves, V3), 0);
  ck_assert_int_eq(ad_backward_ex(&ctx, tp, E, NULL, 0), 0);
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(ad_adjoint(&ctx, tp, x[i].node, NULL, &gt), 0);
    ck_assert_double_eq(gt->data[0], V[i] ? 6 * V[i]->data[0] : 0.0);
    tn_release(&ctx, gt);
    tn_release(&ctx, V3[i]);
  }
  ad_val_release(&ctx, &y);
  ad_val_release(&ctx, &y2);
  ad_val_release(&ctx, &E);
  for (int i = 0; i < N; i++) {
    tn_release(&ctx, X[i]);
    tn_release(&ctx, V[i]);
  }
  ad_tape_free(&ctx, tp);
  ctx_close(&ctx, &st);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* errors                                                                   */

START_TEST(test_errors) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  size_t s23[2] = {2, 3}, s4 = 4, s33[2] = {3, 3};
  blo_tensor *A = tn_zeros(&ctx, 2, s23), *B = tn_zeros(&ctx, 1, &s4), *Z = tn_zeros(&ctx, 2, s33), *g;
  ad_tape *tp = ad_tape_new(&ctx);
  ad_val a = ad_const(A), b = ad_const(B), out = {A, A, 7};

  ck_assert_int_eq(ad_leaf(&ctx, tp, &a), 0);
  ck_assert_int_eq(ad_leaf(&ctx, tp, &b), 0);
  ck_assert_int_eq(ad_binary(&ctx, tp, TN_ADD, a, b, &out), -1);
  ck_assert_ptr_nonnull(strstr(ctx.err, "shape mismatch"));
  ck_assert_ptr_null(out.v); /* the output is cleared on failure */
  ck_assert_ptr_null(out.t);
  ck_assert_int_eq(out.node, -1);
  ck_assert_int_eq(ad_tape_size(&*tp), 2); /* nothing recorded */
  ck_assert_int_eq(ad_matmul(&ctx, tp, a, a, &out), -1);
  ck_assert_ptr_nonnull(strstr(ctx.err, "matmul"));
  ck_assert_int_eq(ad_reduce(&ctx, tp, TN_SUM, a, 5, &out), -1);
  ck_assert_int_eq(ad_softmax(&ctx, tp, a, 3, &out), -1);
  size_t bad = 5;
  ck_assert_int_eq(ad_reshape(&ctx, tp, a, 1, &bad, &out), -1);
  size_t s3 = 3;
  blo_tensor *b3 = tn_zeros(&ctx, 1, &s3);
  ck_assert_int_eq(ad_linsolve(&ctx, tp, ad_const(Z), ad_const(b3), &out), -1); /* singular (zeros) */
  tn_release(&ctx, b3);
  ck_assert_ptr_nonnull(strstr(ctx.err, "singular"));
  ad_val two[2] = {a, b};
  ck_assert_int_eq(ad_concat(&ctx, tp, two, 2, 0, &out), -1);
  ck_assert_int_eq(ad_stack(&ctx, tp, two, 2, 0, &out), -1);
  ck_assert_int_eq(ad_concat(&ctx, tp, two, 0, 0, &out), -1);
  ck_assert_int_eq(ad_tape_size(tp), 2);

  /* tape misuse */
  ck_assert_int_eq(ad_adjoint(&ctx, tp, 2, &g, NULL), -1);
  ck_assert_ptr_null(g);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, -1, &g, NULL), -1);
  ck_assert_int_eq(ad_leaf(&ctx, NULL, &a), -1);
  ck_assert_int_eq(ad_backward(&ctx, NULL, a, NULL), -1);
  ad_tape_reset(&ctx, tp);
  ck_assert_int_eq(ad_unary(&ctx, tp, TN_EXP, a, &out), -1); /* a.node is stale now */
  ck_assert_ptr_nonnull(strstr(ctx.err, "stale"));
  ck_assert_int_eq(ad_unary(&ctx, NULL, TN_EXP, a, &out), 0); /* without a tape it is a constant */
  ck_assert_int_eq(out.node, -1);
  ad_val_release(&ctx, &out);
  ad_val none = {NULL, NULL, -1};
  ck_assert_int_eq(ad_unary(&ctx, NULL, TN_EXP, none, &out), -1);

  tn_release(&ctx, A);
  tn_release(&ctx, B);
  tn_release(&ctx, Z);
  ad_tape_free(&ctx, tp);
  ad_tape_free(&ctx, NULL);
  ad_tape_reset(&ctx, NULL);
  ctx_close(&ctx, &st);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* a full second-order step used by the fault-injection and steady-state tests:
 * leaves x [3] (tangent v), W [3,3]; the objective uses most ops. */

static int big_objective(tn_ctx *ctx, ad_tape *tp, ad_val x, ad_val W, const blo_tensor *idx, ad_val *E) {
  ad_val h = NOV, t = NOV, s = NOV, c = NOV, k = NOV, l = NOV, m = NOV, q = NOV, r = NOV, st = NOV, sm = NOV,
         n = NOV, parts[2];
  tn_index_t ix[1] = {{TN_IX_SLICE, 0, 2}};
  int rc = -1;
  *E = NOV;
  STEP(ad_matmul(ctx, tp, W, x, &h));                 /* [3] */
  STEP(ad_unary(ctx, tp, TN_TANH, h, &t));            /* [3] */
  STEP(ad_linsolve(ctx, tp, W, t, &s));               /* [3] */
  parts[0] = s;
  parts[1] = x;
  STEP(ad_concat(ctx, tp, parts, 2, 0, &c));          /* [6] */
  STEP(ad_take(ctx, tp, c, idx, 0, &k));              /* [4] */
  STEP(ad_index(ctx, tp, k, ix, 1, &l));              /* [2] */
  STEP(ad_stack(ctx, tp, parts, 2, 0, &st));          /* [2,3] */
  STEP(ad_softmax(ctx, tp, st, 1, &sm));              /* [2,3] */
  STEP(ad_reduce(ctx, tp, TN_LOGSUMEXP, sm, 1, &m));  /* [2] */
  STEP(ad_binary(ctx, tp, TN_MUL, l, m, &q));         /* [2] */
  STEP(ad_reduce(ctx, tp, TN_NORM, st, 0, &n));       /* [3] */
  STEP(ad_reduce(ctx, tp, TN_PROD, n, -1, &r));       /* [] */
  ad_val_release(ctx, &s);
  STEP(ad_reduce(ctx, tp, TN_SUM, q, -1, &s));        /* [] */
  STEP(ad_binary(ctx, tp, TN_ADD, s, r, E));
  rc = 0;
fail:
  ad_val_release(ctx, &h); ad_val_release(ctx, &t); ad_val_release(ctx, &s);
  ad_val_release(ctx, &c); ad_val_release(ctx, &k); ad_val_release(ctx, &l);
  ad_val_release(ctx, &m); ad_val_release(ctx, &q); ad_val_release(ctx, &r);
  ad_val_release(ctx, &st); ad_val_release(ctx, &sm); ad_val_release(ctx, &n);
  return rc;
}

/* record; backward; read adjoints (with tangents); reset.  Returns 0/-1. */
static int big_step(tn_ctx *ctx, ad_tape *tp, blo_tensor *X, blo_tensor *V, blo_tensor *Wt, blo_tensor *idx,
                    double *out) {
  ad_val x = ad_const(X), W = ad_const(Wt), E = NOV;
  blo_tensor *gx = NULL, *tx = NULL, *gw = NULL, *tw = NULL;
  int rc = -1;
  x.t = V;
  STEP(ad_leaf(ctx, tp, &x));
  STEP(ad_leaf(ctx, tp, &W));
  STEP(big_objective(ctx, tp, x, W, idx, &E));
  STEP(ad_backward(ctx, tp, E, NULL));
  STEP(ad_adjoint(ctx, tp, x.node, &gx, &tx));
  STEP(ad_adjoint(ctx, tp, W.node, &gw, &tw));
  if (out) {
    out[0] = E.v->data[0];
    out[1] = gx->data[0] + gx->data[2];
    out[2] = tx->data[1] + tw->data[4];
  }
  rc = 0;
fail:
  tn_release(ctx, gx);
  tn_release(ctx, tx);
  tn_release(ctx, gw);
  tn_release(ctx, tw);
  ad_val_release(ctx, &E);
  ad_tape_reset(ctx, tp);
  return rc;
}

static void big_inputs(tn_ctx *ctx, blo_tensor **X, blo_tensor **V, blo_tensor **W, blo_tensor **idx) {
  const double xv[3] = {0.3, -0.7, 1.1}, vv[3] = {1, -0.5, 0.25}, iv[4] = {5, 0, 2, 2};
  const double wv[9] = {2, 0.3, -0.2, 0.1, 1.5, 0.4, -0.3, 0.2, 1.8};
  size_t s33[2] = {3, 3};
  *X = vec(ctx, 3, xv);
  *V = vec(ctx, 3, vv);
  *W = tn_from(ctx, 2, s33, wv);
  *idx = vec(ctx, 4, iv);
}

/* Every allocation failure point in a full second-order step reports an error
 * and leaks nothing (the counting allocator must be back to 0).  Loop index 0:
 * every allocation from the k-th on fails; 1: only the k-th and the next fail
 * (later ones succeed: partial failure inside an operation or a VJP). */
START_TEST(test_fault_injection) {
  double ref[3];
  {
    alloc_state st;
    tn_ctx ctx;
    ctx_open(&ctx, &st);
    blo_tensor *X, *V, *W, *idx;
    big_inputs(&ctx, &X, &V, &W, &idx);
    ad_tape *tp = ad_tape_new(&ctx);
    ck_assert_msg(big_step(&ctx, tp, X, V, W, idx, ref) == 0, "%s", ctx.err);
    ad_tape_free(&ctx, tp);
    tn_release(&ctx, X); tn_release(&ctx, V); tn_release(&ctx, W); tn_release(&ctx, idx);
    ctx_close(&ctx, &st);
  }
  int failures = 0, done = 0;
  for (long k = 0; k < 100000 && !done; k++) {
    alloc_state st;
    tn_ctx ctx;
    ctx_open(&ctx, &st);
    blo_tensor *X, *V, *W, *idx;
    big_inputs(&ctx, &X, &V, &W, &idx);
    ck_assert(X && V && W && idx);
    st.fail_at = st.calls + k; /* the inputs exist; fail the k-th allocation after */
    st.burst = 2 * _i; /* 2: tensor.c retries a failed data allocation once */
    ad_tape *tp = ad_tape_new(&ctx);
    double got[3];
    if (!tp) {
      failures++;
    } else if (big_step(&ctx, tp, X, V, W, idx, got) != 0) {
      failures++;
      ck_assert_msg(ctx.err[0] != '\0', "failure at allocation %ld without a message", k);
    } else {
      done = 1;
      for (int i = 0; i < 3; i++) ck_assert_double_eq(got[i], ref[i]);
    }
    st.fail_at = -1;
    ad_tape_free(&ctx, tp);
    tn_release(&ctx, X); tn_release(&ctx, V); tn_release(&ctx, W); tn_release(&ctx, idx);
    ctx_close(&ctx, &st);
  }
  ck_assert(done);
  ck_assert_int_gt(failures, 20);
  if (getenv("TEST_AD_VERBOSE")) printf("fault injection mode %d: %d failure points\n", _i, failures);
}
END_TEST

/* A max-pool recording moved to a point whose window maxima are elsewhere
 * routes the gradient to the new maxima: the pool does not bind the tape. */
START_TEST(test_maxpool_move) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  size_t sh[4] = {1, 1, 2, 4}, shw[4] = {1, 1, 1, 2};
  blo_tensor *x0 = tn_from(&ctx, 4, sh, (double[]){1, 2, 3, 4, 5, 6, 7, 8});
  blo_tensor *x1 = tn_from(&ctx, 4, sh, (double[]){9, 2, 3, 4, 5, 6, 7, 1});
  blo_tensor *w = tn_from(&ctx, 4, shw, (double[]){2, 3}), *v = tn_zeros_like(&ctx, x0);
  for (size_t i = 0; i < v->size; i++) v->data[i] = (double)i + 1;
  tn_conv_opt o = {2, 2, 0, 0};
  ad_tape *tp = ad_tape_new(&ctx);
  ad_val x = ad_const(x0), y, p, E;
  ck_assert_int_eq(ad_leaf(&ctx, tp, &x), 0);
  ck_assert_int_eq(ad_maxpool2d(&ctx, tp, x, 2, 2, &o, &y), 0);
  ck_assert_int_eq(ad_binary(&ctx, tp, TN_MUL, y, ad_const(w), &p), 0);
  ck_assert_int_eq(ad_reduce(&ctx, tp, TN_SUM, p, -1, &E), 0);
  ck_assert_double_eq(E.v->data[0], 6 * 2 + 8 * 3);
  ck_assert(ad_tape_movable(tp));
  ck_assert_int_eq(ad_set_leaf(&ctx, tp, x.node, x1), 0);
  blo_tensor *e, *g, *gt;
  ck_assert_int_eq(ad_value(&ctx, tp, E.node, &e), 0);
  ck_assert_double_eq(e->data[0], 9 * 2 + 7 * 3);
  ck_assert_int_eq(ad_retangent(&ctx, tp, 1, &x.node, &v), 0);
  ck_assert_int_eq(ad_backward(&ctx, tp, E, NULL), 0);
  ck_assert_int_eq(ad_adjoint(&ctx, tp, x.node, &g, &gt), 0);
  const double want[8] = {2, 0, 0, 0, 0, 0, 3, 0};
  for (int i = 0; i < 8; i++) {
    ck_assert_double_eq(g->data[i], want[i]);
    ck_assert_double_eq(gt->data[i], 0); /* piecewise linear: no curvature */
  }
  tn_release(&ctx, e); tn_release(&ctx, g); tn_release(&ctx, gt);
  ad_val_release(&ctx, &y); ad_val_release(&ctx, &p); ad_val_release(&ctx, &E);
  ad_tape_free(&ctx, tp);
  tn_release(&ctx, x0); tn_release(&ctx, x1); tn_release(&ctx, w); tn_release(&ctx, v);
  ctx_close(&ctx, &st);
}
END_TEST

/* Allocation failure inside the derivative rules of the C library functions
 * and of the network layers (three chains of the case table): record with tangents, sweep, move the
 * recording and sweep it tangent-only.  Every failure reports a message and
 * leaks nothing; the first run that succeeds gives the reference results. */
START_TEST(test_fault_injection_elementwise) {
  const opcase *c = NULL;
  static const op_fn chains[] = {f_trig, f_trig2, f_cnn};
  for (int i = 0; i < NCASES; i++)
    if (cases[i].f == chains[_i]) c = &cases[i];
  ck_assert_ptr_nonnull(c);
  double ref[2] = {0, 0};
  int failures = 0, done = 0;
  for (long k = -1; k < 100000 && !done; k++) { /* k = -1: no failure, the reference */
    alloc_state st;
    tn_ctx ctx;
    tn_rng rng;
    blo_tensor *x[MAXIN] = {0}, *v[MAXIN] = {0}, *x2[MAXIN] = {0};
    ad_val in[MAXIN], y = NOV, E = NOV;
    ctx_open(&ctx, &st);
    tn_rng_seed(&rng, 77);
    for (int i = 0; i < c->nin; i++) {
      x[i] = gen_input(&ctx, &c->in[i], &rng);
      v[i] = randn_like(&ctx, x[i], &rng);
      x2[i] = axpy(&ctx, x[i], 1e-2, v[i]);
    }
    ad_tape *tp = ad_tape_new(&ctx);
    ck_assert_ptr_nonnull(tp);
    if (k >= 0) st.fail_at = st.calls + k;
    int rc = 0;
    for (int i = 0; i < c->nin && !rc; i++) {
      in[i] = ad_const(x[i]);
      in[i].t = v[i];
      rc = ad_leaf(&ctx, tp, &in[i]);
    }
    if (!rc) rc = c->f(&ctx, tp, in, &y, &c->p);
    if (!rc) rc = ad_reduce(&ctx, tp, TN_SUM, y, -1, &E);
    if (!rc) rc = ad_backward(&ctx, tp, E, NULL);
    blo_tensor *g = NULL, *t = NULL;
    double got[2] = {0, 0};
    if (!rc && !(rc = ad_adjoint(&ctx, tp, in[0].node, &g, &t))) got[0] = tn_dot(g, t);
    tn_release(&ctx, g);
    tn_release(&ctx, t);
    g = t = NULL;
    for (int i = 0; i < c->nin && !rc; i++) rc = ad_set_leaf(&ctx, tp, in[i].node, x2[i]);
    int leaves[MAXIN];
    for (int i = 0; i < c->nin; i++) leaves[i] = in[i].node;
    if (!rc) rc = ad_retangent(&ctx, tp, c->nin, leaves, v);
    if (!rc) rc = ad_backward_ex(&ctx, tp, E, NULL, 0);
    if (!rc && !(rc = ad_adjoint(&ctx, tp, in[0].node, NULL, &t))) got[1] = tn_dot(t, v[0]);
    tn_release(&ctx, t);
    st.fail_at = -1;
    if (rc) {
      ck_assert_msg(k >= 0, "%s: %s", c->name, ctx.err);
      ck_assert_msg(ctx.err[0] != '\0', "failure at allocation %ld without a message", k);
      failures++;
    } else if (k < 0) {
      ref[0] = got[0];
      ref[1] = got[1];
      ck_assert(isfinite(ref[0]) && isfinite(ref[1]) && ref[1] != 0);
    } else {
      done = 1;
      ck_assert_double_eq(got[0], ref[0]);
      ck_assert_double_eq(got[1], ref[1]);
    }
    ad_val_release(&ctx, &y);
    ad_val_release(&ctx, &E);
    ad_tape_free(&ctx, tp);
    release_all(&ctx, x, c->nin);
    release_all(&ctx, v, c->nin);
    release_all(&ctx, x2, c->nin);
    ctx_close(&ctx, &st);
  }
  ck_assert(done);
  ck_assert_int_gt(failures, 20);
  if (getenv("TEST_AD_VERBOSE")) printf("fault injection %s: %d failure points\n", c->name, failures);
}
END_TEST

/* Steady state: after warm-up, record/backward/adjoint/reset makes no system
 * allocation (tensor data/headers) and the tape's arrays do not grow. */
START_TEST(test_no_alloc_steady_state) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  blo_tensor *X, *V, *W, *idx;
  big_inputs(&ctx, &X, &V, &W, &idx);
  ad_tape *tp = ad_tape_new(&ctx);
  double r0[3], r[3];
  ck_assert_int_eq(big_step(&ctx, tp, X, V, W, idx, r0), 0);
  ck_assert_int_eq(big_step(&ctx, tp, X, V, W, idx, r), 0);
  size_t sys = ctx.n_sys_alloc, tape_allocs = ad_tape_allocs(tp);
  long calls = st.calls;
  ck_assert_uint_gt(tape_allocs, 0);
  for (int it = 0; it < 10; it++) {
    ck_assert_int_eq(big_step(&ctx, tp, X, V, W, idx, r), 0);
    for (int i = 0; i < 3; i++) ck_assert_double_eq(r[i], r0[i]);
  }
  ck_assert_uint_eq(ctx.n_sys_alloc, sys);
  ck_assert_uint_eq(ad_tape_allocs(tp), tape_allocs);
  ck_assert_int_eq(st.calls, calls); /* nothing at all reached the host allocator */
  ad_tape_free(&ctx, tp);
  tn_release(&ctx, X); tn_release(&ctx, V); tn_release(&ctx, W); tn_release(&ctx, idx);
  ctx_close(&ctx, &st);
}
END_TEST

/* the tape grows past its initial capacity and keeps it across resets */
START_TEST(test_tape_growth) {
  alloc_state st;
  tn_ctx ctx;
  ctx_open(&ctx, &st);
  blo_tensor *X = tn_scalar(&ctx, 0.5), *g;
  ad_tape *tp = ad_tape_new(&ctx);
  size_t allocs = 0;
  for (int round = 0; round < 3; round++) {
    ad_val x = ad_const(X), y = NOV, z;
    ck_assert_int_eq(ad_leaf(&ctx, tp, &x), 0);
    y = ad_val_retain(x);
    for (int i = 0; i < 500; i++) { /* y = sin(y), 500 times */
      ck_assert_int_eq(ad_unary(&ctx, tp, TN_SIN, y, &z), 0);
      ad_val_release(&ctx, &y);
      y = z;
    }
    ck_assert_int_eq(ad_tape_size(tp), 501);
    ck_assert_int_eq(ad_backward(&ctx, tp, y, NULL), 0);
    ck_assert_int_eq(ad_adjoint(&ctx, tp, x.node, &g, NULL), 0);
    double d = 1, v = 0.5; /* chain rule by hand */
    for (int i = 0; i < 500; i++) { d *= cos(v); v = sin(v); }
    ck_assert_double_eq_tol(g->data[0], d, 1e-14 * fabs(d));
    tn_release(&ctx, g);
    ad_val_release(&ctx, &y);
    ad_tape_reset(&ctx, tp);
    if (round == 0) allocs = ad_tape_allocs(tp);
    else ck_assert_uint_eq(ad_tape_allocs(tp), allocs);
  }
  tn_release(&ctx, X);
  ad_tape_free(&ctx, tp);
  ctx_close(&ctx, &st);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *ad_suite(void) {
  Suite *s = suite_create("ad");
  TCase *tc = tcase_create("ops");
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, test_op_case, 0, NCASES);
  suite_add_tcase(s, tc);
  tc = tcase_create("examples");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, test_example_cube);
  tcase_add_test(tc, test_example_mixed);
  tcase_add_test(tc, test_max_ties_share);
  tcase_add_test(tc, test_max2_ties_to_a);
  tcase_add_test(tc, test_prod_zeros);
  tcase_add_test(tc, test_norm_at_zero);
  tcase_add_test(tc, test_pow_constant_exponent_negative_base);
  tcase_add_test(tc, test_detach);
  tcase_add_test(tc, test_seed_and_unreached);
  tcase_add_test(tc, test_replay_product_count);
  tcase_add_test(tc, test_accumulation);
  tcase_add_test(tc, test_maxpool_move);
  tcase_add_loop_test(tc, test_many_inputs, 0, 2); /* 0: concat of [1]s, 1: stack of []s */
  suite_add_tcase(s, tc);
  tc = tcase_create("robustness");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, test_errors);
  tcase_add_loop_test(tc, test_fault_injection, 0, 2);
  tcase_add_loop_test(tc, test_fault_injection_elementwise, 0, 3);
  tcase_add_test(tc, test_no_alloc_steady_state);
  tcase_add_test(tc, test_tape_growth);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return check_run(ad_suite(), "test_ad", CK_FORK);
}
