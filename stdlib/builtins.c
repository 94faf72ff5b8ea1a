/* builtins.c: the standard library of .blo and its lookup table.
 *
 * Numeric builtins go through the autodiff layer (op_unary, ad_*), so they
 * differentiate under grad/jvp/hvp; operations without a derivative rule
 * (det, chol, eigh, pinv, lstsq) refuse arguments that are being
 * differentiated rather than silently returning a zero derivative.
 *
 * Conventions: a builtin returns EV_OK with a new reference in *out, or the
 * EV_ERR of interp_error/interp_tn_error; everything it created is released on
 * every path. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "interp.h"
#include "io.h"
#include "npy.h"
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ======================================================================
 * helpers
 * ====================================================================== */

static const char *const NO_NAMED[] = {NULL};
static const char *const AXIS_ONLY[] = {"axis", NULL};

static int type_err(blo_state *S, callargs *a, const char *name, int i, const char *want) {
  char d[96];
  v_describe(a->pos[i], d, sizeof d);
  return interp_error(S, a->call, "%s: argument %d must be %s, got %s", name, i + 1, want, d);
}

static int need_numeric(blo_state *S, callargs *a, const char *name, int i) {
  if (v_is_numeric(a->pos[i])) return EV_OK;
  return type_err(S, a, name, i, "a number or tensor");
}

static int oom(blo_state *S, callargs *a) { return interp_error(S, a->call, "out of memory"); }

/* A constant tensor result: rank 0 comes back as a number. */
static int ret_tn(blo_state *S, callargs *a, blo_tensor *t, value *out) {
  if (!t) return interp_tn_error(S, a->call);
  if (t->rank == 0) {
    *out = v_num(t->data[0]);
    tn_release(&S->tn, t);
  } else {
    *out = v_tensor(t);
  }
  return EV_OK;
}

static value v_obj(vkind k, obj *o) {
  value v = v_nil();
  v.kind = k;
  v.u.o = o;
  return v;
}

static int is_live(const ad_val *x) { return x->node >= 0 || x->t != NULL; }

/* Refuses an argument that carries derivative information, for operations
 * whose derivative is not implemented. */
static int no_ad(blo_state *S, callargs *a, const char *name, value v) {
  if (v.kind == V_TENSOR && (v.tan || (S->tape && v.gen == S->tape_gen && v.node >= 0)))
    return interp_error(S, a->call, "%s: not differentiable (its argument depends on a variable being differentiated)",
                        name);
  return EV_OK;
}

static void adv_release(blo_state *S, ad_val *v, int n) {
  for (int i = 0; i < n; i++) ad_val_release(&S->tn, &v[i]);
}

/* Runs a one-input ad operation and releases the input (also on failure). */
static int ad_done(blo_state *S, callargs *a, int rc, ad_val *in, ad_val r, value *out) {
  ad_val_release(&S->tn, in);
  if (rc) return interp_tn_error(S, a->call);
  *out = v_from_ad(S, r);
  return EV_OK;
}

static const char *shape_text(const blo_tensor *t, char *buf, size_t n) { return tn_shape_str(t, buf, n); }

/* ---- shapes given as arguments ----
 * Accepts d1, d2, ... (numbers) or one shape vector/list ([2, 3], shape(X)).
 * allow_infer lets one dimension be -1 (reshape). */
static int dim_value(blo_state *S, callargs *a, const char *name, double d, int allow_infer, size_t *dim,
                     int *infer) {
  if (allow_infer && d == -1) { *infer = 1; *dim = 0; return EV_OK; }
  if (!(d >= 0 && d == floor(d) && d < 9e15)) {
    char num[40];
    fmt_double(num, sizeof num, d);
    return interp_error(S, a->call, "%s: dimension %s must be a non-negative integer", name, num);
  }
  *dim = (size_t)d;
  return EV_OK;
}

static int parse_shape(blo_state *S, callargs *a, const char *name, int first, int last, int allow_infer,
                       size_t *dims, int *rank, int *infer_at) {
  *rank = 0;
  if (infer_at) *infer_at = -1;
  double vals[64];
  int n = 0;
  if (last - first == 1 && (a->pos[first].kind == V_LIST ||
                            (a->pos[first].kind == V_TENSOR && a->pos[first].u.t->rank == 1))) {
    value v = a->pos[first];
    if (v.kind == V_LIST) {
      olist *l = (olist *)v.u.o;
      if (l->n > TN_MAX_RANK)
        return interp_error(S, a->call, "%s: at most %d dimensions, got %d", name, TN_MAX_RANK, l->n);
      for (int i = 0; i < l->n; i++) {
        if (l->items[i].kind != V_NUM) return type_err(S, a, name, first, "a shape (a list of integers)");
        vals[n++] = l->items[i].u.num;
      }
    } else {
      const blo_tensor *t = v.u.t;
      if (t->size > TN_MAX_RANK)
        return interp_error(S, a->call, "%s: at most %d dimensions, got %zu", name, TN_MAX_RANK, t->size);
      for (size_t i = 0; i < t->size; i++) vals[n++] = t->data[i];
    }
  } else {
    if (last - first > TN_MAX_RANK)
      return interp_error(S, a->call, "%s: at most %d dimensions, got %d", name, TN_MAX_RANK, last - first);
    for (int i = first; i < last; i++) {
      if (v_to_double(a->pos[i], &vals[n]) != 0) return type_err(S, a, name, i, "an integer dimension");
      n++;
    }
  }
  for (int i = 0; i < n; i++) {
    int infer = 0;
    if (dim_value(S, a, name, vals[i], allow_infer, &dims[i], &infer)) return EV_ERR;
    if (infer) {
      if (*infer_at >= 0) return interp_error(S, a->call, "%s: only one dimension may be -1", name);
      *infer_at = i;
    }
  }
  *rank = n;
  return EV_OK;
}

/* Refuses shapes whose element count overflows. */
static int check_count(blo_state *S, callargs *a, const char *name, int rank, const size_t *dims) {
  size_t n = 1;
  for (int i = 0; i < rank; i++) {
    if (dims[i] && n > SIZE_MAX / sizeof(double) / dims[i]) {
      char s[96];
      return interp_error(S, a->call, "%s: shape %s is too large", name, tn_shape_str_raw(rank, dims, s, sizeof s));
    }
    n *= dims[i];
  }
  return EV_OK;
}

/* Unbiased integer in [0, n), n >= 1. */
static uint64_t rng_below(tn_rng *r, uint64_t n) {
  uint64_t lim = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do x = tn_rng_next(r); while (x >= lim);
  return x % n;
}

/* idx[0..n) = a random permutation of 0..n-1 (Fisher-Yates). */
static void permutation(tn_rng *r, double *idx, size_t n) {
  for (size_t i = 0; i < n; i++) idx[i] = (double)i;
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)rng_below(r, i);
    double t = idx[i - 1];
    idx[i - 1] = idx[j];
    idx[j] = t;
  }
}

static blo_tensor *arange_tensor(tn_ctx *ctx, size_t n, double start, double step) {
  blo_tensor *t = tn_new(ctx, 1, &n);
  if (t)
    for (size_t i = 0; i < n; i++) t->data[i] = start + (double)i * step;
  return t;
}

/* ======================================================================
 * elementwise
 * ====================================================================== */

static int unary(blo_state *S, callargs *a, value *out, const char *name, tn_unary_op op) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_numeric(S, a, name, 0)) return EV_ERR;
  return op_unary(S, a->call, op, a->pos[0], out);
}

#define UNARY(fn, op) \
  static int bi_##fn(blo_state *S, callargs *a, value *out) { return unary(S, a, out, #fn, op); }
UNARY(exp, TN_EXP)
UNARY(log, TN_LOG)
UNARY(sqrt, TN_SQRT)
UNARY(abs, TN_ABS)
UNARY(sin, TN_SIN)
UNARY(cos, TN_COS)
UNARY(tanh, TN_TANH)
UNARY(sigmoid, TN_SIGMOID)
UNARY(softplus, TN_SOFTPLUS)
UNARY(relu, TN_RELU)
UNARY(sign, TN_SIGN)
UNARY(floor, TN_FLOOR)
UNARY(isnan, TN_ISNAN)
UNARY(tan, TN_TAN)
UNARY(atan, TN_ATAN)
UNARY(asin, TN_ASIN)
UNARY(acos, TN_ACOS)
UNARY(sinh, TN_SINH)
UNARY(cosh, TN_COSH)
UNARY(erf, TN_ERF)
UNARY(log1p, TN_LOG1P)
UNARY(expm1, TN_EXPM1)
#undef UNARY

static int binary_ad(blo_state *S, callargs *a, const char *name, tn_binary_op op, value *out) {
  if (need_numeric(S, a, name, 0) || need_numeric(S, a, name, 1)) return EV_ERR;
  value p = a->pos[0], q = a->pos[1];
  if (p.kind == V_NUM && q.kind == V_NUM) {
    *out = v_num(tn_binary_scalar(op, p.u.num, q.u.num));
    return EV_OK;
  }
  ad_val x, y, r;
  if (v_to_ad(S, a->call, p, &x)) return EV_ERR;
  if (v_to_ad(S, a->call, q, &y)) { ad_val_release(&S->tn, &x); return EV_ERR; }
  int rc = ad_binary(&S->tn, S->tape, op, x, y, &r);
  ad_val_release(&S->tn, &x);
  ad_val_release(&S->tn, &y);
  if (rc) return interp_tn_error(S, a->call);
  *out = v_from_ad(S, r);
  return EV_OK;
}

static int bi_atan2(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  return binary_ad(S, a, "atan2", TN_ATAN2, out);
}

/* A constant (BI_CONST): its name evaluates to this value, it is not called. */
static int bi_pi(blo_state *S, callargs *a, value *out) {
  (void)S;
  (void)a;
  *out = v_num(3.14159265358979323846);
  return EV_OK;
}

/* ======================================================================
 * reductions
 * ====================================================================== */

static int reduce(blo_state *S, callargs *a, value *out, const char *name, tn_reduce_op op) {
  if (arg_check_named(S, a, AXIS_ONLY)) return EV_ERR;
  if (need_numeric(S, a, name, 0)) return EV_ERR;
  value v = a->pos[0];
  int axis;
  if (arg_axis(S, a, v.kind == V_TENSOR ? v.u.t->rank : 0, &axis)) return EV_ERR;
  ad_val x, r;
  if (v_to_ad(S, a->call, v, &x)) return EV_ERR;
  if (op == TN_ARGMAX || op == TN_ARGMIN) {
    /* positions are piecewise constant: no derivative to carry */
    blo_tensor *t = tn_reduce(&S->tn, op, x.v, axis);
    ad_val_release(&S->tn, &x);
    return ret_tn(S, a, t, out);
  }
  int rc = ad_reduce(&S->tn, S->tape, op, x, axis, &r);
  return ad_done(S, a, rc, &x, r, out);
}

#define REDUCE(fn, op) \
  static int bi_##fn(blo_state *S, callargs *a, value *out) { return reduce(S, a, out, #fn, op); }
REDUCE(sum, TN_SUM)
REDUCE(mean, TN_MEAN)
REDUCE(prod, TN_PROD)
REDUCE(norm, TN_NORM)
REDUCE(argmax, TN_ARGMAX)
REDUCE(argmin, TN_ARGMIN)
REDUCE(logsumexp, TN_LOGSUMEXP)
#undef REDUCE

/* max(x, axis =) reduces; max(a, b) is the elementwise maximum. */
static int bi_max(blo_state *S, callargs *a, value *out) {
  if (a->npos == 2) {
    if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
    return binary_ad(S, a, "max", TN_MAX2, out);
  }
  return reduce(S, a, out, "max", TN_MAX);
}

static int bi_min(blo_state *S, callargs *a, value *out) {
  if (a->npos == 2) {
    if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
    return binary_ad(S, a, "min", TN_MIN2, out);
  }
  return reduce(S, a, out, "min", TN_MIN);
}

static int bi_softmax(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, AXIS_ONLY)) return EV_ERR;
  if (need_numeric(S, a, "softmax", 0)) return EV_ERR;
  value v = a->pos[0];
  int axis;
  if (arg_axis(S, a, v.kind == V_TENSOR ? v.u.t->rank : 0, &axis)) return EV_ERR;
  ad_val x, r;
  if (v_to_ad(S, a->call, v, &x)) return EV_ERR;
  int rc = ad_softmax(&S->tn, S->tape, x, axis, &r);
  return ad_done(S, a, rc, &x, r, out);
}

