/* bl_constrain.c: constraints on inner variables.
 *
 *   inner y : SHAPE = INIT in [lo, hi]     box (lo, hi: numbers or tensors
 *                                          shaped like y; may name x)
 *   inner y : SHAPE = INIT in simplex      each row (last axis) >= 0, sums to 1
 *   inner y : SHAPE = INIT in ball(r)      |y| <= r (all entries; r may name x)
 *
 * Inner loop: the bounds are evaluated once per inner loop (x is fixed
 * there), y is projected at the start and after every optimizer step
 * (project.c), and the stationarity measure is the gradient mapping
 * |y - P(y - eta g)| / eta instead of |g| (at a constrained minimum g is not
 * zero).
 *
 * Hypergradients: y* is the fixed point y = P(y - eta grad_y f(x, y), b(x)),
 * b the bounds.  Its implicit derivative splits y into the directions the
 * constraint leaves free (T, a projection) and the ones it fixes, which
 * follow the bounds: dy = T w + B dx, with
 *   box      T zeroes the active coordinates (y_i at a bound with the
 *            gradient pushing out); B dx = d(bound_i) on them.
 *   simplex  T projects onto the face holding y (support S: v - mean_S v on
 *            S, 0 off S); B = 0.
 *   ball     active (|y| = r, gradient pushing out): T = I - u u', u = y/r;
 *            B dx = u dr.  The curvature of the sphere adds lambda T with
 *            lambda = -u'g / r, the multiplier of |y|^2 <= r^2 (over 2).
 * and w solving T (H + Lambda) T w = -T (H_yx + H B) dx.  The hypergradient
 *   d = grad_x F + B' grad_y F - (H_xy + B' H) q,   T (H + Lambda) T q = T grad_y F
 * is what cg, neumann and exact compute when, during their compute(),
 * bl_hvp returns A v = T (H + Lambda) T v + (I - T) v (identity on the
 * fixed directions, where q has no part, so A is invertible when the
 * reduced Hessian is) and its mixed part H_xy T v + B' H T v, and grad_x F,
 * grad_y F are replaced by grad_x F + B' grad_y F and T grad_y F
 * (blc_pre).  The active set is read at z = y - eta g (eta the inner lr),
 * as the Jacobian of P there: exact at the fixed point, and robust to a y
 * a little short of its bound.
 *
 * unroll() goes back through each projected step with the Jacobian of P
 * at that step's pre-projection point z_t (kept in a ring beside the
 * trajectory): J is symmetric, so the adjoint a of y_{t+1} becomes J a; the
 * part that follows the bounds is summed over the steps and turned into
 * dx by one reverse pass over the bound expressions (blc_bound_vjp). */
#include "bilevel.h"
#include "project.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct blc_state {
  int implicit;               /* the method is cg, neumann or exact */
  int reduce;                 /* bl_hvp returns the reduced operator */
  double *lo, *hi;            /* n: box bounds at the current x (box variables' entries) */
  double *rad, *lam;          /* per variable: ball radius, multiplier */
  int *active;                /* per variable: ball active at y_T */
  unsigned char *side;        /* n: 0 free, 1 at lo / off the support, 2 at hi */
  double *u;                  /* n: unit normal of an active ball */
  double *z, *tv, *hv, *work, *row;
  double *alo, *ahi, *ar;     /* adjoints of the bounds (n, n, per variable) */
  int any_adj;
  double *gx;                 /* m */
  double *zring;              /* cap x n pre-projection points, for unroll */
  long cap;
  double *zinit;              /* the init before its projection */
} blc_state;

/* ------------------------------------------------------------------ */
/* declaration                                                          */

static int names_any(const ast_node *n, const problem *p) {
  if (!n) return 0;
  if (n->kind == N_NAME)
    for (int i = 0; i < p->nvars; i++)
      if (p->vars[i].outer && strcmp(p->vars[i].name, n->name) == 0) return 1;
  if (names_any(n->a, p) || names_any(n->b, p) || names_any(n->c, p)) return 1;
  for (int i = 0; i < n->nkids; i++)
    if (names_any(n->kids[i], p)) return 1;
  return 0;
}

