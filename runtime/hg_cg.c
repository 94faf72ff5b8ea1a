/* hg_cg.c: cg(iters, tol), implicit differentiation (methods.md 4.3):
 * solve H_yy q = grad_y F by conjugate gradient with Hessian-vector
 * products, then d = grad_x F - H_xy q (one mixed product).  q is
 * warm-started from the previous outer step of the same solve.  Stops when
 * ||r|| <= tol ||b||, after `iters` iterations, or when a direction of
 * non-positive curvature shows up (H_yy must be positive definite; use
 * proximal = eps for a singular one).  Time: iters HVPs + 1; memory O(n). */
#include "bilevel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct { double *q, *res, *p, *Ap, *hxy; } cg_st;

static const hg_param params[] = {{"iters", 50, 1, 1, 0}, {"tol", 1e-10, 0, 0, 0}};

static int setup(bl_run *r, const hg_spec *sp, void **out) {
  (void)sp;
  cg_st *st = calloc(1, sizeof *st);
  if (!st) return bl_error(r, "out of memory");
  *out = st;
  if (!(st->q = bl_alloc(r, r->n)) || !(st->res = bl_alloc(r, r->n)) || !(st->p = bl_alloc(r, r->n)) ||
      !(st->Ap = bl_alloc(r, r->n)) || !(st->hxy = bl_alloc(r, r->m)))
    return EV_ERR;
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
  /* residual of the warm start */
  if (bl_norm(st->q, n) > 0) {
    if (bl_hvp(r, st->q, NULL, st->Ap)) return EV_ERR;
    for (size_t i = 0; i < n; i++) st->res[i] = b[i] - st->Ap[i];
  } else {
    memcpy(st->res, b, n * sizeof(double));
  }
  memcpy(st->p, st->res, n * sizeof(double));
  double rs = bl_dot(st->res, st->res, n);
  for (long k = 0; k < iters && sqrt(rs) > tol * bnorm; k++) {
    if (bl_hvp(r, st->p, NULL, st->Ap)) return EV_ERR;
    double pAp = bl_dot(st->p, st->Ap, n);
    if (!(pAp > 0)) break;   /* not positive definite along p: keep what we have */
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
  free(st->hxy);
  free(st);
}

const hg_method hg_cg = {
  "cg", params, 2, 2, "cg(iters = 50, tol = 1e-10)",
  "implicit hypergradient: conjugate gradient on H_yy q = grad_y F",
  NULL, NULL, setup, NULL, NULL, compute, cleanup,
};