/* any/all over every element; a number counts as one element. */
static int any_all(blo_state *S, callargs *a, value *out, const char *name, int want_all) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_numeric(S, a, name, 0)) return EV_ERR;
  value v = a->pos[0];
  const double *d = v.kind == V_NUM ? &v.u.num : v.u.t->data;
  size_t n = v.kind == V_NUM ? 1 : v.u.t->size;
  int res = want_all;
  for (size_t i = 0; i < n; i++)
    if ((d[i] != 0) != want_all) { res = !want_all; break; }
  *out = v_num(res);
  return EV_OK;
}

static int bi_any(blo_state *S, callargs *a, value *out) { return any_all(S, a, out, "any", 0); }
static int bi_all(blo_state *S, callargs *a, value *out) { return any_all(S, a, out, "all", 1); }

/* ======================================================================
 * shape operations
 * ====================================================================== */

static int bi_reshape(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_numeric(S, a, "reshape", 0)) return EV_ERR;
  size_t dims[TN_MAX_RANK];
  int rank, infer;
  if (parse_shape(S, a, "reshape", 1, a->npos, 1, dims, &rank, &infer)) return EV_ERR;
  ad_val x, r;
  if (v_to_ad(S, a->call, a->pos[0], &x)) return EV_ERR;
  size_t known = 1;
  int overflow = 0;
  for (int i = 0; i < rank; i++)
    if (i != infer) {
      if (dims[i] && known > SIZE_MAX / dims[i]) overflow = 1;
      known *= dims[i];
    }
  int ok = !overflow;
  if (ok && infer >= 0) {
    ok = known != 0 && x.v->size % known == 0;
    if (ok) dims[infer] = x.v->size / known;
  } else if (ok) {
    ok = known == x.v->size;
  }
  if (!ok) {
    char s1[96], s2[128];
    size_t p = 0;
    p += (size_t)snprintf(s2 + p, sizeof s2 - p, "[");
    for (int i = 0; i < rank && p < sizeof s2; i++) {
      if (i == infer) p += (size_t)snprintf(s2 + p, sizeof s2 - p, i ? ", -1" : "-1");
      else p += (size_t)snprintf(s2 + p, sizeof s2 - p, i ? ", %zu" : "%zu", dims[i]);
    }
    if (p < sizeof s2) snprintf(s2 + p, sizeof s2 - p, "]");
    int rc = interp_error(S, a->call, "reshape: cannot reshape %s (%zu element%s) into %s", shape_text(x.v, s1, sizeof s1),
                          x.v->size, x.v->size == 1 ? "" : "s", s2);
    ad_val_release(&S->tn, &x);
    return rc;
  }
  int rc = ad_reshape(&S->tn, S->tape, x, rank, dims, &r);
  return ad_done(S, a, rc, &x, r, out);
}

static int bi_flatten(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_numeric(S, a, "flatten", 0)) return EV_ERR;
  ad_val x, r;
  if (v_to_ad(S, a->call, a->pos[0], &x)) return EV_ERR;
  size_t n = x.v->size;
  int rc = ad_reshape(&S->tn, S->tape, x, 1, &n, &r);
  return ad_done(S, a, rc, &x, r, out);
}

static int bi_transpose(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_numeric(S, a, "transpose", 0)) return EV_ERR;
  if (a->pos[0].kind == V_NUM) { *out = a->pos[0]; return EV_OK; }
  ad_val x, r;
  if (v_to_ad(S, a->call, a->pos[0], &x)) return EV_ERR;
  int rc = ad_transpose(&S->tn, S->tape, x, &r);
  return ad_done(S, a, rc, &x, r, out);
}

/* The operands of concat/stack: several arguments, one list, or one tensor
 * read as the sequence of its first-axis slices (what a literal [x, y] of
 * equal-shaped tensors becomes), as NumPy does. */
static int gather_seq(blo_state *S, callargs *a, const char *name, ad_val **items, int *n) {
  *items = NULL;
  *n = 0;
  value *src = a->pos;
  int count = a->npos;
  if (a->npos == 1 && a->pos[0].kind == V_LIST) {
    olist *l = (olist *)a->pos[0].u.o;
    src = l->items;
    count = l->n;
  }
  if (a->npos == 1 && a->pos[0].kind == V_TENSOR && a->pos[0].u.t->rank >= 1) {
    ad_val whole;
    if (v_to_ad(S, a->call, a->pos[0], &whole)) return EV_ERR;
    size_t k = whole.v->shape[0];
    if (k == 0 || k > 1000000) {
      ad_val_release(&S->tn, &whole);
      return interp_error(S, a->call, "%s: %s slices along the first axis", name, k ? "too many" : "no");
    }
    ad_val *v = calloc(k, sizeof *v);
    if (!v) { ad_val_release(&S->tn, &whole); return oom(S, a); }
    for (size_t i = 0; i < k; i++) {
      tn_index_t ix = {TN_IX_INDEX, (long)i, (long)i + 1};
      if (tn_index_check(&S->tn, whole.v, &ix, 1) || ad_index(&S->tn, S->tape, whole, &ix, 1, &v[i])) {
        adv_release(S, v, (int)i);
        free(v);
        ad_val_release(&S->tn, &whole);
        return interp_tn_error(S, a->call);
      }
    }
    ad_val_release(&S->tn, &whole);
    *items = v;
    *n = (int)k;
    return EV_OK;
  }
  if (count == 0) return interp_error(S, a->call, "%s: nothing to %s", name, name);
  ad_val *v = calloc((size_t)count, sizeof *v);
  if (!v) return oom(S, a);
  for (int i = 0; i < count; i++) {
    if (!v_is_numeric(src[i])) {
      char d[96];
      v_describe(src[i], d, sizeof d);
      adv_release(S, v, i);
      free(v);
      return interp_error(S, a->call, "%s: element %d is a %s, expected a number or tensor", name, i + 1, d);
    }
    if (v_to_ad(S, a->call, src[i], &v[i])) {
      adv_release(S, v, i);
      free(v);
      return EV_ERR;
    }
  }
  *items = v;
  *n = count;
  return EV_OK;
}

static int concat_stack(blo_state *S, callargs *a, value *out, int is_stack) {
  const char *name = is_stack ? "stack" : "concat";
  if (arg_check_named(S, a, AXIS_ONLY)) return EV_ERR;
  long axis;
  if (named_int(S, a, "axis", 0, &axis)) return EV_ERR;
  ad_val *items;
  int n;
  if (gather_seq(S, a, name, &items, &n)) return EV_ERR;
  int rc = EV_OK;
  if (!is_stack) {
    /* numbers join as one-element vectors: concat(x, 0) appends */
    for (int i = 0; i < n && rc == EV_OK; i++)
      if (items[i].v->rank == 0) {
        size_t one = 1;
        ad_val r;
        if (ad_reshape(&S->tn, S->tape, items[i], 1, &one, &r)) rc = interp_tn_error(S, a->call);
        else { ad_val_release(&S->tn, &items[i]); items[i] = r; }
      }
  }
  if (rc == EV_OK) {
    int rank = items[0].v->rank + (is_stack ? 1 : 0);
    long ax = axis < 0 ? axis + rank : axis;
    if (ax < 0 || ax >= rank) {
      rc = interp_error(S, a->call, "%s: axis %ld out of range for a %s of rank %d", name, axis,
                        is_stack ? "result" : "tensor", rank);
    } else {
      ad_val r;
      int bad = is_stack ? ad_stack(&S->tn, S->tape, items, n, (int)ax, &r)
                         : ad_concat(&S->tn, S->tape, items, n, (int)ax, &r);
      if (bad) rc = interp_tn_error(S, a->call);
      else *out = v_from_ad(S, r);
    }
  }
  adv_release(S, items, n);
  free(items);
  return rc;
}

static int bi_concat(blo_state *S, callargs *a, value *out) { return concat_stack(S, a, out, 0); }
static int bi_stack(blo_state *S, callargs *a, value *out) { return concat_stack(S, a, out, 1); }

/* ======================================================================
 * constructors
 * ====================================================================== */

static int filled(blo_state *S, callargs *a, value *out, const char *name, int first, int last, double fillv) {
  size_t dims[TN_MAX_RANK];
  int rank;
  if (parse_shape(S, a, name, first, last, 0, dims, &rank, NULL)) return EV_ERR;
  if (rank == 0) { *out = v_num(fillv); return EV_OK; }
  if (check_count(S, a, name, rank, dims)) return EV_ERR;
  blo_tensor *t = tn_new(&S->tn, rank, dims);
  if (!t) return interp_tn_error(S, a->call);
  for (size_t i = 0; i < t->size; i++) t->data[i] = fillv;
  *out = v_tensor(t);
  return EV_OK;
}

static int bi_zeros(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  return filled(S, a, out, "zeros", 0, a->npos, 0.0);
}

static int bi_ones(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  return filled(S, a, out, "ones", 0, a->npos, 1.0);
}

/* fill(d1, ..., value): the last argument is the value. */
static int bi_fill(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  double v;
  if (v_to_double(a->pos[a->npos - 1], &v) != 0) return type_err(S, a, "fill", a->npos - 1, "a number (the fill value)");
  return filled(S, a, out, "fill", 0, a->npos - 1, v);
}

static int bi_eye(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  size_t dims[TN_MAX_RANK];
  int rank;
  if (parse_shape(S, a, "eye", 0, a->npos, 0, dims, &rank, NULL)) return EV_ERR;
  if (rank != 1 && rank != 2) return interp_error(S, a->call, "eye: expected eye(n) or eye(n, m), got %d dimensions", rank);
  if (rank == 1) dims[1] = dims[0];
  if (check_count(S, a, "eye", 2, dims)) return EV_ERR;
  blo_tensor *t = tn_zeros(&S->tn, 2, dims);
  if (!t) return interp_tn_error(S, a->call);
  for (size_t i = 0; i < dims[0] && i < dims[1]; i++) t->data[i * dims[1] + i] = 1;
  *out = v_tensor(t);
  return EV_OK;
}

static int bi_linspace(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  double lo, hi;
  long n;
  if (arg_double(S, a, 0, &lo) || arg_double(S, a, 1, &hi) || arg_int(S, a, 2, &n)) return EV_ERR;
  if (n < 0) return interp_error(S, a->call, "linspace: the number of points must be >= 0, got %ld", n);
  size_t len = (size_t)n;
  if (check_count(S, a, "linspace", 1, &len)) return EV_ERR;
  blo_tensor *t = tn_new(&S->tn, 1, &len);
  if (!t) return interp_tn_error(S, a->call);
  double step = n > 1 ? (hi - lo) / (double)(n - 1) : 0;
  for (size_t i = 0; i < len; i++) t->data[i] = lo + (double)i * step;
  if (n > 1) t->data[len - 1] = hi;  /* the end point exactly, as NumPy */
  *out = v_tensor(t);
  return EV_OK;
}

/* arange(n), arange(a, b), arange(a, b, step): [a, b) by step. */
static int bi_arange(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  double lo = 0, hi, step = 1;
  if (a->npos == 1) {
    if (arg_double(S, a, 0, &hi)) return EV_ERR;
  } else {
    if (arg_double(S, a, 0, &lo) || arg_double(S, a, 1, &hi)) return EV_ERR;
    if (a->npos == 3 && arg_double(S, a, 2, &step)) return EV_ERR;
  }
  if (step == 0) return interp_error(S, a->call, "arange: step must not be zero");
  if (!isfinite(lo) || !isfinite(hi) || !isfinite(step))
    return interp_error(S, a->call, "arange: bounds and step must be finite");
  double cnt = ceil((hi - lo) / step);
  if (!(cnt > 0)) cnt = 0;
  if (cnt > 1e12) return interp_error(S, a->call, "arange: %.0f elements is too many", cnt);
  blo_tensor *t = arange_tensor(&S->tn, (size_t)cnt, lo, step);
  if (!t) return interp_tn_error(S, a->call);
  *out = v_tensor(t);
  return EV_OK;
}

/* ======================================================================
 * random numbers (the state's own generator: reproducible, thread-safe)
 * ====================================================================== */

static int bi_seed(blo_state *S, callargs *a, value *out) {
  diff_note_random(S);
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  long s;
  if (arg_int(S, a, 0, &s)) return EV_ERR;
  tn_rng_seed(&S->rng, (uint64_t)s);
  *out = v_nil();
  return EV_OK;
}