int blc_declare(blo_state *S, problem *p, bl_var *v) {
  (void)p;
  const ast_node *c = v->decl->c;
  if (c->kind == N_NAME && strcmp(c->name, "simplex") == 0) {
    /* a record has no last axis to sum along */
    if (v->rec)
      return interp_error(S, c, "inner %s: 'in simplex' needs a tensor variable, but %s is a record (declare the "
                          "field as its own variable)", v->name, v->name);
    if (v->rank == 0)
      return interp_error(S, c, "inner %s: 'in simplex' needs a vector or matrix (each row along the last axis sums "
                          "to 1), but %s is a scalar", v->name, v->name);
    v->ckind = BLC_SIMPLEX;
  } else if (c->kind == N_CALL && c->a && c->a->kind == N_NAME && strcmp(c->a->name, "ball") == 0) {
    if (c->nkids != 1 || c->kids[0]->kind == N_FIELD)
      return interp_error(S, c, "inner %s: write the ball as ball(r), with one radius", v->name);
    v->ckind = BLC_BALL;
    v->cexpr[0] = c->kids[0];
  } else if (c->kind == N_LIST && c->nkids == 2) {
    v->ckind = BLC_BOX;
    v->cexpr[0] = c->kids[0];
    v->cexpr[1] = c->kids[1];
  } else {
    return interp_error(S, c, "inner %s: a constraint on an inner variable is 'in [lo, hi]', 'in simplex' or "
                        "'in ball(r)'", v->name);
  }
  return EV_OK;
}

/* A number or a tensor of v's shape (or of one element) into dst[v->size]. */
static int bound_values(blo_state *S, const bl_var *v, const ast_node *e, const char *what, double *dst) {
  value bv;
  if (eval_expr(S, e, &bv)) return EV_ERR;
  int rc = EV_OK;
  if (!v_is_numeric(bv)) {
    char d[96];
    v_describe(bv, d, sizeof d);
    rc = interp_error(S, e, "inner %s: the %s must be a number or a tensor, got %s", v->name, what, d);
  } else if (bl_fill_shaped(v, bv, dst) != 0) {
    char s1[64], s2[64];
    tn_shape_str_raw(v->rank, v->shape, s1, sizeof s1);
    tn_shape_str(bv.u.t, s2, sizeof s2);
    rc = interp_error(S, e, "inner %s: the %s has shape %s, but %s has shape %s (give a number or a tensor of "
                      "shape %s)", v->name, what, s2, v->name, s1, s1);
  }
  v_release(S, &bv);
  return rc;
}

/* v's bounds at the current globals: lo, hi (v->size each) for a box, *rad
 * for a ball.  step > 0: evaluated in a solve at that outer step (said in
 * the error). */
static int eval_bounds(blo_state *S, const bl_var *v, double *lo, double *hi, double *rad, long step) {
  char when[64] = "";
  if (step > 0) snprintf(when, sizeof when, " at outer step %ld", step);
  if (v->ckind == BLC_BOX) {
    if (bound_values(S, v, v->cexpr[0], "lower bound", lo) || bound_values(S, v, v->cexpr[1], "upper bound", hi))
      return EV_ERR;
    for (size_t i = 0; i < v->size; i++)
      if (!(lo[i] <= hi[i])) {
        char a[40], b[40];
        fmt_double(a, sizeof a, lo[i]);
        fmt_double(b, sizeof b, hi[i]);
        return interp_error(S, v->decl->c, "inner %s: empty box%s: the lower bound %s is above the upper bound %s "
                            "(element %zu)", v->name, when, a, b, i);
      }
  } else if (v->ckind == BLC_BALL) {
    value rv;
    if (eval_expr(S, v->cexpr[0], &rv)) return EV_ERR;
    double r;
    int num = v_to_double(rv, &r) == 0;
    char d[96];
    v_describe(rv, d, sizeof d);
    v_release(S, &rv);
    if (!num) return interp_error(S, v->cexpr[0], "inner %s: the radius of ball(r) must be a number, got %s", v->name, d);
    if (!(r >= 0) || !isfinite(r)) {
      char a[40];
      fmt_double(a, sizeof a, r);
      return interp_error(S, v->cexpr[0], "inner %s: the radius of ball(r) must be a finite number >= 0, got %s%s",
                          v->name, a, when);
    }
    *rad = r;
  }
  return EV_OK;
}

