/* value.c: reference counting, containers and printing of script values. */
#include "interp.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Objects use the host allocator so a memory cap or failing allocator is seen everywhere. */
static void *obj_alloc(blo_state *S, size_t n) {
  void *p = S->cfg.realloc_fn(S->cfg.alloc_ud, NULL, 0, n);
  if (p) memset(p, 0, n);
  return p;
}
static void obj_free(blo_state *S, void *p, size_t n) {
  if (p) S->cfg.realloc_fn(S->cfg.alloc_ud, p, n, 0);
}
static void *obj_grow(blo_state *S, void *p, size_t old, size_t n) {
  return S->cfg.realloc_fn(S->cfg.alloc_ud, p, old, n);
}

value v_retain(value v) {
  switch (v.kind) {
  case V_TENSOR: tn_retain(v.u.t); tn_retain(v.tan); break;
  case V_STR: case V_LIST: case V_REC: case V_FUNC: case V_PROBLEM: v.u.o->refcount++; break;
  default: break;
  }
  return v;
}

void problem_free(blo_state *S, struct problem *p);  /* runtime/bilevel.c */

/* Drops one reference of a list or record item; one that dies joins the
 * chain *dead instead of being freed here (no recursion). */
static void release_item(blo_state *S, value *v, obj **dead) {
  if ((v->kind == V_LIST || v->kind == V_REC) && v->u.o->refcount == 1) {
    v->u.o->refcount = 0;
    v->u.o->dead_next = *dead;
    *dead = v->u.o;
    *v = v_nil();
  } else {
    v_release(S, v);
  }
}

/* Frees o, whose count reached zero, and every list and record that dies
 * with it, iteratively: a list nested 10^6 deep must not exhaust the C stack. */
static void obj_destroy(blo_state *S, obj *o) {
  obj *dead = o;
  o->dead_next = NULL;
  while (dead) {
    o = dead;
    dead = o->dead_next;
    if (o->type == V_STR) {
      obj_free(S, o, sizeof(ostr) + ((ostr *)o)->len + 1);
    } else if (o->type == V_LIST) {
      olist *l = (olist *)o;
      for (int i = 0; i < l->n; i++) release_item(S, &l->items[i], &dead);
      obj_free(S, l->items, sizeof(value) * (size_t)l->cap);
      obj_free(S, l, sizeof *l);
    } else if (o->type == V_REC) {
      orec *r = (orec *)o;
      for (int i = 0; i < r->n; i++) {
        release_item(S, &r->vals[i], &dead);
        obj_free(S, r->keys[i], strlen(r->keys[i]) + 1);
      }
      obj_free(S, r->keys, sizeof(char *) * (size_t)r->cap);
      obj_free(S, r->vals, sizeof(value) * (size_t)r->cap);
      obj_free(S, r, sizeof *r);
    } else if (o->type == V_FUNC) {
      obj_free(S, o, sizeof(ofunc));
    } else if (o->type == V_PROBLEM) {
      problem_free(S, (struct problem *)o);
    }
  }
}

void v_release(blo_state *S, value *v) {
  switch (v->kind) {
  case V_TENSOR:
    tn_release(&S->tn, v->u.t);
    tn_release(&S->tn, v->tan);
    break;
  case V_STR: case V_LIST: case V_REC: case V_FUNC: case V_PROBLEM:
    if (--v->u.o->refcount == 0) obj_destroy(S, v->u.o);
    break;
  default: break;
  }
  *v = v_nil();
}

value v_str(blo_state *S, const char *s, size_t len) {
  ostr *o = obj_alloc(S, sizeof(ostr) + len + 1);
  if (!o) return v_nil();
  o->h.refcount = 1;
  o->h.type = V_STR;
  o->len = len;
  memcpy(o->s, s, len);
  o->s[len] = 0;
  value v = v_nil();
  v.kind = V_STR;
  v.u.o = &o->h;
  return v;
}

olist *list_new(blo_state *S, int cap) {
  olist *l = obj_alloc(S, sizeof *l);
  if (!l) return NULL;
  l->h.refcount = 1;
  l->h.type = V_LIST;
  if (cap > 0) {
    l->items = obj_alloc(S, sizeof(value) * (size_t)cap);
    if (!l->items) { obj_free(S, l, sizeof *l); return NULL; }
    l->cap = cap;
  }
  return l;
}

