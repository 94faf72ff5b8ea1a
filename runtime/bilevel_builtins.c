/* bilevel_builtins.c: the builtins of the bilevel runtime:
 *   hypergrad(problem, method), check_hypergrad(problem, method),
 *   the optimizer specs sgd(), momentum(), adam(), lbfgs(), newton(),
 *   the method specs unroll(), forward(), cg(), neumann(), fo(), t1t2(), exact().
 * Specs are plain records ({method = "cg", iters = 50, tol = 1e-10}) so a
 * script can print, store and pass them around; `solve` validates them.
 * stdlib/builtins.c chains to bilevel_builtin_find / bilevel_builtin_at. */
#include "bilevel.h"

#include <stdio.h>
#include <string.h>

/* ---- hypergradients ---- */

static int bi_hypergrad(blo_state *S, callargs *a, value *out) { return bl_hypergrad_builtin(S, a, 0, out); }
static int bi_check_hypergrad(blo_state *S, callargs *a, value *out) { return bl_hypergrad_builtin(S, a, 1, out); }

/* ---- optimizers ---- */

static const char *fname(const callargs *a) {
  const ast_node *c = a->call;
  if (c && c->kind == N_CALL && c->a && c->a->kind == N_NAME) return c->a->name;
  return "optimizer";
}

/* keys: the option names, the first npos of which may be positional. */
static int make_opt(blo_state *S, callargs *a, bl_opt_kind kind, const char *const *keys, int npos, value *out) {
  const ast_node *at = a->call;
  const char *fn = fname(a);
  if (a->npos > npos && npos == 0)
    return interp_error(S, at, "%s() takes its options by name, e.g. %s(%s = ...)", fn, fn, keys[0]);
  if (a->npos > npos)
    return interp_error(S, at, "%s() takes at most %d positional argument%s (the %s)", fn, npos, npos == 1 ? "" : "s",
                        npos == 1 ? "learning rate" : "learning rate and beta");
  orec *r = rec_new(S);
  if (!r) return interp_error(S, at, "out of memory");
  value rv = v_nil();
  rv.kind = V_REC;
  rv.u.o = &r->h;
  const char *kn = opt_name(kind);
  value s = v_str(S, kn, strlen(kn));
  int rc = EV_OK;
  if (s.kind != V_STR || rec_set(S, r, "optimizer", s)) rc = interp_error(S, at, "out of memory");
  for (int i = 0; i < a->npos && rc == EV_OK; i++)
    if (rec_set(S, r, keys[i], v_retain(a->pos[i]))) rc = interp_error(S, at, "out of memory");
  for (int k = 0; k < a->nnamed && rc == EV_OK; k++) {
    const char *key = a->names[k];
    int idx = -1;
    for (int i = 0; keys[i]; i++)
      if (strcmp(keys[i], key) == 0) idx = i;
    if (idx < 0) {
      const char *sug = env_suggest_in(key, keys);
      if (sug) rc = interp_error(S, at, "%s() has no option '%s' (did you mean '%s'?)", fn, key, sug);
      else rc = interp_error(S, at, "%s() has no option '%s'", fn, key);
    } else if (idx < a->npos) {
      rc = interp_error(S, at, "%s(): '%s' given twice", fn, key);
    } else if (rec_set(S, r, key, v_retain(a->named[k]))) {
      rc = interp_error(S, at, "out of memory");
    }
  }
  bl_optspec sp;
  char what[64];
  snprintf(what, sizeof what, "%s()", fn);
  if (rc == EV_OK) rc = opt_parse(S, at, what, rv, &sp);
  v_release(S, &rv);
  if (rc) return rc;
  return opt_to_value(S, at, &sp, out);
}

static int bi_sgd(blo_state *S, callargs *a, value *out) {
  static const char *const keys[] = {"lr", "decay", NULL};
  return make_opt(S, a, OPT_SGD, keys, 1, out);
}

static int bi_momentum(blo_state *S, callargs *a, value *out) {
  static const char *const keys[] = {"lr", "beta", "decay", NULL};
  return make_opt(S, a, OPT_MOMENTUM, keys, 2, out);
}

static int bi_adam(blo_state *S, callargs *a, value *out) {
  static const char *const keys[] = {"lr", "beta1", "beta2", "eps", "decay", NULL};
  return make_opt(S, a, OPT_ADAM, keys, 1, out);
}

static int bi_lbfgs(blo_state *S, callargs *a, value *out) {
  static const char *const keys[] = {"memory", "line_search", "lr", NULL};
  return make_opt(S, a, OPT_LBFGS, keys, 0, out);
}

static int bi_newton(blo_state *S, callargs *a, value *out) {
  static const char *const keys[] = {"cg_iters", "tol", "lr", NULL};
  return make_opt(S, a, OPT_NEWTON, keys, 0, out);
}

