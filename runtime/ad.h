/* ad.h: automatic differentiation at tensor-operation granularity.
 *
 * One set of operations serves all three modes:
 *  - plain evaluation: tape == NULL and every tangent NULL;
 *  - forward mode: values carry a tangent (dual tensors), propagated by each
 *    operation's Jacobian-vector product;
 *  - reverse mode: with a tape, every operation whose inputs are on the tape is
 *    recorded; ad_backward() applies each operation's vector-Jacobian product.
 * The VJP rules are themselves written with these dual operations (tape off),
 * so running the reverse sweep on values that carry tangents gives
 * forward-over-reverse second-order products in one pass: seed a tangent v on
 * y, and the adjoint of x is the dual (grad_x f, H_xy v), that of y is
 * (grad_y f, H_yy v).  No dense Hessian or Jacobian is ever formed.
 *
 * Tape nodes, saved tensors and adjoints are reused across sweeps
 * (ad_tape_reset keeps the capacity; tensor buffers return to the tn_ctx pool),
 * so a steady-state gradient step makes no system allocation.
 */
#ifndef BLO_AD_H
#define BLO_AD_H

#include "tensor.h"

typedef struct ad_tape ad_tape;

/* A dual value: primal v (never NULL for a live value), tangent t (NULL means
 * zero), node = index on the tape or -1 for a constant. Holds references. */
typedef struct {
  blo_tensor *v;
  blo_tensor *t;
  int node;
} ad_val;

static inline ad_val ad_const(blo_tensor *v) { ad_val r = {v, NULL, -1}; return r; }
/* Inline: called several times per operation and per tape node, and a call
 * into ad.c cost more than the two count updates it does. */
static inline void ad_val_release(tn_ctx *ctx, ad_val *a) {  /* releases v and t, zeroes the struct */
  if (!a) return;
  tn_release(ctx, a->v);
  tn_release(ctx, a->t);
  a->v = NULL;
  a->t = NULL;
  a->node = -1; /* "no node": 0 would name a real tape entry */
}
static inline ad_val ad_val_retain(ad_val a) {               /* retains v and t, returns a */
  tn_retain(a.v);
  tn_retain(a.t);
  return a;
}

ad_tape *ad_tape_new(tn_ctx *ctx);                    /* NULL on allocation failure */
void ad_tape_free(tn_ctx *ctx, ad_tape *tape);
void ad_tape_reset(tn_ctx *ctx, ad_tape *tape);       /* drops nodes and adjoints, keeps capacity */
int ad_tape_size(const ad_tape *tape);
/* How many times the tape's own arrays (nodes, input slots, adjoints) have been
 * allocated or grown; constant in a steady-state loop (tests check this). */
size_t ad_tape_allocs(const ad_tape *tape);

/* Put a on the tape as an independent variable (sets a->node). */
int ad_leaf(tn_ctx *ctx, ad_tape *tape, ad_val *a);

/* Operations: 0 on success with a new value in *out, -1 with ctx->err set.
 * tape may be NULL (no recording).  Inputs are borrowed. */
int ad_unary(tn_ctx *ctx, ad_tape *tape, tn_unary_op op, ad_val a, ad_val *out);
int ad_binary(tn_ctx *ctx, ad_tape *tape, tn_binary_op op, ad_val a, ad_val b, ad_val *out);
/* a @ b as tn_matmul, including the batched product of rank-3 operands
 * ([B,m,k] @ [B,k,n], a rank-2 operand shared by every batch element; its
 * gradient sums over B). */
int ad_matmul(tn_ctx *ctx, ad_tape *tape, ad_val a, ad_val b, ad_val *out);
/* op(a) @ op(b), op = transpose of a rank-2 operand (of the last two axes of
 * a rank-3 one) whose flag is set: the product and its derivatives read the
 * operands transposed through BLAS flags, so a' @ b never materializes a'. */
int ad_matmul_t(tn_ctx *ctx, ad_tape *tape, ad_val a, int ta, ad_val b, int tb, ad_val *out);
int ad_transpose(tn_ctx *ctx, ad_tape *tape, ad_val a, ad_val *out);
int ad_reduce(tn_ctx *ctx, ad_tape *tape, tn_reduce_op op, ad_val a, int axis, ad_val *out);
int ad_softmax(tn_ctx *ctx, ad_tape *tape, ad_val a, int axis, ad_val *out);
int ad_reshape(tn_ctx *ctx, ad_tape *tape, ad_val a, int rank, const size_t *shape, ad_val *out);
int ad_concat(tn_ctx *ctx, ad_tape *tape, const ad_val *as, int n, int axis, ad_val *out);
int ad_stack(tn_ctx *ctx, ad_tape *tape, const ad_val *as, int n, int axis, ad_val *out);
/* ix must already be normalised by tn_index_check. */
int ad_index(tn_ctx *ctx, ad_tape *tape, ad_val a, const tn_index_t *ix, int nix, ad_val *out);
int ad_take(tn_ctx *ctx, ad_tape *tape, ad_val a, const blo_tensor *idx, int axis, ad_val *out);
int ad_linsolve(tn_ctx *ctx, ad_tape *tape, ad_val A, ad_val b, ad_val *out);
/* conv2d(x [N, C, H, W], w [O, C, kh, kw]) -> [N, O, H', W'] (tn_conv2d); bilinear,
 * like matmul: each derivative reads only the other operand. */
int ad_conv2d(tn_ctx *ctx, ad_tape *tape, ad_val x, ad_val w, const tn_conv_opt *o, ad_val *out);
/* Pooling over kh x kw windows with stride (o->sh, o->sw), no padding.  max
 * routes derivatives to the first maximum of each window, located at the
 * point the sweep reads (a moved recording follows the new maxima). */
