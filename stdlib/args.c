/* args.c: argument helpers for builtins (declared in interp.h).  Each one
 * reports its own located error, naming the function as the script spelled
 * it, so a builtin can simply `if (arg_int(...)) return EV_ERR;`. */
#include "interp.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* The name the call used (an alias if the script renamed the builtin). */
static const char *fname(const callargs *a) {
  const ast_node *c = a->call;
  if (c && c->kind == N_CALL && c->a && c->a->kind == N_NAME) return c->a->name;
  return "builtin";
}

static int type_error(blo_state *S, callargs *a, int i, const char *want) {
  char d[96];
  v_describe(a->pos[i], d, sizeof d);
  return interp_error(S, a->call, "%s: argument %d must be %s, got %s", fname(a), i + 1, want, d);
}

static int need(blo_state *S, callargs *a, int i) {
  if (i >= 0 && i < a->npos) return EV_OK;
  return interp_error(S, a->call, "%s: missing argument %d", fname(a), i + 1);
}

value *arg_named(callargs *a, const char *name) {
  for (int i = 0; i < a->nnamed; i++)
    if (strcmp(a->names[i], name) == 0) return &a->named[i];
  return NULL;
}

int arg_check_named(blo_state *S, callargs *a, const char *const *allowed) {
  for (int i = 0; i < a->nnamed; i++) {
    int ok = 0;
    for (int k = 0; allowed && allowed[k]; k++)
      if (strcmp(allowed[k], a->names[i]) == 0) ok = 1;
    if (ok) continue;
    if (!allowed || !allowed[0])
      return interp_error(S, a->call, "%s() takes no named arguments (got '%s')", fname(a), a->names[i]);
    char list[256] = "";
    size_t n = 0;
    for (int k = 0; allowed[k] && n < sizeof list; k++)
      n += (size_t)snprintf(list + n, sizeof list - n, k ? ", %s" : "%s", allowed[k]);
    return interp_error(S, a->call, "%s(): unknown named argument '%s' (allowed: %s)", fname(a), a->names[i], list);
  }
  return EV_OK;
}

int arg_double(blo_state *S, callargs *a, int i, double *out) {
  if (need(S, a, i)) return EV_ERR;
  if (v_to_double(a->pos[i], out) == 0) return EV_OK;
  return type_error(S, a, i, "a number");
}

/* Integer-valued doubles only: 2.5 as a dimension or count is a mistake. */
static int to_long(double d, long *out) {
  if (!(d == floor(d)) || d < -9.2e18 || d > 9.2e18) return -1;
  *out = (long)d;
  return 0;
}

int arg_int(blo_state *S, callargs *a, int i, long *out) {
  double d;
  if (arg_double(S, a, i, &d)) return EV_ERR;
  if (to_long(d, out) == 0) return EV_OK;
  char num[40];
  fmt_double(num, sizeof num, d);
  return interp_error(S, a->call, "%s: argument %d must be an integer, got %s", fname(a), i + 1, num);
}

int arg_tensor(blo_state *S, callargs *a, int i, blo_tensor **out) {
  if (need(S, a, i)) return EV_ERR;
  value v = a->pos[i];
  if (v_is_numeric(v)) {
    *out = v_to_tensor(S, v);
    return *out ? EV_OK : interp_tn_error(S, a->call);
  }
  if (v.kind == V_LIST) {
    /* a list of numbers reads as a vector (e.g. an empty [] literal) */
    olist *l = (olist *)v.u.o;
    size_t n = (size_t)l->n;
    for (int k = 0; k < l->n; k++)
      if (l->items[k].kind != V_NUM) return type_error(S, a, i, "a number or tensor");
    blo_tensor *t = tn_new(&S->tn, 1, &n);
    if (!t) return interp_tn_error(S, a->call);
    for (int k = 0; k < l->n; k++) t->data[k] = l->items[k].u.num;
    *out = t;
    return EV_OK;
  }
  return type_error(S, a, i, "a number or tensor");
}

int arg_str(blo_state *S, callargs *a, int i, const char **out) {
  if (need(S, a, i)) return EV_ERR;
  if (a->pos[i].kind != V_STR) return type_error(S, a, i, "a string");
  /* read as C text (names, paths, numbers): a NUL would hide the rest */
  if (!v_is_text(a->pos[i]))
    return interp_error(S, a->call, "%s: argument %d must not contain a NUL byte", fname(a), i + 1);
  *out = v_cstr(a->pos[i]);
  return EV_OK;
}

static int named_error(blo_state *S, callargs *a, const char *name, value v, const char *want) {
  char d[96];
  v_describe(v, d, sizeof d);
  return interp_error(S, a->call, "%s: '%s' must be %s, got %s", fname(a), name, want, d);
}

int named_double(blo_state *S, callargs *a, const char *name, double dflt, double *out) {
  value *v = arg_named(a, name);
  if (!v) { *out = dflt; return EV_OK; }
  if (v_to_double(*v, out) == 0) return EV_OK;
  return named_error(S, a, name, *v, "a number");
}

int named_int(blo_state *S, callargs *a, const char *name, long dflt, long *out) {
  value *v = arg_named(a, name);
  if (!v) { *out = dflt; return EV_OK; }
  double d;
  if (v_to_double(*v, &d) != 0) return named_error(S, a, name, *v, "an integer");
  if (to_long(d, out) == 0) return EV_OK;
  char num[40];
  fmt_double(num, sizeof num, d);
  return interp_error(S, a->call, "%s: '%s' must be an integer, got %s", fname(a), name, num);
}

int named_bool(blo_state *S, callargs *a, const char *name, int dflt, int *out) {
  value *v = arg_named(a, name);
  if (!v) { *out = dflt; return EV_OK; }
  double d;
  if (v_to_double(*v, &d) == 0) { *out = d != 0; return EV_OK; }
  return named_error(S, a, name, *v, "true or false");
}

int arg_axis(blo_state *S, callargs *a, int rank, int *axis) {
  value *v = arg_named(a, "axis");
  if (!v) { *axis = -1; return EV_OK; }
  long k;
  if (named_int(S, a, "axis", -1, &k)) return EV_ERR;
  long norm = k < 0 ? k + rank : k;
  if (norm < 0 || norm >= rank) {
    if (rank == 0)
      return interp_error(S, a->call, "%s: axis %ld out of range: the argument is a number (rank 0)", fname(a), k);
    return interp_error(S, a->call, "%s: axis %ld out of range for a tensor of rank %d", fname(a), k, rank);
  }
  *axis = (int)norm;
  return EV_OK;
}
