/* bl_subject.c: general constraints `inner subject to g <= h` and
 * `outer subject to g <= h` (or >=), by the augmented Lagrangian (PHR).
 *
 * Each constraint becomes c(x, y) = g - h <= 0 (elementwise when it is a
 * tensor) with a multiplier mu >= 0 of c's shape, and its level's objective
 * gets the term
 *
 *   (sum(relu(mu + rho c)^2) - sum(mu^2)) / (2 rho)
 *
 * (equal to mu c + rho c^2 / 2 while mu + rho c > 0, and to -mu^2 / (2 rho)
 * otherwise: 0 at a feasible point with converged multipliers).  The
 * objectives with these terms are what every evaluation, gradient and
 * second-order product of a run sees (the multipliers and rho are hidden
 * globals, constants of the objectives).  After each outer step of a solve
 * the multipliers move to mu <- relu(mu + rho c(x, y_T)): the first-order
 * multiplier update, one per outer step.  They belong to the problem (they
 * persist from solve to solve, as the variables do) and are reported in the
 * result.
 *
 * What this gives (docs/METHODS.md section 6.4): an outer constraint is
 * exact at convergence (the fixed point of x and mu is the KKT point of
 * min Phi(x) subject to c <= 0, c may involve y = y*(x)); an inner one gives
 * y*(x) exactly once mu has converged, but the hypergradient differentiates
 * the penalized inner problem with mu held fixed, which misses the
 * dependence of the multiplier on x: a bias of order 1/rho in dPhi/dx and in
 * the solution. */
#include "bilevel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ast_node *mk(problem *p, ast_kind k, const ast_node *at) { return ast_new(p->arena, k, at->loc); }

static ast_node *mk_bin(problem *p, int op, ast_node *a, ast_node *b, const ast_node *at) {
  ast_node *n = mk(p, N_BINARY, at);
  if (n) { n->op = op; n->a = a; n->b = b; }
  return a && b ? n : NULL;
}

static ast_node *mk_name(problem *p, const char *name, const ast_node *at) {
  ast_node *n = mk(p, N_NAME, at);
  if (n) n->name = name;
  return n;
}

static ast_node *mk_num(problem *p, double v, const ast_node *at) {
  ast_node *n = mk(p, N_NUM, at);
  if (n) n->num = v;
  return n;
}

static ast_node *mk_call1(problem *p, const char *fn, ast_node *arg, const ast_node *at) {
  ast_node *c = mk(p, N_CALL, at);
  ast_node **kids = ast_alloc(p->arena, sizeof(ast_node *));
  if (!c || !kids || !arg) return NULL;
  c->a = mk_name(p, fn, at);
  kids[0] = arg;
  c->kids = kids;
  c->nkids = 1;
  return c->a ? c : NULL;
}

static char *arena_str(problem *p, const char *fmt, const char *a, int k) {
  size_t n = strlen(a) + 48;
  char *s = ast_alloc(p->arena, n);
  if (s) snprintf(s, n, fmt, a, k);
  return s;
}

static int names_level(const ast_node *n, const problem *p, int outer) {
  if (!n) return 0;
  if (n->kind == N_NAME)
    for (int i = 0; i < p->nvars; i++)
      if (p->vars[i].outer == outer && strcmp(p->vars[i].name, n->name) == 0) return 1;
  if (names_level(n->a, p, outer) || names_level(n->b, p, outer) || names_level(n->c, p, outer)) return 1;
  for (int i = 0; i < n->nkids; i++)
    if (names_level(n->kids[i], p, outer)) return 1;
  return 0;
}

int bls_declare(blo_state *S, problem *p, const ast_node *k) {
  bl_subject *ns = realloc(p->subj, (size_t)(p->nsubj + 1) * sizeof *ns);
  if (!ns) return interp_error(S, k, "out of memory");
  p->subj = ns;
  memset(&ns[p->nsubj], 0, sizeof ns[0]);
  ns[p->nsubj].decl = k;
  ns[p->nsubj].inner = k->op;
  p->nsubj++;
  return EV_OK;
}

/* the multiplier of s as a value of c's shape */
static value mu_value(blo_state *S, const bl_subject *s) {
  if (s->rank == 0) return v_num(s->mu[0]);
  blo_tensor *t = tn_from(&S->tn, s->rank, s->shape, s->mu);
  return t ? v_tensor(t) : v_nil();
}

