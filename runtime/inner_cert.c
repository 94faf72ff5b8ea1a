/* inner_cert.c: the certificate of the inner point, an estimate of the
 * smallest eigenvalue of H_yy (with the proximal term when the solve has
 * one) by Lanczos on Hessian-vector products.
 *
 * k steps from a random unit vector (a fixed private stream: the script's
 * random numbers are not touched, and the estimate is reproducible), with
 * full reorthogonalization (twice, classical Gram-Schmidt), build the
 * tridiagonal T_k (alpha on the diagonal, beta off it).  Its smallest
 * eigenvalue theta is a Ritz value: theta >= lambda_min(H) in exact
 * arithmetic, converging fast at the ends of the spectrum; the residual
 * beta_k |s_k| (s the unit eigenvector of T_k for theta) bounds the distance
 * from theta to an eigenvalue of H.  Lanczos stops when that residual is
 * below CERT_CONV ||H|| (||H|| estimated by the largest |Ritz value|), at an
 * invariant subspace (beta = 0: the Ritz values are eigenvalues of H; for
 * n <= CERT_STEPS this happens by step n, so the estimate is exact up to
 * rounding), or after CERT_STEPS products.  With tol = CERT_TOL ||H||:
 *   theta < -tol, y stationary "saddle"  (H has an eigenvalue <= theta < 0)
 *   theta < -tol, otherwise   "curvature" (negative curvature on the way:
 *                             the inner loop stopped before a minimum)
 *   theta - residual >= -tol  "minimum"  (no negative curvature beyond tol found)
 *   otherwise                 "unknown"  (Lanczos did not converge far enough)
 * y counts as stationary when |grad_y f| (the projected-gradient gap under
 * a constraint), or the slope of f along theta's Ritz vector, is at most
 * max(inner_tol, CERT_STAT).  A saddle always warns;
 * "curvature" warns only for the methods whose formula assumes a minimum
 * (cg, neumann, exact, t1t2): unroll, forward, fo, ufo and penalty follow or
 * approximate the steps actually taken, as in a warm start of a few steps,
 * where y is not meant to be a minimum.
 * "minimum" is the second-order necessary condition at the tolerance, with
 * the caveat of any Krylov method: an eigenvector orthogonal to the start
 * vector is missed (probability zero for a random start).
 * Cost: at most CERT_STEPS Hessian-vector products at one recording of f,
 * plus O(CERT_STEPS^2 n) for the reorthogonalization; memory
 * (CERT_STEPS + 2) n doubles, allocated per certificate (once per solve by
 * default, not per inner step). */
#include "bilevel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CERT_STEPS 30
#define CERT_TOL 1e-8
#define CERT_CONV 1e-10
#define CERT_STAT 1e-6

/* smallest eigenvalue of the k x k tridiagonal (al, be) and its unit
 * eigenvector sv[k]; *hmax = max |eigenvalue| */
static int tri_min(bl_run *r, const double *al, const double *be, size_t k, double *theta, double *sv,
                   double *hmax) {
  tn_ctx *tn = &r->S->tn;
  size_t shape[2] = {k, k};
  blo_tensor *T = tn_new(tn, 2, shape), *ev = NULL, *V = NULL;
  if (!T) return bl_error(r, "%s", tn->err);
  memset(T->data, 0, k * k * sizeof(double));
  for (size_t i = 0; i < k; i++) {
    T->data[i * k + i] = al[i];
    if (i + 1 < k) T->data[i * k + i + 1] = T->data[(i + 1) * k + i] = be[i];
  }
  int rc = tn_eigh(tn, T, &ev, &V);
  tn_release(tn, T);
  if (rc) return bl_error(r, "inner certificate: %s", tn->err);
  *theta = ev->data[0];
  for (size_t i = 0; i < k; i++) sv[i] = V->data[i * k];   /* row-major: column 0 is theta's eigenvector */
  *hmax = fmax(fabs(ev->data[0]), fabs(ev->data[k - 1]));
  tn_release(tn, ev);
  tn_release(tn, V);
  return EV_OK;
}

