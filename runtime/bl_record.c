/* bl_record.c: problem variables that are records of tensors.
 *
 * A record variable (`inner net = {c1 = ..., b1 = ..., head = {w = ..., b = ...}}`)
 * is flattened into the problem's x or y like a tensor variable: its leaves
 * (the numbers and tensors, depth first in field order) lie one after the
 * other from the variable's offset.  This file keeps the record's skeleton
 * (field names and nesting, fixed at declaration) and moves values between a
 * record and the flat vector.  The solve loop, the optimizers and the
 * hypergradient methods see only the flat vector. */
#include "bilevel.h"

#include <stdlib.h>
#include <string.h>

enum { BLR_MAX_DEPTH = 64 };

void blr_free(bl_rec *r) {
  if (!r) return;
  for (int i = 0; i < r->n; i++) {
    free(r->keys[i]);
    blr_free(r->kids[i]);
  }
  free(r->keys);
  free(r->kids);
  free(r);
}

static void path_join(char *dst, size_t cap, const char *base, const char *key) {
  snprintf(dst, cap, "%s.%s", base, key);
}

/* Appends a leaf for the number or tensor v at path (its shape). */
static int add_leaf(blo_state *S, const ast_node *at, bl_var *v, value lv, const char *path) {
  bl_leaf *nl = realloc(v->leaves, (size_t)(v->nleaves + 1) * sizeof(bl_leaf));
  if (!nl) return interp_error(S, at, "out of memory");
  v->leaves = nl;
  bl_leaf *l = &v->leaves[v->nleaves];
  memset(l, 0, sizeof *l);
  if (!(l->path = strdup(path))) return interp_error(S, at, "out of memory");
  v->nleaves++;
  if (lv.kind == V_NUM) {
    l->is_num = 1;
    l->size = 1;
  } else {
    l->rank = lv.u.t->rank;
    memcpy(l->shape, lv.u.t->shape, (size_t)l->rank * sizeof(size_t));
    l->size = lv.u.t->size;
  }
  l->off = v->size;   /* relative to the variable until the problem's layout is known */
  v->size += l->size;
  return EV_OK;
}

static int build(blo_state *S, const ast_node *at, bl_var *v, value rv, const char *path, int depth, bl_rec **out) {
  const char *lvl = v->outer ? "outer" : "inner";
  orec *r = (orec *)rv.u.o;
  *out = NULL;
  if (r->n == 0) {
    if (depth == 0) return interp_error(S, at, "%s %s: the initial value is an empty record (a record variable needs "
                                        "at least one field)", lvl, v->name);
    return interp_error(S, at, "%s %s: field '%s' is an empty record", lvl, v->name, path);
  }
  if (depth >= BLR_MAX_DEPTH)
    return interp_error(S, at, "%s %s: records nested more than %d deep", lvl, v->name, BLR_MAX_DEPTH);
  bl_rec *rec = calloc(1, sizeof *rec);
  if (!rec) return interp_error(S, at, "out of memory");
  *out = rec;
  if (!(rec->keys = calloc((size_t)r->n, sizeof(char *))) || !(rec->kids = calloc((size_t)r->n, sizeof(bl_rec *))))
    return interp_error(S, at, "out of memory");
  rec->n = r->n;
  char sub[256];
  for (int i = 0; i < r->n; i++) {
    if (!(rec->keys[i] = strdup(r->keys[i]))) return interp_error(S, at, "out of memory");
    path_join(sub, sizeof sub, path, r->keys[i]);
    value f = r->vals[i];
    int rc;
    if (f.kind == V_REC) {
      rc = build(S, at, v, f, sub, depth + 1, &rec->kids[i]);
    } else if (v_is_numeric(f)) {
      rc = add_leaf(S, at, v, f, sub);
    } else {
      char d[96];
      bl_describe(f, d, sizeof d);
      rc = interp_error(S, at, "%s %s: field '%s' is %s; a record variable holds numbers, tensors and records of "
                        "them", lvl, v->name, sub, d);
    }
    if (rc) return rc;
  }
  return EV_OK;
}

