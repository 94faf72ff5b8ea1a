/* ad.c: automatic differentiation at tensor-operation granularity (see ad.h).
 *
 * Structure
 *  - d_* functions are the dual operations: they compute the primal with the
 *    tensor kernels and, when an input carries a tangent, the output tangent
 *    (JVP).  They never touch a tape.  A NULL tangent means zero, so plain
 *    evaluation costs nothing extra.
 *  - ad_* functions call the d_* function and, when a tape is given and an input
 *    is on it, record a node holding (retained) dual inputs and the dual output.
 *  - ad_backward walks the nodes backwards.  Each VJP rule is written with the
 *    d_* operations on the saved duals and the dual adjoint, so the adjoint's
 *    tangent is the forward-over-reverse (Hessian/mixed-vector) product.
 *    Derivative factors ("partials") are themselves produced by d_* calls:
 *    the JVP of an op uses them on tangent-free copies of the inputs, the VJP on
 *    the real duals -- one formula, first and second order.
 *
 * Conventions (documented in the tests as well)
 *  - Operations with zero derivative (sign, step, floor, not, isnan,
 *    comparisons, and/or, argmax/argmin) produce constants: no tangent, no node.
 *  - max/min reductions: tied maxima share the adjoint equally (the mean of the
 *    one-hot subgradients).  max2/min2: ties go to a.
 *  - prod: derivative is the product of the other elements, computed with
 *    prefix/suffix products, so it is exact when inputs contain zeros (no
 *    division by x).
 *  - norm: at a zero vector the gradient is taken as 0 (minimum-norm subgradient).
 *  - pow: d/da = b*a^(b-1); d/db = a^b*log(a) is evaluated only when b is
 *    differentiated (b has a node for the VJP, or a tangent for the JVP), so a
 *    constant exponent on a negative base is fine; a differentiated exponent
 *    on a non-positive base gives NaN/inf derivatives, which is honest.
 *  - atan2(a, b): at the origin both partials are 0/0 = NaN; on the cut
 *    (a = 0, b < 0) they are those of the branch the value is on.
 *    asin/acos at +-1 have infinite derivatives, log1p at -1 too (honest).
 *  - concat/stack accept negative axes (normalised like Python).
 *  - backward without a seed accepts any single-element output (rank 0, [1], ..).
 *  - Adjoints are shared, refcounted tensors (a + b hands both inputs the same
 *    buffer): what ad_adjoint returns must be treated as immutable.  The tape
 *    accumulates in place only into buffers nobody else references.
 *  - ad_val_release leaves node = -1 ("constant"), not 0, which would name a
 *    real tape entry.  Inputs whose node is >= the tape size are rejected as
 *    stale; a value from before ad_tape_reset whose old id is still < size
 *    cannot be detected (callers re-tag values after a reset).
 *
 * Memory: the tape keeps its arrays (nodes, input slots, adjoints) across
 * ad_tape_reset; tensors go back to the tn_ctx pool.  Array (re)allocations go
 * through ctx->realloc_fn and are counted by ad_tape_allocs().
 */
/* GCC's SLP vectorizer copies the small structs passed by value here
 * (ad_val, value) with 16-byte loads right after they were written field by
 * field: a store-forwarding stall per copy, several per operation on tiny
 * problems (~5% of W3).  Loop vectorization is unaffected; results are the same. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize ("no-tree-slp-vectorize")
#endif
#include "ad.h"

#include <limits.h>
#include <math.h>
#include <string.h>

enum {
  K_LEAF, K_UNARY, K_BINARY, K_MATMUL, K_TRANSPOSE, K_REDUCE, K_SOFTMAX, K_RESHAPE,
  K_CONCAT, K_STACK, K_INDEX, K_TAKE, K_LINSOLVE,
  K_CONV,                       /* sub: CV_F conv2d, CV_BX / CV_BW its adjoints in x / w */
  K_POOL,                       /* sub: PL_MAX, PL_AVG */
  K_XENT,                       /* cross-entropy of logits against label rows */
  K_CUSTOM                      /* host callbacks: see the end of the file */
};

enum { CV_F, CV_BX, CV_BW };
enum { PL_MAX, PL_AVG };

typedef struct {
  int node;      /* input's node id (-1: constant, no adjoint needed) */
  ad_val v;      /* retained dual input */
} ad_slot;

typedef struct {
  int kind, sub, axis;
  int in0, nin;                 /* inputs are slots[in0 .. in0+nin) */
  int rank;                     /* output shape (for zero adjoints) */
  size_t shape[TN_MAX_RANK];
  int nix;                      /* index spec copy (K_INDEX) */
  tn_index_t ix[TN_MAX_RANK];
  size_t prm[6];                /* K_CONV: stride, padding (h, w each), then the spatial
                                   size of CV_BX's x or CV_BW's kernel; K_POOL: window,
                                   stride */
  ad_val out;                   /* retained dual output (not for leaves) */
  blo_tensor *aux;              /* K_TAKE: private copy of the index vector */
  const ad_custom *custom;      /* K_CUSTOM: callbacks (see the end of the file) */
  int tan_only;                 /* set by ad_backward_ex: this node's adjoint holds only
                                   its tangent part, stored in adj[].v (see there) */
  int reach;                    /* set by ad_backward_sel: a wanted leaf depends on it */
  /* lazy recomputation (ad_set_leaf, ad_retangent): out.v is stale (a shape
   * carrier only) while pstale, out.t while tstale; has_t: the tangent is not
   * known to be zero */
  unsigned char pstale, tstale, has_t;
} ad_node;

struct ad_tape {
  ad_node *nodes;
  int n, cap;
  ad_slot *slots;
  int ns, scap;
  ad_val *adj;                  /* adj[0..adjcap) always valid (empty or owning) */
  int nadj, adjcap;             /* entries [0, nadj) may be non-empty */
  size_t n_alloc;               /* array (re)allocations so far */
  int bound;                    /* ad_tape_bind: the nodes do not capture the point */
  int lazy;                     /* values and tangents are recomputed on demand */
  int *stk, stkcap;             /* ensure()'s work stack */
};

static const ad_val NOVAL = {NULL, NULL, -1};

/* input slot s may carry a nonzero tangent */
static int slot_has_t(const ad_tape *tp, const ad_slot *s) {
  return s->node >= 0 ? tp->nodes[s->node].has_t : s->v.t != NULL;
}

/* ------------------------------------------------------------------------ */
/* small helpers                                                            */

/* new references to a's tensors, as a constant-node dual */
static ad_val dup(ad_val a) {
  ad_val r = ad_val_retain(a);
  r.node = -1;
  return r;
}

/* out = (v, t) taking ownership; v == NULL means failure: t is released. */
static int mk(tn_ctx *ctx, blo_tensor *v, blo_tensor *t, ad_val *out) {
  if (!v) {
    tn_release(ctx, t);
    *out = NOVAL;
    return -1;
  }
  out->v = v;
  out->t = t;
  out->node = -1;
  return 0;
}

static int shape_is(const blo_tensor *t, int rank, const size_t *shape) {
  if (t->rank != rank) return 0;
  for (int i = 0; i < rank; i++)
    if (t->shape[i] != shape[i]) return 0;
  return 1;
}

/* x + y for owned tangents, either may be NULL; consumes both. */
static int tadd(tn_ctx *ctx, blo_tensor *x, blo_tensor *y, blo_tensor **out) {
  *out = NULL;
  if (!x || !y) {
    *out = x ? x : y;
    return 0;
  }
  blo_tensor *z = tn_binary(ctx, TN_ADD, x, y);
  tn_release(ctx, x);
  tn_release(ctx, y);
  if (!z) return -1;
  *out = z;
  return 0;
}

static void *mem(tn_ctx *ctx, void *p, size_t old, size_t nw) {
  return ctx->realloc_fn(ctx->alloc_ud, p, old, nw);
}

/* Grows an array of elem-sized items to hold need items; NULL (array intact)
 * and ctx->err on failure. */
static void *grow(tn_ctx *ctx, ad_tape *tp, void *p, int *cap, int need, size_t elem) {
  long nc = *cap ? *cap : 32;
  while (nc < need) nc *= 2;
  if (nc > INT_MAX || (size_t)nc > SIZE_MAX / elem) {
    tn_error(ctx, "autodiff tape too large");
    return NULL;
  }
  void *q = mem(ctx, p, (size_t)*cap * elem, (size_t)nc * elem);
  if (!q) {
    tn_error(ctx, "out of memory (autodiff tape)");
    return NULL;
  }
  *cap = (int)nc;
  tp->n_alloc++;
  return q;
}

/* Temporary arrays (concat/stack inputs, a replayed node's inputs): a stack
 * buffer of TMP_N items, beyond it the data of a pooled tensor (so
 * steady-state loops still make no host allocation). */
#define TMP_N 16
static void *tmp_items(tn_ctx *ctx, void *buf, int n, size_t item, blo_tensor **hold) {
  *hold = NULL;
  if (n <= TMP_N) return buf;
  size_t len = ((size_t)n * item + sizeof(double) - 1) / sizeof(double);
  if (!(*hold = tn_new(ctx, 1, &len))) return NULL;
  return (*hold)->data;
}

static blo_tensor **tmp_get(tn_ctx *ctx, blo_tensor **buf, int n, blo_tensor **hold) {
  return tmp_items(ctx, buf, n, sizeof *buf, hold);
}

/* [outer, n, inner] view of a for an axis (-1: the whole tensor as one lane) */
static void lane_dims(const blo_tensor *a, int axis, size_t *outer, size_t *n, size_t *inner) {
  *outer = 1;
  *inner = 1;
  if (axis < 0) {
    *n = a->size;
    return;
  }
  for (int i = 0; i < axis; i++) *outer *= a->shape[i];
  *n = a->shape[axis];
  for (int i = axis + 1; i < a->rank; i++) *inner *= a->shape[i];
}

static int unary_diff(tn_unary_op op) {
  switch (op) {
  case TN_SIGN: case TN_STEP: case TN_FLOOR: case TN_NOT: case TN_ISNAN: return 0;
  default: return (int)op >= 0 && (int)op < (int)TN_UNARY_COUNT;
  }
}

static int binary_diff(tn_binary_op op) {
  return op == TN_ADD || op == TN_SUB || op == TN_MUL || op == TN_DIV || op == TN_POW ||
         op == TN_MAX2 || op == TN_MIN2 || op == TN_ATAN2;
}

static int reduce_diff(tn_reduce_op op) { return op != TN_ARGMAX && op != TN_ARGMIN; }

/* ------------------------------------------------------------------------ */
/* linear dual operations: the same tensor op on value and tangent          */

static int d_affine(tn_ctx *ctx, ad_val a, double s, double c, ad_val *out) {
  /* a*s + c; tangent a.t*s */
  blo_tensor *v = tn_affine(ctx, a.v, s, c);
  if (!v) return mk(ctx, NULL, NULL, out);
  blo_tensor *t = NULL;
  if (a.t && !(t = tn_affine(ctx, a.t, s, 0.0))) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  return mk(ctx, v, t, out);
}

static int d_sum_to(tn_ctx *ctx, ad_val a, int rank, const size_t *shape, ad_val *out) {
  if (shape_is(a.v, rank, shape)) { *out = dup(a); return 0; }
  blo_tensor *v = tn_sum_to(ctx, a.v, rank, shape);
  if (!v) return mk(ctx, NULL, NULL, out);
  blo_tensor *t = NULL;
  if (a.t && !(t = tn_sum_to(ctx, a.t, rank, shape))) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  return mk(ctx, v, t, out);
}

static int d_broadcast_to(tn_ctx *ctx, ad_val a, int rank, const size_t *shape, ad_val *out) {
  if (shape_is(a.v, rank, shape)) { *out = dup(a); return 0; }
  blo_tensor *v = tn_broadcast_to(ctx, a.v, rank, shape);
  if (!v) return mk(ctx, NULL, NULL, out);
  blo_tensor *t = NULL;
  if (a.t && !(t = tn_broadcast_to(ctx, a.t, rank, shape))) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  return mk(ctx, v, t, out);
}

/* r (reduced from ref along axis) with the axis re-inserted as size 1; axis -1:
 * r is rank 0 and broadcasts as is. */
static int d_unsq(tn_ctx *ctx, ad_val r, const blo_tensor *ref, int axis, ad_val *out) {
  if (axis < 0) { *out = dup(r); return 0; }
  blo_tensor *v = tn_unsqueeze_reduced(ctx, r.v, ref, axis);
  if (!v) return mk(ctx, NULL, NULL, out);
  blo_tensor *t = NULL;
  if (r.t && !(t = tn_unsqueeze_reduced(ctx, r.t, ref, axis))) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  return mk(ctx, v, t, out);
}