int blc_finish(blo_state *S, problem *p) {
  int rc = EV_OK;
  ast_node *acc = NULL;
  for (int i = p->nouter; i < p->nvars && rc == EV_OK; i++) {
    bl_var *v = &p->vars[i];
    if (!v->ckind) continue;
    p->ncon++;
    /* checked once at the inits, so a bad bound is reported where it is written */
    double *lo = malloc((v->size ? v->size : 1) * sizeof(double)), *hi = malloc((v->size ? v->size : 1) * sizeof(double));
    double rad;
    if (!lo || !hi) rc = interp_error(S, p->node, "out of memory");
    else rc = eval_bounds(S, v, lo, hi, &rad, 0);
    free(lo);
    free(hi);
    if (rc || !(v->c_uses_outer = names_any(v->cexpr[0], p) || names_any(v->cexpr[1], p))) continue;
    /* sum(bound * #adjoint) for the reverse pass over the bounds */
    if (!p->arena && !(p->arena = ast_arena_new())) return interp_error(S, p->node, "out of memory");
    for (int k = 0; k < 2 && v->cexpr[k]; k++) {
      char *nm = ast_alloc(p->arena, 32);
      if (!nm) return interp_error(S, p->node, "out of memory");
      snprintf(nm, 32, "#con%d_%d", i, k);   /* '#': no script can name it */
      v->cadj[k] = nm;
      if (bl_ast_add_pairing(p->arena, v->cexpr[k]->loc, v->cexpr[k], nm, 0, &acc))
        return interp_error(S, p->node, "out of memory");
    }
  }
  p->con_dot = acc;
  return rc;
}

/* ------------------------------------------------------------------ */
/* per run                                                              */

/* Methods that cannot use the constrained solution, and why. */
static const struct { const char *name, *why; } refused[] = {
  {"forward", "forward() does not carry the Jacobian of the projection through the inner steps: use unroll() (the "
              "same derivative, in reverse mode) or an implicit method, cg(), neumann() or exact()"},
  {"t1t2", "t1t2() looks ahead by an unprojected step y - xi grad_y f, which leaves the constraint set and ignores "
           "the active bounds: use cg(), neumann() or exact() (implicit differentiation on the free directions) or "
           "unroll() (through the projected steps)"},
  {"penalty", "penalty() penalizes |grad_y f|^2, but at a constrained inner minimum grad_y f is not zero (the "
              "constraint pushes back), so its inner problem has the wrong solution: use cg(), neumann(), exact() "
              "or unroll()"},
  {"ufo", "ufo()'s unrolled pass does not go through the projection onto the constraint set: use unroll() for the "
          "exact derivative of the projected steps, or fo() for a first-order estimate"},
};

int blc_setup(bl_run *r) {
  problem *p = r->p;
  if (!p->ncon) return EV_OK;
  const char *mname = r->set.hg.m->name;
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
    if (strcmp(mname, refused[i].name) == 0) {
      const char *vn = "";
      for (int j = p->nouter; j < p->nvars; j++)
        if (p->vars[j].ckind) { vn = p->vars[j].name; break; }
      return bl_error(r, "inner %s is constrained, and %s", vn, refused[i].why);
    }
  /* adam scales each coordinate before the Euclidean projection: on a box
   * that keeps the constrained minimum a fixed point, on a simplex or ball
   * it does not (its steps tend to lr sign(g), and y = P(y - lr sign(g)) is
   * not the KKT point) */
  if (r->set.inner_opt.kind == OPT_ADAM)
    for (int j = p->nouter; j < p->nvars; j++)
      if (p->vars[j].ckind == BLC_SIMPLEX || p->vars[j].ckind == BLC_BALL)
        return bl_error(r, "inner %s is constrained to a %s, and inner_opt = adam() does not converge to its "
                           "constrained minimum (the projection of adam's per-coordinate scaled step has other fixed "
                           "points): use inner_opt = sgd() or momentum()", p->vars[j].name,
                        p->vars[j].ckind == BLC_SIMPLEX ? "simplex" : "ball");
  blc_state *st = calloc(1, sizeof *st);
  if (!st) return bl_error(r, "out of memory");
  r->con = st;
  st->implicit = strcmp(mname, "cg") == 0 || strcmp(mname, "neumann") == 0 || strcmp(mname, "exact") == 0;
  size_t n = r->n, nv = (size_t)p->nvars, rowmax = 1;
  for (int i = p->nouter; i < p->nvars; i++) {
    const bl_var *v = &p->vars[i];
    size_t k = v->rank ? v->shape[v->rank - 1] : 1;
    if (v->ckind == BLC_SIMPLEX && k > rowmax) rowmax = k;
  }
  if (!(st->lo = bl_alloc(r, n)) || !(st->hi = bl_alloc(r, n)) || !(st->rad = bl_alloc(r, nv)) ||
      !(st->lam = bl_alloc(r, nv)) || !(st->u = bl_alloc(r, n)) || !(st->z = bl_alloc(r, n)) ||
      !(st->tv = bl_alloc(r, n)) || !(st->hv = bl_alloc(r, n)) || !(st->work = bl_alloc(r, rowmax)) ||
      !(st->row = bl_alloc(r, rowmax)) || !(st->alo = bl_alloc(r, n)) || !(st->ahi = bl_alloc(r, n)) ||
      !(st->ar = bl_alloc(r, nv)) || !(st->gx = bl_alloc(r, r->m)) || !(st->zinit = bl_alloc(r, n)))
    return EV_ERR;
  if (!(st->active = calloc(nv, sizeof(int))) || !(st->side = calloc(n ? n : 1, 1))) return bl_error(r, "out of memory");
  /* coordinates without a box are unbounded (the projected inner solvers
   * read lo, hi for all of y) */
  for (int i = p->nouter; i < p->nvars; i++) {
    const bl_var *v = &p->vars[i];
    if (v->ckind == BLC_BOX) continue;
    for (size_t k = 0; k < v->size; k++) {
      st->lo[v->off + k] = -INFINITY;
      st->hi[v->off + k] = INFINITY;
    }
  }
  if (r->traj_cap > 0) {
    st->cap = r->traj_cap;
    if (!(st->zring = bl_alloc(r, (size_t)st->cap * n))) return EV_ERR;
  }
  return EV_OK;
}

