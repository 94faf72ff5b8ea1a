/* diff.c: grad, jvp and hvp, and diff_run, the one entry point the bilevel
 * runtime also uses.  The expression is re-evaluated with the variables
 * replaced by autodiff leaves; every operation it runs records itself.
 *
 * A variable holds a number, a tensor, or a record of them (nested): its
 * leaves are those numbers and tensors, depth first in field order, and
 * every per-variable array of a request (tangents, gradients, products,
 * want) has one entry per leaf. */
#include "interp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void diff_req_free(blo_state *S, diff_req *r) {
  v_release(S, &r->result);
  tn_release(&S->tn, r->dir);
  r->dir = NULL;
  int nl = r->nleaves ? r->nleaves : r->n;
  for (int i = 0; i < nl; i++) {
    if (r->grads) { tn_release(&S->tn, r->grads[i]); r->grads[i] = NULL; }
    if (r->hvs) { tn_release(&S->tn, r->hvs[i]); r->hvs[i] = NULL; }
  }
}

/* ---- the leaves of a variable ---- */

enum { LEAF_INLINE = 16, MAX_REC_DEPTH = 64 };

static void path_add(char *path, size_t cap, const char *key) {
  size_t len = strlen(path);
  if (len + 1 < cap) snprintf(path + len, cap - len, ".%s", key);
}

/* Walks v's leaves depth first in field order: counts them (*k), and when
 * where != NULL stores a pointer to each leaf's slot (the record field
 * holding it; v itself for a number or tensor).  Errors name the field
 * (path is the variable's name and grows with the fields). */
static int walk_leaves(blo_state *S, const ast_node *at, const char *name, value *v, char *path, size_t cap,
                       int depth, value **where, int *k) {
  if (v_is_numeric(*v)) {
    if (where) where[*k] = v;
    (*k)++;
    return EV_OK;
  }
  char d[64];
  if (v->kind != V_REC) {
    v_describe(*v, d, sizeof d);
    if (depth == 0) return interp_error(S, at, "cannot differentiate with respect to '%s', a %s", name, d);
    return interp_error(S, at, "cannot differentiate with respect to '%s': field '%s' is a %s (a record variable "
                        "holds numbers, tensors and records of them)", name, path, d);
  }
  orec *r = (orec *)v->u.o;
  if (r->n == 0) {
    if (depth == 0) return interp_error(S, at, "cannot differentiate with respect to '%s', an empty record", name);
    return interp_error(S, at, "cannot differentiate with respect to '%s': field '%s' is an empty record", name, path);
  }
  if (depth >= MAX_REC_DEPTH)
    return interp_error(S, at, "cannot differentiate with respect to '%s': records nested more than %d deep", name,
                        MAX_REC_DEPTH);
  size_t len = strlen(path);
  for (int i = 0; i < r->n; i++) {
    path_add(path, cap, r->keys[i]);
    int rc = walk_leaves(S, at, name, &r->vals[i], path, cap, depth + 1, where, k);
    path[len] = 0;
    if (rc) return rc;
  }
  return EV_OK;
}

int diff_count_leaves(blo_state *S, const ast_node *at, const char *name, value v, int *count) {
  char path[256];
  snprintf(path, sizeof path, "%s", name);
  *count = 0;
  return walk_leaves(S, at, name, &v, path, sizeof path, 0, NULL, count);
}

/* The path ("net.c1") of leaf *k of v, below path; 1 when found. */
static int leaf_path(value v, int *k, char *path, size_t cap) {
  if (v.kind != V_REC) return (*k)-- == 0;
  orec *r = (orec *)v.u.o;
  size_t len = strlen(path);
  for (int i = 0; i < r->n; i++) {
    path_add(path, cap, r->keys[i]);
    if (leaf_path(r->vals[i], k, path, cap)) return 1;
    path[len] = 0;
  }
  return 0;
}

/* A record none of whose records is shared: its leaves may be swapped in
 * place while it is bound (nobody else can see them). */
static int rec_private(value v) {
  if (v.kind != V_REC) return 1;
  orec *r = (orec *)v.u.o;
  if (r->h.refcount != 1) return 0;
  for (int i = 0; i < r->n; i++)
    if (!rec_private(r->vals[i])) return 0;
  return 1;
}

/* A copy of v's records (the leaves shared); nil on out of memory. */
static value rec_copy(blo_state *S, value v) {
  if (v.kind != V_REC) return v_retain(v);
  orec *r = (orec *)v.u.o, *c = rec_new(S);
  value cv = v_nil();
  if (!c) return cv;
  cv.kind = V_REC;
  cv.u.o = &c->h;
  for (int i = 0; i < r->n; i++) {
    value e = rec_copy(S, r->vals[i]);
    if (e.kind == V_NIL || rec_set(S, c, r->keys[i], e)) { v_release(S, &cv); return v_nil(); }
  }
  return cv;
}

