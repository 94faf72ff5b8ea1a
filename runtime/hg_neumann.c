/* hg_neumann.c: neumann(K, alpha), implicit differentiation with a
 * truncated Neumann series (methods.md 4.4):
 *   v = grad_y F; p = v; K times: v -= alpha H_yy v; p += v;
 *   d = grad_x F - alpha H_xy p
 * i.e. H_yy^-1 ~ alpha sum_{j=0..K} (I - alpha H_yy)^j.  alpha defaults to the
 * inner optimizer's learning rate; needs 0 < alpha < 2 / lambda_max.  At
 * y = y* it equals unroll(K) for sgd.  Time: K HVPs + 1; memory O(n). */
#include "bilevel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct { double *v, *p, *hv, *hxy; } neu_st;

static const hg_param params[] = {{"K", 20, 1, 0, 0}, {"alpha", NAN, 0, 0, 1}};

static int setup(bl_run *r, const hg_spec *sp, void **out) {
  (void)sp;
  neu_st *st = calloc(1, sizeof *st);
  if (!st) return bl_error(r, "out of memory");
  *out = st;
  if (!(st->v = bl_alloc(r, r->n)) || !(st->p = bl_alloc(r, r->n)) || !(st->hv = bl_alloc(r, r->n)) ||
      !(st->hxy = bl_alloc(r, r->m)))
    return EV_ERR;
  return EV_OK;
}

static int compute(bl_run *r, const hg_spec *sp, void *vst, double *d) {
  neu_st *st = vst;
  size_t n = r->n, m = r->m;
  long K = (long)sp->p[0];
  double alpha = isnan(sp->p[1]) ? bl_inner_lr(r) : sp->p[1];
  memcpy(st->v, r->Fy, n * sizeof(double));
  memcpy(st->p, r->Fy, n * sizeof(double));
  if (bl_hold_point(r)) return EV_ERR;   /* K + 1 products at one point: replayed */
  for (long k = 0; k < K; k++) {
    if (bl_hvp(r, st->v, NULL, st->hv)) return EV_ERR;
    for (size_t i = 0; i < n; i++) {
      st->v[i] -= alpha * st->hv[i];
      st->p[i] += st->v[i];
    }
  }
  if (bl_hvp(r, st->p, st->hxy, NULL)) return EV_ERR;
  for (size_t j = 0; j < m; j++) d[j] = r->Fx[j] - alpha * st->hxy[j];
  return EV_OK;
}

static void cleanup(bl_run *r, void *vst) {
  (void)r;
  neu_st *st = vst;
  free(st->v);
  free(st->p);
  free(st->hv);
  free(st->hxy);
  free(st);
}

const hg_method hg_neumann = {
  "neumann", params, 2, 2, "neumann(K = 20, alpha = inner lr)",
  "implicit hypergradient with the K-term truncated Neumann series for the inverse Hessian",
  NULL, NULL, setup, NULL, NULL, compute, cleanup,
};