int list_push(blo_state *S, olist *l, value v) {
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 4;
    value *items = obj_grow(S, l->items, sizeof(value) * (size_t)l->cap, sizeof(value) * (size_t)cap);
    if (!items) { v_release(S, &v); return -1; }
    l->items = items;
    l->cap = cap;
  }
  l->items[l->n++] = v;
  return 0;
}

orec *rec_new(blo_state *S) {
  orec *r = obj_alloc(S, sizeof *r);
  if (!r) return NULL;
  r->h.refcount = 1;
  r->h.type = V_REC;
  return r;
}

value *rec_get(orec *r, const char *key) {
  for (int i = 0; i < r->n; i++)
    if (strcmp(r->keys[i], key) == 0) return &r->vals[i];
  return NULL;
}

int rec_set(blo_state *S, orec *r, const char *key, value v) {
  value *slot = rec_get(r, key);
  if (slot) {
    v_release(S, slot);
    *slot = v;
    return 0;
  }
  if (r->n == r->cap) {
    /* both arrays are replaced or neither, so r->cap stays the size of each
     * (the host allocator is told the old size when they are freed) */
    int cap = r->cap ? r->cap * 2 : 4;
    char **keys = obj_alloc(S, sizeof(char *) * (size_t)cap);
    value *vals = keys ? obj_alloc(S, sizeof(value) * (size_t)cap) : NULL;
    if (!vals) {
      if (keys) obj_free(S, keys, sizeof(char *) * (size_t)cap);
      v_release(S, &v);
      return -1;
    }
    if (r->n) {
      memcpy(keys, r->keys, sizeof(char *) * (size_t)r->n);
      memcpy(vals, r->vals, sizeof(value) * (size_t)r->n);
    }
    if (r->cap) {
      obj_free(S, r->keys, sizeof(char *) * (size_t)r->cap);
      obj_free(S, r->vals, sizeof(value) * (size_t)r->cap);
    }
    r->keys = keys;
    r->vals = vals;
    r->cap = cap;
  }
  size_t kl = strlen(key);
  char *k = obj_alloc(S, kl + 1);
  if (!k) { v_release(S, &v); return -1; }
  memcpy(k, key, kl + 1);
  r->keys[r->n] = k;
  r->vals[r->n] = v;
  r->n++;
  return 0;
}

const char *v_kind_name(value v) {
  switch (v.kind) {
  case V_NIL: return "nothing";
  case V_NUM: return "number";
  case V_TENSOR: return "tensor";
  case V_STR: return "string";
  case V_LIST: return "list";
  case V_REC: return "record";
  case V_FUNC: return "function";
  case V_BUILTIN: return "builtin function";
  case V_PROBLEM: return "problem";
  }
  return "?";
}

void v_describe(value v, char *buf, size_t n) {
  if (v.kind == V_TENSOR) {
    char sh[96];
    snprintf(buf, n, "tensor %s", tn_shape_str(v.u.t, sh, sizeof sh));
  } else {
    snprintf(buf, n, "%s", v_kind_name(v));
  }
}

blo_tensor *v_to_tensor(blo_state *S, value v) {
  if (v.kind == V_NUM) return tn_scalar(&S->tn, v.u.num);
  if (v.kind == V_TENSOR) return tn_retain(v.u.t);
  return NULL;
}

int v_to_double(value v, double *out) {
  if (v.kind == V_NUM) { *out = v.u.num; return 0; }
  if (v.kind == V_TENSOR && v.u.t->size == 1) { *out = v.u.t->data[0]; return 0; }
  return -1;
}

/* ---- printing ---- */

void sb_putc(strbuf *b, char c) {
  if (b->oom) return;
  if (b->n + 2 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    char *s = realloc(b->s, cap);
    if (!s) { b->oom = 1; return; }
    b->s = s;
    b->cap = cap;
  }
  b->s[b->n++] = c;
  b->s[b->n] = 0;
}

void sb_puts(strbuf *b, const char *s) {
  while (*s) sb_putc(b, *s++);
}

void sb_putn(strbuf *b, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) sb_putc(b, s[i]);
}

