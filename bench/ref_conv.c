/* ref_conv.c: the floor of conv2d's forward + backward (bench/conv.blo): the
 * three matrix products of one LeNet convolution layer on im2col matrices
 * computed beforehand, so that nothing but cblas_dgemm is timed:
 *   forward    y[n] [O, P]     = w [O, ckk] @ col[n] [ckk, P]
 *   input      dcol[n] [ckk, P] = w' @ G[n] [O, P]      (col2im of it is dx)
 *   weight     dw [O, ckk]     += G[n] @ col[n]'
 * with ckk = C kh kw and P = oh ow, stride 1, no padding.  col2im, needed for
 * the checksum only, runs after the clock stops.
 * Usage: ref_conv LAYER COUNT [N]   (LAYER conv1 or conv2, as conv.blo)
 *   REF_BATCH=1: the whole batch as one product each ([ckk, N P] layout)
 *   instead of one product per image.
 * Prints RESULT F=<sum of the squared gradients> time=<seconds>. */
#include "ref_common.h"

enum { KH = 5, KW = 5 };

/* 2 hm(i 7 + hm(i^2, 1009) 3 + k, p) / p - 1 at flat position i, as conv.blo */
static void hv(double *v, size_t n, double k, double p) {
  for (size_t i = 0; i < n; i++) {
    double d = (double)i;
    v[i] = 2 * hm(d * 7 + hm(d * d, 1009) * 3 + k, p) / p - 1;
  }
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: ref_conv conv1|conv2 COUNT [N]\n"); return 2; }
  int l2 = strcmp(argv[1], "conv2") == 0;
  long count = atol(argv[2]), N = argc > 3 ? atol(argv[3]) : 256;
  const char *b = getenv("REF_BATCH");
  int batch = b && strcmp(b, "1") == 0;
  size_t C = l2 ? 6 : 1, H = l2 ? 12 : 28, O = l2 ? 16 : 6, oh = H - KH + 1, P = oh * oh, ckk = C * KH * KW;
  double *x = xcalloc(N * C * H * H, sizeof(double)), *w = xcalloc(O * ckk, sizeof(double));
  double *G = xcalloc(N * O * P, sizeof(double)), *Gb = xcalloc(N * O * P, sizeof(double));
  double *col = xcalloc(N * ckk * P, sizeof(double)), *dcol = xcalloc(N * ckk * P, sizeof(double));
  double *y = xcalloc(N * O * P, sizeof(double)), *dw = xcalloc(O * ckk, sizeof(double));
  double *dx = xcalloc(N * C * H * H, sizeof(double));
  hv(x, N * C * H * H, 1, 251);
  hv(w, O * ckk, 2, 509);
  hv(G, N * O * P, 3, 127);
  /* im2col: per image [ckk, P] at col + n ckk P, or the batch [ckk, N P] */
  size_t ld = batch ? (size_t)N * P : P;
  for (long n = 0; n < N; n++)
    for (size_t c = 0; c < C; c++)
      for (size_t i = 0; i < KH; i++)
        for (size_t j = 0; j < KW; j++) {
          size_t r = (c * KH + i) * KW + j;
          double *row = batch ? col + r * ld + n * P : col + (n * ckk + r) * P;
          for (size_t u = 0; u < oh; u++)
            for (size_t v = 0; v < oh; v++) row[u * oh + v] = x[((n * C + c) * H + u + i) * H + v + j];
        }
  /* the batch layout of G: [O, N P] */
  for (long n = 0; n < N; n++)
    for (size_t o = 0; o < O; o++) memcpy(Gb + o * N * P + n * P, G + (n * O + o) * P, P * sizeof(double));
  /* k = -1: an untimed warm-up, so that first touches of the buffers are not timed
   * (blo's buffers come from its pool after its first pass too) */
  double t0 = 0;
  for (long k = -1; k < count; k++) {
    if (k == 0) t0 = now_sec();
    if (batch) {
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)ld, (int)ckk, 1.0, w, (int)ckk, col, (int)ld,
                  0.0, y, (int)ld);
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ckk, (int)ld, (int)O, 1.0, w, (int)ckk, Gb, (int)ld,
                  0.0, dcol, (int)ld);
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)O, (int)ckk, (int)ld, 1.0, Gb, (int)ld, col, (int)ld,
                  0.0, dw, (int)ckk);
    } else {
      for (long n = 0; n < N; n++)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)P, (int)ckk, 1.0, w, (int)ckk,
                    col + n * ckk * P, (int)P, 0.0, y + n * O * P, (int)P);
      for (long n = 0; n < N; n++)
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ckk, (int)P, (int)O, 1.0, w, (int)ckk,
                    G + n * O * P, (int)P, 0.0, dcol + n * ckk * P, (int)P);
      for (long n = 0; n < N; n++)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)O, (int)ckk, (int)P, 1.0, G + n * O * P, (int)P,
                    col + n * ckk * P, (int)P, n ? 1.0 : 0.0, dw, (int)ckk);
    }
  }
  double t = now_sec() - t0;
  /* col2im of dcol: dx, for the checksum */
  for (long n = 0; n < N; n++)
    for (size_t c = 0; c < C; c++)
      for (size_t i = 0; i < KH; i++)
        for (size_t j = 0; j < KW; j++) {
          size_t r = (c * KH + i) * KW + j;
          const double *row = batch ? dcol + r * ld + n * P : dcol + (n * ckk + r) * P;
          for (size_t u = 0; u < oh; u++)
            for (size_t v = 0; v < oh; v++) dx[((n * C + c) * H + u + i) * H + v + j] += row[u * oh + v];
        }
  printf("RESULT F=%.17g time=%.6f\n", dot(dx, dx, N * C * H * H) + dot(dw, dw, O * ckk), t);
  (void)y;
  return 0;
}
