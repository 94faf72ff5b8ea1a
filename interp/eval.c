/* eval.c: tree-walking evaluator.  Every numeric operation goes through the
 * autodiff layer (runtime/ad.h), which costs nothing when no tape or tangent
 * is active and makes grad/jvp/hvp work through any script code. */
/* GCC's SLP vectorizer copies the small structs passed by value here
 * (ad_val, value) with 16-byte loads right after they were written field by
 * field: a store-forwarding stall per copy, several per operation on tiny
 * problems (~5% of W3).  Loop vectorization is unaffected; results are the same. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize ("no-tree-slp-vectorize")
#endif
#include "interp.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_CALL_DEPTH = 200, EVAL_MAX_DEPTH = 2000 };

/* The evaluator recurses through eval_node and exec_stmt once per level of
 * the program.  Their frames must stay small, so the helpers with large
 * locals (argument buffers, index specs) are kept out of line: inlined, they
 * made every level of 1+1+...+1 pay for a call's buffers (1.2 KB a level). */
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

/* ---------- autodiff bridge ---------- */

/* The bridge is inline within the evaluator: called out of line, the
 * ad_val it fills field by field was then reloaded as a whole to be passed on,
 * a store-forwarding stall on every operation of a tiny problem. */
static inline int to_ad(blo_state *S, const ast_node *at, value v, ad_val *out) {
  if (v.kind == V_NUM) {
    out->v = tn_scalar(&S->tn, v.u.num);
    if (!out->v) return interp_tn_error(S, at);
    out->t = NULL;
    out->node = -1;
    return EV_OK;
  }
  if (v.kind == V_TENSOR) {
    out->v = tn_retain(v.u.t);
    out->t = tn_retain(v.tan);
    out->node = (S->tape && v.gen == S->tape_gen) ? v.node : -1;
    return EV_OK;
  }
  char d[64];
  v_describe(v, d, sizeof d);
  return interp_error(S, at, "expected a number or tensor, got %s", d);
}

static inline value from_ad(blo_state *S, ad_val a) {
  if (a.node < 0 && !a.t && a.v->rank == 0) {
    value r = v_num(a.v->data[0]);
    tn_release(&S->tn, a.v);
    return r;
  }
  value r = v_tensor(a.v);
  r.tan = a.t;
  r.node = a.node;
  r.gen = S->tape_gen;
  return r;
}

int v_to_ad(blo_state *S, const ast_node *at, value v, ad_val *out) { return to_ad(S, at, v, out); }

value v_from_ad(blo_state *S, ad_val a) { return from_ad(S, a); }

static tn_binary_op tn_op_of(int op) {
  switch (op) {
  case OP_ADD: return TN_ADD;
  case OP_SUB: return TN_SUB;
  case OP_MUL: return TN_MUL;
  case OP_DIV: return TN_DIV;
  case OP_POW: return TN_POW;
  case OP_LT: return TN_LT;
  case OP_LE: return TN_LE;
  case OP_GT: return TN_GT;
  case OP_GE: return TN_GE;
  case OP_EQ: return TN_EQ;
  default: return TN_NE;
  }
}

static const char *op_text(int op) {
  static const char *t[] = {"+", "-", "*", "/", "%", "^", "@", "<", "<=", ">", ">=", "==", "!=", "-", "!"};
  return (op >= 0 && op <= OP_NOT) ? t[op] : "?";
}

static int str_binary(blo_state *S, const ast_node *at, int op, value a, value b, value *out) {
  if (op == OP_EQ || op == OP_NE) {
    int eq = a.kind == b.kind && a.kind == V_STR && v_strlen(a) == v_strlen(b) &&
             memcmp(v_cstr(a), v_cstr(b), v_strlen(a)) == 0;
    *out = v_num(op == OP_EQ ? eq : !eq);
    return EV_OK;
  }
  if (op == OP_ADD) {
    strbuf sb = {0};
    v_print(&sb, a, 0);
    v_print(&sb, b, 0);
    if (sb.oom) { sb_free(&sb); return interp_error(S, at, "out of memory"); }
    *out = v_str(S, sb.s ? sb.s : "", sb.n);
    sb_free(&sb);
    return out->kind == V_STR ? EV_OK : interp_error(S, at, "out of memory");
  }
  char da[64], db[64];
  v_describe(a, da, sizeof da);
  v_describe(b, db, sizeof db);
  return interp_error(S, at, "operator '%s' cannot take %s and %s", op_text(op), da, db);
}

int op_binary(blo_state *S, const ast_node *at, int op, value a, value b, value *out) {
  if (a.kind == V_NUM && b.kind == V_NUM) {
    double x = a.u.num, y = b.u.num;
    if (op == OP_MOD) { *out = v_num(y == 0 ? NAN : x - floor(x / y) * y); return EV_OK; }
    if (op == OP_MATMUL) { *out = v_num(x * y); return EV_OK; }
    *out = v_num(tn_binary_scalar(tn_op_of(op), x, y));
    return EV_OK;
  }
  if (a.kind == V_STR || b.kind == V_STR) return str_binary(S, at, op, a, b, out);
  if (!v_is_numeric(a) || !v_is_numeric(b)) {
    if (op == OP_EQ || op == OP_NE) {
      int same = a.kind == b.kind && (a.kind == V_NIL || a.u.o == b.u.o);
      *out = v_num(op == OP_EQ ? same : !same);
      return EV_OK;
    }
    char da[64], db[64];
    v_describe(a, da, sizeof da);
    v_describe(b, db, sizeof db);
    return interp_error(S, at, "operator '%s' cannot take %s and %s", op_text(op), da, db);
  }
  ad_val x, y, r;
  if (to_ad(S, at, a, &x)) return EV_ERR;
  if (to_ad(S, at, b, &y)) { ad_val_release(&S->tn, &x); return EV_ERR; }
  int rc;
  if (op == OP_MATMUL) {
    rc = ad_matmul(&S->tn, S->tape, x, y, &r);
  } else if (op == OP_MOD) {
    rc = tn_error(&S->tn, "operator '%%' works on numbers only");
  } else {
    rc = ad_binary(&S->tn, S->tape, tn_op_of(op), x, y, &r);
  }
  ad_val_release(&S->tn, &x);
  ad_val_release(&S->tn, &y);
  if (rc) return interp_tn_error(S, at);
  *out = from_ad(S, r);
  return EV_OK;
}

int op_unary(blo_state *S, const ast_node *at, tn_unary_op op, value a, value *out) {
  if (a.kind == V_NUM) {
    *out = v_num(tn_unary_scalar(op, a.u.num));
    return EV_OK;
  }
  ad_val x, r;
  if (to_ad(S, at, a, &x)) return EV_ERR;
  int rc = ad_unary(&S->tn, S->tape, op, x, &r);
  ad_val_release(&S->tn, &x);
  if (rc) return interp_tn_error(S, at);
  *out = from_ad(S, r);
  return EV_OK;
}