/* The bindings of one differentiation: per variable the value its slot held
 * and (a record) the bound record; per leaf where it sits and its value. */
typedef struct binding_set {
  int n, nl;
  value *saved, *root, *orig;
  value **where;
  int nsaved, nbound;
  value s_saved[LEAF_INLINE], s_root[LEAF_INLINE], s_orig[LEAF_INLINE];
  value *s_where[LEAF_INLINE];
  void *heap;
} binding_set;

static void bs_free(binding_set *b) {
  free(b->heap);
  b->heap = NULL;
}

/* Counts the leaves of names[0..n) (checking each is differentiable) and
 * sizes b for them. */
static int bs_init(blo_state *S, const ast_node *at, int n, const char *const *names, binding_set *b) {
  b->n = n;
  b->nl = 0;
  b->nsaved = b->nbound = 0;
  b->heap = NULL;
  for (int i = 0; i < n; i++) {
    value *slot = env_lookup(S, names[i]);
    if (!slot) return interp_error(S, at, "unknown variable '%s'", names[i]);
    int c;
    if (diff_count_leaves(S, at, names[i], *slot, &c)) return EV_ERR;
    if (c > (1 << 24) - b->nl) return interp_error(S, at, "too many tensors to differentiate at once");
    b->nl += c;
  }
  if (n <= LEAF_INLINE && b->nl <= LEAF_INLINE) {
    b->saved = b->s_saved;
    b->root = b->s_root;
    b->orig = b->s_orig;
    b->where = b->s_where;
    return EV_OK;
  }
  size_t nn = (size_t)n, nl = (size_t)b->nl;
  char *m = malloc(2 * nn * sizeof(value) + nl * sizeof(value) + nl * sizeof(value *));
  if (!m) return interp_error(S, at, "out of memory");
  b->heap = m;
  b->saved = (value *)m;
  b->root = b->saved + nn;
  b->orig = b->root + nn;
  b->where = (value **)(b->orig + nl);
  return EV_OK;
}

/* Replaces the leaves of the variables names[0..n) by autodiff leaves on
 * tape (NULL: forward mode only) with the given tangents (one per leaf),
 * their node numbers into nodes[].  A variable's slot is looked up by name
 * at both ends (the global table may grow meanwhile); a record's leaves are
 * swapped inside it when nobody else holds it, else inside a copy.  While
 * bound, the record is held twice, so an assignment into it copies first
 * and the leaf slots stay where they are. */
static int bind_vars(blo_state *S, const ast_node *at, binding_set *b, const char *const *names,
                     blo_tensor *const *tangents, ad_tape *tape, int *nodes) {
  for (int i = 0; i < b->n; i++) {
    value *slot = env_lookup(S, names[i]);
    if (!slot) return interp_error(S, at, "unknown variable '%s'", names[i]);
    int first = b->nbound, k = 0;
    if (slot->kind == V_REC) {
      value bound = rec_private(*slot) ? v_retain(*slot) : rec_copy(S, *slot);
      if (bound.kind == V_NIL) return interp_error(S, at, "out of memory");
      int c = 0, rc = diff_count_leaves(S, at, names[i], bound, &c);
      if (rc == EV_OK && c > b->nl - first) rc = interp_error(S, at, "variable '%s' changed while being bound", names[i]);
      if (rc == EV_OK) {
        char path[8] = "";
        rc = walk_leaves(S, at, names[i], &bound, path, sizeof path, 0, b->where + first, &k);
      }
      if (rc) { v_release(S, &bound); return rc; }
      b->saved[i] = *slot;
      b->root[i] = bound;
      *slot = v_retain(bound);
    } else {
      if (first >= b->nl) return interp_error(S, at, "variable '%s' changed while being bound", names[i]);
      b->where[first] = NULL;   /* the variable's own slot */
      b->saved[i] = *slot;
      b->root[i] = v_nil();
      *slot = v_nil();
      k = 1;
    }
    b->nsaved = i + 1;
    for (int j = first; j < first + k; j++) {
      const value *lv = b->where[j] ? b->where[j] : &b->saved[i];
      ad_val a;
      if (v_to_ad(S, at, *lv, &a) != EV_OK) return EV_ERR;
      tn_release(&S->tn, a.t);
      a.t = NULL;
      a.node = -1;
      blo_tensor *tg = tangents ? tangents[j] : NULL;
      if (tg) {
        if (tg->size != a.v->size) {
          char s1[64], s2[64], path[256];
          snprintf(path, sizeof path, "%s", names[i]);
          int kk = j - first;
          if (b->where[j]) leaf_path(b->root[i], &kk, path, sizeof path);
          int rc = interp_error(S, at, "tangent for '%s' has shape %s, the variable has shape %s", path,
                                tn_shape_str(tg, s1, sizeof s1), tn_shape_str(a.v, s2, sizeof s2));
          ad_val_release(&S->tn, &a);
          return rc;
        }
        a.t = tn_reshape(&S->tn, tg, a.v->rank, a.v->shape);
        if (!a.t) { ad_val_release(&S->tn, &a); return interp_tn_error(S, at); }
      }
      if (tape && ad_leaf(&S->tn, tape, &a)) { ad_val_release(&S->tn, &a); return interp_tn_error(S, at); }
      nodes[j] = a.node;
      value nv = v_tensor(a.v);
      nv.tan = a.t;
      nv.node = a.node;
      nv.gen = S->tape_gen;
      if (b->where[j]) {
        b->orig[j] = *b->where[j];
        *b->where[j] = nv;
      } else {
        *slot = nv;   /* the slot emptied above: nothing has run since */
      }
      b->nbound = j + 1;
    }
  }
  if (b->nbound != b->nl) return interp_error(S, at, "internal error: %d of %d tensors bound", b->nbound, b->nl);
  return EV_OK;
}

