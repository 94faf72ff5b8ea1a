/* bilevel.c: `problem` declarations and the `solve` loop.
 *
 * A problem's variables are globals; its objectives are ASTs evaluated with
 * diff_run at the current values of those globals.  The solve loop keeps the
 * outer and inner variables as flat vectors x, y (scattered back into the
 * globals before every evaluation), runs the inner optimizer, asks the chosen
 * hypergradient method (hg_*.c, through the bl_* services) for dF/dx, and
 * takes the outer step.  Nothing here knows how a method computes.
 *
 * Scope: problems live in the global scope.  While a problem is declared or
 * solved the local scopes are hidden (S->sc = NULL), so the variables, the
 * objectives and the `every` draws always mean the globals, wherever the
 * `problem` or `solve` statement appears. */
#include "bilevel.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

double bl_dot(const double *a, const double *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

double bl_norm(const double *a, size_t n) { return sqrt(bl_dot(a, a, n)); }

double bl_curv_noise(size_t n) { return 16 * sqrt((double)n) * DBL_EPSILON; }

int bl_finite(const double *a, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(a[i])) return 0;
  return 1;
}

void bl_describe(value v, char *buf, size_t n) {
  double d;
  if (v.kind == V_STR) {
    /* quoted, NUL shown as \0, at most 37 bytes of the string */
    const char *t = v_cstr(v);
    size_t len = v_strlen(v), o = 0;
    char q[64];
    q[o++] = '"';
    for (size_t i = 0; i < len && i < 37; i++) {
      if (t[i] == 0) { q[o++] = '\\'; q[o++] = '0'; }
      else q[o++] = t[i];
    }
    if (len > 37) { memcpy(q + o, "...", 3); o += 3; }
    q[o++] = '"';
    q[o] = 0;
    snprintf(buf, n, "%s", q);
  } else if (v_to_double(v, &d) == 0) {
    fmt_double(buf, n, d);
  } else {
    v_describe(v, buf, n);
  }
}

static double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* problem lifetime                                                     */

static void settings_default(bl_settings *s) {
  memset(s, 0, sizeof *s);
  s->cold = 1;
  s->inner_steps = 100;
  s->outer_steps = 100;
  s->rho = 10;
  opt_default(&s->inner_opt, OPT_SGD);
  opt_default(&s->outer_opt, OPT_SGD);
  s->hg.m = hg_find("cg");
  for (int i = 0; i < HG_MAX_PARAMS; i++) s->hg.p[i] = i < s->hg.m->nparams ? s->hg.m->params[i].dflt : NAN;
  s->quiet = -1;
  s->inner_starts = 1;
  s->inner_spread = 1;
  s->certificate = BL_CERT_FINAL;
}

void problem_free(blo_state *S, struct problem *p) {
  if (!p) return;
  for (problem **pp = &S->problems; *pp; pp = &(*pp)->next)
    if (*pp == p) { *pp = p->next; break; }
  for (int i = 0; i < p->nvars; i++) {
    bl_var *v = &p->vars[i];
    free(v->lo);
    free(v->hi);
    free(v->init0);
    for (int k = 0; k < v->nleaves; k++) free(v->leaves[k].path);
    free(v->leaves);
    blr_free(v->rec);
    if (p->adj_names) free(p->adj_names[i]);
  }
  free(p->adj_names);
  free(p->vars);
  free(p->names);
  free(p->leaves);
  free(p->every);
  bls_free(p);
  free(p->y_written);
  ast_arena_free(p->arena);
  free(p);
}

/* Called at close, after the globals are gone: frees whatever is left. */
void problems_free_all(blo_state *S) {
  while (S->problems) problem_free(S, S->problems);
}

/* ------------------------------------------------------------------ */
/* declaration                                                          */

static int uses_name(const ast_node *n, const char *name) {
  if (!n) return 0;
  if (n->kind == N_NAME && strcmp(n->name, name) == 0) return 1;
  if (uses_name(n->a, name) || uses_name(n->b, name) || uses_name(n->c, name)) return 1;
  for (int i = 0; i < n->nkids; i++)
    if (uses_name(n->kids[i], name)) return 1;
  return 0;
}

static void shape_text(int rank, const size_t *shape, char *buf, size_t n) { tn_shape_str_raw(rank, shape, buf, n); }

/* Shape expression `[5]`, `[n, d]`, `5`, `[]` or shape(X). */
static int eval_shape(blo_state *S, const ast_node *e, int *rank, size_t *shape) {
  value v;
  if (eval_expr(S, e, &v)) return EV_ERR;
  int rc = EV_OK;
  if (v.kind == V_LIST && ((olist *)v.u.o)->n == 0) {
    *rank = 0;
  } else if (v_is_numeric(v)) {
    blo_tensor *t = v_to_tensor(S, v);
    if (!t) rc = interp_tn_error(S, e);
    else if (t->rank > 1 || t->size > TN_MAX_RANK)
      rc = interp_error(S, e, "a shape must be a list of at most %d dimensions, like [5] or [3, 4]", TN_MAX_RANK);
    else {
      *rank = (int)t->size;
      for (size_t i = 0; i < t->size && rc == EV_OK; i++) {
        double d = t->data[i];
        if (!(d >= 1 && d == floor(d) && d < 1e15)) {
          char num[40];
          fmt_double(num, sizeof num, d);
          rc = interp_error(S, e, "shape dimensions must be positive integers, got %s", num);
        } else {
          shape[i] = (size_t)d;   /* checked first: a cast of nan or 1e300 is undefined */
        }
      }
    }
    tn_release(&S->tn, t);
  } else {
    char d[96];
    v_describe(v, d, sizeof d);
    rc = interp_error(S, e, "a shape must be a list of dimensions like [5], got %s", d);
  }
  v_release(S, &v);
  return rc;
}

int bl_fill_shaped(const bl_var *v, value val, double *dst) {
  if (val.kind == V_NUM) {
    for (size_t i = 0; i < v->size; i++) dst[i] = val.u.num;
    return 0;
  }
  const blo_tensor *t = val.u.t;
  int same = t->rank == v->rank;
  for (int i = 0; same && i < v->rank; i++) same = t->shape[i] == v->shape[i];
  if (same) memcpy(dst, t->data, v->size * sizeof(double));
  else if (t->size == 1)
    for (size_t i = 0; i < v->size; i++) dst[i] = t->data[0];
  else
    return -1;
  return 0;
}

/* Copies an init value into dst (v->size doubles), broadcasting a number to
 * the declared shape and checking the shape otherwise. */
static int init_from_value(blo_state *S, const bl_var *v, value iv, double *dst) {
  const ast_node *e = v->decl->b;
  const char *lvl = v->outer ? "outer" : "inner";
  if (v->rec) {
    char err[400], want[300];
    if (blr_read(v, iv, 1, dst, err, sizeof err) == 0) return EV_OK;
    blr_describe(v, want, sizeof want);
    return interp_error(S, e, "%s %s: the init must be a record like %s: %s", lvl, v->name, want, err);
  }
  if (!v_is_numeric(iv)) {
    char d[96];
    v_describe(iv, d, sizeof d);
    return interp_error(S, e, "%s %s: the initial value must be a number or tensor, got %s", lvl, v->name, d);
  }
  if (bl_fill_shaped(v, iv, dst) != 0) {
    char s1[64], s2[64];
    shape_text(v->rank, v->shape, s1, sizeof s1);
    tn_shape_str(iv.u.t, s2, sizeof s2);
    return interp_error(S, e, "%s %s: declared shape %s, init has shape %s", lvl, v->name, s1, s2);
  }
  return EV_OK;
}

/* Evaluates v's init expression into dst. */
static int eval_init(blo_state *S, const bl_var *v, double *dst) {
  value iv;
  if (eval_expr(S, v->decl->b, &iv)) return EV_ERR;
  int rc = init_from_value(S, v, iv, dst);
  v_release(S, &iv);
  return rc;
}

/* Writes flat values into the global `v->name`, in place when we hold the
 * only reference (so a steady-state loop allocates nothing). */
static int put_var(blo_state *S, const bl_var *v, const double *src) {
  value *slot = env_lookup(S, v->name);
  if (v->rec) {
    if (slot && blr_write_in_place(v, slot, src)) return EV_OK;
    S->tn.err[0] = 0;
    value nv = blr_value(S, v, src);
    if (nv.kind == V_NIL) return S->tn.err[0] ? interp_tn_error(S, NULL) : interp_error(S, NULL, "out of memory");
    if (env_set_global(S, v->name, nv)) return interp_error(S, NULL, "out of memory");
    return EV_OK;
  }
  if (slot && v->is_num && slot->kind == V_NUM) {
    slot->u.num = src[0];
    return EV_OK;
  }
  if (slot && !v->is_num && slot->kind == V_TENSOR && !slot->tan && slot->u.t->refcount == 1 &&
      slot->u.t->rank == v->rank && slot->u.t->size == v->size &&
      memcmp(slot->u.t->shape, v->shape, (size_t)v->rank * sizeof(size_t)) == 0) {
    memcpy(slot->u.t->data, src, v->size * sizeof(double));
    slot->node = -1;
    return EV_OK;
  }
  value nv;
  if (v->is_num) {
    nv = v_num(src[0]);
  } else {
    blo_tensor *t = tn_from(&S->tn, v->rank, v->shape, src);
    if (!t) return interp_tn_error(S, NULL);
    nv = v_tensor(t);
  }
  if (env_set_global(S, v->name, nv)) return interp_error(S, NULL, "out of memory");
  return EV_OK;
}

static value var_value(blo_state *S, const bl_var *v, const double *src) {
  if (v->rec) return blr_value(S, v, src);
  if (v->is_num) return v_num(src[0]);
  blo_tensor *t = tn_from(&S->tn, v->rank, v->shape, src);
  return t ? v_tensor(t) : v_nil();
}

/* Box `in [lo, hi]`: numbers, or tensors shaped like the variable. */
static int eval_box(blo_state *S, bl_var *v) {
  const ast_node *e = v->decl->c;
  if (v->rec) return blr_box(S, v, e);
  value bv;
  if (eval_expr(S, e, &bv)) return EV_ERR;
  int rc = EV_OK, form = 1;   /* form: the value has the form [lo, hi] */
  blo_tensor *parts[2] = {NULL, NULL};
  if (bv.kind == V_TENSOR && bv.u.t->rank >= 1 && bv.u.t->shape[0] == 2) {
    for (int k = 0; k < 2 && rc == EV_OK; k++) {
      tn_index_t ix = {TN_IX_INDEX, k, k + 1};
      if (!(parts[k] = tn_index(&S->tn, bv.u.t, &ix, 1))) rc = interp_tn_error(S, e);
    }
  } else if (bv.kind == V_LIST && ((olist *)bv.u.o)->n == 2) {
    olist *l = (olist *)bv.u.o;
    for (int k = 0; k < 2 && rc == EV_OK && form; k++) {
      if (!v_is_numeric(l->items[k])) form = 0;
      else if (!(parts[k] = v_to_tensor(S, l->items[k]))) rc = interp_tn_error(S, e);
    }
  } else {
    form = 0;
  }
  for (int k = 0; k < 2 && rc == EV_OK && form; k++)
    if (parts[k]->size != 1 && parts[k]->size != v->size) form = 0;
  if (rc == EV_OK && !form) {
    char s[64];
    shape_text(v->rank, v->shape, s, sizeof s);
    rc = interp_error(S, e, "outer %s: a box must be [lo, hi] with numbers or tensors of shape %s", v->name, s);
  }
  if (rc == EV_OK) {
    v->lo = malloc(v->size * sizeof(double));
    v->hi = malloc(v->size * sizeof(double));
    if (!v->lo || !v->hi) rc = interp_error(S, e, "out of memory");
    for (size_t i = 0; rc == EV_OK && i < v->size; i++) {
      v->lo[i] = parts[0]->data[parts[0]->size == 1 ? 0 : i];
      v->hi[i] = parts[1]->data[parts[1]->size == 1 ? 0 : i];
      if (!(v->lo[i] <= v->hi[i]))
        rc = interp_error(S, e, "outer %s: empty box (lower bound above upper bound at element %zu)", v->name, i);
      else if (!(v->init0[i] >= v->lo[i] && v->init0[i] <= v->hi[i]))
        rc = interp_error(S, e, "outer %s: the initial value is outside its box (element %zu)", v->name, i);
    }
  }
  tn_release(&S->tn, parts[0]);
  tn_release(&S->tn, parts[1]);
  v_release(S, &bv);
  return rc;
}

