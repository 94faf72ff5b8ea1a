/* tensor.c: allocation pool, elementwise kernels with broadcasting, BLAS
 * products, reductions, shape manipulation, indexing and the RNG.
 *
 * Layout conventions used throughout: a tensor of rank r is padded on the left
 * to NB = TN_MAX_RANK axes of size 1 ("padbox"), so every strided kernel walks one
 * fixed-depth box: an odometer over the leading axes and a loop over the last.
 * A stride of 0 on an axis broadcasts (or, for a destination, accumulates).
 */
#define _POSIX_C_SOURCE 200809L
#include "tensor.h"

#include <cblas.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================
 * context, errors, pool
 * ====================================================================== */

/* Size classes: 4 per power of two (at most 25% slack), index 4*e + k. */
#define TN_NCLASS 256

struct tn_pool {
  void *free_data[TN_NCLASS]; /* singly linked through the first word of each buffer */
  blo_tensor *free_hdr;       /* linked through ->data */
};

static void *default_realloc(void *ud, void *ptr, size_t old_size, size_t new_size) {
  (void)ud; (void)old_size;
  if (new_size == 0) { free(ptr); return NULL; }
  return realloc(ptr, new_size);
}

int tn_error(tn_ctx *ctx, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->err, TN_ERR_LEN, fmt, ap);
  va_end(ap);
  return -1;
}

const char *tn_shape_str_raw(int rank, const size_t *shape, char *buf, size_t n) {
  size_t pos = 0;
  if (n == 0) return buf;
  buf[0] = '\0';
  pos += (size_t)snprintf(buf + pos, n - pos, "[");
  for (int i = 0; i < rank && pos < n; i++)
    pos += (size_t)snprintf(buf + pos, n - pos, i ? ", %zu" : "%zu", shape[i]);
  if (pos < n) snprintf(buf + pos, n - pos, "]");
  return buf;
}

const char *tn_shape_str(const blo_tensor *t, char *buf, size_t n) {
  return tn_shape_str_raw(t->rank, t->shape, buf, n);
}

#define SB 160 /* enough for a rank-6 shape with 20-digit sizes */
#define NB TN_MAX_RANK /* axes of a padded box */

/* Returns the class index for a byte count and the rounded class size; -1 on overflow. */
static int size_class(size_t bytes, size_t *cls_bytes) {
  if (bytes < 16) bytes = 16;
  if (bytes > SIZE_MAX / 4) return -1;
  /* e with 2^e < bytes <= 2^(e+1), i.e. floor(log2(bytes - 1)) (bytes >= 16):
   * one instruction instead of a loop, on every tensor allocation and free */
  int e = (int)(sizeof(unsigned long long) * 8 - 1) - __builtin_clzll((unsigned long long)(bytes - 1));
  size_t step = (size_t)1 << (e - 2);
  size_t c = (bytes + step - 1) / step * step;
  *cls_bytes = c;
  return 4 * e + (int)(c / step - 4);
}

/* The pool exists except after an allocation failure at init: the common
 * case is inline (two calls per tn_new), the retry out of line. */
static tn_pool *pool_make(tn_ctx *ctx);
static inline tn_pool *pool_get(tn_ctx *ctx) { return ctx->pool ? ctx->pool : pool_make(ctx); }

static tn_pool *pool_make(tn_ctx *ctx) {
  if (!ctx->pool) {
    tn_pool *p = ctx->realloc_fn(ctx->alloc_ud, NULL, 0, sizeof(tn_pool));
    if (!p) { tn_error(ctx, "out of memory"); return NULL; }
    memset(p, 0, sizeof *p);
    ctx->pool = p;
  }
  return ctx->pool;
}

static void pool_trim_data(tn_ctx *ctx) {
  tn_pool *p = ctx->pool;
  if (!p) return;
  for (int c = 0; c < TN_NCLASS; c++) {
    while (p->free_data[c]) {
      void *buf = p->free_data[c];
      p->free_data[c] = *(void **)buf;
      size_t cb = 0;
      /* recover the class size from the index: 4*e + k with k in 1..4 */
      int e = (c - 1) / 4, k = c - 4 * e;
      cb = ((size_t)1 << e) + (size_t)k * ((size_t)1 << (e - 2));
      ctx->realloc_fn(ctx->alloc_ud, buf, cb, 0);
      ctx->mem_used -= cb;
    }
  }
}

void tn_ctx_trim(tn_ctx *ctx) {
  tn_pool *p = ctx->pool;
  pool_trim_data(ctx);
  if (!p) return;
  while (p->free_hdr) {
    blo_tensor *h = p->free_hdr;
    p->free_hdr = (blo_tensor *)(void *)h->data;
    ctx->realloc_fn(ctx->alloc_ud, h, sizeof(blo_tensor), 0);
  }
}

void tn_ctx_init(tn_ctx *ctx, tn_reallocf fn, void *ud) {
  memset(ctx, 0, sizeof *ctx);
  ctx->realloc_fn = fn ? fn : default_realloc;
  ctx->alloc_ud = ud;
  /* failure here is retried lazily by pool_get, which can report it */
  ctx->pool = ctx->realloc_fn(ud, NULL, 0, sizeof(tn_pool));
  if (ctx->pool) memset(ctx->pool, 0, sizeof(tn_pool));
}

void tn_ctx_free(tn_ctx *ctx) {
  if (!ctx->pool) return;
  tn_ctx_trim(ctx);
  ctx->realloc_fn(ctx->alloc_ud, ctx->pool, sizeof(tn_pool), 0);
  ctx->pool = NULL;
}

static void mem_live_add(tn_ctx *ctx, size_t cb) {
  ctx->mem_live += cb;
  if (ctx->mem_live > ctx->mem_peak) ctx->mem_peak = ctx->mem_live;
}

static double *data_alloc(tn_ctx *ctx, size_t n_elem, size_t *cap) {
  size_t cb;
  int c = n_elem > SIZE_MAX / sizeof(double) ? -1 : size_class(n_elem * sizeof(double), &cb);
  if (c < 0) { tn_error(ctx, "out of memory: %zu elements requested", n_elem); return NULL; }
  tn_pool *p = pool_get(ctx);
  if (!p) return NULL;
  if (p->free_data[c]) {
    void *buf = p->free_data[c];
    p->free_data[c] = *(void **)buf;
    *cap = cb;
    mem_live_add(ctx, cb);
    return buf;
  }
  /* pooled buffers of other sizes count against the cap: drop them before giving up */
  if (ctx->mem_cap && ctx->mem_used + cb > ctx->mem_cap) pool_trim_data(ctx);
  if (ctx->mem_cap && (cb > ctx->mem_cap || ctx->mem_used + cb > ctx->mem_cap)) {
    tn_error(ctx, "memory cap exceeded: %zu bytes requested, cap %zu bytes",
             n_elem * sizeof(double), ctx->mem_cap);
    return NULL;
  }
  ctx->n_sys_alloc++;
  void *buf = ctx->realloc_fn(ctx->alloc_ud, NULL, 0, cb);
  if (!buf) {
    pool_trim_data(ctx);
    ctx->n_sys_alloc++;
    buf = ctx->realloc_fn(ctx->alloc_ud, NULL, 0, cb);
    if (!buf) { tn_error(ctx, "out of memory"); return NULL; }
  }
  ctx->mem_used += cb;
  *cap = cb;
  mem_live_add(ctx, cb);
  return buf;
}

static void data_free(tn_ctx *ctx, double *data, size_t cap) {
  size_t cb;
  ctx->mem_live -= cap;
  int c = size_class(cap, &cb);
  if (ctx->pool && c >= 0 && cb == cap) {
    *(void **)(void *)data = ctx->pool->free_data[c];
    ctx->pool->free_data[c] = data;
  } else {
    ctx->realloc_fn(ctx->alloc_ud, data, cap, 0);
    ctx->mem_used -= cap;
  }
}

static blo_tensor *hdr_alloc(tn_ctx *ctx) {
  tn_pool *p = pool_get(ctx);
  if (!p) return NULL;
  if (p->free_hdr) {
    blo_tensor *h = p->free_hdr;
    p->free_hdr = (blo_tensor *)(void *)h->data;
    return h;
  }
  ctx->n_sys_alloc++;
  blo_tensor *h = ctx->realloc_fn(ctx->alloc_ud, NULL, 0, sizeof(blo_tensor));
  if (!h) tn_error(ctx, "out of memory");
  return h;
}

static void hdr_free(tn_ctx *ctx, blo_tensor *h) {
  if (ctx->pool) {
    h->data = (double *)(void *)ctx->pool->free_hdr;
    ctx->pool->free_hdr = h;
  } else {
    ctx->realloc_fn(ctx->alloc_ud, h, sizeof(blo_tensor), 0);
  }
}

/* ======================================================================
 * lifetime
 * ====================================================================== */

blo_tensor *tn_new(tn_ctx *ctx, int rank, const size_t *shape) {
  if (rank < 0 || rank > TN_MAX_RANK)
    { tn_error(ctx, "rank %d is not supported (maximum %d)", rank, TN_MAX_RANK); return NULL; }
  size_t size = 1;
  for (int i = 0; i < rank; i++) {
    /* overflow test without a 64-bit division per axis on every allocation */
    if (__builtin_mul_overflow(size, shape[i], &size)) {
      char s[SB];
      tn_error(ctx, "out of memory: shape %s is too large", tn_shape_str_raw(rank, shape, s, SB));
      return NULL;
    }
  }
  blo_tensor *t = hdr_alloc(ctx);
  if (!t) return NULL;
  size_t cap;
  double *d;
  if (size <= sizeof t->small / sizeof(double)) { /* inline (see blo_tensor.small): no data buffer */
    d = t->small;
    cap = sizeof t->small;
  } else if (!(d = data_alloc(ctx, size, &cap))) {
    hdr_free(ctx, t);
    return NULL;
  }
  t->refcount = 1;
  t->rank = rank;
  for (int i = 0; i < TN_MAX_RANK; i++) t->shape[i] = i < rank ? shape[i] : 1;
  t->size = size;
  t->data = d;
  t->cap = cap;
  return t;
}

blo_tensor *tn_zeros(tn_ctx *ctx, int rank, const size_t *shape) {
  blo_tensor *t = tn_new(ctx, rank, shape);
  if (t && t->size) memset(t->data, 0, t->size * sizeof(double));
  return t;
}

blo_tensor *tn_scalar(tn_ctx *ctx, double v) {
  blo_tensor *t = tn_new(ctx, 0, NULL);
  if (t) t->data[0] = v;
  return t;
}

blo_tensor *tn_from(tn_ctx *ctx, int rank, const size_t *shape, const double *src) {
  blo_tensor *t = tn_new(ctx, rank, shape);
  if (t && t->size) memcpy(t->data, src, t->size * sizeof(double));
  return t;
}

blo_tensor *tn_copy(tn_ctx *ctx, const blo_tensor *a) {
  return tn_from(ctx, a->rank, a->shape, a->data);
}

blo_tensor *tn_zeros_like(tn_ctx *ctx, const blo_tensor *a) {
  return tn_zeros(ctx, a->rank, a->shape);
}

void tn_free_(tn_ctx *ctx, blo_tensor *t) {
  if (t->data != t->small) data_free(ctx, t->data, t->cap);
  hdr_free(ctx, t);
}

/* ======================================================================
 * strided helpers
 * ====================================================================== */

/* Left-pads a shape to NB axes; strides are contiguous, 0 on size-1 axes (so they broadcast). */
static void padbox(int rank, const size_t *shape, size_t ps[NB], size_t st[NB]) {
  for (int i = 0; i < NB; i++) ps[i] = 1;
  for (int i = 0; i < rank; i++) ps[NB - rank + i] = shape[i];
  size_t s = 1;
  for (int i = NB - 1; i >= 0; i--) { st[i] = ps[i] == 1 ? 0 : s; s *= ps[i]; }
}