static int random_fill(blo_state *S, callargs *a, value *out, const char *name, int first, int kind, double lo,
                       uint64_t range) {
  diff_note_random(S);
  size_t dims[TN_MAX_RANK];
  int rank;
  if (parse_shape(S, a, name, first, a->npos, 0, dims, &rank, NULL)) return EV_ERR;
  if (check_count(S, a, name, rank, dims)) return EV_ERR;
  blo_tensor *t = tn_new(&S->tn, rank, dims);
  if (!t) return interp_tn_error(S, a->call);
  for (size_t i = 0; i < t->size; i++) {
    if (kind == 0) t->data[i] = tn_rng_uniform(&S->rng);
    else if (kind == 1) t->data[i] = tn_rng_normal(&S->rng);
    else t->data[i] = lo + (double)rng_below(&S->rng, range);
  }
  return ret_tn(S, a, t, out);
}

static int bi_rand(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  return random_fill(S, a, out, "rand", 0, 0, 0, 0);
}

static int bi_randn(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  return random_fill(S, a, out, "randn", 0, 1, 0, 0);
}

static int bi_randint(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  long lo, hi;
  if (arg_int(S, a, 0, &lo) || arg_int(S, a, 1, &hi)) return EV_ERR;
  if (hi <= lo) return interp_error(S, a->call, "randint: empty range [%ld, %ld)", lo, hi);
  if ((double)hi - (double)lo > 9e15)
    return interp_error(S, a->call, "randint: range [%ld, %ld) is too wide", lo, hi);
  return random_fill(S, a, out, "randint", 2, 2, (double)lo, (uint64_t)(hi - lo));
}

static int bi_randperm(blo_state *S, callargs *a, value *out) {
  diff_note_random(S);
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  long n;
  if (arg_int(S, a, 0, &n)) return EV_ERR;
  if (n < 0) return interp_error(S, a->call, "randperm: n must be >= 0, got %ld", n);
  size_t len = (size_t)n;
  if (check_count(S, a, "randperm", 1, &len)) return EV_ERR;
  blo_tensor *t = tn_new(&S->tn, 1, &len);
  if (!t) return interp_tn_error(S, a->call);
  permutation(&S->rng, t->data, len);
  *out = v_tensor(t);
  return EV_OK;
}

/* Permutes the first axis (rows of a matrix, items of a list). */
static int bi_shuffle(blo_state *S, callargs *a, value *out) {
  diff_note_random(S);
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  value v = a->pos[0];
  if (v.kind == V_LIST) {
    olist *l = (olist *)v.u.o;
    size_t n = (size_t)l->n;
    double *idx = malloc((n ? n : 1) * sizeof(double));
    olist *c = idx ? list_new(S, l->n) : NULL;
    if (!c) { free(idx); return oom(S, a); }
    permutation(&S->rng, idx, n);
    for (size_t i = 0; i < n; i++) list_push(S, c, v_retain(l->items[(size_t)idx[i]]));
    free(idx);
    *out = v_obj(V_LIST, &c->h);
    return EV_OK;
  }
  if (v.kind != V_TENSOR || v.u.t->rank == 0) return type_err(S, a, "shuffle", 0, "a tensor with at least one axis, or a list");
  size_t n = v.u.t->shape[0];
  blo_tensor *idx = tn_new(&S->tn, 1, &n);
  if (!idx) return interp_tn_error(S, a->call);
  permutation(&S->rng, idx->data, n);
  ad_val x, r;
  if (v_to_ad(S, a->call, v, &x)) { tn_release(&S->tn, idx); return EV_ERR; }
  int rc = ad_take(&S->tn, S->tape, x, idx, 0, &r);
  tn_release(&S->tn, idx);
  return ad_done(S, a, rc, &x, r, out);
}

/* ======================================================================
 * information
 * ====================================================================== */

static int bi_len(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  value v = a->pos[0];
  switch (v.kind) {
  case V_TENSOR:
    if (v.u.t->rank == 0) break;
    *out = v_num((double)v.u.t->shape[0]);
    return EV_OK;
  case V_LIST: *out = v_num(((olist *)v.u.o)->n); return EV_OK;
  case V_STR: *out = v_num((double)((ostr *)v.u.o)->len); return EV_OK;
  case V_REC: *out = v_num(((orec *)v.u.o)->n); return EV_OK;
  default: break;
  }
  if (v.kind == V_NUM || v.kind == V_TENSOR)
    return interp_error(S, a->call, "len: a number has no length (size() counts the elements of a tensor)");
  return type_err(S, a, "len", 0, "a tensor, list, string or record");
}

/* shape of a number (or rank-0 tensor) is the empty vector. */
static int bi_shape(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_numeric(S, a, "shape", 0)) return EV_ERR;
  value v = a->pos[0];
  size_t r = v.kind == V_TENSOR ? (size_t)v.u.t->rank : 0;
  blo_tensor *t = tn_new(&S->tn, 1, &r);
  if (!t) return interp_tn_error(S, a->call);
  for (size_t i = 0; i < r; i++) t->data[i] = (double)v.u.t->shape[i];
  *out = v_tensor(t);
  return EV_OK;
}

static int bi_size(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_numeric(S, a, "size", 0)) return EV_ERR;
  value v = a->pos[0];
  *out = v_num(v.kind == V_TENSOR ? (double)v.u.t->size : 1);
  return EV_OK;
}

int mpi_process_rank(blo_state *S);   /* stdlib/mpi.c */

static int bi_rank(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (a->npos == 0) {   /* rank(): the process, as in MPI */
    *out = v_num(mpi_process_rank(S));
    return EV_OK;
  }
  if (need_numeric(S, a, "rank", 0)) return EV_ERR;
  value v = a->pos[0];
  *out = v_num(v.kind == V_TENSOR ? v.u.t->rank : 0);
  return EV_OK;
}

/* ======================================================================
 * strings
 * ====================================================================== */

static int str_result(blo_state *S, callargs *a, strbuf *sb, value *out) {
  if (sb->oom) { sb_free(sb); return oom(S, a); }
  *out = v_str(S, sb->s ? sb->s : "", sb->n);
  sb_free(sb);
  return out->kind == V_STR ? EV_OK : oom(S, a);
}

/* Appends one printf conversion; spec is "%<flags><width>.<prec>" + conv. */
static void sb_conv(strbuf *sb, const char *spec, int is_str, const char *s, double d, long long ll, int is_int) {
  char small[256];
  int n = is_str ? snprintf(small, sizeof small, spec, s)
                 : is_int ? snprintf(small, sizeof small, spec, ll) : snprintf(small, sizeof small, spec, d);
  if (n < 0) return;
  if ((size_t)n < sizeof small) { sb_puts(sb, small); return; }
  char *big = malloc((size_t)n + 1);
  if (!big) { sb->oom = 1; return; }
  if (is_str) snprintf(big, (size_t)n + 1, spec, s);
  else if (is_int) snprintf(big, (size_t)n + 1, spec, ll);
  else snprintf(big, (size_t)n + 1, spec, d);
  sb_puts(sb, big);
  free(big);
}

/* format(fmt, ...): %d %i (rounded), %f %e %g %E %G, %s (any value, printed
 * as print does), %%; flags "-+ 0#", width and precision. */
static int bi_format(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (a->pos[0].kind != V_STR) return type_err(S, a, "format", 0, "a string");
  /* the format and %s values may hold NUL bytes: both go by length */
  const char *fmt = v_cstr(a->pos[0]), *fmt_end = fmt + v_strlen(a->pos[0]);
  strbuf sb = {0};
  int argi = 1, nconv = 0;
  for (const char *p = fmt; p < fmt_end; p++) {
    if (*p != '%') { sb_putc(&sb, *p); continue; }
    const char *start = p++;
    if (*p == '%') { sb_putc(&sb, '%'); continue; }
    const char *flags = p;
    while (*p && strchr("-+ 0#", *p)) p++;
    int left = memchr(flags, '-', (size_t)(p - flags)) != NULL, has_prec = 0;
    long width = 0, prec = 0;
    while (*p >= '0' && *p <= '9') width = width * 10 + (*p++ - '0'), width = width > 100000 ? 100000 : width;
    if (*p == '.') {
      has_prec = 1;
      p++;
      while (*p >= '0' && *p <= '9') prec = prec * 10 + (*p++ - '0'), prec = prec > 100000 ? 100000 : prec;
    }
    char conv = *p;
    if (!conv) {
      sb_free(&sb);
      return interp_error(S, a->call, "format: incomplete conversion '%s' at the end of the format", start);
    }
    if (!strchr("difeEgGs", conv)) {
      sb_free(&sb);
      return interp_error(S, a->call, "format: unknown conversion '%%%c' (use %%d %%i %%f %%e %%g %%s or %%%%)", conv);
    }
    if (width > 4096 || prec > 4096) {
      sb_free(&sb);
      return interp_error(S, a->call, "format: width or precision too large in '%.*s'", (int)(p - start + 1), start);
    }
    nconv++;
    if (argi >= a->npos) {
      sb_free(&sb);
      return interp_error(S, a->call, "format: the format has more conversions than the %d value%s given", a->npos - 1,
                          a->npos - 1 == 1 ? "" : "s");
    }
    value v = a->pos[argi++];
    char spec[64];
    size_t flen = (size_t)(p - start);  /* '%', flags, width, precision */
    if (flen > sizeof spec - 8) flen = sizeof spec - 8;
    memcpy(spec, start, flen);
    if (conv == 's') {
      /* padded and cut by hand: printf's %s would stop at a NUL byte */
      strbuf vs = {0};
      v_print(&vs, v, 0);
      size_t n = vs.n, pad;
      if (has_prec && (size_t)prec < n) n = (size_t)prec;
      pad = (size_t)width > n ? (size_t)width - n : 0;
      for (size_t k = 0; !left && k < pad; k++) sb_putc(&sb, ' ');
      sb_putn(&sb, vs.s ? vs.s : "", n);
      for (size_t k = 0; left && k < pad; k++) sb_putc(&sb, ' ');
      if (vs.oom) sb.oom = 1;
      sb_free(&vs);
      continue;
    }
    double d;
    if (v_to_double(v, &d) != 0) {
      char desc[96];
      v_describe(v, desc, sizeof desc);
      sb_free(&sb);
      return interp_error(S, a->call, "format: '%%%c' (value %d) expects a number, got %s", conv, argi - 1, desc);
    }
    if (conv == 'd' || conv == 'i') {
      if (isfinite(d) && fabs(d) < 9.2e18) {
        memcpy(spec + flen, "lld", 4);
        sb_conv(&sb, spec, 0, NULL, 0, llround(d), 1);
      } else {
        /* nan and inf have no integer form: print them as %s would */
        char num[40];
        fmt_double(num, sizeof num, d);
        /* drop the precision, which would truncate the text */
        char *dot = memchr(spec, '.', flen);
        size_t k = dot ? (size_t)(dot - spec) : flen;
        spec[k] = 's';
        spec[k + 1] = 0;
        sb_conv(&sb, spec, 1, num, 0, 0, 0);
      }
    } else {
      spec[flen] = conv;
      spec[flen + 1] = 0;
      sb_conv(&sb, spec, 0, NULL, d, 0, 0);
    }
  }
  if (argi < a->npos) {
    sb_free(&sb);
    return interp_error(S, a->call, "format: %d value%s given but the format has %d conversion%s", a->npos - 1,
                        a->npos - 1 == 1 ? "" : "s", nconv, nconv == 1 ? "" : "s");
  }
  return str_result(S, a, &sb, out);
}

static int bi_str(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (a->pos[0].kind == V_STR) { *out = v_retain(a->pos[0]); return EV_OK; }
  strbuf sb = {0};
  v_print(&sb, a->pos[0], 1);
  return str_result(S, a, &sb, out);
}

static int bi_num(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  value v = a->pos[0];
  if (v.kind == V_NUM) { *out = v; return EV_OK; }
  if (v.kind != V_STR) return type_err(S, a, "num", 0, "a string");
  const char *s;
  if (arg_str(S, a, 0, &s)) return EV_ERR;
  while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
  char *end;
  double d = strtod(s, &end);
  while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r') end++;
  if (end == s || *end)
    return interp_error(S, a->call, "num: cannot read '%.60s' as a number", v_cstr(v));
  *out = v_num(d);
  return EV_OK;
}

/* ======================================================================
 * linear algebra
 * ====================================================================== */

static int need_matrix(blo_state *S, callargs *a, const char *name, int i, int square) {
  value v = a->pos[i];
  if (v.kind != V_TENSOR || v.u.t->rank != 2) return type_err(S, a, name, i, square ? "a square matrix" : "a matrix");
  if (square && v.u.t->shape[0] != v.u.t->shape[1]) {
    char s[96];
    return interp_error(S, a->call, "%s: matrix must be square, got %s", name, shape_text(v.u.t, s, sizeof s));
  }
  return EV_OK;
}