/* ---- hypergradient methods ---- */

#define METHOD_BUILTIN(NAME)                                                  \
  static int bi_##NAME(blo_state *S, callargs *a, value *out) {               \
    extern const hg_method hg_##NAME;                                         \
    return hg_from_args(S, a, &hg_##NAME, out);                               \
  }
METHOD_BUILTIN(unroll)
METHOD_BUILTIN(forward)
METHOD_BUILTIN(cg)
METHOD_BUILTIN(neumann)
METHOD_BUILTIN(fo)
METHOD_BUILTIN(t1t2)
METHOD_BUILTIN(exact)
METHOD_BUILTIN(ufo)      /* hg_ufo.c */
METHOD_BUILTIN(penalty)  /* hg_penalty.c */

/* Sorted by name.  Arity is checked by hg_from_args / make_opt (max -1) so
 * their messages can name the parameters. */
static const builtin_def defs[] = {
  {"adam", bi_adam, 0, -1, "adam(lr = 0.001, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, decay = 0)",
   "Adam optimizer spec for solve's inner_opt / outer_opt", 0},
  {"cg", bi_cg, 0, -1, "cg(iters = 50, tol = 1e-10)",
   "hypergradient method: implicit differentiation, conjugate gradient on H_yy q = grad_y F", 0},
  {"check_hypergrad", bi_check_hypergrad, 1, 2, "check_hypergrad(problem, method, h = 1e-5, against = \"fd\")",
   "relative error of a method's hypergradient (a random method's expectation) against central differences of the "
   "cold-start solution map", 0},
  {"exact", bi_exact, 0, -1, "exact()",
   "hypergradient method: dense inner Hessian and a LAPACK solve (small problems)", 0},
  {"fo", bi_fo, 0, -1, "fo()", "hypergradient method: first order (grad_x F, second-order terms dropped)", 0},
  {"forward", bi_forward, 0, -1, "forward()",
   "hypergradient method: forward-mode differentiation through the inner steps", 0},
  {"hypergrad", bi_hypergrad, 1, 2, "hypergrad(problem, method = last solve's, info = false)",
   "hypergradient dF/dx at the current point (the variables are left unchanged); info = true: {grad, status, note}", 0},
  {"lbfgs", bi_lbfgs, 0, -1, "lbfgs(memory = 10, line_search = \"wolfe\", lr = 0.1)",
   "L-BFGS inner optimizer spec (inner_opt only): quasi-Newton steps with a Wolfe or Armijo line search", 0},
  {"momentum", bi_momentum, 0, -1, "momentum(lr = 0.1, beta = 0.9, decay = 0)",
   "heavy-ball momentum optimizer spec for solve's inner_opt / outer_opt", 0},
  {"neumann", bi_neumann, 0, -1, "neumann(K = 20, alpha = inner lr)",
   "hypergradient method: truncated Neumann series for the inverse inner Hessian", 0},
  {"newton", bi_newton, 0, -1, "newton(cg_iters = 20, tol = 1e-10, lr = 0.1)",
   "Newton-CG inner optimizer spec (inner_opt only): trust-region CG on Hessian-vector products", 0},
  {"penalty", bi_penalty, 0, -1, "penalty(gamma = 1, growth = 1.1, tol = 1e-2, tol_decay = 0.9, lr_decay = 1 / growth)",
   "solve method: penalty method (Mehra & Hamm), inner steps on F + gamma/2 |grad_y f|^2, no inverse (not accepted by "
   "hypergrad())", 0},
  {"sgd", bi_sgd, 0, -1, "sgd(lr = 0.1, decay = 0)", "gradient descent optimizer spec for solve's inner_opt / outer_opt", 0},
  {"t1t2", bi_t1t2, 0, -1, "t1t2()", "hypergradient method: one-step look-ahead (T1-T2 / DARTS)", 0},
  {"ufo", bi_ufo, 0, -1, "ufo(q = 0.2)",
   "hypergradient method: unbiased first order (UFO-BLO), fo() plus the unrolled correction / q with probability q", 0},
  {"unroll", bi_unroll, 0, -1, "unroll(K = all)",
   "hypergradient method: reverse-mode differentiation through the last K inner steps", 0},
};
enum { NDEFS = sizeof defs / sizeof defs[0] };

const builtin_def *bilevel_builtin_find(const char *name) {
  for (size_t i = 0; i < NDEFS; i++)
    if (strcmp(defs[i].name, name) == 0) return &defs[i];
  return NULL;
}

const builtin_def *bilevel_builtin_at(size_t i) { return i < NDEFS ? &defs[i] : NULL; }