int bl_ast_add_pairing(ast_arena *a, ast_loc loc, const ast_node *e, const char *adj_name, int by_field,
                       ast_node **acc) {
  ast_node *adj = ast_new(a, N_NAME, loc), *fn = ast_new(a, N_NAME, loc), *call = ast_new(a, N_CALL, loc);
  ast_node **kids = ast_alloc(a, (by_field ? 2 : 1) * sizeof(ast_node *));
  if (!adj || !fn || !call || !kids) return -1;
  adj->name = adj_name;
  if (by_field) {
    /* dot(e, adjoint): a record's fields paired by name */
    fn->name = "dot";
    kids[0] = (ast_node *)e;
    kids[1] = adj;
  } else {
    ast_node *mul = ast_new(a, N_BINARY, loc);
    if (!mul) return -1;
    mul->op = OP_MUL;
    mul->a = (ast_node *)e;
    mul->b = adj;
    fn->name = "sum";
    kids[0] = mul;
  }
  call->a = fn;
  call->kids = kids;
  call->nkids = by_field ? 2 : 1;
  if (*acc) {
    ast_node *add = ast_new(a, N_BINARY, loc);
    if (!add) return -1;
    add->op = OP_ADD;
    add->a = *acc;
    add->b = call;
    call = add;
  }
  *acc = call;
  return 0;
}

/* Builds sum_i sum(init_i * #adj_i) over the inner variables whose init
 * names an outer variable: reverse mode over it gives (dy0/dx)^T a. */
static int build_init_dot(blo_state *S, problem *p) {
  if (!p->any_init_uses_outer) return EV_OK;
  if (!(p->arena = ast_arena_new())) return interp_error(S, p->node, "out of memory");
  if (!(p->adj_names = calloc((size_t)p->nvars, sizeof(char *)))) return interp_error(S, p->node, "out of memory");
  ast_node *acc = NULL;
  for (int i = p->nouter; i < p->nvars; i++) {
    bl_var *v = &p->vars[i];
    if (!v->init_uses_outer) continue;
    /* a name a script cannot write */
    char nm[32];
    snprintf(nm, sizeof nm, "#adj%d", i);
    if (!(p->adj_names[i] = strdup(nm)) ||
        bl_ast_add_pairing(p->arena, v->decl->b->loc, v->decl->b, p->adj_names[i], v->rec != NULL, &acc))
      return interp_error(S, p->node, "out of memory");
  }
  p->init_dot = acc;
  return EV_OK;
}

/* Evaluates an objective once at declaration, so a typo or a non-scalar
 * objective is reported where it is written, not in the middle of a solve. */
static int check_objective(blo_state *S, const ast_node *obj) {
  value v;
  if (eval_expr(S, obj->a, &v)) return EV_ERR;
  int rc = EV_OK;
  double d;
  if (v_to_double(v, &d) != 0) {
    char desc[96];
    v_describe(v, desc, sizeof desc);
    rc = interp_error(S, obj->a, "the %s objective must be a number, got %s", obj->op ? "inner" : "outer", desc);
  }
  v_release(S, &v);
  return rc;
}

static int declare_items(blo_state *S, problem *p, const ast_node *n) {
  const char *pname = n->name;
  int no = 0, ni = 0, ndecl = 0;
  for (int i = 0; i < n->nkids; i++)
    if (n->kids[i] && n->kids[i]->kind == N_VARDECL) ndecl++;
  size_t cap = (size_t)(ndecl ? ndecl : 1);
  /* p->vars first, so that problem_free finds whatever is handed over below */
  bl_var *outer = calloc(cap, sizeof(bl_var)), *inner = calloc(cap, sizeof(bl_var));
  const char **onames = calloc(cap, sizeof(char *));
  p->vars = calloc(cap, sizeof(bl_var));
  p->names = calloc(cap, sizeof(char *));
  if (!outer || !inner || !onames || !p->vars || !p->names) {
    free(outer);
    free(inner);
    free(onames);
    return interp_error(S, n, "out of memory");
  }
  const ast_node *objs[2] = {NULL, NULL};
  int nevery = 0;
  for (int i = 0; i < n->nkids; i++)
    if (n->kids[i] && n->kids[i]->kind == N_EVERY && n->kids[i]->op != 2) nevery++;
  int rc = EV_OK;
  if (nevery && !(p->every = calloc((size_t)nevery, sizeof(bl_every)))) rc = interp_error(S, n, "out of memory");
  /* outer names first: an inner init may name an outer variable declared later */
  int nonames = 0;
  for (int i = 0; i < n->nkids; i++) {
    const ast_node *k = n->kids[i];
    if (k && k->kind == N_VARDECL && k->op == 0) onames[nonames++] = k->name;
  }
  for (int i = 0; i < n->nkids && rc == EV_OK; i++) {
    const ast_node *k = n->kids[i];
    if (!k) continue;
    if (k->kind == N_EVERY) {
      value v;
      if ((rc = eval_expr(S, k->a, &v)) != EV_OK) break;
      if (env_set_global(S, k->name, v)) { rc = interp_error(S, k, "out of memory"); break; }
      if (k->op != 2) {
        bl_every *e = &p->every[p->nevery++];
        e->name = k->name;
        e->expr = k->a;
        e->level = k->op;
        if (k->op == 1) p->nevery_inner++;
      }
    } else if (k->kind == N_SUBJECT) {
      rc = bls_declare(S, p, k);
    } else if (k->kind == N_OBJECTIVE) {
      if (objs[k->op])
        rc = interp_error(S, k, "problem %s has two %s objectives", pname, k->op ? "inner" : "outer");
      objs[k->op] = k;
    } else if (k->kind == N_VARDECL) {
      for (int j = 0; j < no; j++)
        if (strcmp(outer[j].name, k->name) == 0) rc = interp_error(S, k, "variable '%s' declared twice in problem %s", k->name, pname);
      for (int j = 0; j < ni; j++)
        if (strcmp(inner[j].name, k->name) == 0) rc = interp_error(S, k, "variable '%s' declared twice in problem %s", k->name, pname);
      if (rc) break;
      if (strcmp(k->name, pname) == 0) {
        rc = interp_error(S, k, "variable '%s' has the name of its problem", k->name);
        break;
      }
      bl_var *v = k->op == 0 ? &outer[no++] : &inner[ni++];
      memset(v, 0, sizeof *v);
      v->name = k->name;
      v->decl = k;
      v->outer = k->op == 0;
      /* shape: declared, or taken from the init (evaluated once: it may draw random numbers) */
      value iv;
      if (k->a && (rc = eval_shape(S, k->a, &v->rank, v->shape)) != EV_OK) break;
      if ((rc = eval_expr(S, k->b, &iv)) != EV_OK) break;
      if (iv.kind == V_REC) {
        /* a record variable: its fields give the shapes */
        if (k->a)
          rc = interp_error(S, k->a, "%s %s: a record variable takes the shapes of its fields from its init; leave "
                            "out ': SHAPE'", v->outer ? "outer" : "inner", k->name);
        else
          rc = blr_layout(S, k->b, v, iv);
        if (rc) { v_release(S, &iv); break; }
      } else if (k->a) {
        v->size = 1;
        for (int d = 0; d < v->rank; d++) v->size *= v->shape[d];
        v->is_num = v->rank == 0;
      } else {
        if (iv.kind == V_NUM) {
          v->rank = 0;
          v->is_num = 1;
        } else if (iv.kind == V_TENSOR) {
          v->rank = iv.u.t->rank;
          for (int d = 0; d < v->rank; d++) v->shape[d] = iv.u.t->shape[d];
        }
        v->size = iv.kind == V_TENSOR ? iv.u.t->size : 1;
      }
      if (!(v->init0 = malloc((v->size ? v->size : 1) * sizeof(double)))) {
        v_release(S, &iv);
        rc = interp_error(S, k, "out of memory");
        break;
      }
      rc = init_from_value(S, v, iv, v->init0);
      v_release(S, &iv);
      if (rc) break;
      if (k->c && (rc = v->outer ? eval_box(S, v) : blc_declare(S, p, v)) != EV_OK) break;
      if (!v->outer)
        for (int j = 0; j < nonames; j++)
          if (uses_name(k->b, onames[j])) v->init_uses_outer = 1;
      if ((rc = put_var(S, v, v->init0)) != EV_OK) break;
    }
  }
  /* hand the variables to p (also on error, so problem_free frees them) */
  for (int j = 0; j < no; j++) p->vars[p->nvars++] = outer[j];
  p->nouter = no;
  for (int j = 0; j < ni; j++) p->vars[p->nvars++] = inner[j];
  p->ninner = ni;
  free(outer);
  free(inner);
  free(onames);
  if (rc) return rc;
  if (no == 0) return interp_error(S, n, "problem %s has no outer variable (declare one with 'outer NAME = init')", pname);
  if (ni == 0) return interp_error(S, n, "problem %s has no inner variable (declare one with 'inner NAME = init')", pname);
  if (!objs[1]) return interp_error(S, n, "problem %s has no inner objective ('inner minimize EXPR')", pname);
  if (!objs[0]) return interp_error(S, n, "problem %s has no outer objective ('outer minimize EXPR')", pname);
  p->f = objs[1]->a;
  p->f_max = objs[1]->is_block;
  p->F = objs[0]->a;
  p->F_max = objs[0]->is_block;
  size_t off = 0;
  int nl = 0;
  for (int j = 0; j < p->nvars; j++) {
    if (j == p->nouter) { p->m = off; off = 0; }
    p->vars[j].off = off;
    off += p->vars[j].size;
    p->names[j] = p->vars[j].name;
    if (p->vars[j].init_uses_outer) p->any_init_uses_outer = 1;
    nl += p->vars[j].rec ? p->vars[j].nleaves : 1;
  }
  p->n = off;
  /* the leaves: a tensor or number variable is one, a record variable has one per field */
  if (!(p->leaves = calloc((size_t)nl, sizeof(bl_leaf)))) return interp_error(S, n, "out of memory");
  for (int j = 0; j < p->nvars; j++) {
    bl_var *v = &p->vars[j];
    v->leaf0 = p->nleaves;
    if (j == p->nouter) p->nleaves_outer = p->nleaves;
    if (v->rec) {
      for (int k = 0; k < v->nleaves; k++) {
        v->leaves[k].off += v->off;
        p->leaves[p->nleaves++] = v->leaves[k];
      }
    } else {
      bl_leaf *l = &p->leaves[p->nleaves++];
      l->rank = v->rank;
      memcpy(l->shape, v->shape, sizeof l->shape);
      l->size = v->size;
      l->off = v->off;
      l->is_num = v->is_num;
    }
  }
  if (!(p->y_written = malloc((p->n ? p->n : 1) * sizeof(double)))) return interp_error(S, n, "out of memory");
  for (int j = p->nouter; j < p->nvars; j++)
    memcpy(p->y_written + p->vars[j].off, p->vars[j].init0, p->vars[j].size * sizeof(double));
  if ((rc = check_objective(S, objs[1])) != EV_OK) return rc;
  if ((rc = check_objective(S, objs[0])) != EV_OK) return rc;
  if ((rc = build_init_dot(S, p)) != EV_OK) return rc;
  if ((rc = blc_finish(S, p)) != EV_OK) return rc;
  return bls_finish(S, p);
}

int problem_declare(blo_state *S, const ast_node *n) {
  scope *saved_sc = S->sc;
  S->sc = NULL;
  problem *p = calloc(1, sizeof *p);
  if (!p) { S->sc = saved_sc; return interp_error(S, n, "out of memory"); }
  p->h.refcount = 1;
  p->h.type = V_PROBLEM;
  p->name = n->name;
  p->node = n;
  p->chunk = S->cur_chunk;
  settings_default(&p->last);
  p->next = S->problems;
  S->problems = p;
  int rc = declare_items(S, p, n);
  S->sc = saved_sc;
  value pv = v_nil();
  pv.kind = V_PROBLEM;
  pv.u.o = &p->h;
  if (rc == EV_OK && env_set_global(S, n->name, pv)) return interp_error(S, n, "out of memory");
  if (rc != EV_OK) v_release(S, &pv);
  return rc;
}