/* puts back what bind_vars changed, whatever happened */
static void unbind_vars(blo_state *S, const char *const *names, binding_set *b) {
  for (int j = 0; j < b->nbound; j++)
    if (b->where[j]) {
      v_release(S, b->where[j]);
      *b->where[j] = b->orig[j];
    }
  for (int i = 0; i < b->nsaved; i++) {
    value *slot = env_lookup(S, names[i]);
    if (slot) { v_release(S, slot); *slot = b->saved[i]; }
    else v_release(S, &b->saved[i]);
    v_release(S, &b->root[i]);
  }
  b->nsaved = b->nbound = 0;
}

/* the value of a differentiated expression as a dual; rc != EV_OK if it is not numeric */
static int result_dual(blo_state *S, const ast_node *expr, value res, ad_val *out) {
  if (!v_is_numeric(res)) {
    char d[64];
    v_describe(res, d, sizeof d);
    return interp_error(S, expr, "the differentiated expression must be numeric, got %s", d);
  }
  return v_to_ad(S, expr, res, out);
}

static int not_scalar(blo_state *S, const ast_node *expr, const blo_tensor *t) {
  char d[64];
  return interp_error(S, expr, "gradient needs a scalar expression, got tensor %s", tn_shape_str(t, d, sizeof d));
}

/* The reverse sweep from the scalar out, and the results of the leaves
 * (nodes[0..n)) whose want entry is set (want NULL: all of them): grads[i]
 * and/or hvs[i] (either array may be NULL).  Without grads it is a
 * tangent-only sweep, which skips the primal adjoints no second-order term
 * needs. */
static int sweep(blo_state *S, ad_tape *tape, const ast_node *expr, ad_val out, int n, const int *nodes,
                 const unsigned char *want, blo_tensor **grads, blo_tensor **hvs) {
  int sbuf[LEAF_INLINE], *wanted = sbuf, nw = 0;
  if (want && n > LEAF_INLINE && !(wanted = malloc((size_t)n * sizeof(int)))) return interp_error(S, expr, "out of memory");
  if (want)
    for (int i = 0; i < n; i++)
      if (want[i]) wanted[nw++] = nodes[i];
  /* every variable wanted: no selection pass */
  int rc = EV_OK;
  if (ad_backward_sel(&S->tn, tape, out, NULL, grads != NULL, want && nw < n ? wanted : NULL, want ? nw : n))
    rc = interp_tn_error(S, expr);
  for (int i = 0; i < n && rc == EV_OK; i++) {
    if (want && !want[i]) continue;
    if (ad_adjoint(&S->tn, tape, nodes[i], grads ? &grads[i] : NULL, hvs ? &hvs[i] : NULL))
      rc = interp_tn_error(S, expr);
  }
  if (wanted != sbuf) free(wanted);
  return rc;
}

/* The leaves' node numbers: inline for a few, else on the heap. */
typedef struct node_buf { int s[LEAF_INLINE]; int *p; } node_buf;
static int *nodes_get(node_buf *nb, int n) {
  nb->p = n <= LEAF_INLINE ? nb->s : malloc((size_t)n * sizeof(int));
  return nb->p;
}
static void nodes_free(node_buf *nb) {
  if (nb->p != nb->s) free(nb->p);
  nb->p = NULL;
}

/* A record result of a forward evaluation: its leaves' tangents, flattened
 * in leaf order (NULL when they are all zero). */