/* ---------- helpers ---------- */

/* A number read from v as data, which binds a recording in progress to its
 * point (diff_note_read). */
static int read_num(blo_state *S, value v, double *d) {
  diff_note_read(S, v);
  return v_to_double(v, d);
}

static int truthy(blo_state *S, const ast_node *at, value v, int *out) {
  double d;
  if (read_num(S, v, &d) == 0) { *out = d != 0; return EV_OK; }
  char desc[64];
  v_describe(v, desc, sizeof desc);
  return interp_error(S, at, "condition must be a number, got %s", desc);
}

static int check_interrupt(blo_state *S, const ast_node *at) {
  if (S->interrupt && *S->interrupt) {
    *S->interrupt = 0;
    interp_error(S, at, "interrupted");
    S->err.status = BLO_INTERRUPTED;
    return EV_ERR;
  }
  return EV_OK;
}

/* The end of an evaluation the host started: an interrupt raised during it
 * and never seen (nothing polled after it was set) is dropped, so it cannot
 * stop the next evaluation. */
static void run_end(blo_state *S) {
  if (S->interrupt) *S->interrupt = 0;
}

/* [a, b, c]: numbers and equal-shaped tensors stack into a tensor (so
 * [[1, 2], [3, 4]] is a matrix); anything else makes a list. */
static NOINLINE int eval_list(blo_state *S, const ast_node *n, value *out) {
  int k = n->nkids;
  value stackbuf[8];
  value *vals = k <= 8 ? stackbuf : calloc((size_t)k, sizeof(value));
  if (!vals) return interp_error(S, n, "out of memory");
  int rc = EV_OK, numeric = k > 0;
  int i;
  for (i = 0; i < k; i++) {
    vals[i] = v_nil();   /* released below even when its evaluation fails */
    if ((rc = eval_expr(S, n->kids[i], &vals[i])) != EV_OK) break;
    if (!v_is_numeric(vals[i])) numeric = 0;
  }
  if (rc == EV_OK && numeric) {
    /* shapes must agree for stacking */
    const blo_tensor *first = vals[0].kind == V_TENSOR ? vals[0].u.t : NULL;
    for (int j = 1; j < k && numeric; j++) {
      const blo_tensor *t = vals[j].kind == V_TENSOR ? vals[j].u.t : NULL;
      if ((first == NULL) != (t == NULL)) {
        int r1 = first ? first->rank : 0, r2 = t ? t->rank : 0;
        if (r1 != 0 || r2 != 0) numeric = 0;
      } else if (first && t && !tn_same_shape(first, t)) {
        numeric = 0;
      }
    }
    if (!numeric) {
      char d0[64], dj[64];
      v_describe(vals[0], d0, sizeof d0);
      for (int j = 1; j < k; j++) {
        v_describe(vals[j], dj, sizeof dj);
        if (strcmp(d0, dj) != 0 && !(vals[0].kind == V_NUM && vals[j].kind == V_NUM)) break;
      }
      rc = interp_error(S, n, "list literal mixes shapes: element 0 is %s, another is %s; "
                        "rows of a matrix must have equal length", d0, dj);
    }
  }
  if (rc == EV_OK && numeric) {
    int any_ad = 0;
    for (int j = 0; j < k; j++)
      if (vals[j].kind == V_TENSOR && (vals[j].tan || (S->tape && vals[j].gen == S->tape_gen && vals[j].node >= 0)))
        any_ad = 1;
    if (!any_ad) {
      /* fast path: copy numbers directly */
      const blo_tensor *first = vals[0].kind == V_TENSOR ? vals[0].u.t : NULL;
      size_t shape[TN_MAX_RANK];
      int rank = 1 + (first ? first->rank : 0);
      if (rank > TN_MAX_RANK) {
        rc = interp_error(S, n, "list literal would have rank %d; tensors have rank at most %d", rank, TN_MAX_RANK);
      } else {
        shape[0] = (size_t)k;
        for (int d = 1; d < rank; d++) shape[d] = first->shape[d - 1];
        blo_tensor *t = tn_new(&S->tn, rank, shape);
        if (!t) {
          rc = interp_tn_error(S, n);
        } else {
          size_t inner = first ? first->size : 1;
          for (int j = 0; j < k; j++) {
            if (vals[j].kind == V_NUM) t->data[j] = vals[j].u.num;
            else memcpy(t->data + (size_t)j * inner, vals[j].u.t->data, inner * sizeof(double));
          }
          *out = v_tensor(t);
        }
      }
    } else {
      ad_val *as = calloc((size_t)k, sizeof(ad_val));
      if (!as) rc = interp_error(S, n, "out of memory");
      int j;
      for (j = 0; rc == EV_OK && j < k; j++) rc = to_ad(S, n, vals[j], &as[j]);
      if (rc == EV_OK) {
        ad_val r;
        if (ad_stack(&S->tn, S->tape, as, k, 0, &r)) rc = interp_tn_error(S, n);
        else *out = from_ad(S, r);
      }
      if (as) {
        for (int q = 0; q < j; q++) ad_val_release(&S->tn, &as[q]);
        free(as);
      }
    }
  } else if (rc == EV_OK) {
    olist *l = list_new(S, k);
    if (!l) {
      rc = interp_error(S, n, "out of memory");
    } else {
      for (int j = 0; j < k; j++) {
        list_push(S, l, vals[j]);
        vals[j] = v_nil();
      }
      out->kind = V_LIST;
      out->u.o = &l->h;
      out->tan = NULL;
      out->node = -1;
    }
  }
  for (int j = 0; j < (rc == EV_OK ? k : i + 1) && j < k; j++) v_release(S, &vals[j]);
  if (vals != stackbuf) free(vals);
  return rc;
}

static NOINLINE int eval_record(blo_state *S, const ast_node *n, value *out) {
  orec *r = rec_new(S);
  if (!r) return interp_error(S, n, "out of memory");
  value rv = v_nil();
  rv.kind = V_REC;
  rv.u.o = &r->h;
  for (int i = 0; i < n->nkids; i++) {
    value v;
    if (eval_expr(S, n->kids[i]->a, &v)) { v_release(S, &rv); return EV_ERR; }
    if (rec_set(S, r, n->kids[i]->name, v)) { v_release(S, &rv); return interp_error(S, n, "out of memory"); }
  }
  *out = rv;
  return EV_OK;
}

/* ---------- ranges ---------- */

/* a..b counts by adding 1, which is exact only below 2^53 in magnitude. */
static const double RANGE_EXACT = 0x1p53;

static int range_reaches_2_53(blo_state *S, const ast_node *n, double lo) {
  char num[40];
  fmt_double(num, sizeof num, lo);
  if (lo > RANGE_EXACT || lo <= -RANGE_EXACT)
    return interp_error(S, n, "range starts at %s, beyond 2^53 in magnitude, where adding 1 is inexact", num);
  return interp_error(S, n, "range reaches 9007199254740992 = 2^53, past which adding 1 is inexact");
}