static int bi_linsolve(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_matrix(S, a, "linsolve", 0, 1) || need_numeric(S, a, "linsolve", 1)) return EV_ERR;
  ad_val A, b, r;
  if (v_to_ad(S, a->call, a->pos[0], &A)) return EV_ERR;
  if (v_to_ad(S, a->call, a->pos[1], &b)) { ad_val_release(&S->tn, &A); return EV_ERR; }
  int rc = ad_linsolve(&S->tn, S->tape, A, b, &r);
  ad_val_release(&S->tn, &b);
  return ad_done(S, a, rc, &A, r, out);
}

/* inv(A) differentiates as linsolve(A, I); a constant uses LAPACK's inverse. */
static int bi_inv(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_matrix(S, a, "inv", 0, 1)) return EV_ERR;
  ad_val A, r;
  if (v_to_ad(S, a->call, a->pos[0], &A)) return EV_ERR;
  if (!is_live(&A)) {
    blo_tensor *t = tn_inv(&S->tn, A.v);
    ad_val_release(&S->tn, &A);
    return ret_tn(S, a, t, out);
  }
  size_t n = A.v->shape[0], dims[2] = {n, n};
  blo_tensor *I = tn_zeros(&S->tn, 2, dims);
  if (!I) { ad_val_release(&S->tn, &A); return interp_tn_error(S, a->call); }
  for (size_t i = 0; i < n; i++) I->data[i * n + i] = 1;
  ad_val Iv = ad_const(I);
  int rc = ad_linsolve(&S->tn, S->tape, A, Iv, &r);
  ad_val_release(&S->tn, &Iv);
  if (rc && strncmp(S->tn.err, "linsolve:", 9) == 0) {
    /* name the operation the script called */
    char msg[TN_ERR_LEN];
    snprintf(msg, sizeof msg, "inv:%s", S->tn.err + 9);
    memcpy(S->tn.err, msg, sizeof msg);
  }
  return ad_done(S, a, rc, &A, r, out);
}

static int bi_det(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_matrix(S, a, "det", 0, 1) || no_ad(S, a, "det", a->pos[0])) return EV_ERR;
  double d;
  if (tn_det(&S->tn, a->pos[0].u.t, &d)) return interp_tn_error(S, a->call);
  *out = v_num(d);
  return EV_OK;
}

static int bi_chol(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_matrix(S, a, "chol", 0, 1) || no_ad(S, a, "chol", a->pos[0])) return EV_ERR;
  return ret_tn(S, a, tn_chol(&S->tn, a->pos[0].u.t), out);
}

static int bi_pinv(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_matrix(S, a, "pinv", 0, 0) || no_ad(S, a, "pinv", a->pos[0])) return EV_ERR;
  return ret_tn(S, a, tn_pinv(&S->tn, a->pos[0].u.t), out);
}

static int bi_lstsq(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_matrix(S, a, "lstsq", 0, 0) || need_numeric(S, a, "lstsq", 1)) return EV_ERR;
  if (no_ad(S, a, "lstsq", a->pos[0]) || no_ad(S, a, "lstsq", a->pos[1])) return EV_ERR;
  blo_tensor *b = v_to_tensor(S, a->pos[1]);
  if (!b) return interp_tn_error(S, a->call);
  blo_tensor *x = tn_lstsq(&S->tn, a->pos[0].u.t, b);
  tn_release(&S->tn, b);
  return ret_tn(S, a, x, out);
}

static int bi_eigh(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_matrix(S, a, "eigh", 0, 1) || no_ad(S, a, "eigh", a->pos[0])) return EV_ERR;
  blo_tensor *vals = NULL, *vecs = NULL;
  if (tn_eigh(&S->tn, a->pos[0].u.t, &vals, &vecs)) return interp_tn_error(S, a->call);
  orec *r = rec_new(S);
  if (!r) { tn_release(&S->tn, vals); tn_release(&S->tn, vecs); return oom(S, a); }
  value rv = v_obj(V_REC, &r->h);
  int bad = rec_set(S, r, "values", v_tensor(vals));
  bad |= rec_set(S, r, "vectors", v_tensor(vecs));  /* rec_set releases the value on failure */
  if (bad) { v_release(S, &rv); return oom(S, a); }
  *out = rv;
  return EV_OK;
}

static int need_vector(blo_state *S, callargs *a, const char *name, int i) {
  value v = a->pos[i];
  if (v.kind == V_TENSOR && v.u.t->rank == 1) return EV_OK;
  return type_err(S, a, name, i, "a vector");
}

/* Ascending order of a vector's elements, ties by position (a stable sort):
 * idx[k] = position of the k-th smallest.  NaN is refused: it has no place. */
typedef struct { double v; size_t i; } sort_item;
static int sort_item_cmp(const void *pa, const void *pb) {
  const sort_item *a = pa, *b = pb;
  if (a->v < b->v) return -1;
  if (a->v > b->v) return 1;
  return a->i < b->i ? -1 : a->i > b->i;
}
static int sort_order(blo_state *S, callargs *a, const char *name, blo_tensor **idx) {
  diff_note_read(S, a->pos[0]); /* the order is data: sort binds a recording to its point */
  if (arg_check_named(S, a, NO_NAMED) || need_vector(S, a, name, 0)) return EV_ERR;
  const blo_tensor *x = a->pos[0].u.t;
  size_t n = x->size;
  for (size_t i = 0; i < n; i++)
    if (isnan(x->data[i])) return interp_error(S, a->call, "%s: element %zu is NaN", name, i);
  sort_item *it = malloc((n ? n : 1) * sizeof *it);
  *idx = it ? tn_new(&S->tn, 1, &n) : NULL;
  if (!*idx) { free(it); return oom(S, a); }
  for (size_t i = 0; i < n; i++) it[i] = (sort_item){x->data[i], i};
  qsort(it, n, sizeof *it, sort_item_cmp);
  for (size_t k = 0; k < n; k++) (*idx)->data[k] = (double)it[k].i;
  free(it);
  return EV_OK;
}

static int bi_argsort(blo_state *S, callargs *a, value *out) {
  blo_tensor *idx;
  if (sort_order(S, a, "argsort", &idx)) return EV_ERR;
  *out = v_tensor(idx);
  return EV_OK;
}

/* sort(x) = x[argsort(x)], a gather, so it is differentiable: the gradient
 * flows back to the positions the elements came from. */
static int bi_sort(blo_state *S, callargs *a, value *out) {
  blo_tensor *idx;
  if (sort_order(S, a, "sort", &idx)) return EV_ERR;
  ad_val x, r;
  if (v_to_ad(S, a->call, a->pos[0], &x)) { tn_release(&S->tn, idx); return EV_ERR; }
  int rc = ad_take(&S->tn, S->tape, x, idx, 0, &r);
  tn_release(&S->tn, idx);
  return ad_done(S, a, rc, &x, r, out);
}

/* clip(x, lo, hi) = min(max(x, lo), hi): derivative 1 inside, 0 where clipped. */
static int bi_clip(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  for (int i = 0; i < 3; i++)
    if (need_numeric(S, a, "clip", i)) return EV_ERR;
  value lo = a->pos[1], hi = a->pos[2];
  if (lo.kind == V_NUM && hi.kind == V_NUM && lo.u.num > hi.u.num)
    return interp_error(S, a->call, "clip: lo = %g is above hi = %g", lo.u.num, hi.u.num);
  value m, pv[2] = {a->pos[0], lo};   /* borrowed, as in a: binary_ad does not release */
  callargs b = *a;
  b.pos = pv;
  b.npos = 2;
  if (binary_ad(S, &b, "clip", TN_MAX2, &m)) return EV_ERR;
  pv[0] = m;
  pv[1] = hi;
  int rc = binary_ad(S, &b, "clip", TN_MIN2, out);
  v_release(S, &m);
  return rc;
}


/* outer(a, b) = reshape(a, [m, 1]) * reshape(b, [1, n]): differentiable. */
static int bi_outer(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_vector(S, a, "outer", 0) || need_vector(S, a, "outer", 1)) return EV_ERR;
  ad_val x, y, xc = {0}, yr = {0}, r;
  if (v_to_ad(S, a->call, a->pos[0], &x)) return EV_ERR;
  if (v_to_ad(S, a->call, a->pos[1], &y)) { ad_val_release(&S->tn, &x); return EV_ERR; }
  size_t s1[2] = {x.v->size, 1}, s2[2] = {1, y.v->size};
  int rc = ad_reshape(&S->tn, S->tape, x, 2, s1, &xc) || ad_reshape(&S->tn, S->tape, y, 2, s2, &yr) ||
           ad_binary(&S->tn, S->tape, TN_MUL, xc, yr, &r);
  ad_val_release(&S->tn, &x);
  ad_val_release(&S->tn, &y);
  ad_val_release(&S->tn, &xc);
  ad_val_release(&S->tn, &yr);
  if (rc) return interp_tn_error(S, a->call);
  *out = v_from_ad(S, r);
  return EV_OK;
}

/* acc += dot(x, y) for two records with the same fields (nested; paired
 * by name), or two numbers / tensors of one shape (a number pairs with any
 * shape).  path names the fields in errors; *have: acc holds a value. */
static int dot_rec(blo_state *S, callargs *a, value x, value y, char *path, size_t cap, ad_val *acc, int *have) {
  if (x.kind == V_REC || y.kind == V_REC) {
    char d1[96], d2[96];
    if (x.kind != V_REC || y.kind != V_REC) {
      v_describe(x, d1, sizeof d1);
      v_describe(y, d2, sizeof d2);
      return interp_error(S, a->call, "dot: %s%s is %s in the first argument and %s in the second", path[0] ? "field " : "",
                          path[0] ? path : "", d1, d2);
    }
    orec *rx = (orec *)x.u.o, *ry = (orec *)y.u.o;
    size_t len = strlen(path);
    for (int i = 0; i < ry->n; i++)
      if (!rec_get(rx, ry->keys[i]))
        return interp_error(S, a->call, "dot: field '%s%s%s' is in the second record only", path, len ? "." : "",
                            ry->keys[i]);
    for (int i = 0; i < rx->n; i++) {
      value *f = rec_get(ry, rx->keys[i]);
      if (!f)
        return interp_error(S, a->call, "dot: field '%s%s%s' is in the first record only", path, len ? "." : "",
                            rx->keys[i]);
      snprintf(path + len, cap - len, "%s%s", len ? "." : "", rx->keys[i]);
      int rc = dot_rec(S, a, rx->vals[i], *f, path, cap, acc, have);
      path[len] = 0;
      if (rc) return rc;
    }
    return EV_OK;
  }
  if (!v_is_numeric(x) || !v_is_numeric(y)) {
    char d[96];
    v_describe(v_is_numeric(x) ? y : x, d, sizeof d);
    return interp_error(S, a->call, "dot: field '%s' is %s, not a number or tensor", path, d);
  }
  ad_val u, v, p = {0}, r = {0}, s = {0};
  if (v_to_ad(S, a->call, x, &u)) return EV_ERR;
  if (v_to_ad(S, a->call, y, &v)) { ad_val_release(&S->tn, &u); return EV_ERR; }
  int rc = EV_OK;
  if (!tn_same_shape(u.v, v.v) && u.v->rank != 0 && v.v->rank != 0) {
    char s1[96], s2[96];
    rc = interp_error(S, a->call, "dot: shape mismatch at field '%s': %s and %s", path, shape_text(u.v, s1, sizeof s1),
                      shape_text(v.v, s2, sizeof s2));
  } else if (ad_binary(&S->tn, S->tape, TN_MUL, u, v, &p) || ad_reduce(&S->tn, S->tape, TN_SUM, p, -1, &r)) {
    rc = interp_tn_error(S, a->call);
  } else if (*have) {
    if (ad_binary(&S->tn, S->tape, TN_ADD, *acc, r, &s)) rc = interp_tn_error(S, a->call);
    else { ad_val_release(&S->tn, acc); *acc = s; s.v = NULL; s.t = NULL; }
  } else {
    *acc = r;
    r.v = NULL;
    r.t = NULL;
    *have = 1;
  }
  ad_val_release(&S->tn, &u);
  ad_val_release(&S->tn, &v);
  ad_val_release(&S->tn, &p);
  ad_val_release(&S->tn, &r);
  return rc;
}