static int rec_dir(blo_state *S, const ast_node *expr, value res, blo_tensor **dir) {
  int c = 0;
  *dir = NULL;
  if (diff_count_leaves(S, expr, "the result", res, &c)) return EV_ERR;
  value **where = malloc((size_t)c * sizeof(value *));
  if (!where) return interp_error(S, expr, "out of memory");
  char path[8] = "";
  int k = 0, rc = walk_leaves(S, expr, "the result", &res, path, sizeof path, 0, where, &k), any = 0;
  size_t total = 0;
  for (int i = 0; i < k; i++) {
    total += where[i]->kind == V_NUM ? 1 : where[i]->u.t->size;
    if (where[i]->tan) any = 1;
  }
  if (rc == EV_OK && any) {
    size_t shp[1] = {total};
    blo_tensor *d = tn_zeros(&S->tn, 1, shp);
    if (!d) rc = interp_tn_error(S, expr);
    size_t off = 0;
    for (int i = 0; i < k && rc == EV_OK; i++) {
      size_t sz = where[i]->kind == V_NUM ? 1 : where[i]->u.t->size;
      if (where[i]->tan) memcpy(d->data + off, where[i]->tan->data, sz * sizeof(double));
      off += sz;
    }
    if (rc == EV_OK) *dir = d;
    else tn_release(&S->tn, d);
  }
  free(where);
  return rc;
}

int diff_run(blo_state *S, const ast_node *at, const ast_node *expr, diff_req *r) {
  if (S->ad_depth > 0) return interp_error(S, at, "nested grad/jvp/hvp is not supported");
  r->result = v_nil();
  r->dir = NULL;
  binding_set b;
  if (bs_init(S, at, r->n, r->names, &b)) return EV_ERR;
  int expect = r->nleaves ? r->nleaves : r->n;
  if (b.nl != expect) {
    bs_free(&b);
    return interp_error(S, at, "the variables hold %d tensors, %d expected (a record variable changed its fields)",
                        b.nl, expect);
  }
  node_buf nb;
  int *nodes = nodes_get(&nb, b.nl);
  if (!nodes) { bs_free(&b); return interp_error(S, at, "out of memory"); }
  int rc = EV_OK;
  if (r->reverse) {
    if (!S->tape && !(S->tape = ad_tape_new(&S->tn))) { bs_free(&b); nodes_free(&nb); return interp_error(S, at, "out of memory"); }
    ad_tape_reset(&S->tn, S->tape);
  }
  S->tape_gen++;
  ad_tape *tape = r->reverse ? S->tape : NULL;
  ad_tape *saved_tape = S->tape;
  S->tape = tape;
  S->ad_depth++;
  rc = bind_vars(S, at, &b, r->names, r->tangents, tape, nodes);
  value res = v_nil();
  if (rc == EV_OK) rc = eval_expr(S, expr, &res);
  /* forward mode over a record-valued expression (a record variable's init,
   * jvp of a record): the tangent is its leaves' tangents, flattened, read
   * before unbinding (the result may be a bound record itself) */
  int rec_res = rc == EV_OK && res.kind == V_REC && !tape;
  if (rec_res) rc = rec_dir(S, expr, res, &r->dir);
  unbind_vars(S, r->names, &b);
  if (rec_res) {
    if (rc == EV_OK) { r->result = res; res = v_nil(); }
  } else if (rc == EV_OK) {
    ad_val out;
    rc = result_dual(S, expr, res, &out);
    if (rc == EV_OK) {
      if (out.t) r->dir = tn_retain(out.t);
      r->result = out.v->rank == 0 ? v_num(out.v->data[0]) : v_tensor(tn_retain(out.v));
      if (tape)
        rc = out.v->size != 1 ? not_scalar(S, expr, out.v)
                              : sweep(S, tape, expr, out, b.nl, nodes, r->want, r->grads, r->hvs);
      ad_val_release(&S->tn, &out);
    }
  }
  v_release(S, &res);
  if (tape) ad_tape_reset(&S->tn, tape);
  S->tape_gen++;     /* any value still holding a node is now a constant */
  S->ad_depth--;
  S->tape = saved_tape;
  bs_free(&b);
  nodes_free(&nb);
  if (rc != EV_OK) diff_req_free(S, r);
  return rc;
}

/* ---- recorded objectives: evaluate once, replay many times ---- */

int diff_record(blo_state *S, const ast_node *at, const ast_node *expr, diff_rec *rec) {
  if (S->ad_depth > 0) return interp_error(S, at, "nested grad/jvp/hvp is not supported");
  if (!rec->tape && !(rec->tape = ad_tape_new(&S->tn))) return interp_error(S, at, "out of memory");
  diff_rec_drop(S, rec);
  binding_set b;
  if (bs_init(S, at, rec->n, rec->names, &b)) return EV_ERR;
  int expect = rec->nleaves ? rec->nleaves : rec->n;
  if (b.nl != expect) {
    bs_free(&b);
    return interp_error(S, at, "the variables hold %d tensors, %d expected (a record variable changed its fields)",
                        b.nl, expect);
  }
  if (b.nl > rec->nodes_cap) {
    int *nn = realloc(rec->nodes, (size_t)b.nl * sizeof(int));
    if (!nn) { bs_free(&b); return interp_error(S, at, "out of memory"); }
    rec->nodes = nn;
    rec->nodes_cap = b.nl;
  }
  rec->nl = b.nl;
  ad_tape *saved_tape = S->tape;
  S->tape = rec->tape;
  S->tape_gen++;
  S->ad_depth++;
  int rc = bind_vars(S, at, &b, rec->names, NULL, rec->tape, rec->nodes);
  value res = v_nil();
  if (rc == EV_OK) rc = eval_expr(S, expr, &res);
  unbind_vars(S, rec->names, &b);
  bs_free(&b);
  if (rc == EV_OK) rc = result_dual(S, expr, res, &rec->out);
  if (rc == EV_OK && rec->out.v->size != 1) rc = not_scalar(S, expr, rec->out.v);
  if (rc == EV_OK) rec->value = rec->out.v->data[0];
  v_release(S, &res);
  S->tape_gen++;
  S->ad_depth--;
  S->tape = saved_tape;
  rec->expr = expr;
  if (rc != EV_OK) diff_rec_drop(S, rec);
  else rec->live = 1;
  return rc;
}