/* ------------------------------------------------------------------ */
/* evaluation services                                                  */

int bl_error(bl_run *r, const char *fmt, ...) {
  char msg[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  chunk *saved = r->S->cur_chunk;
  r->S->cur_chunk = r->at_chunk;
  interp_error(r->S, r->at, "%s", msg);
  r->S->cur_chunk = saved;
  return EV_ERR;
}

/* Formats "file:line:col: warning: msg" at node `at` of chunk c and hands
 * it to the host's error callback (the library itself prints nothing). */
static void warn_at(blo_state *S, const chunk *c, const ast_node *at, const char *msg) {
  if (!S->cfg.error_fn) return;
  char line[1200];
  const char *file = c && c->name ? c->name : "<input>";
  if (at && at->loc.line > 0)
    snprintf(line, sizeof line, "%s:%d:%d: warning: %s\n", file, at->loc.line, at->loc.col, msg);
  else
    snprintf(line, sizeof line, "%s: warning: %s\n", file, msg);
  S->cfg.error_fn(S->cfg.error_ud, line);
}

void bl_warn(bl_run *r, const char *fmt, ...) {
  char msg[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  warn_at(r->S, r->at_chunk, r->at, msg);
}

void bl_report_first(bl_run *r, char *status_buf, size_t status_cap, char *note, size_t note_cap, const char *field,
                     const char *status, const char *fmt, va_list ap) {
  if (strcmp(status_buf, "ok") != 0) return;   /* the first report of the run is kept */
  snprintf(status_buf, status_cap, "%s", status);
  vsnprintf(note, note_cap, fmt, ap);
  if (r->at && r->at->kind == N_SOLVE)
    bl_warn(r, "solve %s: outer step %ld: %s (reported once per solve; see the result's %s)", r->p->name,
            r->outer_step, note, field);
  else
    bl_warn(r, "%s", note);
}

void bl_hg_report(bl_run *r, const char *status, const char *fmt, ...) {
  if (!r->hg_failed_now) r->hg_failures++;
  r->hg_failed_now = 1;
  va_list ap;
  va_start(ap, fmt);
  bl_report_first(r, r->hg_status, sizeof r->hg_status, r->hg_note, sizeof r->hg_note, "hypergrad_status", status,
                  fmt, ap);
  va_end(ap);
}

double *bl_alloc(bl_run *r, size_t n) {
  double *d = calloc(n ? n : 1, sizeof(double));
  if (!d) bl_error(r, "out of memory");
  return d;
}

/* The held recording follows y to src: each inner variable's leaf moves
 * (diff_rec_move), and later gradients and products recompute on demand
 * what they read, without evaluating f's expression again. */
static int move_point(bl_run *r, const double *src) {
  problem *p = r->p;
  blo_state *S = r->S;
  chunk *saved = S->cur_chunk;
  S->cur_chunk = p->chunk;
  int rc = EV_OK;
  for (int i = p->nleaves_outer; i < p->nleaves && rc == EV_OK; i++) {
    const bl_leaf *l = &p->leaves[i];
    blo_tensor *t = tn_from(&S->tn, l->rank, l->shape, src + l->off);
    rc = t ? diff_rec_move(S, &r->held, i, t) : bl_error(r, "%s", S->tn.err);
    tn_release(&S->tn, t);
  }
  S->cur_chunk = saved;
  return rc;
}

/* Writes y into the inner globals (not r->y).  A held recording moves with
 * y when it can (it captured all of f's dependence on y); otherwise, and
 * whenever x moves, it is dropped. */
static int scatter(bl_run *r, int outer, const double *src) {
  problem *p = r->p;
  if (!outer && diff_rec_movable(&r->held)) {
    if (move_point(r, src)) return EV_ERR;
  } else {
    bl_release_point(r);
  }
  int lo = outer ? 0 : p->nouter, hi = outer ? p->nouter : p->nvars;
  for (int i = lo; i < hi; i++)
    if (put_var(r->S, &p->vars[i], src + p->vars[i].off)) return EV_ERR;
  return EV_OK;
}

/* Reads the globals into flat x or y, checking they still hold what was declared. */
static int gather(bl_run *r, int outer, double *dst) {
  problem *p = r->p;
  /* dst NULL: only check, after script code (an `every` line) ran mid-solve */
  const char *during = dst ? "" : " (script code of an `every` line assigned it during the solve)";
  int lo = outer ? 0 : p->nouter, hi = outer ? p->nouter : p->nvars;
  for (int i = lo; i < hi; i++) {
    const bl_var *v = &p->vars[i];
    value *slot = env_lookup(r->S, v->name);
    int ok = 0;
    if (v->rec) {
      char err[400], want[300], d[96] = "nothing";
      if (slot && blr_read(v, *slot, 0, dst ? dst + v->off : NULL, err, sizeof err) == 0) continue;
      blr_describe(v, want, sizeof want);
      if (!slot) snprintf(err, sizeof err, "it holds %s", d);
      return bl_error(r, "%s variable '%s' must hold a record like %s: %s%s", v->outer ? "outer" : "inner", v->name,
                      want, err, during);
    }
    if (slot && slot->kind == V_NUM && v->size == 1) {
      if (dst) dst[v->off] = slot->u.num;
      ok = 1;
    } else if (slot && slot->kind == V_TENSOR) {
      const blo_tensor *t = slot->u.t;
      ok = t->rank == v->rank || (v->size == 1 && t->size == 1);
      for (int d = 0; ok && d < v->rank && t->rank == v->rank; d++) ok = t->shape[d] == v->shape[d];
      if (ok && dst) memcpy(dst + v->off, t->data, v->size * sizeof(double));
    }
    if (!ok) {
      char s[64], d[96] = "nothing";
      shape_text(v->rank, v->shape, s, sizeof s);
      if (slot) v_describe(*slot, d, sizeof d);
      return bl_error(r, "%s variable '%s' must hold %s%s, but it holds %s%s", v->outer ? "outer" : "inner", v->name,
                      v->is_num ? "a number" : "a tensor of shape ", v->is_num ? "" : s, d, during);
    }
  }
  return EV_OK;
}

int bl_put_y(bl_run *r, const double *y) { return scatter(r, 0, y); }

int bl_set_y(bl_run *r, const double *y) {
  if (y != r->y) memcpy(r->y, y, r->n * sizeof(double));
  return scatter(r, 0, r->y);
}

/* dst (the flat x or y) at leaf l's offset = t, or zeros when t is missing */
static void put_flat(const bl_leaf *l, const blo_tensor *t, double *dst) {
  if (!dst) return;
  if (t && t->size == l->size) memcpy(dst + l->off, t->data, l->size * sizeof(double));
  else memset(dst + l->off, 0, l->size * sizeof(double));
}

static int leaf_outer(const problem *p, int i) { return i < p->nleaves_outer; }

/* r->lf_want[i - first] set for each leaf i >= first whose side is wanted. */
static const unsigned char *side_mask(bl_run *r, int first, int outer, int inner) {
  const problem *p = r->p;
  for (int i = first; i < p->nleaves; i++) r->lf_want[i - first] = (unsigned char)(leaf_outer(p, i) ? outer : inner);
  return r->lf_want;
}

/* One diff_run over expr (in the problem's chunk, so errors point into it).
 * with_outer: differentiate the outer variables too.  tx/ty: tangents (NULL =
 * zero).  Outputs (each may be NULL): value, gradients, second-order
 * products, forward directional derivative (dir, dir_n doubles). */
static int run_diff(bl_run *r, const ast_node *expr, int with_outer, const double *tx, const double *ty,
                    int reverse, double *val, double *gx, double *gy, double *hx, double *hy, double *dir,
                    size_t dir_n) {
  blo_state *S = r->S;
  problem *p = r->p;
  int first = with_outer ? 0 : p->nouter;
  int lfirst = with_outer ? 0 : p->nleaves_outer;
  int cnt = p->nleaves - lfirst;
  /* only the cnt entries in use are cleared */
  blo_tensor **tg = r->lf_tg, **grads = r->lf_grads, **hvs = r->lf_hvs;
  for (int i = 0; i < cnt; i++) tg[i] = grads[i] = hvs[i] = NULL;
  int any_tan = 0, rc = EV_OK;
  for (int i = lfirst; i < p->nleaves && rc == EV_OK; i++) {
    const bl_leaf *l = &p->leaves[i];
    const double *src = leaf_outer(p, i) ? tx : ty;
    if (!src) continue;
    if (!(tg[i - lfirst] = tn_from(&S->tn, l->rank, l->shape, src + l->off))) rc = bl_error(r, "%s", S->tn.err);
    any_tan = 1;
  }
  /* second-order products without gradients (bl_hvp, bl_dgrad): a tangent-only
   * sweep, which skips the primal adjoints (e.g. X' g) no product needs */
  int want_grads = reverse && (gx || gy || !any_tan);
  /* results only for the side asked for: the mixed product alone (hx) skips
   * the sweep into y (X' u) */
  const unsigned char *want = side_mask(r, lfirst, gx || hx, gy || hy);
  diff_req req = {p->nvars - first, p->names + first, any_tan ? tg : NULL, reverse, v_nil(), NULL,
                  want_grads ? grads : NULL, reverse && any_tan ? hvs : NULL, want, cnt};
  int ran = 0;
  if (rc == EV_OK) {
    chunk *saved = S->cur_chunk;
    S->cur_chunk = p->chunk;
    rc = diff_run(S, expr, expr, &req);
    S->cur_chunk = saved;
    ran = rc == EV_OK;
  }
  if (rc == EV_OK && val) {
    if (v_to_double(req.result, val) != 0) {
      char d[96];
      v_describe(req.result, d, sizeof d);
      chunk *saved = S->cur_chunk;
      S->cur_chunk = p->chunk;
      rc = interp_error(S, expr, "objective must be a number, got %s", d);
      S->cur_chunk = saved;
    }
  }
  if (rc == EV_OK && reverse) {
    for (int i = lfirst; i < p->nleaves; i++) {
      const bl_leaf *l = &p->leaves[i];
      put_flat(l, grads[i - lfirst], leaf_outer(p, i) ? gx : gy);
      put_flat(l, hvs[i - lfirst], leaf_outer(p, i) ? hx : hy);
    }
  }
  if (rc == EV_OK && dir) {
    if (!req.dir) memset(dir, 0, dir_n * sizeof(double));
    else if (req.dir->size == dir_n) memcpy(dir, req.dir->data, dir_n * sizeof(double));
    else if (req.dir->size == 1) for (size_t i = 0; i < dir_n; i++) dir[i] = req.dir->data[0];
    else rc = bl_error(r, "internal error: directional derivative has %zu elements, expected %zu", req.dir->size, dir_n);
  }
  if (ran) diff_req_free(S, &req);
  for (int i = 0; i < cnt; i++) { tn_release(&S->tn, tg[i]); tg[i] = NULL; }
  return rc;
}

static void scale(double *a, size_t n, double s) {
  if (!a || s == 1) return;
  for (size_t i = 0; i < n; i++) a[i] *= s;
}

static int held_grad(bl_run *r, double *f, double *gx, double *gy);

int bl_grad_f(bl_run *r, double *f, double *gx, double *gy) {
  if (r->held.live ? held_grad(r, f, gx, gy) : run_diff(r, r->p->f, gx != NULL, NULL, NULL, 1, f, gx, gy, NULL, NULL, NULL, 0))
    return EV_ERR;
  double s = r->p->f_max ? -1 : 1;
  scale(gx, r->m, s);
  scale(gy, r->n, s);
  if (r->set.prox > 0 && gy)
    for (size_t i = 0; i < r->n; i++) gy[i] += r->set.prox * (r->y[i] - r->y_prev[i]);
  return EV_OK;
}

int bl_grad_F(bl_run *r, double *F, double *gx, double *gy) {
  if (run_diff(r, r->p->F, 1, NULL, NULL, 1, F, gx, gy, NULL, NULL, NULL, 0)) return EV_ERR;
  double s = r->p->F_max ? -1 : 1;
  scale(gx, r->m, s);
  scale(gy, r->n, s);
  return EV_OK;
}

static int held_products(bl_run *r, const double *tx, const double *ty, double *hxy, double *hyy);

int bl_hvp(bl_run *r, const double *v, double *hxy, double *hyy) {
  if (blc_reducing(r)) return blc_hvp(r, v, hxy, hyy);
  return bl_hvp_raw(r, v, hxy, hyy);
}

int bl_hvp_raw(bl_run *r, const double *v, double *hxy, double *hyy) {
  if (r->held.live ? held_products(r, NULL, v, hxy, hyy)
                   : run_diff(r, r->p->f, hxy != NULL, NULL, v, 1, NULL, NULL, NULL, hxy, hyy, NULL, 0))
    return EV_ERR;
  double s = r->p->f_max ? -1 : 1;
  scale(hxy, r->m, s);
  scale(hyy, r->n, s);
  if (r->set.prox > 0 && hyy)
    for (size_t i = 0; i < r->n; i++) hyy[i] += r->set.prox * v[i];
  return EV_OK;
}

int bl_hold_point(bl_run *r) {
  problem *p = r->p;
  blo_state *S = r->S;
  if (r->held.live) return EV_OK;   /* still this point: anything that moves it releases it */
  r->held.n = p->nvars;
  r->held.names = p->names;
  r->held.nleaves = p->nleaves;
  chunk *saved = S->cur_chunk;
  S->cur_chunk = p->chunk;
  int rc = diff_record(S, p->f, p->f, &r->held);
  S->cur_chunk = saved;
  return rc;
}

void bl_release_point(bl_run *r) {
  if (r->held.live) diff_rec_drop(r->S, &r->held);
}

/* Second-order products at the held point, by a replay of the recording:
 * tangents tx on x and ty on y (NULL: zero); hxy, hyy (NULL: not wanted)
 * get the x and y parts of H (tx, ty), unscaled. */
static int held_products(bl_run *r, const double *tx, const double *ty, double *hxy, double *hyy) {
  blo_state *S = r->S;
  problem *p = r->p;
  blo_tensor **tg = r->lf_tg, **hvs = r->lf_hvs;
  const unsigned char *want = side_mask(r, 0, hxy != NULL, hyy != NULL);
  int rc = EV_OK;
  for (int i = 0; i < p->nleaves; i++) {
    const bl_leaf *l = &p->leaves[i];
    const double *src = leaf_outer(p, i) ? tx : ty;
    tg[i] = hvs[i] = NULL;
    if (src && rc == EV_OK && !(tg[i] = tn_from(&S->tn, l->rank, l->shape, src + l->off)))
      rc = bl_error(r, "%s", S->tn.err);
  }
  chunk *saved = S->cur_chunk;
  S->cur_chunk = p->chunk;
  if (rc == EV_OK) rc = diff_replay(S, &r->held, tg, want, NULL, hvs);
  S->cur_chunk = saved;
  for (int i = 0; i < p->nleaves; i++) {
    if (rc == EV_OK) {
      put_flat(&p->leaves[i], hvs[i], leaf_outer(p, i) ? hxy : hyy);
      tn_release(&S->tn, hvs[i]);
    }
    hvs[i] = NULL;
    tn_release(&S->tn, tg[i]);
    tg[i] = NULL;
  }
  return rc;
}

/* f and its gradients at the held point: a first-order sweep of the recording */
static int held_grad(bl_run *r, double *f, double *gx, double *gy) {
  blo_state *S = r->S;
  problem *p = r->p;
  blo_tensor **gs = r->lf_grads;
  const unsigned char *want = side_mask(r, 0, gx != NULL, gy != NULL);
  chunk *saved = S->cur_chunk;
  S->cur_chunk = p->chunk;
  int rc = diff_replay(S, &r->held, NULL, want, gs, NULL), err = 0;  /* gs all NULL on failure */
  if (rc == EV_OK && f) {
    *f = diff_rec_value(S, &r->held, &err);
    if (err) rc = EV_ERR;
  }
  S->cur_chunk = saved;
  for (int i = 0; i < p->nleaves; i++) {
    if (rc == EV_OK) put_flat(&p->leaves[i], gs[i], leaf_outer(p, i) ? gx : gy);
    tn_release(&S->tn, gs[i]);
    gs[i] = NULL;
  }
  return rc;
}

int bl_dgrad(bl_run *r, const double *tx, const double *ty, double *out) {
  if (r->held.live ? held_products(r, tx, ty, NULL, out)
                   : run_diff(r, r->p->f, 1, tx, ty, 1, NULL, NULL, NULL, NULL, out, NULL, 0))
    return EV_ERR;
  scale(out, r->n, r->p->f_max ? -1 : 1);
  if (r->set.prox > 0 && ty)
    for (size_t i = 0; i < r->n; i++) out[i] += r->set.prox * ty[i];
  return EV_OK;
}

double bl_inner_lr(const bl_run *r) { return r->set.inner_opt.lr; }

/* ---- trajectory ---- */

long bl_traj_first(const bl_run *r) { return r->T > r->traj_cap ? r->T - r->traj_cap : 0; }

double bl_traj_lr(const bl_run *r, long t) { return r->traj_lr[t % r->traj_cap]; }

static int set_every_inner(bl_run *r, const value *vals) {
  problem *p = r->p;
  int k = 0;
  for (int i = 0; i < p->nevery; i++) {
    if (p->every[i].level != 1) continue;
    if (env_set_global(r->S, p->every[i].name, v_retain(vals[k++]))) return bl_error(r, "out of memory");
  }
  return EV_OK;
}

int bl_traj_load(bl_run *r, long t) {
  if (t < bl_traj_first(r) || t >= r->T) return bl_error(r, "internal error: inner step %ld is not stored", t);
  long slot = t % r->traj_cap;
  if (r->p->nevery_inner) bl_release_point(r); /* the values drawn at step t are part of its point */
  if (scatter(r, 0, r->traj_y + (size_t)slot * r->n)) return EV_ERR;
  if (r->p->nevery_inner && set_every_inner(r, r->traj_mb + (size_t)slot * (size_t)r->p->nevery_inner)) return EV_ERR;
  return EV_OK;
}

/* The values drawn for the current point are kept in mb_cur (the last traj
 * column is not enough when the ring is short), see draw(). */
static value *mb_cur(bl_run *r) { return r->traj_mb ? r->traj_mb + (size_t)r->traj_cap * (size_t)r->p->nevery_inner : NULL; }

int bl_traj_restore(bl_run *r) {
  if (r->p->nevery_inner) bl_release_point(r);
  if (scatter(r, 0, r->y)) return EV_ERR;
  if (r->p->nevery_inner && mb_cur(r) && set_every_inner(r, mb_cur(r))) return EV_ERR;
  return EV_OK;
}

/* ---- the init path (meta-learning form) ---- */

int bl_init_path(const bl_run *r) { return r->set.cold && r->p->any_init_uses_outer; }

int bl_init_vjp(bl_run *r, const double *a, double *out) {
  problem *p = r->p;
  blo_state *S = r->S;
  if (!p->init_dot) return EV_OK;
  for (int i = p->nouter; i < p->nvars; i++) {
    const bl_var *v = &p->vars[i];
    if (!v->init_uses_outer) continue;
    value av = var_value(S, v, a + v->off);
    if (av.kind == V_NIL || env_set_global(S, p->adj_names[i], av)) return bl_error(r, "out of memory");
  }
  /* re-evaluating the init must not move the random stream */
  tn_rng saved = S->rng;
  double *gx = r->scratch2;
  int rc = run_diff(r, p->init_dot, 1, NULL, NULL, 1, NULL, gx, NULL, NULL, NULL, NULL, 0);
  S->rng = saved;
  for (int i = p->nouter; i < p->nvars; i++)
    if (p->vars[i].init_uses_outer) env_set_global(S, p->adj_names[i], v_nil());
  if (rc) return rc;
  for (size_t j = 0; j < r->m; j++) out[j] += gx[j];
  return EV_OK;
}

int bl_expr_grad_x(bl_run *r, const ast_node *e, double *gx) {
  return run_diff(r, e, 1, NULL, NULL, 1, NULL, gx, NULL, NULL, NULL, NULL, 0);
}

int bl_init_jac(bl_run *r, double *Z) {
  problem *p = r->p;
  blo_state *S = r->S;
  size_t m = r->m, n = r->n;
  memset(Z, 0, n * m * sizeof(double));
  if (!p->any_init_uses_outer) return EV_OK;
  double *e = r->scratch2, *col = r->scratch;
  memset(e, 0, m * sizeof(double));
  tn_rng saved = S->rng;
  int rc = EV_OK;
  for (int i = p->nouter; i < p->nvars && rc == EV_OK; i++) {
    const bl_var *v = &p->vars[i];
    if (!v->init_uses_outer) continue;
    for (size_t j = 0; j < m && rc == EV_OK; j++) {
      e[j] = 1;
      /* forward mode over the init expression with tangent e_j on x; only
       * the outer names are differentiated, so pass them with_outer and no y */
      rc = run_diff(r, v->decl->b, 1, e, NULL, 0, NULL, NULL, NULL, NULL, NULL, col, v->size);
      e[j] = 0;
      for (size_t k = 0; rc == EV_OK && k < v->size; k++) Z[(v->off + k) * m + j] = col[k];
    }
  }
  S->rng = saved;
  return rc;
}

/* ------------------------------------------------------------------ */
/* options                                                              */

static const char *const solve_keys[] = {
  "start", "inner_steps", "inner_tol", "inner_opt", "outer_steps", "outer_tol", "outer_opt",
  "hypergrad", "proximal", "seed", "trace", "quiet", "inner_starts", "inner_spread", "certificate",
  "constraint_rho", NULL,
};

/* The i-th option name of solve (NULL past the end), for completion. */
const char *bilevel_solve_key(size_t i) {
  return i < sizeof solve_keys / sizeof solve_keys[0] ? solve_keys[i] : NULL;
}
/* hypergrad() / check_hypergrad() take the inner-loop subset (plus h, against). */
static const char *const hg_keys[] = {"start", "inner_steps", "inner_tol", "inner_opt", "proximal", "seed", "info",
                                      "inner_starts", "inner_spread", "certificate",
                                      "constraint_rho", NULL};
static const char *const check_keys[] = {"start", "inner_steps", "inner_tol", "inner_opt", "proximal", "seed",
                                         "h", "against", "inner_starts", "inner_spread", "certificate",
                                         "constraint_rho", NULL};

/* Location of option `key` when the options are a record literal. */
static const ast_node *opt_node(const ast_node *lit, const ast_node *dflt, const char *key) {
  if (lit && lit->kind == N_RECORD)
    for (int i = 0; i < lit->nkids; i++)
      if (strcmp(lit->kids[i]->name, key) == 0) return lit->kids[i];
  return dflt;
}

static int opt_type_error(blo_state *S, const ast_node *at, const char *ctx, const char *key, value v, const char *want) {
  char d[96];
  bl_describe(v, d, sizeof d);
  return interp_error(S, at, "%s option '%s' must be %s, got %s", ctx, key, want, d);
}

static int get_count(blo_state *S, const ast_node *at, const char *ctx, const char *key, value v, long *out) {
  double d;
  if (v_to_double(v, &d) != 0 || !(d >= 0 && d == floor(d) && d < 1e12))
    return opt_type_error(S, at, ctx, key, v, "a non-negative integer");
  *out = (long)d;
  return EV_OK;
}

static int get_nonneg(blo_state *S, const ast_node *at, const char *ctx, const char *key, value v, double *out) {
  double d;
  if (v_to_double(v, &d) != 0 || !(d >= 0) || !isfinite(d)) return opt_type_error(S, at, ctx, key, v, "a number >= 0");
  *out = d;
  return EV_OK;
}

/* Applies the options in record `rec` (keys checked against `keys`) to *s.
 * extra_h/extra_against: check_hypergrad's own options, extra_info
 * hypergrad's (each may be NULL). */
static int parse_options(blo_state *S, const ast_node *lit, const ast_node *at, const char *ctx, orec *rec,
                         const char *const *keys, bl_settings *s, double *extra_h, int *extra_exact,
                         int *extra_info) {
  int start_given = 0;
  for (int i = 0; i < rec->n; i++) {
    const char *key = rec->keys[i];
    value v = rec->vals[i];
    const ast_node *loc = opt_node(lit, at, key);
    int known = 0;
    for (int k = 0; keys[k]; k++)
      if (strcmp(keys[k], key) == 0) known = 1;
    if (!known) {
      const char *sug = env_suggest_in(key, keys);
      if (sug) return interp_error(S, loc, "unknown %s option '%s' (did you mean '%s'?)", ctx, key, sug);
      strbuf sb = {0};
      for (int k = 0; keys[k]; k++) { if (k) sb_puts(&sb, ", "); sb_puts(&sb, keys[k]); }
      int rc = interp_error(S, loc, "unknown %s option '%s' (options: %s)", ctx, key, sb.s ? sb.s : "");
      sb_free(&sb);
      return rc;
    }
    char what[96];
    snprintf(what, sizeof what, "%s option '%s'", ctx, key);
    if (strcmp(key, "start") == 0) {
      if (!v_is_text(v) || (strcmp(v_cstr(v), "cold") != 0 && strcmp(v_cstr(v), "warm") != 0))
        return opt_type_error(S, loc, ctx, key, v, "\"cold\" or \"warm\"");
      s->cold = strcmp(v_cstr(v), "cold") == 0;
      start_given = 1;
    } else if (strcmp(key, "inner_steps") == 0) {
      if (get_count(S, loc, ctx, key, v, &s->inner_steps)) return EV_ERR;
    } else if (strcmp(key, "outer_steps") == 0) {
      if (get_count(S, loc, ctx, key, v, &s->outer_steps)) return EV_ERR;
    } else if (strcmp(key, "inner_tol") == 0) {
      if (get_nonneg(S, loc, ctx, key, v, &s->inner_tol)) return EV_ERR;
    } else if (strcmp(key, "outer_tol") == 0) {
      if (get_nonneg(S, loc, ctx, key, v, &s->outer_tol)) return EV_ERR;
    } else if (strcmp(key, "constraint_rho") == 0) {
      double d;
      if (v_to_double(v, &d) != 0 || !(d > 0) || !isfinite(d)) return opt_type_error(S, loc, ctx, key, v, "a number > 0");
      s->rho = d;
    } else if (strcmp(key, "proximal") == 0) {
      if (get_nonneg(S, loc, ctx, key, v, &s->prox)) return EV_ERR;
    } else if (strcmp(key, "inner_opt") == 0) {
      if (opt_parse(S, loc, what, v, &s->inner_opt)) return EV_ERR;
    } else if (strcmp(key, "outer_opt") == 0) {
      if (opt_parse(S, loc, what, v, &s->outer_opt)) return EV_ERR;
      if (opt_is_second(s->outer_opt.kind))
        return interp_error(S, loc, "%s: %s() is an inner optimizer only: its steps search along a line on values "
                            "of the objective, and the outer objective's gradient is a hypergradient of an inner "
                            "solve (approximate, and each value costs an inner solve); use sgd(), momentum() or adam()",
                            what, opt_name(s->outer_opt.kind));
    } else if (strcmp(key, "inner_starts") == 0) {
      long k;
      if (get_count(S, loc, ctx, key, v, &k)) return EV_ERR;
      if (k < 1) return opt_type_error(S, loc, ctx, key, v, "an integer >= 1");
      s->inner_starts = k;
    } else if (strcmp(key, "inner_spread") == 0) {
      if (get_nonneg(S, loc, ctx, key, v, &s->inner_spread)) return EV_ERR;
    } else if (strcmp(key, "certificate") == 0) {
      static const char *const modes[] = {"off", "final", "every", NULL};
      int mode = -1;
      for (int k = 0; v_is_text(v) && modes[k]; k++)
        if (strcmp(v_cstr(v), modes[k]) == 0) mode = k;
      if (mode < 0) return opt_type_error(S, loc, ctx, key, v, "\"final\", \"every\" or \"off\"");
      s->certificate = mode;
    } else if (strcmp(key, "hypergrad") == 0) {
      if (hg_parse(S, loc, what, v, &s->hg)) return EV_ERR;
    } else if (strcmp(key, "seed") == 0) {
      long sd;
      if (get_count(S, loc, ctx, key, v, &sd)) return EV_ERR;
      s->has_seed = 1;
      s->seed = (unsigned long long)sd;
    } else if (strcmp(key, "trace") == 0) {
      if (!v_is_text(v) || !v_cstr(v)[0] || strlen(v_cstr(v)) >= sizeof s->trace)
        return opt_type_error(S, loc, ctx, key, v, "a file name (string)");
      snprintf(s->trace, sizeof s->trace, "%s", v_cstr(v));
    } else if (strcmp(key, "quiet") == 0) {
      double d;
      if (v_to_double(v, &d) != 0) return opt_type_error(S, loc, ctx, key, v, "true or false");
      s->quiet = d != 0;
    } else if (strcmp(key, "h") == 0 && extra_h) {
      double d;
      if (v_to_double(v, &d) != 0 || !(d > 0) || !isfinite(d)) return opt_type_error(S, loc, ctx, key, v, "a number > 0");
      *extra_h = d;
    } else if (strcmp(key, "against") == 0 && extra_exact) {
      if (!v_is_text(v) || (strcmp(v_cstr(v), "fd") != 0 && strcmp(v_cstr(v), "exact") != 0))
        return opt_type_error(S, loc, ctx, key, v, "\"fd\" or \"exact\"");
      *extra_exact = strcmp(v_cstr(v), "exact") == 0;
    } else if (strcmp(key, "info") == 0 && extra_info) {
      double d;
      if (v_to_double(v, &d) != 0) return opt_type_error(S, loc, ctx, key, v, "true or false");
      *extra_info = d != 0;
    }
  }
  if (s->prox > 0) {
    if (start_given && s->cold) {
      char num[40];
      fmt_double(num, sizeof num, s->prox);
      return interp_error(S, opt_node(lit, at, "proximal"), "%s option 'proximal = %s' is a warm-start option: "
                          "use start = \"warm\" (or leave start out)", ctx, num);
    }
    s->cold = 0;
  }
  return EV_OK;
}

/* ------------------------------------------------------------------ */
/* the run                                                              */

static void run_free(bl_run *r) {
  if (r->S) diff_rec_free(r->S, &r->held);
  if (r->hg_state && r->set.hg.m->cleanup) r->set.hg.m->cleanup(r, r->hg_state);
  r->hg_state = NULL;
  blc_free(r);
  if (r->traj_mb) {
    size_t k = ((size_t)r->traj_cap + 1) * (size_t)r->p->nevery_inner;
    for (size_t i = 0; i < k; i++) v_release(r->S, &r->traj_mb[i]);
    free(r->traj_mb);
  }
  free(r->traj_y);
  free(r->traj_lr);
  free(r->x);
  free(r->y);
  free(r->y_prev);
  free(r->gy);
  free(r->Fx);
  free(r->Fy);
  free(r->scratch);
  free(r->scratch2);
  free(r->lf_tg);
  free(r->lf_grads);
  free(r->lf_hvs);
  free(r->lf_want);
  free(r->ms_y);
  free(r->ms_g);
  opt_free(&r->iopt);
  opt_free(&r->oopt);
  memset(r, 0, sizeof *r);
}

/* Allocates the run's buffers and reads x and y from the globals. */
static int run_init(bl_run *r, blo_state *S, const ast_node *at, problem *p, const bl_settings *set, int hooks) {
  memset(r, 0, sizeof *r);
  r->S = S;
  r->at = at;
  r->at_chunk = S->cur_chunk;
  r->p = p;
  r->set = *set;
  r->m = p->m;
  r->n = p->n;
  strcpy(r->hg_status, "ok");
  strcpy(r->inner_status, "ok");
  strcpy(r->cert, "off");
  r->min_eig = r->min_eig_err = NAN;
  size_t mn = p->m + p->n;
  if (!(r->x = bl_alloc(r, p->m)) || !(r->y = bl_alloc(r, p->n)) || !(r->y_prev = bl_alloc(r, p->n)) ||
      !(r->gy = bl_alloc(r, p->n)) || !(r->Fx = bl_alloc(r, p->m)) || !(r->Fy = bl_alloc(r, p->n)) ||
      !(r->scratch = bl_alloc(r, mn)) || !(r->scratch2 = bl_alloc(r, mn)))
    return EV_ERR;
  size_t nl = (size_t)p->nleaves;
  if (!(r->lf_tg = calloc(nl, sizeof(blo_tensor *))) || !(r->lf_grads = calloc(nl, sizeof(blo_tensor *))) ||
      !(r->lf_hvs = calloc(nl, sizeof(blo_tensor *))) || !(r->lf_want = calloc(nl, 1)))
    return bl_error(r, "out of memory");
  if (opt_init(&r->iopt, &set->inner_opt, p->n) || opt_init(&r->oopt, &set->outer_opt, p->m))
    return bl_error(r, "out of memory");
  if (gather(r, 1, r->x) || gather(r, 0, r->y)) return EV_ERR;
  const hg_method *m = set->hg.m;
  if (inner_solver_check(r)) return EV_ERR;
  if (hooks) {
    long cap = m->traj ? m->traj(&set->hg) : 0;
    if (cap < 0 || cap > set->inner_steps) cap = set->inner_steps;
    r->traj_cap = cap;
    if (cap > 0) {
      if (!(r->traj_y = bl_alloc(r, (size_t)cap * p->n)) || !(r->traj_lr = bl_alloc(r, (size_t)cap))) return EV_ERR;
    }
    if (p->nevery_inner) {
      /* cap slots for the trajectory plus one for the current point */
      size_t k = ((size_t)cap + 1) * (size_t)p->nevery_inner;
      if (!(r->traj_mb = calloc(k, sizeof(value)))) return bl_error(r, "out of memory");
      for (size_t i = 0; i < k; i++) r->traj_mb[i] = v_nil();
    }
    if (m->check && m->check(r, &set->hg)) return EV_ERR;
    if (m->setup && m->setup(r, &set->hg, &r->hg_state)) return EV_ERR;
  }
  if (blc_setup(r) || bls_begin(r)) return EV_ERR;
  if (!hooks && p->nevery_inner) {
    if (!(r->traj_mb = calloc((size_t)p->nevery_inner, sizeof(value)))) return bl_error(r, "out of memory");
    for (int i = 0; i < p->nevery_inner; i++) r->traj_mb[i] = v_nil();
  }
  return EV_OK;
}

static int check_interrupt(bl_run *r) {
  blo_state *S = r->S;
  if (S->interrupt && *S->interrupt) {
    *S->interrupt = 0;
    bl_error(r, "interrupted at outer step %ld", r->outer_step);
    S->err.status = BLO_INTERRUPTED;
    return EV_ERR;
  }
  return EV_OK;
}

/* Evaluates an expression of the problem to a number (no derivatives). */
static int eval_number(bl_run *r, const ast_node *e, double *out) {
  chunk *saved = r->S->cur_chunk;
  r->S->cur_chunk = r->p->chunk;
  value v;
  int rc = eval_expr(r->S, e, &v);
  if (rc == EV_OK) {
    if (v_to_double(v, out) != 0) {
      char d[96];
      v_describe(v, d, sizeof d);
      rc = interp_error(r->S, e, "objective must be a number, got %s", d);
    }
    v_release(r->S, &v);
  }
  r->S->cur_chunk = saved;
  return rc;
}

/* Re-draws the `every` values of one level. */
static int draw(bl_run *r, int level) {
  problem *p = r->p;
  blo_state *S = r->S;
  int k = 0;
  if (p->nevery) bl_release_point(r);   /* the values drawn are part of the point */
  for (int i = 0; i < p->nevery; i++) {
    bl_every *e = &p->every[i];
    if (e->level != level) continue;
    value v;
    chunk *saved = S->cur_chunk;
    S->cur_chunk = p->chunk;
    int rc = eval_expr(S, e->expr, &v);
    S->cur_chunk = saved;
    if (rc) return EV_ERR;
    if (level == 1 && r->traj_mb) {
      value *cur = mb_cur(r) ? mb_cur(r) : r->traj_mb;
      v_release(S, &cur[k]);
      cur[k] = v_retain(v);
      k++;
    }
    if (env_set_global(S, e->name, v)) return bl_error(r, "out of memory");
  }
  /* the draws ran script code: the variables must still hold what was declared */
  if (p->nevery && (gather(r, 1, NULL) || gather(r, 0, NULL))) return EV_ERR;
  return EV_OK;
}

/* Records and reports the first non-finite value: what, its value, the inner step. */
static int nonfinite(bl_run *r, const char *what, double val, long inner) {
  r->nf = 1;
  snprintf(r->nf_what, sizeof r->nf_what, "%s", what);
  r->nf_val = val;
  r->nf_inner = inner;
  return bl_error(r, "solve %s: %s is %s at outer step %ld, inner step %ld", r->p->name, what,
                  isnan(val) ? "NaN" : "Inf", r->outer_step, inner);
}

static double first_bad(const double *a, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(a[i])) return a[i];
  return 0;
}

/* Cold start: y = init(x). */
static int reinit_y(bl_run *r) {
  problem *p = r->p;
  chunk *saved = r->S->cur_chunk;
  r->S->cur_chunk = p->chunk;
  int rc = EV_OK;
  for (int i = p->nouter; i < p->nvars && rc == EV_OK; i++) rc = eval_init(r->S, &p->vars[i], r->y + p->vars[i].off);
  r->S->cur_chunk = saved;
  if (rc) return rc;
  if (!bl_finite(r->y, r->n)) return nonfinite(r, "the inner initial value", first_bad(r->y, r->n), 0);
  opt_reset(&r->iopt);
  return scatter(r, 0, r->y);
}

/* One inner solve at the current x.  hooks: store the trajectory and call
 * the method's begin/inner_step.  start > 0: a cold start perturbed by
 * inner_spread * N(0, I) (inner_starts).  On return r->gy, r->f hold grad_y f
 * and f at y_T, and *gnorm the norm of that gradient. */
static int inner_once(bl_run *r, int hooks, double *gnorm, long start) {
  const hg_method *m = r->set.hg.m;
  long T = r->set.inner_steps;
  double *ynew = r->scratch;
  int second = opt_is_second(r->iopt.sp.kind), fresh = 0, stop = 0;
  if (r->set.cold && reinit_y(r)) return EV_ERR;
  if (start > 0) {
    for (size_t i = 0; i < r->n; i++) r->y[i] += r->set.inner_spread * tn_rng_normal(&r->start_rng);
    if (bl_set_y(r, r->y)) return EV_ERR;
  }
  if (r->con && blc_begin(r)) return EV_ERR;
  memcpy(r->y_prev, r->y, r->n * sizeof(double));
  if (hooks && m->begin && m->begin(r, &r->set.hg, r->hg_state)) return EV_ERR;
  long t;
  double gn = 0;
  for (t = 0;; t++) {
    r->inner_step = t;
    if (t < T && draw(r, 1)) return EV_ERR;
    r->lr_now = opt_lr(&r->iopt);
    /* the step's gradient is a sweep of the held recording: made once per
     * outer step when it can follow y (scatter), else at every step; a
     * method that takes products at every inner step (forward, penalty)
     * replays it */
    /* lbfgs / newton leave f and its gradient at the point they moved to */
    if (!fresh && bl_hold_point(r)) return EV_ERR;
    if (!fresh && bl_grad_f(r, &r->f, NULL, r->gy)) return EV_ERR;
    if (!isfinite(r->f)) return nonfinite(r, "inner objective", r->f, t);
    if (!bl_finite(r->gy, r->n)) return nonfinite(r, "inner gradient", first_bad(r->gy, r->n), t);
    gn = r->con ? blc_gap(r, r->y, r->gy) : bl_norm(r->gy, r->n);
    if (stop || t >= T || (r->set.inner_tol > 0 && gn <= r->set.inner_tol)) break;
    if (hooks && r->traj_cap > 0) {
      long slot = t % r->traj_cap;
      memcpy(r->traj_y + (size_t)slot * r->n, r->y, r->n * sizeof(double));
      r->traj_lr[slot] = r->lr_now;
      int ne = r->p->nevery_inner;
      for (int k = 0; k < ne; k++) {
        value *dst = &r->traj_mb[(size_t)slot * (size_t)ne + (size_t)k];
        v_release(r->S, dst);
        *dst = v_retain(mb_cur(r)[k]);
      }
    }
    if (hooks && m->inner_step && m->inner_step(r, &r->set.hg, r->hg_state, t)) return EV_ERR;
    if (second) {
      if (inner2_step(r, &stop)) return EV_ERR;
      fresh = 1;
    } else {
      memcpy(ynew, r->y, r->n * sizeof(double));
      opt_step(&r->iopt, ynew, r->gy);
      if (r->con) blc_project(r, ynew, hooks ? t : -1);
      if (!bl_finite(ynew, r->n)) return nonfinite(r, "the inner variable after the step", first_bad(ynew, r->n), t + 1);
      if (bl_set_y(r, ynew)) return EV_ERR;
    }
    if (check_interrupt(r)) return EV_ERR;
  }
  r->T = t;
  *gnorm = gn;
  return EV_OK;
}

/* The inner loop at the current x: one inner solve, or with inner_starts = k
 * on a cold start, k of them (the declared init, then k - 1 perturbations of
 * it) keeping the one with the lowest f; the init's wins ties (within
 * 1e-8 (1 + |f|)).  A perturbed start that wins counts in r->switches and is
 * reported once per run. */
static int inner_loop(bl_run *r, int hooks, double *gnorm) {
  long k = r->set.cold ? r->set.inner_starts : 1;
  if (k <= 1) return inner_once(r, hooks, gnorm, 0);
  if (!r->start_seeded) {
    tn_rng peek = r->S->rng;   /* a copy: the script's stream is not advanced */
    tn_rng_seed(&r->start_rng0, tn_rng_next(&peek) ^ 0x696e6e6572737472ULL);
    r->start_seeded = 1;
  }
  r->start_rng = r->start_rng0;   /* the same perturbations at every x: Phi stays a function of x */
  double f0 = 0, best = 0, bestgn = 0, sg = r->p->f_max ? -1 : 1;   /* compared as minimized */
  long bestT = 0, bests = 0;
  for (long s = 0; s < k; s++) {
    double gn;
    if (inner_once(r, hooks, &gn, s)) return EV_ERR;
    if (s == 0) f0 = r->f;
    if (s == 0 || sg * r->f < sg * best - 1e-8 * (1 + fabs(best))) {
      best = r->f, bestgn = gn, bestT = r->T, bests = s;
      memcpy(r->ms_y, r->y, r->n * sizeof(double));
      memcpy(r->ms_g, r->gy, r->n * sizeof(double));
    }
  }
  if (bl_set_y(r, r->ms_y)) return EV_ERR;
  memcpy(r->gy, r->ms_g, r->n * sizeof(double));
  r->f = best;
  r->T = bestT;
  *gnorm = bestgn;
  if (bests > 0) {
    r->switches++;
    if (!r->switch_warned) {
      r->switch_warned = 1;
      bl_warn(r, "%s%s: the inner starts disagree: from the declared init the inner solve reached f = %.6g, from "
                 "perturbed start %ld f = %.6g; kept the lower (y is in another well than the init leads to; "
                 "counted in the result's inner_switches)",
              r->at->kind == N_SOLVE ? "solve " : "", r->at->kind == N_SOLVE ? r->p->name : "inner_starts", f0, bests,
              best);
    }
  }
  return EV_OK;
}

/* One hypergradient at the current x: inner loop, F and its gradients, method. */
static int hypergradient(bl_run *r, double *d, double *gnorm) {
  r->hg_failed_now = 0;
  if (inner_loop(r, 1, gnorm)) return EV_ERR;
  if (bl_grad_F(r, &r->F, r->Fx, r->Fy)) return EV_ERR;
  if (!isfinite(r->F)) return nonfinite(r, "outer objective", r->F, r->T);
  if (!bl_finite(r->Fx, r->m) || !bl_finite(r->Fy, r->n)) {
    double b = first_bad(r->Fx, r->m);
    if (b == 0) b = first_bad(r->Fy, r->n);
    return nonfinite(r, "outer gradient", b, r->T);
  }
  int rc = EV_OK;
  if (r->con && blc_pre(r)) return EV_ERR;
  /* with constraints the certificate reads the reduced Hessian (blc_pre) */
  if (r->set.certificate == BL_CERT_EVERY && r->at->kind == N_SOLVE) {
    char what[96];
    snprintf(what, sizeof what, "solve %s: outer step %ld", r->p->name, r->outer_step);
    rc = bl_certify(r, what);
  }
  if (rc == EV_OK) rc = r->set.hg.m->compute(r, &r->set.hg, r->hg_state, d);
  blc_post(r);
  bl_release_point(r);
  if (rc) return EV_ERR;
  if (!bl_finite(d, r->m)) return nonfinite(r, "hypergradient", first_bad(d, r->m), r->T);
  return EV_OK;
}

static void project_box(bl_run *r, double *x) {
  problem *p = r->p;
  for (int i = 0; i < p->nouter; i++) {
    const bl_var *v = &p->vars[i];
    if (!v->lo) continue;
    for (size_t k = 0; k < v->size; k++) {
      double *xi = &x[v->off + k];
      if (*xi < v->lo[k]) *xi = v->lo[k];
      if (*xi > v->hi[k]) *xi = v->hi[k];
    }
  }
}

static double dist2_init(bl_run *r, int outer) {
  problem *p = r->p;
  int lo = outer ? 0 : p->nouter, hi = outer ? p->nouter : p->nvars;
  const double *cur = outer ? r->x : r->y;
  double s = 0;
  for (int i = lo; i < hi; i++) {
    const bl_var *v = &p->vars[i];
    for (size_t k = 0; k < v->size; k++) {
      double d = cur[v->off + k] - v->init0[k];
      s += d * d;
    }
  }
  return s;
}

/* The values of a level as a script value: the variable itself when there is
 * one, else a list in declaration order. */
static int level_value(bl_run *r, int outer, value *out) {
  problem *p = r->p;
  blo_state *S = r->S;
  int lo = outer ? 0 : p->nouter, hi = outer ? p->nouter : p->nvars;
  const double *src = outer ? r->x : r->y;
  if (hi - lo == 1) {
    *out = var_value(S, &p->vars[lo], src + p->vars[lo].off);
    return out->kind == V_NIL ? bl_error(r, "out of memory") : EV_OK;
  }
  olist *l = list_new(S, hi - lo);
  if (!l) return bl_error(r, "out of memory");
  value lv = v_nil();
  lv.kind = V_LIST;
  lv.u.o = &l->h;
  for (int i = lo; i < hi; i++) {
    value v = var_value(S, &p->vars[i], src + p->vars[i].off);
    if (v.kind == V_NIL || list_push(S, l, v)) { v_release(S, &lv); return bl_error(r, "out of memory"); }
  }
  *out = lv;
  return EV_OK;
}

/* A flat outer-shaped vector (a hypergradient) as a script value. */
static int grad_value(bl_run *r, const double *g, value *out) {
  double *saved = r->x;
  r->x = (double *)g;
  int rc = level_value(r, 1, out);
  r->x = saved;
  return rc;
}

/* hypergrad_status and hypergrad_note: what the method reported (bl_hg_report). */
static int status_fields(bl_run *r, orec *rec) {
  blo_state *S = r->S;
  value st = v_str(S, r->hg_status, strlen(r->hg_status));
  if (st.kind != V_STR) return 1;
  if (rec_set(S, rec, "hypergrad_status", st)) return 1;
  value nt = v_str(S, r->hg_note, strlen(r->hg_note));
  return nt.kind != V_STR || rec_set(S, rec, "hypergrad_note", nt);
}

/* What the inner solver and the certificate reported. */
static int inner_fields(bl_run *r, orec *rec) {
  blo_state *S = r->S;
  value st = v_str(S, r->inner_status, strlen(r->inner_status));
  if (st.kind != V_STR || rec_set(S, rec, "inner_status", st)) return 1;
  value nt = v_str(S, r->inner_note, strlen(r->inner_note));
  if (nt.kind != V_STR || rec_set(S, rec, "inner_note", nt)) return 1;
  value ct = v_str(S, r->cert, strlen(r->cert));
  if (ct.kind != V_STR || rec_set(S, rec, "inner_certificate", ct)) return 1;
  return rec_set(S, rec, "inner_failures", v_num((double)r->inner_failures)) ||
         rec_set(S, rec, "inner_min_eig", v_num(r->min_eig)) ||
         rec_set(S, rec, "inner_min_eig_err", v_num(r->min_eig_err)) ||
         rec_set(S, rec, "inner_saddles", v_num((double)r->saddles)) ||
         rec_set(S, rec, "inner_switches", v_num((double)r->switches)) ||
         rec_set(S, rec, "inner_steps_last", v_num((double)r->T)) ||
         rec_set(S, rec, "inner_evals", v_num((double)r->iopt.evals));
}

/* ---- trace and progress ---- */

static FILE *trace_open(bl_run *r) {
  if (!r->set.trace[0]) return NULL;
  FILE *f = fopen(r->set.trace, "w");
  if (!f) {
    bl_error(r, "solve %s: cannot open trace file '%s': %s", r->p->name, r->set.trace, strerror(errno));
    return NULL;
  }
  fputs("step,F,f,inner_grad_norm,hypergrad_norm,x_dist2,y_dist2,time", f);
  problem *p = r->p;
  if (r->m <= 64)
    for (int i = 0; i < p->nouter; i++) {
      const bl_var *v = &p->vars[i];
      if (!v->rec) {
        if (v->size == 1 && v->rank == 0) fprintf(f, ",%s", v->name);
        else for (size_t k = 0; k < v->size; k++) fprintf(f, ",%s[%zu]", v->name, k);
        continue;
      }
      /* a record: one column per element of each field, "net.b[1]" */
      for (int j = 0; j < v->nleaves; j++) {
        const bl_leaf *l = &v->leaves[j];
        if (l->is_num) fprintf(f, ",%s", l->path);
        else for (size_t k = 0; k < l->size; k++) fprintf(f, ",%s[%zu]", l->path, k);
      }
    }
  fputc('\n', f);
  return f;
}

static void trace_row(bl_run *r, FILE *f, long step, double gnorm, double hnorm, double t) {
  fprintf(f, "%ld,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.6f", step, r->F, r->f, gnorm, hnorm, dist2_init(r, 1),
          dist2_init(r, 0), t);
  if (r->m <= 64)
    for (size_t j = 0; j < r->m; j++) fprintf(f, ",%.17g", r->x[j]);
  fputc('\n', f);
}

/* ---- solve ---- */

static problem *find_problem(blo_state *S, const ast_node *at, const char *name) {
  value *slot = env_lookup(S, name);
  if (slot && slot->kind == V_PROBLEM) return (problem *)slot->u.o;
  if (slot) {
    char d[96];
    v_describe(*slot, d, sizeof d);
    interp_error(S, at, "'%s' is not a problem (it is a %s)", name, d);
    return NULL;
  }
  /* suggest among the declared problems only */
  const char *cands[65];
  int nc = 0;
  for (problem *q = S->problems; q && nc < 64; q = q->next) cands[nc++] = q->name;
  cands[nc] = NULL;
  const char *sug = env_suggest_in(name, cands);
  if (sug) interp_error(S, at, "unknown problem '%s' (did you mean '%s'?)", name, sug);
  else interp_error(S, at, "unknown problem '%s'", name);
  return NULL;
}

/* The final inner solve after a solver method (penalty): on f until
 * |grad_y f| <= inner_tol (this when inner_tol is 0), in at most
 * max(inner_steps, SOLVER_FINAL_STEPS) steps. */
#define SOLVER_FINAL_TOL 1e-8
#define SOLVER_FINAL_STEPS 1000L

/* |a - b|, scaled so that it does not overflow while a and b are finite */
static double dist_scaled(const double *a, const double *b, size_t n) {
  double mx = 0, s = 0;
  for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(a[i] - b[i]));
  if (!(mx > 0) || !isfinite(mx)) return mx;
  for (size_t i = 0; i < n; i++) s += ((a[i] - b[i]) / mx) * ((a[i] - b[i]) / mx);
  return mx * sqrt(s);
}

