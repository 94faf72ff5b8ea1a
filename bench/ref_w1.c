/* ref_w1.c: the C + OpenBLAS reference of W1 (bench/w1.blo): per-feature
 * weight decay for ridge regression, cold start, T inner GD steps,
 * hypergradient cg(K, tol = 0) or unroll(K), outer Adam.  Analytic
 * derivatives:
 *   f(lam, w) = mean((X w - y)^2) + sum(exp(lam) w^2)
 *   grad_w f  = 2/n X'(X w - y) + 2 exp(lam) w
 *   H_ww v    = 2/n X'(X v) + 2 exp(lam) v,   H_lam,w v = 2 exp(lam) w v
 *   F(w) = mean((Xv w - yv)^2),  grad_w F = 2/nv Xv'(Xv w - yv),  grad_lam F = 0
 * Same algorithm as blo (runtime/bilevel.c, hg_cg.c, hg_unroll.c), without
 * the work whose result is not used (grad f at y_T).
 * Usage: ref_w1 METHOD K T OUTER [n d nva]; prints RESULT F=... time=... */
#include "ref_common.h"

static long n = 2000, d = 500, nva = 1000;
static double *X, *y, *Xv, *yv, *el, *r_n, *r_v;

static void feats(double *A, long i0, long m) {
  for (long a = 0; a < m; a++) {
    double i = (double)(i0 + a);
    for (long b = 0; b < d; b++) {
      double j = (double)b;
      double v = i * i * i * 3 + i * j * j * 5 + j * j * j * 7 + i * j * 11 + i * 13 + j * 17;
      A[a * d + b] = 2 * hm(v, 7919) / 7919 - 1;
    }
  }
}
static void targets(double *out, const double *A, long i0, long m, const double *wt) {
  cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)m, (int)d, 1.0, A, (int)d, wt, 1, 0.0, out, 1);
  for (long a = 0; a < m; a++) {
    double i = (double)(i0 + a);
    out[a] += 0.5 * (2 * hm(i * i * 17 + i * 5, 7907) / 7907 - 1);
  }
}

/* g = grad_w f at w */
static void grad_f(const double *w, double *g) {
  memcpy(r_n, y, (size_t)n * sizeof(double));
  cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)d, 1.0, X, (int)d, w, 1, -1.0, r_n, 1);
  for (long j = 0; j < d; j++) g[j] = 2 * el[j] * w[j];
  cblas_dgemv(CblasRowMajor, CblasTrans, (int)n, (int)d, 2.0 / (double)n, X, (int)d, r_n, 1, 1.0, g, 1);
}
/* out = H_ww v */
static void hvp(const double *v, double *out) {
  cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)d, 1.0, X, (int)d, v, 1, 0.0, r_n, 1);
  for (long j = 0; j < d; j++) out[j] = 2 * el[j] * v[j];
  cblas_dgemv(CblasRowMajor, CblasTrans, (int)n, (int)d, 2.0 / (double)n, X, (int)d, r_n, 1, 1.0, out, 1);
}
/* F at w, and grad_w F into gy (if not NULL) */
static double outer_F(const double *w, double *gy) {
  memcpy(r_v, yv, (size_t)nva * sizeof(double));
  cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)nva, (int)d, 1.0, Xv, (int)d, w, 1, -1.0, r_v, 1);
  double F = dot(r_v, r_v, (size_t)nva) / (double)nva;
  if (gy) cblas_dgemv(CblasRowMajor, CblasTrans, (int)nva, (int)d, 2.0 / (double)nva, Xv, (int)d, r_v, 1, 0.0, gy, 1);
  return F;
}