int diff_replay(blo_state *S, diff_rec *rec, blo_tensor *const *tangents, const unsigned char *want,
                blo_tensor **grads, blo_tensor **hvs) {
  if (!rec->live) return interp_error(S, rec->expr, "internal error: no recorded objective to replay");
  for (int i = 0; i < rec->nl; i++) {
    if (grads) grads[i] = NULL;
    if (hvs) hvs[i] = NULL;
  }
  int any = !want;
  for (int i = 0; i < rec->nl && !any; i++) any = want[i] != 0;
  if (!any) return EV_OK;
  int rc = EV_OK;
  if (ad_retangent(&S->tn, rec->tape, tangents ? rec->nl : 0, rec->nodes, tangents))
    rc = interp_tn_error(S, rec->expr);
  else
    rc = sweep(S, rec->tape, rec->expr, rec->out, rec->nl, rec->nodes, want, grads, hvs);
  if (rc != EV_OK)
    for (int i = 0; i < rec->nl; i++) {
      if (grads) { tn_release(&S->tn, grads[i]); grads[i] = NULL; }
      if (hvs) { tn_release(&S->tn, hvs[i]); hvs[i] = NULL; }
    }
  return rc;
}

int diff_rec_movable(const diff_rec *rec) { return rec->live && ad_tape_movable(rec->tape); }

int diff_rec_move(blo_state *S, diff_rec *rec, int i, blo_tensor *v) {
  if (!rec->live || i < 0 || i >= rec->nl)
    return interp_error(S, rec->expr, "internal error: no recorded variable %d to move", i);
  if (ad_set_leaf(&S->tn, rec->tape, rec->nodes[i], v)) return interp_tn_error(S, rec->expr);
  return EV_OK;
}

double diff_rec_value(blo_state *S, diff_rec *rec, int *err) {
  blo_tensor *t;
  *err = 0;
  if (rec->out.node < 0) return rec->value;   /* a constant objective */
  if (ad_value(&S->tn, rec->tape, rec->out.node, &t)) {
    *err = 1;
    interp_tn_error(S, rec->expr);
    return NAN;
  }
  double v = t->data[0];
  tn_release(&S->tn, t);
  return v;
}

/* ---- what binds a recording to its point ---- */

static int is_taped(const blo_state *S, value v) {
  return v.kind == V_TENSOR && v.node >= 0 && v.gen == S->tape_gen;
}

/* binds the recording in progress, if any */
void diff_note_random(blo_state *S) {
  if (S->ad_depth > 0 && S->tape) ad_tape_bind(S->tape);
}

void diff_note_read(blo_state *S, value v) {
  if (is_taped(S, v)) diff_note_random(S);
}

void diff_note_call(blo_state *S, const builtin_def *b, const value *pos, int npos, const value *named, int nnamed) {
  int first = b->special & BI_OPS_ALL ? npos : b->special & BI_OPS_FIRST ? 1 : 0;
  for (int i = first; i < npos; i++) diff_note_read(S, pos[i]);
  for (int i = 0; i < nnamed; i++) diff_note_read(S, named[i]);
}

void diff_rec_drop(blo_state *S, diff_rec *rec) {
  ad_val_release(&S->tn, &rec->out);
  if (rec->tape) ad_tape_reset(&S->tn, rec->tape);
  rec->live = 0;
}

void diff_rec_free(blo_state *S, diff_rec *rec) {
  diff_rec_drop(S, rec);
  ad_tape_free(&S->tn, rec->tape);
  rec->tape = NULL;
  free(rec->nodes);
  rec->nodes = NULL;
  rec->nodes_cap = 0;
}

/* ---- grad / jvp / hvp builtins ---- */

/* The variables of argument k: a name or a list of names.  *names points
 * into the AST (the list's kids), so it needs no storage of its own. */
