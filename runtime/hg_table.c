/* hg_table.c: the table of hypergradient methods and their specs.
 * Adding a method: write hg_NAME.c defining `const hg_method hg_NAME`, add it
 * here, and add its constructor builtin in bilevel_builtins.c. */
#include "bilevel.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

extern const hg_method hg_unroll, hg_forward, hg_cg, hg_neumann, hg_fo, hg_t1t2, hg_exact;
extern const hg_method hg_ufo, hg_penalty;  /* defined in hg_ufo.c, hg_penalty.c */

static const hg_method *const methods[] = {
  &hg_unroll, &hg_forward, &hg_cg, &hg_neumann, &hg_fo, &hg_t1t2, &hg_exact,
  &hg_ufo, &hg_penalty,
};
enum { NMETHODS = sizeof methods / sizeof methods[0] };

const hg_method *hg_at(size_t i) { return i < NMETHODS ? methods[i] : NULL; }

const hg_method *hg_find(const char *name) {
  for (size_t i = 0; i < NMETHODS; i++)
    if (strcmp(methods[i]->name, name) == 0) return methods[i];
  return NULL;
}

double hg_get(const hg_spec *sp, const char *name) {
  for (int i = 0; i < sp->m->nparams; i++)
    if (strcmp(sp->m->params[i].name, name) == 0) return sp->p[i];
  return NAN;
}

static int unknown_method(blo_state *S, const ast_node *at, const char *what, const char *name) {
  const char *cands[NMETHODS + 1];
  for (size_t i = 0; i < NMETHODS; i++) cands[i] = methods[i]->name;
  cands[NMETHODS] = NULL;
  const char *sug = env_suggest_in(name, cands);
  if (sug) return interp_error(S, at, "%s: unknown hypergradient method '%s' (did you mean '%s'?)", what, name, sug);
  return interp_error(S, at, "%s: unknown hypergradient method '%s' (known: unroll, forward, cg, neumann, "
                      "fo, t1t2, exact, ufo, penalty)", what, name);
}

/* Checks one parameter value against its declaration. */
static int check_param(blo_state *S, const ast_node *at, const char *what, const hg_method *m,
                       const hg_param *hp, value v, double *out) {
  double d;
  /* "cg(): 'iters' ..." from the constructor, "solve option 'hypergrad': cg's 'iters' ..." elsewhere */
  char who[64] = "";
  size_t ln = strlen(m->name);
  if (strncmp(what, m->name, ln) != 0 || what[ln] != '(') snprintf(who, sizeof who, "%s's ", m->name);
  const char *want = hp->integer ? "an integer" : "a number";
  if (v_to_double(v, &d) != 0 || !isfinite(d) || (hp->integer && d != floor(d))) {
    char desc[96];
    bl_describe(v, desc, sizeof desc);
    return interp_error(S, at, "%s: %s'%s' must be %s, got %s", what, who, hp->name, want, desc);
  }
  if (hp->min_open ? !(d > hp->min) : !(d >= hp->min)) {
    char num[40], lim[40];
    fmt_double(num, sizeof num, d);
    fmt_double(lim, sizeof lim, hp->min);
    return interp_error(S, at, "%s: %s'%s' must be %s %s, got %s", what, who, hp->name,
                        hp->min_open ? ">" : ">=", lim, num);
  }
  *out = d;
  return EV_OK;
}

