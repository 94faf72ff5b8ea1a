/* json.c: load_json, a JSON document as a value, parsed by jansson.
 *
 * jansson reads and validates the whole file (UTF-8, nesting bounded by its
 * JSON_PARSER_MAX_DEPTH, duplicate keys rejected); this file only maps the
 * parsed tree onto values (the mapping is described in json.h).  Numeric
 * arrays are allocated through the tensor layer, so the memory cap applies
 * to them; everything made is released on every error path. */
#include "config.h"
#include "json.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_JANSSON
#include <jansson.h>

typedef struct jctx {
  blo_state *S;
  const ast_node *at;
  const char *path;    /* the file */
  char where[200];     /* the position in the document, "$.a[2]", cut when long */
  size_t wlen;
} jctx;

static value obj_value(vkind k, obj *o) {
  value v = v_nil();
  v.kind = k;
  v.u.o = o;
  return v;
}

/* Appends a path step; returns the length to restore afterwards. */
static size_t where_push(jctx *c, const char *fmt, ...) {
  size_t old = c->wlen;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(c->where + old, sizeof c->where - old, fmt, ap);
  va_end(ap);
  if (k > 0) c->wlen = old + (size_t)k < sizeof c->where ? old + (size_t)k : sizeof c->where - 1;
  return old;
}

static void where_pop(jctx *c, size_t old) {
  c->wlen = old;
  c->where[old] = 0;
}

static int is_num(const json_t *j) { return json_is_number(j) || json_is_boolean(j); }

static double num_of(const json_t *j) {
  if (json_is_boolean(j)) return json_is_true(j) ? 1.0 : 0.0;
  return json_number_value(j);
}

/* The shape of a as a tensor: its rank (at most room) with shape[0..rank),
 * or 0 when a is not a nonempty array of numbers or of arrays that all have
 * one such shape. */
static int num_shape(const json_t *a, size_t *shape, int room) {
  if (!json_is_array(a) || room == 0) return 0;
  size_t n = json_array_size(a);
  if (n == 0) return 0;
  shape[0] = n;
  const json_t *first = json_array_get(a, 0);
  if (is_num(first)) {
    for (size_t i = 1; i < n; i++)
      if (!is_num(json_array_get(a, i))) return 0;
    return 1;
  }
  int r = num_shape(first, shape + 1, room - 1);
  if (!r) return 0;
  size_t sub[TN_MAX_RANK];
  for (size_t i = 1; i < n; i++)
    if (num_shape(json_array_get(a, i), sub, r) != r || memcmp(sub, shape + 1, sizeof *sub * (size_t)r)) return 0;
  return r + 1;
}

static void fill(const json_t *a, int rank, double **p) {
  size_t n = json_array_size(a);
  for (size_t i = 0; i < n; i++) {
    const json_t *e = json_array_get(a, i);
    if (rank == 1) *(*p)++ = num_of(e);
    else fill(e, rank - 1, p);
  }
}

static int oom(jctx *c) { return interp_error(c->S, c->at, "load_json: '%s': out of memory", c->path); }

static int convert(jctx *c, const json_t *j, value *out);

static int convert_array(jctx *c, const json_t *j, value *out) {
  size_t shape[TN_MAX_RANK];
  int rank = num_shape(j, shape, TN_MAX_RANK);
  if (rank) {
    blo_tensor *t = tn_new(&c->S->tn, rank, shape);
    if (!t) return interp_error(c->S, c->at, "load_json: '%s' at %s: %s", c->path, c->where, c->S->tn.err);
    double *p = t->data;
    fill(j, rank, &p);
    *out = v_tensor(t);
    return EV_OK;
  }
  size_t n = json_array_size(j);
  if (n > (size_t)INT_MAX / 2)
    return interp_error(c->S, c->at, "load_json: '%s' at %s: an array of %zu elements is too long for a list", c->path,
                        c->where, n);
  olist *l = list_new(c->S, (int)n);
  if (!l) return oom(c);
  value lv = obj_value(V_LIST, &l->h);
  for (size_t i = 0; i < n; i++) {
    size_t old = where_push(c, "[%zu]", i);
    value v;
    int rc = convert(c, json_array_get(j, i), &v);
    where_pop(c, old);
    if (rc != EV_OK) { v_release(c->S, &lv); return rc; }
    if (list_push(c->S, l, v)) { v_release(c->S, &lv); return oom(c); }
  }
  *out = lv;
  return EV_OK;
}