static int var_names(blo_state *S, const ast_node *call, int k, const char ***names, const char **one, int *n,
                     int *is_list) {
  const ast_node *a = call->kids[k];
  *is_list = 0;
  if (a->kind == N_NAME) { one[0] = a->name; *names = one; *n = 1; return EV_OK; }
  if (a->kind == N_LIST && a->nkids > 0) {
    const char **l = malloc((size_t)a->nkids * sizeof(char *));
    if (!l) return interp_error(S, a, "out of memory");
    int i = 0;
    for (; i < a->nkids && a->kids[i]->kind == N_NAME; i++) l[i] = a->kids[i]->name;
    if (i == a->nkids) { *names = l; *n = a->nkids; *is_list = 1; return EV_OK; }
    free(l);
  }
  return interp_error(S, a, "expected a variable name or a list of variable names to differentiate with respect to");
}

static void names_free(const char **names, const char **one) {
  if (names != one) free((void *)names);
}

/* The leaves of each named variable: *total, and first[i] the index of
 * variable i's first leaf (first[n] = *total). */
static int count_all(blo_state *S, const ast_node *at, int n, const char *const *names, int *first, int *total) {
  *total = 0;
  for (int i = 0; i < n; i++) {
    value *slot = env_lookup(S, names[i]);
    if (!slot) return interp_error(S, at, "unknown variable '%s'", names[i]);
    int c;
    if (diff_count_leaves(S, at, names[i], *slot, &c)) return EV_ERR;
    if (c > (1 << 24) - *total) return interp_error(S, at, "too many tensors to differentiate at once");
    first[i] = *total;
    *total += c;
  }
  first[n] = *total;
  return EV_OK;
}

/* A value shaped like `like` (a number, tensor or record of them) from the
 * leaf tensors ts[*k..] (taken over; a NULL entry is zeros), numbers where
 * like has numbers. */
static int shape_like(blo_state *S, const ast_node *at, value like, blo_tensor **ts, int *k, value *out) {
  if (like.kind == V_REC) {
    orec *l = (orec *)like.u.o, *r = rec_new(S);
    if (!r) return interp_error(S, at, "out of memory");
    value rv = v_nil();
    rv.kind = V_REC;
    rv.u.o = &r->h;
    for (int i = 0; i < l->n; i++) {
      value e;
      if (shape_like(S, at, l->vals[i], ts, k, &e)) { v_release(S, &rv); return EV_ERR; }
      if (rec_set(S, r, l->keys[i], e)) { v_release(S, &rv); return interp_error(S, at, "out of memory"); }
    }
    *out = rv;
    return EV_OK;
  }
  blo_tensor *t = ts[*k];
  ts[(*k)++] = NULL;
  if (!t) {
    if (like.kind == V_NUM) { *out = v_num(0); return EV_OK; }
    if (!(t = tn_zeros_like(&S->tn, like.u.t))) return interp_tn_error(S, at);
  }
  if (like.kind == V_NUM) {
    *out = v_num(t->data[0]);
    tn_release(&S->tn, t);
  } else {
    *out = v_tensor(t);
  }
  return EV_OK;
}

/* A value shaped like `like` from flat[*off..] (a record-valued
 * expression's flattened tangent). */
static int unflatten_like(blo_state *S, const ast_node *at, value like, const double *flat, size_t *off, value *out) {
  if (like.kind == V_REC) {
    orec *l = (orec *)like.u.o, *r = rec_new(S);
    if (!r) return interp_error(S, at, "out of memory");
    value rv = v_nil();
    rv.kind = V_REC;
    rv.u.o = &r->h;
    for (int i = 0; i < l->n; i++) {
      value e;
      if (unflatten_like(S, at, l->vals[i], flat, off, &e)) { v_release(S, &rv); return EV_ERR; }
      if (rec_set(S, r, l->keys[i], e)) { v_release(S, &rv); return interp_error(S, at, "out of memory"); }
    }
    *out = rv;
    return EV_OK;
  }
  if (like.kind == V_NUM) {
    *out = v_num(flat ? flat[*off] : 0);
    (*off)++;
    return EV_OK;
  }
  blo_tensor *t = flat ? tn_from(&S->tn, like.u.t->rank, like.u.t->shape, flat + *off) : tn_zeros_like(&S->tn, like.u.t);
  if (!t) return interp_tn_error(S, at);
  *off += like.u.t->size;
  *out = v_tensor(t);
  return EV_OK;
}

/* The tangent v of a variable shaped like `like` as leaf tensors tg[*k..]:
 * a record needs a record with the same fields (any order). */