void blc_free(bl_run *r) {
  blc_state *st = r->con;
  if (!st) return;
  free(st->lo); free(st->hi); free(st->rad); free(st->lam); free(st->active); free(st->side); free(st->u);
  free(st->z); free(st->tv); free(st->hv); free(st->work); free(st->row); free(st->alo); free(st->ahi);
  free(st->ar); free(st->gx); free(st->zring); free(st->zinit);
  free(st);
  r->con = NULL;
}

/* Projects the constrained variables' parts of y in place. */
static void project_all(bl_run *r, double *y) {
  blc_state *st = r->con;
  problem *p = r->p;
  for (int i = p->nouter; i < p->nvars; i++) {
    const bl_var *v = &p->vars[i];
    double *yv = y + v->off;
    if (v->ckind == BLC_BOX) {
      proj_box(yv, st->lo + v->off, st->hi + v->off, v->size);
    } else if (v->ckind == BLC_SIMPLEX) {
      size_t k = v->shape[v->rank - 1];
      for (size_t o = 0; o < v->size; o += k) proj_simplex(yv + o, k, st->work);
    } else if (v->ckind == BLC_BALL) {
      proj_ball(yv, v->size, st->rad[i]);
    }
  }
}

int blc_begin(bl_run *r) {
  blc_state *st = r->con;
  problem *p = r->p;
  blo_state *S = r->S;
  chunk *saved = S->cur_chunk;
  S->cur_chunk = p->chunk;
  int rc = EV_OK;
  for (int i = p->nouter; i < p->nvars && rc == EV_OK; i++) {
    const bl_var *v = &p->vars[i];
    if (v->ckind) rc = eval_bounds(S, v, st->lo + v->off, st->hi + v->off, &st->rad[i], r->outer_step);
  }
  S->cur_chunk = saved;
  if (rc) return rc;
  memcpy(st->zinit, r->y, r->n * sizeof(double));
  project_all(r, r->y);
  return bl_set_y(r, r->y);
}

void blc_project(bl_run *r, double *y, long t) {
  blc_state *st = r->con;
  if (st->zring && t >= 0) memcpy(st->zring + (size_t)(t % st->cap) * r->n, y, r->n * sizeof(double));
  project_all(r, y);
}

const double *blc_lo(const bl_run *r) { return r->con ? r->con->lo : NULL; }
const double *blc_hi(const bl_run *r) { return r->con ? r->con->hi : NULL; }

double blc_gap(bl_run *r, const double *y, const double *g) {
  blc_state *st = r->con;
  double eta = bl_inner_lr(r);
  if (!(eta > 0)) eta = 1;
  for (size_t i = 0; i < r->n; i++) st->z[i] = y[i] - eta * g[i];
  project_all(r, st->z);
  double s = 0;
  for (size_t i = 0; i < r->n; i++) s += (y[i] - st->z[i]) * (y[i] - st->z[i]);
  return sqrt(s) / eta;
}

