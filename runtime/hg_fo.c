/* hg_fo.c: fo(), first order: d = grad_x F, dropping every second-order
 * term (dy/dx taken as 0), plus, on a cold start whose inner init depends on
 * x, the init path with the inner loop's Jacobian taken as the identity:
 * (dy0/dx)^T grad_y F.  That is first-order MAML / FO-BLO (docs/METHODS.md 2.2).
 * Time: no second-order products; memory O(n). */
#include "bilevel.h"

#include <string.h>

static int compute(bl_run *r, const hg_spec *sp, void *st, double *d) {
  (void)sp;
  (void)st;
  memcpy(d, r->Fx, r->m * sizeof(double));
  if (bl_init_path(r)) return bl_init_vjp(r, r->Fy, d);
  return EV_OK;
}

const hg_method hg_fo = {
  "fo", NULL, 0, 0, "fo()",
  "first-order hypergradient: grad_x F (plus the init path), second-order terms dropped",
  NULL, NULL, NULL, NULL, NULL, compute, NULL, HG_ESTIMATOR,
};