/* Contiguous strides for a padded NB-d box (no zeroing). */
static void contigbox(const size_t ps[NB], size_t st[NB]) {
  size_t s = 1;
  for (int i = NB - 1; i >= 0; i--) { st[i] = s; s *= ps[i]; }
}

/* Rows of a box: the product of its counts on all axes but the last. */
static size_t box_rows(const size_t cnt[NB]) {
  size_t rows = 1;
  for (int i = 0; i < NB - 1; i++) rows *= cnt[i];
  return rows;
}

/* Steps the odometer idx over the leading NB-1 axes of box cnt, moving each
 * offset off[j] by its strides st[j] (j < nptr).  Unsigned arithmetic wraps
 * back exactly when an axis resets. */
static void box_next(const size_t cnt[NB], size_t idx[NB], int nptr, size_t *off, const size_t *const *st) {
  for (int k = NB - 2; k >= 0; k--) {
    if (++idx[k] < cnt[k]) {
      for (int j = 0; j < nptr; j++) off[j] += st[j][k];
      return;
    }
    idx[k] = 0;
    for (int j = 0; j < nptr; j++) off[j] -= (cnt[k] - 1) * st[j][k];
  }
}

/* box cnt[NB]: d[...] = s[...] (add == 0) or d[...] += s[...]; a 0 stride broadcasts/accumulates */
static void strided2(const size_t cnt[NB], double *d, const size_t ds[NB], const double *s,
                     const size_t ss[NB], int add) {
  size_t n = cnt[NB - 1], d3 = ds[NB - 1], s3 = ss[NB - 1], rows = box_rows(cnt);
  size_t idx[NB] = {0}, off[2] = {0, 0};
  const size_t *st[2] = {ds, ss};
  if (n == 0) return;
  for (size_t r = 0; r < rows; r++) {
    double *dp = d + off[0];
    const double *sp = s + off[1];
    if (add) {
      if (d3 == 1 && s3 == 1) for (size_t j = 0; j < n; j++) dp[j] += sp[j];
      else for (size_t j = 0; j < n; j++) dp[j * d3] += sp[j * s3];
    } else {
      if (d3 == 1 && s3 == 1) memcpy(dp, sp, n * sizeof(double));
      else for (size_t j = 0; j < n; j++) dp[j * d3] = sp[j * s3];
    }
    box_next(cnt, idx, 2, off, st);
  }
}

/* ======================================================================
 * elementwise
 * ====================================================================== */

static double sigmoid(double x) {
  /* exp of a non-positive argument only: no overflow for either sign */
  if (x >= 0) return 1.0 / (1.0 + exp(-x));
  double e = exp(x);
  return e / (1.0 + e);
}

static double softplus(double x) {
  return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
}

double tn_unary_scalar(tn_unary_op op, double x) {
  switch (op) {
  case TN_NEG: return -x;
  case TN_EXP: return exp(x);
  case TN_LOG: return log(x);
  case TN_SQRT: return sqrt(x);
  case TN_ABS: return fabs(x);
  case TN_SIN: return sin(x);
  case TN_COS: return cos(x);
  case TN_TANH: return tanh(x);
  case TN_SIGMOID: return sigmoid(x);
  case TN_SOFTPLUS: return softplus(x);
  case TN_RELU: return x > 0 ? x : (x != x ? x : 0.0); /* NaN propagates */
  case TN_SIGN: return x > 0 ? 1.0 : x < 0 ? -1.0 : x; /* keeps 0 and NaN */
  case TN_STEP: return x > 0 ? 1.0 : 0.0;
  case TN_SQUARE: return x * x;
  case TN_RECIP: return 1.0 / x;
  case TN_NOT: return x == 0 ? 1.0 : 0.0;
  case TN_FLOOR: return floor(x);
  case TN_ISNAN: return isnan(x) ? 1.0 : 0.0;
  case TN_TAN: return tan(x);
  case TN_ATAN: return atan(x);
  case TN_ASIN: return asin(x);
  case TN_ACOS: return acos(x);
  case TN_SINH: return sinh(x);
  case TN_COSH: return cosh(x);
  case TN_ERF: return erf(x);
  case TN_LOG1P: return log1p(x);
  case TN_EXPM1: return expm1(x);
  default: return NAN;
  }
}

static double max2(double a, double b) { return (a > b || a != a) ? a : b; } /* NaN propagates */
static double min2(double a, double b) { return (a < b || a != a) ? a : b; }

double tn_binary_scalar(tn_binary_op op, double a, double b) {
  switch (op) {
  case TN_ADD: return a + b;
  case TN_SUB: return a - b;
  case TN_MUL: return a * b;
  case TN_DIV: return a / b;
  case TN_POW: return b == 2.0 ? a * a : b == 1.0 ? a : pow(a, b); /* as binary_loop */
  case TN_MAX2: return max2(a, b);
  case TN_MIN2: return min2(a, b);
  case TN_LT: return a < b;
  case TN_LE: return a <= b;
  case TN_GT: return a > b;
  case TN_GE: return a >= b;
  case TN_EQ: return a == b;
  case TN_NE: return a != b;
  case TN_AND: return a != 0 && b != 0;
  case TN_OR: return a != 0 || b != 0;
  case TN_ATAN2: return atan2(a, b);
  default: return NAN;
  }
}

const char *tn_binary_name(tn_binary_op op) {
  static const char *names[TN_BINARY_COUNT] = {
    "+", "-", "*", "/", "pow", "max", "min", "<", "<=", ">", ">=", "==", "!=", "&&", "||", "atan2"};
  return (unsigned)op < TN_BINARY_COUNT ? names[op] : "?";
}

const char *tn_unary_name(tn_unary_op op) {
  static const char *names[TN_UNARY_COUNT] = {
    "-", "exp", "log", "sqrt", "abs", "sin", "cos", "tanh", "sigmoid", "softplus", "relu",
    "sign", "step", "square", "recip", "!", "floor", "isnan", "tan", "atan", "asin", "acos", "sinh", "cosh",
    "erf", "log1p", "expm1"};
  return (unsigned)op < TN_UNARY_COUNT ? names[op] : "?";
}

/* [n] -> [n] */
static void unary_loop(tn_unary_op op, size_t n, const double *a, double *o) {
#define UL(expr) for (size_t i = 0; i < n; i++) { double x = a[i]; o[i] = (expr); } break
  switch (op) {
  case TN_NEG: UL(-x);
  case TN_ABS: UL(fabs(x));
  case TN_SQUARE: UL(x * x);
  case TN_RECIP: UL(1.0 / x);
  case TN_EXP: UL(exp(x));
  case TN_LOG: UL(log(x));
  case TN_SQRT: UL(sqrt(x));
  case TN_STEP: UL(x > 0 ? 1.0 : 0.0);
  case TN_RELU: UL(x > 0 ? x : (x != x ? x : 0.0)); /* networks apply it to every activation */
  default: UL(tn_unary_scalar(op, x));
  }
#undef UL
}

/* [s] -> [s] */
blo_tensor *tn_unary(tn_ctx *ctx, tn_unary_op op, const blo_tensor *a) {
  blo_tensor *o = tn_new(ctx, a->rank, a->shape);
  if (o) unary_loop(op, a->size, a->data, o->data);
  return o;
}

/* [n] op [n] -> [n]; sa, sb in {0, 1}: 0 repeats element 0 (scalar side) */
static void binary_loop(tn_binary_op op, size_t n, const double *a, size_t sa, const double *b,
                        size_t sb, double *o) {
#define BL(expr)                                                                   \
  if (sa && sb) { for (size_t i = 0; i < n; i++) { double x = a[i], y = b[i]; o[i] = (expr); } } \
  else if (sb) { double x = a[0]; for (size_t i = 0; i < n; i++) { double y = b[i]; o[i] = (expr); } } \
  else if (sa) { double y = b[0]; for (size_t i = 0; i < n; i++) { double x = a[i]; o[i] = (expr); } } \
  else { double x = a[0], y = b[0]; double v = (expr); for (size_t i = 0; i < n; i++) o[i] = v; } \
  break
  switch (op) {
  case TN_ADD: BL(x + y);
  case TN_SUB: BL(x - y);
  case TN_MUL: BL(x * y);
  case TN_DIV: BL(x / y);
  case TN_MAX2: BL(max2(x, y));
  case TN_MIN2: BL(min2(x, y));
  case TN_POW:
    /* x^2 (the usual square loss) is x*x: correctly rounded where pow() may
     * be 1 ulp off, and ~20x cheaper; x^1 is x (pow(x, 1) is exact) */
    if (!sb && b[0] == 2.0) { for (size_t i = 0; i < n; i++) o[i] = a[i * sa] * a[i * sa]; break; }
    if (!sb && b[0] == 1.0) { for (size_t i = 0; i < n; i++) o[i] = a[i * sa]; break; }
    BL(tn_binary_scalar(op, x, y));
  default: BL(tn_binary_scalar(op, x, y));
  }
#undef BL
}

int tn_broadcast_shape(tn_ctx *ctx, const char *opname, const blo_tensor *a, const blo_tensor *b,
                       int *rank, size_t *shape) {
  int r = a->rank > b->rank ? a->rank : b->rank;
  for (int i = 0; i < r; i++) {
    size_t da = i < a->rank ? a->shape[a->rank - 1 - i] : 1;
    size_t db = i < b->rank ? b->shape[b->rank - 1 - i] : 1;
    size_t d;
    if (da == db || db == 1) d = da;
    else if (da == 1) d = db;
    else {
      char s1[SB], s2[SB];
      return tn_error(ctx, "shape mismatch in '%s': %s and %s", opname ? opname : "?",
                      tn_shape_str(a, s1, SB), tn_shape_str(b, s2, SB));
    }
    shape[r - 1 - i] = d;
  }
  *rank = r;
  return 0;
}

/* [..a] op [..b] -> broadcast shape; fast paths: same shape, one side of size 1 */
blo_tensor *tn_binary(tn_ctx *ctx, tn_binary_op op, const blo_tensor *a, const blo_tensor *b) {
  blo_tensor *o;
  if (tn_same_shape(a, b)) {
    if ((o = tn_new(ctx, a->rank, a->shape))) binary_loop(op, a->size, a->data, 1, b->data, 1, o->data);
    return o;
  }
  if (a->size == 1 && a->rank <= b->rank) {
    if ((o = tn_new(ctx, b->rank, b->shape))) binary_loop(op, b->size, a->data, 0, b->data, 1, o->data);
    return o;
  }
  if (b->size == 1 && b->rank <= a->rank) {
    if ((o = tn_new(ctx, a->rank, a->shape))) binary_loop(op, a->size, a->data, 1, b->data, 0, o->data);
    return o;
  }
  int r;
  size_t shape[TN_MAX_RANK];
  if (tn_broadcast_shape(ctx, tn_binary_name(op), a, b, &r, shape) < 0) return NULL;
  if (!(o = tn_new(ctx, r, shape))) return NULL;
  size_t os[NB], ost[NB], as[NB], ast[NB], bs[NB], bst[NB];
  padbox(r, shape, os, ost);
  padbox(a->rank, a->shape, as, ast);
  padbox(b->rank, b->shape, bs, bst);
  double *op_ = o->data;
  size_t idx[NB] = {0}, off[2] = {0, 0}, rows = box_rows(os), n = os[NB - 1];
  const size_t *st[2] = {ast, bst};
  for (size_t i = 0; i < rows && n; i++) {
    binary_loop(op, n, a->data + off[0], ast[NB - 1] ? 1 : 0, b->data + off[1], bst[NB - 1] ? 1 : 0, op_);
    op_ += n;
    box_next(os, idx, 2, off, st);
  }
  return o;
}

