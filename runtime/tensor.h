/* tensor.h: dense row-major double tensors of rank 0..6 and their kernels.
 *
 * This is the only layer that talks to OpenBLAS/LAPACKE (tensor.c, linalg.c).
 * Every operation takes a tn_ctx, which carries the allocator (with a buffer
 * pool so steady-state loops do not call malloc), a memory cap and the last
 * error message.  Operations that can fail return NULL (or -1) and leave a
 * message in ctx->err; they never print, exit or abort.
 *
 * Ownership: a function returning blo_tensor* returns a NEW reference that the
 * caller must tn_release().  Arguments are borrowed.
 */
#ifndef BLO_TENSOR_H
#define BLO_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define TN_MAX_RANK 6
#define TN_ERR_LEN 512

/* Host-supplied allocator, Lua style: realloc(ud, ptr, old, new); new == 0 frees. */
typedef void *(*tn_reallocf)(void *ud, void *ptr, size_t old_size, size_t new_size);

typedef struct tn_pool tn_pool;

typedef struct tn_ctx {
  tn_reallocf realloc_fn;   /* never NULL after tn_ctx_init */
  void *alloc_ud;
  size_t mem_cap;           /* bytes of tensor data allowed, 0 = unlimited */
  size_t mem_used;          /* bytes of tensor data live (including pooled) */
  size_t mem_live;          /* bytes of tensor data held by tensors (not pooled) */
  size_t mem_peak;          /* high-water mark of mem_live; a caller may lower it to
                               mem_live to measure the peak of a span (solve does) */
  size_t n_sys_alloc;       /* calls that reached realloc_fn for tensor data: tests use it
                               to prove that a steady-state loop allocates nothing */
  size_t n_products;        /* matrix products computed (dgemm/dgemv): tests count what a
                               Hessian-vector product costs */
  tn_pool *pool;            /* free lists of data buffers by size class */
  char err[TN_ERR_LEN];     /* last error message (no location; the caller adds it) */
} tn_ctx;

typedef struct blo_tensor {
  int refcount;
  int rank;
  size_t shape[TN_MAX_RANK]; /* shape[i] for i < rank; unused entries are 1 */
  size_t size;               /* product of shape (1 for rank 0) */
  double *data;              /* row-major, contiguous, size elements */
  size_t cap;                /* bytes reserved in data (pool bookkeeping) */
  double small[2];           /* data of tensors of at most 2 elements (data == small):
                                scalars are most tensors of small problems, and one
                                pooled block per tensor instead of two halves their cost */
} blo_tensor;

/* ---- context ---- */
void tn_ctx_init(tn_ctx *ctx, tn_reallocf fn, void *ud); /* fn NULL: malloc-based default */
void tn_ctx_free(tn_ctx *ctx);                            /* frees the pool */
void tn_ctx_trim(tn_ctx *ctx);                            /* returns pooled buffers to the allocator */
int tn_error(tn_ctx *ctx, const char *fmt, ...);          /* sets ctx->err, returns -1 */
/* Writes "[2, 3]" style shape text into buf. */
const char *tn_shape_str(const blo_tensor *t, char *buf, size_t n);
const char *tn_shape_str_raw(int rank, const size_t *shape, char *buf, size_t n);

/* ---- lifetime ---- */
blo_tensor *tn_new(tn_ctx *ctx, int rank, const size_t *shape);        /* uninitialised */
blo_tensor *tn_zeros(tn_ctx *ctx, int rank, const size_t *shape);
blo_tensor *tn_scalar(tn_ctx *ctx, double v);                            /* rank 0 */
blo_tensor *tn_from(tn_ctx *ctx, int rank, const size_t *shape, const double *src);
blo_tensor *tn_copy(tn_ctx *ctx, const blo_tensor *t);
blo_tensor *tn_zeros_like(tn_ctx *ctx, const blo_tensor *t);
static inline blo_tensor *tn_retain(blo_tensor *t) { if (t) t->refcount++; return t; }
/* Returns t's header and data to the pool; call through tn_release. */
void tn_free_(tn_ctx *ctx, blo_tensor *t);
/* Inline because most releases (tape reset, dual bookkeeping) only drop a
 * count: the call into tensor.c was a tenth of the time on tiny problems. */
