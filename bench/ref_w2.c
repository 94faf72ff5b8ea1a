/* ref_w2.c: the C + OpenBLAS reference of W2 (bench/w2.blo): dataset
 * distillation on Fashion-MNIST, 10 learned images Z (10 x 784), linear
 * softmax classifier W (784 x 10), warm start, T inner GD steps, unroll of all
 * T steps, outer Adam on Z.  Analytic derivatives, with P = softmax(L) by rows:
 *   f(Z, W) = xent(Z W, I),  G = (P - I) / 10,  grad_W f = Z' G
 *   along a tangent c of W:  dL = Z c,  dP = P .* (dL - rowsum(P .* dL)),
 *                            H_WW c = Z' dP / 10,  H_ZW c = G c' + dP W' / 10
 *   F(W) = xent(Xtr W, Ytr),  grad_W F = Xtr' (P - Ytr) / ntr,  grad_Z F = 0
 * Usage: ref_w2 [T OUTER NTR DIR]; prints RESULT F=... time=...
 * (time: the solve; reading the IDX files is excluded, as in blo's r.time) */
#include "ref_common.h"

#include <zlib.h>

enum { D = 784, C = 10, NB = 128 };

static unsigned char *read_idx(const char *path, size_t skip, size_t count) {
  gzFile g = gzopen(path, "rb");
  if (!g) { fprintf(stderr, "cannot open %s\n", path); exit(1); }
  unsigned char *buf = xcalloc(skip + count, 1);
  size_t got = 0;
  while (got < skip + count) {
    int k = gzread(g, buf + got, (unsigned)(skip + count - got));
    if (k <= 0) { fprintf(stderr, "short read in %s\n", path); exit(1); }
    got += (size_t)k;
  }
  gzclose(g);
  return buf;
}

/* rows of L (m x C): L <- softmax, returns the sum over rows of lse - L[label] */
static double softmax_xent(double *L, long m, const int *lab) {
  double tot = 0;
  for (long b = 0; b < m; b++) {
    double *l = L + b * C, mx = l[0], s = 0;
    for (int j = 1; j < C; j++) if (l[j] > mx) mx = l[j];
    for (int j = 0; j < C; j++) s += exp(l[j] - mx);
    double lse = mx + log(s);
    tot += lse - l[lab[b]];
    for (int j = 0; j < C; j++) l[j] = exp(l[j] - lse);
  }
  return tot;
}