int bl_certify(bl_run *r, const char *what) {
  if (r->set.certificate == BL_CERT_OFF) {
    r->min_eig = r->min_eig_err = NAN;
    strcpy(r->cert, "off");
    return EV_OK;
  }
  size_t n = r->n, kmax = n < CERT_STEPS ? n : CERT_STEPS;
  double *V = calloc((kmax + 1) * n, sizeof(double)), *w = calloc(n, sizeof(double));
  double al[CERT_STEPS], be[CERT_STEPS], sv[CERT_STEPS];
  if (!V || !w) { free(V); free(w); return bl_error(r, "out of memory"); }
  tn_rng g;
  tn_rng_seed(&g, 0x6c616e637a6f73ULL);
  for (size_t i = 0; i < n; i++) V[i] = tn_rng_normal(&g);
  double nv = bl_norm(V, n);
  for (size_t i = 0; i < n; i++) V[i] /= nv;
  int rc = bl_hold_point(r);   /* every product is at this point */
  double theta = 0, resid = 0, hmax = 0;
  size_t k = 0;
  while (rc == EV_OK && k < kmax) {
    double *vk = V + k * n;
    if ((rc = bl_hvp(r, vk, NULL, w)) != EV_OK) break;
    if (!bl_finite(w, n)) { rc = bl_error(r, "inner certificate: a Hessian-vector product is not finite"); break; }
    al[k] = bl_dot(vk, w, n);
    for (int pass = 0; pass < 2; pass++)
      for (size_t j = 0; j <= k; j++) {
        double c = bl_dot(V + j * n, w, n);
        for (size_t i = 0; i < n; i++) w[i] -= c * V[j * n + i];
      }
    be[k] = bl_norm(w, n);
    k++;
    if ((rc = tri_min(r, al, be, k, &theta, sv, &hmax)) != EV_OK) break;
    resid = be[k - 1] * fabs(sv[k - 1]);
    if (be[k - 1] <= CERT_CONV * hmax) { resid = 0; break; }   /* invariant subspace */
    if (resid <= CERT_CONV * hmax) break;
    for (size_t i = 0; i < n; i++) V[k * n + i] = w[i] / be[k - 1];
  }
  /* the slope of f along the Ritz vector u = sum_j sv_j V_j of theta */
  double slope = 0;
  for (size_t j = 0; rc == EV_OK && j < k; j++) slope += sv[j] * bl_dot(V + j * n, r->gy, n);
  free(V);
  free(w);
  if (rc) return rc;
  double tol = CERT_TOL * hmax;
  double gn = r->con ? blc_gap(r, r->y, r->gy) : bl_norm(r->gy, n);
  /* a saddle: f is flat along its direction of negative curvature (or y is
   * stationary), so a descent method cannot leave it */
  int stationary = fmin(gn, fabs(slope)) <= fmax(r->set.inner_tol, CERT_STAT);
  r->min_eig = theta;
  r->min_eig_err = resid;
  if (theta < -tol) strcpy(r->cert, stationary ? "saddle" : "curvature");
  else if (theta - resid >= -tol) strcpy(r->cert, "minimum");
  else strcpy(r->cert, "unknown");
  if (theta < -tol) {
    r->saddles++;
    const char *mn = r->set.hg.m ? r->set.hg.m->name : "";
    int assumes_min = strcmp(mn, "cg") == 0 || strcmp(mn, "neumann") == 0 || strcmp(mn, "exact") == 0 ||
                      strcmp(mn, "t1t2") == 0;
    if (!r->cert_warned && stationary) {
      r->cert_warned = 1;
      bl_warn(r, "%s: the inner point is not a minimum of f: H_yy has an eigenvalue <= %.3g (Lanczos, %zu "
                 "products) at |grad_y f| = %.3g (a saddle point or a maximum where the gradient vanishes), so the "
                 "hypergradient formulas, which assume a minimum, do not apply (start the inner solve elsewhere, "
                 "e.g. inner_starts = 5, or check f; see the result's inner_certificate)",
              what, theta, k, gn);
    } else if (!r->cert_warned && assumes_min) {
      r->cert_warned = 1;
      bl_warn(r, "%s: the inner loop stopped before a minimum of f: H_yy has an eigenvalue <= %.3g (Lanczos, %zu "
                 "products) at |grad_y f| = %.3g, and %s() assumes y is a minimum (run more inner steps or set "
                 "inner_tol, or use unroll(), which differentiates the steps taken)",
              what, theta, k, gn, mn);
    }
  }
  return EV_OK;
}