int ad_maxpool2d(tn_ctx *ctx, ad_tape *tape, ad_val x, size_t kh, size_t kw, const tn_conv_opt *o, ad_val *out);
int ad_avgpool2d(tn_ctx *ctx, ad_tape *tape, ad_val x, size_t kh, size_t kw, const tn_conv_opt *o, ad_val *out);
/* Mean cross-entropy of logits z [N, K] against label rows p [N, K] (both
 * differentiable: learned soft labels). */
int ad_cross_entropy(tn_ctx *ctx, ad_tape *tape, ad_val z, ad_val p, ad_val *out);
/* Stops differentiation: returns the primal as a constant. */
int ad_detach(tn_ctx *ctx, ad_val a, ad_val *out);

/* Reverse sweep from out (must hold a single element, e.g. rank 0, unless seed
 * is given; seed has the shape of out.v, NULL means 1).  Afterwards ad_adjoint gives, for any node,
 * the dual adjoint (gradient, its tangent); a node that out does not depend on
 * has a zero adjoint. */
int ad_backward(tn_ctx *ctx, ad_tape *tape, ad_val out, const blo_tensor *seed);
/* ad_backward, and with leaf_grads == 0 the leaves' gradients are not wanted,
 * only the tangents of their adjoints (Hessian-vector products): then the
 * primal adjoint is computed only where a second-order term needs it, and
 * ad_adjoint returns zeros as the gradient. */
int ad_backward_ex(tn_ctx *ctx, ad_tape *tape, ad_val out, const blo_tensor *seed, int leaf_grads);
/* ad_backward_ex for the leaves want[0..nwant) only (NULL: all): nodes none
 * of them depends on are not swept, and the other leaves' adjoints are
 * unspecified (ask ad_adjoint only for the wanted ones). */
int ad_backward_sel(tn_ctx *ctx, ad_tape *tape, ad_val out, const blo_tensor *seed, int leaf_grads,
                    const int *want, int nwant);
/* New references to the adjoint of node, shaped like that node's value.
 * grad gets the gradient (zeros if none); tangent (if not NULL) gets the
 * second-order part (zeros if none). */
int ad_adjoint(tn_ctx *ctx, ad_tape *tape, int node, blo_tensor **grad, blo_tensor **tangent);

/* Replay: gives leaf node leaves[k] the tangent tangents[k] (NULL or a NULL
 * entry: zero; unlisted leaves get zero).  Node tangents are then computed
 * on demand, from the saved values, by the next sweep (ad_backward_*) and
 * only where its rules read them, without evaluating anything again.  A tape
 * recorded once at a point (tangents or not) thus yields Hessian-vector
 * products there by ad_retangent + ad_backward_ex: a product's value (X y)
 * is not recomputed, only its tangent (X v). */
int ad_retangent(tn_ctx *ctx, ad_tape *tape, int nleaf, const int *leaves, blo_tensor *const *tangents);

/* Moving a recording to another point.  A tape whose operations capture the
 * whole computation can be swept at new leaf values: ad_set_leaf gives leaf
 * node leaf the value v (same shape, retained); the nodes that depend on it
 * become stale and are recomputed on demand, only as far as later sweeps
 * and ad_value read them.  For mean((X@w - y)^2) with a tangent on w, a
 * Hessian-vector product after a move computes X v and X' u, never X w.
 * The first move drops the recording's tangents (ad_retangent gives new
 * ones); later moves keep the last ones.
 * A tape is bound to its point, and ad_set_leaf refuses it, once something
 * outside its nodes depended on the point: a zero-derivative operation of a
 * taped value (comparison, sign, argmax: a constant mask), a host operation,
 * or the caller's ad_tape_bind (a branch or an index read from a value). */
void ad_tape_bind(ad_tape *tape);
int ad_tape_movable(const ad_tape *tape);
int ad_set_leaf(tn_ctx *ctx, ad_tape *tape, int leaf, blo_tensor *v);
/* A new reference to node's value at the current leaf values. */
int ad_value(tn_ctx *ctx, ad_tape *tape, int node, blo_tensor **out);

/* ==== custom operations (native functions of the embedding API) ====
 * y = f(x) for one tensor x, with f computed by the caller and its
 * derivatives supplied as callbacks:
 *   jvp: out (shaped like y, zeroed) = J(x) in    (in shaped like x)
 *   vjp: out (shaped like x, zeroed) = J(x)^T in  (in shaped like y)
 * each returning 0, or -1 with ctx->err set (tn_error).
 * Second order (forward-over-reverse): the adjoint's tangent is J^T applied
 * to the incoming adjoint tangent; the curvature of f itself (the derivative
 * of J(x)^T g along x's tangent) is not available and is taken as zero, so
 * hvp through a custom op is exact only when f is linear in x. */
typedef int (*ad_custom_fn)(tn_ctx *ctx, void *ud, const blo_tensor *x, const blo_tensor *y,
                            const blo_tensor *in, blo_tensor *out);
typedef struct ad_custom {
  const char *name;           /* for messages: "NAME() has no reverse-mode derivative" */
  ad_custom_fn jvp, vjp;      /* NULL: that mode is refused with an error */
  void *ud;
} ad_custom;
/* Takes ownership of y (the primal f(x.v); NULL is an error).  out = y with
 * the tangent J x.t when x has a tangent, and a tape node (whose VJP calls
 * op->vjp) when x is on the tape.  op must stay valid while the tape holds
 * the node. */
int ad_custom_op(tn_ctx *ctx, ad_tape *tape, const ad_custom *op, ad_val x, blo_tensor *y, ad_val *out);

#endif