static int set_mu(blo_state *S, const bl_subject *s, const ast_node *at) {
  value v = mu_value(S, s);
  if (v.kind == V_NIL || env_set_global(S, s->mu_name, v)) return interp_error(S, at, "out of memory");
  return EV_OK;
}

int bls_finish(blo_state *S, problem *p) {
  if (!p->nsubj) return EV_OK;
  if (!p->arena && !(p->arena = ast_arena_new())) return interp_error(S, p->node, "out of memory");
  if (!(p->rho_name = arena_str(p, "#rho:%s:%d", p->name, 0))) return interp_error(S, p->node, "out of memory");
  if (env_set_global(S, p->rho_name, v_num(10))) return interp_error(S, p->node, "out of memory");
  ast_node *aug[2] = {(ast_node *)p->F, (ast_node *)p->f};
  for (int i = 0; i < p->nsubj; i++) {
    bl_subject *s = &p->subj[i];
    const ast_node *e = s->decl->a;
    const char *lvl = s->inner ? "inner" : "outer";
    if (e->kind != N_BINARY || (e->op != OP_LE && e->op != OP_GE))
      return interp_error(S, e, "%s subject to: write the constraint as g <= h or g >= h", lvl);
    if (s->inner && !names_level(e, p, 0))
      return interp_error(S, e, "inner subject to: the constraint names no inner variable, so it does not constrain "
                          "the inner problem (write it as 'outer subject to ...')");
    /* c = g - h (<=) or h - g (>=), evaluated once for its shape */
    ast_node *c = e->op == OP_LE ? mk_bin(p, OP_SUB, e->a, e->b, e) : mk_bin(p, OP_SUB, e->b, e->a, e);
    if (!c) return interp_error(S, e, "out of memory");
    s->c = c;
    value cv;
    if (eval_expr(S, c, &cv)) return EV_ERR;
    if (!v_is_numeric(cv)) {
      char d[96];
      v_describe(cv, d, sizeof d);
      v_release(S, &cv);
      return interp_error(S, e, "%s subject to: both sides must be numbers or tensors, got %s", lvl, d);
    }
    if (cv.kind == V_TENSOR) {
      s->rank = cv.u.t->rank;
      memcpy(s->shape, cv.u.t->shape, sizeof s->shape);
      s->size = cv.u.t->size;
    } else {
      s->rank = 0;
      s->size = 1;
    }
    v_release(S, &cv);
    if (!(s->mu = calloc(s->size ? s->size : 1, sizeof(double)))) return interp_error(S, e, "out of memory");
    if (!(s->mu_name = arena_str(p, "#mu:%s:%d", p->name, i))) return interp_error(S, e, "out of memory");
    if (set_mu(S, s, e)) return EV_ERR;
    /* (sum(relu(mu + rho c)^2) - sum(mu^2)) / (2 rho) */
    ast_node *mu = mk_name(p, s->mu_name, e), *rho = mk_name(p, p->rho_name, e);
    ast_node *inner = mk_bin(p, OP_ADD, mu, mk_bin(p, OP_MUL, rho, c, e), e);
    ast_node *sq = mk_bin(p, OP_POW, mk_call1(p, "relu", inner, e), mk_num(p, 2, e), e);
    ast_node *mu2 = mk_bin(p, OP_POW, mk_name(p, s->mu_name, e), mk_num(p, 2, e), e);
    ast_node *num = mk_bin(p, OP_SUB, mk_call1(p, "sum", sq, e), mk_call1(p, "sum", mu2, e), e);
    ast_node *term = mk_bin(p, OP_DIV, num, mk_bin(p, OP_MUL, mk_num(p, 2, e), mk_name(p, p->rho_name, e), e), e);
    /* a maximized objective is minimized as its negation: the term is subtracted */
    int maxi = s->inner ? p->f_max : p->F_max;
    if (!(aug[s->inner] = mk_bin(p, maxi ? OP_SUB : OP_ADD, aug[s->inner], term, e)))
      return interp_error(S, e, "out of memory");
  }
  p->F_written = p->F;
  p->f_written = p->f;
  p->F = aug[0];
  p->f = aug[1];
  return EV_OK;
}