/* dot(a, b) = sum(a * b) for two tensors of the same shape; for two records
 * with the same fields, the sum over the fields. */
static int bi_dot(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (a->pos[0].kind == V_REC || a->pos[1].kind == V_REC) {
    char path[256] = "";
    ad_val acc = {0};
    int have = 0;
    if (dot_rec(S, a, a->pos[0], a->pos[1], path, sizeof path, &acc, &have)) {
      if (have) ad_val_release(&S->tn, &acc);
      return EV_ERR;
    }
    if (!have) return interp_error(S, a->call, "dot: the records have no numbers or tensors");
    *out = v_from_ad(S, acc);
    return EV_OK;
  }
  if (need_numeric(S, a, "dot", 0) || need_numeric(S, a, "dot", 1)) return EV_ERR;
  ad_val x, y, p = {0}, r;
  if (v_to_ad(S, a->call, a->pos[0], &x)) return EV_ERR;
  if (v_to_ad(S, a->call, a->pos[1], &y)) { ad_val_release(&S->tn, &x); return EV_ERR; }
  int rc;
  if (!tn_same_shape(x.v, y.v)) {
    char s1[96], s2[96];
    rc = interp_error(S, a->call, "dot: shape mismatch: %s and %s (dot takes two tensors of the same shape; use @ for "
                      "matrix products)", shape_text(x.v, s1, sizeof s1), shape_text(y.v, s2, sizeof s2));
  } else if (ad_binary(&S->tn, S->tape, TN_MUL, x, y, &p) || ad_reduce(&S->tn, S->tape, TN_SUM, p, -1, &r)) {
    rc = interp_tn_error(S, a->call);
  } else {
    rc = EV_OK;
    *out = v_from_ad(S, r);
  }
  ad_val_release(&S->tn, &x);
  ad_val_release(&S->tn, &y);
  ad_val_release(&S->tn, &p);
  return rc;
}

/* The main diagonal of a matrix x as ad ops: flatten, then take every
 * (cols+1)-th element. */
static int diag_of(blo_state *S, ad_val x, ad_val *out) {
  size_t rows = x.v->shape[0], cols = x.v->shape[1], k = rows < cols ? rows : cols, all = x.v->size;
  ad_val flat = {0};
  blo_tensor *idx = arange_tensor(&S->tn, k, 0, (double)(cols + 1));
  if (!idx) return -1;
  int rc = ad_reshape(&S->tn, S->tape, x, 1, &all, &flat) || ad_take(&S->tn, S->tape, flat, idx, 0, out);
  tn_release(&S->tn, idx);
  ad_val_release(&S->tn, &flat);
  return rc ? -1 : 0;
}

static int bi_trace(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_matrix(S, a, "trace", 0, 0)) return EV_ERR;
  const blo_tensor *m = a->pos[0].u.t;
  if (m->shape[0] == 0 || m->shape[1] == 0) { *out = v_num(0); return EV_OK; }
  ad_val x, d = {0}, r = {0};
  if (v_to_ad(S, a->call, a->pos[0], &x)) return EV_ERR;
  int rc = diag_of(S, x, &d) || ad_reduce(&S->tn, S->tape, TN_SUM, d, -1, &r);
  ad_val_release(&S->tn, &d);
  return ad_done(S, a, rc, &x, r, out);
}

/* diag(v): the square matrix with v on its diagonal; diag(A): A's diagonal.
 * The matrix is built from [v | zeros(n, n)] of shape [n, n + 1], whose first
 * n*n elements, read row-major as [n, n], place v[i] at (i, i). */
static int bi_diag(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  value v = a->pos[0];
  if (v.kind != V_TENSOR || (v.u.t->rank != 1 && v.u.t->rank != 2)) return type_err(S, a, "diag", 0, "a vector or a matrix");
  ad_val x, r = {0};
  if (v_to_ad(S, a->call, v, &x)) return EV_ERR;
  int rc;
  if (x.v->rank == 2) {
    rc = diag_of(S, x, &r);
    return ad_done(S, a, rc, &x, r, out);
  }
  size_t n = x.v->size, sq[2] = {n, n};
  if (n == 0 || !is_live(&x)) {
    blo_tensor *t = tn_zeros(&S->tn, 2, sq);
    if (t) for (size_t i = 0; i < n; i++) t->data[i * n + i] = x.v->data[i];
    ad_val_release(&S->tn, &x);
    if (!t) return interp_tn_error(S, a->call);
    *out = v_tensor(t);
    return EV_OK;
  }
  size_t col[2] = {n, 1}, nn = n * n, wide = n * (n + 1);
  ad_val parts[2] = {{0}, {0}}, cat = {0}, flat = {0}, first = {0};
  blo_tensor *z = tn_zeros(&S->tn, 2, sq);
  blo_tensor *idx = arange_tensor(&S->tn, nn, 0, 1);
  rc = !z || !idx;
  if (!rc) {
    parts[1] = ad_const(z);
    z = NULL;
    rc = ad_reshape(&S->tn, S->tape, x, 2, col, &parts[0]) || ad_concat(&S->tn, S->tape, parts, 2, 1, &cat) ||
         ad_reshape(&S->tn, S->tape, cat, 1, &wide, &flat) || ad_take(&S->tn, S->tape, flat, idx, 0, &first) ||
         ad_reshape(&S->tn, S->tape, first, 2, sq, &r);
  }
  tn_release(&S->tn, z);
  tn_release(&S->tn, idx);
  adv_release(S, parts, 2);
  ad_val_release(&S->tn, &cat);
  ad_val_release(&S->tn, &flat);
  ad_val_release(&S->tn, &first);
  return ad_done(S, a, rc, &x, r, out);
}

/* ======================================================================
 * data files
 * ====================================================================== */

static int files_allowed(blo_state *S, callargs *a, const char *name) {
  if (S->cfg.allow_files) return EV_OK;
  return interp_error(S, a->call, "%s: file access is disabled by the host", name);
}

/* load_csv(path, header = false, cols = [..]): header = true skips the first
 * line (the column names); the result is the numeric tensor. */
static int bi_load_csv(blo_state *S, callargs *a, value *out) {
  static const char *const allowed[] = {"header", "cols", NULL};
  if (arg_check_named(S, a, allowed)) return EV_ERR;
  if (files_allowed(S, a, "load_csv")) return EV_ERR;
  const char *path;
  int header;
  if (arg_str(S, a, 0, &path) || named_bool(S, a, "header", 0, &header)) return EV_ERR;
  long cols[256];
  int ncols = 0;
  value *cv = arg_named(a, "cols");
  if (cv) {
    const double *d = NULL;
    size_t n = 0;
    if (cv->kind == V_NUM) { d = &cv->u.num; n = 1; }
    else if (cv->kind == V_TENSOR && cv->u.t->rank <= 1) { d = cv->u.t->data; n = cv->u.t->size; }
    else if (cv->kind == V_LIST && ((olist *)cv->u.o)->n == 0) n = 0;
    else {
      char desc[96];
      v_describe(*cv, desc, sizeof desc);
      return interp_error(S, a->call, "load_csv: 'cols' must be a list of column numbers, got %s", desc);
    }
    if (n == 0) return interp_error(S, a->call, "load_csv: 'cols' selects no columns");
    if (n > 256) return interp_error(S, a->call, "load_csv: 'cols' selects more than 256 columns");
    for (size_t i = 0; i < n; i++) {
      if (d[i] != floor(d[i]) || fabs(d[i]) > 1e9) {
        char num[40];
        fmt_double(num, sizeof num, d[i]);
        return interp_error(S, a->call, "load_csv: column %s is not an integer", num);
      }
      cols[ncols++] = (long)d[i];
    }
  }
  char err[600];
  blo_tensor *t = io_load_csv(&S->tn, path, header, cols, ncols, NULL, NULL, err, sizeof err);
  if (!t) return interp_error(S, a->call, "load_csv: %s", err);
  *out = v_tensor(t);
  return EV_OK;
}

/* save_csv(path, x, header = ["a", "b"]) */
static int bi_save_csv(blo_state *S, callargs *a, value *out) {
  static const char *const allowed[] = {"header", NULL};
  if (arg_check_named(S, a, allowed)) return EV_ERR;
  if (files_allowed(S, a, "save_csv")) return EV_ERR;
  const char *path;
  if (arg_str(S, a, 0, &path) || need_numeric(S, a, "save_csv", 1)) return EV_ERR;
  const char *names[256];
  int nh = 0;
  value *hv = arg_named(a, "header");
  if (hv) {
    if (hv->kind == V_STR) {
      names[nh++] = v_cstr(*hv);
    } else if (hv->kind == V_LIST) {
      olist *l = (olist *)hv->u.o;
      if (l->n > 256) return interp_error(S, a->call, "save_csv: header has more than 256 names");
      for (int i = 0; i < l->n; i++) {
        if (l->items[i].kind != V_STR)
          return interp_error(S, a->call, "save_csv: header element %d is a %s, expected a string", i + 1,
                              v_kind_name(l->items[i]));
        names[nh++] = v_cstr(l->items[i]);
      }
    } else {
      char desc[96];
      v_describe(*hv, desc, sizeof desc);
      return interp_error(S, a->call, "save_csv: 'header' must be a list of strings, got %s", desc);
    }
  }
  blo_tensor *t = v_to_tensor(S, a->pos[1]);
  if (!t) return interp_tn_error(S, a->call);
  char err[600];
  int rc = io_save_csv(&S->tn, path, t, names, nh, err, sizeof err);
  tn_release(&S->tn, t);
  if (rc) return interp_error(S, a->call, "save_csv: %s", err);
  *out = v_nil();
  return EV_OK;
}

static int bi_load_idx(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (files_allowed(S, a, "load_idx")) return EV_ERR;
  const char *path;
  if (arg_str(S, a, 0, &path)) return EV_ERR;
  char err[600];
  blo_tensor *t = io_load_idx(&S->tn, path, err, sizeof err);
  if (!t) return interp_error(S, a->call, "load_idx: %s", err);
  *out = v_tensor(t);
  return EV_OK;
}

/* ---- NumPy files (stdlib/npy.c holds the formats) ---- */

/* save_npy(path, x): x as a float64 C-order .npy file (a number as shape ()). */
static int bi_save_npy(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (files_allowed(S, a, "save_npy")) return EV_ERR;
  const char *path;
  if (arg_str(S, a, 0, &path) || need_numeric(S, a, "save_npy", 1)) return EV_ERR;
  blo_tensor *t = v_to_tensor(S, a->pos[1]);
  if (!t) return interp_tn_error(S, a->call);
  char err[600];
  int rc = npy_save(&S->tn, path, t, err, sizeof err);
  tn_release(&S->tn, t);
  if (rc) return interp_error(S, a->call, "save_npy: %s", err);
  *out = v_nil();
  return EV_OK;
}

static int bi_load_npy(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (files_allowed(S, a, "load_npy")) return EV_ERR;
  const char *path;
  if (arg_str(S, a, 0, &path)) return EV_ERR;
  char err[600];
  blo_tensor *t = npy_load(&S->tn, path, err, sizeof err);
  if (!t) return interp_error(S, a->call, "load_npy: %s", err);
  return ret_tn(S, a, t, out);
}

/* The arrays of a record, flattened depth first in field order: field b of
 * field a is member "a/b" (what numpy.savez writes for the key "a/b"). */
typedef struct npz_list {
  char **names;
  blo_tensor **ts;
  size_t n, cap;
} npz_list;

enum { NPZ_MAX_DEPTH = 64, NPZ_MAX_NAME = 1000 };

static void npz_list_free(blo_state *S, npz_list *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->names[i]);
    tn_release(&S->tn, l->ts[i]);
  }
  free(l->names);
  free(l->ts);
}