/* The last outer update: where it started (x, and y answering that x) and
 * its size. */
typedef struct {
  double *x, *y;
  double dx, lr, hnorm;
  long k;              /* its outer step, 0 before the first */
} outer_last;

/* The evaluation after outer step last->k met a non-finite value, where the
 * evaluation before that step was finite: the step moved x into a region
 * where the problem overflows, so the error names it (not the inner step
 * where the overflow surfaced) and x, y go back to their last finite pair. */
static void blame_outer(bl_run *r, const outer_last *last, int final) {
  char dx[40], lr[40], hn[40], where[96];
  snprintf(dx, sizeof dx, "%.3g", last->dx);
  snprintf(lr, sizeof lr, "%.3g", last->lr);
  snprintf(hn, sizeof hn, "%.3g", last->hnorm);
  if (final)
    snprintf(where, sizeof where, "in the final inner solve, inner step %ld", r->nf_inner);
  else
    snprintf(where, sizeof where, "at outer step %ld, inner step %ld", r->outer_step, r->nf_inner);
  memcpy(r->x, last->x, r->m * sizeof(double));
  memcpy(r->y, last->y, r->n * sizeof(double));
  blo_state *S = r->S;
  blo_status st = S->err.status;
  int bad = scatter(r, 1, r->x) || scatter(r, 0, r->y);
  if (bad) return;   /* that error (out of memory) stands */
  bl_error(r, "solve %s: outer step %ld made the %s non-finite (%s %s): it moved x by %s (step size %s, "
              "hypergradient norm %s); x and y keep their values before that step",
           r->p->name, last->k, r->nf_what, isnan(r->nf_val) ? "NaN" : "Inf", where, dx, lr, hn);
  S->err.status = st;
}