static int d_transpose(tn_ctx *ctx, ad_val a, ad_val *out) {
  blo_tensor *v = tn_transpose(ctx, a.v);
  if (!v) return mk(ctx, NULL, NULL, out);
  blo_tensor *t = NULL;
  if (a.t && !(t = tn_transpose(ctx, a.t))) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  return mk(ctx, v, t, out);
}

static int d_reshape(tn_ctx *ctx, ad_val a, int rank, const size_t *shape, ad_val *out) {
  blo_tensor *v = tn_reshape(ctx, a.v, rank, shape);
  if (!v) return mk(ctx, NULL, NULL, out);
  blo_tensor *t = NULL;
  if (a.t && !(t = tn_reshape(ctx, a.t, rank, shape))) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  return mk(ctx, v, t, out);
}

static int d_index(tn_ctx *ctx, ad_val a, const tn_index_t *ix, int nix, ad_val *out) {
  blo_tensor *v = tn_index(ctx, a.v, ix, nix);
  if (!v) return mk(ctx, NULL, NULL, out);
  blo_tensor *t = NULL;
  if (a.t && !(t = tn_index(ctx, a.t, ix, nix))) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  return mk(ctx, v, t, out);
}

/* zeros(shape)[ix] += src, on value and tangent (the adjoint of indexing) */
static int d_scatter(tn_ctx *ctx, ad_val src, const tn_index_t *ix, int nix, int rank,
                     const size_t *shape, ad_val *out) {
  blo_tensor *v = tn_zeros(ctx, rank, shape), *t = NULL;
  if (!v || tn_index_add(ctx, v, ix, nix, src.v)) goto fail;
  if (src.t && (!(t = tn_zeros(ctx, rank, shape)) || tn_index_add(ctx, t, ix, nix, src.t))) goto fail;
  return mk(ctx, v, t, out);
fail:
  tn_release(ctx, v);
  tn_release(ctx, t);
  return mk(ctx, NULL, NULL, out);
}

static int d_take(tn_ctx *ctx, ad_val a, const blo_tensor *idx, int axis, ad_val *out) {
  blo_tensor *v = tn_take(ctx, a.v, idx, axis);
  if (!v) return mk(ctx, NULL, NULL, out);
  blo_tensor *t = NULL;
  if (a.t && !(t = tn_take(ctx, a.t, idx, axis))) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  return mk(ctx, v, t, out);
}

static int d_take_scatter(tn_ctx *ctx, ad_val src, const blo_tensor *idx, int axis, int rank,
                          const size_t *shape, ad_val *out) {
  blo_tensor *v = tn_zeros(ctx, rank, shape), *t = NULL;
  if (!v || tn_take_add(ctx, v, idx, axis, src.v)) goto fail;
  if (src.t && (!(t = tn_zeros(ctx, rank, shape)) || tn_take_add(ctx, t, idx, axis, src.t))) goto fail;
  return mk(ctx, v, t, out);
fail:
  tn_release(ctx, v);
  tn_release(ctx, t);
  return mk(ctx, NULL, NULL, out);
}

/* concat (stack if is_stack) of duals; missing tangents are zeros when any
 * input has one. */
static int d_join(tn_ctx *ctx, const ad_val *as, int n, int axis, int is_stack, ad_val *out) {
  blo_tensor *buf[TMP_N], *hold;
  blo_tensor **p = tmp_get(ctx, buf, n, &hold);
  blo_tensor *v = NULL, *t = NULL;
  int any_t = 0, made = 0, ok = 0;
  if (!p) return mk(ctx, NULL, NULL, out);
  for (int i = 0; i < n; i++) {
    p[i] = as[i].v;
    any_t |= as[i].t != NULL;
  }
  v = is_stack ? tn_stack(ctx, p, n, axis) : tn_concat(ctx, p, n, axis);
  if (!v) goto done;
  if (any_t) {
    for (made = 0; made < n; made++) {
      p[made] = as[made].t ? tn_retain(as[made].t) : tn_zeros_like(ctx, as[made].v);
      if (!p[made]) goto done;
    }
    t = is_stack ? tn_stack(ctx, p, n, axis) : tn_concat(ctx, p, n, axis);
    if (!t) goto done;
  }
  ok = 1;
done:
  if (any_t)
    for (int i = 0; i < made; i++) tn_release(ctx, p[i]);
  tn_release(ctx, hold);
  if (!ok) {
    tn_release(ctx, v);
    return mk(ctx, NULL, NULL, out);
  }
  return mk(ctx, v, t, out);
}

/* ------------------------------------------------------------------------ */
/* nonlinear dual operations                                                */

static int d_unary(tn_ctx *ctx, tn_unary_op op, ad_val a, ad_val *out);
static int d_binary(tn_ctx *ctx, tn_binary_op op, ad_val a, ad_val b, ad_val *out);

/* f'(a) as a dual, given a and z = f(a) (duals; shape of a).  Used with
 * tangent-free duals for the JVP and with the saved duals for the VJP, where
 * its tangent f''(a) a.t supplies the second-order term. */
static int unary_deriv(tn_ctx *ctx, tn_unary_op op, ad_val a, ad_val z, ad_val *out) {
  ad_val s = NOVAL, u = NOVAL;
  int rc = -1;
  switch (op) {
  case TN_EXP: *out = dup(z); return 0;                          /* exp */
  case TN_LOG: return d_unary(ctx, TN_RECIP, a, out);            /* 1/a */
  case TN_SQRT:                                                  /* 0.5/sqrt(a) */
    if (d_unary(ctx, TN_RECIP, z, &s)) return mk(ctx, NULL, NULL, out);
    rc = d_affine(ctx, s, 0.5, 0.0, out);
    break;
  case TN_ABS: return mk(ctx, tn_unary(ctx, TN_SIGN, a.v), NULL, out); /* sign, constant */
  case TN_SIN: return d_unary(ctx, TN_COS, a, out);              /* cos */
  case TN_COS:                                                   /* -sin */
    if (d_unary(ctx, TN_SIN, a, &s)) return mk(ctx, NULL, NULL, out);
    rc = d_unary(ctx, TN_NEG, s, out);
    break;
  case TN_TANH:                                                  /* 1 - tanh^2 */
    if (d_unary(ctx, TN_SQUARE, z, &s)) return mk(ctx, NULL, NULL, out);
    rc = d_affine(ctx, s, -1.0, 1.0, out);
    break;
  case TN_SIGMOID:                                               /* s (1 - s) */
    if (d_affine(ctx, z, -1.0, 1.0, &s)) return mk(ctx, NULL, NULL, out);
    rc = d_binary(ctx, TN_MUL, z, s, out);
    break;
  case TN_SOFTPLUS: return d_unary(ctx, TN_SIGMOID, a, out);     /* sigmoid */
  case TN_RELU: return mk(ctx, tn_unary(ctx, TN_STEP, a.v), NULL, out); /* step, constant */
  case TN_SQUARE: return d_affine(ctx, a, 2.0, 0.0, out);        /* 2a */
  case TN_RECIP:                                                 /* -1/a^2 = -z^2 */
    if (d_unary(ctx, TN_SQUARE, z, &s)) return mk(ctx, NULL, NULL, out);
    rc = d_affine(ctx, s, -1.0, 0.0, out);
    break;
  case TN_TAN:                                                   /* 1 + tan^2 */
    if (d_unary(ctx, TN_SQUARE, z, &s)) return mk(ctx, NULL, NULL, out);
    rc = d_affine(ctx, s, 1.0, 1.0, out);
    break;
  case TN_ATAN:                                                  /* 1/(1 + a^2) */
    if (d_unary(ctx, TN_SQUARE, a, &s) || d_affine(ctx, s, 1.0, 1.0, &u)) break;
    rc = d_unary(ctx, TN_RECIP, u, out);
    break;
  case TN_ASIN: case TN_ACOS:                                    /* +-1/sqrt(1 - a^2) */
    if (d_unary(ctx, TN_SQUARE, a, &s) || d_affine(ctx, s, -1.0, 1.0, &u)) break;
    ad_val_release(ctx, &s);
    if (d_unary(ctx, TN_SQRT, u, &s)) break;
    ad_val_release(ctx, &u);
    if (op == TN_ASIN) {
      rc = d_unary(ctx, TN_RECIP, s, out);
    } else if (d_unary(ctx, TN_RECIP, s, &u) == 0) {
      rc = d_unary(ctx, TN_NEG, u, out);
    }
    break;
  case TN_SINH: return d_unary(ctx, TN_COSH, a, out);            /* cosh */
  case TN_COSH: return d_unary(ctx, TN_SINH, a, out);            /* sinh */
  case TN_ERF:                                                   /* 2/sqrt(pi) exp(-a^2) */
    if (d_unary(ctx, TN_SQUARE, a, &s) || d_affine(ctx, s, -1.0, 0.0, &u)) break;
    ad_val_release(ctx, &s);
    if (d_unary(ctx, TN_EXP, u, &s)) break;
    rc = d_affine(ctx, s, 1.1283791670955126, 0.0, out);        /* 2/sqrt(pi) */
    break;
  case TN_LOG1P:                                                 /* 1/(1 + a) */
    if (d_affine(ctx, a, 1.0, 1.0, &s)) return mk(ctx, NULL, NULL, out);
    rc = d_unary(ctx, TN_RECIP, s, out);
    break;
  case TN_EXPM1: return d_affine(ctx, z, 1.0, 1.0, out);         /* exp = expm1 + 1 */
  default:
    tn_error(ctx, "autodiff: no derivative for '%s'", tn_unary_name(op));
    return mk(ctx, NULL, NULL, out);
  }
  ad_val_release(ctx, &s);
  ad_val_release(ctx, &u);
  if (rc) *out = NOVAL;
  return rc;
}

/* z = f(a), shape of a; tangent f'(a) * a.t */
static int d_unary(tn_ctx *ctx, tn_unary_op op, ad_val a, ad_val *out) {
  blo_tensor *v = tn_unary(ctx, op, a.v), *t = NULL;
  if (!v) return mk(ctx, NULL, NULL, out);
  if (a.t && unary_diff(op)) {
    if (op == TN_NEG) {
      t = tn_unary(ctx, TN_NEG, a.t);
    } else {
      ad_val d;
      if (unary_deriv(ctx, op, ad_const(a.v), ad_const(v), &d) == 0) {
        t = tn_binary(ctx, TN_MUL, d.v, a.t);
        ad_val_release(ctx, &d);
      }
    }
    if (!t) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  }
  return mk(ctx, v, t, out);
}

/* dz/d(input k) of z = a op b as a dual (broadcast-compatible with z), for
 * MUL, DIV, POW, MAX2, MIN2, ATAN2.  ADD/SUB are handled by their callers. */
static int bin_partial(tn_ctx *ctx, tn_binary_op op, int k, ad_val a, ad_val b, ad_val z, ad_val *out) {
  ad_val s = NOVAL, u = NOVAL;
  int rc = -1;
  switch (op) {
  case TN_MUL: *out = dup(k == 0 ? b : a); return 0;              /* b ; a */
  case TN_DIV:
    if (k == 0) return d_unary(ctx, TN_RECIP, b, out);             /* 1/b */
    if (d_binary(ctx, TN_DIV, z, b, &s) == 0)                      /* -z/b = -a/b^2 */
      rc = d_unary(ctx, TN_NEG, s, out);
    break;
  case TN_POW:
    if (k == 0) {                                                  /* b a^(b-1) */
      if (d_affine(ctx, b, 1.0, -1.0, &s) == 0 && d_binary(ctx, TN_POW, a, s, &u) == 0)
        rc = d_binary(ctx, TN_MUL, b, u, out);
    } else {                                                       /* a^b log a */
      if (d_unary(ctx, TN_LOG, a, &s) == 0)
        rc = d_binary(ctx, TN_MUL, z, s, out);
    }
    break;
  case TN_MAX2: /* ties go to a: mask a >= b, and its complement a < b (constants) */
    return mk(ctx, tn_binary(ctx, k == 0 ? TN_GE : TN_LT, a.v, b.v), NULL, out);
  case TN_MIN2:
    return mk(ctx, tn_binary(ctx, k == 0 ? TN_LE : TN_GT, a.v, b.v), NULL, out);
  case TN_ATAN2: { /* z = atan2(a, b): b/(a^2 + b^2) ; -a/(a^2 + b^2) */
    ad_val r = NOVAL;
    if (d_unary(ctx, TN_SQUARE, a, &s) == 0 && d_unary(ctx, TN_SQUARE, b, &u) == 0 &&
        d_binary(ctx, TN_ADD, s, u, &r) == 0) {
      ad_val_release(ctx, &s);
      if (k == 0) {
        rc = d_binary(ctx, TN_DIV, b, r, out);
      } else if (d_binary(ctx, TN_DIV, a, r, &s) == 0) {
        rc = d_unary(ctx, TN_NEG, s, out);
      }
    }
    ad_val_release(ctx, &r);
    break;
  }
  default:
    tn_error(ctx, "autodiff: no derivative for '%s'", tn_binary_name(op));
    break;
  }
  ad_val_release(ctx, &s);
  ad_val_release(ctx, &u);
  if (rc) *out = NOVAL;
  return rc;
}