/* The bounds of the range n (a..b), evaluated and checked: numbers, and
 * finite, except that a loop may run to +inf (until it breaks). */
static int range_bounds(blo_state *S, const ast_node *n, int open, double *lo, double *hi) {
  value a, b;
  if (eval_expr(S, n->a, &a)) return EV_ERR;
  if (eval_expr(S, n->b, &b)) { v_release(S, &a); return EV_ERR; }
  int bad = read_num(S, a, lo), bad2 = read_num(S, b, hi);
  char da[64], db[64];
  if (bad) v_describe(a, da, sizeof da);
  else fmt_double(da, sizeof da, *lo);
  if (bad2) v_describe(b, db, sizeof db);
  else fmt_double(db, sizeof db, *hi);
  v_release(S, &a);
  v_release(S, &b);
  if (bad || bad2 || isnan(*lo) || isnan(*hi)) return interp_error(S, n, "range bounds must be numbers, got %s..%s", da, db);
  if (!isfinite(*lo) || (!isfinite(*hi) && !(open && *hi > 0)))
    return interp_error(S, n, "range bounds must be finite, got %s..%s", da, db);
  return EV_OK;
}

/* a..b as a vector [a, a+1, ..., below b]. */
static NOINLINE int eval_range(blo_state *S, const ast_node *n, value *out) {
  double lo, hi;
  if (range_bounds(S, n, 0, &lo, &hi)) return EV_ERR;
  size_t len = 0;
  if (hi > lo) {
    double cnt = ceil(hi - lo);
    if (fabs(lo) >= RANGE_EXACT || lo + (cnt - 1) >= RANGE_EXACT) return range_reaches_2_53(S, n, lo);
    len = (size_t)cnt;
  }
  blo_tensor *t = tn_new(&S->tn, 1, &len);
  if (!t) return interp_tn_error(S, n);
  for (size_t i = 0; i < len; i++) t->data[i] = lo + (double)i;
  *out = v_tensor(t);
  return EV_OK;
}

/* ---------- indexing ---------- */

int interp_index_num(blo_state *S, const ast_node *at, const char *what, double d, long *out, int *big) {
  char num[40];
  if (!isfinite(d) || d != floor(d)) {
    fmt_double(num, sizeof num, d);
    return interp_error(S, at, "%s must be %s integer, got %s", what, isfinite(d) ? "an" : "a finite", num);
  }
  /* Integers beyond 2^53 (or what a long holds) are no position of anything
   * a script can make: they saturate, and the caller clamps or reports. */
  double lim = fmin(0x1p53, (double)(LONG_MAX / 4));
  *big = fabs(d) > lim;
  *out = *big ? (long)(d < 0 ? -lim : lim) : (long)d;
  return EV_OK;
}

/* The evaluated expressions of one N_INDEX node: per axis, an index value or
 * a slice's bounds (nil when omitted). */
typedef struct ixkey { value v, lo, hi; } ixkey;

static void keys_release(blo_state *S, ixkey *keys, int n) {
  for (int i = 0; i < n; i++) {
    v_release(S, &keys[i].v);
    v_release(S, &keys[i].lo);
    v_release(S, &keys[i].hi);
  }
}

/* Evaluates the index expressions of n, left to right, into keys (n->nkids
 * entries, released by the caller even on error). */
static int eval_keys(blo_state *S, const ast_node *n, ixkey *keys) {
  for (int i = 0; i < n->nkids; i++) keys[i].v = keys[i].lo = keys[i].hi = v_nil();
  for (int i = 0; i < n->nkids; i++) {
    const ast_node *k = n->kids[i];
    if (k->kind == N_SLICE) {
      if (k->a && eval_expr(S, k->a, &keys[i].lo)) return EV_ERR;
      if (k->b && eval_expr(S, k->b, &keys[i].hi)) return EV_ERR;
    } else if (eval_expr(S, k, &keys[i].v)) {
      return EV_ERR;
    }
  }
  return EV_OK;
}

/* A slice bound: an integer; out-of-range values clamp (in tn_index_check). */
static int slice_bound(blo_state *S, const ast_node *e, value v, long *out) {
  double d;
  int big;
  if (read_num(S, v, &d)) return interp_error(S, e, "slice bound must be a number");
  return interp_index_num(S, e, "slice bound", d, out, &big);
}

/* Builds the tensor-layer index spec of n over base from its evaluated keys;
 * for a single vector index (X[idx]) returns *take with the index tensor instead. */
static int index_spec(blo_state *S, const ast_node *n, const blo_tensor *base, ixkey *keys, tn_index_t *ix,
                      blo_tensor **take) {
  *take = NULL;
  if (n->nkids > TN_MAX_RANK)
    return interp_error(S, n, "too many indices: %d (tensors have rank at most %d)", n->nkids, TN_MAX_RANK);
  for (int i = 0; i < n->nkids; i++) {
    const ast_node *k = n->kids[i];
    long dim = i < base->rank ? (long)base->shape[i] : 0;
    if (k->kind == N_SLICE) {
      ix[i].kind = k->a || k->b ? TN_IX_SLICE : TN_IX_ALL;
      ix[i].start = 0;
      ix[i].stop = dim;
      if (k->a && slice_bound(S, k->a, keys[i].lo, &ix[i].start)) return EV_ERR;
      if (k->b && slice_bound(S, k->b, keys[i].hi, &ix[i].stop)) return EV_ERR;
      continue;
    }
    value v = keys[i].v;
    if (v.kind == V_TENSOR && v.u.t->rank == 1 && n->nkids == 1) {
      diff_note_read(S, v);
      *take = tn_retain(v.u.t);
      return EV_OK;
    }
    double d;
    if (read_num(S, v, &d)) { /* describe only on error: snprintf per index showed up in profiles */
      char desc[64];
      v_describe(v, desc, sizeof desc);
      return interp_error(S, k, "index must be a number, got %s", desc);
    }
    int big;
    if (interp_index_num(S, k, "index", d, &ix[i].start, &big)) return EV_ERR;
    if (big && i < base->rank) {
      char num[40];
      fmt_double(num, sizeof num, d);
      return interp_error(S, n, "index %s out of range for axis %d of size %ld", num, i, dim);
    }
    ix[i].kind = TN_IX_INDEX;
    ix[i].stop = ix[i].start + 1;
  }
  if (tn_index_check(&S->tn, base, ix, n->nkids)) return interp_tn_error(S, n);
  return EV_OK;
}