static int solve_run(bl_run *r, value *out) {
  blo_state *S = r->S;
  problem *p = r->p;
  bl_settings *set = &r->set;
  double t0 = now_sec();
  if (set->trace[0] && !S->cfg.allow_files)
    return bl_error(r, "solve %s: trace files are disabled in this state (allow_files = 0)", p->name);
  if (set->has_seed) tn_rng_seed(&S->rng, set->seed);
  project_box(r, r->x);
  if (scatter(r, 1, r->x)) return EV_ERR;
  /* the peak of this solve's tensor data; an enclosing span keeps its own peak */
  size_t live0 = S->tn.mem_live, peak_prev = S->tn.mem_peak;
  S->tn.mem_peak = live0;
  double *d = bl_alloc(r, r->m), *xnew = bl_alloc(r, r->m);
  outer_last last = {bl_alloc(r, r->m), bl_alloc(r, r->n), 0, 0, 0, 0};
  FILE *tf = NULL;
  int rc = EV_OK;
  if (!d || !xnew || !last.x || !last.y) rc = EV_ERR;
  if (rc == EV_OK && set->trace[0] && !(tf = trace_open(r))) rc = EV_ERR;
  long steps = 0;
  double gnorm = 0, hnorm = NAN;
  for (long k = 1; rc == EV_OK && k <= set->outer_steps; k++) {
    r->outer_step = k;
    if ((rc = check_interrupt(r)) != EV_OK) break;
    if ((rc = draw(r, 0)) != EV_OK) break;
    if ((rc = hypergradient(r, d, &gnorm)) != EV_OK) {
      if (r->nf && last.k) blame_outer(r, &last, 0);
      break;
    }
    hnorm = bl_norm(d, r->m);
    if ((rc = bls_update(r)) != EV_OK) break;
    double el = now_sec() - t0;
    if (tf) trace_row(r, tf, k, gnorm, hnorm, el);
    int converged = set->outer_tol > 0 && hnorm <= set->outer_tol;
    if (!converged) {
      memcpy(xnew, r->x, r->m * sizeof(double));
      double step_lr = opt_lr(&r->oopt);
      opt_step(&r->oopt, xnew, d);
      project_box(r, xnew);
      if (!bl_finite(xnew, r->m)) {
        char lr[40], hn[40];
        snprintf(lr, sizeof lr, "%.3g", step_lr);
        snprintf(hn, sizeof hn, "%.3g", hnorm);
        rc = bl_error(r, "solve %s: outer step %ld made x non-finite (%s): step size %s, hypergradient norm %s; "
                         "x and y keep their values before that step", p->name, k,
                      isnan(first_bad(xnew, r->m)) ? "NaN" : "Inf", lr, hn);
        break;
      }
      last.dx = dist_scaled(xnew, r->x, r->m);
      last.lr = step_lr;
      last.hnorm = hnorm;
      last.k = k;
      memcpy(last.x, r->x, r->m * sizeof(double));
      memcpy(last.y, r->y, r->n * sizeof(double));
      memcpy(r->x, xnew, r->m * sizeof(double));
      if ((rc = scatter(r, 1, r->x)) != EV_OK) break;
    }
    steps = k;
    /* the host's progress callback (embedding API) may stop the solve; it
     * also polls the interrupt flag */
    blo_progress pr = {p->name, k, set->outer_steps, r->F, r->f, hnorm, gnorm, now_sec() - t0, set->quiet > 0, 0};
    chunk *saved = S->cur_chunk;
    S->cur_chunk = r->at_chunk;
    rc = interp_solve_progress(S, r->at, &pr);
    S->cur_chunk = saved;
    if (rc || converged) break;
  }
  if (steps > 0 || rc != EV_OK) {
    blo_progress pr = {p->name, steps, set->outer_steps, r->F, r->f, hnorm, gnorm, now_sec() - t0, set->quiet > 0, 1};
    interp_solve_done(S, &pr);
  }
  /* final inner solve, so the inner variables answer the final x */
  r->outer_step = steps + 1;
  double F = NAN;
  int loop_ok = rc == EV_OK;   /* a failure below is the final inner solve's */
  if (rc == EV_OK && set->hg.m->kind == HG_SOLVER) {
    /* the solve's inner steps descended the method's own objective (penalty:
     * F + gamma/2 |grad_y f|^2, with step sizes it decayed): y answers the
     * final x only after a converged inner solve on f, with the inner
     * optimizer as given */
    int tol_given = set->inner_tol > 0;
    if (!tol_given) set->inner_tol = SOLVER_FINAL_TOL;
    if (set->inner_steps < SOLVER_FINAL_STEPS) set->inner_steps = SOLVER_FINAL_STEPS;
    r->iopt.sp = set->inner_opt;
    opt_reset(&r->iopt);
    rc = inner_loop(r, 0, &gnorm);
    /* (with the default tolerance the figure is left to inner_grad_norm) */
    if (rc == EV_OK && tol_given && gnorm > set->inner_tol) {
      char g[40], t[40];
      snprintf(g, sizeof g, "%.3g", gnorm);
      snprintf(t, sizeof t, "%.3g", set->inner_tol);
      bl_warn(r, "solve %s: the final inner solve stopped after %ld steps with |grad_y f| = %s above %s: "
                 "y does not answer x yet (see the result's inner_grad_norm)", p->name, r->T, g, t);
    }
  } else if (rc == EV_OK) {
    rc = inner_loop(r, 0, &gnorm);
  }
  if (rc == EV_OK && set->certificate != BL_CERT_OFF) {
    char what[96];
    snprintf(what, sizeof what, "solve %s", p->name);
    if (r->con && blc_pre(r)) rc = EV_ERR;
    if (rc == EV_OK) rc = bl_certify(r, what);
    blc_post(r);
  }
  if (rc == EV_OK) rc = eval_number(r, p->F_written ? p->F_written : p->F, &F);
  if (rc == EV_OK && !isfinite(F)) rc = nonfinite(r, "outer objective", F, r->T);
  if (loop_ok && rc != EV_OK && r->nf && last.k == steps && steps > 0) blame_outer(r, &last, 1);
  if (tf) {
    if (fclose(tf) != 0 && rc == EV_OK) rc = bl_error(r, "solve %s: cannot write trace file '%s'", p->name, set->trace);
  }
  free(d);
  free(xnew);
  free(last.x);
  free(last.y);
  /* tensor data above the start at its peak, plus the stored trajectory (plain arrays) */
  double peak_mem = (double)(S->tn.mem_peak - live0) + (double)r->traj_cap * (double)(p->n + 1) * sizeof(double);
  if (peak_prev > S->tn.mem_peak) S->tn.mem_peak = peak_prev;
  if (rc) return rc;
  orec *rec = rec_new(S);
  if (!rec) return bl_error(r, "out of memory");
  value rv = v_nil();
  rv.kind = V_REC;
  rv.u.o = &rec->h;
  value xv = v_nil(), yv = v_nil();
  int bad = level_value(r, 1, &xv) || level_value(r, 0, &yv);
  bad = bad || rec_set(S, rec, "F", v_num(F)) || rec_set(S, rec, "f", v_num(r->f));
  if (!bad) { bad = rec_set(S, rec, "x", xv); xv = v_nil(); }
  if (!bad) { bad = rec_set(S, rec, "y", yv); yv = v_nil(); }
  bad = bad || rec_set(S, rec, "steps", v_num((double)steps)) || rec_set(S, rec, "inner_grad_norm", v_num(gnorm)) ||
        rec_set(S, rec, "hypergrad_norm", v_num(hnorm)) || rec_set(S, rec, "x_dist2", v_num(dist2_init(r, 1))) ||
        rec_set(S, rec, "y_dist2", v_num(dist2_init(r, 0))) || rec_set(S, rec, "time", v_num(now_sec() - t0)) ||
        rec_set(S, rec, "peak_memory", v_num(peak_mem));
  bad = bad || status_fields(r, rec) || rec_set(S, rec, "hypergrad_failures", v_num((double)r->hg_failures));
  bad = bad || bls_result(r, rec);
  bad = bad || inner_fields(r, rec);
  v_release(S, &xv);
  v_release(S, &yv);
  if (bad) { v_release(S, &rv); return S->err.status ? EV_ERR : bl_error(r, "out of memory"); }
  *out = rv;
  return EV_OK;
}

