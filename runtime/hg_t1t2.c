/* hg_t1t2.c: t1t2(), the one-step look-ahead approximation (T1-T2 / DARTS,
 * docs/METHODS.md 4.5): with y' = y - xi grad_y f(x, y) and xi the inner learning
 * rate,
 *   d = grad_x F(x, y') - xi H_xy(x, y) grad_y F(x, y').
 * It equals neumann(K = 0) and unroll(1) on a quadratic.  The mixed product
 * is exact (one forward-over-reverse pass), not a finite difference.
 * Time: 1 gradient of F + 1 mixed product; memory O(n). */
#include "bilevel.h"

#include <stdlib.h>
#include <string.h>

typedef struct { double *yp, *gx, *gy, *hxy; } t1t2_st;

static int setup(bl_run *r, const hg_spec *sp, void **out) {
  (void)sp;
  t1t2_st *st = calloc(1, sizeof *st);
  if (!st) return bl_error(r, "out of memory");
  *out = st;
  if (!(st->yp = bl_alloc(r, r->n)) || !(st->gx = bl_alloc(r, r->m)) || !(st->gy = bl_alloc(r, r->n)) ||
      !(st->hxy = bl_alloc(r, r->m)))
    return EV_ERR;
  return EV_OK;
}

static int compute(bl_run *r, const hg_spec *sp, void *vst, double *d) {
  (void)sp;
  t1t2_st *st = vst;
  size_t n = r->n, m = r->m;
  double xi = bl_inner_lr(r), F1;
  /* r->gy is grad_y f at y_T, left by the inner loop */
  for (size_t i = 0; i < n; i++) st->yp[i] = r->y[i] - xi * r->gy[i];
  if (bl_put_y(r, st->yp)) return EV_ERR;
  int rc = bl_grad_F(r, &F1, st->gx, st->gy);
  if (bl_put_y(r, r->y) || rc) return EV_ERR;
  if (bl_hvp(r, st->gy, st->hxy, NULL)) return EV_ERR;
  for (size_t j = 0; j < m; j++) d[j] = st->gx[j] - xi * st->hxy[j];
  return EV_OK;
}

static void cleanup(bl_run *r, void *vst) {
  (void)r;
  t1t2_st *st = vst;
  free(st->yp);
  free(st->gx);
  free(st->gy);
  free(st->hxy);
  free(st);
}

const hg_method hg_t1t2 = {
  "t1t2", NULL, 0, 0, "t1t2()",
  "one-step look-ahead hypergradient (T1-T2 / DARTS)",
  NULL, NULL, setup, NULL, NULL, compute, cleanup, HG_ESTIMATOR,
};
