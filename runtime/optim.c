/* optim.c: the optimizers of both levels (sgd, heavy-ball momentum, adam) on
 * flat double vectors.  State buffers are allocated once per solve; a step
 * allocates nothing.
 *
 *   sgd:       x -= lr_t g
 *   momentum:  v = beta v + g;  x -= lr_t v          (PyTorch's heavy ball)
 *   adam:      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *              x -= lr_t (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * with lr_t = lr / (1 + decay t), t counting steps since the last reset.
 *
 * lbfgs and newton (inner only) are specs and work buffers here; their steps
 * evaluate f at trial points and live in inner_lbfgs.c and inner_newton.c.
 * Their `lr` is no step size of theirs: it is the step that neumann() and
 * t1t2() take as their alpha / xi when the inner optimizer gives it. */
#include "bilevel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *opt_name(bl_opt_kind k) {
  switch (k) {
  case OPT_SGD: return "sgd";
  case OPT_MOMENTUM: return "momentum";
  case OPT_LBFGS: return "lbfgs";
  case OPT_NEWTON: return "newton";
  default: return "adam";
  }
}

int opt_is_second(bl_opt_kind k) { return k == OPT_LBFGS || k == OPT_NEWTON; }

/* Work vectors of lbfgs: S and Y (memory x n each), the direction, the
 * trial point, its gradient, and rho, alpha (memory each).  newton: the CG
 * vectors z, res, d, Hd, the trial point and its gradient. */
static size_t work_size(const bl_optspec *sp, size_t n) {
  if (sp->kind == OPT_LBFGS) return 2 * (size_t)sp->memory * n + 3 * n + 2 * (size_t)sp->memory;
  if (sp->kind == OPT_NEWTON) return 6 * n;
  return 0;
}

void opt_default(bl_optspec *sp, bl_opt_kind k) {
  memset(sp, 0, sizeof *sp);
  sp->kind = k;
  sp->lr = k == OPT_ADAM ? 0.001 : 0.1;
  sp->beta = 0.9;
  sp->beta1 = 0.9;
  sp->beta2 = 0.999;
  sp->eps = 1e-8;
  sp->decay = 0;
  sp->memory = 10;
  sp->wolfe = 1;
  sp->cg_iters = 20;
  sp->tol = 1e-10;
}

int opt_init(bl_opt *o, const bl_optspec *sp, size_t n) {
  memset(o, 0, sizeof *o);
  o->sp = *sp;
  o->n = n;
  if (sp->kind != OPT_SGD && n > 0) {
    o->m = calloc(n, sizeof(double));
    if (!o->m) return -1;
  }
  if (sp->kind == OPT_ADAM && n > 0) {
    o->v = calloc(n, sizeof(double));
    if (!o->v) { free(o->m); o->m = NULL; return -1; }
  }
  size_t w = work_size(sp, n);
  if (w > 0 && !(o->w = calloc(w, sizeof(double)))) { opt_free(o); return -1; }
  return 0;
}

void opt_reset(bl_opt *o) {
  o->t = 0;
  if (o->m) memset(o->m, 0, o->n * sizeof(double));
  if (o->v) memset(o->v, 0, o->n * sizeof(double));
  o->pairs = o->head = 0;
  o->radius = 0;   /* evals counts over the whole run */
}

double opt_lr(const bl_opt *o) { return o->sp.lr / (1 + o->sp.decay * (double)o->t); }

void opt_step(bl_opt *o, double *x, const double *g) {
  double lr = opt_lr(o);
  size_t n = o->n;
  o->t++;
  switch (o->sp.kind) {
  case OPT_SGD:
    for (size_t i = 0; i < n; i++) x[i] -= lr * g[i];
    break;
  case OPT_MOMENTUM: {
    double b = o->sp.beta;
    for (size_t i = 0; i < n; i++) {
      o->m[i] = b * o->m[i] + g[i];
      x[i] -= lr * o->m[i];
    }
    break;
  }
  case OPT_ADAM: {
    double b1 = o->sp.beta1, b2 = o->sp.beta2, eps = o->sp.eps;
    double c1 = 1 - pow(b1, (double)o->t), c2 = 1 - pow(b2, (double)o->t);
    for (size_t i = 0; i < n; i++) {
      o->m[i] = b1 * o->m[i] + (1 - b1) * g[i];
      o->v[i] = b2 * o->v[i] + (1 - b2) * g[i] * g[i];
      x[i] -= lr * (o->m[i] / c1) / (sqrt(o->v[i] / c2) + eps);
    }
    break;
  }
  case OPT_LBFGS:
  case OPT_NEWTON:
    break;   /* inner2_step takes their steps (they evaluate f along them) */
  }
}

