/* hg_penalty.c: penalty(gamma, growth, tol, tol_decay, lr_decay), the
 * inversion-free penalty method of Mehra & Hamm (docs/METHODS.md section 3).
 *
 * The inner problem is replaced by its stationarity condition grad_y f = 0,
 * which is penalized:
 *
 *   Ft(x, y; gamma) = F(x, y) + (gamma / 2) |grad_y f(x, y)|^2
 *   grad_y Ft = grad_y F + gamma H_yy grad_y f     (one HVP)
 *   grad_x Ft = grad_x F + gamma H_xy grad_y f     (one mixed product)
 *
 * The inner steps of the solve descend on Ft instead of f (so y tracks the
 * minimizer of the penalized problem, not of f alone), and the outer step
 * uses grad_x Ft as the hypergradient.  No inverse and no linear solve.
 * At a stationary point of Ft in y, gamma grad_y f = -H_yy^-1 grad_y F, so
 * grad_x Ft is the implicit hypergradient at (x, y); as gamma grows,
 * grad_y f -> 0 and the method becomes exact.
 *
 * Stages: after each outer step, when |grad_x Ft|^2 + |grad_y Ft|^2 <= tol^2
 * at (x, y_T), gamma *= growth, tol *= tol_decay and both step sizes are
 * multiplied by lr_decay (default 1 / growth, which keeps lr * gamma, and so
 * the stability of plain gradient steps on Ft, constant; 1 turns it off).
 * The state lives for one solve; use start = "warm" (the method's own form:
 * y is carried from one outer step to the next).
 *
 * penalty() is a solver, not an estimator (kind HG_SOLVER): grad_x Ft at a
 * y that has not minimized Ft is no estimate of dPhi/dx, so hypergrad() and
 * check_hypergrad() refuse it.  Since the inner steps descend Ft, the
 * solve's final inner solve runs on f to a tolerance (bilevel.c), so that y
 * answers the final x.
 *
 * Cost per outer step: T HVPs + 1 combined HVP/mixed pass, memory O(n + m). */
#include "bilevel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  double gamma, tol;
  double *Fx, *Fy, *hyy, *hxy;
  long stages;
} pen_st;

static const hg_param params[] = {
  {"gamma", 1, 0, 0, 1},     /* > 0 */
  {"growth", 1.1, 0, 1, 0},  /* >= 1 */
  {"tol", 1e-2, 0, 0, 0},    /* >= 0 */
  {"tol_decay", 0.9, 0, 0, 1},
  {"lr_decay", NAN, 0, 0, 1},
};

static int check(bl_run *r, const hg_spec *sp) {
  if (opt_is_second(r->set.inner_opt.kind))
    return bl_error(r, "penalty() takes its own gradient steps on the penalized objective F + gamma/2 |grad_y f|^2, "
                       "with step sizes it decays as gamma grows, so it cannot use the %s inner optimizer: use "
                       "inner_opt = sgd() (or momentum(), adam()) with penalty(), or %s with an implicit method (cg(), "
                       "neumann(), exact())", opt_name(r->set.inner_opt.kind), opt_name(r->set.inner_opt.kind));
  if (sp->p[3] > 1) {
    char num[40];
    fmt_double(num, sizeof num, sp->p[3]);
    return bl_error(r, "penalty(): 'tol_decay' must be in (0, 1], got %s", num);
  }
  if (!isnan(sp->p[4]) && sp->p[4] > 1) {
    char num[40];
    fmt_double(num, sizeof num, sp->p[4]);
    return bl_error(r, "penalty(): 'lr_decay' must be in (0, 1], got %s", num);
  }
  return EV_OK;
}

static int setup(bl_run *r, const hg_spec *sp, void **out) {
  pen_st *st = calloc(1, sizeof *st);
  if (!st) return bl_error(r, "out of memory");
  *out = st;
  st->gamma = sp->p[0];
  st->tol = sp->p[2];
  if (!(st->Fx = bl_alloc(r, r->m)) || !(st->Fy = bl_alloc(r, r->n)) || !(st->hyy = bl_alloc(r, r->n)) ||
      !(st->hxy = bl_alloc(r, r->m)))
    return EV_ERR;
  return EV_OK;
}

/* Inner step t at y_t: replace grad_y f (in r->gy) by grad_y Ft. */
static int inner_step(bl_run *r, const hg_spec *sp, void *vst, long t) {
  (void)sp;
  (void)t;
  pen_st *st = vst;
  size_t n = r->n;
  double F;
  if (bl_grad_F(r, &F, st->Fx, st->Fy)) return EV_ERR;
  if (bl_hvp(r, r->gy, NULL, st->hyy)) return EV_ERR;
  for (size_t i = 0; i < n; i++) r->gy[i] = st->Fy[i] + st->gamma * st->hyy[i];
  return EV_OK;
}

/* At (x, y_T): r->gy = grad_y f, r->Fx / r->Fy = grads of F. */
static int compute(bl_run *r, const hg_spec *sp, void *vst, double *d) {
  pen_st *st = vst;
  size_t n = r->n, m = r->m;
  if (bl_hvp(r, r->gy, st->hxy, st->hyy)) return EV_ERR;
  double gx2 = 0, gy2 = 0;
  for (size_t j = 0; j < m; j++) {
    d[j] = r->Fx[j] + st->gamma * st->hxy[j];
    gx2 += d[j] * d[j];
  }
  for (size_t i = 0; i < n; i++) {
    double g = r->Fy[i] + st->gamma * st->hyy[i];
    gy2 += g * g;
  }
  if (gx2 + gy2 <= st->tol * st->tol) {
    double growth = sp->p[1], lr_decay = isnan(sp->p[4]) ? 1 / growth : sp->p[4];
    st->gamma *= growth;
    st->tol *= sp->p[3];
    st->stages++;
    r->iopt.sp.lr *= lr_decay;
    r->oopt.sp.lr *= lr_decay;
  }
  return EV_OK;
}

static void cleanup(bl_run *r, void *vst) {
  (void)r;
  pen_st *st = vst;
  free(st->Fx);
  free(st->Fy);
  free(st->hyy);
  free(st->hxy);
  free(st);
}

const hg_method hg_penalty = {
  "penalty", params, 5, 1, "penalty(gamma = 1, growth = 1.1, tol = 1e-2, tol_decay = 0.9, lr_decay = 1 / growth)",
  "penalty method (Mehra & Hamm): inner steps on F + gamma/2 |grad_y f|^2, hypergradient grad_x F + gamma H_xy grad_y f",
  NULL, check, setup, NULL, inner_step, compute, cleanup, HG_SOLVER,
};