/* A cold solve re-initialises y from the declared init: a value the script
 * assigned to an inner variable since the problem last wrote it is not used.
 * Says so once, naming the first such variable (a variable set back to its
 * value at declaration, as scripts do before a fresh solve, is not named). */
static void warn_cold_overwrite(bl_run *r) {
  problem *p = r->p;
  for (int i = p->nouter; i < p->nvars; i++) {
    const bl_var *v = &p->vars[i];
    size_t bytes = v->size * sizeof(double);
    /* unchanged since the problem wrote it, or set back to the declared value */
    if (memcmp(r->y + v->off, p->y_written + v->off, bytes) == 0 || memcmp(r->y + v->off, v->init0, bytes) == 0)
      continue;
    bl_warn(r, "solve %s: start = \"cold\" re-initialises the inner variables from their declared init, so the "
               "value assigned to '%s' is not used (start from it with start = \"warm\", or declare the init from a "
               "variable, inner %s = %s0, and set %s0)", p->name, v->name, v->name, v->name, v->name);
    return;
  }
}

int solve_eval(blo_state *S, const ast_node *n, value *out) {
  problem *p = find_problem(S, n, n->name);
  if (!p) return EV_ERR;
  /* every solve starts from the defaults, not from the last solve's options */
  bl_settings set;
  settings_default(&set);
  if (n->a) {
    value ov;
    if (eval_expr(S, n->a, &ov)) return EV_ERR;
    int rc = EV_OK;
    if (ov.kind != V_REC) {
      char d[96];
      bl_describe(ov, d, sizeof d);
      rc = interp_error(S, n->a, "solve %s with ...: the options must be a record like {outer_steps = 100}, got %s",
                        n->name, d);
    } else {
      rc = parse_options(S, n->a, n->a, "solve", (orec *)ov.u.o, solve_keys, &set, NULL, NULL, NULL);
    }
    v_release(S, &ov);
    if (rc) return rc;
  }
  /* keep p alive even if the script rebinds its name during the solve */
  p->h.refcount++;
  scope *saved_sc = S->sc;
  S->sc = NULL;
  bl_run r;
  int rc = run_init(&r, S, n, p, &set, 1);
  if (rc == EV_OK && set.cold) warn_cold_overwrite(&r);
  if (rc == EV_OK) rc = solve_run(&r, out);
  if (r.y) memcpy(p->y_written, r.y, p->n * sizeof(double));
  run_free(&r);
  S->sc = saved_sc;
  /* a random method seeds its draws from the stream without consuming it
   * during the solve (the `every` draws match fo() or unroll() under the same
   * seed); one value is consumed at the end so the next solve draws afresh */
  if (set.hg.m->kind == HG_RANDOM) (void)tn_rng_next(&S->rng);
  if (rc == EV_OK) p->last = set;
  value pv = v_nil();
  pv.kind = V_PROBLEM;
  pv.u.o = &p->h;
  v_release(S, &pv);
  return rc;
}

