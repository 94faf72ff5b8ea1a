/* test_project.c: unit tests for runtime/project.c.
 *
 * The sort-based simplex projection is compared with the bisection
 * reference; every projection with the optimality conditions it must
 * satisfy; every Jacobian product with central finite differences of the
 * projection at points away from its kinks. */
#include "project.h"

#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* deterministic uniform numbers in [-s, s) */
static double rnd(uint64_t *st, double s) {
  *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
  return s * (2.0 * (double)(*st >> 11) / 9007199254740992.0 - 1.0);
}

START_TEST(test_simplex_vs_reference) {
  uint64_t st = 42;
  double y[40], yr[40], work[40];
  for (int trial = 0; trial < 400; trial++) {
    size_t k = 1 + (size_t)trial % 37;
    double scale = trial % 3 == 0 ? 0.1 : trial % 3 == 1 ? 3 : 1e3;
    for (size_t i = 0; i < k; i++) y[i] = rnd(&st, scale);
    if (trial % 5 == 0 && k > 2) y[1] = y[0];   /* ties */
    memcpy(yr, y, k * sizeof(double));
    proj_simplex(y, k, work);
    proj_simplex_ref(yr, k);
    double sum = 0;
    for (size_t i = 0; i < k; i++) {
      ck_assert_double_ge(y[i], 0);
      ck_assert_double_eq_tol(y[i], yr[i], 1e-12 * (1 + scale));
      sum += y[i];
    }
    ck_assert_double_eq_tol(sum, 1, 1e-12 * (1 + scale));
  }
}
END_TEST

/* the projection of a point on the simplex is the point itself; of a
 * constant row, the uniform distribution */
START_TEST(test_simplex_fixed_points) {
  double y[4] = {0.1, 0.2, 0.3, 0.4}, work[4];
  proj_simplex(y, 4, work);
  ck_assert_double_eq_tol(y[0], 0.1, 1e-15);
  ck_assert_double_eq_tol(y[3], 0.4, 1e-15);
  double c[3] = {7, 7, 7};
  proj_simplex(c, 3, work);
  for (int i = 0; i < 3; i++) ck_assert_double_eq_tol(c[i], 1.0 / 3, 1e-15);
  /* closed form: [0.8, 0.6, -0.5] -> tau = 0.2 -> [0.6, 0.4, 0] */
  double z[3] = {0.8, 0.6, -0.5};
  proj_simplex(z, 3, work);
  ck_assert_double_eq_tol(z[0], 0.6, 1e-15);
  ck_assert_double_eq_tol(z[1], 0.4, 1e-15);
  ck_assert_double_eq(z[2], 0);
}
END_TEST

START_TEST(test_simplex_jacobian_fd) {
  uint64_t st = 7;
  double z[12], p[12], zp[12], zm[12], a[12], ja[12], work[12];
  const double h = 1e-6;
  for (int trial = 0; trial < 60; trial++) {
    size_t k = 2 + (size_t)trial % 10;
    for (size_t i = 0; i < k; i++) z[i] = rnd(&st, 1), a[i] = rnd(&st, 1);
    memcpy(p, z, k * sizeof(double));
    proj_simplex(p, k, work);
    /* skip a point within h of a kink (an entry about to enter the support) */
    int near = 0;
    memcpy(zp, z, k * sizeof(double));
    double tau = 0;
    for (size_t i = 0; i < k; i++) if (p[i] > 0) { tau = z[i] - p[i]; break; }
    for (size_t i = 0; i < k; i++) if (fabs(z[i] - tau) < 1e-4) near = 1;
    if (near) continue;
    for (size_t i = 0; i < k; i++) zp[i] = z[i] + h * a[i], zm[i] = z[i] - h * a[i];
    proj_simplex(zp, k, work);
    proj_simplex(zm, k, work);
    memcpy(ja, a, k * sizeof(double));
    proj_simplex_tangent(p, ja, k);
    for (size_t i = 0; i < k; i++) ck_assert_double_eq_tol(ja[i], (zp[i] - zm[i]) / (2 * h), 1e-8);
  }
}
END_TEST

START_TEST(test_ball) {
  uint64_t st = 11;
  double z[6], y[6], zp[6], zm[6], a[6], ja[6], u[6];
  const double h = 1e-6;
  for (int trial = 0; trial < 50; trial++) {
    double r = 0.2 + (double)(trial % 7) * 0.3;
    for (int i = 0; i < 6; i++) z[i] = rnd(&st, 1.5), a[i] = rnd(&st, 1);
    memcpy(y, z, sizeof z);
    double nz = proj_ball(y, 6, r), ny = 0;
    for (int i = 0; i < 6; i++) ny += y[i] * y[i];
    ny = sqrt(ny);
    if (nz <= r) {
      ck_assert_double_eq_tol(ny, nz, 1e-15);
      for (int i = 0; i < 6; i++) ck_assert_double_eq(y[i], z[i]);
      continue;
    }
    ck_assert_double_eq_tol(ny, r, 1e-14);
    for (int i = 0; i < 6; i++) {
      ck_assert_double_eq_tol(y[i], z[i] * r / nz, 1e-15);
      u[i] = z[i] / nz;
      zp[i] = z[i] + h * a[i];
      zm[i] = z[i] - h * a[i];
    }
    proj_ball(zp, 6, r);
    proj_ball(zm, 6, r);
    memcpy(ja, a, sizeof a);
    double ua = proj_ball_tangent(u, ja, 6, r / nz), ua2 = 0;
    for (int i = 0; i < 6; i++) {
      ck_assert_double_eq_tol(ja[i], (zp[i] - zm[i]) / (2 * h), 1e-8);
      ua2 += u[i] * a[i];
    }
    ck_assert_double_eq_tol(ua, ua2, 1e-15);
  }
}
END_TEST

START_TEST(test_box) {
  double lo[4] = {0, -1, 2, 3}, hi[4] = {1, 1, 2, 4};
  double y[4] = {-0.5, 0.5, 7, 9};
  proj_box(y, lo, hi, 4);
  ck_assert_double_eq(y[0], 0);
  ck_assert_double_eq(y[1], 0.5);
  ck_assert_double_eq(y[2], 2);
  ck_assert_double_eq(y[3], 4);
  ck_assert_int_eq(proj_box_side(-0.5, 0, 1), 1);
  ck_assert_int_eq(proj_box_side(0.5, 0, 1), 0);
  ck_assert_int_eq(proj_box_side(1.5, 0, 1), 2);
  ck_assert_int_eq(proj_box_side(2, 2, 2), 1);   /* pinned: lo == hi */
  ck_assert_int_eq(proj_box_side(0, 0, 1), 0);   /* on the bound, not beyond: free */
}
END_TEST

int main(void) {
  Suite *s = suite_create("project");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_simplex_vs_reference);
  tcase_add_test(tc, test_simplex_fixed_points);
  tcase_add_test(tc, test_simplex_jacobian_fd);
  tcase_add_test(tc, test_ball);
  tcase_add_test(tc, test_box);
  suite_add_tcase(s, tc);
  return check_run(s, "test_project", CK_FORK);
}