void opt_free(bl_opt *o) {
  free(o->m);
  free(o->v);
  free(o->w);
  o->m = o->v = o->w = NULL;
}

/* ---- specs as records ---- */

static int spec_error(blo_state *S, const ast_node *at, const char *what, value v, const char *want) {
  char d[96];
  bl_describe(v, d, sizeof d);
  return interp_error(S, at, "%s must be %s, got %s", what, want, d);
}

int opt_parse(blo_state *S, const ast_node *at, const char *what, value v, bl_optspec *out) {
  static const char *const kinds[] = {"sgd", "momentum", "adam", "lbfgs", "newton", NULL};
  const char *kname = NULL;
  orec *r = NULL;
  if (v_is_text(v)) {
    kname = v_cstr(v);
  } else if (v.kind == V_REC) {
    r = (orec *)v.u.o;
    value *k = rec_get(r, "optimizer");
    if (!k || !v_is_text(*k))
      return spec_error(S, at, what, v, "an optimizer such as sgd(lr = 0.1), momentum() or adam()");
    kname = v_cstr(*k);
  } else {
    return spec_error(S, at, what, v, "an optimizer such as sgd(lr = 0.1), momentum() or adam()");
  }
  const char *ls = NULL;   /* lbfgs's line_search, checked below */
  int kind = -1;
  for (int i = 0; kinds[i]; i++)
    if (strcmp(kinds[i], kname) == 0) kind = i;
  if (kind < 0) {
    const char *sug = env_suggest_in(kname, kinds);
    if (sug) return interp_error(S, at, "%s: unknown optimizer '%s' (did you mean '%s'?)", what, kname, sug);
    return interp_error(S, at, "%s: unknown optimizer '%s' (known: sgd, momentum, adam, lbfgs, newton)", what, kname);
  }
  opt_default(out, (bl_opt_kind)kind);
  if (!r) return EV_OK;
  /* "sgd(): 'lr' ..." from the constructor, "solve option 'inner_opt': sgd's 'lr' ..." elsewhere */
  char who[64] = "";
  if (strncmp(what, kname, strlen(kname)) != 0 || what[strlen(kname)] != '(') snprintf(who, sizeof who, "%s's ", kname);
  static const char *const sgd_keys[] = {"optimizer", "lr", "decay", NULL};
  static const char *const mom_keys[] = {"optimizer", "lr", "beta", "decay", NULL};
  static const char *const adam_keys[] = {"optimizer", "lr", "beta1", "beta2", "eps", "decay", NULL};
  static const char *const lbfgs_keys[] = {"optimizer", "memory", "line_search", "lr", NULL};
  static const char *const newton_keys[] = {"optimizer", "cg_iters", "tol", "lr", NULL};
  const char *const *keys = kind == OPT_SGD        ? sgd_keys
                            : kind == OPT_MOMENTUM ? mom_keys
                            : kind == OPT_ADAM     ? adam_keys
                            : kind == OPT_LBFGS    ? lbfgs_keys
                                                   : newton_keys;
  for (int i = 0; i < r->n; i++) {
    const char *key = r->keys[i];
    int ok = 0;
    for (int k = 0; keys[k]; k++)
      if (strcmp(keys[k], key) == 0) ok = 1;
    if (!ok) {
      const char *sug = env_suggest_in(key, keys);
      if (sug) return interp_error(S, at, "%s: %s has no option '%s' (did you mean '%s'?)", what, kname, key, sug);
      return interp_error(S, at, "%s: %s has no option '%s'", what, kname, key);
    }
    if (strcmp(key, "optimizer") == 0) continue;
    if (strcmp(key, "line_search") == 0) {
      value lv = r->vals[i];
      if (!v_is_text(lv) || (strcmp(v_cstr(lv), "wolfe") != 0 && strcmp(v_cstr(lv), "armijo") != 0)) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s: %s'line_search'", what, who);
        return spec_error(S, at, msg, lv, "\"wolfe\" or \"armijo\"");
      }
      ls = v_cstr(lv);
      continue;
    }
    double d;
    if (v_to_double(r->vals[i], &d) != 0 || !isfinite(d)) {
      char msg[160];
      snprintf(msg, sizeof msg, "%s: %s'%s'", what, who, key);
      return spec_error(S, at, msg, r->vals[i], "a number");
    }
    int bad = 0;
    if (strcmp(key, "lr") == 0) { out->lr = d; bad = !(d > 0); }
    else if (strcmp(key, "decay") == 0) { out->decay = d; bad = !(d >= 0); }
    else if (strcmp(key, "beta") == 0) { out->beta = d; bad = !(d >= 0 && d < 1); }
    else if (strcmp(key, "beta1") == 0) { out->beta1 = d; bad = !(d >= 0 && d < 1); }
    else if (strcmp(key, "beta2") == 0) { out->beta2 = d; bad = !(d >= 0 && d < 1); }
    else if (strcmp(key, "eps") == 0) { out->eps = d; bad = !(d > 0); }
    else if (strcmp(key, "tol") == 0) { out->tol = d; bad = !(d >= 0 && d < 1); }
    else if (strcmp(key, "memory") == 0 || strcmp(key, "cg_iters") == 0) {
      bad = !(d >= 1 && d == floor(d) && d <= 1e6);
      if (!bad) *(key[0] == 'm' ? &out->memory : &out->cg_iters) = (long)d;
    }
    if (bad) {
      char num[40];
      fmt_double(num, sizeof num, d);
      const char *range = strcmp(key, "decay") == 0                                  ? ">= 0"
                          : key[0] == 'b' || strcmp(key, "tol") == 0                 ? "in [0, 1)"
                          : strcmp(key, "memory") == 0 || strcmp(key, "cg_iters") == 0 ? "an integer in [1, 1e6]"
                                                                                       : "> 0";
      return interp_error(S, at, "%s: %s'%s' must be %s, got %s", what, who, key, range, num);
    }
  }
  if (ls) out->wolfe = strcmp(ls, "wolfe") == 0;
  return EV_OK;
}