/* ------------------------------------------------------------------ */
/* hypergrad(problem, method, ...) and check_hypergrad(...)             */

/* Cold-start F at the current x (for finite differences). */
static int cold_F(bl_run *r, const tn_rng *rng0, double *F) {
  double gn;
  r->S->rng = *rng0;
  if (inner_loop(r, 0, &gn)) return EV_ERR;
  return eval_number(r, r->p->F, F);
}

/* hypergrad(..., info = true): {grad = g, status = ..., note = ...} around *g. */
static int info_record(bl_run *r, value *g) {
  blo_state *S = r->S;
  orec *rec = rec_new(S);
  if (!rec) { v_release(S, g); return bl_error(r, "out of memory"); }
  value rv = v_nil();
  rv.kind = V_REC;
  rv.u.o = &rec->h;
  int bad = rec_set(S, rec, "grad", *g);
  *g = v_nil();
  if (!bad) {
    value st = v_str(S, r->hg_status, strlen(r->hg_status));
    bad = st.kind != V_STR || rec_set(S, rec, "status", st);
  }
  if (!bad) {
    value nt = v_str(S, r->hg_note, strlen(r->hg_note));
    bad = nt.kind != V_STR || rec_set(S, rec, "note", nt);
  }
  if (!bad) {
    value ct = v_str(S, r->cert, strlen(r->cert));
    bad = ct.kind != V_STR || rec_set(S, rec, "inner_certificate", ct) ||
          rec_set(S, rec, "inner_min_eig", v_num(r->min_eig)) || rec_set(S, rec, "inner_switches", v_num((double)r->switches));
  }
  if (bad) { v_release(S, &rv); return bl_error(r, "out of memory"); }
  *g = rv;
  return EV_OK;
}