/* The position key names in a list or string of length len (n: the N_INDEX node). */
static int seq_pos(blo_state *S, const ast_node *n, ixkey *keys, const char *kind, long len, long *pos) {
  if (n->nkids != 1 || n->kids[0]->kind == N_SLICE) return interp_error(S, n, "a %s takes one integer index", kind);
  const ast_node *k = n->kids[0];
  double d;
  int big;
  if (read_num(S, keys[0].v, &d)) {
    char desc[64];
    v_describe(keys[0].v, desc, sizeof desc);
    return interp_error(S, k, "index must be a number, got %s", desc);
  }
  if (interp_index_num(S, k, "index", d, pos, &big)) return EV_ERR;
  if (*pos < 0) *pos += len;
  if (big || *pos < 0 || *pos >= len) {
    char num[40];
    fmt_double(num, sizeof num, d);
    return interp_error(S, k, "index %s out of range for a %s of length %ld", num, kind, len);
  }
  return EV_OK;
}

static NOINLINE int eval_index(blo_state *S, const ast_node *n, value *out) {
  value base;
  if (eval_expr(S, n->a, &base)) return EV_ERR;
  ixkey kbuf[TN_MAX_RANK], *keys = kbuf;
  if (n->nkids > TN_MAX_RANK && !(keys = calloc((size_t)n->nkids, sizeof *keys))) {
    v_release(S, &base);
    return interp_error(S, n, "out of memory");
  }
  int rc = eval_keys(S, n, keys);
  if (rc) {
    /* reported by eval_keys */
  } else if (base.kind == V_LIST || base.kind == V_STR) {
    long len = base.kind == V_LIST ? ((olist *)base.u.o)->n : (long)((ostr *)base.u.o)->len, i;
    if ((rc = seq_pos(S, n, keys, v_kind_name(base), len, &i)) == EV_OK) {
      if (base.kind == V_LIST) *out = v_retain(((olist *)base.u.o)->items[i]);
      else if ((*out = v_str(S, ((ostr *)base.u.o)->s + i, 1)).kind != V_STR) rc = interp_error(S, n, "out of memory");
    }
  } else if (base.kind != V_TENSOR) {
    char desc[64];
    v_describe(base, desc, sizeof desc);
    rc = interp_error(S, n, "cannot index a %s", base.kind == V_NUM ? desc : v_kind_name(base));
  } else {
    tn_index_t ix[TN_MAX_RANK];
    blo_tensor *take = NULL;
    ad_val a, r;
    if ((rc = index_spec(S, n, base.u.t, keys, ix, &take)) == EV_OK && (rc = to_ad(S, n, base, &a)) == EV_OK) {
      int bad = take ? ad_take(&S->tn, S->tape, a, take, 0, &r) : ad_index(&S->tn, S->tape, a, ix, n->nkids, &r);
      ad_val_release(&S->tn, &a);
      if (bad) rc = interp_tn_error(S, n);
      else *out = from_ad(S, r);
    }
    tn_release(&S->tn, take);
  }
  keys_release(S, keys, n->nkids);
  if (keys != kbuf) free(keys);
  v_release(S, &base);
  return rc;
}

static NOINLINE int eval_getfield(blo_state *S, const ast_node *n, value *out) {
  value base;
  if (eval_expr(S, n->a, &base)) return EV_ERR;
  if (base.kind != V_REC) {
    char desc[64];
    v_describe(base, desc, sizeof desc);
    v_release(S, &base);
    return interp_error(S, n, "cannot read field '%s' of a %s", n->name, desc);
  }
  value *f = rec_get((orec *)base.u.o, n->name);
  if (!f) {
    orec *r = (orec *)base.u.o;
    strbuf sb = {0};
    for (int i = 0; i < r->n; i++) { if (i) sb_puts(&sb, ", "); sb_puts(&sb, r->keys[i]); }
    int rc = interp_error(S, n, "record has no field '%s' (fields: %s)", n->name, sb.s ? sb.s : "none");
    sb_free(&sb);
    v_release(S, &base);
    return rc;
  }
  *out = v_retain(*f);
  v_release(S, &base);
  return EV_OK;
}

/* ---------- calls ---------- */

static int call_function(blo_state *S, const ast_node *at, ofunc *f, value *args, int nargs,
                         const char **names, value *named, int nnamed, value *out) {
  const ast_node *def = f->def;
  if (S->call_depth >= MAX_CALL_DEPTH)
    return interp_error(S, at, "call depth exceeded %d (infinite recursion in '%s'?)", MAX_CALL_DEPTH, def->name);
  /* recursion without a loop must stop on an interrupt too */
  if (check_interrupt(S, at)) return EV_ERR;
  int np = def->nkids;
  if (nargs > np)
    return interp_error(S, at, "%s() takes %d argument%s, got %d", def->name, np, np == 1 ? "" : "s", nargs + nnamed);
  uint64_t bound = 0;   /* parameters given by name */
  if (np > 64) return interp_error(S, at, "too many parameters");
  for (int j = 0; j < nnamed; j++) {
    int found = -1;
    for (int i = 0; i < np; i++)
      if (strcmp(def->kids[i]->name, names[j]) == 0) found = i;
    if (found < 0) return interp_error(S, at, "%s() has no parameter named '%s'", def->name, names[j]);
    if (found < nargs || (bound >> found & 1)) return interp_error(S, at, "%s(): argument '%s' given twice", def->name, names[j]);
    bound |= (uint64_t)1 << found;
  }
  for (int i = nargs; i < np; i++)
    if (!(bound >> i & 1)) return interp_error(S, at, "%s() takes %d argument%s, got %d (missing '%s')", def->name, np,
                                       np == 1 ? "" : "s", nargs + nnamed, def->kids[i]->name);
  scope sc;
  scope *saved_sc = S->sc;
  S->sc = NULL;          /* functions see their parameters and the globals */
  env_push(S, &sc, 1);
  chunk *saved_chunk = S->cur_chunk;
  S->cur_chunk = f->chunk;
  S->call_depth++;
  int rc = EV_OK;
  for (int i = 0; i < nargs && rc == EV_OK; i++)
    if (env_define(S, def->kids[i]->name, v_retain(args[i]))) rc = interp_error(S, at, "out of memory");
  for (int j = 0; j < nnamed && rc == EV_OK; j++)
    if (env_define(S, names[j], v_retain(named[j]))) rc = interp_error(S, at, "out of memory");
  if (rc == EV_OK) {
    if (def->is_block) {
      rc = exec_block(S, def->a);
      if (rc == EV_RETURN) { *out = S->ret; S->ret = v_nil(); rc = EV_OK; }
      else if (rc == EV_OK) *out = v_nil();
      else if (rc == EV_BREAK || rc == EV_CONTINUE) rc = interp_error(S, at, "'break' or 'continue' outside a loop");
    } else {
      rc = eval_expr(S, def->a, out);
    }
  }
  S->call_depth--;
  S->cur_chunk = saved_chunk;
  env_pop(S, &sc);
  S->sc = saved_sc;
  if (!saved_chunk) run_end(S);   /* the host called this function (blo_call) */
  return rc;
}

