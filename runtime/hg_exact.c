/* hg_exact.c: exact(), the implicit-function-theorem hypergradient with a
 * dense inner Hessian: H_yy is assembled column by column from n HVPs,
 * symmetrized and diagonalized by LAPACK (tn_eigh), and H_yy q = grad_y F
 * is solved in its eigenbasis; d = grad_x F - H_xy q.  For checking other
 * methods on small problems: time n HVPs + O(n^3), memory O(n^2).
 * An eigenvalue within rounding of zero (relative to the largest) is an
 * error: the inner solution is not unique.  A negative one (y at a saddle
 * of f) is reported (status "indefinite") and the implicit derivative of
 * the stationary point is returned. */
#include "bilevel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EXACT_MAX_N = 4096 };

typedef struct { double *e, *col, *hxy; } exact_st;

static int check(bl_run *r, const hg_spec *sp) {
  (void)sp;
  if (r->n > EXACT_MAX_N)
    return bl_error(r, "exact() forms the dense inner Hessian: %zu inner values is too many (at most %d); "
                       "use cg()", r->n, EXACT_MAX_N);
  return EV_OK;
}

static int setup(bl_run *r, const hg_spec *sp, void **out) {
  (void)sp;
  exact_st *st = calloc(1, sizeof *st);
  if (!st) return bl_error(r, "out of memory");
  *out = st;
  if (!(st->e = bl_alloc(r, r->n)) || !(st->col = bl_alloc(r, r->n)) || !(st->hxy = bl_alloc(r, r->m)))
    return EV_ERR;
  return EV_OK;
}

static int compute(bl_run *r, const hg_spec *sp, void *vst, double *d) {
  (void)sp;
  exact_st *st = vst;
  tn_ctx *ctx = &r->S->tn;
  size_t n = r->n, m = r->m, shape[2] = {n, n};
  blo_tensor *H = tn_new(ctx, 2, shape), *lam = NULL, *V = NULL;
  int rc = EV_OK;
  if (!H) rc = bl_error(r, "%s", ctx->err);
  if (rc == EV_OK) rc = bl_hold_point(r);   /* n + 1 products at one point: replayed */
  for (size_t i = 0; i < n && rc == EV_OK; i++) {
    st->e[i] = 1;
    rc = bl_hvp(r, st->e, NULL, st->col);
    st->e[i] = 0;
    for (size_t k = 0; rc == EV_OK && k < n; k++) H->data[k * n + i] = st->col[k];
  }
  if (rc == EV_OK) {
    for (size_t i = 0; i < n; i++)
      for (size_t k = i + 1; k < n; k++) {
        double a = 0.5 * (H->data[i * n + k] + H->data[k * n + i]);
        H->data[i * n + k] = H->data[k * n + i] = a;
      }
    if (!bl_finite(H->data, n * n)) rc = bl_error(r, "exact(): the inner Hessian has a non-finite entry");
  }
  if (rc == EV_OK && tn_eigh(ctx, H, &lam, &V)) rc = bl_error(r, "exact(): %s", ctx->err);
  if (rc == EV_OK) {
    /* H = V diag(lam) V': an eigenvalue within rounding of zero, relative to
     * the largest, makes H numerically singular */
    double big = fmax(fabs(lam->data[0]), fabs(lam->data[n - 1])), small = INFINITY;
    for (size_t i = 0; i < n; i++) small = fmin(small, fabs(lam->data[i]));
    double floor_ = bl_curv_noise(n) * big;
    if (!(small > floor_)) {
      char a[40], b[40];
      snprintf(a, sizeof a, "%.3g", small);
      snprintf(b, sizeof b, "%.3g", big);
      rc = bl_error(r, "exact(): the inner Hessian is singular (smallest eigenvalue %s in magnitude, largest %s): "
                       "the inner solution is not unique. Make it unique (proximal = eps with a warm start, or a "
                       "regularizer such as eps * sum(y^2) in the inner objective), or use unroll(), which "
                       "differentiates what the inner loop does", a, b);
    } else if (lam->data[0] < 0) {
      char a[40];
      snprintf(a, sizeof a, "%.3g", lam->data[0]);
      bl_hg_report(r, "indefinite",
                   "exact(): the inner Hessian is indefinite (smallest eigenvalue %s): y is not at a minimum of f; "
                   "returned the implicit derivative of the stationary point", a);
    }
  }
  if (rc == EV_OK) {
    /* q = V diag(1 / lam) V' grad_y F */
    double *c = st->col, *q = st->e;
    for (size_t i = 0; i < n; i++) {
      double s = 0;
      for (size_t k = 0; k < n; k++) s += V->data[k * n + i] * r->Fy[k];
      c[i] = s / lam->data[i];
    }
    for (size_t k = 0; k < n; k++) {
      double s = 0;
      for (size_t i = 0; i < n; i++) s += V->data[k * n + i] * c[i];
      q[k] = s;
    }
    rc = bl_hvp(r, q, st->hxy, NULL);
    memset(q, 0, n * sizeof(double));   /* e is the unit-vector buffer again */
  }
  if (rc == EV_OK)
    for (size_t j = 0; j < m; j++) d[j] = r->Fx[j] - st->hxy[j];
  tn_release(ctx, H);
  tn_release(ctx, lam);
  tn_release(ctx, V);
  return rc;
}

static void cleanup(bl_run *r, void *vst) {
  (void)r;
  exact_st *st = vst;
  free(st->e);
  free(st->col);
  free(st->hxy);
  free(st);
}

const hg_method hg_exact = {
  "exact", NULL, 0, 0, "exact()",
  "implicit hypergradient with the dense inner Hessian and a LAPACK solve (small problems, for checking)",
  NULL, check, setup, NULL, NULL, compute, cleanup, HG_ESTIMATOR,
};
