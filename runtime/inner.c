/* inner.c: what the inner solvers that evaluate f along their steps (lbfgs,
 * newton) share: the objective they descend, the dispatch from the inner
 * loop, and the report of a failed step.
 *
 * The objective is f (its negation for `inner maximize`) plus the proximal
 * term eps/2 |y - y_prev|^2 when the solve has one, the same function whose gradient the inner loop follows
 * with sgd.  Trial points are evaluated by moving the current point there
 * (bl_set_y), so the held recording of f follows y as it does for sgd.
 *
 * Boxes (a projected two-metric scheme, Bertsekas 1982, in the spirit of
 * L-BFGS-B): at y with gradient g a coordinate is held when y_i - eta g_i is
 * beyond its bound (the active-set rule of the implicit methods, eta the
 * inner lr: a coordinate at or within eta |g_i| of the bound g pushes it
 * to).  The solver's direction (quasi-Newton, Newton-CG) is computed on the
 * free coordinates; a held coordinate moves along -g_i.  The step follows
 * the projection arc y(a) = P(y + a d) with backtracking (a halves) to the
 * sufficient decrease phi(y(a)) <= phi(y) + c1 g'(y(a) - y).  A search that
 * fails is retried along -g (projected gradient, which always descends
 * while the gradient mapping is not 0), so a step is found away from
 * stationary points; on the free coordinates near the solution, where
 * the active set has settled, the steps are the unconstrained solver's.
 * Simplex and ball are refused: their faces are not coordinate-aligned, so
 * holding coordinates does not describe them. */
#include "bilevel.h"
#include "project.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

double inner_phi(const bl_run *r) {
  double phi = r->p->f_max ? -r->f : r->f;   /* maximize: the negation is minimized */
  if (r->set.prox > 0) {
    double s = 0;
    for (size_t i = 0; i < r->n; i++) s += (r->y[i] - r->y_prev[i]) * (r->y[i] - r->y_prev[i]);
    phi += 0.5 * r->set.prox * s;
  }
  return phi;
}

int inner_eval(bl_run *r, const double *y, double *phi, double *fval, double *g) {
  if (bl_set_y(r, y)) return EV_ERR;
  double f;
  if (bl_grad_f(r, &f, NULL, g)) return EV_ERR;
  r->iopt.evals++;
  *fval = f;
  double save = r->f;
  r->f = f;
  *phi = inner_phi(r);
  r->f = save;
  if (!isfinite(*phi) || !bl_finite(g, r->n)) *phi = INFINITY;
  return EV_OK;
}

int inner_box_held(bl_run *r, size_t i, const double *y, const double *g) {
  double eta = bl_inner_lr(r);
  if (!(eta > 0)) eta = 1;
  const double *lo = blc_lo(r), *hi = blc_hi(r);
  return proj_box_side(y[i] - eta * g[i], lo[i], hi[i]) != 0;
}

#define BOX_EVALS 40
#define BOX_C1 1e-4

int inner_box_search(bl_run *r, const double *y0, const double *d, double a1, double *gt, double *fval, int *ok,
                     int *resolved, long *evals) {
  size_t n = r->n;
  const double *lo = blc_lo(r), *hi = blc_hi(r), *g = r->gy;
  double phi0 = inner_phi(r), gap0 = blc_gap(r, y0, g), a = a1;
  double *y = r->y;   /* trial points are formed in place; y0 is not r->y */
  *ok = 0;
  for (long k = 0; k < BOX_EVALS; k++, a *= 0.5) {
    double dec = 0, moved = 0;
    for (size_t i = 0; i < n; i++) {
      double t = y0[i] + a * d[i];
      y[i] = t < lo[i] ? lo[i] : t > hi[i] ? hi[i] : t;
      dec += g[i] * (y[i] - y0[i]);
      moved += fabs(y[i] - y0[i]);
    }
    if (moved == 0) break;   /* the arc has collapsed onto y0 */
    if (!(dec < 0)) continue;
    double phi;
    if (inner_eval(r, y, &phi, fval, gt)) return EV_ERR;
    (*evals)++;
    int unres = isfinite(phi) && fabs(phi - phi0) <= 16 * DBL_EPSILON * fabs(phi0);
    if (isfinite(phi) && !unres) *resolved = 1;
    if (phi <= phi0 + BOX_C1 * dec && phi < phi0) { *ok = 1; return EV_OK; }
    /* f cannot tell y0 from y(a); the gradient mapping can */
    if (unres && blc_gap(r, y, gt) < gap0) { *ok = 1; return EV_OK; }
  }
  return bl_set_y(r, y0);
}

int inner2_step(bl_run *r, int *stop) {
  *stop = 0;
  return r->iopt.sp.kind == OPT_LBFGS ? inner_lbfgs_step(r, stop) : inner_newton_step(r, stop);
}

void bl_inner_report(bl_run *r, const char *status, const char *fmt, ...) {
  r->inner_failures++;
  va_list ap;
  va_start(ap, fmt);
  bl_report_first(r, r->inner_status, sizeof r->inner_status, r->inner_note, sizeof r->inner_note, "inner_status",
                  status, fmt, ap);
  va_end(ap);
}

int inner_solver_check(bl_run *r) {
  const problem *p = r->p;
  const bl_optspec *o = &r->set.inner_opt;
  const hg_method *m = r->set.hg.m;
  if (opt_is_second(o->kind)) {
    const char *on = opt_name(o->kind);
    if (p->nevery_inner)
      return bl_error(r, "inner_opt = %s(): the problem draws `every inner` values at each inner step, so f changes "
                         "from one step to the next, and %s needs one f along its %s and across its steps: use sgd(), "
                         "momentum() or adam() for minibatch inner steps", on, on,
                      o->kind == OPT_LBFGS ? "line search" : "trust region");
    for (int i = p->nouter; i < p->nvars; i++)
      if (p->vars[i].ckind == BLC_SIMPLEX || p->vars[i].ckind == BLC_BALL)
        return bl_error(r, "inner_opt = %s(): inner %s is constrained to a %s, and %s takes projected steps only on "
                           "boxes (it holds single coordinates at their bounds, and the %s couples the coordinates): "
                           "use sgd() or momentum(), which take projected steps",
                        on, p->vars[i].name, p->vars[i].ckind == BLC_SIMPLEX ? "simplex" : "ball", on,
                        p->vars[i].ckind == BLC_SIMPLEX ? "simplex's sum" : "ball's norm");
  }
  if (r->set.inner_starts > 1) {
    if (!r->set.cold)
      return bl_error(r, "inner_starts = %ld: several starts are a cold-start option (each inner solve starts from "
                         "the init and perturbations of it); a warm start continues from the previous y",
                      r->set.inner_starts);
    if (m->traj || m->begin || m->inner_step)
      return bl_error(r, "inner_starts = %ld: %s() follows the inner trajectory, and with several starts only one of "
                         "them is kept: use an implicit method (cg(), neumann(), exact()) or fo(), which need only "
                         "the inner point", r->set.inner_starts, m->name);
    if (!(r->ms_y = bl_alloc(r, r->n)) || !(r->ms_g = bl_alloc(r, r->n))) return EV_ERR;
  }
  return EV_OK;
}