int call_value(blo_state *S, const ast_node *at, value fn, value *args, int nargs, value *out) {
  if (fn.kind == V_FUNC) return call_function(S, at, (ofunc *)fn.u.o, args, nargs, NULL, NULL, 0, out);
  if (fn.kind == V_BUILTIN) {
    callargs ca = {args, nargs, NULL, NULL, 0, at};
    const builtin_def *b = fn.u.fn;
    if (nargs < b->min_args || (b->max_args >= 0 && nargs > b->max_args))
      return interp_error(S, at, "%s() takes %d to %d arguments, got %d", b->name, b->min_args, b->max_args, nargs);
    if (S->ad_depth > 0) diff_note_call(S, b, args, nargs, NULL, 0);
    return b->fn(S, &ca, out);
  }
  return interp_error(S, at, "a %s is not callable", v_kind_name(fn));
}

static NOINLINE int eval_call(blo_state *S, const ast_node *n, value *out) {
  const builtin_def *b = NULL;
  value fn = v_nil();
  if (n->a->kind == N_NAME) {
    value *slot = env_lookup(S, n->a->name);
    if (slot) fn = v_retain(*slot);
    else if ((b = builtin_find(n->a->name)) != NULL) {
      if (b->special & BI_CONST) return interp_error(S, n->a, "'%s' is a constant, not a function", b->name);
      fn.kind = V_BUILTIN;
      fn.u.fn = b;
    } else {
      const char *sug = env_suggest(S, n->a->name);
      if (sug) return interp_error(S, n->a, "unknown function '%s' (did you mean '%s'?)", n->a->name, sug);
      return interp_error(S, n->a, "unknown function '%s'", n->a->name);
    }
  } else if (eval_expr(S, n->a, &fn)) {
    return EV_ERR;
  }
  if (fn.kind == V_BUILTIN && (fn.u.fn->special & BI_SPECIAL)) {
    callargs ca = {NULL, 0, NULL, NULL, 0, n};
    return fn.u.fn->fn(S, &ca, out);
  }
  if (fn.kind != V_FUNC && fn.kind != V_BUILTIN) {
    char desc[64];
    v_describe(fn, desc, sizeof desc);
    v_release(S, &fn);
    return interp_error(S, n->a, "a %s is not callable", desc);
  }
  int k = n->nkids, npos = 0, nnamed = 0;
  /* small: this frame is on the stack once per level of nested calls */
  value posbuf[4], namedbuf[4];
  const char *namesbuf[4];
  value *pos = k <= 4 ? posbuf : calloc((size_t)k, sizeof(value));
  value *named = k <= 4 ? namedbuf : calloc((size_t)k, sizeof(value));
  const char **names = k <= 4 ? namesbuf : calloc((size_t)k, sizeof(char *));
  int rc = EV_OK;
  if (!pos || !named || !names) rc = interp_error(S, n, "out of memory");
  for (int i = 0; i < k && rc == EV_OK; i++) {
    const ast_node *arg = n->kids[i];
    if (arg->kind == N_FIELD) {
      for (int j = 0; j < nnamed; j++)
        if (strcmp(names[j], arg->name) == 0) rc = interp_error(S, arg, "argument '%s' given twice", arg->name);
      if (rc) break;
      if ((rc = eval_expr(S, arg->a, &named[nnamed])) == EV_OK) names[nnamed++] = arg->name;
    } else {
      if (nnamed) { rc = interp_error(S, arg, "positional argument after a named one"); break; }
      if ((rc = eval_expr(S, arg, &pos[npos])) == EV_OK) npos++;
    }
  }
  if (rc == EV_OK) {
    if (fn.kind == V_FUNC) {
      rc = call_function(S, n, (ofunc *)fn.u.o, pos, npos, names, named, nnamed, out);
    } else {
      b = fn.u.fn;
      if (npos < b->min_args || (b->max_args >= 0 && npos > b->max_args)) {
        if (b->min_args == b->max_args)
          rc = interp_error(S, n, "%s() takes %d argument%s, got %d (usage: %s)", b->name, b->min_args,
                            b->min_args == 1 ? "" : "s", npos, b->sig);
        else
          rc = interp_error(S, n, "%s() got %d positional arguments (usage: %s)", b->name, npos, b->sig);
      } else {
        callargs ca = {pos, npos, names, named, nnamed, n};
        if (S->ad_depth > 0) diff_note_call(S, b, pos, npos, named, nnamed);
        rc = b->fn(S, &ca, out);
      }
    }
  }
  for (int i = 0; i < npos; i++) v_release(S, &pos[i]);
  for (int i = 0; i < nnamed; i++) v_release(S, &named[i]);
  if (pos != posbuf) free(pos);
  if (named != namedbuf) free(named);
  if (names != namesbuf) free(names);
  v_release(S, &fn);
  return rc;
}

/* ---------- expressions ---------- */

/* a' for the N_TRANSPOSE node n; takes ownership of a. */
static int transpose_value(blo_state *S, const ast_node *n, value a, value *out) {
  if (a.kind == V_NUM) { *out = a; return EV_OK; }
  ad_val x, r;
  int rc = to_ad(S, n, a, &x);
  v_release(S, &a);
  if (rc) return rc;
  rc = ad_transpose(&S->tn, S->tape, x, &r);
  ad_val_release(&S->tn, &x);
  if (rc) return interp_tn_error(S, n);
  *out = from_ad(S, r);
  return EV_OK;
}

/* Operand of a product: for e = M' with M a matrix, M itself and *flag = 1. */
static int eval_mm_operand(blo_state *S, const ast_node *e, value *v, int *flag) {
  *flag = 0;
  if (e->kind != N_TRANSPOSE) return eval_expr(S, e, v);
  value a;
  if (eval_expr(S, e->a, &a)) return EV_ERR;
  if (a.kind == V_TENSOR && a.u.t->rank == 2) { *v = a; *flag = 1; return EV_OK; }
  return transpose_value(S, e, a, v);
}

/* A' @ B, A @ B', A' @ B': the transpose of a matrix operand becomes a BLAS
 * flag of the product (ad_matmul_t), so X' @ r is one dgemv with CblasTrans
 * and its gradient another, with no n x d copy of X.  Anything else takes
 * the general path of op_binary. */