static int npz_flatten(blo_state *S, callargs *a, orec *r, const char *prefix, int depth, npz_list *l) {
  if (depth > NPZ_MAX_DEPTH)
    return interp_error(S, a->call, "save_npz: records nested deeper than %d levels", NPZ_MAX_DEPTH);
  for (int i = 0; i < r->n; i++) {
    const char *key = r->keys[i];
    size_t plen = strlen(prefix), klen = strlen(key);
    if (plen + klen + 2 > NPZ_MAX_NAME)
      return interp_error(S, a->call, "save_npz: the name of field '%s' is longer than %d bytes", key, NPZ_MAX_NAME);
    char name[NPZ_MAX_NAME + 2];   /* prefix, key and, for a nested record, '/' */
    memcpy(name, prefix, plen);
    memcpy(name + plen, key, klen + 1);
    if (!klen || strchr(key, '/'))
      return interp_error(S, a->call, "save_npz: field '%s' is empty or contains '/', which separates nested records",
                          name);
    value v = r->vals[i];
    if (v.kind == V_REC) {
      memcpy(name + plen + klen, "/", 2);
      if (npz_flatten(S, a, (orec *)v.u.o, name, depth + 1, l)) return EV_ERR;
      continue;
    }
    if (!v_is_numeric(v)) {
      char d[96];
      v_describe(v, d, sizeof d);
      for (char *c = name; *c; c++)   /* the field as the script writes it: sub.name */
        if (*c == '/') *c = '.';
      return interp_error(S, a->call, "save_npz: field '%s' is a %s, expected a number, tensor or record", name, d);
    }
    if (l->n == l->cap) {
      size_t cap = l->cap ? 2 * l->cap : 16;
      char **nn = realloc(l->names, cap * sizeof *nn);
      if (nn) l->names = nn;
      blo_tensor **nt = realloc(l->ts, cap * sizeof *nt);
      if (nt) l->ts = nt;
      if (!nn || !nt) return oom(S, a);
      l->cap = cap;
    }
    char *dup = strdup(name);
    if (!dup) return oom(S, a);
    blo_tensor *t = v_to_tensor(S, v);
    if (!t) { free(dup); return interp_tn_error(S, a->call); }
    l->names[l->n] = dup;
    l->ts[l->n] = t;
    l->n++;
  }
  return EV_OK;
}

/* save_npz(path, rec): the record's arrays as an uncompressed .npz archive. */
static int bi_save_npz(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (files_allowed(S, a, "save_npz")) return EV_ERR;
  const char *path;
  if (arg_str(S, a, 0, &path)) return EV_ERR;
  if (a->pos[1].kind != V_REC) return type_err(S, a, "save_npz", 1, "a record of tensors");
  npz_list l = {0};
  if (npz_flatten(S, a, (orec *)a->pos[1].u.o, "", 1, &l)) { npz_list_free(S, &l); return EV_ERR; }
  char err[600];
  int rc = npz_save(&S->tn, path, (const char *const *)l.names, (const blo_tensor *const *)l.ts, l.n, err, sizeof err);
  npz_list_free(S, &l);
  if (rc) return interp_error(S, a->call, "save_npz: %s", err);
  *out = v_nil();
  return EV_OK;
}

/* A member name component as a field name: characters other than letters,
 * digits and '_' become '_', a leading digit gets a '_' in front and a
 * keyword gets one behind ("1st-layer" -> "_1st_layer", "if" -> "if_").
 * load_json maps object keys with it too. */
void field_name_from_key(const char *s, size_t n, char *out) {
  static const char *const kw[] = {"let", "fn", "if", "else", "for", "in", "while", "break", "continue", "return",
                                   "print", "problem", "outer", "inner", "minimize", "maximize", "every", "solve",
                                   "with", "true", "false", NULL};
  size_t k = 0;
  if (s[0] >= '0' && s[0] <= '9') out[k++] = '_';
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    out[k++] = ok ? c : '_';
  }
  out[k] = 0;
  for (int i = 0; kw[i]; i++)
    if (!strcmp(out, kw[i])) { out[k++] = '_'; out[k] = 0; break; }
}

/* load_npz(path): a record with one field per member; "a/b.npy" becomes
 * field b of the record in field a. */
static int bi_load_npz(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (files_allowed(S, a, "load_npz")) return EV_ERR;
  const char *path;
  if (arg_str(S, a, 0, &path)) return EV_ERR;
  char err[600];
  npz_entry *e;
  size_t n;
  if (npz_load(&S->tn, path, &e, &n, err, sizeof err)) return interp_error(S, a->call, "load_npz: %s", err);
  orec *root = rec_new(S);
  if (!root) { npz_free(&S->tn, e, n); return oom(S, a); }
  value rv = v_obj(V_REC, &root->h);
  int rc = EV_OK;
  for (size_t i = 0; i < n && rc == EV_OK; i++) {
    const char *name = e[i].name;
    orec *cur = root;
    for (const char *p = name;;) {
      const char *slash = strchr(p, '/');
      size_t len = slash ? (size_t)(slash - p) : strlen(p);
      if (len == 0 || len > NPZ_MAX_NAME) {
        rc = interp_error(S, a->call, "load_npz: '%s' member '%s.npy' has an empty or overlong name part", path, name);
        break;
      }
      char field[NPZ_MAX_NAME + 3];
      field_name_from_key(p, len, field);
      value *have = rec_get(cur, field);
      if (have && (!slash || have->kind != V_REC)) {
        rc = interp_error(S, a->call, "load_npz: '%s' member '%s.npy' maps to field '%s', which another member uses",
                          path, name, field);
        break;
      }
      if (slash) {
        if (!have) {
          orec *sub = rec_new(S);
          if (!sub || rec_set(S, cur, field, v_obj(V_REC, &sub->h))) { rc = oom(S, a); break; }
          have = rec_get(cur, field);
        }
        cur = (orec *)have->u.o;
        p = slash + 1;
        continue;
      }
      blo_tensor *t = e[i].t;
      e[i].t = NULL;
      value v;
      if (t->rank == 0) { v = v_num(t->data[0]); tn_release(&S->tn, t); }
      else v = v_tensor(t);
      if (rec_set(S, cur, field, v)) rc = oom(S, a);
      break;
    }
  }
  npz_free(&S->tn, e, n);
  if (rc != EV_OK) { v_release(S, &rv); return rc; }
  *out = rv;
  return EV_OK;
}

/* load_json(path): the JSON document as a value (stdlib/json.c). */
static int bi_load_json(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (files_allowed(S, a, "load_json")) return EV_ERR;
  const char *path;
  if (arg_str(S, a, 0, &path)) return EV_ERR;
  return json_load_value(S, a->call, path, out);
}

/* ======================================================================
 * checks, lists, records, time
 * ====================================================================== */

/* assert(cond, msg): every element of cond must be nonzero. */
static int bi_assert(blo_state *S, callargs *a, value *out) {
  static const char *const allowed[] = {"msg", NULL};
  if (arg_check_named(S, a, allowed)) return EV_ERR;
  value c = a->pos[0];
  if (!v_is_numeric(c)) return type_err(S, a, "assert", 0, "a number or tensor (the condition)");
  value *msg = a->npos > 1 ? &a->pos[1] : arg_named(a, "msg");
  if (a->npos > 1 && arg_named(a, "msg"))
    return interp_error(S, a->call, "assert: the message is given twice");
  const double *d = c.kind == V_NUM ? &c.u.num : c.u.t->data;
  size_t n = c.kind == V_NUM ? 1 : c.u.t->size;
  for (size_t i = 0; i < n; i++)
    if (d[i] == 0) {
      if (!msg) return interp_error(S, a->call, "assertion failed");
      strbuf sb = {0};
      v_print(&sb, *msg, 0);
      int rc = interp_error(S, a->call, "assertion failed: %s", sb.s ? sb.s : "");
      sb_free(&sb);
      return rc;
    }
  *out = v_nil();
  return EV_OK;
}

/* push(list, v) returns a new list; the argument list is unchanged. */
static int bi_push(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (a->pos[0].kind != V_LIST) return type_err(S, a, "push", 0, "a list");
  olist *l = (olist *)a->pos[0].u.o;
  olist *c = list_new(S, l->n + 1);
  if (!c) return oom(S, a);
  for (int i = 0; i < l->n; i++) list_push(S, c, v_retain(l->items[i]));
  list_push(S, c, v_retain(a->pos[1]));
  *out = v_obj(V_LIST, &c->h);
  return EV_OK;
}

static int bi_keys(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (a->pos[0].kind != V_REC) return type_err(S, a, "keys", 0, "a record");
  orec *r = (orec *)a->pos[0].u.o;
  olist *l = list_new(S, r->n);
  if (!l) return oom(S, a);
  value lv = v_obj(V_LIST, &l->h);
  for (int i = 0; i < r->n; i++) {
    value s = v_str(S, r->keys[i], strlen(r->keys[i]));
    if (s.kind != V_STR || list_push(S, l, s)) { v_release(S, &lv); return oom(S, a); }
  }
  *out = lv;
  return EV_OK;
}

static int bi_has(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (a->pos[0].kind != V_REC) return type_err(S, a, "has", 0, "a record");
  const char *key;
  if (arg_str(S, a, 1, &key)) return EV_ERR;
  *out = v_num(rec_get((orec *)a->pos[0].u.o, key) != NULL);
  return EV_OK;
}

static int bi_time(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  *out = v_num((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
  return EV_OK;
}

/* ======================================================================
 * network layers: convolution, pooling, classification losses
 * ====================================================================== */

/* A size option: a number or a pair [rows, cols], integers >= lo; v == NULL
 * keeps out[] (the default). */
static int size_pair(blo_state *S, callargs *a, const char *fn, const char *what, const value *v, long lo,
                     size_t out[2]) {
  double d[2];
  int n = 0;
  if (!v) return EV_OK;
  if (v->kind == V_NUM) {
    d[0] = d[1] = v->u.num;
    n = 2;
  } else if (v->kind == V_TENSOR && v->u.t->rank == 1 && v->u.t->size == 2) {
    d[0] = v->u.t->data[0];
    d[1] = v->u.t->data[1];
    n = 2;
  } else if (v->kind == V_LIST && ((olist *)v->u.o)->n == 2) {
    olist *l = (olist *)v->u.o;
    for (int i = 0; i < 2; i++)
      if (l->items[i].kind == V_NUM) d[n++] = l->items[i].u.num;
  }
  if (n != 2) {
    char desc[96];
    v_describe(*v, desc, sizeof desc);
    return interp_error(S, a->call, "%s: %s must be a number or a pair [rows, cols], got %s", fn, what, desc);
  }
  for (int i = 0; i < 2; i++)
    if (!(d[i] == floor(d[i]) && d[i] >= (double)lo && d[i] < 1e9)) {
      char num[40];
      fmt_double(num, sizeof num, d[i]);
      return interp_error(S, a->call, "%s: %s must be %s integer, got %s", fn, what,
                          lo > 0 ? "a positive" : "a non-negative", num);
    }
  out[0] = (size_t)d[0];
  out[1] = (size_t)d[1];
  return EV_OK;
}

static const char *const CONV_NAMED[] = {"b", "stride", "padding", NULL};

/* conv2d(x, w, b = none, stride = 1, padding = 0) */
static int bi_conv2d(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, CONV_NAMED)) return EV_ERR;
  if (need_numeric(S, a, "conv2d", 0) || need_numeric(S, a, "conv2d", 1)) return EV_ERR;
  size_t st[2] = {1, 1}, pd[2] = {0, 0};
  const value *bv = a->npos > 2 ? &a->pos[2] : arg_named(a, "b");
  if (a->npos > 2 && arg_named(a, "b")) return interp_error(S, a->call, "conv2d: bias given twice");
  if (size_pair(S, a, "conv2d", "stride", arg_named(a, "stride"), 1, st) ||
      size_pair(S, a, "conv2d", "padding", arg_named(a, "padding"), 0, pd))
    return EV_ERR;
  if (bv && bv->kind == V_NIL) bv = NULL;
  if (bv && !v_is_numeric(*bv)) {
    char desc[96];
    v_describe(*bv, desc, sizeof desc);
    return interp_error(S, a->call, "conv2d: bias must be a vector, got %s", desc);
  }
  tn_conv_opt o = {st[0], st[1], pd[0], pd[1]};
  ad_val x, w, b = {0}, y = {0}, bb = {0}, r;
  if (v_to_ad(S, a->call, a->pos[0], &x)) return EV_ERR;
  if (v_to_ad(S, a->call, a->pos[1], &w)) { ad_val_release(&S->tn, &x); return EV_ERR; }
  int rc;
  if (bv && v_to_ad(S, a->call, *bv, &b)) {
    rc = EV_ERR;
    goto done;
  }
  if (ad_conv2d(&S->tn, S->tape, x, w, &o, bv ? &y : &r)) {
    rc = interp_tn_error(S, a->call);
    goto done;
  }
  if (bv) {
    if (b.v->rank != 1 || b.v->size != w.v->shape[0]) {
      char s1[96], s2[96];
      rc = interp_error(S, a->call, "conv2d: bias %s does not match weight %s (one bias per output channel)",
                        shape_text(b.v, s1, sizeof s1), shape_text(w.v, s2, sizeof s2));
      goto done;
    }
    size_t bs[3] = {b.v->size, 1, 1};
    if (ad_reshape(&S->tn, S->tape, b, 3, bs, &bb) || ad_binary(&S->tn, S->tape, TN_ADD, y, bb, &r)) {
      rc = interp_tn_error(S, a->call);
      goto done;
    }
  }
  *out = v_from_ad(S, r);
  rc = EV_OK;
done:
  ad_val_release(&S->tn, &x);
  ad_val_release(&S->tn, &w);
  ad_val_release(&S->tn, &b);
  ad_val_release(&S->tn, &y);
  ad_val_release(&S->tn, &bb);
  return rc;
}

