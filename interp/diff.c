/* diff.c: grad, jvp and hvp, and diff_run, the one entry point the bilevel
 * runtime also uses.  The expression is re-evaluated with the variables
 * replaced by autodiff leaves; every operation it runs records itself. */
#include "interp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void diff_req_free(blo_state *S, diff_req *r) {
  v_release(S, &r->result);
  tn_release(&S->tn, r->dir);
  r->dir = NULL;
  for (int i = 0; i < r->n; i++) {
    if (r->grads) { tn_release(&S->tn, r->grads[i]); r->grads[i] = NULL; }
    if (r->hvs) { tn_release(&S->tn, r->hvs[i]); r->hvs[i] = NULL; }
  }
}

enum { MAXV = 16 };

/* Replaces the variables names[0..n) by autodiff leaves on tape (NULL:
 * forward mode only) with the given tangents; their values go to saved[]
 * (*nsaved of them, also on error) for unbind_vars. */
static int bind_vars(blo_state *S, const ast_node *at, int n, const char *const *names,
                     blo_tensor *const *tangents, ad_tape *tape, value *saved, int *nsaved, int *nodes) {
  *nsaved = 0;
  for (int i = 0; i < n; i++) {
    value *slot = env_lookup(S, names[i]);
    if (!slot) return interp_error(S, at, "unknown variable '%s'", names[i]);
    if (!v_is_numeric(*slot)) {
      char d[64];
      v_describe(*slot, d, sizeof d);
      return interp_error(S, at, "cannot differentiate with respect to '%s', a %s", names[i], d);
    }
    ad_val a;
    if (v_to_ad(S, at, *slot, &a) != EV_OK) return EV_ERR;
    tn_release(&S->tn, a.t);
    a.t = NULL;
    a.node = -1;
    blo_tensor *tg = tangents ? tangents[i] : NULL;
    if (tg) {
      if (tg->size != a.v->size) {
        char s1[64], s2[64];
        int rc = interp_error(S, at, "tangent for '%s' has shape %s, the variable has shape %s", names[i],
                              tn_shape_str(tg, s1, sizeof s1), tn_shape_str(a.v, s2, sizeof s2));
        ad_val_release(&S->tn, &a);
        return rc;
      }
      a.t = tn_reshape(&S->tn, tg, a.v->rank, a.v->shape);
      if (!a.t) { ad_val_release(&S->tn, &a); return interp_tn_error(S, at); }
    }
    if (tape && ad_leaf(&S->tn, tape, &a)) { ad_val_release(&S->tn, &a); return interp_tn_error(S, at); }
    nodes[i] = a.node;
    saved[(*nsaved)++] = *slot;
    value nv = v_tensor(a.v);
    nv.tan = a.t;
    nv.node = a.node;
    nv.gen = S->tape_gen;
    *slot = nv;
  }
  return EV_OK;
}