/* ------------------------------------------------------------------ */
/* implicit methods                                                     */

/* a <- T a (the free directions at y_T); with bound adjoints (track), the
 * fixed part of a is added to them first. */
static void tangent(bl_run *r, double *a, int track) {
  blc_state *st = r->con;
  problem *p = r->p;
  for (int i = p->nouter; i < p->nvars; i++) {
    const bl_var *v = &p->vars[i];
    double *av = a + v->off;
    const unsigned char *sd = st->side + v->off;
    if (v->ckind == BLC_BOX) {
      for (size_t k = 0; k < v->size; k++) {
        if (!sd[k]) continue;
        if (track) (sd[k] == 1 ? st->alo : st->ahi)[v->off + k] += av[k];
        av[k] = 0;
      }
    } else if (v->ckind == BLC_SIMPLEX) {
      size_t k = v->shape[v->rank - 1];
      for (size_t o = 0; o < v->size; o += k) {
        double s = 0;
        size_t c = 0;
        for (size_t j = 0; j < k; j++)
          if (!sd[o + j]) { s += av[o + j]; c++; }
        double mean = c ? s / (double)c : 0;
        for (size_t j = 0; j < k; j++) av[o + j] = sd[o + j] ? 0 : av[o + j] - mean;
      }
    } else if (v->ckind == BLC_BALL && st->active[i]) {
      /* radius 0: y is pinned at 0 and only the radius moves it (along u) */
      double ua = proj_ball_tangent(st->u + v->off, av, v->size, st->rad[i] > 0 ? 1 : 0);
      if (track) st->ar[i] += ua;
    }
  }
  if (track) st->any_adj = 1;
}

int blc_bound_vjp(bl_run *r, double *d) {
  blc_state *st = r->con;
  problem *p = r->p;
  blo_state *S = r->S;
  if (!st->any_adj) return EV_OK;
  st->any_adj = 0;
  int rc = EV_OK;
  if (p->con_dot) {
    for (int i = p->nouter; i < p->nvars && rc == EV_OK; i++) {
      const bl_var *v = &p->vars[i];
      if (!v->c_uses_outer) continue;
      for (int k = 0; k < 2 && v->cexpr[k] && rc == EV_OK; k++) {
        value av;
        if (v->ckind == BLC_BALL) {
          av = v_num(st->ar[i]);
        } else {
          blo_tensor *t = tn_from(&S->tn, v->rank, v->shape, (k ? st->ahi : st->alo) + v->off);
          av = t ? v_tensor(t) : v_nil();
        }
        if (av.kind == V_NIL || env_set_global(S, v->cadj[k], av)) rc = bl_error(r, "out of memory");
      }
    }
    if (rc == EV_OK) rc = bl_expr_grad_x(r, p->con_dot, st->gx);
    for (int i = p->nouter; i < p->nvars; i++)
      for (int k = 0; k < 2; k++)
        if (p->vars[i].cadj[k]) env_set_global(S, p->vars[i].cadj[k], v_nil());
    if (rc == EV_OK)
      for (size_t j = 0; j < r->m; j++) d[j] += st->gx[j];
  }
  memset(st->alo, 0, r->n * sizeof(double));
  memset(st->ahi, 0, r->n * sizeof(double));
  memset(st->ar, 0, (size_t)p->nvars * sizeof(double));
  return rc;
}