static const char *const POOL_NAMED[] = {"stride", NULL};

static int pool2d(blo_state *S, callargs *a, value *out, const char *name, int is_max) {
  if (arg_check_named(S, a, POOL_NAMED)) return EV_ERR;
  if (need_numeric(S, a, name, 0)) return EV_ERR;
  size_t k[2], st[2];
  if (size_pair(S, a, name, "size", &a->pos[1], 1, k)) return EV_ERR;
  st[0] = k[0];
  st[1] = k[1];
  if (size_pair(S, a, name, "stride", arg_named(a, "stride"), 1, st)) return EV_ERR;
  tn_conv_opt o = {st[0], st[1], 0, 0};
  ad_val x, r;
  if (v_to_ad(S, a->call, a->pos[0], &x)) return EV_ERR;
  int rc = is_max ? ad_maxpool2d(&S->tn, S->tape, x, k[0], k[1], &o, &r)
                  : ad_avgpool2d(&S->tn, S->tape, x, k[0], k[1], &o, &r);
  return ad_done(S, a, rc, &x, r, out);
}

static int bi_maxpool2d(blo_state *S, callargs *a, value *out) { return pool2d(S, a, out, "maxpool2d", 1); }
static int bi_avgpool2d(blo_state *S, callargs *a, value *out) { return pool2d(S, a, out, "avgpool2d", 0); }

/* Class labels: a vector of integers in [0, K) (n of them) read into a new
 * one-hot [n, K] tensor. */
static int labels_one_hot(blo_state *S, callargs *a, const char *name, const blo_tensor *lab, size_t K,
                          blo_tensor **out) {
  *out = NULL;
  size_t n = lab->size, sh[2] = {n, K};
  for (size_t i = 0; i < n; i++) {
    double d = lab->data[i];
    if (!(d == floor(d) && d >= 0 && d < (double)K)) {
      char num[40];
      fmt_double(num, sizeof num, d);
      return interp_error(S, a->call, "%s: label %zu is %s, not a class in 0..%zu", name, i, num, K ? K - 1 : 0);
    }
  }
  blo_tensor *t = tn_zeros(&S->tn, 2, sh);
  if (!t) return interp_tn_error(S, a->call);
  for (size_t i = 0; i < n; i++) t->data[i * K + (size_t)lab->data[i]] = 1.0;
  *out = t;
  return EV_OK;
}

/* The arguments of cross_entropy and accuracy: logits [N, K] and labels,
 * either [N] classes (*classes = 1) or [N, K] rows.  Errors name both shapes. */
static int logits_and_labels(blo_state *S, callargs *a, const char *name, const blo_tensor **zt_out,
                             const blo_tensor **lt_out, int *classes_out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  if (need_numeric(S, a, name, 0) || need_numeric(S, a, name, 1)) return EV_ERR;
  value zv = a->pos[0], lv = a->pos[1];
  char s1[96], s2[96];
  const blo_tensor *zt = zv.kind == V_TENSOR ? zv.u.t : NULL, *lt = lv.kind == V_TENSOR ? lv.u.t : NULL;
  if (!zt || zt->rank != 2)
    return interp_error(S, a->call, "%s: logits must have shape [N, K], got %s", name,
                        zt ? shape_text(zt, s1, sizeof s1) : "a number");
  int classes = lt && lt->rank == 1;
  if (!lt || (classes ? lt->shape[0] != zt->shape[0] : !tn_same_shape(lt, zt)))
    return interp_error(S, a->call, "%s: labels %s do not match logits %s (want [%zu] classes or [%zu, %zu] rows)",
                        name, lt ? shape_text(lt, s1, sizeof s1) : "(a number)", shape_text(zt, s2, sizeof s2),
                        zt->shape[0], zt->shape[0], zt->shape[1]);
  *zt_out = zt;
  *lt_out = lt;
  *classes_out = classes;
  return EV_OK;
}

/* cross_entropy(logits [N, K], labels [N] of classes or [N, K] of rows) */
static int bi_cross_entropy(blo_state *S, callargs *a, value *out) {
  const blo_tensor *zt, *lt;
  int classes;
  if (logits_and_labels(S, a, "cross_entropy", &zt, &lt, &classes)) return EV_ERR;
  value zv = a->pos[0], lv = a->pos[1];
  ad_val z, p, r;
  if (classes) {
    blo_tensor *oh;
    if (no_ad(S, a, "cross_entropy (class labels)", lv)) return EV_ERR;
    if (labels_one_hot(S, a, "cross_entropy", lt, zt->shape[1], &oh)) return EV_ERR;
    p = ad_const(oh);
  } else if (v_to_ad(S, a->call, lv, &p)) {
    return EV_ERR;
  }
  if (v_to_ad(S, a->call, zv, &z)) { ad_val_release(&S->tn, &p); return EV_ERR; }
  int rc = ad_cross_entropy(&S->tn, S->tape, z, p, &r);
  ad_val_release(&S->tn, &p);
  return ad_done(S, a, rc, &z, r, out);
}

/* one_hot(labels, K) */
static int bi_one_hot(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  long K;
  blo_tensor *lab, *oh;
  if (arg_int(S, a, 1, &K)) return EV_ERR;
  if (K < 1) return interp_error(S, a->call, "one_hot: the number of classes must be at least 1, got %ld", K);
  if (arg_tensor(S, a, 0, &lab)) return EV_ERR;
  if (lab->rank > 1) {
    char s1[96];
    int rc = interp_error(S, a->call, "one_hot: labels must be a vector of classes, got %s", shape_text(lab, s1, sizeof s1));
    tn_release(&S->tn, lab);
    return rc;
  }
  int rc = labels_one_hot(S, a, "one_hot", lab, (size_t)K, &oh);
  tn_release(&S->tn, lab);
  if (rc) return rc;
  return ret_tn(S, a, oh, out);
}

/* accuracy(logits [N, K], labels [N] or [N, K]): the fraction of rows whose
 * largest logit is at the label (a row label's largest entry) */
static int bi_accuracy(blo_state *S, callargs *a, value *out) {
  const blo_tensor *zt, *lt;
  int classes;
  if (logits_and_labels(S, a, "accuracy", &zt, &lt, &classes)) return EV_ERR;
  blo_tensor *pz = tn_reduce(&S->tn, TN_ARGMAX, zt, 1), *pl = classes ? NULL : tn_reduce(&S->tn, TN_ARGMAX, lt, 1);
  if (!pz || (!classes && !pl)) {
    tn_release(&S->tn, pz);
    return interp_tn_error(S, a->call);
  }
  size_t N = zt->shape[0], hit = 0, K = zt->shape[1];
  int rc = EV_OK;
  for (size_t i = 0; i < N; i++) {
    double want = classes ? lt->data[i] : pl->data[i];
    if (classes && !(want == floor(want) && want >= 0 && want < (double)K)) {
      char num[40];
      fmt_double(num, sizeof num, want);
      rc = interp_error(S, a->call, "accuracy: label %zu is %s, not a class in 0..%zu", i, num, K - 1);
      break;
    }
    hit += pz->data[i] == want;
  }
  tn_release(&S->tn, pz);
  tn_release(&S->tn, pl);
  if (rc) return rc;
  *out = v_num(N ? (double)hit / (double)N : NAN);
  return EV_OK;
}

/* ======================================================================
 * the table (sorted by name for binary search)
 * ====================================================================== */

/* autodiff: interp/diff.c */
int bi_grad(blo_state *S, callargs *a, value *out);
int bi_jvp(blo_state *S, callargs *a, value *out);
int bi_hvp(blo_state *S, callargs *a, value *out);

