/* hg_forward.c: forward(), forward-mode differentiation through the inner
 * steps (docs/METHODS.md section 4.2): Z_t = dy_t/dx (n x m) is carried along,
 * one tangent per outer coordinate.  At inner step t, column j needs the
 * directional derivative of grad_y f along (e_j, Z_t[:, j]), which is
 * H_yx e_j + H_yy Z_t[:, j]: one pass per column.
 *   sgd:       Z' = Z - lr (H Z + H_yx)
 *   momentum:  V' = beta V + (H Z + H_yx);  Z' = Z - lr V'
 * d = grad_x F + Z_T^T grad_y F.  Z_0 = dy0/dx on a cold start whose init
 * depends on x (meta-learning), else 0.
 * Time: T m passes; memory O(n m), independent of T: for small m. */
#include "bilevel.h"

#include <stdlib.h>
#include <string.h>

typedef struct { double *Z, *V, *e, *z, *out; } fwd_st;

static int check(bl_run *r, const hg_spec *sp) {
  (void)sp;
  if (r->set.inner_opt.kind == OPT_ADAM)
    return bl_error(r, "forward() cannot differentiate through the adam inner optimizer yet: use inner_opt = sgd() "
                       "or momentum(), or an implicit method such as cg()");
  if (opt_is_second(r->set.inner_opt.kind))
    return bl_error(r, "%s() cannot differentiate through the %s inner optimizer: %s: use an implicit method (cg(), "
                       "neumann(), exact()), which needs only the inner solution %s reaches in few steps, or "
                       "inner_opt = sgd() or momentum() to differentiate through the steps",
                    "forward", opt_name(r->set.inner_opt.kind), "its steps depend on the line search or trust region and on the solver's curvature model, which are not differentiated", opt_name(r->set.inner_opt.kind));
  return EV_OK;
}

static int setup(bl_run *r, const hg_spec *sp, void **out) {
  (void)sp;
  fwd_st *st = calloc(1, sizeof *st);
  if (!st) return bl_error(r, "out of memory");
  *out = st;
  size_t nm = r->n * r->m;
  if (!(st->Z = bl_alloc(r, nm)) || !(st->e = bl_alloc(r, r->m)) || !(st->z = bl_alloc(r, r->n)) ||
      !(st->out = bl_alloc(r, r->n)))
    return EV_ERR;
  if (r->set.inner_opt.kind == OPT_MOMENTUM && !(st->V = bl_alloc(r, nm))) return EV_ERR;
  return EV_OK;
}

static int begin(bl_run *r, const hg_spec *sp, void *vst) {
  (void)sp;
  fwd_st *st = vst;
  if (st->V) memset(st->V, 0, r->n * r->m * sizeof(double));
  if (bl_init_path(r)) return bl_init_jac(r, st->Z);
  memset(st->Z, 0, r->n * r->m * sizeof(double));
  return EV_OK;
}

static int inner_step(bl_run *r, const hg_spec *sp, void *vst, long t) {
  (void)sp;
  (void)t;
  fwd_st *st = vst;
  size_t n = r->n, m = r->m;
  double lr = r->lr_now, beta = r->set.inner_opt.beta;
  /* the m passes below are all at y_t, which the inner loop holds for a
   * method with this hook: each replays the step's recording of f */
  for (size_t j = 0; j < m; j++) {
    for (size_t i = 0; i < n; i++) st->z[i] = st->Z[i * m + j];
    st->e[j] = 1;
    int rc = bl_dgrad(r, st->e, st->z, st->out);
    st->e[j] = 0;
    if (rc) return rc;
    if (st->V) {
      for (size_t i = 0; i < n; i++) {
        double *v = &st->V[i * m + j];
        *v = beta * *v + st->out[i];
        st->Z[i * m + j] -= lr * *v;
      }
    } else {
      for (size_t i = 0; i < n; i++) st->Z[i * m + j] -= lr * st->out[i];
    }
  }
  return EV_OK;
}

static int compute(bl_run *r, const hg_spec *sp, void *vst, double *d) {
  (void)sp;
  fwd_st *st = vst;
  size_t n = r->n, m = r->m;
  memcpy(d, r->Fx, m * sizeof(double));
  for (size_t i = 0; i < n; i++) {
    double a = r->Fy[i];
    if (a == 0) continue;
    for (size_t j = 0; j < m; j++) d[j] += st->Z[i * m + j] * a;
  }
  return EV_OK;
}

static void cleanup(bl_run *r, void *vst) {
  (void)r;
  fwd_st *st = vst;
  free(st->Z);
  free(st->V);
  free(st->e);
  free(st->z);
  free(st->out);
  free(st);
}

const hg_method hg_forward = {
  "forward", NULL, 0, 0, "forward()",
  "hypergradient by forward-mode differentiation through the inner steps (one tangent per outer coordinate)",
  NULL, check, setup, begin, inner_step, compute, cleanup, HG_ESTIMATOR,
};