static NOINLINE int eval_matmul_t(blo_state *S, const ast_node *n, value *out) {
  value a, b;
  int fa, fb;
  if (eval_mm_operand(S, n->a, &a, &fa)) return EV_ERR;
  if (eval_mm_operand(S, n->b, &b, &fb)) { v_release(S, &a); return EV_ERR; }
  int rc = EV_OK;
  if (!v_is_numeric(a) || !v_is_numeric(b) || (!fa && !fb)) {
    /* materialize a flagged transpose: op_binary reports errors on the values as written */
    if (fa) { fa = 0; value t = a; a = v_nil(); rc = transpose_value(S, n->a, t, &a); }
    if (fb && rc == EV_OK) { fb = 0; value t = b; b = v_nil(); rc = transpose_value(S, n->b, t, &b); }
    if (rc == EV_OK) rc = op_binary(S, n, n->op, a, b, out);
    v_release(S, &a);
    v_release(S, &b);
    return rc;
  }
  ad_val x, y, r;
  if (to_ad(S, n, a, &x)) { v_release(S, &a); v_release(S, &b); return EV_ERR; }
  if (to_ad(S, n, b, &y)) { ad_val_release(&S->tn, &x); v_release(S, &a); v_release(S, &b); return EV_ERR; }
  rc = ad_matmul_t(&S->tn, S->tape, x, fa, y, fb, &r);
  ad_val_release(&S->tn, &x);
  ad_val_release(&S->tn, &y);
  v_release(S, &a);
  v_release(S, &b);
  if (rc) return interp_tn_error(S, n);
  *out = from_ad(S, r);
  return EV_OK;
}

int solve_eval(blo_state *S, const ast_node *n, value *out);  /* runtime/bilevel.c */

static int eval_node(blo_state *S, const ast_node *n, value *out);

/* Each level of an expression, and each call, is a few C frames: the
 * parser bounds the depth of one expression, this bounds the total through
 * nested calls (f(n) = 1 + (1 + ... f(n - 1))), far below what overflows
 * an 8 MB stack (also under the sanitizers). */
int eval_expr(blo_state *S, const ast_node *n, value *out) {
  if (S->eval_depth >= EVAL_MAX_DEPTH) return interp_error(S, n, "expression nested too deeply");
  S->eval_depth++;
  int rc = eval_node(S, n, out);
  S->eval_depth--;
  return rc;
}

static int eval_node(blo_state *S, const ast_node *n, value *out) {
  switch (n->kind) {
  case N_NUM: *out = v_num(n->num); return EV_OK;
  case N_STR:
    *out = v_str(S, n->name, n->len);
    return out->kind == V_STR ? EV_OK : interp_error(S, n, "out of memory");
  case N_NAME: {
    value *slot = env_lookup(S, n->name);
    if (slot) { *out = v_retain(*slot); return EV_OK; }
    const builtin_def *b = builtin_find(n->name);
    if (b && (b->special & BI_CONST)) { callargs ca = {NULL, 0, NULL, NULL, 0, n}; return b->fn(S, &ca, out); }
    if (b) { *out = v_nil(); out->kind = V_BUILTIN; out->u.fn = b; return EV_OK; }
    const char *sug = env_suggest(S, n->name);
    if (sug) return interp_error(S, n, "unknown name '%s' (did you mean '%s'?)", n->name, sug);
    return interp_error(S, n, "unknown name '%s'", n->name);
  }
  case N_LIST: return eval_list(S, n, out);
  case N_RECORD: return eval_record(S, n, out);
  case N_BINARY: {
    if (n->op == OP_MATMUL && (n->a->kind == N_TRANSPOSE || n->b->kind == N_TRANSPOSE))
      return eval_matmul_t(S, n, out);
    value a, b;
    if (eval_expr(S, n->a, &a)) return EV_ERR;
    if (eval_expr(S, n->b, &b)) { v_release(S, &a); return EV_ERR; }
    int rc = op_binary(S, n, n->op, a, b, out);
    v_release(S, &a);
    v_release(S, &b);
    return rc;
  }
  case N_UNARY: {
    value a;
    if (eval_expr(S, n->a, &a)) return EV_ERR;
    int rc;
    if (!v_is_numeric(a)) {
      char desc[64];
      v_describe(a, desc, sizeof desc);
      rc = interp_error(S, n, "operator '%s' cannot take a %s", op_text(n->op), desc);
    } else {
      rc = op_unary(S, n, n->op == OP_NEG ? TN_NEG : TN_NOT, a, out);
    }
    v_release(S, &a);
    return rc;
  }
  case N_AND: case N_OR: {
    value a;
    int t = 0;
    if (eval_expr(S, n->a, &a)) return EV_ERR;
    int rc = truthy(S, n->a, a, &t);
    v_release(S, &a);
    if (rc) return rc;
    if ((n->kind == N_AND && !t) || (n->kind == N_OR && t)) { *out = v_num(t); return EV_OK; }
    value b;
    if (eval_expr(S, n->b, &b)) return EV_ERR;
    rc = truthy(S, n->b, b, &t);
    v_release(S, &b);
    if (rc) return rc;
    *out = v_num(t);
    return EV_OK;
  }
  case N_RANGE: return eval_range(S, n, out);
  case N_CALL: return eval_call(S, n, out);
  case N_INDEX: return eval_index(S, n, out);
  case N_GETFIELD: return eval_getfield(S, n, out);
  case N_TRANSPOSE: {
    value a;
    if (eval_expr(S, n->a, &a)) return EV_ERR;
    return transpose_value(S, n, a, out);
  }
  case N_SOLVE: return solve_eval(S, n, out);
  case N_SLICE: return interp_error(S, n, "':' is only allowed inside an index");
  case N_FIELD: return interp_error(S, n, "named argument outside a call");
  default: return interp_error(S, n, "cannot evaluate a %s here", ast_kind_name(n->kind));
  }
}

/* ---------- statements ---------- */

/* ---------- assignment ---------- */

/* The container in *slot, made private first (copy on write) so that other
 * holders keep their value.  NULL when out of memory. */
static olist *own_list(blo_state *S, value *slot) {
  olist *l = (olist *)slot->u.o;
  if (l->h.refcount == 1) return l;
  olist *c = list_new(S, l->n);
  if (!c) return NULL;
  for (int j = 0; j < l->n; j++)
    if (list_push(S, c, v_retain(l->items[j]))) { value cv = {V_LIST, -1, 0, {0}, NULL}; cv.u.o = &c->h; v_release(S, &cv); return NULL; }
  v_release(S, slot);
  slot->kind = V_LIST;
  slot->u.o = &c->h;
  return c;
}

static orec *own_rec(blo_state *S, value *slot) {
  orec *r = (orec *)slot->u.o;
  if (r->h.refcount == 1) return r;
  orec *c = rec_new(S);
  if (!c) return NULL;
  for (int i = 0; i < r->n; i++)
    if (rec_set(S, c, r->keys[i], v_retain(r->vals[i]))) { value cv = {V_REC, -1, 0, {0}, NULL}; cv.u.o = &c->h; v_release(S, &cv); return NULL; }
  v_release(S, slot);
  slot->kind = V_REC;
  slot->u.o = &c->h;
  return c;
}

/* One step of an assignment target below its root name, in source order: a
 * field (n is N_GETFIELD) or an index (N_INDEX) whose keys are evaluated. */
typedef struct tstep { const ast_node *n; ixkey *keys; } tstep;

/* Stores v (owned) at the path st[k..ns) below *slot.  No script code runs
 * here (every key was evaluated before the root was looked up), so neither
 * the slot nor any container on the path can move or be freed meanwhile. */