static const builtin_def builtins[] = {
  {"abs", bi_abs, 1, 1, "abs(x)", "absolute value, elementwise", BI_OPS_ALL},
  {"accuracy", bi_accuracy, 2, 2, "accuracy(logits, labels)", "fraction of the rows of logits [N, K] whose largest entry is at the label (labels: [N] classes or [N, K] rows, their largest entry); not differentiated", 0},
  {"acos", bi_acos, 1, 1, "acos(x)", "arccosine in [0, pi], elementwise; NaN outside [-1, 1] (as in C and NumPy)", BI_OPS_ALL},
  {"all", bi_all, 1, 1, "all(x)", "1 if every element of x is nonzero, else 0", 0},
  {"any", bi_any, 1, 1, "any(x)", "1 if some element of x is nonzero, else 0", 0},
  {"arange", bi_arange, 1, 3, "arange(n) | arange(a, b) | arange(a, b, step)", "the vector a, a + step, ... below b (a = 0, step = 1 by default)", 0},
  {"argmax", bi_argmax, 1, 1, "argmax(x, axis = all)", "position of the largest element (in the flattened tensor, or along axis)", 0},
  {"argmin", bi_argmin, 1, 1, "argmin(x, axis = all)", "position of the smallest element (in the flattened tensor, or along axis)", 0},
  {"argsort", bi_argsort, 1, 1, "argsort(v)", "positions that sort the vector v ascending (ties keep their order)", 0},
  {"asin", bi_asin, 1, 1, "asin(x)", "arcsine in [-pi/2, pi/2], elementwise; NaN outside [-1, 1] (asin(2) is NaN, as in C and NumPy)", BI_OPS_ALL},
  {"assert", bi_assert, 1, 2, "assert(cond, msg = \"\")", "stop with \"assertion failed: msg\" unless every element of cond is nonzero", 0},
  {"atan", bi_atan, 1, 1, "atan(x)", "arctangent in (-pi/2, pi/2), elementwise", BI_OPS_ALL},
  {"atan2", bi_atan2, 2, 2, "atan2(y, x)", "angle of the point (x, y) in [-pi, pi], elementwise with broadcasting; atan2(0, 0) = 0, derivative NaN there", BI_OPS_ALL},
  {"avgpool2d", bi_avgpool2d, 2, 2, "avgpool2d(x, size, stride = size)", "mean over size x size windows (size, stride: a number or a pair [rows, cols]) of x [N, C, H, W], no padding", BI_OPS_FIRST},
  {"chol", bi_chol, 1, 1, "chol(A)", "lower Cholesky factor L of a symmetric positive definite A = L L'", 0},
  {"clip", bi_clip, 3, 3, "clip(x, lo, hi)", "x limited to [lo, hi] elementwise: min(max(x, lo), hi)", BI_OPS_ALL},
  {"concat", bi_concat, 1, -1, "concat(a, b, ..., axis = 0)", "join tensors along an existing axis (also concat(list))", BI_OPS_ALL},
  {"conv2d", bi_conv2d, 2, 3, "conv2d(x, w, b = none, stride = 1, padding = 0)", "2-D convolution (cross-correlation, as in PyTorch) of x [N, C, H, W] with w [O, C, kh, kw] plus b [O]: [N, O, H', W'] with H' = (H + 2 padding - kh) / stride + 1 rounded down; stride, padding: a number or a pair [rows, cols]", BI_OPS_ALL},
  {"cos", bi_cos, 1, 1, "cos(x)", "cosine, elementwise", BI_OPS_ALL},
  {"cosh", bi_cosh, 1, 1, "cosh(x)", "hyperbolic cosine, elementwise (inf beyond |x| ~ 710)", BI_OPS_ALL},
  {"cross_entropy", bi_cross_entropy, 2, 2, "cross_entropy(logits, labels)", "mean over rows of -sum(p * log(softmax(logits row))) for logits [N, K] and labels [N] of classes 0..K-1 or rows p [N, K] (learned soft labels; differentiable), computed stably in one pass", BI_OPS_ALL},
  {"det", bi_det, 1, 1, "det(A)", "determinant of a square matrix", 0},
  {"diag", bi_diag, 1, 1, "diag(v) | diag(A)", "square matrix with diagonal v, or the diagonal of matrix A", BI_OPS_ALL},
  {"dot", bi_dot, 2, 2, "dot(a, b)", "sum(a * b) for two tensors of the same shape, or over the fields of two records with the same fields", BI_OPS_ALL},
  {"eigh", bi_eigh, 1, 1, "eigh(A)", "eigen-decomposition of a symmetric matrix: {values (ascending), vectors (columns)}", 0},
  {"erf", bi_erf, 1, 1, "erf(x)", "error function 2/sqrt(pi) * integral of exp(-t^2) over [0, x], in (-1, 1), elementwise", BI_OPS_ALL},
  {"exp", bi_exp, 1, 1, "exp(x)", "exponential, elementwise", BI_OPS_ALL},
  {"expm1", bi_expm1, 1, 1, "expm1(x)", "exp(x) - 1, elementwise, accurate for small x", BI_OPS_ALL},
  {"eye", bi_eye, 1, 2, "eye(n) | eye(n, m)", "identity matrix n x n (or n x m)", 0},
  {"fill", bi_fill, 1, -1, "fill(d1, d2, ..., value)", "tensor of the given dimensions with every element equal to value", 0},
  {"flatten", bi_flatten, 1, 1, "flatten(x)", "the elements of x as a vector, in row-major order", BI_OPS_ALL},
  {"floor", bi_floor, 1, 1, "floor(x)", "largest integer not above x, elementwise", 0},
  {"format", bi_format, 1, -1, "format(fmt, values...)", "printf-style string: %d %i %f %e %g %s %% with flags, width and precision", 0},
  {"grad", bi_grad, 2, 2, "grad(expr, x) | grad(expr, [x, y])", "gradient of the scalar expr with respect to variable x, shaped like x (a record variable: a record of gradients; a list of variables: a list)", 1},
  {"has", bi_has, 2, 2, "has(record, \"name\")", "1 if the record has the field, else 0", 0},
  {"hvp", bi_hvp, 3, 4, "hvp(expr, x, v) | hvp(expr, x, v, y)", "Hessian-vector product H_xx v of the scalar expr (mixed H_yx v with y); x, v, y may be records of tensors", 1},
  {"inv", bi_inv, 1, 1, "inv(A)", "inverse of a square matrix (prefer linsolve for solving systems)", BI_OPS_ALL},
  {"isnan", bi_isnan, 1, 1, "isnan(x)", "1 where x is NaN, else 0, elementwise", 0},
  {"jvp", bi_jvp, 3, 3, "jvp(expr, x, v)", "directional derivative of expr along v at the current x (forward mode); a record variable takes a record v", 1},
  {"keys", bi_keys, 1, 1, "keys(record)", "list of the record's field names", 0},
  {"len", bi_len, 1, 1, "len(x)", "length of the first axis of a tensor, or of a list, string or record", BI_OPS_ALL},
  {"linsolve", bi_linsolve, 2, 2, "linsolve(A, b)", "solution x of A x = b (b a vector or a matrix of right-hand sides)", BI_OPS_ALL},
  {"linspace", bi_linspace, 3, 3, "linspace(a, b, n)", "n evenly spaced points from a to b inclusive", 0},
  {"load_csv", bi_load_csv, 1, 1, "load_csv(path, header = false, cols = all)", "numeric CSV file as a [rows, cols] tensor ([rows] for one column)", 0},
  {"load_idx", bi_load_idx, 1, 1, "load_idx(path)", "IDX file (MNIST format, plain or .gz) as a tensor with the file's dimensions", 0},
  {"load_json", bi_load_json, 1, 1, "load_json(path)", "JSON file as a value: numbers, strings, true/false as 1/0, objects as records, numeric arrays (nested, equal lengths) as tensors, other arrays as lists", 0},
  {"load_npy", bi_load_npy, 1, 1, "load_npy(path)", "NumPy .npy file as a tensor (a number for shape ()); float, int, uint and bool dtypes convert to double", 0},
  {"load_npz", bi_load_npz, 1, 1, "load_npz(path)", "NumPy .npz archive (stored or deflated) as a record of tensors; member \"a/b.npy\" becomes field a.b", 0},
  {"log", bi_log, 1, 1, "log(x)", "natural logarithm, elementwise; -inf at 0, NaN below", BI_OPS_ALL},
  {"log1p", bi_log1p, 1, 1, "log1p(x)", "log(1 + x), elementwise, accurate for small x; -inf at -1, NaN below", BI_OPS_ALL},
  {"logsumexp", bi_logsumexp, 1, 1, "logsumexp(x, axis = all)", "log(sum(exp(x))) computed without overflow", BI_OPS_ALL},
  {"lstsq", bi_lstsq, 2, 2, "lstsq(A, b)", "least-squares solution x minimising norm(A @ x - b)", 0},
  {"max", bi_max, 1, 2, "max(x, axis = all) | max(a, b)", "largest element (along axis), or the elementwise maximum of a and b", BI_OPS_ALL},
  {"maxpool2d", bi_maxpool2d, 2, 2, "maxpool2d(x, size, stride = size)", "maximum over size x size windows (size, stride: a number or a pair) of x [N, C, H, W], no padding; the derivative goes to the first maximum of each window", BI_OPS_FIRST},
  {"mean", bi_mean, 1, 1, "mean(x, axis = all)", "arithmetic mean of the elements (along axis)", BI_OPS_ALL},
  {"min", bi_min, 1, 2, "min(x, axis = all) | min(a, b)", "smallest element (along axis), or the elementwise minimum of a and b", BI_OPS_ALL},
  {"norm", bi_norm, 1, 1, "norm(x, axis = all)", "Euclidean norm of the elements (along axis)", BI_OPS_ALL},
  {"num", bi_num, 1, 1, "num(s)", "the number written in string s", 0},
  {"one_hot", bi_one_hot, 2, 2, "one_hot(labels, K)", "[N, K] rows with a 1 at each label (a vector of classes 0..K-1)", 0},
  {"ones", bi_ones, 0, -1, "ones(d1, d2, ...) | ones(shape)", "tensor of ones", 0},
  {"outer", bi_outer, 2, 2, "outer(a, b)", "outer product of two vectors: the matrix a[i] * b[j]", BI_OPS_ALL},
  {"pi", bi_pi, 0, 0, "pi", "the constant 3.141592653589793: a name, not a call (a 'let pi' hides it)", BI_CONST},
  {"pinv", bi_pinv, 1, 1, "pinv(A)", "Moore-Penrose pseudo-inverse", 0},
  {"prod", bi_prod, 1, 1, "prod(x, axis = all)", "product of the elements (along axis)", BI_OPS_ALL},
  {"push", bi_push, 2, 2, "push(list, v)", "a new list: list with v appended (the argument is unchanged)", 0},
  {"rand", bi_rand, 0, -1, "rand(d1, d2, ...)", "uniform random numbers in [0, 1); a number when no dimensions are given", 0},
  {"randint", bi_randint, 2, -1, "randint(lo, hi, d1, d2, ...)", "random integers in [lo, hi); a number when no dimensions are given", 0},
  {"randn", bi_randn, 0, -1, "randn(d1, d2, ...)", "standard normal random numbers; a number when no dimensions are given", 0},
  {"randperm", bi_randperm, 1, 1, "randperm(n)", "a random permutation of 0, 1, ..., n - 1", 0},
  {"rank", bi_rank, 0, 1, "rank(x) | rank()",
   "rank(x): number of axes of x (0 for a number); rank(): this process's MPI rank, 0 .. nranks() - 1 (0 without MPI, see MPI.md)", BI_OPS_ALL},
  {"relu", bi_relu, 1, 1, "relu(x)", "max(x, 0), elementwise", BI_OPS_ALL},
  {"reshape", bi_reshape, 2, -1, "reshape(x, d1, d2, ...) | reshape(x, shape)", "same elements in a new shape; one dimension may be -1", BI_OPS_FIRST},
  {"save_csv", bi_save_csv, 2, 2, "save_csv(path, x, header = [names])", "write a number, vector (one column) or matrix as CSV", 0},
  {"save_npy", bi_save_npy, 2, 2, "save_npy(path, x)", "write a number or tensor as a NumPy .npy file (float64, C order)", 0},
  {"save_npz", bi_save_npz, 2, 2, "save_npz(path, rec)", "write a record of tensors (nested records as \"a/b\") as an uncompressed NumPy .npz archive", 0},
  {"seed", bi_seed, 1, 1, "seed(n)", "reseed the random generator (same seed, same numbers on every machine)", 0},
  {"shape", bi_shape, 1, 1, "shape(x)", "vector of dimensions (empty for a number)", BI_OPS_ALL},
  {"shuffle", bi_shuffle, 1, 1, "shuffle(x)", "random permutation of the first axis of a tensor, or of a list", 0},
  {"sigmoid", bi_sigmoid, 1, 1, "sigmoid(x)", "1 / (1 + exp(-x)), elementwise", BI_OPS_ALL},
  {"sign", bi_sign, 1, 1, "sign(x)", "-1, 0 or 1 by the sign of x, elementwise", 0},
  {"sin", bi_sin, 1, 1, "sin(x)", "sine, elementwise", BI_OPS_ALL},
  {"sinh", bi_sinh, 1, 1, "sinh(x)", "hyperbolic sine, elementwise (+-inf beyond |x| ~ 710)", BI_OPS_ALL},
  {"size", bi_size, 1, 1, "size(x)", "number of elements (1 for a number)", BI_OPS_ALL},
  {"softmax", bi_softmax, 1, 1, "softmax(x, axis = all)", "exp(x) / sum(exp(x)) (along axis), computed stably", BI_OPS_ALL},
  {"softplus", bi_softplus, 1, 1, "softplus(x)", "log(1 + exp(x)), elementwise, computed stably", BI_OPS_ALL},
  {"sort", bi_sort, 1, 1, "sort(v)", "the vector v sorted ascending (differentiable: a gather)", 0},
  {"sqrt", bi_sqrt, 1, 1, "sqrt(x)", "square root, elementwise; NaN below 0", BI_OPS_ALL},
  {"stack", bi_stack, 1, -1, "stack(a, b, ..., axis = 0)", "join equal-shaped tensors along a new axis (also stack(list))", BI_OPS_ALL},
  {"str", bi_str, 1, 1, "str(x)", "x as text, as print shows it", 0},
  {"sum", bi_sum, 1, 1, "sum(x, axis = all)", "sum of the elements (along axis)", BI_OPS_ALL},
  {"tan", bi_tan, 1, 1, "tan(x)", "tangent, elementwise (x in radians)", BI_OPS_ALL},
  {"tanh", bi_tanh, 1, 1, "tanh(x)", "hyperbolic tangent, elementwise", BI_OPS_ALL},
  {"time", bi_time, 0, 0, "time()", "seconds on a monotonic clock, for timing", 0},
  {"trace", bi_trace, 1, 1, "trace(A)", "sum of the diagonal of a matrix", BI_OPS_ALL},
  {"transpose", bi_transpose, 1, 1, "transpose(x)", "x' : swap the axes of a matrix (reverse them for ranks 3 to 6)", BI_OPS_ALL},
  {"zeros", bi_zeros, 0, -1, "zeros(d1, d2, ...) | zeros(shape)", "tensor of zeros", 0},
};

enum { NBUILTINS = sizeof builtins / sizeof builtins[0] };

/* Builtins defined elsewhere, each module with its own table:
 * runtime/bilevel_builtins.c (solve specs, hypergrad), stdlib/plot.c and
 * stdlib/mpi.c (collectives). */
const builtin_def *bilevel_builtin_find(const char *name);
const builtin_def *bilevel_builtin_at(size_t i);
const builtin_def *plot_builtin_find(const char *name);
const builtin_def *plot_builtin_at(size_t i);
const builtin_def *mpi_builtin_find(const char *name);
const builtin_def *mpi_builtin_at(size_t i);

const builtin_def *builtin_find(const char *name) {
  size_t lo = 0, hi = NBUILTINS;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(name, builtins[mid].name);
    if (c == 0) return &builtins[mid];
    if (c < 0) hi = mid;
    else lo = mid + 1;
  }
  const builtin_def *b = bilevel_builtin_find(name);
  if (!b) b = plot_builtin_find(name);
  return b ? b : mpi_builtin_find(name);
}

/* Iterates this table, then the bilevel one, then plot's, then mpi's. */
const builtin_def *builtin_at(size_t i) {
  if (i < NBUILTINS) return &builtins[i];
  i -= NBUILTINS;
  size_t nb = 0;
  while (bilevel_builtin_at(nb)) nb++;
  if (i < nb) return bilevel_builtin_at(i);
  i -= nb;
  size_t np = 0;
  while (plot_builtin_at(np)) np++;
  if (i < np) return plot_builtin_at(i);
  return mpi_builtin_at(i - np);
}
