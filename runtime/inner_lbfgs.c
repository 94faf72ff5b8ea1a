/* inner_lbfgs.c: lbfgs(memory, line_search), the limited-memory BFGS inner
 * optimizer (Nocedal & Wright, Numerical Optimization, Alg. 7.4 and 3.5-3.6).
 *
 * Direction: d = -H g by the two-loop recursion over the last `memory`
 * pairs s = y' - y, u = g' - g (a pair is kept only when s'u > 0, so H stays
 * positive definite and d is a descent direction), with H0 = (s'u / u'u) I
 * from the newest pair.  The first step after a reset has no pair: d = -g
 * with trial step min(1, 1 / |g|); later trial steps are 1.
 * Line search on phi(a) = f(y + a d) (plus the proximal term):
 *   "wolfe":  strong Wolfe conditions, c1 = 1e-4, c2 = 0.9, by bracketing
 *             (doubling) and zoom (safeguarded cubic interpolation, else
 *             bisection);
 *   "armijo": backtracking to sufficient decrease phi(a) <= phi(0) + c1 a
 *             phi'(0) (safeguarded quadratic interpolation).
 * A non-finite f at a trial point counts as no decrease (the step shrinks).
 * At most LS_EVALS evaluations per step.  Near the minimum the change of f
 * along a step falls below its rounding: when f at the first trial point is
 * within rounding of f at y and the gradient there is smaller, the step is
 * taken on that evidence (sgd follows the gradient alone to the same place).  If no trial point decreases f
 * sufficiently, the search is tried once more along -g with the memory
 * cleared; if that fails too, y stays and the loop stops: quietly when every trial value
 * was within rounding of phi(0) (f cannot resolve the step; reported only
 * when inner_tol is not met), else as a line-search failure
 * (bl_inner_report).  Memory: (2 memory + 3) n doubles, allocated once
 * (optim.c); a step allocates nothing. */
#include "bilevel.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define LS_EVALS 30
#define C1 1e-4
#define C2 0.9

typedef struct {
  double *S, *U, *d, *y0, *gt, *rho, *al;
  double fval;   /* f at the accepted point (box steps) */
} lb_view;

static void view(bl_opt *o, size_t n, lb_view *v) {
  size_t M = (size_t)o->sp.memory;
  v->S = o->w;
  v->U = v->S + M * n;
  v->d = v->U + M * n;
  v->y0 = v->d + n;
  v->gt = v->y0 + n;
  v->rho = v->gt + n;
  v->al = v->rho + M;
  v->fval = 0;
}

/* d = -H g by the two-loop recursion (newest pair at slot head). */
static void direction(bl_opt *o, size_t n, const double *g, lb_view *v) {
  long M = o->sp.memory, k = o->pairs;
  if (g != v->d) memcpy(v->d, g, n * sizeof(double));
  for (long j = 0; j < k; j++) {
    long s = (o->head - j + M) % M;
    double a = v->rho[s] * bl_dot(v->S + (size_t)s * n, v->d, n);
    v->al[s] = a;
    const double *u = v->U + (size_t)s * n;
    for (size_t i = 0; i < n; i++) v->d[i] -= a * u[i];
  }
  if (k > 0) {
    const double *s = v->S + (size_t)o->head * n, *u = v->U + (size_t)o->head * n;
    double gamma = bl_dot(s, u, n) / bl_dot(u, u, n);
    for (size_t i = 0; i < n; i++) v->d[i] *= gamma;
  }
  for (long j = k - 1; j >= 0; j--) {
    long s = (o->head - j + M) % M;
    double b = v->rho[s] * bl_dot(v->U + (size_t)s * n, v->d, n);
    const double *sv = v->S + (size_t)s * n;
    for (size_t i = 0; i < n; i++) v->d[i] += (v->al[s] - b) * sv[i];
  }
  for (size_t i = 0; i < n; i++) v->d[i] = -v->d[i];
}

/* One line-search state: phi(0), phi'(0), and the trial bookkeeping. */
typedef struct {
  bl_run *r;
  lb_view *v;
  double phi0, dphi0;
  double fval;      /* f at the last trial point */
  double last;      /* phi there */
  long evals;
  int resolved;     /* some finite trial value differed from phi0 beyond rounding */
  int cached;       /* the first trial (at a1) was taken already: phi1, dphi1 */
  double phi1, dphi1;
} ls_t;