static int convert_object(jctx *c, json_t *j, value *out) {
  orec *r = rec_new(c->S);
  if (!r) return oom(c);
  value rv = obj_value(V_REC, &r->h);
  const char *key;
  size_t klen;
  json_t *val;
  json_object_keylen_foreach(j, key, klen, val) {
    if (klen == 0) {
      v_release(c->S, &rv);
      return interp_error(c->S, c->at, "load_json: '%s' at %s: the empty key cannot be a field name", c->path,
                          c->where);
    }
    char *field = malloc(klen + 3);
    if (!field) { v_release(c->S, &rv); return oom(c); }
    field_name_from_key(key, klen, field);
    if (rec_get(r, field)) {
      int rc = interp_error(c->S, c->at, "load_json: '%s' at %s: key \"%s\" maps to field '%s', which an earlier key uses",
                            c->path, c->where, key, field);
      free(field);
      v_release(c->S, &rv);
      return rc;
    }
    size_t old = where_push(c, ".%s", field);
    value v;
    int rc = convert(c, val, &v);
    where_pop(c, old);
    if (rc == EV_OK && rec_set(c->S, r, field, v)) rc = oom(c);
    free(field);
    if (rc != EV_OK) { v_release(c->S, &rv); return rc; }
  }
  *out = rv;
  return EV_OK;
}

static int convert(jctx *c, const json_t *j, value *out) {
  switch (json_typeof(j)) {
  case JSON_INTEGER:
  case JSON_REAL: *out = v_num(json_number_value(j)); return EV_OK;
  case JSON_TRUE: *out = v_num(1); return EV_OK;
  case JSON_FALSE: *out = v_num(0); return EV_OK;
  case JSON_STRING:
    *out = v_str(c->S, json_string_value(j), json_string_length(j));
    return out->kind == V_STR ? EV_OK : oom(c);
  case JSON_ARRAY: return convert_array(c, j, out);
  case JSON_OBJECT: return convert_object(c, (json_t *)j, out);
  case JSON_NULL: break;
  }
  return interp_error(c->S, c->at, "load_json: '%s' at %s: null has no blo value", c->path, c->where);
}

int json_load_value(blo_state *S, const ast_node *at, const char *path, value *out) {
  FILE *f = fopen(path, "rb");
  if (!f) return interp_error(S, at, "load_json: cannot open '%s': %s", path, strerror(errno));
  json_error_t e;
  errno = 0;
  json_t *root = json_loadf(f, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &e);
  /* a read error (a directory, an I/O error) is not the document's fault */
  int read_err = ferror(f) ? (errno ? errno : EIO) : 0;
  fclose(f);
  if (read_err) {
    json_decref(root);
    return interp_error(S, at, "load_json: cannot read '%s': %s", path, strerror(read_err));
  }
  if (!root) return interp_error(S, at, "load_json: %s:%d:%d: %s", path, e.line, e.column, e.text);
  jctx c = {S, at, path, "$", 1};
  int rc = convert(&c, root, out);
  json_decref(root);
  return rc;
}

#else

int json_load_value(blo_state *S, const ast_node *at, const char *path, value *out) {
  (void)path;
  (void)out;
  return interp_error(S, at, "load_json: blo was built without jansson (apt-get install libjansson-dev, then ./configure)");
}

#endif