/* z = a op b (broadcast); tangent d_a z * a.t + d_b z * b.t, broadcast to z */
static int d_binary(tn_ctx *ctx, tn_binary_op op, ad_val a, ad_val b, ad_val *out) {
  blo_tensor *v = tn_binary(ctx, op, a.v, b.v), *ta = NULL, *tb = NULL, *t = NULL;
  if (!v) return mk(ctx, NULL, NULL, out);
  if (!binary_diff(op) || (!a.t && !b.t)) return mk(ctx, v, NULL, out);
  if (op == TN_ADD || op == TN_SUB) {
    ta = tn_retain(a.t);
    if (b.t && !(tb = op == TN_ADD ? tn_retain(b.t) : tn_unary(ctx, TN_NEG, b.t))) goto fail;
  } else {
    ad_val p;
    if (a.t) {
      if (bin_partial(ctx, op, 0, ad_const(a.v), ad_const(b.v), ad_const(v), &p)) goto fail;
      ta = tn_binary(ctx, TN_MUL, p.v, a.t);
      ad_val_release(ctx, &p);
      if (!ta) goto fail;
    }
    if (b.t) {
      if (bin_partial(ctx, op, 1, ad_const(a.v), ad_const(b.v), ad_const(v), &p)) goto fail;
      tb = tn_binary(ctx, TN_MUL, p.v, b.t);
      ad_val_release(ctx, &p);
      if (!tb) goto fail;
    }
  }
  if (tadd(ctx, ta, tb, &t)) { ta = tb = NULL; goto fail; }
  ta = tb = NULL;
  if (!tn_same_shape(t, v)) { /* e.g. only the scalar side of scalar*matrix moves */
    blo_tensor *tt = tn_broadcast_to(ctx, t, v->rank, v->shape);
    tn_release(ctx, t);
    if (!(t = tt)) goto fail;
  }
  return mk(ctx, v, t, out);
fail:
  tn_release(ctx, ta);
  tn_release(ctx, tb);
  tn_release(ctx, v);
  return mk(ctx, NULL, NULL, out);
}

/* z = op(a) @ op(b), op transposing a rank-2 operand whose flag is set (a
 * BLAS flag, no copy); tangent op(a.t) @ op(b) + op(a) @ op(b.t) */
static int d_matmul_t(tn_ctx *ctx, ad_val a, int fa, ad_val b, int fb, ad_val *out) {
  blo_tensor *v = tn_matmul_t(ctx, a.v, fa, b.v, fb), *ta = NULL, *tb = NULL, *t = NULL;
  if (!v) return mk(ctx, NULL, NULL, out);
  if (a.t && !(ta = tn_matmul_t(ctx, a.t, fa, b.v, fb))) goto fail;
  if (b.t && !(tb = tn_matmul_t(ctx, a.v, fa, b.t, fb))) goto fail;
  if (tadd(ctx, ta, tb, &t)) { ta = tb = NULL; goto fail; }
  return mk(ctx, v, t, out);
fail:
  tn_release(ctx, ta);
  tn_release(ctx, tb);
  tn_release(ctx, v);
  return mk(ctx, NULL, NULL, out);
}

/* z = a @ b */
static int d_matmul(tn_ctx *ctx, ad_val a, ad_val b, ad_val *out) { return d_matmul_t(ctx, a, 0, b, 0, out); }

/* outer product of vectors u [m], w [n] -> [m,n], as reshape + matmul */
static int d_outer(tn_ctx *ctx, ad_val u, ad_val w, ad_val *out) {
  size_t su[2] = {u.v->size, 1}, sw[2] = {1, w.v->size};
  ad_val uu = NOVAL, ww = NOVAL;
  int rc = -1;
  if (d_reshape(ctx, u, 2, su, &uu) == 0 && d_reshape(ctx, w, 2, sw, &ww) == 0)
    rc = d_matmul(ctx, uu, ww, out);
  ad_val_release(ctx, &uu);
  ad_val_release(ctx, &ww);
  if (rc) *out = NOVAL;
  return rc;
}

/* Product of the other elements along axis (-1: all), exact with zeros via
 * prefix/suffix products; shape of a.  Tangent: its directional derivative
 * (prefix/suffix products of duals). */
static int d_exclprod(tn_ctx *ctx, ad_val a, int axis, ad_val *out) {
  size_t outer, n, inner;
  blo_tensor *v = tn_new(ctx, a.v->rank, a.v->shape), *t = NULL;
  if (!v) return mk(ctx, NULL, NULL, out);
  if (a.t && !(t = tn_new(ctx, a.v->rank, a.v->shape))) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  lane_dims(a.v, axis, &outer, &n, &inner);
  const double *x = a.v->data, *dx = a.t ? a.t->data : NULL;
  double *e = v->data, *de = t ? t->data : NULL;
  for (size_t o = 0; o < outer; o++)
    for (size_t i = 0; i < inner; i++) {
      size_t base = o * n * inner + i;
      double p = 1.0, dp = 0.0;
      for (size_t j = 0; j < n; j++) { /* e_j = prod_{k<j} x_k */
        size_t q = base + j * inner;
        e[q] = p;
        if (de) { de[q] = dp; dp = dp * x[q] + p * dx[q]; }
        p *= x[q];
      }
      double s = 1.0, ds = 0.0;
      for (size_t j = n; j-- > 0;) { /* e_j *= prod_{k>j} x_k */
        size_t q = base + j * inner;
        if (de) { de[q] = de[q] * s + e[q] * ds; ds = ds * x[q] + s * dx[q]; }
        e[q] *= s;
        s *= x[q];
      }
    }
  return mk(ctx, v, t, out);
}

/* dz/da for a reduction z = red(a, axis) (shape of a), as a dual. */
static int reduce_weight(tn_ctx *ctx, tn_reduce_op op, ad_val a, ad_val z, int axis, ad_val *out) {
  ad_val zu = NOVAL, s = NOVAL, u = NOVAL;
  blo_tensor *m = NULL, *c = NULL, *cu = NULL, *zero = NULL;
  int rc = -1;
  *out = NOVAL;
  switch (op) {
  case TN_MAX: case TN_MIN: /* mask of the extremes / their count (ties share) */
    if (d_unsq(ctx, ad_const(z.v), a.v, axis, &zu)) break;
    if (!(m = tn_binary(ctx, TN_EQ, a.v, zu.v))) break;
    if (!(c = tn_reduce(ctx, TN_SUM, m, axis))) break;
    cu = axis < 0 ? tn_retain(c) : tn_unsqueeze_reduced(ctx, c, a.v, axis);
    if (!cu) break;
    rc = mk(ctx, tn_binary(ctx, TN_DIV, m, cu), NULL, out);
    break;
  case TN_PROD: /* product of the others */
    rc = d_exclprod(ctx, a, axis, out);
    break;
  case TN_NORM: /* a / ||a||, 0 where ||a|| == 0 */
    if (!(zero = tn_scalar(ctx, 0.0)) || !(m = tn_binary(ctx, TN_EQ, z.v, zero))) break;
    if (d_binary(ctx, TN_ADD, z, ad_const(m), &s)) break;
    if (d_unsq(ctx, s, a.v, axis, &u)) break;
    rc = d_binary(ctx, TN_DIV, a, u, out);
    break;
  case TN_LOGSUMEXP: /* softmax weights exp(a - lse) */
    if (d_unsq(ctx, z, a.v, axis, &zu)) break;
    if (d_binary(ctx, TN_SUB, a, zu, &s)) break;
    rc = d_unary(ctx, TN_EXP, s, out);
    break;
  default:
    tn_error(ctx, "autodiff: no weight for this reduction");
    break;
  }
  ad_val_release(ctx, &zu);
  ad_val_release(ctx, &s);
  ad_val_release(ctx, &u);
  tn_release(ctx, m);
  tn_release(ctx, c);
  tn_release(ctx, cu);
  tn_release(ctx, zero);
  return rc;
}

/* z = red(a, axis); tangent red'(a) . a.t */
static int d_reduce(tn_ctx *ctx, tn_reduce_op op, ad_val a, int axis, ad_val *out) {
  blo_tensor *v = tn_reduce(ctx, op, a.v, axis), *t = NULL, *p = NULL;
  if (!v) return mk(ctx, NULL, NULL, out);
  if (!a.t || !reduce_diff(op)) return mk(ctx, v, NULL, out);
  if (op == TN_SUM || op == TN_MEAN) {
    t = tn_reduce(ctx, op, a.t, axis); /* linear */
  } else {
    ad_val w;
    if (reduce_weight(ctx, op, ad_const(a.v), ad_const(v), axis, &w) == 0) {
      p = tn_binary(ctx, TN_MUL, w.v, a.t);
      ad_val_release(ctx, &w);
      if (p) t = tn_reduce(ctx, TN_SUM, p, axis);
      tn_release(ctx, p);
    }
  }
  if (!t) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  return mk(ctx, v, t, out);
}

/* J_softmax x = s * (x - sum(s * x, axis)); J is symmetric, so this is both
 * the JVP (x = tangent) and the VJP (x = adjoint). */
static int softmax_jac(tn_ctx *ctx, ad_val s, ad_val x, int axis, ad_val *out) {
  ad_val p = NOVAL, q = NOVAL, qu = NOVAL, u = NOVAL;
  int rc = -1;
  if (d_binary(ctx, TN_MUL, x, s, &p) == 0 && d_reduce(ctx, TN_SUM, p, axis, &q) == 0 &&
      d_unsq(ctx, q, s.v, axis, &qu) == 0 && d_binary(ctx, TN_SUB, x, qu, &u) == 0)
    rc = d_binary(ctx, TN_MUL, s, u, out);
  ad_val_release(ctx, &p);
  ad_val_release(ctx, &q);
  ad_val_release(ctx, &qu);
  ad_val_release(ctx, &u);
  if (rc) *out = NOVAL;
  return rc;
}

static int d_softmax(tn_ctx *ctx, ad_val a, int axis, ad_val *out) {
  blo_tensor *v = tn_softmax(ctx, a.v, axis);
  if (!v) return mk(ctx, NULL, NULL, out);
  if (!a.t) return mk(ctx, v, NULL, out);
  ad_val j;
  if (softmax_jac(ctx, ad_const(v), ad_const(a.t), axis, &j)) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  return mk(ctx, v, j.v, out);
}

/* x = A^{-1} b; tangent A^{-1} (b.t - A.t x) */
static int d_linsolve(tn_ctx *ctx, ad_val A, ad_val b, ad_val *out) {
  blo_tensor *x = tn_linsolve(ctx, A.v, b.v), *r = NULL, *q = NULL, *t = NULL;
  if (!x) return mk(ctx, NULL, NULL, out);
  if (!A.t && !b.t) return mk(ctx, x, NULL, out);
  if (A.t) {
    if (!(q = tn_matmul(ctx, A.t, x))) goto fail;
    r = b.t ? tn_binary(ctx, TN_SUB, b.t, q) : tn_unary(ctx, TN_NEG, q);
    tn_release(ctx, q);
    if (!r) goto fail;
  } else {
    r = tn_retain(b.t);
  }
  t = tn_linsolve(ctx, A.v, r);
  tn_release(ctx, r);
  if (!t) goto fail;
  return mk(ctx, x, t, out);
fail:
  tn_release(ctx, x);
  return mk(ctx, NULL, NULL, out);
}


/* ---- convolution, pooling, cross-entropy ---- */

static tn_conv_opt conv_opt(const size_t *prm) {
  tn_conv_opt o = {prm[0], prm[1], prm[2], prm[3]};
  return o;
}

/* the bilinear kernel kind: F (x, w) -> y, BX (g, w) -> dx, BW (x, g) -> dw */
static blo_tensor *conv_k(tn_ctx *ctx, int kind, const blo_tensor *a, const blo_tensor *b, const size_t *prm) {
  tn_conv_opt o = conv_opt(prm);
  switch (kind) {
  case CV_F: return tn_conv2d(ctx, a, b, &o);
  case CV_BX: return tn_conv2d_bx(ctx, a, b, prm[4], prm[5], &o);
  default: return tn_conv2d_bw(ctx, a, b, prm[4], prm[5], &o);
  }
}

/* z = K(a, b), bilinear; tangent K(a.t, b) + K(a, b.t) */
static int d_conv(tn_ctx *ctx, int kind, ad_val a, ad_val b, const size_t *prm, ad_val *out) {
  blo_tensor *v = conv_k(ctx, kind, a.v, b.v, prm), *ta = NULL, *tb = NULL, *t = NULL;
  if (!v) return mk(ctx, NULL, NULL, out);
  if (a.t && !(ta = conv_k(ctx, kind, a.t, b.v, prm))) goto fail;
  if (b.t && !(tb = conv_k(ctx, kind, a.v, b.t, prm))) goto fail;
  if (tadd(ctx, ta, tb, &t)) { ta = tb = NULL; goto fail; }
  return mk(ctx, v, t, out);
fail:
  tn_release(ctx, ta);
  tn_release(ctx, tb);
  tn_release(ctx, v);
  return mk(ctx, NULL, NULL, out);
}

