/* inner_newton.c: newton(cg_iters, tol), the Newton-CG inner optimizer with
 * a trust region (Steihaug-Toint truncated CG; Nocedal & Wright, Numerical
 * Optimization, Alg. 7.2 and 4.1).
 *
 * At y with gradient g the step s approximately minimizes the model
 * m(s) = g's + s'Hs / 2 over |s| <= radius by CG on H s = -g with
 * Hessian-vector products of f (forward over reverse, replayed from one
 * recording of f at y).  CG stops at ||H s + g|| <= tol ||g||, after
 * cg_iters products, or when a direction p has curvature p'Hp <= 0 (H is
 * not positive definite there) or leaves the region: then the step follows
 * p to the boundary.  Along p the model decreases (p is a descent direction
 * of the model at the current iterate, and with p'Hp <= 0 it keeps
 * decreasing), so negative curvature yields a step of predicted decrease,
 * never an ascent step.  The step is taken when the actual decrease of f is
 * at least 1e-4 of the predicted one; the radius shrinks to |s| / 4 when
 * the ratio is below 1/4 (or the step was refused) and doubles when it is
 * above 3/4 with the step on the boundary.  A refused step leaves y where it
 * was and counts as an inner step.  The first radius is max(1, |y|).
 *
 * Near the minimum the predicted decrease falls below the rounding of f,
 * which then cannot judge the step: it is taken when it reduces |grad f|
 * (as sgd would follow the gradient), else the loop stops (converged as far
 * as f and its gradient can tell; reported only when inner_tol is not met).
 * Stops with a report: a radius that
 * collapsed below 1e-12 max(1, |y|) without an accepted step (reported:
 * a trust-region failure).
 * Memory: 6 n doubles, allocated once (optim.c); a step allocates nothing. */
#include "bilevel.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define ETA 1e-4

/* tau >= 0 with |z + tau p| = radius */
static double to_boundary(const double *z, const double *p, size_t n, double radius) {
  double pp = bl_dot(p, p, n), zp = bl_dot(z, p, n), zz = bl_dot(z, z, n);
  double c = zz - radius * radius;   /* <= 0: z is inside */
  if (c > 0) c = 0;
  return (-zp + sqrt(zp * zp - pp * c)) / pp;
}

/* A step on box-constrained y (see inner.c): CG on the free block,
 * H_FF z = -g_F (products with vectors zero on the held coordinates, the
 * result's held entries dropped), stopped like the unconstrained CG or at
 * the first direction without positive curvature (z so far descends; at
 * the first CG step z = -g_F), then -g on the held coordinates and the
 * projected search from a = 1.  No trust region: the backtracking along
 * the projection arc takes its place. */
