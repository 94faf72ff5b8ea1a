/* hg_unroll.c: unroll(K), reverse-mode differentiation through the last K
 * inner steps (all of them when K is omitted), docs/METHODS.md section 4.1.
 *
 * The solve loop stores y_t, the step size and the values drawn at each of
 * the last K steps; no tape of the loop is kept.  Going back one step costs
 * one pass over f with tangent c on y, which gives H_yy c and H_xy c together.
 * Heavy-ball momentum (v' = beta v + g(y), y' = y - lr v') is reversed
 * through its velocity: with adjoints (a_y, a_v) of (y', v'),
 *   c = a_v - lr a_y,   a_y += H_yy c,   d += H_xy c,   a_v = beta c.
 * Plain sgd is the case beta = 0, a_v = 0.  When every step is unrolled and
 * the start is cold, the init path (dy0/dx)^T a_y is added (meta-learning).
 * A constrained inner variable (bl_constrain.c) is stepped as
 * y' = P(y - lr v'): a_y first goes back through P's Jacobian at that step's
 * pre-projection point, and the bounds' dependence on x is added at the end.
 * Time: K HVP+mixed passes; memory O(K n). */
#include "bilevel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct { double *ay, *av, *c, *hyy, *hxy; } unroll_st;

static const hg_param params[] = {{"K", NAN, 1, 1, 0}};

static long traj(const hg_spec *sp) {
  double K = sp->p[0];
  return isnan(K) ? -1 : (long)K;
}

static int check(bl_run *r, const hg_spec *sp) {
  (void)sp;
  if (r->set.inner_opt.kind == OPT_ADAM)
    return bl_error(r, "unroll() cannot differentiate through the adam inner optimizer yet: use inner_opt = sgd() "
                       "or momentum(), or an implicit method such as cg()");
  if (opt_is_second(r->set.inner_opt.kind))
    return bl_error(r, "%s() cannot differentiate through the %s inner optimizer: %s: use an implicit method (cg(), "
                       "neumann(), exact()), which needs only the inner solution %s reaches in few steps, or "
                       "inner_opt = sgd() or momentum() to differentiate through the steps",
                    "unroll", opt_name(r->set.inner_opt.kind), "its steps depend on the line search or trust region and on the solver's curvature model, which are not differentiated", opt_name(r->set.inner_opt.kind));
  return EV_OK;
}

static int setup(bl_run *r, const hg_spec *sp, void **out) {
  (void)sp;
  unroll_st *st = calloc(1, sizeof *st);
  if (!st) return bl_error(r, "out of memory");
  *out = st;
  if (!(st->ay = bl_alloc(r, r->n)) || !(st->av = bl_alloc(r, r->n)) || !(st->c = bl_alloc(r, r->n)) ||
      !(st->hyy = bl_alloc(r, r->n)) || !(st->hxy = bl_alloc(r, r->m)))
    return EV_ERR;
  return EV_OK;
}

static int compute(bl_run *r, const hg_spec *sp, void *vst, double *d) {
  (void)sp;
  unroll_st *st = vst;
  size_t n = r->n, m = r->m;
  double beta = r->set.inner_opt.kind == OPT_MOMENTUM ? r->set.inner_opt.beta : 0;
  memcpy(d, r->Fx, m * sizeof(double));
  memcpy(st->ay, r->Fy, n * sizeof(double));
  memset(st->av, 0, n * sizeof(double));
  long first = bl_traj_first(r);
  for (long t = r->T - 1; t >= first; t--) {
    double lr = bl_traj_lr(r, t);
    if (r->con) blc_unroll_step(r, t, st->ay);   /* through the projection y_{t+1} = P(z_t) */
    for (size_t i = 0; i < n; i++) st->c[i] = st->av[i] - lr * st->ay[i];
    if (bl_traj_load(r, t) || bl_hvp(r, st->c, st->hxy, st->hyy)) return EV_ERR;
    for (size_t i = 0; i < n; i++) {
      st->ay[i] += st->hyy[i];
      st->av[i] = beta * st->c[i];
    }
    for (size_t j = 0; j < m; j++) d[j] += st->hxy[j];
  }
  if (bl_traj_restore(r)) return EV_ERR;
  if (r->con && first == 0 && bl_init_path(r)) blc_unroll_step(r, -1, st->ay);   /* y_0 = P(init) */
  if (r->con && blc_bound_vjp(r, d)) return EV_ERR;
  if (first == 0 && bl_init_path(r) && bl_init_vjp(r, st->ay, d)) return EV_ERR;
  return EV_OK;
}

static void cleanup(bl_run *r, void *vst) {
  (void)r;
  unroll_st *st = vst;
  free(st->ay);
  free(st->av);
  free(st->c);
  free(st->hyy);
  free(st->hxy);
  free(st);
}

const hg_method hg_unroll = {
  "unroll", params, 1, 1, "unroll(K = all)",
  "hypergradient by reverse-mode differentiation through the last K inner steps",
  traj, check, setup, NULL, NULL, compute, cleanup, HG_ESTIMATOR,
};