static int store_path(blo_state *S, value *slot, tstep *st, int k, int ns, value v) {
  if (k == ns) {
    v_release(S, slot);
    *slot = v;
    return EV_OK;
  }
  const ast_node *n = st[k].n;
  int rc = EV_OK;
  if (n->kind == N_GETFIELD) {
    orec *r = NULL;
    if (slot->kind != V_REC) {
      char desc[64];
      v_describe(*slot, desc, sizeof desc);
      rc = interp_error(S, n, "cannot set field '%s' of a %s", n->name, desc);
    } else if (!(r = own_rec(S, slot))) {
      rc = interp_error(S, n, "out of memory");
    } else if (k + 1 == ns) {
      if (rec_set(S, r, n->name, v)) return interp_error(S, n, "out of memory");
      return EV_OK;
    } else {
      value *f = rec_get(r, n->name);
      if (f) return store_path(S, f, st, k + 1, ns, v);
      strbuf sb = {0};
      for (int i = 0; i < r->n; i++) { if (i) sb_puts(&sb, ", "); sb_puts(&sb, r->keys[i]); }
      rc = interp_error(S, n, "record has no field '%s' (fields: %s)", n->name, sb.s ? sb.s : "none");
      sb_free(&sb);
    }
    v_release(S, &v);
    return rc;
  }
  if (slot->kind == V_LIST) {
    long i;
    olist *l = NULL;
    if ((rc = seq_pos(S, n, st[k].keys, "list", ((olist *)slot->u.o)->n, &i)) == EV_OK && !(l = own_list(S, slot)))
      rc = interp_error(S, n, "out of memory");
    if (rc) { v_release(S, &v); return rc; }
    return store_path(S, &l->items[i], st, k + 1, ns, v);
  }
  if (slot->kind != V_TENSOR) {
    rc = interp_error(S, n, "cannot index-assign into a %s", v_kind_name(*slot));
    v_release(S, &v);
    return rc;
  }
  tn_index_t ix[TN_MAX_RANK];
  blo_tensor *take = NULL, *src = NULL;
  value sub = v_nil();
  if (slot->tan || (S->tape && slot->gen == S->tape_gen && slot->node >= 0)) {
    rc = interp_error(S, n, "cannot assign into an element of a variable that is being differentiated");
  } else if ((rc = index_spec(S, n, slot->u.t, st[k].keys, ix, &take)) != EV_OK) {
    /* reported */
  } else if (take) {
    rc = interp_error(S, n, "assignment through an index vector is not supported");
  } else {
    if (k + 1 < ns) {
      /* a deeper target (X[i][j] = v): store into the part, then write it back */
      blo_tensor *part = tn_index(&S->tn, slot->u.t, ix, n->nkids);
      if (!part) {
        rc = interp_tn_error(S, n);
        v_release(S, &v);
      } else {
        sub = v_tensor(part);
        rc = store_path(S, &sub, st, k + 1, ns, v);
      }
      v = sub;
      sub = v_nil();
    }
    if (rc == EV_OK) {
      diff_note_read(S, v);
      if (!(src = v_to_tensor(S, v))) {
        char desc[64];
        v_describe(v, desc, sizeof desc);
        rc = interp_error(S, n, "cannot store a %s in a tensor", desc);
      } else if (slot->u.t->refcount > 1) {
        blo_tensor *c = tn_copy(&S->tn, slot->u.t);
        if (!c) rc = interp_tn_error(S, n);
        else { tn_release(&S->tn, slot->u.t); slot->u.t = c; }
      }
      if (rc == EV_OK && tn_index_set(&S->tn, slot->u.t, ix, n->nkids, src)) rc = interp_tn_error(S, n);
    }
  }
  tn_release(&S->tn, src);
  tn_release(&S->tn, take);
  v_release(S, &v);
  return rc;
}

/* target = v (v owned; evaluated already).  Every index expression of the
 * target is evaluated, left to right, before its root variable is looked up:
 * an index that rebinds the variable (l[f()] = 5 where f sets l) or defines
 * globals (moving the table) cannot leave the store holding a stale slot. */
static NOINLINE int assign_into(blo_state *S, const ast_node *target, value v) {
  tstep sbuf[8], *st = sbuf;
  ixkey kbuf[8], *keys = kbuf;
  int ns = 0, nk = 0;
  const ast_node *root = target;
  for (; root->kind == N_INDEX || root->kind == N_GETFIELD; root = root->a) {
    ns++;
    if (root->kind == N_INDEX) nk += root->nkids;
  }
  if (root->kind != N_NAME) {
    v_release(S, &v);
    return interp_error(S, root, "cannot assign to this expression");
  }
  if ((ns > 8 && !(st = calloc((size_t)ns, sizeof *st))) || (nk > 8 && !(keys = calloc((size_t)nk, sizeof *keys)))) {
    if (st != sbuf) free(st);
    v_release(S, &v);
    return interp_error(S, target, "out of memory");
  }
  /* steps in source order, root outward */
  int i = ns, used = 0, rc = EV_OK;
  for (const ast_node *t = target; t != root; t = t->a) st[--i].n = t;
  for (i = 0; i < nk; i++) keys[i].v = keys[i].lo = keys[i].hi = v_nil();
  for (i = 0; i < ns; i++) {
    st[i].keys = keys + used;
    if (st[i].n->kind == N_INDEX) used += st[i].n->nkids;
  }
  for (i = 0; i < ns && rc == EV_OK; i++)
    if (st[i].n->kind == N_INDEX) rc = eval_keys(S, st[i].n, st[i].keys);
  if (rc == EV_OK) {
    value *slot = env_lookup(S, root->name);
    if (slot) {
      rc = store_path(S, slot, st, 0, ns, v);
    } else {
      v_release(S, &v);
      const builtin_def *b = builtin_find(root->name);
      const char *sug = ns ? NULL : env_suggest(S, root->name);
      if (!ns && b && (b->special & BI_CONST))
        rc = interp_error(S, root, "cannot assign to the constant '%s' ('let %s = ...' declares a variable that hides it)",
                          b->name, b->name);
      else if (ns) rc = interp_error(S, root, "unknown name '%s'", root->name);
      else if (sug) rc = interp_error(S, root, "assignment to undeclared '%s' (use 'let', or did you mean '%s'?)", root->name, sug);
      else rc = interp_error(S, root, "assignment to undeclared '%s' (declare it with 'let')", root->name);
    }
  } else {
    v_release(S, &v);
  }
  keys_release(S, keys, nk);
  if (st != sbuf) free(st);
  if (keys != kbuf) free(keys);
  return rc;
}

static int exec_stmt(blo_state *S, const ast_node *n);

static int exec_loop_body(blo_state *S, const ast_node *body, int *stop) {
  int rc = exec_block(S, body);
  *stop = 0;
  if (rc == EV_BREAK) { *stop = 1; return EV_OK; }
  if (rc == EV_CONTINUE) return EV_OK;
  if (rc != EV_OK) { *stop = 1; return rc; }
  return check_interrupt(S, body);
}