static int box_step(bl_run *r, bl_opt *o, int *stop) {
  size_t n = r->n;
  double *z = o->w, *res = z + n, *p = res + n, *Hp = p + n, *y0 = Hp + n, *gt = y0 + n;
  double gap = blc_gap(r, r->y, r->gy);
  if (gap == 0) { *stop = 1; return EV_OK; }
  if (bl_hold_point(r)) return EV_ERR;
  memcpy(y0, r->y, n * sizeof(double));
  for (size_t i = 0; i < n; i++) {
    z[i] = 0;
    res[i] = inner_box_held(r, i, y0, r->gy) ? 0 : r->gy[i];
    p[i] = -res[i];
  }
  double rr = bl_dot(res, res, n), gfn = sqrt(rr), hnorm = 0;
  for (long k = 0; k < o->sp.cg_iters && rr > 0; k++) {
    if (bl_hvp(r, p, NULL, Hp)) return EV_ERR;
    for (size_t i = 0; i < n; i++)
      if (p[i] == 0 && inner_box_held(r, i, y0, r->gy)) Hp[i] = 0;
    double pp = bl_dot(p, p, n), pHp = bl_dot(p, Hp, n);
    double hn = bl_norm(Hp, n) / sqrt(pp);
    if (hn > hnorm) hnorm = hn;
    if (!isfinite(pHp))
      return bl_error(r, "solve %s: newton(): a Hessian-vector product of the inner objective is not finite at "
                         "outer step %ld, inner step %ld", r->p->name, r->outer_step, r->inner_step);
    if (!(pHp > bl_curv_noise(n) * pp * hnorm)) {
      /* no positive curvature along p: stop with the descent made so far */
      if (k == 0) memcpy(z, p, n * sizeof(double));
      break;
    }
    double alpha = rr / pHp;
    for (size_t i = 0; i < n; i++) {
      z[i] += alpha * p[i];
      res[i] += alpha * Hp[i];
    }
    double rr2 = bl_dot(res, res, n);
    if (sqrt(rr2) <= o->sp.tol * gfn) break;
    double beta = rr2 / rr;
    for (size_t i = 0; i < n; i++) p[i] = -res[i] + beta * p[i];
    rr = rr2;
  }
  for (size_t i = 0; i < n; i++)
    if (inner_box_held(r, i, y0, r->gy)) z[i] = -r->gy[i];
  int ok = 0, resolved = 0;
  long evals = 0;
  double fval = 0;
  if (inner_box_search(r, y0, z, 1, gt, &fval, &ok, &resolved, &evals)) return EV_ERR;
  if (!ok) {
    /* along -g (projected gradient) */
    for (size_t i = 0; i < n; i++) z[i] = -r->gy[i];
    if (inner_box_search(r, y0, z, fmin(1, 1 / bl_norm(r->gy, n)), gt, &fval, &ok, &resolved, &evals)) return EV_ERR;
  }
  o->t++;
  if (!ok) {
    *stop = 1;
    int tol_unmet = r->set.inner_tol > 0 && gap > r->set.inner_tol;
    if (resolved || tol_unmet)
      bl_inner_report(r, "line_search",
                      "newton(): the projected line search found no step with sufficient decrease of f at inner step "
                      "%ld (%ld evaluations, gradient mapping %.3g%s); the inner loop stopped there%s",
                      r->inner_step, evals, gap, tol_unmet ? ", inner_tol unmet" : "",
                      resolved ? "" : ": the changes along the step are below rounding, so inner_tol is out of reach");
    return EV_OK;
  }
  memcpy(r->gy, gt, n * sizeof(double));
  r->f = fval;
  return EV_OK;
}