/* puts back what bind_vars saved, whatever happened */
static void unbind_vars(blo_state *S, const char *const *names, value *saved, int nsaved) {
  for (int i = 0; i < nsaved; i++) {
    value *slot = env_lookup(S, names[i]);
    if (slot) { v_release(S, slot); *slot = saved[i]; }
    else v_release(S, &saved[i]);
  }
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

/* The reverse sweep from the scalar out, and the results of the variables
 * (leaf nodes[0..n)) whose bit is set in want (0: all of them): grads[i]
 * and/or hvs[i] (either array may be NULL).  Without grads it is a
 * tangent-only sweep, which skips the primal adjoints no second-order term
 * needs. */
static int sweep(blo_state *S, ad_tape *tape, const ast_node *expr, ad_val out, int n, const int *nodes,
                 unsigned want, blo_tensor **grads, blo_tensor **hvs) {
  int wanted[MAXV], nw = 0;
  for (int i = 0; i < n; i++)
    if (!want || (want >> i & 1u)) wanted[nw++] = nodes[i];
  /* every variable wanted: no selection pass */
  if (ad_backward_sel(&S->tn, tape, out, NULL, grads != NULL, nw < n ? wanted : NULL, nw))
    return interp_tn_error(S, expr);
  for (int i = 0; i < n; i++) {
    if (want && !(want >> i & 1u)) continue;
    if (ad_adjoint(&S->tn, tape, nodes[i], grads ? &grads[i] : NULL, hvs ? &hvs[i] : NULL))
      return interp_tn_error(S, expr);
  }
  return EV_OK;
}

int diff_run(blo_state *S, const ast_node *at, const ast_node *expr, diff_req *r) {
  if (r->n > MAXV) return interp_error(S, at, "at most %d variables can be differentiated at once", MAXV);
  if (S->ad_depth > 0) return interp_error(S, at, "nested grad/jvp/hvp is not supported");
  r->result = v_nil();
  r->dir = NULL;
  value saved[MAXV];
  int nsaved = 0, rc = EV_OK;
  if (r->reverse) {
    if (!S->tape && !(S->tape = ad_tape_new(&S->tn))) return interp_error(S, at, "out of memory");
    ad_tape_reset(&S->tn, S->tape);
  }
  S->tape_gen++;
  ad_tape *tape = r->reverse ? S->tape : NULL;
  ad_tape *saved_tape = S->tape;
  S->tape = tape;
  S->ad_depth++;
  int nodes[MAXV];
  rc = bind_vars(S, at, r->n, r->names, r->tangents, tape, saved, &nsaved, nodes);
  value res = v_nil();
  if (rc == EV_OK) rc = eval_expr(S, expr, &res);
  unbind_vars(S, r->names, saved, nsaved);
  if (rc == EV_OK) {
    ad_val out;
    rc = result_dual(S, expr, res, &out);
    if (rc == EV_OK) {
      if (out.t) r->dir = tn_retain(out.t);
      r->result = out.v->rank == 0 ? v_num(out.v->data[0]) : v_tensor(tn_retain(out.v));
      if (tape)
        rc = out.v->size != 1 ? not_scalar(S, expr, out.v)
                              : sweep(S, tape, expr, out, r->n, nodes, r->want, r->grads, r->hvs);
      ad_val_release(&S->tn, &out);
    }
  }
  v_release(S, &res);
  if (tape) ad_tape_reset(&S->tn, tape);
  S->tape_gen++;     /* any value still holding a node is now a constant */
  S->ad_depth--;
  S->tape = saved_tape;
  if (rc != EV_OK) diff_req_free(S, r);
  return rc;
}

/* ---- recorded objectives: evaluate once, replay many times ---- */

int diff_record(blo_state *S, const ast_node *at, const ast_node *expr, diff_rec *rec) {
  if (rec->n > MAXV) return interp_error(S, at, "at most %d variables can be differentiated at once", MAXV);
  if (S->ad_depth > 0) return interp_error(S, at, "nested grad/jvp/hvp is not supported");
  if (!rec->tape && !(rec->tape = ad_tape_new(&S->tn))) return interp_error(S, at, "out of memory");
  diff_rec_drop(S, rec);
  value saved[MAXV];
  int nsaved = 0;
  ad_tape *saved_tape = S->tape;
  S->tape = rec->tape;
  S->tape_gen++;
  S->ad_depth++;
  int rc = bind_vars(S, at, rec->n, rec->names, NULL, rec->tape, saved, &nsaved, rec->nodes);
  value res = v_nil();
  if (rc == EV_OK) rc = eval_expr(S, expr, &res);
  unbind_vars(S, rec->names, saved, nsaved);
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

int diff_replay(blo_state *S, diff_rec *rec, blo_tensor *const *tangents, unsigned want, blo_tensor **grads,
                blo_tensor **hvs) {
  if (!rec->live) return interp_error(S, rec->expr, "internal error: no recorded objective to replay");
  for (int i = 0; i < rec->n; i++) {
    if (grads) grads[i] = NULL;
    if (hvs) hvs[i] = NULL;
  }
  if (!want) return EV_OK;
  int rc = EV_OK;
  if (ad_retangent(&S->tn, rec->tape, tangents ? rec->n : 0, rec->nodes, tangents))
    rc = interp_tn_error(S, rec->expr);
  else
    rc = sweep(S, rec->tape, rec->expr, rec->out, rec->n, rec->nodes, want, grads, hvs);
  if (rc != EV_OK)
    for (int i = 0; i < rec->n; i++) {
      if (grads) { tn_release(&S->tn, grads[i]); grads[i] = NULL; }
      if (hvs) { tn_release(&S->tn, hvs[i]); hvs[i] = NULL; }
    }
  return rc;
}

int diff_rec_movable(const diff_rec *rec) { return rec->live && ad_tape_movable(rec->tape); }

int diff_rec_move(blo_state *S, diff_rec *rec, int i, blo_tensor *v) {
  if (!rec->live || i < 0 || i >= rec->n)
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
}

/* ---- grad / jvp / hvp builtins ---- */

/* Collects the variable names of argument k: a name or a list of names. */
static int var_names(blo_state *S, const ast_node *call, int k, const char **names, int *n, int *is_list) {
  const ast_node *a = call->kids[k];
  *is_list = 0;
  if (a->kind == N_NAME) { names[0] = a->name; *n = 1; return EV_OK; }
  if (a->kind == N_LIST && a->nkids > 0 && a->nkids <= 16) {
    for (int i = 0; i < a->nkids; i++) {
      if (a->kids[i]->kind != N_NAME) break;
      names[i] = a->kids[i]->name;
      if (i == a->nkids - 1) { *n = a->nkids; *is_list = 1; return EV_OK; }
    }
  }
  return interp_error(S, a, "expected a variable name or a list of variable names to differentiate with respect to");
}

static value tensor_or_number(blo_state *S, blo_tensor *t, const value *like) {
  if (like->kind == V_NUM) {
    value v = v_num(t->data[0]);
    tn_release(&S->tn, t);
    return v;
  }
  return v_tensor(t);
}

static int check_arity(blo_state *S, const ast_node *call, const char *name, int lo, int hi) {
  for (int i = 0; i < call->nkids; i++)
    if (call->kids[i]->kind == N_FIELD)
      return interp_error(S, call->kids[i], "%s() takes no named arguments", name);
  if (call->nkids < lo || call->nkids > hi)
    return interp_error(S, call, "%s() takes %d to %d arguments, got %d", name, lo, hi, call->nkids);
  return EV_OK;
}

/* Evaluates argument k (tangent) into tensors, one per variable. */
static int tangent_args(blo_state *S, const ast_node *call, int k, int n, int is_list, blo_tensor **tg) {
  value v;
  if (eval_expr(S, call->kids[k], &v)) return EV_ERR;
  int rc = EV_OK;
  if (is_list) {
    if (v.kind == V_LIST && ((olist *)v.u.o)->n == n) {
      olist *l = (olist *)v.u.o;
      for (int i = 0; i < n && rc == EV_OK; i++) {
        tg[i] = v_to_tensor(S, l->items[i]);
        if (!tg[i]) rc = interp_error(S, call->kids[k], "tangent %d must be numeric", i);
      }
    } else if (v.kind == V_TENSOR && v.u.t->rank >= 1 && (int)v.u.t->shape[0] == n) {
      for (int i = 0; i < n && rc == EV_OK; i++) {
        tn_index_t ix = {TN_IX_INDEX, i, i + 1};
        tg[i] = tn_index(&S->tn, v.u.t, &ix, 1);
        if (!tg[i]) rc = interp_tn_error(S, call->kids[k]);
      }
    } else {
      rc = interp_error(S, call->kids[k], "expected a list of %d tangents", n);
    }
  } else {
    tg[0] = v_to_tensor(S, v);
    if (!tg[0]) rc = interp_error(S, call->kids[k], "tangent must be numeric, got %s", v_kind_name(v));
  }
  v_release(S, &v);
  return rc;
}

int bi_grad(blo_state *S, callargs *a, value *out) {
  const ast_node *call = a->call;
  if (check_arity(S, call, "grad", 2, 2)) return EV_ERR;
  const char *names[16];
  int n, is_list;
  if (var_names(S, call, 1, names, &n, &is_list)) return EV_ERR;
  blo_tensor *grads[16] = {0};
  diff_req r = {n, names, NULL, 1, v_nil(), NULL, grads, NULL, 0};
  if (diff_run(S, call, call->kids[0], &r)) return EV_ERR;
  int rc = EV_OK;
  if (!is_list) {
    value *like = env_lookup(S, names[0]);
    *out = tensor_or_number(S, grads[0], like);
    grads[0] = NULL;
  } else {
    olist *l = list_new(S, n);
    if (!l) rc = interp_error(S, call, "out of memory");
    for (int i = 0; i < n && l; i++) {
      value *like = env_lookup(S, names[i]);
      list_push(S, l, tensor_or_number(S, grads[i], like));
      grads[i] = NULL;
    }
    if (l) { *out = v_nil(); out->kind = V_LIST; out->u.o = &l->h; }
  }
  diff_req_free(S, &r);
  return rc;
}

int bi_jvp(blo_state *S, callargs *a, value *out) {
  const ast_node *call = a->call;
  if (check_arity(S, call, "jvp", 3, 3)) return EV_ERR;
  const char *names[16];
  int n, is_list;
  if (var_names(S, call, 1, names, &n, &is_list)) return EV_ERR;
  blo_tensor *tg[16] = {0};
  int rc = tangent_args(S, call, 2, n, is_list, tg);
  if (rc == EV_OK) {
    diff_req r = {n, names, tg, 0, v_nil(), NULL, NULL, NULL, 0};
    rc = diff_run(S, call, call->kids[0], &r);
    if (rc == EV_OK) {
      if (r.dir) {
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
  for (int i = 0; i < n; i++) tn_release(&S->tn, tg[i]);
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
  blo_tensor *tg[2] = {0};
  int rc = tangent_args(S, call, 2, 1, 0, tg);
  blo_tensor *hvs[2] = {0};
  if (rc == EV_OK) {
    /* no gradients requested: a tangent-only sweep, for the last variable only */
    diff_req r = {n, names, tg, 1, v_nil(), NULL, NULL, hvs, 1u << (n - 1)};
    rc = diff_run(S, call, call->kids[0], &r);
    if (rc == EV_OK) {
      int k = n - 1;   /* H_xx v, or the mixed H_ax v */
      value *like = env_lookup(S, names[k]);
      *out = tensor_or_number(S, hvs[k], like);
      hvs[k] = NULL;
      diff_req_free(S, &r);
    }
  }
  tn_release(&S->tn, tg[0]);
  return rc;
}