static NOINLINE int exec_for(blo_state *S, const ast_node *n) {
  scope sc;
  env_push(S, &sc, 0);
  int rc = EV_OK, stop = 0;
  if (n->a->kind == N_RANGE) {
    double lo, hi;
    rc = range_bounds(S, n->a, 1, &lo, &hi);
    for (double i = lo; rc == EV_OK && !stop && i < hi; i += 1) {
      /* past 2^53, i + 1 rounds back to i and the loop would never end */
      if (fabs(i) >= RANGE_EXACT) { rc = range_reaches_2_53(S, n->a, i == lo ? lo : RANGE_EXACT); break; }
      if (env_define(S, n->name, v_num(i))) { rc = interp_error(S, n, "out of memory"); break; }
      rc = exec_loop_body(S, n->b, &stop);
    }
  } else {
    value it;
    if ((rc = eval_expr(S, n->a, &it)) == EV_OK) {
      if (it.kind == V_LIST) {
        olist *l = (olist *)it.u.o;
        for (int i = 0; rc == EV_OK && !stop && i < l->n; i++) {
          if (env_define(S, n->name, v_retain(l->items[i]))) { rc = interp_error(S, n, "out of memory"); break; }
          rc = exec_loop_body(S, n->b, &stop);
        }
      } else if (it.kind == V_TENSOR && it.u.t->rank >= 1) {
        diff_note_read(S, it);
        size_t len = it.u.t->shape[0];
        for (size_t i = 0; rc == EV_OK && !stop && i < len; i++) {
          value e;
          if (it.u.t->rank == 1) {
            e = v_num(it.u.t->data[i]);
          } else {
            tn_index_t ix = {TN_IX_INDEX, (long)i, (long)i + 1};
            blo_tensor *row = tn_index(&S->tn, it.u.t, &ix, 1);
            if (!row) { rc = interp_tn_error(S, n->a); break; }
            e = v_tensor(row);
          }
          if (env_define(S, n->name, e)) { rc = interp_error(S, n, "out of memory"); break; }
          rc = exec_loop_body(S, n->b, &stop);
        }
      } else {
        char desc[64];
        v_describe(it, desc, sizeof desc);
        rc = interp_error(S, n->a, "cannot iterate over a %s", desc);
      }
      v_release(S, &it);
    }
  }
  env_pop(S, &sc);
  return rc;
}

static int exec_fndef(blo_state *S, const ast_node *n) {
  ofunc *f = S->cfg.realloc_fn(S->cfg.alloc_ud, NULL, 0, sizeof *f);
  if (!f) return interp_error(S, n, "out of memory");
  memset(f, 0, sizeof *f);
  f->h.refcount = 1;
  f->h.type = V_FUNC;
  f->def = n;
  f->chunk = S->cur_chunk;
  value v = v_nil();
  v.kind = V_FUNC;
  v.u.o = &f->h;
  if (env_define(S, n->name, v)) return interp_error(S, n, "out of memory");
  return EV_OK;
}

int problem_declare(blo_state *S, const ast_node *n);  /* runtime/bilevel.c */

static int exec_stmt(blo_state *S, const ast_node *n) {
  switch (n->kind) {
  case N_LET: {
    value v;
    if (eval_expr(S, n->a, &v)) return EV_ERR;
    if (env_define(S, n->name, v)) return interp_error(S, n, "out of memory");
    return EV_OK;
  }
  case N_ASSIGN: {
    value v;
    if (eval_expr(S, n->b, &v)) return EV_ERR;
    return assign_into(S, n->a, v);
  }
  case N_EXPR: {
    value v;
    if (eval_expr(S, n->a, &v)) return EV_ERR;
    v_release(S, &S->last);
    S->last = v;
    return EV_OK;
  }
  case N_PRINT: {
    strbuf sb = {0};
    int rc = EV_OK;
    for (int i = 0; i < n->nkids && rc == EV_OK; i++) {
      value v;
      if ((rc = eval_expr(S, n->kids[i], &v)) != EV_OK) break;
      if (i) sb_putc(&sb, ' ');
      v_print(&sb, v, 0);
      v_release(S, &v);
    }
    if (rc == EV_OK) {
      sb_putc(&sb, '\n');
      if (sb.oom) rc = interp_error(S, n, "out of memory");
      else interp_write(S, sb.s, sb.n);
    }
    sb_free(&sb);
    return rc;
  }
  case N_IF: {
    value c;
    int t = 0;
    if (eval_expr(S, n->a, &c)) return EV_ERR;
    int rc = truthy(S, n->a, c, &t);
    v_release(S, &c);
    if (rc) return rc;
    if (t) return exec_block(S, n->b);
    if (n->c) return n->c->kind == N_IF ? exec_stmt(S, n->c) : exec_block(S, n->c);
    return EV_OK;
  }
  case N_WHILE: {
    for (;;) {
      value c;
      int t = 0, stop;
      if (eval_expr(S, n->a, &c)) return EV_ERR;
      int rc = truthy(S, n->a, c, &t);
      v_release(S, &c);
      if (rc) return rc;
      if (!t) return EV_OK;
      rc = exec_loop_body(S, n->b, &stop);
      if (rc || stop) return rc;
    }
  }
  case N_FOR: return exec_for(S, n);
  case N_BREAK: return EV_BREAK;
  case N_CONTINUE: return EV_CONTINUE;
  case N_RETURN:
    v_release(S, &S->ret);
    if (n->a && eval_expr(S, n->a, &S->ret)) return EV_ERR;
    return EV_RETURN;
  case N_FNDEF: return exec_fndef(S, n);
  case N_PROBLEM: return problem_declare(S, n);
  case N_BLOCK: return exec_block(S, n);
  default: return interp_error(S, n, "cannot execute a %s", ast_kind_name(n->kind));
  }
}

int exec_block(blo_state *S, const ast_node *n) {
  scope sc;
  int scoped = n != NULL && S->cur_chunk && n != S->cur_chunk->root;
  if (scoped) env_push(S, &sc, 0);
  int rc = EV_OK;
  for (int i = 0; i < n->nkids && rc == EV_OK; i++) rc = exec_stmt(S, n->kids[i]);
  if (scoped) env_pop(S, &sc);
  return rc;
}

int exec_chunk(blo_state *S, chunk *c) {
  chunk *saved = S->cur_chunk;
  S->cur_chunk = c;
  int rc = exec_block(S, c->root);
  S->cur_chunk = saved;
  if (!saved) run_end(S);
  if (rc == EV_BREAK || rc == EV_CONTINUE) return interp_error(S, NULL, "'break' or 'continue' outside a loop");
  if (rc == EV_RETURN) { v_release(S, &S->ret); return EV_OK; }
  return rc;
}
