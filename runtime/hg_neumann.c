/* hg_neumann.c: neumann(K, alpha), implicit differentiation with a
 * truncated Neumann series (docs/METHODS.md 4.4):
 *   v = grad_y F; p = v; K times: v -= alpha H_yy v; p += v;
 *   d = grad_x F - alpha H_xy p
 * i.e. H_yy^-1 ~ alpha sum_{j=0..K} (I - alpha H_yy)^j.  alpha defaults to the
 * inner optimizer's learning rate; needs 0 < alpha < 2 / lambda_max.  At
 * y = y* it equals unroll(K) for sgd.  Time: K HVPs + 1; memory O(n).
 *
 * The terms (I - alpha H)^j grad_y F never grow when H is positive
 * semidefinite and alpha lambda_max <= 2.  A term that grows, a curvature
 * v'Hv / |v|^2 >= 2 / alpha, or a negative one, shows the series diverging:
 * the sum stops before that term and the method reports "diverged" (or
 * "indefinite") through bl_hg_report instead of returning a blown-up sum. */
#include "bilevel.h"

#include <math.h>
#include <stdio.h>
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
  double vv = bl_dot(st->v, st->v, n), hnorm = 0;
  const double noise = bl_curv_noise(n);
  for (long k = 0; k < K && vv > 0; k++) {
    if (bl_hvp(r, st->v, NULL, st->hv)) return EV_ERR;
    /* v'Hv / |v|^2 is a curvature of H: alpha times it >= 2 proves
     * alpha lambda_max >= 2, a negative one proves H indefinite; either way
     * the terms (I - alpha H)^j v stop shrinking */
    double rq = bl_dot(st->v, st->hv, n) / vv, hn = bl_norm(st->hv, n) / sqrt(vv);
    if (hn > hnorm) hnorm = hn;
    double vv2 = 0;
    for (size_t i = 0; i < n; i++) {
      double vi = st->v[i] - alpha * st->hv[i];
      vv2 += vi * vi;
    }
    /* with H positive semidefinite and alpha lambda_max <= 2 the terms never
     * grow: a growing term is the divergence showing */
    int neg = rq < -noise * hnorm, big = alpha * rq >= 2, grows = vv2 > vv * (1 + 1e-10);
    if (neg || big || grows || !isfinite(vv2)) {
      char a[40], c[40];
      snprintf(a, sizeof a, "%.3g", alpha);
      snprintf(c, sizeof c, "%.3g", rq);
      if (neg)
        bl_hg_report(r, "indefinite",
                     "neumann(): negative curvature (v'Hv / |v|^2 = %s at term %ld): the inner Hessian is indefinite "
                     "and the series diverges; returned the sum of the first %ld terms", c, k + 1, k + 1);
      else
        bl_hg_report(r, "diverged",
                     "neumann(): the series diverges at term %ld (alpha = %s, curvature %s seen: it needs "
                     "alpha < 2 / lambda_max); returned the sum of the first %ld terms", k + 1, a, c, k + 1);
      break;
    }
    for (size_t i = 0; i < n; i++) {
      st->v[i] -= alpha * st->hv[i];
      st->p[i] += st->v[i];
    }
    vv = vv2;
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
  NULL, NULL, setup, NULL, NULL, compute, cleanup, HG_ESTIMATOR,
};
