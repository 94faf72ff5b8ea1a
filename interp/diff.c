/* diff.c: grad, jvp and hvp, and diff_run, the one entry point the bilevel
 * runtime also uses.  The expression is re-evaluated with the variables
 * replaced by autodiff leaves; every operation it runs records itself. */
#include "interp.h"

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

int diff_run(blo_state *S, const ast_node *at, const ast_node *expr, diff_req *r) {
  enum { MAXV = 16 };
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
  for (int i = 0; i < r->n; i++) {
    value *slot = env_lookup(S, r->names[i]);
    if (!slot) { rc = interp_error(S, at, "unknown variable '%s'", r->names[i]); break; }
    if (!v_is_numeric(*slot)) {
      char d[64];
      v_describe(*slot, d, sizeof d);
      rc = interp_error(S, at, "cannot differentiate with respect to '%s', a %s", r->names[i], d);
      break;
    }
    ad_val a;
    if ((rc = v_to_ad(S, at, *slot, &a)) != EV_OK) break;
    tn_release(&S->tn, a.t);
    a.t = NULL;
    a.node = -1;
    blo_tensor *tg = r->tangents ? r->tangents[i] : NULL;
    if (tg) {
      if (tg->size != a.v->size) {
        char s1[64], s2[64];
        rc = interp_error(S, at, "tangent for '%s' has shape %s, the variable has shape %s", r->names[i],
                          tn_shape_str(tg, s1, sizeof s1), tn_shape_str(a.v, s2, sizeof s2));
        ad_val_release(&S->tn, &a);
        break;
      }
      a.t = tn_reshape(&S->tn, tg, a.v->rank, a.v->shape);
      if (!a.t) { ad_val_release(&S->tn, &a); rc = interp_tn_error(S, at); break; }
    }
    if (tape && ad_leaf(&S->tn, tape, &a)) { ad_val_release(&S->tn, &a); rc = interp_tn_error(S, at); break; }
    nodes[i] = a.node;
    saved[nsaved++] = *slot;
    value nv = v_tensor(a.v);
    nv.tan = a.t;
    nv.node = a.node;
    nv.gen = S->tape_gen;
    *slot = nv;
  }
  value res = v_nil();
  if (rc == EV_OK) rc = eval_expr(S, expr, &res);
  /* restore the variables whatever happened */
  for (int i = 0; i < nsaved; i++) {
    value *slot = env_lookup(S, r->names[i]);
    if (slot) { v_release(S, slot); *slot = saved[i]; }
    else v_release(S, &saved[i]);
  }
  if (rc == EV_OK && !v_is_numeric(res)) {
    char d[64];
    v_describe(res, d, sizeof d);
    rc = interp_error(S, expr, "the differentiated expression must be numeric, got %s", d);
  }
  if (rc == EV_OK) {
    ad_val out;
    rc = v_to_ad(S, expr, res, &out);
    if (rc == EV_OK) {
      if (out.t) r->dir = tn_retain(out.t);
      r->result = out.v->rank == 0 ? v_num(out.v->data[0]) : v_tensor(tn_retain(out.v));
      if (tape) {
        if (out.v->size != 1) {
          char d[64];
          rc = interp_error(S, expr, "gradient needs a scalar expression, got tensor %s",
                            tn_shape_str(out.v, d, sizeof d));
        } else if (ad_backward_ex(&S->tn, tape, out, NULL, r->grads != NULL)) {
          /* no grads requested (only hvs): a tangent-only sweep, which skips
           * the primal adjoints no second-order term needs */
          rc = interp_tn_error(S, expr);
        } else {
          for (int i = 0; i < r->n && rc == EV_OK; i++) {
            blo_tensor **hv = r->hvs ? &r->hvs[i] : NULL, **gr = r->grads ? &r->grads[i] : NULL;
            if (ad_adjoint(&S->tn, tape, nodes[i], gr, hv)) rc = interp_tn_error(S, expr);
          }
        }
      }
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
  diff_req r = {n, names, NULL, 1, v_nil(), NULL, grads, NULL};
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
    diff_req r = {n, names, tg, 0, v_nil(), NULL, NULL, NULL};
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
    /* no gradients requested: a tangent-only sweep */
    diff_req r = {n, names, tg, 1, v_nil(), NULL, NULL, hvs};
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
