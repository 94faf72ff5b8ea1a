/* inner.c: what the inner solvers that evaluate f along their steps (lbfgs,
 * newton) share: the objective they descend, the dispatch from the inner
 * loop, and the report of a failed step.
 *
 * The objective is f (its negation for `inner maximize`) plus the proximal
 * term eps/2 |y - y_prev|^2 when the solve has one, the same function whose gradient the inner loop follows
 * with sgd.  Trial points are evaluated by moving the current point there
 * (bl_set_y), so the held recording of f follows y as it does for sgd.
 *
 * Constraints: these solvers take unprojected steps.  A projected variant
 * (L-BFGS-B style: the direction and the line search restricted to the free
 * coordinates, each trial point projected) plugs in at inner_eval's callers,
 * where a trial point y + a d is formed. */
#include "bilevel.h"

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

int inner2_step(bl_run *r, int *stop) {
  *stop = 0;
  return r->iopt.sp.kind == OPT_LBFGS ? inner_lbfgs_step(r, stop) : inner_newton_step(r, stop);
}

void bl_inner_report(bl_run *r, const char *status, const char *fmt, ...) {
  r->inner_failures++;
  if (strcmp(r->inner_status, "ok") != 0) return;   /* the first report of the run is kept */
  snprintf(r->inner_status, sizeof r->inner_status, "%s", status);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->inner_note, sizeof r->inner_note, fmt, ap);
  va_end(ap);
  if (r->at && r->at->kind == N_SOLVE)
    bl_warn(r, "solve %s: outer step %ld: %s (reported once per solve; see the result's inner_status)", r->p->name,
            r->outer_step, r->inner_note);
  else
    bl_warn(r, "%s", r->inner_note);
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
      if (p->vars[i].ckind != BLC_NONE)
        return bl_error(r, "inner_opt = %s(): inner %s is constrained, and %s takes unconstrained steps (no "
                           "projected variant yet): use sgd(), momentum() or adam(), which take projected steps",
                        on, p->vars[i].name, on);
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