/* [s] += alpha * [s] */
int tn_axpy_inplace(tn_ctx *ctx, double alpha, const blo_tensor *x, blo_tensor *y) {
  if (!tn_same_shape(x, y)) {
    char s1[SB], s2[SB];
    return tn_error(ctx, "axpy: shape mismatch: %s and %s", tn_shape_str(x, s1, SB), tn_shape_str(y, s2, SB));
  }
  /* tiny adds (adjoints of scalars) skip the BLAS call's fixed cost; with
   * alpha == 1 the product alpha * x is exact, so the sums are the same */
  if (alpha == 1.0 && x->size <= 16) for (size_t i = 0; i < x->size; i++) y->data[i] += x->data[i];
  else if (x->size <= INT_MAX) cblas_daxpy((int)x->size, alpha, x->data, 1, y->data, 1);
  else for (size_t i = 0; i < x->size; i++) y->data[i] += alpha * x->data[i];
  return 0;
}

/* [..., d, ...] -> target where each aligned target dim is d or 1 */
blo_tensor *tn_sum_to(tn_ctx *ctx, const blo_tensor *t, int rank, const size_t *shape) {
  int ok = rank >= 0 && rank <= t->rank;
  for (int i = 0; ok && i < rank; i++) {
    size_t dt = shape[rank - 1 - i], ds = t->shape[t->rank - 1 - i];
    if (dt != ds && dt != 1) ok = 0;
  }
  if (!ok) {
    char s1[SB], s2[SB];
    tn_error(ctx, "sum_to: cannot sum %s down to %s", tn_shape_str(t, s1, SB),
             tn_shape_str_raw(rank < 0 ? 0 : rank, shape, s2, SB));
    return NULL;
  }
  blo_tensor *o = tn_zeros(ctx, rank, shape);
  if (!o) return NULL;
  if (o->size == t->size) { /* only size-1 axes were added: same data */
    if (t->size) memcpy(o->data, t->data, t->size * sizeof(double));
  } else if (o->size == 1) {
    double s = 0;
    for (size_t i = 0; i < t->size; i++) s += t->data[i];
    o->data[0] = s;
  } else {
    size_t ts[NB], tst[NB], os[NB], ost[NB];
    padbox(t->rank, t->shape, ts, tst);
    padbox(rank, shape, os, ost);
    strided2(ts, o->data, ost, t->data, tst, 1);
  }
  return o;
}

/* t -> target shape (NumPy broadcast, copy) */
blo_tensor *tn_broadcast_to(tn_ctx *ctx, const blo_tensor *t, int rank, const size_t *shape) {
  int ok = rank >= t->rank && rank <= TN_MAX_RANK;
  for (int i = 0; ok && i < t->rank; i++) {
    size_t dt = shape[rank - 1 - i], ds = t->shape[t->rank - 1 - i];
    if (dt != ds && ds != 1) ok = 0;
  }
  if (!ok) {
    char s1[SB], s2[SB];
    tn_error(ctx, "broadcast_to: cannot broadcast %s to %s", tn_shape_str(t, s1, SB),
             tn_shape_str_raw(rank < 0 ? 0 : rank > TN_MAX_RANK ? TN_MAX_RANK : rank, shape, s2, SB));
    return NULL;
  }
  blo_tensor *o = tn_new(ctx, rank, shape);
  if (!o) return NULL;
  if (o->size == t->size) {
    if (t->size) memcpy(o->data, t->data, t->size * sizeof(double));
  } else if (t->size == 1) {
    for (size_t i = 0; i < o->size; i++) o->data[i] = t->data[0];
  } else {
    size_t ts[NB], tst[NB], os[NB], ost[NB];
    padbox(t->rank, t->shape, ts, tst);
    padbox(rank, shape, os, ost);
    contigbox(os, ost);
    strided2(os, o->data, ost, t->data, tst, 0);
  }
  return o;
}

/* [s] -> [s] */
blo_tensor *tn_affine(tn_ctx *ctx, const blo_tensor *a, double s, double b) {
  blo_tensor *o = tn_new(ctx, a->rank, a->shape);
  if (o) for (size_t i = 0; i < a->size; i++) o->data[i] = a->data[i] * s + b;
  return o;
}

/* ======================================================================
 * products
 * ====================================================================== */

/* Logical shape of an operand: op(a) is a' for a rank-2 a with its flag set
 * (no copy is made; BLAS reads it transposed), else a.  Flags on rank 0/1
 * operands are ignored (their transpose is the identity). */
static void op_shape(const blo_tensor *a, int ta, size_t *shape) {
  for (int i = 0; i < a->rank; i++) shape[i] = a->shape[i];
  if (ta && a->rank >= 2) {
    shape[a->rank - 2] = a->shape[a->rank - 1];
    shape[a->rank - 1] = a->shape[a->rank - 2];
  }
}

/* Batched product: at least one operand of rank 3.  Both operands must be of
 * rank 2 or 3; a rank-2 operand is the same matrix for every batch element.
 * op(a) [B,m,k] or [m,k] @ op(b) [B,k,n] or [k,n] -> [B,m,n]; op transposes
 * the last two axes of an operand whose flag is set.  *sa, *sb: distance
 * between batch elements of a and b (0 for a broadcast rank-2 operand). */
static blo_tensor *bmm_prep(tn_ctx *ctx, const blo_tensor *a, int ta, const blo_tensor *b, int tb, size_t *B,
                            size_t *m, size_t *k, size_t *n, size_t *sa, size_t *sb) {
  char s1[SB], s2[SB];
  size_t xa[TN_MAX_RANK], xb[TN_MAX_RANK];
  op_shape(a, ta, xa);
  op_shape(b, tb, xb);
  const int ra = a->rank, rb = b->rank;
  if (ra < 2 || ra > 3 || rb < 2 || rb > 3 || (ra == 3 && rb == 3 && xa[0] != xb[0]) ||
      xa[ra - 1] != xb[rb - 2]) {
    tn_error(ctx, "shape mismatch in '@': %s and %s", tn_shape_str_raw(ra, xa, s1, SB),
             tn_shape_str_raw(rb, xb, s2, SB));
    return NULL;
  }
  *B = ra == 3 ? xa[0] : xb[0];
  *m = xa[ra - 2];
  *k = xa[ra - 1];
  *n = xb[rb - 1];
  *sa = ra == 3 ? *m * *k : 0;
  *sb = rb == 3 ? *k * *n : 0;
  size_t shape[3] = {*B, *m, *n};
  return tn_new(ctx, 3, shape);
}

/* Validates op(a) @ op(b) and views both as matrices: A [m,k], B [k,n]
 * (vectors are [1,k] / [k,1], which is the same memory). */
static blo_tensor *matmul_prep(tn_ctx *ctx, const blo_tensor *a, int ta, const blo_tensor *b, int tb,
                               size_t *m, size_t *k, size_t *n) {
  char s1[SB], s2[SB];
  if (a->rank < 1 || a->rank > 2 || b->rank < 1 || b->rank > 2) {
    size_t sa[TN_MAX_RANK], sb[TN_MAX_RANK];
    op_shape(a, ta, sa);
    op_shape(b, tb, sb);
    tn_error(ctx, "matmul: operands must be vectors, matrices or batches of matrices (rank 3), got %s @ %s",
             tn_shape_str_raw(a->rank, sa, s1, SB), tn_shape_str_raw(b->rank, sb, s2, SB));
    return NULL;
  }
  size_t sa[2], sb[2];
  op_shape(a, ta, sa);
  op_shape(b, tb, sb);
  size_t ka = sa[a->rank - 1], kb = sb[0];
  if (ka != kb) {
    tn_error(ctx, "matmul: shape mismatch: %s @ %s", tn_shape_str_raw(a->rank, sa, s1, SB),
             tn_shape_str_raw(b->rank, sb, s2, SB));
    return NULL;
  }
  *m = a->rank == 2 ? sa[0] : 1;
  *k = ka;
  *n = b->rank == 2 ? sb[1] : 1;
  size_t shape[2];
  int r = 0;
  if (a->rank == 2) shape[r++] = sa[0];
  if (b->rank == 2) shape[r++] = sb[1];
  return tn_new(ctx, r, shape);
}

/* [m,k] @ [k,n] -> [m,n] by plain loops; A(i,p) is at A[i*sai + p*sap], B(p,j) at B[p*sbp + j*sbj]
 * (strides express the transposed reads). */
static void matmul_loops(size_t m, size_t k, size_t n, const double *A, size_t sai, size_t sap,
                         const double *B, size_t sbp, size_t sbj, double *C) {
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) {
      double s = 0;
      for (size_t p = 0; p < k; p++) s += A[i * sai + p * sap] * B[p * sbp + j * sbj];
      C[i * n + j] = s;
    }
}

/* op(a) [m,k] @ op(b) [k,n] -> [m,n] by plain loops, any flags */
static void matmul_loops_t(const blo_tensor *a, int ta, const blo_tensor *b, int tb, size_t m, size_t k,
                           size_t n, double *C) {
  /* stored a is [m,k] (row stride k) or, transposed, [k,m] (row stride m); vectors are contiguous */
  int at = ta && a->rank == 2, bt = tb && b->rank == 2;
  size_t sai = at ? 1 : k, sap = at ? m : 1;
  size_t sbp = bt ? 1 : n, sbj = bt ? k : 1;
  matmul_loops(m, k, n, a->data, sai, sap, b->data, sbp, sbj, C);
}

/* [m,k]@[k,n]->[m,n], [m,k]@[k]->[m], [k]@[k,n]->[n], [k]@[k]->[] (reference) */
blo_tensor *tn_matmul_ref(tn_ctx *ctx, const blo_tensor *a, const blo_tensor *b) {
  return tn_matmul_t_ref(ctx, a, 0, b, 0);
}

/* Batched reference, plain loops:
 *   op(a) [B,m,k] (or [m,k], the same for every b) @ op(b) [B,k,n] (or [k,n]) -> C [B,m,n]
 * a's element (bi, i, p) is at a[bi*sa + i*k + p], or a[bi*sa + p*m + i] when
 * transposed (stored [k,m]); b's (bi, p, j) at b[bi*sb + p*n + j], or
 * b[bi*sb + j*k + p] when transposed (stored [n,k]). */
static blo_tensor *bmm_ref(tn_ctx *ctx, const blo_tensor *a, int ta, const blo_tensor *b, int tb) {
  size_t B, m, k, n, sa, sb;
  blo_tensor *o = bmm_prep(ctx, a, ta, b, tb, &B, &m, &k, &n, &sa, &sb);
  if (!o) return NULL;
  for (size_t bi = 0; bi < B; bi++)
    for (size_t i = 0; i < m; i++)
      for (size_t j = 0; j < n; j++) {
        double s = 0;
        for (size_t p = 0; p < k; p++) {
          double x = ta ? a->data[bi * sa + p * m + i] : a->data[bi * sa + i * k + p];
          double y = tb ? b->data[bi * sb + j * k + p] : b->data[bi * sb + p * n + j];
          s += x * y;
        }
        o->data[(bi * m + i) * n + j] = s;
      }
  return o;
}

/* Batched fast path: one dgemm per batch element, or a single dgemm
 * [B*m,k] @ op(b) [k,n] when b is a shared matrix and a is not transposed
 * (the B matrices of a are then one [B*m,k] matrix in memory). */
static blo_tensor *bmm(tn_ctx *ctx, const blo_tensor *a, int ta, const blo_tensor *b, int tb) {
  size_t B, m, k, n, sa, sb;
  blo_tensor *o = bmm_prep(ctx, a, ta, b, tb, &B, &m, &k, &n, &sa, &sb);
  if (!o || o->size == 0) return o;
  if (k == 0) { memset(o->data, 0, o->size * sizeof(double)); return o; }
  ctx->n_products++;
  const int one = sb == 0 && !ta;
  if (m > INT_MAX || k > INT_MAX || n > INT_MAX || (one && B * m > INT_MAX)) {
    tn_release(ctx, o);
    return bmm_ref(ctx, a, ta, b, tb);
  }
  const int M = (int)m, K = (int)k, N = (int)n;
  const enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  if (one) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, TB, (int)(B * m), N, K, 1.0, a->data, K, b->data, tb ? K : N, 0.0,
                o->data, N);
    return o;
  }
  for (size_t bi = 0; bi < B; bi++)
    cblas_dgemm(CblasRowMajor, TA, TB, M, N, K, 1.0, a->data + bi * sa, ta ? M : K, b->data + bi * sb,
                tb ? K : N, 0.0, o->data + bi * m * n, N);
  return o;
}

