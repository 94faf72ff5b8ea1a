/* hg_cg.c: cg(iters, tol), implicit differentiation (docs/METHODS.md 4.3):
 * solve H_yy q = grad_y F by conjugate gradient with Hessian-vector
 * products, then d = grad_x F - H_xy q (one mixed product).  q is
 * warm-started from the previous outer step of the same solve.  Stops when
 * ||r|| <= tol ||b|| or after `iters` iterations.  Time: iters HVPs + 1;
 * memory O(n).
 *
 * H_yy must be positive definite along the search directions.  The
 * curvature p'Hp of each direction is compared with the scale of H, not
 * with zero: |p'Hp| <= c eps ||p||^2 ||H|| (||H|| estimated from the
 * products seen so far, c covering the rounding of one product) means H is
 * singular along p, which rounding leaves a tiny number of either sign.
 *  - Singular (f is flat along some direction of y): the system has no
 *    unique solution, and when grad_y F has a component in H's null space,
 *    none at all; plain CG then divides by that rounding noise.  cg()
 *    switches to CG on the normal equations H^2 q = H grad_y F from q = 0,
 *    whose iterates stay in the range of H and converge to the minimum-norm
 *    least-squares solution q = H^+ grad_y F (2 HVPs per iteration, within
 *    the same `iters`).  That is the limit of unroll() on such a problem:
 *    gradient descent never moves y along the flat directions.
 *  - Negative curvature (H indefinite: y is not at a minimum of f): cg()
 *    stops and keeps the iterate before that direction (truncated CG).
 * Both are reported through bl_hg_report (status "singular" / "indefinite",
 * one warning line, the result's hypergrad_status). */
#include "bilevel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { double *q, *res, *p, *Ap, *s, *hxy; } cg_st;

static const hg_param params[] = {{"iters", 50, 1, 1, 0}, {"tol", 1e-10, 0, 0, 0}};

static int setup(bl_run *r, const hg_spec *sp, void **out) {
  (void)sp;
  cg_st *st = calloc(1, sizeof *st);
  if (!st) return bl_error(r, "out of memory");
  *out = st;
  if (!(st->q = bl_alloc(r, r->n)) || !(st->res = bl_alloc(r, r->n)) || !(st->p = bl_alloc(r, r->n)) ||
      !(st->Ap = bl_alloc(r, r->n)) || !(st->s = bl_alloc(r, r->n)) || !(st->hxy = bl_alloc(r, r->m)))
    return EV_ERR;
  return EV_OK;
}

/* Minimum-norm least-squares solution of H q = b by CG on H^2 q = H b from
 * q = 0 (every iterate is in the range of H).  Stops when ||H r|| <= tol
 * ||H b||, after iters iterations, or when H p vanishes (p in the null
 * space: nothing left to gain). */
static int min_norm(bl_run *r, cg_st *st, const double *b, long iters, double tol, double *hnorm) {
  size_t n = r->n;
  memset(st->q, 0, n * sizeof(double));
  memcpy(st->res, b, n * sizeof(double));
  if (bl_hvp(r, st->res, NULL, st->s)) return EV_ERR;
  memcpy(st->p, st->s, n * sizeof(double));
  double gam = bl_dot(st->s, st->s, n), gam0 = gam;
  for (long k = 0; k < iters && gam > 0 && sqrt(gam) > tol * sqrt(gam0); k++) {
    if (bl_hvp(r, st->p, NULL, st->Ap)) return EV_ERR;
    double pp = bl_dot(st->p, st->p, n), aa = bl_dot(st->Ap, st->Ap, n);
    if (sqrt(aa / pp) > *hnorm) *hnorm = sqrt(aa / pp);
    if (!(aa > bl_curv_noise(n) * bl_curv_noise(n) * pp * *hnorm * *hnorm)) break;
    double alpha = gam / aa;
    for (size_t i = 0; i < n; i++) {
      st->q[i] += alpha * st->p[i];
      st->res[i] -= alpha * st->Ap[i];
    }
    if (bl_hvp(r, st->res, NULL, st->s)) return EV_ERR;
    double gam2 = bl_dot(st->s, st->s, n), beta = gam2 / gam;
    for (size_t i = 0; i < n; i++) st->p[i] = st->s[i] + beta * st->p[i];
    gam = gam2;
  }
  return EV_OK;
}

