/* ref_common.h: helpers shared by the hand-written C references of the
 * benchmark suite (bench/ref_*.c): timing, the deterministic hash data and
 * the Adam / SGD updates exactly as blo's runtime/optim.c writes them. */
#ifndef REF_COMMON_H
#define REF_COMMON_H
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline void *xcalloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz);
  if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
  return p;
}

/* v mod p for a nonnegative integer-valued double, as the scripts compute it */
static inline double hm(double v, double p) { return v - p * floor(v / p); }

/* bias-corrected Adam, blo's formula to the operation */
typedef struct { double lr, b1, b2, eps; long t; double *m, *v; size_t n; } adam_t;
static inline void adam_init(adam_t *a, double lr, size_t n) {
  a->lr = lr; a->b1 = 0.9; a->b2 = 0.999; a->eps = 1e-8; a->t = 0; a->n = n;
  a->m = xcalloc(n, sizeof(double));
  a->v = xcalloc(n, sizeof(double));
}
static inline void adam_step(adam_t *a, double *x, const double *g) {
  a->t++;
  double b1 = a->b1, b2 = a->b2, c1 = 1 - pow(b1, (double)a->t), c2 = 1 - pow(b2, (double)a->t);
  for (size_t i = 0; i < a->n; i++) {
    a->m[i] = b1 * a->m[i] + (1 - b1) * g[i];
    a->v[i] = b2 * a->v[i] + (1 - b2) * g[i] * g[i];
    x[i] -= a->lr * (a->m[i] / c1) / (sqrt(a->v[i] / c2) + a->eps);
  }
}
static inline double dot(const double *a, const double *b, size_t n) { return cblas_ddot((int)n, a, 1, b, 1); }
#endif
