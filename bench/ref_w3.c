/* ref_w3.c: the C reference of W3 (bench/w3.blo): P6 of docs/METHODS.md,
 *   f(u, w) = 1/2 (w1 + u w2 - 1)^2,  F(w) = 1/2 |w - (1, 1)|^2,  w0 = 0,
 * cold start, T GD steps (lr 0.5), unroll() of all T steps, outer SGD (lr 0.1).
 * With r = w1 + u w2 - 1 and n = (1, u):  grad_w f = r n,
 *   H_ww c = n (n . c),  H_uw c = d/du (r n . c) = w2 (n . c) + r c2.
 * Usage: ref_w3 [OUTER T]; prints RESULT F=... time=... */
#include "ref_common.h"

int main(int argc, char **argv) {
  long outer = argc > 1 ? atol(argv[1]) : 20000, T = argc > 2 ? atol(argv[2]) : 10;
  const double lr = 0.5, olr = 0.1;
  double *tw = xcalloc((size_t)(2 * T), sizeof(double));
  double t0 = now_sec();
  double u = 1.0, w1 = 0, w2 = 0;
  for (long k = 0; k <= outer; k++) {
    w1 = w2 = 0;
    for (long t = 0; t < T; t++) {
      tw[2 * t] = w1;
      tw[2 * t + 1] = w2;
      double r = w1 + u * w2 - 1;
      w1 -= lr * r;
      w2 -= lr * (r * u);
    }
    if (k == outer) break;
    double a1 = w1 - 1, a2 = w2 - 1, d = 0;   /* grad_w F, grad_u F = 0 */
    for (long t = T - 1; t >= 0; t--) {
      double v1 = tw[2 * t], v2 = tw[2 * t + 1], r = v1 + u * v2 - 1;
      double c1 = -lr * a1, c2 = -lr * a2, nc = c1 + u * c2;
      a1 += nc;
      a2 += u * nc;
      d += v2 * nc + r * c2;
    }
    u -= olr * d;
  }
  double F = 0.5 * ((w1 - 1) * (w1 - 1) + (w2 - 1) * (w2 - 1));
  double el = now_sec() - t0;
  printf("RESULT F=%.17g time=%.6f u=%.17g\n", F, el, u);
  return 0;
}