int blr_layout(blo_state *S, const ast_node *at, bl_var *v, value init) {
  v->size = 0;
  return build(S, at, v, init, v->name, 0, &v->rec);
}

/* The skeleton as text, "{c1 = [6, 1, 5, 5], b1 = [6], head = {...}}", for messages. */
static void skel_text(const bl_rec *r, const bl_leaf *leaves, int *k, char *buf, size_t cap, int depth) {
  size_t len = strlen(buf);
  if (len + 1 >= cap) return;
  if (depth > 3) {
    snprintf(buf + len, cap - len, "{...}");
    return;
  }
  snprintf(buf + len, cap - len, "{");
  for (int i = 0; i < r->n; i++) {
    len = strlen(buf);
    snprintf(buf + len, cap - len, "%s%s = ", i ? ", " : "", r->keys[i]);
    len = strlen(buf);
    if (r->kids[i]) {
      skel_text(r->kids[i], leaves, k, buf, cap, depth + 1);
    } else {
      const bl_leaf *l = &leaves[(*k)++];
      char s[64] = "number";
      if (!l->is_num) tn_shape_str_raw(l->rank, l->shape, s, sizeof s);
      snprintf(buf + len, cap - len, "%s", s);
    }
  }
  len = strlen(buf);
  snprintf(buf + len, cap - len, "}");
}

void blr_describe(const bl_var *v, char *buf, size_t cap) {
  int k = 0;
  buf[0] = 0;
  if (v->rec) skel_text(v->rec, v->leaves, &k, buf, cap, 0);
}

/* Leaves below r (all of them, nested). */
static int count_leaves(const bl_rec *r) {
  int c = 0;
  for (int i = 0; i < r->n; i++) c += r->kids[i] ? count_leaves(r->kids[i]) : 1;
  return c;
}

/* Reads value val (a record shaped like r) into dst at the leaves' offsets
 * (base: the variable's own offset).  bcast: a number may fill a tensor
 * leaf (an init); otherwise a leaf must have its shape (a one-element
 * tensor stands for a number).  On a mismatch, err gets what differs. */
static int read_rec(const bl_rec *r, const bl_leaf *leaves, int *k, size_t base, value val, int bcast, double *dst,
                    const char *path, char *err, size_t errn) {
  char d[96];
  if (val.kind != V_REC) {
    bl_describe(val, d, sizeof d);
    snprintf(err, errn, "'%s' is %s, not a record", path, d);
    return -1;
  }
  orec *o = (orec *)val.u.o;
  for (int i = 0; i < o->n; i++) {
    int found = 0;
    for (int j = 0; j < r->n && !found; j++) found = strcmp(r->keys[j], o->keys[i]) == 0;
    if (!found) {
      snprintf(err, errn, "'%s' has a field '%s' the declaration does not have", path, o->keys[i]);
      return -1;
    }
  }
  char sub[256];
  for (int i = 0; i < r->n; i++) {
    path_join(sub, sizeof sub, path, r->keys[i]);
    value *f = rec_get(o, r->keys[i]);
    if (!f) {
      snprintf(err, errn, "field '%s' is missing", sub);
      return -1;
    }
    if (r->kids[i]) {
      if (read_rec(r->kids[i], leaves, k, base, *f, bcast, dst, sub, err, errn)) return -1;
      continue;
    }
    const bl_leaf *l = &leaves[(*k)++];
    double *out = dst ? dst + (l->off - base) : NULL;   /* NULL: only check */
    if (f->kind == V_NUM && (l->is_num || bcast)) {
      for (size_t e = 0; out && e < l->size; e++) out[e] = f->u.num;
      continue;
    }
    if (f->kind == V_TENSOR) {
      const blo_tensor *t = f->u.t;
      int same = !l->is_num && t->rank == l->rank;
      for (int a = 0; same && a < l->rank; a++) same = t->shape[a] == l->shape[a];
      if (same || (l->size == 1 && t->size == 1)) {
        if (out) memcpy(out, t->data, l->size * sizeof(double));
        continue;
      }
      if (bcast && t->size == 1) {
        for (size_t e = 0; out && e < l->size; e++) out[e] = t->data[0];
        continue;
      }
    }
    char want[96] = "a number";
    if (!l->is_num) {
      char s[48];
      tn_shape_str_raw(l->rank, l->shape, s, sizeof s);
      snprintf(want, sizeof want, "a tensor of shape %s", s);
    }
    bl_describe(*f, d, sizeof d);
    snprintf(err, errn, "field '%s' must be %s, but it is %s", sub, want, d);
    return -1;
  }
  return 0;
}