int hg_parse(blo_state *S, const ast_node *at, const char *what, value v, hg_spec *out) {
  const char *mname = NULL;
  orec *r = NULL;
  if (v_is_text(v)) {
    mname = v_cstr(v);
  } else if (v.kind == V_REC && rec_get((orec *)v.u.o, "method") &&
             v_is_text(*rec_get((orec *)v.u.o, "method"))) {
    r = (orec *)v.u.o;
    mname = v_cstr(*rec_get(r, "method"));
  } else {
    char d[96];
    bl_describe(v, d, sizeof d);
    return interp_error(S, at, "%s must be a hypergradient method such as cg(iters = 50) or unroll(10), got %s",
                        what, d);
  }
  const hg_method *m = hg_find(mname);
  if (!m) return unknown_method(S, at, what, mname);
  out->m = m;
  for (int i = 0; i < HG_MAX_PARAMS; i++) out->p[i] = i < m->nparams ? m->params[i].dflt : NAN;
  if (!r) return EV_OK;
  for (int k = 0; k < r->n; k++) {
    const char *key = r->keys[k];
    if (strcmp(key, "method") == 0) continue;
    int idx = -1;
    for (int i = 0; i < m->nparams; i++)
      if (strcmp(m->params[i].name, key) == 0) idx = i;
    if (idx < 0) {
      const char *cands[HG_MAX_PARAMS + 1];
      for (int i = 0; i < m->nparams; i++) cands[i] = m->params[i].name;
      cands[m->nparams] = NULL;
      const char *sug = env_suggest_in(key, cands);
      if (sug) return interp_error(S, at, "%s: %s() has no option '%s' (did you mean '%s'?)", what, m->name, key, sug);
      if (m->nparams == 0) return interp_error(S, at, "%s: %s() takes no options (got '%s')", what, m->name, key);
      return interp_error(S, at, "%s: %s() has no option '%s'", what, m->name, key);
    }
    if (check_param(S, at, what, m, &m->params[idx], r->vals[k], &out->p[idx])) return EV_ERR;
  }
  return EV_OK;
}

int hg_to_value(blo_state *S, const ast_node *at, const hg_spec *sp, value *out) {
  orec *r = rec_new(S);
  if (!r) return interp_error(S, at, "out of memory");
  value rv = v_nil();
  rv.kind = V_REC;
  rv.u.o = &r->h;
  value s = v_str(S, sp->m->name, strlen(sp->m->name));
  int bad = s.kind != V_STR || rec_set(S, r, "method", s);
  for (int i = 0; i < sp->m->nparams && !bad; i++)
    if (!isnan(sp->p[i])) bad = rec_set(S, r, sp->m->params[i].name, v_num(sp->p[i]));
  if (bad) { v_release(S, &rv); return interp_error(S, at, "out of memory"); }
  *out = rv;
  return EV_OK;
}

/* Used by the constructor builtins: positional and named arguments to a spec. */
int hg_from_args(blo_state *S, callargs *a, const hg_method *m, value *out) {
  const ast_node *at = a->call;
  char what[64];
  snprintf(what, sizeof what, "%s()", m->name);
  hg_spec sp;
  sp.m = m;
  for (int i = 0; i < HG_MAX_PARAMS; i++) sp.p[i] = i < m->nparams ? m->params[i].dflt : NAN;
  if (a->npos > m->npositional) {
    if (m->npositional == 0)
      return interp_error(S, at, "%s() takes no positional arguments (usage: %s)", m->name, m->sig);
    return interp_error(S, at, "%s() takes at most %d positional argument%s (usage: %s)", m->name, m->npositional,
                        m->npositional == 1 ? "" : "s", m->sig);
  }
  for (int i = 0; i < a->npos; i++)
    if (check_param(S, at, what, m, &m->params[i], a->pos[i], &sp.p[i])) return EV_ERR;
  for (int k = 0; k < a->nnamed; k++) {
    int idx = -1;
    for (int i = 0; i < m->nparams; i++)
      if (strcmp(m->params[i].name, a->names[k]) == 0) idx = i;
    if (idx < 0) {
      const char *cands[HG_MAX_PARAMS + 1];
      for (int i = 0; i < m->nparams; i++) cands[i] = m->params[i].name;
      cands[m->nparams] = NULL;
      const char *sug = env_suggest_in(a->names[k], cands);
      if (sug)
        return interp_error(S, at, "%s() has no option '%s' (did you mean '%s'?)", m->name, a->names[k], sug);
      if (m->nparams == 0) return interp_error(S, at, "%s() takes no options (got '%s')", m->name, a->names[k]);
      return interp_error(S, at, "%s() has no option '%s' (usage: %s)", m->name, a->names[k], m->sig);
    }
    if (idx < a->npos) return interp_error(S, at, "%s(): '%s' given twice", m->name, a->names[k]);
    if (check_param(S, at, what, m, &m->params[idx], a->named[k], &sp.p[idx])) return EV_ERR;
  }
  return hg_to_value(S, at, &sp, out);
}
