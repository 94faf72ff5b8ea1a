/* hg_exact.c: exact(), the implicit-function-theorem hypergradient with a
 * dense inner Hessian: H_yy is assembled column by column from n HVPs,
 * symmetrized, and H_yy q = grad_y F is solved by LAPACK (tn_linsolve);
 * d = grad_x F - H_xy q.  For checking other methods on small problems:
 * time n HVPs + O(n^3), memory O(n^2).  A singular H_yy is an error (the
 * inner problem must have a unique solution; proximal = eps adds eps I). */
#include "bilevel.h"

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
  blo_tensor *H = tn_new(ctx, 2, shape), *b = tn_from(ctx, 1, shape, r->Fy), *q = NULL;
  int rc = EV_OK;
  if (!H || !b) rc = bl_error(r, "%s", ctx->err);
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
    if (!(q = tn_linsolve(ctx, H, b)))
      rc = bl_error(r, "exact(): %s: the inner Hessian is singular (use proximal = eps, or cg())", ctx->err);
  }
  if (rc == EV_OK && bl_hvp(r, q->data, st->hxy, NULL)) rc = EV_ERR;
  if (rc == EV_OK)
    for (size_t j = 0; j < m; j++) d[j] = r->Fx[j] - st->hxy[j];
  tn_release(ctx, H);
  tn_release(ctx, b);
  tn_release(ctx, q);
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
  NULL, check, setup, NULL, NULL, compute, cleanup,
};