static int compute(bl_run *r, const hg_spec *sp, void *vst, double *d) {
  cg_st *st = vst;
  size_t n = r->n, m = r->m;
  long iters = (long)sp->p[0];
  double tol = sp->p[1];
  const double *b = r->Fy;
  double bnorm = bl_norm(b, n);
  memcpy(d, r->Fx, m * sizeof(double));
  if (bnorm == 0) {
    memset(st->q, 0, n * sizeof(double));
    return EV_OK;
  }
  /* every product below is at this point: record f once, replay it */
  if (bl_hold_point(r)) return EV_ERR;
  double hnorm = 0;   /* running lower estimate of ||H||: max ||H p|| / ||p|| */
  /* residual of the warm start */
  if (bl_norm(st->q, n) > 0) {
    if (bl_hvp(r, st->q, NULL, st->Ap)) return EV_ERR;
    hnorm = bl_norm(st->Ap, n) / bl_norm(st->q, n);
    for (size_t i = 0; i < n; i++) st->res[i] = b[i] - st->Ap[i];
  } else {
    memcpy(st->res, b, n * sizeof(double));
  }
  memcpy(st->p, st->res, n * sizeof(double));
  double rs = bl_dot(st->res, st->res, n);
  long k;
  for (k = 0; k < iters && sqrt(rs) > tol * bnorm; k++) {
    if (bl_hvp(r, st->p, NULL, st->Ap)) return EV_ERR;
    double pp = bl_dot(st->p, st->p, n), pAp = bl_dot(st->p, st->Ap, n);
    double an = bl_norm(st->Ap, n) / sqrt(pp);
    if (an > hnorm) hnorm = an;
    double floor_ = bl_curv_noise(n) * pp * hnorm;
    if (!isfinite(pAp)) break;   /* a non-finite product: reported by the caller's check */
    if (pAp < -floor_) {
      char c[40];
      snprintf(c, sizeof c, "%.3g", pAp / pp);
      bl_hg_report(r, "indefinite",
                   "cg(): negative curvature (p'Hp / |p|^2 = %s at iteration %ld): the inner Hessian is indefinite, "
                   "so y is not at a minimum of f; returned the iterate before that direction (truncated CG)",
                   c, k + 1);
      break;
    }
    if (pAp <= floor_) {
      bl_hg_report(r, "singular",
                   "cg(): the inner Hessian is singular (zero curvature along a search direction at iteration %ld: "
                   "f is flat along some direction of y); returned the minimum-norm solution q = H^+ grad_y F",
                   k + 1);
      if (min_norm(r, st, b, iters, tol, &hnorm)) return EV_ERR;
      break;
    }
    double alpha = rs / pAp;
    for (size_t i = 0; i < n; i++) {
      st->q[i] += alpha * st->p[i];
      st->res[i] -= alpha * st->Ap[i];
    }
    double rs2 = bl_dot(st->res, st->res, n);
    double beta = rs2 / rs;
    for (size_t i = 0; i < n; i++) st->p[i] = st->res[i] + beta * st->p[i];
    rs = rs2;
  }
  if (bl_hvp(r, st->q, st->hxy, NULL)) return EV_ERR;
  for (size_t j = 0; j < m; j++) d[j] -= st->hxy[j];
  return EV_OK;
}

static void cleanup(bl_run *r, void *vst) {
  (void)r;
  cg_st *st = vst;
  free(st->q);
  free(st->res);
  free(st->p);
  free(st->Ap);
  free(st->s);
  free(st->hxy);
  free(st);
}

const hg_method hg_cg = {
  "cg", params, 2, 2, "cg(iters = 50, tol = 1e-10)",
  "implicit hypergradient: conjugate gradient on H_yy q = grad_y F",
  NULL, NULL, setup, NULL, NULL, compute, cleanup, HG_ESTIMATOR,
};