/* op(a) @ op(b), the same shapes after transposition (reference, plain loops) */
blo_tensor *tn_matmul_t_ref(tn_ctx *ctx, const blo_tensor *a, int ta, const blo_tensor *b, int tb) {
  size_t m, k, n;
  ta = ta && a->rank >= 2;
  tb = tb && b->rank >= 2;
  if (a->rank == 3 || b->rank == 3) return bmm_ref(ctx, a, ta, b, tb);
  blo_tensor *o = matmul_prep(ctx, a, ta, b, tb, &m, &k, &n);
  if (o) matmul_loops_t(a, ta, b, tb, m, k, n, o->data);
  return o;
}

/* [m,k]@[k,n]->[m,n] (dgemm), [m,k]@[k]->[m] (dgemv), [k]@[k,n]->[n] (dgemv'), [k]@[k]->[] (ddot) */
blo_tensor *tn_matmul(tn_ctx *ctx, const blo_tensor *a, const blo_tensor *b) {
  return tn_matmul_t(ctx, a, 0, b, 0);
}

/* op(a) @ op(b) with op = transpose when the flag is set (rank-2 operands
 * only): the transposition is a BLAS flag, never a copy, so the gradient of
 * X @ w is one dgemv with CblasTrans instead of an n x d transpose plus a dgemv.
 *   op(a) [m,k] @ op(b) [k,n] -> [m,n]     dgemm(TA, TB)
 *   op(a) [m,k] @ [k]         -> [m]       dgemv(TA)
 *   [k] @ op(b) [k,n]         -> [n]       dgemv(!TB) on b
 *   [k] @ [k]                 -> []        ddot */
blo_tensor *tn_matmul_t(tn_ctx *ctx, const blo_tensor *a, int ta, const blo_tensor *b, int tb) {
  size_t m, k, n;
  ta = ta && a->rank >= 2;
  tb = tb && b->rank >= 2;
  if (a->rank == 3 || b->rank == 3) return bmm(ctx, a, ta, b, tb);
  blo_tensor *o = matmul_prep(ctx, a, ta, b, tb, &m, &k, &n);
  if (!o || o->size == 0) return o;
  double *C = o->data;
  if (k == 0) { memset(C, 0, o->size * sizeof(double)); return o; }
  if (a->rank == 2 || b->rank == 2) ctx->n_products++;
  /* BLAS takes int dimensions; zero dimensions were handled above since BLAS
   * rejects leading dimensions < 1 (and would print) */
  if (m > INT_MAX || k > INT_MAX || n > INT_MAX) { matmul_loops_t(a, ta, b, tb, m, k, n, C); return o; }
  int M = (int)m, K = (int)k, N = (int)n;
  const enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  if (a->rank == 2 && b->rank == 2)
    cblas_dgemm(CblasRowMajor, TA, TB, M, N, K, 1.0, a->data, ta ? M : K, b->data, tb ? K : N, 0.0, C, N);
  else if (a->rank == 2) /* stored a is [m,k], or [k,m] read transposed */
    cblas_dgemv(CblasRowMajor, TA, ta ? K : M, ta ? M : K, 1.0, a->data, ta ? M : K, b->data, 1, 0.0, C, 1);
  else if (b->rank == 2) /* a @ B = B' a: stored b is [k,n], or [n,k] read as is */
    cblas_dgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, tb ? N : K, tb ? K : N, 1.0, b->data, tb ? K : N,
                a->data, 1, 0.0, C, 1);
  else
    C[0] = cblas_ddot(K, a->data, 1, b->data, 1);
  return o;
}

/* [m] x [n] -> [m,n] */
blo_tensor *tn_outer(tn_ctx *ctx, const blo_tensor *a, const blo_tensor *b) {
  if (a->rank != 1 || b->rank != 1) {
    char s1[SB], s2[SB];
    tn_error(ctx, "outer: expected two vectors, got %s and %s", tn_shape_str(a, s1, SB), tn_shape_str(b, s2, SB));
    return NULL;
  }
  size_t m = a->size, n = b->size, shape[2] = {m, n};
  blo_tensor *o = tn_new(ctx, 2, shape);
  if (o)
    for (size_t i = 0; i < m; i++)
      for (size_t j = 0; j < n; j++) o->data[i * n + j] = a->data[i] * b->data[j];
  return o;
}

/* [m,n] -> [n,m]; rank 3 to 6: reversed axes; rank 0/1 copy */
blo_tensor *tn_transpose(tn_ctx *ctx, const blo_tensor *a) {
  if (a->rank < 2) return tn_copy(ctx, a);
  size_t shape[TN_MAX_RANK];
  for (int i = 0; i < a->rank; i++) shape[i] = a->shape[a->rank - 1 - i];
  blo_tensor *o = tn_new(ctx, a->rank, shape);
  if (!o) return NULL;
  if (a->rank == 2) {
    size_t m = a->shape[0], n = a->shape[1];
    enum { BLK = 32 }; /* tiles keep both read and write streams in cache */
    for (size_t i0 = 0; i0 < m; i0 += BLK)
      for (size_t j0 = 0; j0 < n; j0 += BLK) {
        size_t i1 = i0 + BLK < m ? i0 + BLK : m, j1 = j0 + BLK < n ? j0 + BLK : n;
        for (size_t i = i0; i < i1; i++)
          for (size_t j = j0; j < j1; j++) o->data[j * m + i] = a->data[i * n + j];
      }
    return o;
  }
  size_t as[NB], ast[NB], os[NB], ost[NB], sst[NB] = {0};
  padbox(a->rank, a->shape, as, ast);
  contigbox(as, ast);
  padbox(o->rank, o->shape, os, ost);
  contigbox(os, ost);
  /* output axis i (padded NB-r+i) reads input axis r-1-i */
  int r = a->rank;
  for (int i = 0; i < r; i++) sst[NB - r + i] = ast[NB - r + (r - 1 - i)];
  strided2(os, o->data, ost, a->data, sst, 0);
  return o;
}

/* [s] . [s] -> scalar (NaN when sizes differ) */
double tn_dot(const blo_tensor *a, const blo_tensor *b) {
  if (a->size != b->size) return NAN;
  if (a->size == 0) return 0.0;
  if (a->size <= INT_MAX) return cblas_ddot((int)a->size, a->data, 1, b->data, 1);
  double s = 0;
  for (size_t i = 0; i < a->size; i++) s += a->data[i] * b->data[i];
  return s;
}

/* ======================================================================
 * reductions
 * ====================================================================== */

static const char *reduce_name(tn_reduce_op op) {
  static const char *names[] = {"sum", "mean", "max", "min", "prod", "norm", "argmax", "argmin", "logsumexp"};
  return (unsigned)op <= TN_LOGSUMEXP ? names[op] : "reduce";
}

/* Views a as [outer, n, inner] around axis (axis -1: [1, size, 1]) and allocates the result. */
static blo_tensor *reduce_prep(tn_ctx *ctx, const char *name, tn_reduce_op op, const blo_tensor *a,
                               int axis, size_t *outer, size_t *n, size_t *inner) {
  if (axis < -1 || axis >= a->rank) {
    tn_error(ctx, "%s: axis %d out of range for a tensor of rank %d", name, axis, a->rank);
    return NULL;
  }
  if (axis == -1) { *outer = 1; *n = a->size; *inner = 1; }
  else {
    *outer = 1; *inner = 1; *n = a->shape[axis];
    for (int i = 0; i < axis; i++) *outer *= a->shape[i];
    for (int i = axis + 1; i < a->rank; i++) *inner *= a->shape[i];
  }
  if (*n == 0 && (op == TN_MEAN || op == TN_MAX || op == TN_MIN || op == TN_ARGMAX || op == TN_ARGMIN)) {
    char s[SB];
    if (axis == -1) tn_error(ctx, "%s of an empty tensor", name);
    else tn_error(ctx, "%s along axis %d of size 0 (shape %s)", name, axis, tn_shape_str(a, s, SB));
    return NULL;
  }
  size_t shape[TN_MAX_RANK];
  int r = 0;
  if (axis >= 0)
    for (int i = 0; i < a->rank; i++)
      if (i != axis) shape[r++] = a->shape[i];
  return tn_new(ctx, r, shape);
}

/* better(x, best): x beats best; NaN wins over numbers, first occurrence kept */
static int gt_nan(double x, double best) { return x > best || (x != x && best == best); }
static int lt_nan(double x, double best) { return x < best || (x != x && best == best); }

/* scaled 2-norm of n values at stride s: immune to overflow/underflow */
static double norm_scaled(const double *x, size_t n, size_t s) {
  double amax = 0;
  for (size_t p = 0; p < n; p++) {
    double v = fabs(x[p * s]);
    if (v != v) return v;
    if (v > amax) amax = v;
  }
  if (amax == 0 || isinf(amax)) return amax;
  double ss = 0;
  for (size_t p = 0; p < n; p++) { double v = x[p * s] / amax; ss += v * v; }
  return amax * sqrt(ss);
}

/* [n] (stride s) -> scalar, straightforward loops */
static double ref_lane(tn_reduce_op op, const double *x, size_t n, size_t s) {
  double acc;
  size_t bi = 0;
  switch (op) {
  case TN_SUM: case TN_MEAN:
    acc = 0;
    for (size_t p = 0; p < n; p++) acc += x[p * s];
    return op == TN_MEAN ? acc / (double)n : acc;
  case TN_PROD:
    acc = 1;
    for (size_t p = 0; p < n; p++) acc *= x[p * s];
    return acc;
  case TN_MAX: case TN_ARGMAX:
    acc = x[0];
    for (size_t p = 1; p < n; p++) if (gt_nan(x[p * s], acc)) { acc = x[p * s]; bi = p; }
    return op == TN_MAX ? acc : (double)bi;
  case TN_MIN: case TN_ARGMIN:
    acc = x[0];
    for (size_t p = 1; p < n; p++) if (lt_nan(x[p * s], acc)) { acc = x[p * s]; bi = p; }
    return op == TN_MIN ? acc : (double)bi;
  case TN_NORM:
    return norm_scaled(x, n, s);
  case TN_LOGSUMEXP: {
    if (n == 0) return -INFINITY;
    double m = x[0];
    for (size_t p = 1; p < n; p++) if (gt_nan(x[p * s], m)) m = x[p * s];
    if (m != m || isinf(m)) return m;
    acc = 0;
    for (size_t p = 0; p < n; p++) acc += exp(x[p * s] - m);
    return m + log(acc);
  }
  }
  return NAN;
}

/* [.., n, ..] -> [.., ..] reference: one strided lane at a time */
blo_tensor *tn_reduce_ref(tn_ctx *ctx, tn_reduce_op op, const blo_tensor *a, int axis) {
  size_t outer, n, inner;
  blo_tensor *o = reduce_prep(ctx, reduce_name(op), op, a, axis, &outer, &n, &inner);
  if (!o) return NULL;
  for (size_t i = 0; i < outer; i++)
    for (size_t j = 0; j < inner; j++)
      o->data[i * inner + j] = ref_lane(op, a->data + i * n * inner + j, n, inner);
  return o;
}

/* contiguous [n] -> sum, 4 independent accumulators */
static double sum_contig(const double *x, size_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t p = 0;
  for (; p + 4 <= n; p += 4) { s0 += x[p]; s1 += x[p + 1]; s2 += x[p + 2]; s3 += x[p + 3]; }
  for (; p < n; p++) s0 += x[p];
  return (s0 + s1) + (s2 + s3);
}

/* contiguous [n] -> sum of squares */
static double sumsq_contig(const double *x, size_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t p = 0;
  for (; p + 4 <= n; p += 4) {
    s0 += x[p] * x[p]; s1 += x[p + 1] * x[p + 1]; s2 += x[p + 2] * x[p + 2]; s3 += x[p + 3] * x[p + 3];
  }
  for (; p < n; p++) s0 += x[p] * x[p];
  return (s0 + s1) + (s2 + s3);
}