static int unresolved(const ls_t *ls, double phi) { return fabs(phi - ls->phi0) <= 16 * DBL_EPSILON * fabs(ls->phi0); }

/* phi and phi' at y0 + a d (the current point moves there). */
static int trial(ls_t *ls, double a, double *phi, double *dphi) {
  bl_run *r = ls->r;
  size_t n = r->n;
  if (ls->cached) {
    ls->cached = 0;
    *phi = ls->last = ls->phi1;
    *dphi = ls->dphi1;
    return EV_OK;
  }
  for (size_t i = 0; i < n; i++) r->y[i] = ls->v->y0[i] + a * ls->v->d[i];
  if (inner_eval(r, r->y, phi, &ls->fval, ls->v->gt)) return EV_ERR;
  ls->evals++;
  ls->last = *phi;
  *dphi = isfinite(*phi) ? bl_dot(ls->v->gt, ls->v->d, n) : NAN;
  if (isfinite(*phi) && !unresolved(ls, *phi)) ls->resolved = 1;
  return EV_OK;
}

static int armijo_ok(const ls_t *ls, double a, double phi) { return phi <= ls->phi0 + C1 * a * ls->dphi0; }

/* Minimizer of the cubic through (a, phi, dphi) at lo and hi, kept inside
 * the middle 80% of the interval; bisection when that fails. */
static double interpolate(double alo, double plo, double dlo, double ahi, double phi_, double dhi) {
  double lo = fmin(alo, ahi), hi = fmax(alo, ahi), w = hi - lo, a = NAN;
  if (isfinite(phi_) && isfinite(dhi) && isfinite(plo) && isfinite(dlo)) {
    double d1 = dlo + dhi - 3 * (plo - phi_) / (alo - ahi);
    double disc = d1 * d1 - dlo * dhi;
    if (disc >= 0) {
      double d2 = (ahi > alo ? 1 : -1) * sqrt(disc);
      a = ahi - (ahi - alo) * (dhi + d2 - d1) / (dhi - dlo + 2 * d2);
    }
  }
  if (!(a >= lo + 0.1 * w && a <= hi - 0.1 * w)) a = 0.5 * (lo + hi);
  return a;
}

/* Strong Wolfe line search; *ok = 1 with the current point at the accepted
 * step, 0 when none was found. */
static int wolfe(ls_t *ls, double a1, int *ok) {
  double aprev = 0, pprev = ls->phi0, dprev = ls->dphi0, a = a1, phi, dphi;
  double alo = 0, plo = 0, dlo = 0, ahi = 0, phi_ = 0, dhi = 0;
  int zoom = 0;
  *ok = 0;
  while (ls->evals < LS_EVALS) {
    if (trial(ls, a, &phi, &dphi)) return EV_ERR;
    if (!armijo_ok(ls, a, phi) || (ls->evals > 1 && phi >= pprev)) {
      alo = aprev, plo = pprev, dlo = dprev, ahi = a, phi_ = phi, dhi = dphi;
      zoom = 1;
      break;
    }
    if (fabs(dphi) <= -C2 * ls->dphi0) { *ok = 1; return EV_OK; }
    if (dphi >= 0) {
      alo = a, plo = phi, dlo = dphi, ahi = aprev, phi_ = pprev, dhi = dprev;
      zoom = 1;
      break;
    }
    aprev = a, pprev = phi, dprev = dphi;
    a *= 2;
  }
  if (!zoom) return EV_OK;
  while (ls->evals < LS_EVALS && fabs(ahi - alo) > 1e-16 * fmax(1, fabs(alo))) {
    a = interpolate(alo, plo, dlo, ahi, phi_, dhi);
    if (trial(ls, a, &phi, &dphi)) return EV_ERR;
    if (!armijo_ok(ls, a, phi) || phi >= plo) {
      ahi = a, phi_ = phi, dhi = dphi;
    } else {
      if (fabs(dphi) <= -C2 * ls->dphi0) { *ok = 1; return EV_OK; }
      if (dphi * (ahi - alo) >= 0) ahi = alo, phi_ = plo, dhi = dlo;
      alo = a, plo = phi, dlo = dphi;
    }
  }
  /* no strong Wolfe point: the lowest point with sufficient decrease (alo > 0
   * has it) still descends; take it, the caller keeps no pair if s'u <= 0 */
  if (alo > 0) {
    if (trial(ls, alo, &phi, &dphi)) return EV_ERR;
    *ok = armijo_ok(ls, alo, phi);
  }
  return EV_OK;
}