int blc_pre(bl_run *r) {
  blc_state *st = r->con;
  problem *p = r->p;
  if (!st->implicit) return EV_OK;
  double eta = bl_inner_lr(r);
  if (!(eta > 0)) eta = 1;
  const double *y = r->y, *g = r->gy;
  memset(st->side, 0, r->n);
  for (int i = p->nouter; i < p->nvars; i++) {
    const bl_var *v = &p->vars[i];
    size_t o = v->off;
    st->active[i] = 0;
    st->lam[i] = 0;
    if (v->ckind == BLC_BOX) {
      for (size_t k = 0; k < v->size; k++)
        st->side[o + k] = (unsigned char)proj_box_side(y[o + k] - eta * g[o + k], st->lo[o + k], st->hi[o + k]);
    } else if (v->ckind == BLC_SIMPLEX) {
      size_t k = v->shape[v->rank - 1];
      for (size_t b = 0; b < v->size; b += k) {
        for (size_t j = 0; j < k; j++) st->row[j] = y[o + b + j] - eta * g[o + b + j];
        proj_simplex(st->row, k, st->work);
        for (size_t j = 0; j < k; j++) st->side[o + b + j] = st->row[j] > 0 ? 0 : 1;
      }
    } else if (v->ckind == BLC_BALL) {
      double nz = 0;
      for (size_t k = 0; k < v->size; k++) {
        st->u[o + k] = y[o + k] - eta * g[o + k];
        nz += st->u[o + k] * st->u[o + k];
      }
      nz = sqrt(nz);
      if (nz > st->rad[i]) {
        st->active[i] = 1;
        double ug = 0;
        for (size_t k = 0; k < v->size; k++) {
          st->u[o + k] /= nz;
          ug += st->u[o + k] * g[o + k];
        }
        /* g = -lambda y at the fixed point: lambda = -u'g / r >= 0 */
        st->lam[i] = st->rad[i] > 0 ? -ug / st->rad[i] : 0;
      }
    }
  }
  /* grad_x F + B' grad_y F, T grad_y F */
  tangent(r, r->Fy, 1);
  if (blc_bound_vjp(r, r->Fx)) return EV_ERR;
  st->reduce = 1;
  return EV_OK;
}

void blc_post(bl_run *r) {
  if (r->con) r->con->reduce = 0;
}

int blc_reducing(const bl_run *r) { return r->con && r->con->reduce; }

int blc_hvp(bl_run *r, const double *v, double *hxy, double *hyy) {
  blc_state *st = r->con;
  problem *p = r->p;
  size_t n = r->n;
  memcpy(st->tv, v, n * sizeof(double));
  tangent(r, st->tv, 0);
  if (bl_hvp_raw(r, st->tv, hxy, st->hv)) return EV_ERR;
  if (hxy) {
    /* + B' H T v: the fixed part of H T v, through the bounds */
    memcpy(st->z, st->hv, n * sizeof(double));
    tangent(r, st->z, 1);
    if (blc_bound_vjp(r, hxy)) return EV_ERR;
  }
  if (hyy) {
    memcpy(hyy, st->hv, n * sizeof(double));
    for (int i = p->nouter; i < p->nvars; i++) {
      const bl_var *bv = &p->vars[i];
      if (st->lam[i] != 0)
        for (size_t k = 0; k < bv->size; k++) hyy[bv->off + k] += st->lam[i] * st->tv[bv->off + k];
    }
    tangent(r, hyy, 0);
    for (size_t k = 0; k < n; k++) hyy[k] += v[k] - st->tv[k];
  }
  return EV_OK;
}

/* ------------------------------------------------------------------ */
/* unroll                                                               */

void blc_unroll_step(bl_run *r, long t, double *a) {
  blc_state *st = r->con;
  problem *p = r->p;
  const double *z = t >= 0 ? st->zring + (size_t)(t % st->cap) * r->n : st->zinit;
  for (int i = p->nouter; i < p->nvars; i++) {
    const bl_var *v = &p->vars[i];
    double *av = a + v->off;
    const double *zv = z + v->off;
    if (v->ckind == BLC_BOX) {
      for (size_t k = 0; k < v->size; k++) {
        int s = proj_box_side(zv[k], st->lo[v->off + k], st->hi[v->off + k]);
        if (!s) continue;
        (s == 1 ? st->alo : st->ahi)[v->off + k] += av[k];
        av[k] = 0;
      }
    } else if (v->ckind == BLC_SIMPLEX) {
      size_t k = v->shape[v->rank - 1];
      for (size_t o = 0; o < v->size; o += k) {
        memcpy(st->row, zv + o, k * sizeof(double));
        proj_simplex(st->row, k, st->work);
        proj_simplex_tangent(st->row, av + o, k);
      }
    } else if (v->ckind == BLC_BALL) {
      double nz = 0;
      for (size_t k = 0; k < v->size; k++) nz += zv[k] * zv[k];
      nz = sqrt(nz);
      if (!(nz > st->rad[i])) continue;
      for (size_t k = 0; k < v->size; k++) st->u[v->off + k] = zv[k] / nz;
      st->ar[i] += proj_ball_tangent(st->u + v->off, av, v->size, st->rad[i] / nz);
    }
  }
  st->any_adj = 1;
}