/* the unscaled sum of squares is accurate unless it overflowed, underflowed or saw NaN */
static int ss_ok(double ss) { return isfinite(ss) && (ss == 0 || ss > 0x1p-900); }

/* [outer, n, inner] -> [outer, inner]: inner == 1 uses contiguous lanes,
 * otherwise whole rows are combined so the inner loops are unit-stride. */
blo_tensor *tn_reduce(tn_ctx *ctx, tn_reduce_op op, const blo_tensor *a, int axis) {
  size_t outer, n, inner;
  blo_tensor *o = reduce_prep(ctx, reduce_name(op), op, a, axis, &outer, &n, &inner);
  if (!o) return NULL;
  double *out = o->data;
  if (inner == 1) {
    for (size_t i = 0; i < outer; i++) {
      const double *x = a->data + i * n;
      switch (op) {
      case TN_SUM: out[i] = sum_contig(x, n); break;
      case TN_MEAN: out[i] = sum_contig(x, n) / (double)n; break;
      case TN_NORM: {
        /* a zero sum with nonzero entries means underflow: fall back */
        double ss = sumsq_contig(x, n);
        out[i] = ss_ok(ss) && (ss != 0 || norm_scaled(x, n, 1) == 0) ? sqrt(ss) : norm_scaled(x, n, 1);
        break;
      }
      default: out[i] = ref_lane(op, x, n, 1); break;
      }
    }
    return o;
  }
  for (size_t i = 0; i < outer; i++) {
    const double *x = a->data + i * n * inner;
    double *r = out + i * inner;
    switch (op) {
    case TN_SUM: case TN_MEAN: case TN_NORM:
      memset(r, 0, inner * sizeof(double));
      if (op == TN_NORM)
        for (size_t p = 0; p < n; p++) { const double *row = x + p * inner; for (size_t j = 0; j < inner; j++) r[j] += row[j] * row[j]; }
      else
        for (size_t p = 0; p < n; p++) { const double *row = x + p * inner; for (size_t j = 0; j < inner; j++) r[j] += row[j]; }
      if (op == TN_MEAN) for (size_t j = 0; j < inner; j++) r[j] /= (double)n;
      if (op == TN_NORM)
        for (size_t j = 0; j < inner; j++)
          r[j] = ss_ok(r[j]) && (r[j] != 0 || norm_scaled(x + j, n, inner) == 0) ? sqrt(r[j]) : norm_scaled(x + j, n, inner);
      break;
    case TN_PROD:
      for (size_t j = 0; j < inner; j++) r[j] = 1;
      for (size_t p = 0; p < n; p++) { const double *row = x + p * inner; for (size_t j = 0; j < inner; j++) r[j] *= row[j]; }
      break;
    case TN_MAX: case TN_MIN:
      memcpy(r, x, inner * sizeof(double));
      for (size_t p = 1; p < n; p++) {
        const double *row = x + p * inner;
        if (op == TN_MAX) { for (size_t j = 0; j < inner; j++) if (gt_nan(row[j], r[j])) r[j] = row[j]; }
        else { for (size_t j = 0; j < inner; j++) if (lt_nan(row[j], r[j])) r[j] = row[j]; }
      }
      break;
    case TN_ARGMAX: case TN_ARGMIN:
      /* running best values are re-read from x through the index stored in r */
      for (size_t j = 0; j < inner; j++) r[j] = 0;
      for (size_t p = 1; p < n; p++) {
        const double *row = x + p * inner;
        for (size_t j = 0; j < inner; j++) {
          double best = x[(size_t)r[j] * inner + j];
          if (op == TN_ARGMAX ? gt_nan(row[j], best) : lt_nan(row[j], best)) r[j] = (double)p;
        }
      }
      break;
    case TN_LOGSUMEXP:
      if (n == 0) { for (size_t j = 0; j < inner; j++) r[j] = -INFINITY; break; }
      /* pass 1: column maxima into r; pass 2: sum exp(x - max) lane-wise */
      memcpy(r, x, inner * sizeof(double));
      for (size_t p = 1; p < n; p++) {
        const double *row = x + p * inner;
        for (size_t j = 0; j < inner; j++) if (gt_nan(row[j], r[j])) r[j] = row[j];
      }
      for (size_t j = 0; j < inner; j++) {
        double m = r[j];
        if (m != m || isinf(m)) continue;
        double s = 0;
        for (size_t p = 0; p < n; p++) s += exp(x[p * inner + j] - m);
        r[j] = m + log(s);
      }
      break;
    }
  }
  return o;
}

/* r (a reduced along axis) -> a's shape with that axis of size 1 */
blo_tensor *tn_unsqueeze_reduced(tn_ctx *ctx, const blo_tensor *r, const blo_tensor *a, int axis) {
  if (axis == -1) return tn_retain((blo_tensor *)r);
  if (axis < 0 || axis >= a->rank) {
    tn_error(ctx, "unsqueeze: axis %d out of range for a tensor of rank %d", axis, a->rank);
    return NULL;
  }
  size_t shape[TN_MAX_RANK];
  for (int i = 0; i < a->rank; i++) shape[i] = i == axis ? 1 : a->shape[i];
  return tn_reshape(ctx, r, a->rank, shape);
}

/* [outer, n, inner] -> same, normalised along n (axis -1: whole tensor) */
blo_tensor *tn_softmax(tn_ctx *ctx, const blo_tensor *a, int axis) {
  if (axis < -1 || axis >= a->rank) {
    tn_error(ctx, "softmax: axis %d out of range for a tensor of rank %d", axis, a->rank);
    return NULL;
  }
  size_t outer = 1, n = a->size, inner = 1;
  if (axis >= 0) {
    n = a->shape[axis];
    for (int i = 0; i < axis; i++) outer *= a->shape[i];
    for (int i = axis + 1; i < a->rank; i++) inner *= a->shape[i];
  }
  blo_tensor *o = tn_new(ctx, a->rank, a->shape);
  if (!o || n == 0) return o;
  for (size_t i = 0; i < outer; i++)
    for (size_t j = 0; j < inner; j++) {
      const double *x = a->data + i * n * inner + j;
      double *y = o->data + i * n * inner + j;
      double m = x[0];
      for (size_t p = 1; p < n; p++) if (gt_nan(x[p * inner], m)) m = x[p * inner];
      double s = 0;
      for (size_t p = 0; p < n; p++) { double e = exp(x[p * inner] - m); y[p * inner] = e; s += e; }
      double inv = 1.0 / s;
      for (size_t p = 0; p < n; p++) y[p * inner] *= inv;
    }
  return o;
}

/* ======================================================================
 * shape
 * ====================================================================== */

/* [..] -> [..] with the same number of elements */
blo_tensor *tn_reshape(tn_ctx *ctx, const blo_tensor *a, int rank, const size_t *shape) {
  if (rank < 0 || rank > TN_MAX_RANK) {
    tn_error(ctx, "reshape: rank %d is not supported (maximum %d)", rank, TN_MAX_RANK);
    return NULL;
  }
  size_t size = 1;
  int overflow = 0;
  for (int i = 0; i < rank; i++) {
    if (shape[i] && size > SIZE_MAX / shape[i]) overflow = 1;
    size *= shape[i];
  }
  if (overflow || size != a->size) {
    char s1[SB], s2[SB];
    tn_error(ctx, "reshape: cannot reshape %s (%zu elements) into %s", tn_shape_str(a, s1, SB), a->size,
             tn_shape_str_raw(rank, shape, s2, SB));
    return NULL;
  }
  return tn_from(ctx, rank, shape, a->data);
}

/* n x [.., d_i, ..] -> [.., sum d_i, ..] */
blo_tensor *tn_concat(tn_ctx *ctx, blo_tensor *const *ts, int n, int axis) {
  char s1[SB], s2[SB];
  if (n < 1) { tn_error(ctx, "concat: no tensors to concatenate"); return NULL; }
  const blo_tensor *t0 = ts[0];
  if (t0->rank == 0) { tn_error(ctx, "concat: cannot concatenate rank-0 tensors"); return NULL; }
  if (axis < 0 || axis >= t0->rank) {
    tn_error(ctx, "concat: axis %d out of range for a tensor of rank %d", axis, t0->rank);
    return NULL;
  }
  size_t shape[TN_MAX_RANK];
  memcpy(shape, t0->shape, sizeof shape);
  shape[axis] = 0;
  for (int t = 0; t < n; t++) {
    int ok = ts[t]->rank == t0->rank;
    for (int i = 0; ok && i < t0->rank; i++)
      if (i != axis && ts[t]->shape[i] != t0->shape[i]) ok = 0;
    if (!ok) {
      tn_error(ctx, "concat: shape mismatch along axis %d: %s and %s", axis, tn_shape_str(t0, s1, SB),
               tn_shape_str(ts[t], s2, SB));
      return NULL;
    }
    shape[axis] += ts[t]->shape[axis];
  }
  blo_tensor *o = tn_new(ctx, t0->rank, shape);
  if (!o) return NULL;
  size_t outer = 1, inner = 1;
  for (int i = 0; i < axis; i++) outer *= shape[i];
  for (int i = axis + 1; i < t0->rank; i++) inner *= shape[i];
  double *dst = o->data;
  for (size_t i = 0; i < outer; i++)
    for (int t = 0; t < n; t++) {
      size_t chunk = ts[t]->shape[axis] * inner;
      if (chunk) memcpy(dst, ts[t]->data + i * chunk, chunk * sizeof(double));
      dst += chunk;
    }
  return o;
}

/* n x [..] -> [.., n, ..] with the new axis at position axis */
blo_tensor *tn_stack(tn_ctx *ctx, blo_tensor *const *ts, int n, int axis) {
  char s1[SB], s2[SB];
  if (n < 1) { tn_error(ctx, "stack: no tensors to stack"); return NULL; }
  const blo_tensor *t0 = ts[0];
  if (t0->rank + 1 > TN_MAX_RANK) {
    tn_error(ctx, "stack: result rank %d exceeds the maximum %d", t0->rank + 1, TN_MAX_RANK);
    return NULL;
  }
  if (axis < 0 || axis > t0->rank) {
    tn_error(ctx, "stack: axis %d out of range for a result of rank %d", axis, t0->rank + 1);
    return NULL;
  }
  for (int t = 1; t < n; t++)
    if (!tn_same_shape(t0, ts[t])) {
      tn_error(ctx, "stack: shape mismatch: %s and %s", tn_shape_str(t0, s1, SB), tn_shape_str(ts[t], s2, SB));
      return NULL;
    }
  size_t shape[TN_MAX_RANK];
  int r = 0;
  for (int i = 0; i <= t0->rank; i++) {
    if (i == axis) shape[r++] = (size_t)n;
    if (i < t0->rank) shape[r++] = t0->shape[i];
  }
  blo_tensor *o = tn_new(ctx, r, shape);
  if (!o) return NULL;
  size_t outer = 1, inner = 1;
  for (int i = 0; i < axis; i++) outer *= t0->shape[i];
  for (int i = axis; i < t0->rank; i++) inner *= t0->shape[i];
  double *dst = o->data;
  for (size_t i = 0; i < outer; i++)
    for (int t = 0; t < n; t++) {
      if (inner) memcpy(dst, ts[t]->data + i * inner, inner * sizeof(double));
      dst += inner;
    }
  return o;
}

/* ======================================================================
 * indexing
 * ====================================================================== */