/* out[k] = a[arg[k]]: the values (or tangents) at the window maxima */
static blo_tensor *gather_at(tn_ctx *ctx, const blo_tensor *a, const blo_tensor *arg) {
  blo_tensor *o = tn_new(ctx, arg->rank, arg->shape);
  if (o) for (size_t k = 0; k < arg->size; k++) o->data[k] = a->data[(size_t)arg->data[k]];
  return o;
}

/* zeros(like)[arg[k]] += g[k] */
static blo_tensor *scatter_at(tn_ctx *ctx, const blo_tensor *g, const blo_tensor *arg, const blo_tensor *like) {
  blo_tensor *o = tn_zeros_like(ctx, like);
  if (o) for (size_t k = 0; k < arg->size; k++) o->data[(size_t)arg->data[k]] += g->data[k];
  return o;
}

/* z = pool(a) (prm: window kh, kw, stride sh, sw); tangent: avg of a.t, or
 * a.t at the maxima of a (a constant selection) */
static int d_pool(tn_ctx *ctx, int kind, ad_val a, const size_t *prm, ad_val *out) {
  tn_conv_opt o = {prm[2], prm[3], 0, 0};
  blo_tensor *v, *t = NULL, *arg = NULL;
  if (kind == PL_AVG) {
    if (!(v = tn_avgpool2d(ctx, a.v, prm[0], prm[1], &o))) return mk(ctx, NULL, NULL, out);
    if (a.t && !(t = tn_avgpool2d(ctx, a.t, prm[0], prm[1], &o))) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
    return mk(ctx, v, t, out);
  }
  if (!(v = tn_maxpool2d(ctx, a.v, prm[0], prm[1], &o, a.t ? &arg : NULL))) return mk(ctx, NULL, NULL, out);
  if (a.t) {
    t = gather_at(ctx, a.t, arg);
    tn_release(ctx, arg);
    if (!t) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  }
  return mk(ctx, v, t, out);
}

/* The adjoint of pool at input a (a dual whose value locates the maxima):
 * g (dual, shape of the output) spread back to the shape of a. */
static int d_pool_adj(tn_ctx *ctx, int kind, ad_val a, ad_val g, const size_t *prm, ad_val *out) {
  tn_conv_opt o = {prm[2], prm[3], 0, 0};
  const size_t h = a.v->shape[2], w = a.v->shape[3];
  blo_tensor *v = NULL, *t = NULL, *arg = NULL;
  if (kind == PL_AVG) {
    if (!(v = tn_avgpool2d_bwd(ctx, g.v, prm[0], prm[1], h, w, &o))) goto fail;
    if (g.t && !(t = tn_avgpool2d_bwd(ctx, g.t, prm[0], prm[1], h, w, &o))) goto fail;
    return mk(ctx, v, t, out);
  }
  blo_tensor *y = tn_maxpool2d(ctx, a.v, prm[0], prm[1], &o, &arg);
  tn_release(ctx, y);
  if (!y) goto fail;
  if (!(v = scatter_at(ctx, g.v, arg, a.v))) goto fail;
  if (g.t && !(t = scatter_at(ctx, g.t, arg, a.v))) goto fail;
  tn_release(ctx, arg);
  return mk(ctx, v, t, out);
fail:
  tn_release(ctx, arg);
  tn_release(ctx, v);
  return mk(ctx, NULL, NULL, out);
}

/* dL/dz (k = 0) or dL/dp (k = 1) of L = cross_entropy(z, p) as a dual:
 * (softmax(z) * rowsum(p) - p) / N and (lse(z) - z) / N. */
static int xent_partial(tn_ctx *ctx, int k, ad_val z, ad_val p, ad_val *out) {
  ad_val s = NOVAL, r = NOVAL, ru = NOVAL, q = NOVAL;
  double n = z.v->shape[0] ? 1.0 / (double)z.v->shape[0] : 0.0;
  int rc = -1;
  *out = NOVAL;
  if (k == 0) {
    if (d_softmax(ctx, z, 1, &s) == 0 && d_reduce(ctx, TN_SUM, p, 1, &r) == 0 && d_unsq(ctx, r, p.v, 1, &ru) == 0 &&
        d_binary(ctx, TN_MUL, s, ru, &q) == 0) {
      ad_val_release(ctx, &s);
      if (d_binary(ctx, TN_SUB, q, p, &s) == 0) rc = d_affine(ctx, s, n, 0.0, out);
    }
  } else {
    if (d_reduce(ctx, TN_LOGSUMEXP, z, 1, &r) == 0 && d_unsq(ctx, r, z.v, 1, &ru) == 0 &&
        d_binary(ctx, TN_SUB, ru, z, &s) == 0)
      rc = d_affine(ctx, s, n, 0.0, out);
  }
  ad_val_release(ctx, &s);
  ad_val_release(ctx, &r);
  ad_val_release(ctx, &ru);
  ad_val_release(ctx, &q);
  if (rc) *out = NOVAL;
  return rc;
}

/* L = cross_entropy(z, p); tangent sum(dL/dz z.t) + sum(dL/dp p.t) */
static int d_xent(tn_ctx *ctx, ad_val z, ad_val p, ad_val *out) {
  blo_tensor *v = tn_cross_entropy(ctx, z.v, p.v), *t = NULL;
  if (!v) return mk(ctx, NULL, NULL, out);
  if (!z.t && !p.t) return mk(ctx, v, NULL, out);
  double s = 0;
  for (int k = 0; k < 2; k++) {
    const blo_tensor *dt = k ? p.t : z.t;
    ad_val d;
    if (!dt) continue;
    if (xent_partial(ctx, k, ad_const(z.v), ad_const(p.v), &d)) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
    s += tn_dot(d.v, dt);
    ad_val_release(ctx, &d);
  }
  if (!(t = tn_scalar(ctx, s))) { tn_release(ctx, v); return mk(ctx, NULL, NULL, out); }
  return mk(ctx, v, t, out);
}

/* ------------------------------------------------------------------------ */
/* tape                                                                     */

ad_tape *ad_tape_new(tn_ctx *ctx) {
  ad_tape *tp = mem(ctx, NULL, 0, sizeof *tp);
  if (!tp) {
    tn_error(ctx, "out of memory (autodiff tape)");
    return NULL;
  }
  memset(tp, 0, sizeof *tp);
  return tp;
}

static void clear_adj(tn_ctx *ctx, ad_tape *tp) {
  for (int i = 0; i < tp->nadj; i++) ad_val_release(ctx, &tp->adj[i]);
  tp->nadj = 0;
}

void ad_tape_reset(tn_ctx *ctx, ad_tape *tp) {
  if (!tp) return;
  clear_adj(ctx, tp);
  for (int i = 0; i < tp->n; i++) {
    ad_val_release(ctx, &tp->nodes[i].out);
    tn_release(ctx, tp->nodes[i].aux);
    tp->nodes[i].aux = NULL;
  }
  for (int i = 0; i < tp->ns; i++) ad_val_release(ctx, &tp->slots[i].v);
  tp->n = 0;
  tp->ns = 0;
  tp->bound = 0;
  tp->lazy = 0;
}

void ad_tape_free(tn_ctx *ctx, ad_tape *tp) {
  if (!tp) return;
  ad_tape_reset(ctx, tp);
  if (tp->nodes) mem(ctx, tp->nodes, (size_t)tp->cap * sizeof *tp->nodes, 0);
  if (tp->slots) mem(ctx, tp->slots, (size_t)tp->scap * sizeof *tp->slots, 0);
  if (tp->adj) mem(ctx, tp->adj, (size_t)tp->adjcap * sizeof *tp->adj, 0);
  if (tp->stk) mem(ctx, tp->stk, (size_t)tp->stkcap * sizeof *tp->stk, 0);
  mem(ctx, tp, sizeof *tp, 0);
}

int ad_tape_size(const ad_tape *tp) { return tp ? tp->n : 0; }

size_t ad_tape_allocs(const ad_tape *tp) { return tp ? tp->n_alloc : 0; }

/* Validates inputs; *rec = 1 when the output must be recorded. */
static int prep(tn_ctx *ctx, ad_tape *tp, const ad_val *ins, int nin, int *rec) {
  *rec = 0;
  for (int i = 0; i < nin; i++) {
    if (!ins[i].v) return tn_error(ctx, "autodiff: operand has no value");
    if (tp && ins[i].node >= 0) {
      if (ins[i].node >= tp->n)
        return tn_error(ctx, "autodiff: stale tape node %d (the tape holds %d)", ins[i].node, tp->n);
      *rec = 1;
    }
  }
  return 0;
}

/* Appends a node for *out with inputs ins (retained) and the output dual.
 * Takes ownership of aux.  On failure releases *out and aux. */
static int record(tn_ctx *ctx, ad_tape *tp, int kind, int sub, int axis, const ad_val *ins,
                  int nin, blo_tensor *aux, ad_val *out, ad_node **pnd) {
  if (tp->n >= tp->cap) {
    ad_node *p = grow(ctx, tp, tp->nodes, &tp->cap, tp->n + 1, sizeof *p);
    if (!p) goto fail;
    tp->nodes = p;
  }
  if (tp->ns + nin > tp->scap) {
    if (nin > INT_MAX - tp->ns) { tn_error(ctx, "autodiff tape too large"); goto fail; }
    ad_slot *p = grow(ctx, tp, tp->slots, &tp->scap, tp->ns + nin, sizeof *p);
    if (!p) goto fail;
    tp->slots = p;
  }
  ad_node *nd = &tp->nodes[tp->n];
  /* every field is set below (no memset of the whole node: ix[] alone is 144
   * bytes, and only K_INDEX reads it, after setting nix) */
  nd->nix = 0;
  nd->custom = NULL;
  nd->tan_only = 0;
  nd->reach = 1;
  nd->pstale = nd->tstale = 0;
  nd->has_t = out->t != NULL;
  nd->kind = kind;
  nd->sub = sub;
  nd->axis = axis;
  nd->in0 = tp->ns;
  nd->nin = nin;
  nd->rank = out->v->rank;
  for (int i = 0; i < TN_MAX_RANK; i++) nd->shape[i] = out->v->shape[i];
  nd->aux = aux;
  for (int i = 0; i < nin; i++) {
    tp->slots[tp->ns + i].node = ins[i].node;
    tp->slots[tp->ns + i].v = ad_val_retain(ins[i]);
  }
  tp->ns += nin;
  out->node = tp->n;
  nd->out = kind == K_LEAF ? NOVAL : ad_val_retain(*out);
  tp->n++;
  if (pnd) *pnd = nd;
  return 0;
fail:
  tn_release(ctx, aux);
  if (kind != K_LEAF) ad_val_release(ctx, out);
  return -1;
}

int ad_leaf(tn_ctx *ctx, ad_tape *tp, ad_val *a) {
  if (!tp) return tn_error(ctx, "autodiff: ad_leaf needs a tape");
  if (!a || !a->v) return tn_error(ctx, "autodiff: leaf has no value");
  return record(ctx, tp, K_LEAF, 0, 0, NULL, 0, NULL, a, NULL);
}

/* ------------------------------------------------------------------------ */
/* public operations                                                        */

int ad_unary(tn_ctx *ctx, ad_tape *tape, tn_unary_op op, ad_val a, ad_val *out) {
  int rec;
  *out = NOVAL;
  if (prep(ctx, tape, &a, 1, &rec) || d_unary(ctx, op, a, out)) return -1;
  if (rec && unary_diff(op)) return record(ctx, tape, K_UNARY, op, 0, &a, 1, NULL, out, NULL);
  if (rec) tape->bound = 1; /* a constant (sign, step, ..) computed from the point */
  return 0;
}

int ad_binary(tn_ctx *ctx, ad_tape *tape, tn_binary_op op, ad_val a, ad_val b, ad_val *out) {
  ad_val in[2] = {a, b};
  int rec;
  *out = NOVAL;
  /* a ^ 2 with a constant scalar 2 (the square loss) is square(a): one node
   * and one kernel instead of pow and the partials of pow (b a^(b-1), and
   * their tangents), with the same values */
  if (op == TN_POW && a.v && b.v && !b.t && (!tape || b.node < 0) && b.v->size == 1 && b.v->rank <= a.v->rank &&
      b.v->data[0] == 2.0)
    return ad_unary(ctx, tape, TN_SQUARE, a, out);
  if (prep(ctx, tape, in, 2, &rec) || d_binary(ctx, op, a, b, out)) return -1;
  if (rec && binary_diff(op)) return record(ctx, tape, K_BINARY, op, 0, in, 2, NULL, out, NULL);
  if (rec) tape->bound = 1; /* a comparison of the point: a constant mask */
  return 0;
}