int main(int argc, char **argv) {
  if (argc < 5) { fprintf(stderr, "usage: ref_w1 cg|unroll K T OUTER [n d nva]\n"); return 2; }
  int unroll = strcmp(argv[1], "unroll") == 0;
  long K = atol(argv[2]), T = atol(argv[3]), outer = atol(argv[4]);
  if (argc > 7) { n = atol(argv[5]); d = atol(argv[6]); nva = atol(argv[7]); }
  const double lr = 0.8, tol = 0;   /* inner step; cg tolerance (blo: cg(iters = K, tol = 0)) */
  X = xcalloc((size_t)(n * d), sizeof(double));
  Xv = xcalloc((size_t)(nva * d), sizeof(double));
  y = xcalloc((size_t)n, sizeof(double));
  yv = xcalloc((size_t)nva, sizeof(double));
  double *wt = xcalloc((size_t)d, sizeof(double));
  for (long j = 0; j < d; j++) wt[j] = 2 * hm((double)j * (double)j * 3 + (double)j * 7, 101) / 101 - 1;
  feats(X, 0, n);
  feats(Xv, n, nva);
  targets(y, X, 0, n, wt);
  targets(yv, Xv, n, nva, wt);

  double t0 = now_sec();
  double *lam = xcalloc((size_t)d, sizeof(double)), *w = xcalloc((size_t)d, sizeof(double));
  el = xcalloc((size_t)d, sizeof(double));
  r_n = xcalloc((size_t)n, sizeof(double));
  r_v = xcalloc((size_t)nva, sizeof(double));
  double *g = xcalloc((size_t)d, sizeof(double)), *Fy = xcalloc((size_t)d, sizeof(double));
  double *dx = xcalloc((size_t)d, sizeof(double));
  double *q = xcalloc((size_t)d, sizeof(double)), *res = xcalloc((size_t)d, sizeof(double));
  double *p = xcalloc((size_t)d, sizeof(double)), *Ap = xcalloc((size_t)d, sizeof(double));
  double *a = xcalloc((size_t)d, sizeof(double)), *c = xcalloc((size_t)d, sizeof(double));
  long Ku = unroll ? (K < T ? K : T) : 0;
  double *traj = xcalloc((size_t)(Ku * d), sizeof(double));
  for (long j = 0; j < d; j++) lam[j] = -3.0;
  adam_t opt;
  adam_init(&opt, 0.05, (size_t)d);
  for (long k = 0; k <= outer; k++) {
    for (long j = 0; j < d; j++) el[j] = exp(lam[j]);
    memset(w, 0, (size_t)d * sizeof(double));      /* cold start */
    for (long t = 0; t < T; t++) {
      if (t >= T - Ku) memcpy(traj + (t - (T - Ku)) * d, w, (size_t)d * sizeof(double));
      grad_f(w, g);
      for (long j = 0; j < d; j++) w[j] -= lr * g[j];
    }
    if (k == outer) break;                          /* the final inner loop at the final lam */
    outer_F(w, Fy);
    memset(dx, 0, (size_t)d * sizeof(double));     /* grad_lam F = 0 */
    if (!unroll) {
      double bnorm = sqrt(dot(Fy, Fy, (size_t)d));
      if (bnorm == 0) {
        memset(q, 0, (size_t)d * sizeof(double));
      } else {
        if (sqrt(dot(q, q, (size_t)d)) > 0) {
          hvp(q, Ap);
          for (long j = 0; j < d; j++) res[j] = Fy[j] - Ap[j];
        } else {
          memcpy(res, Fy, (size_t)d * sizeof(double));
        }
        memcpy(p, res, (size_t)d * sizeof(double));
        double rs = dot(res, res, (size_t)d);
        for (long it = 0; it < K && sqrt(rs) > tol * bnorm; it++) {
          hvp(p, Ap);
          double pAp = dot(p, Ap, (size_t)d);
          if (!(pAp > 0)) break;
          double alpha = rs / pAp;
          for (long j = 0; j < d; j++) { q[j] += alpha * p[j]; res[j] -= alpha * Ap[j]; }
          double rs2 = dot(res, res, (size_t)d), beta = rs2 / rs;
          for (long j = 0; j < d; j++) p[j] = res[j] + beta * p[j];
          rs = rs2;
        }
        for (long j = 0; j < d; j++) dx[j] -= 2 * el[j] * w[j] * q[j];
      }
    } else {
      memcpy(a, Fy, (size_t)d * sizeof(double));
      for (long t = T - 1; t >= T - Ku; t--) {
        const double *wt_ = traj + (t - (T - Ku)) * d;
        for (long j = 0; j < d; j++) c[j] = -lr * a[j];
        hvp(c, Ap);
        for (long j = 0; j < d; j++) { a[j] += Ap[j]; dx[j] += 2 * el[j] * wt_[j] * c[j]; }
      }
    }
    adam_step(&opt, lam, dx);
  }
  double F = outer_F(w, NULL);
  double el_t = now_sec() - t0;
  printf("RESULT F=%.17g time=%.6f\n", F, el_t);
  return 0;
}