int tn_index_check(tn_ctx *ctx, const blo_tensor *a, tn_index_t *ix, int nix) {
  if (nix < 0) return tn_error(ctx, "invalid number of indices: %d", nix);
  if (nix > a->rank) return tn_error(ctx, "too many indices: %d for a tensor of rank %d", nix, a->rank);
  for (int i = 0; i < nix; i++) {
    long dim = (long)a->shape[i];
    tn_index_t *x = &ix[i];
    switch (x->kind) {
    case TN_IX_INDEX: {
      long k = x->start;
      if (k < 0) k += dim;
      if (k < 0 || k >= dim)
        return tn_error(ctx, "index %ld out of range for axis %d of size %ld", x->start, i, dim);
      x->start = k;
      x->stop = k + 1;
      break;
    }
    case TN_IX_SLICE: {
      /* Python clamping: negatives count from the end, then clip to [0, dim] */
      long s = x->start, e = x->stop;
      if (s < 0) { s += dim; if (s < 0) s = 0; } else if (s > dim) s = dim;
      if (e < 0) { e += dim; if (e < 0) e = 0; } else if (e > dim) e = dim;
      if (e < s) e = s;
      x->start = s;
      x->stop = e;
      break;
    }
    case TN_IX_ALL:
      x->start = 0;
      x->stop = dim;
      break;
    default:
      return tn_error(ctx, "invalid index kind %d for axis %d", x->kind, i);
    }
  }
  return 0;
}

/* Indexed region of a as a padded NB-d box: base offset, counts, a's strides,
 * plus the result shape (INDEX axes dropped) and, per padded box axis, the
 * position of that axis in the result (-1 if dropped). */
typedef struct {
  size_t off, cnt[NB], st[NB];
  int rrank;
  size_t rshape[TN_MAX_RANK];
  int rpos[NB];
} ix_box;

static int index_box(tn_ctx *ctx, const blo_tensor *a, const tn_index_t *ix_in, int nix, ix_box *b) {
  tn_index_t ix[TN_MAX_RANK];
  if (nix > a->rank || nix < 0) return tn_error(ctx, "too many indices: %d for a tensor of rank %d", nix, a->rank);
  if (nix) memcpy(ix, ix_in, (size_t)nix * sizeof *ix);
  if (tn_index_check(ctx, a, ix, nix) < 0) return -1;
  size_t ps[NB];
  padbox(a->rank, a->shape, ps, b->st);
  contigbox(ps, b->st);
  int pad = NB - a->rank;
  b->off = 0;
  b->rrank = 0;
  for (int p = 0; p < NB; p++) { b->cnt[p] = 1; b->rpos[p] = -1; }
  for (int i = 0; i < a->rank; i++) {
    size_t lo = 0, hi = a->shape[i];
    int keep = 1;
    if (i < nix) {
      lo = (size_t)ix[i].start;
      hi = (size_t)ix[i].stop;
      keep = ix[i].kind != TN_IX_INDEX;
    }
    b->off += lo * b->st[pad + i];
    b->cnt[pad + i] = hi - lo;
    if (keep) { b->rpos[pad + i] = b->rrank; b->rshape[b->rrank++] = hi - lo; }
  }
  return 0;
}

/* One integer per axis (a[i, j]): the flat offset of that element, after the
 * same normalisation as tn_index_check; -1 when ix is not of that form or is
 * out of range (the general path then does the work or reports the error).
 * Scalar picks from tiny tensors are the common case of small scripts, and
 * the box machinery (padbox, index_box, strided2) cost more than the copy. */
static long elem_offset(const blo_tensor *a, const tn_index_t *ix, int nix) {
  if (nix != a->rank) return -1;
  size_t off = 0;
  for (int i = 0; i < nix; i++) {
    long dim = (long)a->shape[i], k = ix[i].start;
    if (ix[i].kind != TN_IX_INDEX) return -1;
    if (k < 0) k += dim;
    if (k < 0 || k >= dim) return -1;
    off = off * a->shape[i] + (size_t)k;
  }
  return (long)off;
}

/* a[box] -> [result shape] */
blo_tensor *tn_index(tn_ctx *ctx, const blo_tensor *a, const tn_index_t *ix, int nix) {
  ix_box b;
  long eo = elem_offset(a, ix, nix);
  if (eo >= 0) {
    blo_tensor *o = tn_new(ctx, 0, NULL);
    if (o) o->data[0] = a->data[eo];
    return o;
  }
  if (index_box(ctx, a, ix, nix, &b) < 0) return NULL;
  blo_tensor *o = tn_new(ctx, b.rrank, b.rshape);
  if (!o) return NULL;
  size_t ost[NB];
  contigbox(b.cnt, ost);
  strided2(b.cnt, o->data, ost, a->data + b.off, b.st, 0);
  return o;
}

/* dst[box] += src, src shaped like the result of tn_index */
int tn_index_add(tn_ctx *ctx, blo_tensor *dst, const tn_index_t *ix, int nix, const blo_tensor *src) {
  ix_box b;
  long eo = src->rank == 0 ? elem_offset(dst, ix, nix) : -1;
  if (eo >= 0) { /* one element (see elem_offset) */
    dst->data[eo] += src->data[0];
    return 0;
  }
  if (index_box(ctx, dst, ix, nix, &b) < 0) return -1;
  int ok = src->rank == b.rrank;
  for (int i = 0; ok && i < b.rrank; i++) if (src->shape[i] != b.rshape[i]) ok = 0;
  if (!ok) {
    char s1[SB], s2[SB];
    return tn_error(ctx, "index_add: shape mismatch: source is %s, indexed region is %s",
                    tn_shape_str(src, s1, SB), tn_shape_str_raw(b.rrank, b.rshape, s2, SB));
  }
  size_t sst[NB];
  contigbox(b.cnt, sst);
  strided2(b.cnt, dst->data + b.off, b.st, src->data, sst, 1);
  return 0;
}

/* dst[box] = src broadcast to the indexed region */
int tn_index_set(tn_ctx *ctx, blo_tensor *dst, const tn_index_t *ix, int nix, const blo_tensor *src) {
  ix_box b;
  if (index_box(ctx, dst, ix, nix, &b) < 0) return -1;
  int ok = src->rank <= b.rrank;
  for (int i = 0; ok && i < src->rank; i++) {
    size_t ds = src->shape[src->rank - 1 - i], dr = b.rshape[b.rrank - 1 - i];
    if (ds != dr && ds != 1) ok = 0;
  }
  if (!ok) {
    char s1[SB], s2[SB];
    return tn_error(ctx, "index_set: cannot broadcast %s to the indexed region %s",
                    tn_shape_str(src, s1, SB), tn_shape_str_raw(b.rrank, b.rshape, s2, SB));
  }
  /* src strides per result axis (0 where src broadcasts), then mapped to box axes */
  size_t rst[TN_MAX_RANK], s = 1, sst[NB];
  for (int i = b.rrank - 1; i >= 0; i--) {
    int si = src->rank - (b.rrank - i);
    if (si < 0 || src->shape[si] == 1) rst[i] = 0;
    else { rst[i] = s; s *= src->shape[si]; }
  }
  for (int p = 0; p < NB; p++) sst[p] = b.rpos[p] < 0 ? 0 : rst[b.rpos[p]];
  strided2(b.cnt, dst->data + b.off, b.st, src->data, sst, 0);
  return 0;
}

/* Validates idx as integer positions along an axis of size dim. */
static int take_check(tn_ctx *ctx, const char *name, const blo_tensor *a, const blo_tensor *idx, int axis) {
  char s[SB];
  if (axis < 0 || axis >= a->rank)
    return tn_error(ctx, "%s: axis %d out of range for a tensor of rank %d", name, axis, a->rank);
  if (idx->rank != 1)
    return tn_error(ctx, "%s: index must be a vector, got %s", name, tn_shape_str(idx, s, SB));
  double dim = (double)a->shape[axis];
  for (size_t i = 0; i < idx->size; i++) {
    double v = idx->data[i];
    if (!(v == floor(v))) return tn_error(ctx, "%s: index %.17g is not an integer", name, v);
    double k = v < 0 ? v + dim : v;
    if (k < 0 || k >= dim)
      return tn_error(ctx, "index %.17g out of range for axis %d of size %zu", v, axis, a->shape[axis]);
  }
  return 0;
}

static size_t take_pos(double v, size_t dim) {
  return v < 0 ? (size_t)(v + (double)dim) : (size_t)v;
}

/* [.., d, ..] gathered by idx [k] -> [.., k, ..] */
blo_tensor *tn_take(tn_ctx *ctx, const blo_tensor *a, const blo_tensor *idx, int axis) {
  if (take_check(ctx, "take", a, idx, axis) < 0) return NULL;
  size_t shape[TN_MAX_RANK], outer = 1, inner = 1, n = a->shape[axis], k = idx->size;
  memcpy(shape, a->shape, sizeof shape);
  shape[axis] = k;
  for (int i = 0; i < axis; i++) outer *= a->shape[i];
  for (int i = axis + 1; i < a->rank; i++) inner *= a->shape[i];
  blo_tensor *o = tn_new(ctx, a->rank, shape);
  if (!o || inner == 0) return o;
  for (size_t i = 0; i < outer; i++)
    for (size_t j = 0; j < k; j++)
      memcpy(o->data + (i * k + j) * inner, a->data + (i * n + take_pos(idx->data[j], n)) * inner,
             inner * sizeof(double));
  return o;
}

/* dst [.., d, ..] scatter-added from src [.., k, ..] by idx [k]; repeats accumulate */
int tn_take_add(tn_ctx *ctx, blo_tensor *dst, const blo_tensor *idx, int axis, const blo_tensor *src) {
  if (take_check(ctx, "take_add", dst, idx, axis) < 0) return -1;
  size_t shape[TN_MAX_RANK], outer = 1, inner = 1, n = dst->shape[axis], k = idx->size;
  memcpy(shape, dst->shape, sizeof shape);
  shape[axis] = k;
  int ok = src->rank == dst->rank;
  for (int i = 0; ok && i < src->rank; i++) if (src->shape[i] != shape[i]) ok = 0;
  if (!ok) {
    char s1[SB], s2[SB];
    return tn_error(ctx, "take_add: shape mismatch: source is %s, expected %s", tn_shape_str(src, s1, SB),
                    tn_shape_str_raw(dst->rank, shape, s2, SB));
  }
  for (int i = 0; i < axis; i++) outer *= dst->shape[i];
  for (int i = axis + 1; i < dst->rank; i++) inner *= dst->shape[i];
  for (size_t i = 0; i < outer; i++)
    for (size_t j = 0; j < k; j++) {
      double *d = dst->data + (i * n + take_pos(idx->data[j], n)) * inner;
      const double *s = src->data + (i * k + j) * inner;
      for (size_t q = 0; q < inner; q++) d[q] += s[q];
    }
  return 0;
}

/* ======================================================================
 * convolution and pooling on [N, C, H, W] images
 * ====================================================================== */

static int is_image(const blo_tensor *t) { return t->rank == 4; }

int tn_window_out(tn_ctx *ctx, const char *what, const blo_tensor *x, size_t kh, size_t kw, const tn_conv_opt *o,
                  size_t *oh, size_t *ow) {
  char s1[SB];
  if (!is_image(x))
    return tn_error(ctx, "%s: input must have shape [N, C, H, W], got %s", what, tn_shape_str(x, s1, SB));
  if (o->sh == 0 || o->sw == 0) return tn_error(ctx, "%s: stride must be at least 1", what);
  if (kh == 0 || kw == 0) return tn_error(ctx, "%s: window %zux%zu is empty", what, kh, kw);
  size_t ph = x->shape[2] + 2 * o->ph, pw = x->shape[3] + 2 * o->pw;
  if ((kh > ph || kw > pw) && !o->ph && !o->pw)
    return tn_error(ctx, "%s: window %zux%zu is larger than the input %s", what, kh, kw, tn_shape_str(x, s1, SB));
  if (kh > ph || kw > pw)
    return tn_error(ctx, "%s: window %zux%zu is larger than the input %s padded to %zux%zu", what, kh, kw,
                    tn_shape_str(x, s1, SB), ph, pw);
  *oh = (ph - kh) / o->sh + 1;
  *ow = (pw - kw) / o->sw + 1;
  return 0;
}