static int put_num(blo_state *S, orec *r, const char *k, double d) { return rec_set(S, r, k, v_num(d)); }

int opt_to_value(blo_state *S, const ast_node *at, const bl_optspec *sp, value *out) {
  orec *r = rec_new(S);
  if (!r) return interp_error(S, at, "out of memory");
  value rv = v_nil();
  rv.kind = V_REC;
  rv.u.o = &r->h;
  const char *kn = opt_name(sp->kind);
  value s = v_str(S, kn, strlen(kn));
  int bad = s.kind != V_STR || rec_set(S, r, "optimizer", s);
  bad = bad || put_num(S, r, "lr", sp->lr);
  if (sp->kind == OPT_MOMENTUM) bad = bad || put_num(S, r, "beta", sp->beta);
  if (sp->kind == OPT_ADAM) {
    bad = bad || put_num(S, r, "beta1", sp->beta1);
    bad = bad || put_num(S, r, "beta2", sp->beta2);
    bad = bad || put_num(S, r, "eps", sp->eps);
  }
  if (sp->kind == OPT_LBFGS) {
    bad = bad || put_num(S, r, "memory", (double)sp->memory);
    const char *ls = sp->wolfe ? "wolfe" : "armijo";
    value lv = v_str(S, ls, strlen(ls));
    bad = bad || lv.kind != V_STR || rec_set(S, r, "line_search", lv);
  }
  if (sp->kind == OPT_NEWTON) {
    bad = bad || put_num(S, r, "cg_iters", (double)sp->cg_iters);
    bad = bad || put_num(S, r, "tol", sp->tol);
  }
  if (sp->decay != 0) bad = bad || put_num(S, r, "decay", sp->decay);
  if (bad) { v_release(S, &rv); return interp_error(S, at, "out of memory"); }
  *out = rv;
  return EV_OK;
}