int inner_newton_step(bl_run *r, int *stop) {
  bl_opt *o = &r->iopt;
  size_t n = r->n;
  if (r->con) return box_step(r, o, stop);
  double *z = o->w, *res = z + n, *p = res + n, *Hp = p + n, *y0 = Hp + n, *gt = y0 + n;
  double gn = bl_norm(r->gy, n);
  if (gn == 0) { *stop = 1; return EV_OK; }
  double ynorm = bl_norm(r->y, n);
  if (o->radius == 0) o->radius = fmax(1, ynorm);
  /* every product of this step is at y: record f once, replay it */
  if (bl_hold_point(r)) return EV_ERR;
  memset(z, 0, n * sizeof(double));
  memcpy(res, r->gy, n * sizeof(double));   /* res = H z + g */
  for (size_t i = 0; i < n; i++) p[i] = -res[i];
  double rr = gn * gn, model = 0, hnorm = 0;
  int boundary = 0;
  long k;
  for (k = 0; k < o->sp.cg_iters; k++) {
    if (bl_hvp(r, p, NULL, Hp)) return EV_ERR;
    double pp = bl_dot(p, p, n), pHp = bl_dot(p, Hp, n), rp = bl_dot(res, p, n);
    double hn = bl_norm(Hp, n) / sqrt(pp);
    if (hn > hnorm) hnorm = hn;
    if (!isfinite(pHp))
      return bl_error(r, "solve %s: newton(): a Hessian-vector product of the inner objective is not finite at "
                         "outer step %ld, inner step %ld", r->p->name, r->outer_step, r->inner_step);
    double alpha = pHp > bl_curv_noise(n) * pp * hnorm ? rr / pHp : INFINITY;
    double zn2 = 0;
    if (isfinite(alpha))
      for (size_t i = 0; i < n; i++) zn2 += (z[i] + alpha * p[i]) * (z[i] + alpha * p[i]);
    if (!isfinite(alpha) || sqrt(zn2) >= o->radius) {
      /* negative or zero curvature, or the region's edge: follow p to it */
      double tau = to_boundary(z, p, n, o->radius);
      model += tau * rp + 0.5 * tau * tau * pHp;
      for (size_t i = 0; i < n; i++) z[i] += tau * p[i];
      boundary = 1;
      break;
    }
    model += alpha * rp + 0.5 * alpha * alpha * pHp;
    for (size_t i = 0; i < n; i++) {
      z[i] += alpha * p[i];
      res[i] += alpha * Hp[i];
    }
    double rr2 = bl_dot(res, res, n);
    if (sqrt(rr2) <= o->sp.tol * gn) break;
    double beta = rr2 / rr;
    for (size_t i = 0; i < n; i++) p[i] = -res[i] + beta * p[i];
    rr = rr2;
  }
  double phi0 = inner_phi(r), pred = -model, zn = bl_norm(z, n);
  int tol_unmet = r->set.inner_tol > 0 && gn > r->set.inner_tol;
  int tiny = !(pred > 16 * DBL_EPSILON * fabs(phi0));
  if (zn == 0) { *stop = 1; return EV_OK; }
  memcpy(y0, r->y, n * sizeof(double));
  for (size_t i = 0; i < n; i++) r->y[i] = y0[i] + z[i];
  double phi, fval;
  if (inner_eval(r, r->y, &phi, &fval, gt)) return EV_ERR;
  if (tiny) {
    /* the model promises a change below f's rounding, so f cannot judge the
     * step; the gradient can: take it when it shrinks |grad f| */
    o->t++;
    if (isfinite(phi) && bl_norm(gt, n) < gn) {
      memcpy(r->gy, gt, n * sizeof(double));
      r->f = fval;
      return EV_OK;
    }
    if (bl_set_y(r, y0)) return EV_ERR;
    *stop = 1;
    if (tol_unmet)
      bl_inner_report(r, "trust_region",
                      "newton(): at inner step %ld the predicted decrease of f is below its rounding and the step "
                      "does not reduce |grad_y f| = %.3g (inner_tol = %.3g): the inner loop stopped there, inner_tol "
                      "is out of reach",
                      r->inner_step, gn, r->set.inner_tol);
    return EV_OK;
  }
  double rho = isfinite(phi) ? (phi0 - phi) / pred : -INFINITY;
  if (rho < 0.25) o->radius = 0.25 * zn;
  else if (rho > 0.75 && boundary) o->radius = fmin(2 * o->radius, 1e300);
  o->t++;
  if (rho > ETA) {
    memcpy(r->gy, gt, n * sizeof(double));
    r->f = fval;
    return EV_OK;
  }
  /* refused: back to y0, where r->f and r->gy still hold */
  if (bl_set_y(r, y0)) return EV_ERR;
  if (o->radius < 1e-12 * fmax(1, ynorm)) {
    *stop = 1;
    char a[40], b[40];
    snprintf(a, sizeof a, "%.3g", gn);
    snprintf(b, sizeof b, "%.3g", o->radius);
    bl_inner_report(r, "trust_region",
                    "newton(): the trust region collapsed (radius %s) at inner step %ld without a step that decreases "
                    "f as its model predicts (|grad_y f| = %s); the inner loop stopped there",
                    b, r->inner_step, a);
  }
  return EV_OK;
}