/* Checks x [N, C, H, W] against w [O, C, kh, kw]; the output's spatial size. */
static int conv_check(tn_ctx *ctx, const blo_tensor *x, const blo_tensor *w, const tn_conv_opt *o, size_t *oh,
                      size_t *ow) {
  char s1[SB], s2[SB];
  if (!is_image(x))
    return tn_error(ctx, "conv2d: input must have shape [N, C, H, W], got %s", tn_shape_str(x, s1, SB));
  if (w->rank != 4)
    return tn_error(ctx, "conv2d: weight must have shape [O, C, kh, kw], got %s (input %s)",
                    tn_shape_str(w, s2, SB), tn_shape_str(x, s1, SB));
  if (x->shape[1] != w->shape[1])
    return tn_error(ctx, "conv2d: input %s has %zu channels, weight %s expects %zu", tn_shape_str(x, s1, SB),
                    x->shape[1], tn_shape_str(w, s2, SB), w->shape[1]);
  size_t ph = x->shape[2] + 2 * o->ph, pw = x->shape[3] + 2 * o->pw;
  if (o->sh == 0 || o->sw == 0) return tn_error(ctx, "conv2d: stride must be at least 1");
  if (w->shape[2] == 0 || w->shape[3] == 0 || w->shape[2] > ph || w->shape[3] > pw)
    return tn_error(ctx, "conv2d: kernel of weight %s does not fit the input %s padded to %zux%zu",
                    tn_shape_str(w, s2, SB), tn_shape_str(x, s1, SB), ph, pw);
  *oh = (ph - w->shape[2]) / o->sh + 1;
  *ow = (pw - w->shape[3]) / o->sw + 1;
  size_t ckk = w->shape[1] * w->shape[2] * w->shape[3];
  if (ckk > INT_MAX || *oh * *ow > INT_MAX || w->shape[0] > INT_MAX)
    return tn_error(ctx, "conv2d: input %s with weight %s is too large for BLAS", tn_shape_str(x, s1, SB),
                    tn_shape_str(w, s2, SB));
  return 0;
}

/* The output columns xo in [*lo, *hi) whose input column xo sw + j - pw lies
 * inside the image (0 <= . < W); the others read the zero padding. */
static void conv_cols(size_t j, size_t W, size_t ow, const tn_conv_opt *o, size_t *lo, size_t *hi) {
  size_t a = j >= o->pw ? 0 : (o->pw - j + o->sw - 1) / o->sw;
  size_t b = o->pw + W > j ? (o->pw + W - j + o->sw - 1) / o->sw : 0;
  if (b > ow) b = ow;
  if (a > b) a = b;
  *lo = a;
  *hi = b;
}

/* im2col of one image xi [C, H, W]: col [C kh kw, oh ow], zeros in the padding.
 * Each row is a run of copies (contiguous for stride 1) between zeroed ends. */
static void im2col(const double *xi, size_t C, size_t H, size_t W, size_t kh, size_t kw, size_t oh, size_t ow,
                   const tn_conv_opt *o, double *col) {
  for (size_t c = 0; c < C; c++)
    for (size_t i = 0; i < kh; i++)
      for (size_t j = 0; j < kw; j++) {
        double *row = col + ((c * kh + i) * kw + j) * oh * ow;
        size_t lo, hi;
        conv_cols(j, W, ow, o, &lo, &hi);
        for (size_t y = 0; y < oh; y++) {
          double *out = row + y * ow;
          size_t r = y * o->sh + i; /* row in the padded image */
          if (r < o->ph || r - o->ph >= H || lo == hi) {
            memset(out, 0, ow * sizeof(double));
            continue;
          }
          /* out[xo] = xr[q] with q = xo sw + j - pw, from q0 at xo = lo */
          const double *xr = xi + (c * H + (r - o->ph)) * W;
          size_t q0 = lo * o->sw + j - o->pw;
          if (lo) memset(out, 0, lo * sizeof(double));
          if (o->sw == 1) memcpy(out + lo, xr + q0, (hi - lo) * sizeof(double));
          else for (size_t xo = lo, q = q0; xo < hi; xo++, q += o->sw) out[xo] = xr[q];
          if (hi < ow) memset(out + hi, 0, (ow - hi) * sizeof(double));
        }
      }
}

/* col2im: xi [C, H, W] += the columns of col [C kh kw, oh ow] at their windows. */
static void col2im(const double *col, size_t C, size_t H, size_t W, size_t kh, size_t kw, size_t oh, size_t ow,
                   const tn_conv_opt *o, double *xi) {
  for (size_t c = 0; c < C; c++)
    for (size_t i = 0; i < kh; i++)
      for (size_t j = 0; j < kw; j++) {
        const double *row = col + ((c * kh + i) * kw + j) * oh * ow;
        size_t lo, hi;
        conv_cols(j, W, ow, o, &lo, &hi);
        for (size_t y = 0; y < oh; y++) {
          size_t r = y * o->sh + i;
          if (r < o->ph || r - o->ph >= H || lo == hi) continue;
          double *xr = xi + (c * H + (r - o->ph)) * W + (lo * o->sw + j - o->pw); /* input column at xo = lo */
          const double *in = row + y * ow;
          if (o->sw == 1)
            for (size_t xo = lo; xo < hi; xo++) xr[xo - lo] += in[xo];
          else
            for (size_t xo = lo, q = 0; xo < hi; xo++, q += o->sw) xr[q] += in[xo];
        }
      }
}

/* x [N, C, H, W], w [O, C, kh, kw] -> y [N, O, oh, ow]: per image,
 * y[n] [O, oh ow] = w [O, C kh kw] @ im2col(x[n]) [C kh kw, oh ow] */
blo_tensor *tn_conv2d(tn_ctx *ctx, const blo_tensor *x, const blo_tensor *w, const tn_conv_opt *o) {
  size_t oh, ow;
  if (conv_check(ctx, x, w, o, &oh, &ow)) return NULL;
  size_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  size_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3], ckk = C * kh * kw, P = oh * ow;
  /* every element is written by a product below unless the sizes leave nothing to multiply */
  int empty = !N || !O || !P || !ckk;
  blo_tensor *y = empty ? tn_zeros(ctx, 4, (size_t[]){N, O, oh, ow}) : tn_new(ctx, 4, (size_t[]){N, O, oh, ow});
  if (!y || empty) return y;
  size_t cs[2] = {ckk, P};
  blo_tensor *col = tn_new(ctx, 2, cs);
  if (!col) { tn_release(ctx, y); return NULL; }
  for (size_t n = 0; n < N; n++) {
    im2col(x->data + n * C * H * W, C, H, W, kh, kw, oh, ow, o, col->data);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)P, (int)ckk, 1.0, w->data, (int)ckk,
                col->data, (int)P, 0.0, y->data + n * O * P, (int)P);
    ctx->n_products++;
  }
  tn_release(ctx, col);
  return y;
}

/* x [N, C, H, W], w [O, C, kh, kw] -> y [N, O, oh, ow]:
 * y[n,o,u,v] = sum_{c,i,j} w[o,c,i,j] x[n, c, u sh + i - ph, v sw + j - pw] (zero outside) */
blo_tensor *tn_conv2d_ref(tn_ctx *ctx, const blo_tensor *x, const blo_tensor *w, const tn_conv_opt *o) {
  size_t oh, ow;
  if (conv_check(ctx, x, w, o, &oh, &ow)) return NULL;
  size_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  size_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
  blo_tensor *y = tn_zeros(ctx, 4, (size_t[]){N, O, oh, ow});
  if (!y) return NULL;
  for (size_t n = 0; n < N; n++)
    for (size_t oc = 0; oc < O; oc++)
      for (size_t u = 0; u < oh; u++)
        for (size_t v = 0; v < ow; v++) {
          double s = 0;
          for (size_t c = 0; c < C; c++)
            for (size_t i = 0; i < kh; i++)
              for (size_t j = 0; j < kw; j++) {
                long r = (long)(u * o->sh + i) - (long)o->ph, q = (long)(v * o->sw + j) - (long)o->pw;
                if (r < 0 || q < 0 || r >= (long)H || q >= (long)W) continue;
                s += w->data[((oc * C + c) * kh + i) * kw + j] * x->data[((n * C + c) * H + (size_t)r) * W + (size_t)q];
              }
          y->data[((n * O + oc) * oh + u) * ow + v] = s;
        }
  return y;
}

/* Checks g [N, O, oh, ow] against w [O, C, kh, kw] and an input of h x wd. */
static int bx_check(tn_ctx *ctx, const blo_tensor *g, const blo_tensor *w, size_t h, size_t wd,
                    const tn_conv_opt *o, size_t *oh, size_t *ow) {
  char s1[SB], s2[SB];
  if (g->rank != 4 || w->rank != 4 || g->shape[1] != w->shape[0])
    return tn_error(ctx, "conv2d: gradient %s does not match weight %s", tn_shape_str(g, s1, SB),
                    tn_shape_str(w, s2, SB));
  blo_tensor xs = {0};
  xs.rank = 4;
  xs.shape[0] = g->shape[0];
  xs.shape[1] = w->shape[1];
  xs.shape[2] = h;
  xs.shape[3] = wd;
  if (conv_check(ctx, &xs, w, o, oh, ow)) return -1;
  if (*oh != g->shape[2] || *ow != g->shape[3])
    return tn_error(ctx, "conv2d: gradient %s does not match an output of %zux%zu", tn_shape_str(g, s1, SB), *oh, *ow);
  return 0;
}

/* g [N, O, oh, ow], w [O, C, kh, kw] -> dx [N, C, h, wd]: per image,
 * col [C kh kw, oh ow] = w' @ g[n] [O, oh ow], then col2im */
blo_tensor *tn_conv2d_bx(tn_ctx *ctx, const blo_tensor *g, const blo_tensor *w, size_t h, size_t wd,
                         const tn_conv_opt *o) {
  size_t oh, ow;
  if (bx_check(ctx, g, w, h, wd, o, &oh, &ow)) return NULL;
  size_t N = g->shape[0], O = w->shape[0], C = w->shape[1], kh = w->shape[2], kw = w->shape[3];
  size_t ckk = C * kh * kw, P = oh * ow;
  blo_tensor *dx = tn_zeros(ctx, 4, (size_t[]){N, C, h, wd});
  if (!dx || !N || !O || !P || !ckk) return dx;
  blo_tensor *col = tn_new(ctx, 2, (size_t[]){ckk, P});
  if (!col) { tn_release(ctx, dx); return NULL; }
  for (size_t n = 0; n < N; n++) {
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ckk, (int)P, (int)O, 1.0, w->data, (int)ckk,
                g->data + n * O * P, (int)P, 0.0, col->data, (int)P);
    ctx->n_products++;
    col2im(col->data, C, h, wd, kh, kw, oh, ow, o, dx->data + n * C * h * wd);
  }
  tn_release(ctx, col);
  return dx;
}

/* g [N, O, oh, ow], w [O, C, kh, kw] -> dx [N, C, h, wd]:
 * dx[n, c, u sh + i - ph, v sw + j - pw] += w[o,c,i,j] g[n,o,u,v] (inside the image) */
blo_tensor *tn_conv2d_bx_ref(tn_ctx *ctx, const blo_tensor *g, const blo_tensor *w, size_t h, size_t wd,
                             const tn_conv_opt *o) {
  size_t oh, ow;
  if (bx_check(ctx, g, w, h, wd, o, &oh, &ow)) return NULL;
  size_t N = g->shape[0], O = w->shape[0], C = w->shape[1], kh = w->shape[2], kw = w->shape[3];
  blo_tensor *dx = tn_zeros(ctx, 4, (size_t[]){N, C, h, wd});
  if (!dx) return NULL;
  for (size_t n = 0; n < N; n++)
    for (size_t oc = 0; oc < O; oc++)
      for (size_t u = 0; u < oh; u++)
        for (size_t v = 0; v < ow; v++) {
          double gv = g->data[((n * O + oc) * oh + u) * ow + v];
          for (size_t c = 0; c < C; c++)
            for (size_t i = 0; i < kh; i++)
              for (size_t j = 0; j < kw; j++) {
                long r = (long)(u * o->sh + i) - (long)o->ph, q = (long)(v * o->sw + j) - (long)o->pw;
                if (r < 0 || q < 0 || r >= (long)h || q >= (long)wd) continue;
                dx->data[((n * C + c) * h + (size_t)r) * wd + (size_t)q] += w->data[((oc * C + c) * kh + i) * kw + j] * gv;
              }
        }
  return dx;
}