static int tangent_leaves(blo_state *S, const ast_node *at, value like, value v, char *path, size_t cap,
                          blo_tensor **tg, int *k) {
  if (like.kind == V_REC) {
    orec *l = (orec *)like.u.o;
    if (v.kind != V_REC) {
      char d[64];
      v_describe(v, d, sizeof d);
      return interp_error(S, at, "tangent for '%s' must be a record with the fields of the variable, got %s", path, d);
    }
    orec *r = (orec *)v.u.o;
    for (int i = 0; i < r->n; i++)
      if (!rec_get(l, r->keys[i]))
        return interp_error(S, at, "tangent for '%s' has a field '%s' the variable does not have", path, r->keys[i]);
    size_t len = strlen(path);
    for (int i = 0; i < l->n; i++) {
      value *f = rec_get(r, l->keys[i]);
      if (!f) return interp_error(S, at, "tangent for '%s' has no field '%s'", path, l->keys[i]);
      path_add(path, cap, l->keys[i]);
      int rc = tangent_leaves(S, at, l->vals[i], *f, path, cap, tg, k);
      path[len] = 0;
      if (rc) return rc;
    }
    return EV_OK;
  }
  if (!(tg[*k] = v_to_tensor(S, v))) {
    char d[64];
    v_describe(v, d, sizeof d);
    return interp_error(S, at, "tangent for '%s' must be numeric, got %s", path, d);
  }
  (*k)++;
  return EV_OK;
}

static int check_arity(blo_state *S, const ast_node *call, const char *name, int lo, int hi) {
  for (int i = 0; i < call->nkids; i++)
    if (call->kids[i]->kind == N_FIELD)
      return interp_error(S, call->kids[i], "%s() takes no named arguments", name);
  if (call->nkids < lo || call->nkids > hi)
    return interp_error(S, call, "%s() takes %d to %d arguments, got %d", name, lo, hi, call->nkids);
  return EV_OK;
}

/* Evaluates argument k (the tangents) into leaf tensors tg[0..first[n]). */
static int tangent_args(blo_state *S, const ast_node *call, int k, int n, const char *const *names, int is_list,
                        const int *first, blo_tensor **tg) {
  value v;
  const ast_node *at = call->kids[k];
  if (eval_expr(S, at, &v)) return EV_ERR;
  int rc = EV_OK, any_rec = first[n] != n;
  char path[256];
  if (is_list && v.kind == V_LIST && ((olist *)v.u.o)->n == n) {
    olist *l = (olist *)v.u.o;
    for (int i = 0; i < n && rc == EV_OK; i++) {
      int kk = first[i];
      snprintf(path, sizeof path, "%s", names[i]);
      value *like = env_lookup(S, names[i]);
      if (!like) rc = interp_error(S, at, "unknown variable '%s'", names[i]);
      else rc = tangent_leaves(S, at, *like, l->items[i], path, sizeof path, tg, &kk);
    }
  } else if (is_list && !any_rec && v.kind == V_TENSOR && v.u.t->rank >= 1 && (int)v.u.t->shape[0] == n) {
    for (int i = 0; i < n && rc == EV_OK; i++) {
      tn_index_t ix = {TN_IX_INDEX, i, i + 1};
      tg[i] = tn_index(&S->tn, v.u.t, &ix, 1);
      if (!tg[i]) rc = interp_tn_error(S, at);
    }
  } else if (is_list) {
    rc = interp_error(S, at, "expected a list of %d tangents", n);
  } else {
    int kk = 0;
    snprintf(path, sizeof path, "%s", names[0]);
    value *like = env_lookup(S, names[0]);
    if (!like) rc = interp_error(S, at, "unknown variable '%s'", names[0]);
    else rc = tangent_leaves(S, at, *like, v, path, sizeof path, tg, &kk);
  }
  v_release(S, &v);
  return rc;
}

/* Per-call arrays of a builtin: first[n + 1] leaf offsets, two leaf tensor arrays, want per leaf. */
typedef struct call_bufs { int *first; blo_tensor **a, **b; unsigned char *want; } call_bufs;

static int bufs_alloc(blo_state *S, const ast_node *at, call_bufs *cb, int nl) {
  cb->a = calloc((size_t)nl + 1, sizeof(blo_tensor *));
  cb->b = calloc((size_t)nl + 1, sizeof(blo_tensor *));
  cb->want = calloc((size_t)nl + 1, 1);
  if (!cb->a || !cb->b || !cb->want) return interp_error(S, at, "out of memory");
  return EV_OK;
}

static void bufs_free(blo_state *S, call_bufs *cb, int nl) {
  for (int i = 0; i < nl; i++) {
    if (cb->a) tn_release(&S->tn, cb->a[i]);
    if (cb->b) tn_release(&S->tn, cb->b[i]);
  }
  free(cb->a);
  free(cb->b);
  free(cb->want);
  free(cb->first);
}

/* Sets up a call over the variables of argument k: names, leaf counts and
 * the leaf arrays. */
static int call_setup(blo_state *S, const ast_node *call, int k, const char ***names, const char **one, int *n,
                      int *is_list, call_bufs *cb, int *nl) {
  memset(cb, 0, sizeof *cb);
  *nl = 0;
  if (var_names(S, call, k, names, one, n, is_list)) return EV_ERR;
  if (!(cb->first = malloc(((size_t)*n + 1) * sizeof(int)))) return interp_error(S, call, "out of memory");
  if (count_all(S, call->kids[k], *n, *names, cb->first, nl)) return EV_ERR;
  return bufs_alloc(S, call, cb, *nl);
}