int blr_read(const bl_var *v, value val, int bcast, double *dst, char *err, size_t errn) {
  int k = 0;
  return read_rec(v->rec, v->leaves, &k, v->off, val, bcast, dst, v->name, err, errn);
}

static int value_rec(blo_state *S, const bl_rec *r, const bl_leaf *leaves, int *k, size_t base, const double *src,
                     value *out) {
  orec *o = rec_new(S);
  if (!o) return -1;
  value ov = v_nil();
  ov.kind = V_REC;
  ov.u.o = &o->h;
  for (int i = 0; i < r->n; i++) {
    value f = v_nil();
    if (r->kids[i]) {
      if (value_rec(S, r->kids[i], leaves, k, base, src, &f)) { v_release(S, &ov); return -1; }
    } else {
      const bl_leaf *l = &leaves[(*k)++];
      if (l->is_num) {
        f = v_num(src[l->off - base]);
      } else {
        blo_tensor *t = tn_from(&S->tn, l->rank, l->shape, src + (l->off - base));
        if (!t) { v_release(S, &ov); return -1; }
        f = v_tensor(t);
      }
    }
    if (rec_set(S, o, r->keys[i], f)) { v_release(S, &ov); return -1; }
  }
  *out = ov;
  return 0;
}

value blr_value(blo_state *S, const bl_var *v, const double *src) {
  int k = 0;
  value out = v_nil();
  if (value_rec(S, v->rec, v->leaves, &k, v->off, src, &out)) return v_nil();
  return out;
}

/* Writes src into val in place when val is a record shaped like r that only
 * the variable holds (so a steady-state loop allocates nothing); 0 when it
 * could not (nothing written then). */
static int write_ok(const bl_rec *r, const bl_leaf *leaves, int *k, value val) {
  if (val.kind != V_REC) return 0;
  orec *o = (orec *)val.u.o;
  if (o->h.refcount != 1 || o->n != r->n) return 0;
  for (int i = 0; i < r->n; i++) {
    if (strcmp(o->keys[i], r->keys[i]) != 0) return 0;
    value f = o->vals[i];
    if (r->kids[i]) {
      if (!write_ok(r->kids[i], leaves, k, f)) return 0;
      continue;
    }
    const bl_leaf *l = &leaves[(*k)++];
    if (l->is_num) {
      if (f.kind != V_NUM) return 0;
    } else {
      if (f.kind != V_TENSOR || f.tan || f.u.t->refcount != 1 || f.u.t->rank != l->rank ||
          memcmp(f.u.t->shape, l->shape, (size_t)l->rank * sizeof(size_t)) != 0)
        return 0;
    }
  }
  return 1;
}