static inline void tn_release(tn_ctx *ctx, blo_tensor *t) { if (t && --t->refcount <= 0) tn_free_(ctx, t); }
/* inline: checked by every elementwise kernel and adjoint accumulation */
static inline int tn_same_shape(const blo_tensor *a, const blo_tensor *b) {
  if (a->rank != b->rank) return 0;
  for (int i = 0; i < a->rank; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

/* ---- elementwise ---- */
typedef enum {
  TN_NEG, TN_EXP, TN_LOG, TN_SQRT, TN_ABS, TN_SIN, TN_COS, TN_TANH, TN_SIGMOID,
  TN_SOFTPLUS, TN_RELU, TN_SIGN, TN_STEP, /* STEP: 1 where x > 0 else 0 */
  TN_SQUARE, TN_RECIP, TN_NOT, TN_FLOOR, TN_ISNAN,
  /* C library functions; outside the domain the result is NaN (asin(2)) or
   * +-inf (log1p(-1)), as in C and NumPy */
  TN_TAN, TN_ATAN, TN_ASIN, TN_ACOS, TN_SINH, TN_COSH, TN_ERF, TN_LOG1P, TN_EXPM1,
  TN_UNARY_COUNT
} tn_unary_op;

typedef enum {
  TN_ADD, TN_SUB, TN_MUL, TN_DIV, TN_POW, TN_MAX2, TN_MIN2,
  TN_LT, TN_LE, TN_GT, TN_GE, TN_EQ, TN_NE, TN_AND, TN_OR,
  TN_ATAN2, /* atan2(a, b): the angle of the point (b, a), in [-pi, pi] */
  TN_BINARY_COUNT
} tn_binary_op;

double tn_unary_scalar(tn_unary_op op, double x);
double tn_binary_scalar(tn_binary_op op, double a, double b);
const char *tn_binary_name(tn_binary_op op);  /* "+", "*", "<", ... for error text */
const char *tn_unary_name(tn_unary_op op);    /* "exp", ... */

blo_tensor *tn_unary(tn_ctx *ctx, tn_unary_op op, const blo_tensor *a);
/* NumPy broadcasting; error "shape mismatch in '+': [2, 3] and [4]". */
blo_tensor *tn_binary(tn_ctx *ctx, tn_binary_op op, const blo_tensor *a, const blo_tensor *b);
/* Result shape of broadcasting a with b; -1 and message on mismatch. */
int tn_broadcast_shape(tn_ctx *ctx, const char *opname, const blo_tensor *a, const blo_tensor *b,
                       int *rank, size_t *shape);
/* y += alpha * x (same shape), in place; the gradient-accumulation kernel. */
int tn_axpy_inplace(tn_ctx *ctx, double alpha, const blo_tensor *x, blo_tensor *y);
/* Sum t down to the given shape (inverse of broadcasting), for gradients. */
blo_tensor *tn_sum_to(tn_ctx *ctx, const blo_tensor *t, int rank, const size_t *shape);
/* Broadcast t up to the given shape (copy). */
blo_tensor *tn_broadcast_to(tn_ctx *ctx, const blo_tensor *t, int rank, const size_t *shape);
/* a * s + b (scalar), fused */
blo_tensor *tn_affine(tn_ctx *ctx, const blo_tensor *a, double s, double b);

/* ---- linear algebra products (BLAS) ----
 * tn_matmul follows NumPy's matmul for rank 1 and 2:
 *   [m,k]@[k,n] -> [m,n] (dgemm), [m,k]@[k] -> [m] (dgemv), [k]@[k,n] -> [n],
 *   [k]@[k] -> [] (ddot).
 * Rank 3 is a batch of matrices: [B,m,k]@[B,k,n] -> [B,m,n] (a dgemm per batch
 * element); a rank-2 operand is shared by every batch element: [m,k]@[B,k,n],
 * and [B,m,k]@[k,n] (one dgemm on the [B*m,k] matrix).  A rank-3 operand with
 * a vector, or differing batch sizes: "shape mismatch in '@': A and B".
 * Other ranks: error naming both shapes. */
blo_tensor *tn_matmul(tn_ctx *ctx, const blo_tensor *a, const blo_tensor *b);
blo_tensor *tn_matmul_ref(tn_ctx *ctx, const blo_tensor *a, const blo_tensor *b); /* plain loops */
/* op(a) @ op(b), op = transpose of a rank-2 operand whose flag is set (a BLAS
 * flag, no copy; flags on vectors are ignored; on a rank-3 operand the flag
 * transposes each batch element).  Shapes and errors as
 * tn_matmul on the transposed operands.  _ref: plain loops. */
blo_tensor *tn_matmul_t(tn_ctx *ctx, const blo_tensor *a, int ta, const blo_tensor *b, int tb);
blo_tensor *tn_matmul_t_ref(tn_ctx *ctx, const blo_tensor *a, int ta, const blo_tensor *b, int tb);
/* outer product of two vectors [m],[n] -> [m,n] */
blo_tensor *tn_outer(tn_ctx *ctx, const blo_tensor *a, const blo_tensor *b);
/* Transpose: rank 2 swaps axes, rank 0/1 returns a copy, rank 3 to 6 reverses axes. */
blo_tensor *tn_transpose(tn_ctx *ctx, const blo_tensor *a);
double tn_dot(const blo_tensor *a, const blo_tensor *b); /* same size, flat dot */

/* ---- convolution and pooling on [N, C, H, W] images ----
 * A window of kh x kw moves by stride (sh, sw) over the input padded with ph
 * rows and pw columns of zeros on each side: H' = (H + 2 ph - kh) / sh + 1,
 * W' likewise.  Errors name both shapes. */
typedef struct { size_t sh, sw, ph, pw; } tn_conv_opt;
/* Output size of the sliding window, or -1 with a message when the window
 * does not fit (what: "conv2d" or "maxpool2d" ...). */
int tn_window_out(tn_ctx *ctx, const char *what, const blo_tensor *x, size_t kh, size_t kw, const tn_conv_opt *o,
                  size_t *oh, size_t *ow);
/* y [N, O, H', W'] = conv(x [N, C, H, W], w [O, C, kh, kw]) (cross-correlation,
 * as in PyTorch).  Fast path: im2col and one dgemm per image; _ref: loops. */
blo_tensor *tn_conv2d(tn_ctx *ctx, const blo_tensor *x, const blo_tensor *w, const tn_conv_opt *o);
blo_tensor *tn_conv2d_ref(tn_ctx *ctx, const blo_tensor *x, const blo_tensor *w, const tn_conv_opt *o);
/* The adjoint in x: dx [N, C, H, W] = conv^T(g [N, O, H', W'], w) for an input
 * of spatial size h x w (col2im of w^T g). */
blo_tensor *tn_conv2d_bx(tn_ctx *ctx, const blo_tensor *g, const blo_tensor *w, size_t h, size_t wd,
                         const tn_conv_opt *o);
blo_tensor *tn_conv2d_bx_ref(tn_ctx *ctx, const blo_tensor *g, const blo_tensor *w, size_t h, size_t wd,
                             const tn_conv_opt *o);
/* The adjoint in w: dw [O, C, kh, kw] = sum over images of g (im2col x)^T. */
blo_tensor *tn_conv2d_bw(tn_ctx *ctx, const blo_tensor *x, const blo_tensor *g, size_t kh, size_t kw,
                         const tn_conv_opt *o);
blo_tensor *tn_conv2d_bw_ref(tn_ctx *ctx, const blo_tensor *x, const blo_tensor *g, size_t kh, size_t kw,
                             const tn_conv_opt *o);
/* Pooling over kh x kw windows (no padding): y [N, C, H', W'].  max: ties go
 * to the first maximum of the window in row-major order, whose flat offset
 * in x is stored in arg (a [N, C, H', W'] tensor) when arg is not NULL. */
blo_tensor *tn_maxpool2d(tn_ctx *ctx, const blo_tensor *x, size_t kh, size_t kw, const tn_conv_opt *o,
                         blo_tensor **arg);
blo_tensor *tn_avgpool2d(tn_ctx *ctx, const blo_tensor *x, size_t kh, size_t kw, const tn_conv_opt *o);
/* Adjoint of avgpool2d: [N, C, H', W'] -> [N, C, h, w]. */
blo_tensor *tn_avgpool2d_bwd(tn_ctx *ctx, const blo_tensor *g, size_t kh, size_t kw, size_t h, size_t wd,
                             const tn_conv_opt *o);
/* Mean cross-entropy -(1/N) sum_ik p_ik log softmax(z)_ik of logits z [N, K]
 * against p [N, K] (one pass per row: max, log-sum-exp, sum). */
blo_tensor *tn_cross_entropy(tn_ctx *ctx, const blo_tensor *z, const blo_tensor *p);

/* ---- reductions ----
 * axis = -1 means "all axes" -> rank 0.  Otherwise axis in [0, rank) (negative
 * axes are normalised by the caller) and that axis is removed. */
typedef enum { TN_SUM, TN_MEAN, TN_MAX, TN_MIN, TN_PROD, TN_NORM, TN_ARGMAX, TN_ARGMIN,
               TN_LOGSUMEXP } tn_reduce_op;
blo_tensor *tn_reduce(tn_ctx *ctx, tn_reduce_op op, const blo_tensor *a, int axis);
blo_tensor *tn_reduce_ref(tn_ctx *ctx, tn_reduce_op op, const blo_tensor *a, int axis);
/* Re-insert a reduced axis as size 1 (so the reduction result broadcasts against a). */
blo_tensor *tn_unsqueeze_reduced(tn_ctx *ctx, const blo_tensor *r, const blo_tensor *a, int axis);
/* Numerically stable softmax along axis (-1 = all elements). */
blo_tensor *tn_softmax(tn_ctx *ctx, const blo_tensor *a, int axis);

/* ---- shape ---- */
blo_tensor *tn_reshape(tn_ctx *ctx, const blo_tensor *a, int rank, const size_t *shape);
/* concat along an existing axis; stack along a new axis. */
blo_tensor *tn_concat(tn_ctx *ctx, blo_tensor *const *ts, int n, int axis);
blo_tensor *tn_stack(tn_ctx *ctx, blo_tensor *const *ts, int n, int axis);

/* ---- indexing ----
 * One entry per leading axis (fewer than rank: the rest are full slices).
 * kind INDEX drops the axis; kind SLICE keeps it with [start, stop) step 1.
 * Negative indices are normalised by the caller?  No: tn_index_check does it
 * (index -1 is the last element, slice bounds clamp like Python). */
typedef struct { int kind; long start, stop; } tn_index_t;
enum { TN_IX_INDEX = 0, TN_IX_SLICE = 1, TN_IX_ALL = 2 };
/* Validates and normalises ix in place; error "index 5 out of range for axis 0 of size 3". */
int tn_index_check(tn_ctx *ctx, const blo_tensor *a, tn_index_t *ix, int nix);
blo_tensor *tn_index(tn_ctx *ctx, const blo_tensor *a, const tn_index_t *ix, int nix);
/* dst[ix] += src  (dst shaped like the indexed tensor, src like the result of tn_index) */
int tn_index_add(tn_ctx *ctx, blo_tensor *dst, const tn_index_t *ix, int nix, const blo_tensor *src);
/* dst[ix] = src with broadcasting of src to the indexed shape */
int tn_index_set(tn_ctx *ctx, blo_tensor *dst, const tn_index_t *ix, int nix, const blo_tensor *src);
/* gather rows: a[idx[i], ...] for an integer-valued index vector (shuffle, minibatches) */
blo_tensor *tn_take(tn_ctx *ctx, const blo_tensor *a, const blo_tensor *idx, int axis);
int tn_take_add(tn_ctx *ctx, blo_tensor *dst, const blo_tensor *idx, int axis, const blo_tensor *src);

/* ---- linear algebra (LAPACKE), all on square/rectangular rank-2 inputs ----
 * A singular or non-positive-definite input is an error naming the operation. */
blo_tensor *tn_linsolve(tn_ctx *ctx, const blo_tensor *A, const blo_tensor *b); /* b: [n] or [n,k] */
blo_tensor *tn_inv(tn_ctx *ctx, const blo_tensor *A);
int tn_det(tn_ctx *ctx, const blo_tensor *A, double *out);
blo_tensor *tn_chol(tn_ctx *ctx, const blo_tensor *A);          /* lower L, A = L L' */
int tn_eigh(tn_ctx *ctx, const blo_tensor *A, blo_tensor **evals, blo_tensor **evecs); /* ascending */
blo_tensor *tn_pinv(tn_ctx *ctx, const blo_tensor *A);
blo_tensor *tn_lstsq(tn_ctx *ctx, const blo_tensor *A, const blo_tensor *b);

/* ---- random: counter-free xoshiro256** owned by the caller (no global state) ---- */
typedef struct { uint64_t s[4]; int has_spare; double spare; } tn_rng;
void tn_rng_seed(tn_rng *r, uint64_t seed);
uint64_t tn_rng_next(tn_rng *r);
double tn_rng_uniform(tn_rng *r);  /* [0, 1) with 53 random bits */
double tn_rng_normal(tn_rng *r);   /* Box-Muller (polar), reproducible across machines */

#endif