/* Checks x [N, C, H, W] and g [N, O, oh, ow] for a kh x kw kernel. */
static int bw_check(tn_ctx *ctx, const blo_tensor *x, const blo_tensor *g, size_t kh, size_t kw,
                    const tn_conv_opt *o, size_t *oh, size_t *ow) {
  char s1[SB], s2[SB];
  if (x->rank != 4 || g->rank != 4 || x->shape[0] != g->shape[0])
    return tn_error(ctx, "conv2d: gradient %s does not match input %s", tn_shape_str(g, s1, SB),
                    tn_shape_str(x, s2, SB));
  blo_tensor ws = {0};
  ws.rank = 4;
  ws.shape[0] = g->shape[1];
  ws.shape[1] = x->shape[1];
  ws.shape[2] = kh;
  ws.shape[3] = kw;
  if (conv_check(ctx, x, &ws, o, oh, ow)) return -1;
  if (*oh != g->shape[2] || *ow != g->shape[3])
    return tn_error(ctx, "conv2d: gradient %s does not match an output of %zux%zu", tn_shape_str(g, s1, SB), *oh, *ow);
  return 0;
}

/* x [N, C, H, W], g [N, O, oh, ow] -> dw [O, C, kh, kw]:
 * dw [O, C kh kw] = sum_n g[n] [O, oh ow] @ im2col(x[n])' */
blo_tensor *tn_conv2d_bw(tn_ctx *ctx, const blo_tensor *x, const blo_tensor *g, size_t kh, size_t kw,
                         const tn_conv_opt *o) {
  size_t oh, ow;
  if (bw_check(ctx, x, g, kh, kw, o, &oh, &ow)) return NULL;
  size_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], O = g->shape[1];
  size_t ckk = C * kh * kw, P = oh * ow;
  /* the first image's product overwrites dw (beta 0), the others add to it */
  int empty = !N || !O || !P || !ckk;
  blo_tensor *dw = empty ? tn_zeros(ctx, 4, (size_t[]){O, C, kh, kw}) : tn_new(ctx, 4, (size_t[]){O, C, kh, kw});
  if (!dw || empty) return dw;
  blo_tensor *col = tn_new(ctx, 2, (size_t[]){ckk, P});
  if (!col) { tn_release(ctx, dw); return NULL; }
  for (size_t n = 0; n < N; n++) {
    im2col(x->data + n * C * H * W, C, H, W, kh, kw, oh, ow, o, col->data);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)O, (int)ckk, (int)P, 1.0, g->data + n * O * P,
                (int)P, col->data, (int)P, n ? 1.0 : 0.0, dw->data, (int)ckk);
    ctx->n_products++;
  }
  tn_release(ctx, col);
  return dw;
}

/* x [N, C, H, W], g [N, O, oh, ow] -> dw [O, C, kh, kw]:
 * dw[o,c,i,j] = sum_{n,u,v} g[n,o,u,v] x[n, c, u sh + i - ph, v sw + j - pw] */
blo_tensor *tn_conv2d_bw_ref(tn_ctx *ctx, const blo_tensor *x, const blo_tensor *g, size_t kh, size_t kw,
                             const tn_conv_opt *o) {
  size_t oh, ow;
  if (bw_check(ctx, x, g, kh, kw, o, &oh, &ow)) return NULL;
  size_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], O = g->shape[1];
  blo_tensor *dw = tn_zeros(ctx, 4, (size_t[]){O, C, kh, kw});
  if (!dw) return NULL;
  for (size_t oc = 0; oc < O; oc++)
    for (size_t c = 0; c < C; c++)
      for (size_t i = 0; i < kh; i++)
        for (size_t j = 0; j < kw; j++) {
          double s = 0;
          for (size_t n = 0; n < N; n++)
            for (size_t u = 0; u < oh; u++)
              for (size_t v = 0; v < ow; v++) {
                long r = (long)(u * o->sh + i) - (long)o->ph, q = (long)(v * o->sw + j) - (long)o->pw;
                if (r < 0 || q < 0 || r >= (long)H || q >= (long)W) continue;
                s += g->data[((n * O + oc) * oh + u) * ow + v] * x->data[((n * C + c) * H + (size_t)r) * W + (size_t)q];
              }
          dw->data[((oc * C + c) * kh + i) * kw + j] = s;
        }
  return dw;
}

/* x [N, C, H, W] -> y [N, C, oh, ow] (max over each window), arg the flat
 * offset in x of the first maximum (NaN wins, as in max()) */
blo_tensor *tn_maxpool2d(tn_ctx *ctx, const blo_tensor *x, size_t kh, size_t kw, const tn_conv_opt *o,
                         blo_tensor **arg) {
  size_t oh, ow;
  if (arg) *arg = NULL;
  if (tn_window_out(ctx, "maxpool2d", x, kh, kw, o, &oh, &ow)) return NULL;
  size_t NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
  size_t sh[4] = {x->shape[0], x->shape[1], oh, ow};
  blo_tensor *y = tn_new(ctx, 4, sh), *ag = NULL;
  if (!y || (arg && !(ag = tn_new(ctx, 4, sh)))) { tn_release(ctx, y); return NULL; }
  for (size_t p = 0; p < NC; p++)
    for (size_t u = 0; u < oh; u++)
      for (size_t v = 0; v < ow; v++) {
        size_t best = p * H * W + (u * o->sh) * W + v * o->sw;
        for (size_t i = 0; i < kh; i++)
          for (size_t j = 0; j < kw; j++) {
            size_t q = p * H * W + (u * o->sh + i) * W + v * o->sw + j;
            if (x->data[q] > x->data[best] || (x->data[q] != x->data[q] && x->data[best] == x->data[best])) best = q;
          }
        size_t k = (p * oh + u) * ow + v;
        y->data[k] = x->data[best];
        if (ag) ag->data[k] = (double)best;
      }
  if (arg) *arg = ag;
  return y;
}

/* x [N, C, H, W] -> y [N, C, oh, ow] (mean over each window) */
blo_tensor *tn_avgpool2d(tn_ctx *ctx, const blo_tensor *x, size_t kh, size_t kw, const tn_conv_opt *o) {
  size_t oh, ow;
  if (tn_window_out(ctx, "avgpool2d", x, kh, kw, o, &oh, &ow)) return NULL;
  size_t NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
  blo_tensor *y = tn_new(ctx, 4, (size_t[]){x->shape[0], x->shape[1], oh, ow});
  if (!y) return NULL;
  double sc = 1.0 / (double)(kh * kw);
  for (size_t p = 0; p < NC; p++)
    for (size_t u = 0; u < oh; u++)
      for (size_t v = 0; v < ow; v++) {
        double s = 0;
        for (size_t i = 0; i < kh; i++)
          for (size_t j = 0; j < kw; j++) s += x->data[p * H * W + (u * o->sh + i) * W + v * o->sw + j];
        y->data[(p * oh + u) * ow + v] = s * sc;
      }
  return y;
}

/* g [N, C, oh, ow] -> dx [N, C, h, wd]: each window receives g / (kh kw) */
blo_tensor *tn_avgpool2d_bwd(tn_ctx *ctx, const blo_tensor *g, size_t kh, size_t kw, size_t h, size_t wd,
                             const tn_conv_opt *o) {
  blo_tensor *dx = NULL;
  size_t oh = 0, ow = 0;
  if (g->rank == 4) {
    blo_tensor xs = {0};
    xs.rank = 4;
    xs.shape[0] = g->shape[0];
    xs.shape[1] = g->shape[1];
    xs.shape[2] = h;
    xs.shape[3] = wd;
    if (tn_window_out(ctx, "avgpool2d", &xs, kh, kw, o, &oh, &ow)) return NULL;
  }
  if (g->rank != 4 || oh != g->shape[2] || ow != g->shape[3]) {
    char s1[SB];
    tn_error(ctx, "avgpool2d: gradient %s does not match an input of %zux%zu", tn_shape_str(g, s1, SB), h, wd);
    return NULL;
  }
  if (!(dx = tn_zeros(ctx, 4, (size_t[]){g->shape[0], g->shape[1], h, wd}))) return NULL;
  size_t NC = g->shape[0] * g->shape[1];
  double sc = 1.0 / (double)(kh * kw);
  for (size_t p = 0; p < NC; p++)
    for (size_t u = 0; u < oh; u++)
      for (size_t v = 0; v < ow; v++) {
        double gv = g->data[(p * oh + u) * ow + v] * sc;
        for (size_t i = 0; i < kh; i++)
          for (size_t j = 0; j < kw; j++) dx->data[p * h * wd + (u * o->sh + i) * wd + v * o->sw + j] += gv;
      }
  return dx;
}

/* z [N, K], p [N, K] -> scalar -(1/N) sum_i sum_k p_ik (z_ik - lse(z_i)) */
blo_tensor *tn_cross_entropy(tn_ctx *ctx, const blo_tensor *z, const blo_tensor *p) {
  if (z->rank != 2 || !tn_same_shape(z, p)) {
    char s1[SB], s2[SB];
    tn_error(ctx, "cross_entropy: logits %s and labels %s: want logits [N, K] and labels [N, K] or [N]",
             tn_shape_str(z, s1, SB), tn_shape_str(p, s2, SB));
    return NULL;
  }
  size_t N = z->shape[0], K = z->shape[1];
  double tot = 0;
  for (size_t i = 0; i < N; i++) {
    const double *zr = z->data + i * K, *pr = p->data + i * K;
    double m = -INFINITY;
    for (size_t k = 0; k < K; k++) if (zr[k] > m || zr[k] != zr[k]) m = zr[k];
    double se = 0, pz = 0, ps = 0;
    if (m == -INFINITY || m == INFINITY) m = 0; /* all -inf rows give -inf lse; +inf gives inf - inf = NaN */
    for (size_t k = 0; k < K; k++) {
      se += exp(zr[k] - m);
      pz += pr[k] * (zr[k] - m);
      ps += pr[k];
    }
    tot += ps * log(se) - pz; /* sum_k p_k (lse - z_k), lse = m + log(se) */
  }
  return tn_scalar(ctx, N ? tot / (double)N : NAN);
}

/* ======================================================================
 * random numbers: xoshiro256** seeded by splitmix64.  Integer ops and IEEE
 * double arithmetic (+ - * / sqrt, and log) only.  The only inexact product
 * feeding an addition (u*u + v*v) goes through volatile temporaries so no
 * compiler may fuse it into an FMA; u*2-1 is exact either way.
 * ====================================================================== */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void tn_rng_seed(tn_rng *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) {
    x += 0x9e3779b97f4a7c15ULL;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    r->s[i] = z ^ (z >> 31);
  }
  r->has_spare = 0;
  r->spare = 0;
}

uint64_t tn_rng_next(tn_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl64(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl64(s[3], 45);
  return result;
}

double tn_rng_uniform(tn_rng *r) {
  return (double)(tn_rng_next(r) >> 11) * 0x1.0p-53;
}

double tn_rng_normal(tn_rng *r) {
  if (r->has_spare) { r->has_spare = 0; return r->spare; }
  double u, v, s;
  do {
    u = tn_rng_uniform(r);
    u = u * 2.0;
    u = u - 1.0;
    v = tn_rng_uniform(r);
    v = v * 2.0;
    v = v - 1.0;
    /* volatile forces each square to be rounded: GCC in GNU mode would
     * otherwise contract u*u + v*v into an FMA where the target has one */
    volatile double uu = u * u;
    volatile double vv = v * v;
    s = uu + vv;
  } while (s >= 1.0 || s == 0.0);
  double l = log(s);
  l = -2.0 * l;
  l = l / s;
  double m = sqrt(l);
  r->spare = v * m;
  r->has_spare = 1;
  return u * m;
}