static void write_rec(const bl_rec *r, const bl_leaf *leaves, int *k, size_t base, value val, const double *src) {
  orec *o = (orec *)val.u.o;
  for (int i = 0; i < r->n; i++) {
    value *f = &o->vals[i];
    if (r->kids[i]) {
      write_rec(r->kids[i], leaves, k, base, *f, src);
      continue;
    }
    const bl_leaf *l = &leaves[(*k)++];
    if (l->is_num) {
      f->u.num = src[l->off - base];
    } else {
      memcpy(f->u.t->data, src + (l->off - base), l->size * sizeof(double));
      f->node = -1;
    }
  }
}

int blr_write_in_place(const bl_var *v, value *slot, const double *src) {
  int k = 0;
  if (!write_ok(v->rec, v->leaves, &k, *slot) || k != v->nleaves) return 0;
  k = 0;
  write_rec(v->rec, v->leaves, &k, v->off, *slot, src);
  return 1;
}

int blr_nleaves(const bl_var *v) { return v->rec ? count_leaves(v->rec) : 1; }

/* Box `in [lo, hi]` of a record variable: lo and hi are each a number (the
 * bound of every element of every field) or a record shaped like the
 * variable whose fields are numbers or tensors of the field's shape. */
int blr_box(blo_state *S, bl_var *v, const ast_node *e) {
  const char *lvl = v->outer ? "outer" : "inner";
  value bv;
  if (eval_expr(S, e, &bv)) return EV_ERR;
  int rc = EV_OK;
  char want[300];
  blr_describe(v, want, sizeof want);
  if (bv.kind == V_TENSOR && bv.u.t->rank == 1 && bv.u.t->size == 2) {
    /* [lo, hi] of two numbers stacks into a vector */
    olist *l = list_new(S, 2);
    value lv = v_nil();
    if (l) {
      lv.kind = V_LIST;
      lv.u.o = &l->h;
    }
    if (!l || list_push(S, l, v_num(bv.u.t->data[0])) || list_push(S, l, v_num(bv.u.t->data[1]))) {
      v_release(S, &lv);
      v_release(S, &bv);
      return interp_error(S, e, "out of memory");
    }
    v_release(S, &bv);
    bv = lv;
  }
  if (bv.kind != V_LIST || ((olist *)bv.u.o)->n != 2) {
    char d[96];
    bl_describe(bv, d, sizeof d);
    rc = interp_error(S, e, "%s %s: a box must be [lo, hi] with numbers or records like %s, got %s", lvl, v->name,
                      want, d);
  }
  if (rc == EV_OK && (!(v->lo = malloc(v->size * sizeof(double))) || !(v->hi = malloc(v->size * sizeof(double)))))
    rc = interp_error(S, e, "out of memory");
  for (int k = 0; k < 2 && rc == EV_OK; k++) {
    value b = ((olist *)bv.u.o)->items[k];
    double *dst = k ? v->hi : v->lo;
    char err[400];
    if (b.kind == V_NUM) {
      for (size_t i = 0; i < v->size; i++) dst[i] = b.u.num;
    } else if (blr_read(v, b, 1, dst, err, sizeof err) != 0) {
      rc = interp_error(S, e, "%s %s: the %s bound of the box must be a number or a record like %s: %s", lvl, v->name,
                        k ? "upper" : "lower", want, err);
    }
  }
  /* the first element out of order or outside, by its field */
  for (int j = 0; j < v->nleaves && rc == EV_OK; j++) {
    const bl_leaf *l = &v->leaves[j];
    for (size_t i = 0; i < l->size && rc == EV_OK; i++) {
      size_t o = l->off - v->off + i;
      if (!(v->lo[o] <= v->hi[o]))
        rc = interp_error(S, e, "%s %s: empty box (lower bound above upper bound at element %zu of field '%s')", lvl,
                          v->name, i, l->path);
      else if (!(v->init0[o] >= v->lo[o] && v->init0[o] <= v->hi[o]))
        rc = interp_error(S, e, "%s %s: the initial value is outside its box (element %zu of field '%s')", lvl, v->name,
                          i, l->path);
    }
  }
  v_release(S, &bv);
  return rc;
}
