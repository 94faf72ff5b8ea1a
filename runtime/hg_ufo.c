/* hg_ufo.c: ufo(q), the unbiased first-order estimator of UFO-BLO
 * (Likhosherstov et al.; docs/METHODS.md section 2.3):
 *
 *   xi ~ Bernoulli(q),   d = g_FO + (xi / q) (g_exact - g_FO)
 *
 * g_FO is fo()'s first-order gradient (grad_x F plus, on a cold start whose
 * inner init depends on x, (dy0/dx)^T grad_y F: first-order MAML) and
 * g_exact is unroll()'s exact derivative of the unrolled objective.  Since
 * E[xi / q] = 1, E[d] = g_exact: SGD on d converges to stationary points of
 * the true objective, where SGD on g_FO settles at zeros of E[g_FO] instead.
 * The price is variance: E|d|^2 = E|g_exact|^2 + (1/q - 1) E|g_exact - g_FO|^2.
 *
 * The draws come from the method's own generator, seeded from the script's
 * random stream at the first hypergradient of a solve (or hypergrad() call)
 * without consuming it: the run is deterministic given `seed`, and the tasks
 * or minibatches drawn by `every` lines are the same as with fo() or
 * unroll() under that seed.  The solve or call then moves the script's
 * stream on by one value (bilevel.c), so the next one draws afresh.
 * check_hypergrad() sets r->expectation and gets E[d] = g_exact.
 *
 * Cost: the trajectory of the inner loop is stored (O(T n) memory, as
 * unroll()); the reverse pass (T HVP + mixed products) runs only in the
 * rounds with xi = 1, so the expected time is O(T) gradients + q O(T)
 * second-order products. */
#include "bilevel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

extern const hg_method hg_unroll;

typedef struct {
  void *unroll;          /* unroll()'s state, for the exact rounds */
  hg_spec usp;           /* unroll() over every inner step */
  double *gfo;           /* m */
  tn_rng rng;
  int seeded;
  long draws, exact_rounds;
} ufo_st;

static const hg_param params[] = {{"q", 0.2, 0, 0, 1}};

static long traj(const hg_spec *sp) {
  (void)sp;
  return -1;
}

static int check(bl_run *r, const hg_spec *sp) {
  if (!(sp->p[0] <= 1)) {
    char num[40];
    fmt_double(num, sizeof num, sp->p[0]);
    return bl_error(r, "ufo(): 'q' is a probability: it must be in (0, 1], got %s", num);
  }
  if (r->set.inner_opt.kind == OPT_ADAM)
    return bl_error(r, "ufo() needs the exact unrolled gradient, which cannot go through the adam inner optimizer "
                       "yet: use inner_opt = sgd() or momentum()");
  if (opt_is_second(r->set.inner_opt.kind))
    return bl_error(r, "ufo() needs the exact unrolled gradient, which cannot go through the %s inner optimizer: %s: "
                       "use inner_opt = sgd() or momentum(), or an implicit method (cg(), neumann(), exact())",
                    opt_name(r->set.inner_opt.kind), "its steps depend on the line search or trust region and on the solver's curvature model, which are not differentiated");
  return EV_OK;
}

static int setup(bl_run *r, const hg_spec *sp, void **out) {
  (void)sp;
  ufo_st *st = calloc(1, sizeof *st);
  if (!st) return bl_error(r, "out of memory");
  *out = st;
  st->usp.m = &hg_unroll;
  for (int i = 0; i < HG_MAX_PARAMS; i++) st->usp.p[i] = NAN;   /* K absent: every step */
  if (!(st->gfo = bl_alloc(r, r->m))) return EV_ERR;
  if (hg_unroll.setup && hg_unroll.setup(r, &st->usp, &st->unroll)) return EV_ERR;
  return EV_OK;
}

static int compute(bl_run *r, const hg_spec *sp, void *vst, double *d) {
  ufo_st *st = vst;
  size_t m = r->m;
  double q = sp->p[0];
  /* the estimator's mean, E[d] = g_exact (check_hypergrad) */
  if (r->expectation) return hg_unroll.compute(r, &st->usp, st->unroll, d);
  if (!st->seeded) {
    tn_rng peek = r->S->rng;   /* a copy: the script's stream is not advanced */
    tn_rng_seed(&st->rng, tn_rng_next(&peek) ^ 0x75666f2d626c6f31ULL);
    st->seeded = 1;
  }
  /* first-order part, as fo() */
  memcpy(st->gfo, r->Fx, m * sizeof(double));
  if (bl_init_path(r) && bl_init_vjp(r, r->Fy, st->gfo)) return EV_ERR;
  st->draws++;
  int xi = q >= 1 || tn_rng_uniform(&st->rng) < q;
  if (!xi) {
    memcpy(d, st->gfo, m * sizeof(double));
    return EV_OK;
  }
  st->exact_rounds++;
  if (hg_unroll.compute(r, &st->usp, st->unroll, d)) return EV_ERR;
  for (size_t j = 0; j < m; j++) d[j] = st->gfo[j] + (d[j] - st->gfo[j]) / q;
  return EV_OK;
}

static void cleanup(bl_run *r, void *vst) {
  ufo_st *st = vst;
  if (st->unroll && hg_unroll.cleanup) hg_unroll.cleanup(r, st->unroll);
  free(st->gfo);
  free(st);
}

const hg_method hg_ufo = {
  "ufo", params, 1, 1, "ufo(q = 0.2)",
  "unbiased first-order hypergradient (UFO-BLO): fo() plus, with probability q, the unrolled correction / q",
  traj, check, setup, NULL, NULL, compute, cleanup, HG_RANDOM,
};