void bls_free(problem *p) {
  for (int i = 0; i < p->nsubj; i++) free(p->subj[i].mu);
  free(p->subj);
}

int bls_begin(bl_run *r) {
  problem *p = r->p;
  if (!p->nsubj) return EV_OK;
  if (env_set_global(r->S, p->rho_name, v_num(r->set.rho))) return bl_error(r, "out of memory");
  for (int i = 0; i < p->nsubj; i++)
    if (set_mu(r->S, &p->subj[i], r->at)) return EV_ERR;
  return EV_OK;
}

/* c's values at the current globals into out (s->size doubles) */
static int eval_c(bl_run *r, const bl_subject *s, double *out) {
  blo_state *S = r->S;
  chunk *saved = S->cur_chunk;
  S->cur_chunk = r->p->chunk;
  value v;
  int rc = eval_expr(S, s->c, &v);
  S->cur_chunk = saved;
  if (rc) return rc;
  if (v.kind == V_NUM && s->size == 1) out[0] = v.u.num;
  else if (v.kind == V_TENSOR && v.u.t->size == s->size) memcpy(out, v.u.t->data, s->size * sizeof(double));
  else rc = bl_error(r, "%s subject to: the constraint changed its shape during the solve",
                     s->inner ? "inner" : "outer");
  v_release(S, &v);
  return rc;
}

int bls_update(bl_run *r) {
  problem *p = r->p;
  if (!p->nsubj) return EV_OK;
  bl_release_point(r);   /* the multipliers are constants of the recorded f */
  for (int i = 0; i < p->nsubj; i++) {
    bl_subject *s = &p->subj[i];
    double *c = r->scratch2;   /* m + n doubles; a constraint may be larger */
    double *tmp = NULL;
    if (s->size > r->m + r->n && !(c = tmp = bl_alloc(r, s->size))) return EV_ERR;
    int rc = eval_c(r, s, c);
    for (size_t k = 0; rc == EV_OK && k < s->size; k++) {
      double u = s->mu[k] + r->set.rho * c[k];
      s->mu[k] = u > 0 ? u : 0;
    }
    free(tmp);
    if (rc || set_mu(r->S, s, r->at)) return EV_ERR;
  }
  return EV_OK;
}

/* inner_multipliers, outer_multipliers (the value when the level has one
 * constraint, a list otherwise) and constraint_violation = max(0, max c). */
int bls_result(bl_run *r, orec *rec) {
  problem *p = r->p;
  blo_state *S = r->S;
  if (!p->nsubj) return EV_OK;
  double viol = 0;
  for (int i = 0; i < p->nsubj; i++) {
    bl_subject *s = &p->subj[i];
    double *c = bl_alloc(r, s->size);
    if (!c) return EV_ERR;
    int rc = eval_c(r, s, c);
    for (size_t k = 0; rc == EV_OK && k < s->size; k++)
      if (c[k] > viol) viol = c[k];
    free(c);
    if (rc) return rc;
  }
  for (int lvl = 0; lvl < 2; lvl++) {
    int cnt = 0;
    for (int i = 0; i < p->nsubj; i++) cnt += p->subj[i].inner == lvl;
    if (!cnt) continue;
    value v = v_nil();
    if (cnt == 1) {
      for (int i = 0; i < p->nsubj; i++)
        if (p->subj[i].inner == lvl) v = mu_value(S, &p->subj[i]);
    } else {
      olist *l = list_new(S, cnt);
      if (l) {
        v.kind = V_LIST;
        v.u.o = &l->h;
        for (int i = 0; i < p->nsubj; i++) {
          if (p->subj[i].inner != lvl) continue;
          value m = mu_value(S, &p->subj[i]);
          if (m.kind == V_NIL || list_push(S, l, m)) { v_release(S, &v); v = v_nil(); break; }
        }
      }
    }
    if (v.kind == V_NIL || rec_set(S, rec, lvl ? "inner_multipliers" : "outer_multipliers", v))
      return bl_error(r, "out of memory");
  }
  if (rec_set(S, rec, "constraint_violation", v_num(viol))) return bl_error(r, "out of memory");
  return EV_OK;
}