int ad_matmul(tn_ctx *ctx, ad_tape *tape, ad_val a, ad_val b, ad_val *out) {
  return ad_matmul_t(ctx, tape, a, 0, b, 0, out);
}

/* The node keeps the flags in sub (bit 0: a transposed, bit 1: b). */
int ad_matmul_t(tn_ctx *ctx, ad_tape *tape, ad_val a, int ta, ad_val b, int tb, ad_val *out) {
  ad_val in[2] = {a, b};
  int rec;
  *out = NOVAL;
  if (!a.v || !b.v) return tn_error(ctx, "autodiff: operand has no value");
  ta = ta && a.v->rank >= 2;
  tb = tb && b.v->rank >= 2;
  if (prep(ctx, tape, in, 2, &rec) || d_matmul_t(ctx, a, ta, b, tb, out)) return -1;
  if (rec) return record(ctx, tape, K_MATMUL, ta | tb << 1, 0, in, 2, NULL, out, NULL);
  return 0;
}

int ad_transpose(tn_ctx *ctx, ad_tape *tape, ad_val a, ad_val *out) {
  int rec;
  *out = NOVAL;
  if (prep(ctx, tape, &a, 1, &rec) || d_transpose(ctx, a, out)) return -1;
  if (rec) return record(ctx, tape, K_TRANSPOSE, 0, 0, &a, 1, NULL, out, NULL);
  return 0;
}

int ad_reduce(tn_ctx *ctx, ad_tape *tape, tn_reduce_op op, ad_val a, int axis, ad_val *out) {
  int rec;
  *out = NOVAL;
  if (prep(ctx, tape, &a, 1, &rec) || d_reduce(ctx, op, a, axis, out)) return -1;
  if (rec && reduce_diff(op)) return record(ctx, tape, K_REDUCE, op, axis, &a, 1, NULL, out, NULL);
  if (rec) tape->bound = 1; /* argmax/argmin of the point */
  return 0;
}

int ad_softmax(tn_ctx *ctx, ad_tape *tape, ad_val a, int axis, ad_val *out) {
  int rec;
  *out = NOVAL;
  if (prep(ctx, tape, &a, 1, &rec) || d_softmax(ctx, a, axis, out)) return -1;
  if (rec) return record(ctx, tape, K_SOFTMAX, 0, axis, &a, 1, NULL, out, NULL);
  return 0;
}

int ad_reshape(tn_ctx *ctx, ad_tape *tape, ad_val a, int rank, const size_t *shape, ad_val *out) {
  int rec;
  *out = NOVAL;
  if (prep(ctx, tape, &a, 1, &rec) || d_reshape(ctx, a, rank, shape, out)) return -1;
  if (rec) return record(ctx, tape, K_RESHAPE, 0, 0, &a, 1, NULL, out, NULL);
  return 0;
}

static int join(tn_ctx *ctx, ad_tape *tape, const ad_val *as, int n, int axis, int is_stack, ad_val *out) {
  int rec;
  *out = NOVAL;
  if (n <= 0 || !as) return tn_error(ctx, "%s of no tensors", is_stack ? "stack" : "concat");
  if (prep(ctx, tape, as, n, &rec)) return -1;
  if (axis < 0) axis += as[0].v->rank + (is_stack ? 1 : 0); /* Python-style negative axis */
  if (axis < 0) return tn_error(ctx, "%s: axis out of range", is_stack ? "stack" : "concat");
  if (d_join(ctx, as, n, axis, is_stack, out)) return -1;
  if (rec) return record(ctx, tape, is_stack ? K_STACK : K_CONCAT, 0, axis, as, n, NULL, out, NULL);
  return 0;
}

int ad_concat(tn_ctx *ctx, ad_tape *tape, const ad_val *as, int n, int axis, ad_val *out) {
  return join(ctx, tape, as, n, axis, 0, out);
}

int ad_stack(tn_ctx *ctx, ad_tape *tape, const ad_val *as, int n, int axis, ad_val *out) {
  return join(ctx, tape, as, n, axis, 1, out);
}

int ad_index(tn_ctx *ctx, ad_tape *tape, ad_val a, const tn_index_t *ix, int nix, ad_val *out) {
  int rec;
  ad_node *nd;
  *out = NOVAL;
  if (nix < 0 || nix > TN_MAX_RANK || (nix > 0 && !ix))
    return tn_error(ctx, "index: %d subscripts (at most %d)", nix, TN_MAX_RANK);
  if (prep(ctx, tape, &a, 1, &rec) || d_index(ctx, a, ix, nix, out)) return -1;
  if (rec) {
    if (record(ctx, tape, K_INDEX, 0, 0, &a, 1, NULL, out, &nd)) return -1;
    nd->nix = nix;
    for (int i = 0; i < nix; i++) nd->ix[i] = ix[i];
  }
  return 0;
}

int ad_take(tn_ctx *ctx, ad_tape *tape, ad_val a, const blo_tensor *idx, int axis, ad_val *out) {
  int rec;
  *out = NOVAL;
  if (!idx) return tn_error(ctx, "take: no index");
  if (prep(ctx, tape, &a, 1, &rec) || d_take(ctx, a, idx, axis, out)) return -1;
  if (rec) {
    /* private copy: the caller may reuse its index buffer before backward */
    blo_tensor *cp = tn_copy(ctx, idx);
    if (!cp) { ad_val_release(ctx, out); return -1; }
    return record(ctx, tape, K_TAKE, 0, axis, &a, 1, cp, out, NULL);
  }
  return 0;
}

int ad_linsolve(tn_ctx *ctx, ad_tape *tape, ad_val A, ad_val b, ad_val *out) {
  ad_val in[2] = {A, b};
  int rec;
  *out = NOVAL;
  if (prep(ctx, tape, in, 2, &rec) || d_linsolve(ctx, A, b, out)) return -1;
  if (rec) return record(ctx, tape, K_LINSOLVE, 0, 0, in, 2, NULL, out, NULL);
  return 0;
}

int ad_conv2d(tn_ctx *ctx, ad_tape *tape, ad_val x, ad_val w, const tn_conv_opt *o, ad_val *out) {
  ad_val in[2] = {x, w};
  size_t prm[6] = {o->sh, o->sw, o->ph, o->pw, 0, 0};
  int rec;
  ad_node *nd;
  *out = NOVAL;
  if (prep(ctx, tape, in, 2, &rec) || d_conv(ctx, CV_F, x, w, prm, out)) return -1;
  if (rec) {
    if (record(ctx, tape, K_CONV, CV_F, 0, in, 2, NULL, out, &nd)) return -1;
    memcpy(nd->prm, prm, sizeof prm);
  }
  return 0;
}

static int pool(tn_ctx *ctx, ad_tape *tape, int kind, ad_val x, size_t kh, size_t kw, const tn_conv_opt *o,
                ad_val *out) {
  size_t prm[6] = {kh, kw, o->sh, o->sw, 0, 0};
  int rec;
  ad_node *nd;
  *out = NOVAL;
  if (o->ph || o->pw) return tn_error(ctx, "%s: no padding", kind == PL_MAX ? "maxpool2d" : "avgpool2d");
  if (prep(ctx, tape, &x, 1, &rec) || d_pool(ctx, kind, x, prm, out)) return -1;
  if (rec) {
    if (record(ctx, tape, K_POOL, kind, 0, &x, 1, NULL, out, &nd)) return -1;
    memcpy(nd->prm, prm, sizeof prm);
  }
  return 0;
}

int ad_maxpool2d(tn_ctx *ctx, ad_tape *tape, ad_val x, size_t kh, size_t kw, const tn_conv_opt *o, ad_val *out) {
  return pool(ctx, tape, PL_MAX, x, kh, kw, o, out);
}

int ad_avgpool2d(tn_ctx *ctx, ad_tape *tape, ad_val x, size_t kh, size_t kw, const tn_conv_opt *o, ad_val *out) {
  return pool(ctx, tape, PL_AVG, x, kh, kw, o, out);
}

int ad_cross_entropy(tn_ctx *ctx, ad_tape *tape, ad_val z, ad_val p, ad_val *out) {
  ad_val in[2] = {z, p};
  int rec;
  *out = NOVAL;
  if (prep(ctx, tape, in, 2, &rec) || d_xent(ctx, z, p, out)) return -1;
  if (rec) return record(ctx, tape, K_XENT, 0, 0, in, 2, NULL, out, NULL);
  return 0;
}