int bi_grad(blo_state *S, callargs *a, value *out) {
  const ast_node *call = a->call;
  if (check_arity(S, call, "grad", 2, 2)) return EV_ERR;
  const char *one[1], **names = NULL;
  int n = 0, is_list, nl = 0;
  call_bufs cb;
  int rc = call_setup(S, call, 1, &names, one, &n, &is_list, &cb, &nl);
  if (rc == EV_OK) {
    diff_req r = {n, names, NULL, 1, v_nil(), NULL, cb.a, NULL, NULL, nl};
    rc = diff_run(S, call, call->kids[0], &r);
    if (rc == EV_OK) {
      int k = 0;
      olist *l = is_list ? list_new(S, n) : NULL;
      if (is_list && !l) rc = interp_error(S, call, "out of memory");
      for (int i = 0; i < n && rc == EV_OK; i++) {
        value *like = env_lookup(S, names[i]), g;
        rc = like ? shape_like(S, call, *like, cb.a, &k, &g) : interp_error(S, call, "unknown variable '%s'", names[i]);
        if (rc == EV_OK && !is_list) *out = g;
        else if (rc == EV_OK && list_push(S, l, g)) rc = interp_error(S, call, "out of memory");
      }
      if (l) {
        value lv = v_nil();
        lv.kind = V_LIST;
        lv.u.o = &l->h;
        if (rc == EV_OK) *out = lv;
        else v_release(S, &lv);
      }
      diff_req_free(S, &r);
    }
  }
  bufs_free(S, &cb, nl);
  names_free(names, one);
  return rc;
}

int bi_jvp(blo_state *S, callargs *a, value *out) {
  const ast_node *call = a->call;
  if (check_arity(S, call, "jvp", 3, 3)) return EV_ERR;
  const char *one[1], **names = NULL;
  int n = 0, is_list, nl = 0;
  call_bufs cb;
  int rc = call_setup(S, call, 1, &names, one, &n, &is_list, &cb, &nl);
  if (rc == EV_OK) rc = tangent_args(S, call, 2, n, names, is_list, cb.first, cb.a);
  if (rc == EV_OK) {
    diff_req r = {n, names, cb.a, 0, v_nil(), NULL, NULL, NULL, NULL, nl};
    rc = diff_run(S, call, call->kids[0], &r);
    if (rc == EV_OK) {
      if (r.result.kind == V_REC) {
        size_t off = 0;
        rc = unflatten_like(S, call, r.result, r.dir ? r.dir->data : NULL, &off, out);
      } else if (r.dir) {
        *out = r.dir->rank == 0 ? v_num(r.dir->data[0]) : v_tensor(tn_retain(r.dir));
      } else if (r.result.kind == V_NUM) {
        *out = v_num(0);
      } else {
        blo_tensor *z = tn_zeros_like(&S->tn, r.result.u.t);
        if (!z) rc = interp_tn_error(S, call);
        else *out = v_tensor(z);
      }
      diff_req_free(S, &r);
    }
  }
  bufs_free(S, &cb, nl);
  names_free(names, one);
  return rc;
}

int bi_hvp(blo_state *S, callargs *a, value *out) {
  const ast_node *call = a->call;
  if (check_arity(S, call, "hvp", 3, 4)) return EV_ERR;
  const char *names[2];
  const ast_node *x = call->kids[1];
  if (x->kind != N_NAME) return interp_error(S, x, "hvp: the second argument must be a variable name");
  names[0] = x->name;
  int n = 1;
  if (call->nkids == 4) {
    if (call->kids[3]->kind != N_NAME) return interp_error(S, call->kids[3], "hvp: the fourth argument must be a variable name");
    names[1] = call->kids[3]->name;
    n = 2;
  }
  int first[3], nl = 0;
  call_bufs cb;
  memset(&cb, 0, sizeof cb);
  int rc = count_all(S, x, n, names, first, &nl);
  if (rc == EV_OK) rc = bufs_alloc(S, call, &cb, nl);
  /* the tangent is on x, the first variable */
  if (rc == EV_OK) rc = tangent_args(S, call, 2, 1, names, 0, first, cb.a);
  if (rc == EV_OK) {
    /* no gradients requested: a tangent-only sweep, for the last variable only */
    for (int i = first[n - 1]; i < nl; i++) cb.want[i] = 1;
    diff_req r = {n, names, cb.a, 1, v_nil(), NULL, NULL, cb.b, cb.want, nl};
    rc = diff_run(S, call, call->kids[0], &r);
    if (rc == EV_OK) {
      int k = first[n - 1];   /* H_xx v, or the mixed H_ax v */
      value *like = env_lookup(S, names[n - 1]);
      rc = like ? shape_like(S, call, *like, cb.b, &k, out) : interp_error(S, call, "unknown variable '%s'", names[n - 1]);
      diff_req_free(S, &r);
    }
  }
  bufs_free(S, &cb, nl);
  return rc;
}