static int armijo(ls_t *ls, double a1, int *ok) {
  double a = a1, phi, dphi;
  *ok = 0;
  while (ls->evals < LS_EVALS) {
    if (trial(ls, a, &phi, &dphi)) return EV_ERR;
    if (armijo_ok(ls, a, phi)) { *ok = 1; return EV_OK; }
    /* minimizer of the quadratic through phi(0), phi'(0), phi(a) */
    double den = 2 * (phi - ls->phi0 - ls->dphi0 * a), an = den > 0 ? -ls->dphi0 * a * a / den : 0.1 * a;
    if (!(an >= 0.1 * a)) an = 0.1 * a;
    if (an > 0.5 * a) an = 0.5 * a;
    a = an;
  }
  return EV_OK;
}

/* The current point is the accepted one: keep the pair if it has curvature
 * (computed before writing: a full memory's next slot holds the oldest
 * pair, which a rejected pair must not overwrite). */
static void keep_pair(bl_run *r, bl_opt *o, lb_view *v) {
  size_t n = r->n;
  double su = 0, ss = 0, uu = 0;
  for (size_t i = 0; i < n; i++) {
    double si = r->y[i] - v->y0[i], ui = v->gt[i] - r->gy[i];
    su += si * ui;
    ss += si * si;
    uu += ui * ui;
  }
  if (su > DBL_EPSILON * sqrt(ss * uu)) {
    long slot = o->pairs == 0 ? 0 : (o->head + 1) % o->sp.memory;
    double *s = v->S + (size_t)slot * n, *u = v->U + (size_t)slot * n;
    for (size_t i = 0; i < n; i++) {
      s[i] = r->y[i] - v->y0[i];
      u[i] = v->gt[i] - r->gy[i];
    }
    v->rho[slot] = 1 / su;
    o->head = slot;
    if (o->pairs < o->sp.memory) o->pairs++;
  }
}

/* A step on box-constrained y (see inner.c): d = -H g on the free
 * coordinates (the two-loop recursion applied to g with the held entries
 * zeroed, then restricted to the free ones: descent there since H is
 * positive definite), -g on the held ones, then the projected search.
 * line_search has no say here: the search is projected backtracking. */
static int box_step(bl_run *r, bl_opt *o, lb_view *v, int *stop) {
  size_t n = r->n;
  double gap = blc_gap(r, r->y, r->gy), gn = bl_norm(r->gy, n);
  if (gap == 0) { *stop = 1; return EV_OK; }
  memcpy(v->y0, r->y, n * sizeof(double));
  int ok = 0, resolved = 0;
  long evals = 0;
  for (int attempt = 0; attempt < 2 && !ok; attempt++) {
    if (attempt == 1) {
      if (o->pairs == 0) break;   /* the first attempt was along -g already */
      o->pairs = 0;
    }
    for (size_t i = 0; i < n; i++) v->d[i] = inner_box_held(r, i, v->y0, r->gy) ? 0 : r->gy[i];
    direction(o, n, v->d, v);
    double dfree = 0;
    for (size_t i = 0; i < n; i++) {
      if (inner_box_held(r, i, v->y0, r->gy)) v->d[i] = -r->gy[i];
      else dfree += r->gy[i] * v->d[i];
    }
    if (!(dfree <= 0)) {
      /* rounding in the pairs can cost descent: start the memory afresh */
      o->pairs = 0;
      for (size_t i = 0; i < n; i++) v->d[i] = -r->gy[i];
    }
    double a1 = o->pairs > 0 ? 1 : fmin(1, 1 / gn);
    if (inner_box_search(r, v->y0, v->d, a1, v->gt, &v->fval, &ok, &resolved, &evals)) return EV_ERR;
  }
  if (!ok) {
    *stop = 1;
    int tol_unmet = r->set.inner_tol > 0 && gap > r->set.inner_tol;
    if (resolved || tol_unmet) {
      char g[40], t[40];
      snprintf(g, sizeof g, "%.3g", gap);
      snprintf(t, sizeof t, "%.3g", r->set.inner_tol);
      bl_inner_report(r, "line_search",
                      "lbfgs(): the projected line search found no step with sufficient decrease of f at inner step "
                      "%ld (%ld evaluations, gradient mapping %s%s%s); the inner loop stopped there%s",
                      r->inner_step, evals, g, tol_unmet ? ", inner_tol = " : "", tol_unmet ? t : "",
                      resolved ? "" : ": the changes along the step are below rounding, so inner_tol is out of reach");
    }
    return EV_OK;
  }
  keep_pair(r, o, v);
  memcpy(r->gy, v->gt, n * sizeof(double));
  r->f = v->fval;
  o->t++;
  return EV_OK;
}