int ad_detach(tn_ctx *ctx, ad_val a, ad_val *out) {
  *out = NOVAL;
  if (!a.v) return tn_error(ctx, "autodiff: operand has no value");
  out->v = tn_retain(a.v);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* recomputation on demand: new tangents (ad_retangent), moved leaves      */
/* (ad_set_leaf)                                                            */

/* *dy = J(x.v) x.t through the host's jvp callback (y = f(x.v)) */
static int custom_jvp(tn_ctx *ctx, const ad_custom *op, ad_val x, const blo_tensor *y, blo_tensor **dy) {
  *dy = NULL;
  if (!op->jvp) return tn_error(ctx, "%s() has no forward-mode derivative (no jvp callback)", op->name);
  blo_tensor *d = tn_zeros_like(ctx, y);
  if (!d || op->jvp(ctx, op->ud, x.v, y, x.t, d)) {
    tn_release(ctx, d);
    return -1;
  }
  *dy = d;
  return 0;
}

/* The node's operation on the duals in[]: its value, and its tangent where
 * an input has one. */
static int node_dual(tn_ctx *ctx, const ad_node *nd, const ad_val *in, ad_val *o) {
  switch (nd->kind) {
  case K_UNARY: return d_unary(ctx, (tn_unary_op)nd->sub, in[0], o);
  case K_BINARY: return d_binary(ctx, (tn_binary_op)nd->sub, in[0], in[1], o);
  case K_MATMUL: return d_matmul_t(ctx, in[0], nd->sub & 1, in[1], nd->sub >> 1 & 1, o);
  case K_TRANSPOSE: return d_transpose(ctx, in[0], o);
  case K_REDUCE: return d_reduce(ctx, (tn_reduce_op)nd->sub, in[0], nd->axis, o);
  case K_SOFTMAX: return d_softmax(ctx, in[0], nd->axis, o);
  case K_RESHAPE: return d_reshape(ctx, in[0], nd->rank, nd->shape, o);
  case K_CONCAT: case K_STACK: return d_join(ctx, in, nd->nin, nd->axis, nd->kind == K_STACK, o);
  case K_INDEX: return d_index(ctx, in[0], nd->ix, nd->nix, o);
  case K_TAKE: return d_take(ctx, in[0], nd->aux, nd->axis, o);
  case K_LINSOLVE: return d_linsolve(ctx, in[0], in[1], o);
  case K_CONV: return d_conv(ctx, nd->sub, in[0], in[1], nd->prm, o);
  case K_POOL: return d_pool(ctx, nd->sub, in[0], nd->prm, o);
  case K_XENT: return d_xent(ctx, in[0], in[1], o);
  default:
    *o = NOVAL;
    return tn_error(ctx, "autodiff: cannot recompute node kind %d", nd->kind);
  }
}

/* Products (matmul, elementwise mul, convolution): the tangent and the VJP
 * into one operand read only the other operand. */
static int is_bilinear(const ad_node *nd) {
  return nd->kind == K_MATMUL || nd->kind == K_CONV || (nd->kind == K_BINARY && nd->sub == TN_MUL);
}

/* Operations whose tangent and VJP read no value of their inputs, only
 * shapes: the tangent is the operation applied to the tangents. */
static int is_linear(const ad_node *nd) {
  switch (nd->kind) {
  case K_UNARY: return nd->sub == TN_NEG;
  case K_BINARY: return nd->sub == TN_ADD || nd->sub == TN_SUB;
  case K_REDUCE: return nd->sub == TN_SUM || nd->sub == TN_MEAN;
  case K_TRANSPOSE: case K_RESHAPE: case K_INDEX: case K_TAKE: case K_CONCAT: case K_STACK: return 1;
  case K_POOL: return nd->sub == PL_AVG;
  default: return 0;
  }
}

/* The output tangent of node nd from its inputs in[] into *t (NULL: zero).
 * A product computes only its tangent terms; the other operations use their
 * dual form, whose primal part costs no more than the tangent (for the
 * linear ones it may come from stale values, and is dropped). */
static int jvp_only(tn_ctx *ctx, const ad_node *nd, const ad_val *in, blo_tensor **t) {
  ad_val o = NOVAL;
  int any_t = 0;
  *t = NULL;
  for (int k = 0; k < nd->nin; k++) any_t |= in[k].t != NULL;
  if (!any_t) return 0;
  switch (nd->kind) {
  case K_MATMUL: { /* op(a.t) op(b) + op(a) op(b.t), without op(a) op(b) */
    int fa = nd->sub & 1, fb = nd->sub >> 1 & 1;
    blo_tensor *ta = NULL, *tb = NULL;
    if (in[0].t && !(ta = tn_matmul_t(ctx, in[0].t, fa, in[1].v, fb))) return -1;
    if (in[1].t && !(tb = tn_matmul_t(ctx, in[0].v, fa, in[1].t, fb))) { tn_release(ctx, ta); return -1; }
    return tadd(ctx, ta, tb, t);
  }
  case K_CONV: { /* K(a.t, b) + K(a, b.t), without K(a, b) */
    blo_tensor *ta = NULL, *tb = NULL;
    if (in[0].t && !(ta = conv_k(ctx, nd->sub, in[0].t, in[1].v, nd->prm))) return -1;
    if (in[1].t && !(tb = conv_k(ctx, nd->sub, in[0].v, in[1].t, nd->prm))) { tn_release(ctx, ta); return -1; }
    return tadd(ctx, ta, tb, t);
  }
  case K_SOFTMAX: { /* J(s) a.t at the current s */
    ad_val j;
    if (softmax_jac(ctx, ad_const(nd->out.v), ad_const(in[0].t), nd->axis, &j)) return -1;
    *t = j.v;
    return 0;
  }
  case K_CUSTOM: return custom_jvp(ctx, nd->custom, in[0], nd->out.v, t);
  default:
    if (node_dual(ctx, nd, in, &o)) return -1;
    *t = o.t;
    o.t = NULL;
    ad_val_release(ctx, &o);
    return 0;
  }
}

static void set_tensor(tn_ctx *ctx, blo_tensor **slot, blo_tensor *t) {
  tn_retain(t);
  tn_release(ctx, *slot);
  *slot = t;
}

/* The input slots of nd take their producers' current value and tangent (a
 * leaf that never moved keeps the value it was recorded with). */
static void sync_slots(tn_ctx *ctx, ad_tape *tp, const ad_node *nd) {
  ad_slot *s = &tp->slots[nd->in0];
  for (int k = 0; k < nd->nin; k++) {
    if (s[k].node < 0) continue;
    const ad_node *p = &tp->nodes[s[k].node];
    if (p->out.v && p->out.v != s[k].v.v) set_tensor(ctx, &s[k].v.v, p->out.v);
    if (p->out.t != s[k].v.t) set_tensor(ctx, &s[k].v.t, p->out.t);
  }
}

enum { W_P = 1, W_T = 2 };   /* a node's value, its tangent */

static int stale_bits(const ad_node *nd, int w) {
  return ((w & W_P) && nd->pstale ? W_P : 0) | ((w & W_T) && nd->tstale ? W_T : 0);
}

/* What computing w (W_P, W_T) of node nd needs from its input k. */
static int input_need(const ad_tape *tp, const ad_node *nd, const ad_slot *s, int k, int w) {
  int u = w & W_P ? W_P : 0, ht = slot_has_t(tp, &s[k]);
  if (!(w & W_T)) return u;
  if (is_linear(nd)) return u | (ht ? W_T : 0);
  if (is_bilinear(nd)) return u | (ht ? W_T : 0) | (slot_has_t(tp, &s[1 - k]) ? W_P : 0);
  return u | W_P | (ht ? W_T : 0);
}

/* Computes w of node j from its (current) inputs. */
static int recompute(tn_ctx *ctx, ad_tape *tp, int j, int w) {
  ad_node *nd = &tp->nodes[j];
  const ad_slot *s = &tp->slots[nd->in0];
  blo_tensor *hold;
  ad_val buf[TMP_N], o;
  sync_slots(ctx, tp, nd);
  ad_val *in = tmp_items(ctx, buf, nd->nin, sizeof *buf, &hold);
  if (!in) return -1;
  for (int k = 0; k < nd->nin; k++) in[k] = w & W_T ? s[k].v : ad_const(s[k].v.v);
  int rc;
  if (w & W_P) { /* the dual form gives the tangent too when it is wanted */
    rc = node_dual(ctx, nd, in, &o);
    if (rc == 0) {
      tn_release(ctx, nd->out.v);
      nd->out.v = o.v;
      nd->pstale = 0;
      if (w & W_T) {
        tn_release(ctx, nd->out.t);
        nd->out.t = o.t;
        nd->tstale = 0;
      } else {
        tn_release(ctx, o.t);
      }
    }
  } else {
    blo_tensor *t;
    rc = jvp_only(ctx, nd, in, &t);
    if (rc == 0) {
      tn_release(ctx, nd->out.t);
      nd->out.t = t;
      nd->tstale = 0;
    }
  }
  tn_release(ctx, hold);
  return rc;
}

/* Makes w of node root current, computing first what it needs (a
 * depth-first walk on an explicit stack: a long tape must not overflow the
 * C stack).  Every entry's inputs have smaller ids, so the depth is at most
 * the tape's length. */
static int ensure(tn_ctx *ctx, ad_tape *tp, int root, int what) {
  if (!stale_bits(&tp->nodes[root], what)) return 0;
  if (tp->n > INT_MAX / 4 - 1) return tn_error(ctx, "autodiff tape too large");
  if (tp->stkcap < tp->n + 1) {
    int *p = grow(ctx, tp, tp->stk, &tp->stkcap, tp->n + 1, sizeof *p);
    if (!p) return -1;
    tp->stk = p;
  }
  int sp = 0;
  tp->stk[sp++] = root * 4 + what;
  while (sp > 0) {
    int j = tp->stk[sp - 1] / 4;
    ad_node *nd = &tp->nodes[j];
    int w = stale_bits(nd, tp->stk[sp - 1] % 4);
    /* a nonlinear tangent is computed with the value, by the dual form */
    if ((w & W_T) && nd->pstale && !is_linear(nd) && !is_bilinear(nd)) w |= W_P;
    if (!w) {
      sp--;
      continue;
    }
    const ad_slot *s = &tp->slots[nd->in0];
    int pushed = 0;
    for (int k = 0; k < nd->nin && !pushed; k++) {
      int u = s[k].node >= 0 ? input_need(tp, nd, s, k, w) : 0;
      if (u && stale_bits(&tp->nodes[s[k].node], u)) {
        tp->stk[sp++] = s[k].node * 4 + u;
        pushed = 1;
      }
    }
    if (pushed) continue;
    sp--;
    if (recompute(ctx, tp, j, w)) return -1;
  }
  return 0;
}

/* Before node i's VJP on a lazy tape: what its rule reads is made current,
 * and its input slots are synced.  Linear rules read only shapes; a product
 * (matmul, mul) reads the other operand's value (and, for a full dual
 * adjoint, its tangent); the square's rule into a tangent-only input reads only that
 * input's tangent (see vjp); the others read their inputs and output. */
static int prepare_vjp(tn_ctx *ctx, ad_tape *tp, int i) {
  ad_node *nd = &tp->nodes[i];
  const ad_slot *s = &tp->slots[nd->in0];
  const int TO = nd->tan_only, full = TO ? W_P : W_P | W_T;
  if (!is_linear(nd)) {
    if (is_bilinear(nd)) {
      for (int k = 0; k < 2; k++)
        if (s[k].node >= 0 && s[1 - k].node >= 0 && ensure(ctx, tp, s[k].node, full)) return -1;
    } else if (nd->kind == K_UNARY && nd->sub == TN_SQUARE && !TO && !tp->adj[i].t && s[0].node >= 0 &&
               tp->nodes[s[0].node].tan_only) {
      if (ensure(ctx, tp, s[0].node, W_T)) return -1;
    } else {
      for (int k = 0; k < nd->nin; k++)
        if (s[k].node >= 0 && ensure(ctx, tp, s[k].node, full)) return -1;
      if (ensure(ctx, tp, i, full)) return -1;
    }
  }
  sync_slots(ctx, tp, nd);
  return 0;
}

/* Leaves keep their tangent in out.t, and once moved their value in out.v. */
int ad_retangent(tn_ctx *ctx, ad_tape *tp, int nleaf, const int *leaves, blo_tensor *const *tangents) {
  if (!tp) return tn_error(ctx, "autodiff: replay needs a tape");
  for (int k = 0; k < nleaf; k++) {
    int id = leaves[k];
    if (id < 0 || id >= tp->n || tp->nodes[id].kind != K_LEAF)
      return tn_error(ctx, "autodiff: replay: node %d is not a leaf of the tape", id);
    const ad_node *nd = &tp->nodes[id];
    const blo_tensor *tg = tangents ? tangents[k] : NULL;
    if (tg && !shape_is(tg, nd->rank, nd->shape)) {
      char b1[64], b2[64];
      return tn_error(ctx, "autodiff: replay: tangent of shape %s for a leaf of shape %s",
                      tn_shape_str(tg, b1, sizeof b1), tn_shape_str_raw(nd->rank, nd->shape, b2, sizeof b2));
    }
  }
  clear_adj(ctx, tp); /* adjoints of the last sweep may hold the old tangents */
  for (int i = 0; i < tp->n; i++)
    if (tp->nodes[i].kind == K_LEAF) {
      set_tensor(ctx, &tp->nodes[i].out.t, NULL);
      tp->nodes[i].has_t = 0;
    }
  for (int k = 0; k < nleaf; k++) {
    ad_node *nd = &tp->nodes[leaves[k]];
    blo_tensor *tg = tangents ? tangents[k] : NULL;
    set_tensor(ctx, &nd->out.t, tg);
    nd->has_t = tg != NULL;
  }
  for (int i = 0; i < tp->n; i++) {
    ad_node *nd = &tp->nodes[i];
    if (nd->kind == K_LEAF) continue;
    const ad_slot *s = &tp->slots[nd->in0];
    int ht = 0;
    for (int k = 0; k < nd->nin && !ht; k++) ht = slot_has_t(tp, &s[k]);
    nd->has_t = (unsigned char)ht;
    nd->tstale = (unsigned char)ht;
    if (!ht) set_tensor(ctx, &nd->out.t, NULL);
  }
  tp->lazy = 1;
  return 0;
}

void ad_tape_bind(ad_tape *tp) {
  if (tp) tp->bound = 1;
}

int ad_tape_movable(const ad_tape *tp) { return tp && !tp->bound; }

int ad_set_leaf(tn_ctx *ctx, ad_tape *tp, int leaf, blo_tensor *v) {
  if (!tp) return tn_error(ctx, "autodiff: no tape");
  if (tp->bound)
    return tn_error(ctx, "autodiff: this recording depends on its point beyond its operations (a comparison, "
                         "argmax, a value read by the script, a host function) and cannot be moved");
  if (leaf < 0 || leaf >= tp->n || tp->nodes[leaf].kind != K_LEAF)
    return tn_error(ctx, "autodiff: node %d is not a leaf of the tape", leaf);
  ad_node *lf = &tp->nodes[leaf];
  if (!v || !shape_is(v, lf->rank, lf->shape)) {
    char b1[64] = "nothing", b2[64];
    if (v) tn_shape_str(v, b1, sizeof b1);
    return tn_error(ctx, "autodiff: a leaf of shape %s cannot move to %s",
                    tn_shape_str_raw(lf->rank, lf->shape, b2, sizeof b2), b1);
  }
  clear_adj(ctx, tp);
  if (!tp->lazy) { /* the recording's own tangents go: ad_retangent gives new ones */
    for (int i = 0; i < tp->n; i++) {
      set_tensor(ctx, &tp->nodes[i].out.t, NULL);
      tp->nodes[i].has_t = tp->nodes[i].tstale = 0;
    }
    tp->lazy = 1;
  }
  set_tensor(ctx, &lf->out.v, v);
  for (int i = leaf + 1; i < tp->n; i++) {
    ad_node *nd = &tp->nodes[i];
    if (nd->kind == K_LEAF) continue;
    const ad_slot *s = &tp->slots[nd->in0];
    int dirty = 0;
    for (int k = 0; k < nd->nin && !dirty; k++)
      dirty = s[k].node == leaf || (s[k].node >= 0 && tp->nodes[s[k].node].pstale);
    if (dirty) {
      nd->pstale = 1;
      nd->tstale = nd->has_t;
    }
  }
  return 0;
}

int ad_value(tn_ctx *ctx, ad_tape *tp, int node, blo_tensor **out) {
  *out = NULL;
  if (!tp || node < 0 || node >= tp->n) return tn_error(ctx, "autodiff: no tape node %d", node);
  ad_node *nd = &tp->nodes[node];
  if (nd->kind == K_LEAF && !nd->out.v) { /* never moved: the value it was recorded with */
    for (int i = 0; i < tp->ns; i++)
      if (tp->slots[i].node == node) return (*out = tn_retain(tp->slots[i].v.v)) ? 0 : -1;
    return tn_error(ctx, "autodiff: leaf %d is used by no operation", node);
  }
  if (ensure(ctx, tp, node, W_P)) return -1;
  *out = tn_retain(nd->out.v);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* reverse sweep                                                            */

/* adj[node] += c (dual), taking ownership of c.  Accumulates in place when the
 * adjoint buffer is not shared.  from_to: c comes from a tangent-only node
 * (its tangent part is in c->v already); a full dual c going to a
 * tangent-only node keeps only its tangent part. */
static int acc(tn_ctx *ctx, ad_tape *tp, int from_to, int node, ad_val *c) {
  ad_val *d = &tp->adj[node];
  c->node = -1;
  if (tp->nodes[node].tan_only && !from_to) {
    tn_release(ctx, c->v);
    c->v = c->t;
    c->t = NULL;
    if (!c->v) return 0; /* zero tangent: nothing to add */
  }
  if (!d->v) {
    *d = *c;
    *c = NOVAL;
    return 0;
  }
  int rc = -1;
  if (!tn_same_shape(d->v, c->v)) {
    char b1[64], b2[64];
    tn_error(ctx, "autodiff: adjoint shape %s does not match %s", tn_shape_str(c->v, b1, sizeof b1),
             tn_shape_str(d->v, b2, sizeof b2));
    goto done;
  }
  if (d->v->refcount == 1) {
    if (tn_axpy_inplace(ctx, 1.0, c->v, d->v)) goto done;
  } else {
    blo_tensor *s = tn_binary(ctx, TN_ADD, d->v, c->v);
    if (!s) goto done;
    tn_release(ctx, d->v);
    d->v = s;
  }
  if (c->t) {
    if (!d->t) {
      d->t = c->t;
      c->t = NULL;
    } else if (d->t->refcount == 1) {
      if (tn_axpy_inplace(ctx, 1.0, c->t, d->t)) goto done;
    } else {
      blo_tensor *s = tn_binary(ctx, TN_ADD, d->t, c->t);
      if (!s) goto done;
      tn_release(ctx, d->t);
      d->t = s;
    }
  }
  rc = 0;
done:
  ad_val_release(ctx, c);
  return rc;
}

/* acc after summing c down to the shape of the input (broadcast ops) */
static int acc_to(tn_ctx *ctx, ad_tape *tp, int from_to, int node, const blo_tensor *like, ad_val *c) {
  ad_val s;
  int rc = d_sum_to(ctx, *c, like->rank, like->shape, &s);
  ad_val_release(ctx, c);
  if (rc) return -1;
  return acc(ctx, tp, from_to, node, &s);
}

/* full-slice spec for axes before `axis`; entry `axis` is set by the caller */
static void lead_slices(tn_index_t *ix, const blo_tensor *t, int axis) {
  for (int i = 0; i < axis; i++) {
    ix[i].kind = TN_IX_SLICE;
    ix[i].start = 0;
    ix[i].stop = (long)t->shape[i];
  }
}

static int custom_vjp(tn_ctx *ctx, ad_tape *tp, const ad_node *nd, const ad_slot *s, ad_val g);  /* K_CUSTOM */

/* Applies node i's VJP to its adjoint g, accumulating into its inputs. */
static int vjp(tn_ctx *ctx, ad_tape *tp, int i) {
  const ad_node *nd = &tp->nodes[i];
  const ad_slot *s = &tp->slots[nd->in0];
  /* A tangent-only node (TO) holds the tangent of its adjoint as g.v; its
   * VJP is then the plain (first-order) VJP of that tangent, on tangent-free
   * copies of the saved duals: the second-order term is known to vanish. */
  const int TO = nd->tan_only;
  const ad_val g = tp->adj[i], z = TO ? ad_const(nd->out.v) : nd->out;
  ad_val c = NOVAL, p = NOVAL, q = NOVAL, r = NOVAL;
  int rc = -1;
#define IN(k) (TO ? ad_const(s[k].v.v) : s[k].v)

#define NEED(k) (s[k].node >= 0)
#define TRY(x) do { if (x) goto done; } while (0)
  switch (nd->kind) {
  case K_UNARY: { /* [a] -> [a]: g_a = g * f'(a), f' a dual of a */
    const ad_val a = IN(0);
    if (nd->sub == TN_NEG) {
      TRY(d_unary(ctx, TN_NEG, g, &c));
    } else if (nd->sub == TN_SQUARE && !TO && !g.t && s[0].node >= 0 && tp->nodes[s[0].node].tan_only) {
      /* a tangent-only input keeps 2 g a.t alone: the square loss's Hessian
       * product reads neither a (X y) nor the primal adjoint 2 g a */
      if (!a.t) break;
      TRY(mk(ctx, tn_affine(ctx, g.v, 2.0, 0.0), NULL, &p));
      TRY(mk(ctx, tn_binary(ctx, TN_MUL, p.v, a.t), NULL, &c));
      TRY(acc(ctx, tp, 1, s[0].node, &c));
      break;
    } else {
      TRY(unary_deriv(ctx, (tn_unary_op)nd->sub, a, z, &p));
      TRY(d_binary(ctx, TN_MUL, g, p, &c));
    }
    TRY(acc(ctx, tp, TO, s[0].node, &c));
    break;
  }
  case K_BINARY: { /* a, b broadcast to z: g_a = sum_to(g * dz/da, shape a), same for b */
    const tn_binary_op op = (tn_binary_op)nd->sub;
    for (int k = 0; k < 2; k++) {
      if (!NEED(k)) continue;
      if (op == TN_ADD || (op == TN_SUB && k == 0)) {
        c = dup(g);
      } else if (op == TN_SUB) {
        TRY(d_unary(ctx, TN_NEG, g, &c));
      } else {
        TRY(bin_partial(ctx, op, k, IN(0), IN(1), z, &p));
        TRY(d_binary(ctx, TN_MUL, g, p, &c));
        ad_val_release(ctx, &p);
      }
      TRY(acc_to(ctx, tp, TO, s[k].node, s[k].v.v, &c));
    }
    break;
  }
  case K_MATMUL: { /* z = A @ B with A = op(a), B = op(b) (flags in sub).  The
                    * transposes below are BLAS flags (tn_matmul_t): no n x d copy. */
    const ad_val a = IN(0), b = IN(1);
    const int ra = a.v->rank, rb = b.v->rank, fa = nd->sub & 1, fb = (nd->sub >> 1) & 1;
    /* batched ([B,m,k] or [m,k] @ [B,k,n] or [k,n], one operand of rank 3): the
     * matrix rules per batch element, the transposes acting on the last two
     * axes; the gradient of a rank-2 operand shared by every batch element is
     * the sum over B of the per-element ones (acc_to sums the leading axis) */
    const int bat = ra == 3 || rb == 3;
    if (NEED(0)) {
      if ((ra == 2 && rb == 2) || bat) { /* [m,k]@[k,n]: g_A = g @ B'; g_a = g_A, or B @ g' when fa */
        TRY(fa ? d_matmul_t(ctx, b, fb, g, 1, &c) : d_matmul_t(ctx, g, 0, b, !fb, &c));
      } else if (ra == 2) {     /* [m,k]@[k]: g_A = outer(g [m], b [k]); g_a = outer(b, g) when fa */
        TRY(fa ? d_outer(ctx, b, g, &c) : d_outer(ctx, g, b, &c));
      } else if (rb == 2) {     /* [k]@[k,n]: g_a = B [k,n] @ g [n] */
        TRY(d_matmul_t(ctx, b, fb, g, 0, &c));
      } else {                  /* [k]@[k]: g_a = g (scalar) * b */
        TRY(d_binary(ctx, TN_MUL, g, b, &c));
      }
      TRY(bat && ra < 3 ? acc_to(ctx, tp, TO, s[0].node, a.v, &c) : acc(ctx, tp, TO, s[0].node, &c));
    }
    if (NEED(1)) {
      if ((ra == 2 && rb == 2) || bat) { /* g_B = A' @ g; g_b = g_B, or g' @ A when fb */
        TRY(fb ? d_matmul_t(ctx, g, 1, a, fa, &c) : d_matmul_t(ctx, a, !fa, g, 0, &c));
      } else if (ra == 2) {     /* [m,k]@[k]: g_b = A' [k,m] @ g (one dgemv, transposed when !fa) */
        TRY(d_matmul_t(ctx, a, !fa, g, 0, &c));
      } else if (rb == 2) {     /* [k]@[k,n]: g_B = outer(a [k], g [n]); g_b = outer(g, a) when fb */
        TRY(fb ? d_outer(ctx, g, a, &c) : d_outer(ctx, a, g, &c));
      } else {                  /* [k]@[k]: g_b = g * a */
        TRY(d_binary(ctx, TN_MUL, g, a, &c));
      }
      TRY(bat && rb < 3 ? acc_to(ctx, tp, TO, s[1].node, b.v, &c) : acc(ctx, tp, TO, s[1].node, &c));
    }
    break;
  }
  case K_TRANSPOSE: /* transpose is an involution on every rank: g_a = g' */
    TRY(d_transpose(ctx, g, &c));
    TRY(acc(ctx, tp, TO, s[0].node, &c));
    break;
  case K_REDUCE: { /* z = red(a, axis): g_a = w(a) * unsqueeze(g), w = dz/da */
    const ad_val a = IN(0);
    const tn_reduce_op op = (tn_reduce_op)nd->sub;
    TRY(d_unsq(ctx, g, a.v, nd->axis, &p));
    if (op == TN_SUM || op == TN_MEAN) {
      if (op == TN_MEAN) { /* 1/N with N the count of reduced elements */
        double nred = nd->axis < 0 ? (double)a.v->size : (double)a.v->shape[nd->axis];
        TRY(d_affine(ctx, p, nred > 0 ? 1.0 / nred : 0.0, 0.0, &q));
        ad_val_release(ctx, &p);
        p = q;
        q = NOVAL;
      }
      TRY(d_broadcast_to(ctx, p, a.v->rank, a.v->shape, &c));
    } else {
      TRY(reduce_weight(ctx, op, a, z, nd->axis, &q));
      TRY(d_binary(ctx, TN_MUL, q, p, &c));
    }
    TRY(acc(ctx, tp, TO, s[0].node, &c));
    break;
  }
  case K_SOFTMAX: /* g_a = s * (g - sum(g * s, axis)), s the dual output */
    TRY(softmax_jac(ctx, z, g, nd->axis, &c));
    TRY(acc(ctx, tp, TO, s[0].node, &c));
    break;
  case K_RESHAPE: /* g_a = reshape(g, shape a) */
    TRY(d_reshape(ctx, g, s[0].v.v->rank, s[0].v.v->shape, &c));
    TRY(acc(ctx, tp, TO, s[0].node, &c));
    break;
  case K_CONCAT: { /* g_k = g[..., off_k : off_k + n_k, ...] along axis */
    tn_index_t ix[TN_MAX_RANK];
    long off = 0;
    lead_slices(ix, g.v, nd->axis);
    for (int k = 0; k < nd->nin; k++) {
      long nk = (long)s[k].v.v->shape[nd->axis];
      if (NEED(k)) {
        ix[nd->axis].kind = TN_IX_SLICE;
        ix[nd->axis].start = off;
        ix[nd->axis].stop = off + nk;
        TRY(d_index(ctx, g, ix, nd->axis + 1, &c));
        TRY(acc(ctx, tp, TO, s[k].node, &c));
      }
      off += nk;
    }
    break;
  }
  case K_STACK: { /* g_k = g[..., k, ...] (new axis dropped) */
    tn_index_t ix[TN_MAX_RANK];
    lead_slices(ix, g.v, nd->axis);
    for (int k = 0; k < nd->nin; k++) {
      if (!NEED(k)) continue;
      ix[nd->axis].kind = TN_IX_INDEX;
      ix[nd->axis].start = k;
      ix[nd->axis].stop = k + 1;
      TRY(d_index(ctx, g, ix, nd->axis + 1, &c));
      TRY(acc(ctx, tp, TO, s[k].node, &c));
    }
    break;
  }
  case K_INDEX: /* g_a = zeros(shape a); g_a[ix] += g */
    TRY(d_scatter(ctx, g, nd->ix, nd->nix, s[0].v.v->rank, s[0].v.v->shape, &c));
    TRY(acc(ctx, tp, TO, s[0].node, &c));
    break;
  case K_TAKE: /* g_a = zeros(shape a); g_a[idx] += g (repeats accumulate) */
    TRY(d_take_scatter(ctx, g, nd->aux, nd->axis, s[0].v.v->rank, s[0].v.v->shape, &c));
    TRY(acc(ctx, tp, TO, s[0].node, &c));
    break;
  case K_LINSOLVE: { /* x = A^{-1} b: g_b = A^{-T} g; g_A = -g_b x' (outer for b [n]) */
    const ad_val A = IN(0), x = z;
    TRY(d_transpose(ctx, A, &p));
    TRY(d_linsolve(ctx, p, g, &q));       /* g_b, dual */
    ad_val_release(ctx, &p);
    if (NEED(0)) {
      if (x.v->rank == 1) {
        TRY(d_outer(ctx, q, x, &r));
      } else {
        TRY(d_transpose(ctx, x, &p));
        TRY(d_matmul(ctx, q, p, &r));
      }
      TRY(d_unary(ctx, TN_NEG, r, &c));
      TRY(acc(ctx, tp, TO, s[0].node, &c));
    }
    if (NEED(1)) TRY(acc(ctx, tp, TO, s[1].node, &q));
    break;
  }
  case K_CONV: { /* bilinear K(a, b): each VJP is another of the three kernels
                  * on the adjoint and the other operand (duals: second order) */
    const ad_val a = IN(0), b = IN(1);
    size_t prm[6];
    memcpy(prm, nd->prm, sizeof prm);
    if (NEED(0)) {
      if (nd->sub == CV_F) {          /* y = F(x, w): g_x = BX(g, w) at x's size */
        prm[4] = a.v->shape[2]; prm[5] = a.v->shape[3];
        TRY(d_conv(ctx, CV_BX, g, b, prm, &c));
      } else if (nd->sub == CV_BX) {  /* z = BX(g0, w): g_g0 = F(u, w) */
        TRY(d_conv(ctx, CV_F, g, b, prm, &c));
      } else {                        /* z = BW(x, g0): g_x = BX(g0, U) at x's size */
        prm[4] = a.v->shape[2]; prm[5] = a.v->shape[3];
        TRY(d_conv(ctx, CV_BX, b, g, prm, &c));
      }
      TRY(acc(ctx, tp, TO, s[0].node, &c));
    }
    if (NEED(1)) {
      if (nd->sub == CV_F) {          /* g_w = BW(x, g) at w's kernel size */
        prm[4] = b.v->shape[2]; prm[5] = b.v->shape[3];
        TRY(d_conv(ctx, CV_BW, a, g, prm, &c));
      } else if (nd->sub == CV_BX) {  /* g_w = BW(u, g0) at w's kernel size */
        prm[4] = b.v->shape[2]; prm[5] = b.v->shape[3];
        TRY(d_conv(ctx, CV_BW, g, a, prm, &c));
      } else {                        /* g_g0 = F(x, U) */
        TRY(d_conv(ctx, CV_F, a, g, prm, &c));
      }
      TRY(acc(ctx, tp, TO, s[1].node, &c));
    }
    break;
  }
  case K_POOL: /* avg: the window mean's adjoint; max: g to the maxima of a */
    TRY(d_pool_adj(ctx, nd->sub, IN(0), g, nd->prm, &c));
    TRY(acc(ctx, tp, TO, s[0].node, &c));
    break;
  case K_XENT: /* scalar L(z, p): g_z = g dL/dz, g_p = g dL/dp (duals) */
    for (int k = 0; k < 2; k++) {
      if (!NEED(k)) continue;
      TRY(xent_partial(ctx, k, IN(0), IN(1), &p));
      TRY(d_binary(ctx, TN_MUL, g, p, &c));
      ad_val_release(ctx, &p);
      TRY(acc(ctx, tp, TO, s[k].node, &c));
    }
    break;
  case K_CUSTOM: /* host callbacks, see the end of the file */
    TRY(custom_vjp(ctx, tp, nd, s, g));
    break;
  default:
    tn_error(ctx, "autodiff: corrupt tape node %d", i);
    goto done;
  }
#undef NEED
#undef TRY
#undef IN
  rc = 0;
done:
  ad_val_release(ctx, &c);
  ad_val_release(ctx, &p);
  ad_val_release(ctx, &q);
  ad_val_release(ctx, &r);
  return rc;
}

/* Does the tangent of the adjoint that node nd sends to its input k depend on
 * the primal adjoint g.v?  Only through second-order terms: a nonlinear op
 * whose inputs carry tangents, or a bilinear one (mul, matmul) whose other
 * operand does.  Linear ops (add, sub, neg, sum, mean, reshape, transpose,
 * indexing, concat, stack) and custom ops never (their VJP of the tangent is
 * J^T g.t).  Conservative: "yes" is always safe. */
static int uses_primal_adjoint(const ad_tape *tp, const ad_node *nd, const ad_slot *s, int k) {
  if (is_linear(nd) || nd->kind == K_CUSTOM) return 0;
  if (is_bilinear(nd)) return slot_has_t(tp, &s[1 - k]);
  int any_t = nd->has_t;
  for (int j = 0; j < nd->nin; j++) any_t |= slot_has_t(tp, &s[j]);
  switch (nd->kind) {
  case K_BINARY: return nd->sub != TN_MAX2 && nd->sub != TN_MIN2 && any_t; /* their partials are masks */
  case K_UNARY: case K_REDUCE: return any_t;
  case K_POOL: return 0; /* max: a constant selection of g */
  default: return 1;
  }
}

int ad_backward(tn_ctx *ctx, ad_tape *tp, ad_val out, const blo_tensor *seed) {
  return ad_backward_ex(ctx, tp, out, seed, 1);
}

int ad_backward_ex(tn_ctx *ctx, ad_tape *tp, ad_val out, const blo_tensor *seed, int leaf_grads) {
  return ad_backward_sel(ctx, tp, out, seed, leaf_grads, NULL, 0);
}

int ad_backward_sel(tn_ctx *ctx, ad_tape *tp, ad_val out, const blo_tensor *seed, int leaf_grads,
                    const int *want, int nwant) {
  if (!tp) return tn_error(ctx, "autodiff: backward needs a tape");
  clear_adj(ctx, tp);
  if (tp->n > tp->adjcap) {
    int old = tp->adjcap;
    ad_val *p = grow(ctx, tp, tp->adj, &tp->adjcap, tp->n, sizeof *p);
    if (!p) return -1;
    tp->adj = p;
    for (int i = old; i < tp->adjcap; i++) tp->adj[i] = NOVAL;
  }
  if (!out.v) return tn_error(ctx, "autodiff: backward of a missing value");
  if (seed && !tn_same_shape(seed, out.v)) {
    char b1[64], b2[64];
    return tn_error(ctx, "backward: seed shape %s does not match output shape %s",
                    tn_shape_str(seed, b1, sizeof b1), tn_shape_str(out.v, b2, sizeof b2));
  }
  if (!seed && out.v->size != 1) { /* rank 0, or any single element ([1], [1,1]) */
    char b1[64];
    return tn_error(ctx, "backward: output of shape %s is not a scalar (give a seed)",
                    tn_shape_str(out.v, b1, sizeof b1));
  }
  for (int i = 0; i < tp->n; i++) {
    tp->nodes[i].tan_only = 0;
    tp->nodes[i].reach = !want;
  }
  for (int k = 0; k < nwant && want; k++) {
    if (want[k] < 0 || want[k] >= tp->n || tp->nodes[want[k]].kind != K_LEAF)
      return tn_error(ctx, "autodiff: backward: node %d is not a leaf of the tape", want[k]);
    tp->nodes[want[k]].reach = 1;
  }
  if (out.node < 0) return 0; /* a constant: every adjoint is zero */
  if (out.node >= tp->n)
    return tn_error(ctx, "autodiff: stale tape node %d (the tape holds %d)", out.node, tp->n);
  /* with a choice of leaves, a node no wanted leaf depends on is not swept
   * (the mixed product H_xy v skips X' u, which only reaches y) */
  if (want)
    for (int i = 0; i <= out.node; i++) {
      ad_node *nd = &tp->nodes[i];
      const ad_slot *s = &tp->slots[nd->in0];
      for (int k = 0; k < nd->nin && !nd->reach && nd->kind != K_LEAF; k++)
        nd->reach = s[k].node >= 0 && tp->nodes[s[k].node].reach;
    }
  /* Tangent-only nodes (leaf_grads == 0): a node whose primal adjoint no
   * leaf needs and no second-order term reads keeps only the tangent of its
   * adjoint and is swept by the first-order VJP alone.  For f = mean((X@w -
   * y)^2) with a tangent on w this drops X' g (one of the two dgemv of the
   * sweep) from every Hessian-vector product.  One forward pass over the
   * tape: a node is tangent-only when every input on the tape is and no
   * input's adjoint tangent reads this node's primal adjoint. */
  for (int i = 0; i <= out.node; i++) {
    ad_node *nd = &tp->nodes[i];
    int need = 0;
    if (nd->kind == K_LEAF) {
      need = leaf_grads;
    } else if (leaf_grads) {
      need = 1;
    } else {
      const ad_slot *s = &tp->slots[nd->in0];
      for (int k = 0; k < nd->nin && !need; k++)
        if (s[k].node >= 0) need = !tp->nodes[s[k].node].tan_only || uses_primal_adjoint(tp, nd, s, k);
    }
    nd->tan_only = !need;
  }
  tp->nadj = out.node + 1;
  if (tp->nodes[out.node].tan_only) return 0; /* the seed has no tangent: every adjoint tangent is zero */
  blo_tensor *sd = seed ? tn_copy(ctx, seed) : tn_new(ctx, out.v->rank, out.v->shape);
  if (!sd) return -1;
  if (!seed) sd->data[0] = 1.0;
  tp->adj[out.node].v = sd;
  for (int i = out.node; i >= 0; i--) {
    if (!tp->adj[i].v || tp->nodes[i].kind == K_LEAF || !tp->nodes[i].reach) continue;
    if ((tp->lazy && prepare_vjp(ctx, tp, i)) || vjp(ctx, tp, i)) {
      clear_adj(ctx, tp);
      return -1;
    }
  }
  return 0;
}

int ad_adjoint(tn_ctx *ctx, ad_tape *tp, int node, blo_tensor **grad, blo_tensor **tangent) {
  if (grad) *grad = NULL;
  if (tangent) *tangent = NULL;
  if (!tp || node < 0 || node >= tp->n)
    return tn_error(ctx, "autodiff: no tape node %d", node);
  const ad_node *nd = &tp->nodes[node];
  const ad_val *a = node < tp->nadj ? &tp->adj[node] : NULL;
  blo_tensor *gv = NULL, *gt = NULL;
  /* a tangent-only node (ad_backward_ex without leaf gradients) holds its
   * tangent in ->v and has no gradient: zeros */
  blo_tensor *av = a && !nd->tan_only ? a->v : NULL, *at = a ? (nd->tan_only ? a->v : a->t) : NULL;
  if (grad) {
    gv = av ? tn_retain(av) : tn_zeros(ctx, nd->rank, nd->shape);
    if (!gv) return -1;
  }
  if (tangent) {
    gt = at ? tn_retain(at) : tn_zeros(ctx, nd->rank, nd->shape);
    if (!gt) { tn_release(ctx, gv); return -1; }
  }
  if (grad) *grad = gv;
  if (tangent) *tangent = gt;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* custom operations: derivatives from host callbacks (see ad.h)            */

int ad_custom_op(tn_ctx *ctx, ad_tape *tape, const ad_custom *op, ad_val x, blo_tensor *y, ad_val *out) {
  int rec;
  *out = NOVAL;
  if (!y) return tn_error(ctx, "%s(): no result", op->name);
  if (prep(ctx, tape, &x, 1, &rec)) {
    tn_release(ctx, y);
    return -1;
  }
  blo_tensor *dy = NULL;
  if (x.t && custom_jvp(ctx, op, x, y, &dy)) {
    tn_release(ctx, y);
    return -1;
  }
  out->v = y;
  out->t = dy;
  if (!rec) return 0;
  if (!op->vjp) {
    ad_val_release(ctx, out);
    return tn_error(ctx, "%s() has no reverse-mode derivative (no vjp callback)", op->name);
  }
  ad_node *nd;
  if (record(ctx, tape, K_CUSTOM, 0, 0, &x, 1, NULL, out, &nd)) return -1;
  nd->custom = op;
  tape->bound = 1; /* the host computed y: the tape cannot recompute it elsewhere */
  return 0;
}

/* g_x = J^T g; its tangent is J^T (tangent of g), the curvature term of the
 * callbacks' function being unavailable (see ad.h). */
static int custom_vjp(tn_ctx *ctx, ad_tape *tp, const ad_node *nd, const ad_slot *s, ad_val g) {
  const ad_custom *op = nd->custom;
  if (s[0].node < 0) return 0;
  const blo_tensor *x = s[0].v.v, *y = nd->out.v;
  ad_val c = NOVAL;
  c.v = tn_zeros_like(ctx, x);
  if (!c.v || op->vjp(ctx, op->ud, x, y, g.v, c.v)) goto fail;
  if (g.t) {
    c.t = tn_zeros_like(ctx, x);
    if (!c.t || op->vjp(ctx, op->ud, x, y, g.t, c.t)) goto fail;
  }
  return acc(ctx, tp, nd->tan_only, s[0].node, &c);
fail:
  ad_val_release(ctx, &c);
  return -1;
}
