/* project.c: projections onto a box, the probability simplex and a
 * Euclidean ball, and their Jacobian products (project.h).  The simplex
 * projection is the sort-based algorithm (Held, Wolfe, Crowder; Duchi et
 * al.); proj_simplex_ref finds the same threshold by bisection and is the
 * independent reference the unit tests compare with. */
#include "project.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void proj_box(double *y, const double *lo, const double *hi, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (y[i] < lo[i]) y[i] = lo[i];
    if (y[i] > hi[i]) y[i] = hi[i];
  }
}

int proj_box_side(double z, double lo, double hi) {
  if (z < lo || lo == hi) return 1;
  if (z > hi) return 2;
  return 0;
}

static int cmp_desc(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x < y) - (x > y);
}

/* shape: y [k], work [k] */
void proj_simplex(double *y, size_t k, double *work) {
  memcpy(work, y, k * sizeof(double));
  qsort(work, k, sizeof(double), cmp_desc);
  /* tau = (sum of the rho largest - 1) / rho for the largest rho whose
   * rho-th entry stays positive after the shift */
  double cum = 0, tau = 0;
  for (size_t j = 0; j < k; j++) {
    cum += work[j];
    double t = (cum - 1) / (double)(j + 1);
    if (work[j] - t > 0) tau = t;
  }
  for (size_t i = 0; i < k; i++) y[i] = y[i] > tau ? y[i] - tau : 0;
}

void proj_simplex_ref(double *y, size_t k) {
  /* s(tau) = sum max(y_i - tau, 0) decreases from >= 1 at min(y) - 1 to 0 at max(y) */
  double lo = y[0], hi = y[0];
  for (size_t i = 1; i < k; i++) {
    if (y[i] < lo) lo = y[i];
    if (y[i] > hi) hi = y[i];
  }
  lo -= 1;
  for (int it = 0; it < 200; it++) {
    double mid = 0.5 * (lo + hi), s = 0;
    if (mid == lo || mid == hi) break;
    for (size_t i = 0; i < k; i++) s += y[i] > mid ? y[i] - mid : 0;
    if (s > 1) lo = mid;
    else hi = mid;
  }
  double tau = 0.5 * (lo + hi);
  for (size_t i = 0; i < k; i++) y[i] = y[i] > tau ? y[i] - tau : 0;
}

void proj_simplex_tangent(const double *p, double *a, size_t k) {
  double s = 0;
  size_t c = 0;
  for (size_t i = 0; i < k; i++)
    if (p[i] > 0) { s += a[i]; c++; }
  double mean = c ? s / (double)c : 0;
  for (size_t i = 0; i < k; i++) a[i] = p[i] > 0 ? a[i] - mean : 0;
}

double proj_ball(double *y, size_t n, double r) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += y[i] * y[i];
  double nz = sqrt(s);
  if (nz > r) {
    double c = r / nz;
    for (size_t i = 0; i < n; i++) y[i] *= c;
  }
  return nz;
}

double proj_ball_tangent(const double *u, double *a, size_t n, double s) {
  double ua = 0;
  for (size_t i = 0; i < n; i++) ua += u[i] * a[i];
  for (size_t i = 0; i < n; i++) a[i] = s * (a[i] - u[i] * ua);
  return ua;
}