int main(int argc, char **argv) {
  long T = argc > 1 ? atol(argv[1]) : 10, outer = argc > 2 ? atol(argv[2]) : 50, ntr = argc > 3 ? atol(argv[3]) : 10000;
  const char *dir = argc > 4 ? argv[4] : "/usr/share/datasets/fashion-mnist";
  const double lr = 0.1;
  char path[4096];
  snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
  unsigned char *img = read_idx(path, 16, (size_t)ntr * D);
  snprintf(path, sizeof path, "%s/train-labels-idx1-ubyte.gz", dir);
  unsigned char *lb = read_idx(path, 8, (size_t)ntr);
  double *X = xcalloc((size_t)ntr * D, sizeof(double));
  int *ytr = xcalloc((size_t)ntr, sizeof(int)), yd[C];
  for (size_t i = 0; i < (size_t)ntr * D; i++) X[i] = (double)img[16 + i] / 255;
  for (long i = 0; i < ntr; i++) ytr[i] = lb[8 + i];
  for (int j = 0; j < C; j++) yd[j] = j;
  double *Z = xcalloc(C * D, sizeof(double));
  for (int c = 0; c < C; c++)
    for (int k = 0; k < D; k++) {
      double cc = c, kk = k;
      Z[c * D + k] = 0.1 * (2 * hm(cc * cc * 31 + kk * kk * 7 + cc * kk * 13 + kk * 3, 7919) / 7919 - 1);
    }

  int fused = getenv("REF_FUSED") ? atoi(getenv("REF_FUSED")) : openblas_get_num_threads() == 1;
  double t0 = now_sec();
  double *W = xcalloc(D * C, sizeof(double)), *traj = xcalloc((size_t)T * D * C, sizeof(double));
  double *L = xcalloc((size_t)ntr * C, sizeof(double)), *Fy = xcalloc(D * C, sizeof(double));
  double Li[C * C], dL[C * C];
  double *a = xcalloc(D * C, sizeof(double)), *c = xcalloc(D * C, sizeof(double));
  double *dZ = xcalloc(C * D, sizeof(double));
  adam_t opt;
  adam_init(&opt, 0.01, C * D);
  for (long k = 0; k <= outer; k++) {
    /* inner loop (warm start: W carries over) */
    for (long t = 0; t < T; t++) {
      memcpy(traj + (size_t)t * D * C, W, D * C * sizeof(double));
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, C, D, 1.0, Z, D, W, C, 0.0, Li, C);
      softmax_xent(Li, C, yd);
      for (int b = 0; b < C; b++) Li[b * C + b] -= 1;                 /* P - Y */
      /* W -= lr Z' (P - Y) / 10 */
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, C, C, -lr / C, Z, D, Li, C, 1.0, W, C);
    }
    if (k == outer) break;
    /* F and grad_W F at W_T.  One thread: one pass over Xtr, blocks of NB
     * rows staying in cache between L = X W and the accumulation of
     * X' (P - Y) / ntr (faster here); more threads: two whole-matrix dgemm
     * calls, which OpenBLAS parallelizes. */
    if (fused) {
      memset(Fy, 0, D * C * sizeof(double));
      for (long b0 = 0; b0 < ntr; b0 += NB) {
        int nb = (int)(ntr - b0 < NB ? ntr - b0 : NB);
        double *Lb = L + b0 * C;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, C, D, 1.0, X + b0 * D, D, W, C, 0.0, Lb, C);
        softmax_xent(Lb, nb, ytr + b0);
        for (int b = 0; b < nb; b++) Lb[b * C + ytr[b0 + b]] -= 1;
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, C, nb, 1.0 / (double)ntr, X + b0 * D, D, Lb, C, 1.0, Fy,
                    C);
      }
    } else {
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ntr, C, D, 1.0, X, D, W, C, 0.0, L, C);
      softmax_xent(L, ntr, ytr);
      for (long b = 0; b < ntr; b++) L[b * C + ytr[b]] -= 1;
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, C, (int)ntr, 1.0 / (double)ntr, X, D, L, C, 0.0, Fy, C);
    }
    /* unroll: a = grad_W F, dZ = grad_Z F = 0 */
    memcpy(a, Fy, D * C * sizeof(double));
    memset(dZ, 0, C * D * sizeof(double));
    for (long t = T - 1; t >= 0; t--) {
      const double *Wt = traj + (size_t)t * D * C;
      for (int i = 0; i < D * C; i++) c[i] = -lr * a[i];
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, C, D, 1.0, Z, D, Wt, C, 0.0, Li, C);
      softmax_xent(Li, C, yd);                                        /* Li = P */
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, C, D, 1.0, Z, D, c, C, 0.0, dL, C);
      for (int b = 0; b < C; b++) {                                   /* dL <- dP */
        double s = 0;
        for (int j = 0; j < C; j++) s += Li[b * C + j] * dL[b * C + j];
        for (int j = 0; j < C; j++) dL[b * C + j] = Li[b * C + j] * (dL[b * C + j] - s);
      }
      for (int b = 0; b < C; b++) Li[b * C + b] -= 1;                 /* Li = P - Y */
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, C, C, 1.0 / C, Z, D, dL, C, 1.0, a, C);   /* a += H_WW c */
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, C, D, C, 1.0 / C, Li, C, c, C, 1.0, dZ, D);  /* dZ += G c' */
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, C, D, C, 1.0 / C, dL, C, Wt, C, 1.0, dZ, D); /* + dP W' / 10 */
    }
    adam_step(&opt, Z, dZ);
  }
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ntr, C, D, 1.0, X, D, W, C, 0.0, L, C);
  double F = softmax_xent(L, ntr, ytr) / (double)ntr;
  printf("RESULT F=%.17g time=%.6f\n", F, now_sec() - t0);
  return 0;
}