int bl_hypergrad_builtin(blo_state *S, callargs *a, int check, value *out) {
  const ast_node *at = a->call;
  const char *fn = check ? "check_hypergrad" : "hypergrad";
  if (a->npos < 1 || a->pos[0].kind != V_PROBLEM) {
    char d[96] = "nothing";
    if (a->npos >= 1) bl_describe(a->pos[0], d, sizeof d);
    if (a->npos >= 1 && a->pos[0].kind == V_STR)
      return interp_error(S, at, "%s: argument 1 must be a problem, got %s (pass the problem itself, unquoted: "
                          "%s(%s, ...))", fn, d, fn, v_cstr(a->pos[0]));
    return interp_error(S, at, "%s: argument 1 must be a problem, got %s", fn, d);
  }
  problem *p = (problem *)a->pos[0].u.o;
  bl_settings set = p->last;
  char ctx[64];
  snprintf(ctx, sizeof ctx, "%s()", fn);
  if (a->npos >= 2 && hg_parse(S, at, fn, a->pos[1], &set.hg)) return EV_ERR;
  double h = 1e-5;
  int against_exact = 0, info = 0;
  /* the named options, as a record for parse_options */
  orec *rec = rec_new(S);
  if (!rec) return interp_error(S, at, "out of memory");
  value rv = v_nil();
  rv.kind = V_REC;
  rv.u.o = &rec->h;
  int rc = EV_OK;
  for (int i = 0; i < a->nnamed && rc == EV_OK; i++)
    if (rec_set(S, rec, a->names[i], v_retain(a->named[i]))) rc = interp_error(S, at, "out of memory");
  if (rc == EV_OK) {
    const ast_node *loc = at;
    rc = parse_options(S, NULL, loc, fn, rec, check ? check_keys : hg_keys, &set, &h, &against_exact, &info);
  }
  v_release(S, &rv);
  if (rc) return rc;
  if (set.hg.m->kind == HG_SOLVER)
    return interp_error(S, at, "%s: %s() is a solver, not an estimator of dPhi/dx: its outer step uses grad_x F + "
                        "gamma H_xy grad_y f at a y that descends a penalized objective, which approaches dPhi/dx only "
                        "as gamma grows during a solve. Use it as solve's hypergrad option; to compute dPhi/dx use "
                        "cg(), unroll() or exact()", fn, set.hg.m->name);
  if (check) set.cold = 1, set.prox = 0;   /* the cold-start solution map is what is checked */
  p->h.refcount++;
  scope *saved_sc = S->sc;
  S->sc = NULL;
  bl_run r;
  tn_rng rng_orig = S->rng, rng0 = S->rng;
  double *d = NULL, *ref = NULL, *y0 = NULL;
  rc = run_init(&r, S, at, p, &set, 1);
  /* check_hypergrad checks a random method's expectation (one draw's error is noise) */
  if (rc == EV_OK && check && set.hg.m->kind == HG_RANDOM) r.expectation = 1;
  if (rc == EV_OK) {
    r.outer_step = 1;
    if (!(d = bl_alloc(&r, r.m)) || !(ref = bl_alloc(&r, r.m)) || !(y0 = bl_alloc(&r, r.n))) rc = EV_ERR;
  }
  if (rc == EV_OK) {
    memcpy(y0, r.y, r.n * sizeof(double));
    if (set.has_seed) tn_rng_seed(&S->rng, set.seed);
    double gn;
    rc = draw(&r, 0);
    /* every inner solve below replays the same draws from here */
    rng0 = S->rng;
    if (rc == EV_OK) rc = hypergradient(&r, d, &gn);
    /* the certificate of the inner point the hypergradient is taken at */
    if (rc == EV_OK && set.certificate != BL_CERT_OFF) {
      if (r.con && blc_pre(&r)) rc = EV_ERR;
      if (rc == EV_OK) rc = bl_certify(&r, fn);
      blc_post(&r);
    }
  }
  if (rc == EV_OK && check && against_exact) {
    /* the same point through exact(): a second run with that method */
    bl_settings es = set;
    es.hg.m = hg_find("exact");
    bl_run r2;
    S->rng = rng0;
    double gn;
    rc = run_init(&r2, S, at, p, &es, 1);
    if (rc == EV_OK) rc = hypergradient(&r2, ref, &gn);
    run_free(&r2);
  } else if (rc == EV_OK && check) {
    for (size_t j = 0; j < r.m && rc == EV_OK; j++) {
      double xj = r.x[j], step = h * fmax(1, fabs(xj)), Fp = 0, Fm = 0;
      r.x[j] = xj + step;
      rc = scatter(&r, 1, r.x);
      if (rc == EV_OK) rc = cold_F(&r, &rng0, &Fp);
      r.x[j] = xj - step;
      if (rc == EV_OK) rc = scatter(&r, 1, r.x);
      if (rc == EV_OK) rc = cold_F(&r, &rng0, &Fm);
      r.x[j] = xj;
      if (rc == EV_OK) rc = scatter(&r, 1, r.x);
      ref[j] = (p->F_max ? -1 : 1) * (Fp - Fm) / (2 * step);
    }
  }
  if (rc == EV_OK) {
    if (check) {
      double num = 0, den = 0;
      for (size_t j = 0; j < r.m; j++) {
        num += (d[j] - ref[j]) * (d[j] - ref[j]);
        den += ref[j] * ref[j];
      }
      num = sqrt(num);
      den = sqrt(den);
      /* relative error; the absolute one when the reference is 0 (a
       * relative error is undefined there, and dividing by a tiny number
       * would report a huge one) */
      *out = v_num(den > 0 ? num / den : num);
    } else {
      /* report the derivative of the objective as written (maximize: of F itself) */
      if (p->F_max) scale(d, r.m, -1);
      rc = grad_value(&r, d, out);
      if (rc == EV_OK && info) rc = info_record(&r, out);
    }
  }
  /* no side effects: the inner variables and the random stream go back */
  if (y0 && r.y) {
    memcpy(r.y, y0, r.n * sizeof(double));
    if (rc == EV_OK) rc = bl_traj_restore(&r);
    else scatter(&r, 0, r.y);
  }
  S->rng = rng_orig;
  /* a random method's draw came from the script's stream: move it on by one,
   * so the next call draws afresh (with seed = s the call is reproducible
   * and leaves the stream alone) */
  if (set.hg.m->kind == HG_RANDOM && !check && !set.has_seed) (void)tn_rng_next(&S->rng);
  free(d);
  free(ref);
  free(y0);
  run_free(&r);
  S->sc = saved_sc;
  value pv = v_nil();
  pv.kind = V_PROBLEM;
  pv.u.o = &p->h;
  v_release(S, &pv);
  return rc;
}