int inner_lbfgs_step(bl_run *r, int *stop) {
  bl_opt *o = &r->iopt;
  size_t n = r->n;
  lb_view v;
  view(o, n, &v);
  if (r->con) return box_step(r, o, &v, stop);
  double gn = bl_norm(r->gy, n);
  if (gn == 0) { *stop = 1; return EV_OK; }
  memcpy(v.y0, r->y, n * sizeof(double));
  ls_t ls;
  int ok = 0;
  /* a failed search along the quasi-Newton direction is tried once more
   * along -g with the memory cleared (stale pairs can point it badly) */
  for (int attempt = 0; attempt < 2 && !ok; attempt++) {
    if (attempt == 1) {
      if (o->pairs == 0) break;
      if (bl_set_y(r, v.y0)) return EV_ERR;
      o->pairs = 0;
    }
    direction(o, n, r->gy, &v);
    double dphi0 = bl_dot(r->gy, v.d, n);
    if (!(dphi0 < 0)) {
      /* rounding in the pairs can cost descent: start the memory afresh */
      o->pairs = 0;
      for (size_t i = 0; i < n; i++) v.d[i] = -r->gy[i];
      dphi0 = -gn * gn;
    }
    ls = (ls_t){r, &v, inner_phi(r), dphi0, 0, 0, 0, 0, 0, 0, 0};
    double a1 = o->pairs > 0 ? 1 : fmin(1, 1 / gn);
    if (trial(&ls, a1, &ls.phi1, &ls.dphi1)) return EV_ERR;
    if (unresolved(&ls, ls.phi1) && bl_norm(v.gt, n) < gn) {
      /* f cannot tell y0 from the trial point (the change is below its
       * rounding), the gradient can: near the minimum a decrease of |grad f|
       * is the progress that is still measurable */
      ok = 1;
    } else {
      ls.cached = 1;
      if ((o->sp.wolfe ? wolfe(&ls, a1, &ok) : armijo(&ls, a1, &ok))) return EV_ERR;
      /* at the resolution of y a "sufficient decrease" can be rounding that
       * leaves f and its gradient where they were: no progress */
      if (ok && !(ls.last < ls.phi0) && !(bl_norm(v.gt, n) < gn)) ok = 0;
    }
  }
  if (!ok) {
    /* back to y0, where r->f and r->gy still hold */
    if (bl_set_y(r, v.y0)) return EV_ERR;
    *stop = 1;
    int tol_unmet = r->set.inner_tol > 0 && gn > r->set.inner_tol;
    if (ls.resolved || tol_unmet) {
      char g[40], t[40];
      snprintf(g, sizeof g, "%.3g", gn);
      snprintf(t, sizeof t, "%.3g", r->set.inner_tol);
      bl_inner_report(r, "line_search",
                      "lbfgs(): the %s line search found no step with sufficient decrease of f at inner step %ld "
                      "(%ld evaluations, |grad_y f| = %s%s%s); the inner loop stopped there%s",
                      o->sp.wolfe ? "Wolfe" : "Armijo", r->inner_step, ls.evals, g, tol_unmet ? ", inner_tol = " : "",
                      tol_unmet ? t : "",
                      ls.resolved ? "" : ": the changes along the step are below rounding, so inner_tol is out of reach");
    }
    return EV_OK;
  }
  keep_pair(r, o, &v);
  memcpy(r->gy, v.gt, n * sizeof(double));
  r->f = ls.fval;
  o->t++;
  return EV_OK;
}