void sb_printf(strbuf *b, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (k < 0) return;
  if ((size_t)k < sizeof tmp) { sb_puts(b, tmp); return; }
  char *big = malloc((size_t)k + 1);
  if (!big) { b->oom = 1; return; }
  va_start(ap, fmt);
  vsnprintf(big, (size_t)k + 1, fmt, ap);
  va_end(ap);
  sb_puts(b, big);
  free(big);
}

void sb_free(strbuf *b) {
  free(b->s);
  memset(b, 0, sizeof *b);
}

void fmt_double(char *buf, size_t n, double x) {
  if (isnan(x)) { snprintf(buf, n, "nan"); return; }
  if (isinf(x)) { snprintf(buf, n, x > 0 ? "inf" : "-inf"); return; }
  if (x == 0) { snprintf(buf, n, signbit(x) ? "-0" : "0"); return; }
  /* The fewest significant digits that read back to the same double, shown
   * in fixed notation unless the exponent is far from zero (as Python does). */
  int p;
  char tmp[64];
  for (p = 1; p <= 17; p++) {
    snprintf(tmp, sizeof tmp, "%.*e", p - 1, x);
    if (strtod(tmp, NULL) == x) break;
  }
  int exp10 = atoi(strchr(tmp, 'e') + 1);
  if (exp10 >= -5 && exp10 < 16) {
    int decimals = p - 1 - exp10;
    snprintf(buf, n, "%.*f", decimals > 0 ? decimals : 0, x);
  } else {
    snprintf(buf, n, "%s", tmp);
  }
}

static void print_tensor_rec(strbuf *b, const blo_tensor *t, int axis, size_t off, size_t stride) {
  char num[40];
  if (axis == t->rank) {
    fmt_double(num, sizeof num, t->data[off]);
    sb_puts(b, num);
    return;
  }
  size_t inner = t->shape[axis] ? stride / t->shape[axis] : 0;
  sb_putc(b, '[');
  for (size_t i = 0; i < t->shape[axis]; i++) {
    if (i) sb_puts(b, ", ");
    print_tensor_rec(b, t, axis + 1, off + i * inner, inner);
  }
  sb_putc(b, ']');
}

static void print_rec(strbuf *b, value v, int quote_strings, int depth);

void v_print(strbuf *b, value v, int quote_strings) { print_rec(b, v, quote_strings, 0); }

static void print_rec(strbuf *b, value v, int quote_strings, int depth) {
  char num[40];
  if ((v.kind == V_LIST || v.kind == V_REC) && depth >= VALUE_PRINT_DEPTH) {
    sb_puts(b, v.kind == V_LIST ? "[...]" : "{...}");
    return;
  }
  switch (v.kind) {
  case V_NIL: sb_puts(b, "nil"); break;
  case V_NUM: fmt_double(num, sizeof num, v.u.num); sb_puts(b, num); break;
  case V_TENSOR: print_tensor_rec(b, v.u.t, 0, 0, v.u.t->size); break;
  case V_STR:
    if (quote_strings) sb_putc(b, '"');
    sb_putn(b, v_cstr(v), v_strlen(v));
    if (quote_strings) sb_putc(b, '"');
    break;
  case V_LIST: {
    olist *l = (olist *)v.u.o;
    sb_putc(b, '[');
    for (int i = 0; i < l->n; i++) {
      if (i) sb_puts(b, ", ");
      print_rec(b, l->items[i], 1, depth + 1);
    }
    sb_putc(b, ']');
    break;
  }
  case V_REC: {
    orec *r = (orec *)v.u.o;
    sb_putc(b, '{');
    for (int i = 0; i < r->n; i++) {
      if (i) sb_puts(b, ", ");
      sb_puts(b, r->keys[i]);
      sb_puts(b, " = ");
      print_rec(b, r->vals[i], 1, depth + 1);
    }
    sb_putc(b, '}');
    break;
  }
  case V_FUNC: sb_printf(b, "<fn %s>", ((ofunc *)v.u.o)->def->name); break;
  case V_BUILTIN: sb_printf(b, "<builtin %s>", v.u.fn->name); break;
  case V_PROBLEM: sb_puts(b, "<problem>"); break;
  }
}
