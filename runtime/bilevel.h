/* bilevel.h: the bilevel runtime's internal interface.
 *
 * A `problem` statement becomes a struct problem (a V_PROBLEM value bound to
 * the problem's name).  `solve` runs a bl_run: the loop over outer steps, the
 * inner loop, and one hypergradient method per outer step.  The loop knows
 * nothing of the methods' details: each method is one hg_method (one file,
 * hg_*.c) that sees the run only through the bl_* services below, which
 * evaluate the objectives and their first and second derivatives with
 * diff_run on the problem's ASTs at the current values of the globals.
 *
 * Flat vectors: the outer variables are concatenated (declaration order,
 * row-major) into x of length m, the inner ones into y of length n.  A
 * variable may be a record of tensors (bl_record.c): its leaves, depth first
 * in field order, lie one after the other in its part of x or y.
 */
#ifndef BLO_BILEVEL_H
#define BLO_BILEVEL_H

#include <stdarg.h>
#include <stdio.h>
#include "../interp/interp.h"

#define HG_MAX_PARAMS 6

/* ---- optimizers (optim.c) ---- */
/* lbfgs and newton are inner optimizers only: their steps evaluate f at
 * trial points (inner_lbfgs.c, inner_newton.c), so opt_step cannot take them. */
typedef enum { OPT_SGD, OPT_MOMENTUM, OPT_ADAM, OPT_LBFGS, OPT_NEWTON } bl_opt_kind;

typedef struct bl_optspec {
  bl_opt_kind kind;
  double lr, beta, beta1, beta2, eps;
  double decay;               /* lr_t = lr / (1 + decay t) */
  long memory;                /* lbfgs: curvature pairs kept */
  int wolfe;                  /* lbfgs: 1 strong Wolfe line search, 0 Armijo backtracking */
  long cg_iters;              /* newton: CG iterations per step */
  double tol;                 /* newton: CG relative residual tolerance */
} bl_optspec;

typedef struct bl_opt {
  bl_optspec sp;
  size_t n;
  long t;                     /* steps taken since the last reset */
  double *m, *v;              /* momentum velocity / adam moments */
  /* lbfgs / newton: one block of work vectors, allocated by opt_init */
  double *w;
  long pairs, head;           /* lbfgs: stored curvature pairs, the newest's slot */
  double radius;              /* newton: trust-region radius (0: not set yet) */
  long evals;                 /* f evaluations at trial points since the last reset */
} bl_opt;

/* 1 for the optimizers whose step is taken by inner2_step (lbfgs, newton) */
int opt_is_second(bl_opt_kind k);

const char *opt_name(bl_opt_kind k);
void opt_default(bl_optspec *sp, bl_opt_kind k);
int opt_init(bl_opt *o, const bl_optspec *sp, size_t n);   /* -1 on out of memory */
void opt_reset(bl_opt *o);                                  /* zero state, t = 0 */
double opt_lr(const bl_opt *o);                             /* step size of the next step */
void opt_step(bl_opt *o, double *x, const double *g);       /* x -= step(g), in place */
void opt_free(bl_opt *o);
/* Reads an optimizer spec (a record made by sgd(), momentum(), adam(), or a
 * string "sgd"); errors name `what` (e.g. "solve option 'inner_opt'"). */
int opt_parse(blo_state *S, const ast_node *at, const char *what, value v, bl_optspec *out);
/* Record {optimizer = "adam", lr = ..., ...} for printing. */
int opt_to_value(blo_state *S, const ast_node *at, const bl_optspec *sp, value *out);

/* ---- inner solvers that evaluate f along the step (inner_lbfgs.c, inner_newton.c) ---- */
struct bl_run;
/* One step from r->y, where r->f and r->gy hold f and grad_y f.  On success
 * y has moved (globals too) and r->f, r->gy hold the values at the new
 * point.  *stop = 1 ends the inner loop: either no decrease of f is
 * possible above its rounding (converged as far as f can tell; reported
 * only when inner_tol is not reached), or the line search / trust region
 * failed (reported through bl_inner_report); y is the best point found. */
int inner_lbfgs_step(struct bl_run *r, int *stop);
int inner_newton_step(struct bl_run *r, int *stop);
int inner2_step(struct bl_run *r, int *stop);   /* dispatch on the kind */
/* The objective the inner solvers descend: f plus the proximal term, at y
 * (which becomes the current point, r->y and the globals); g gets its
 * gradient and *fval f alone.  A non-finite f gives *phi = +Inf. */
int inner_eval(struct bl_run *r, const double *y, double *phi, double *fval, double *g);
/* The same objective at the current point from r->f (no evaluation). */
double inner_phi(const struct bl_run *r);
/* ---- box-constrained inner variables (inner.c; bounds: blc_lo, blc_hi) ---- */
/* 1 when coordinate i is held at its bound at (y, g): the active-set rule
 * of the implicit methods, y_i - eta g_i beyond the bound, eta the inner lr. */
int inner_box_held(struct bl_run *r, size_t i, const double *y, const double *g);
/* Projected backtracking from y0 (r->y, where r->f, r->gy hold) along the
 * arc y(a) = P(y0 + a d), a = a1, a1/2, ...: accepts the first y(a) with
 * phi(y(a)) <= phi(y0) + c1 g'(y(a) - y0) and g'(y(a) - y0) < 0, or (f
 * within its rounding) with a smaller gradient mapping.  *ok = 1: the
 * current point is y(a), gt and *fval its gradient and f; else y stays
 * at y0 (r->f, r->gy unchanged).  *resolved: some trial value of f
 * differed from phi(y0) beyond rounding. */
int inner_box_search(struct bl_run *r, const double *y0, const double *d, double a1, double *gt, double *fval, int *ok,
                     int *resolved, long *evals);

/* ---- hypergradient methods ---- */
struct bl_run;
struct hg_method;

typedef struct hg_param {
  const char *name;
  double dflt;                /* NAN: absent unless given (e.g. unroll's K = all steps) */
  int integer;                /* must be an integer */
  double min;                 /* smallest allowed value */
  int min_open;               /* value must be > min rather than >= min */
} hg_param;

typedef struct hg_spec {
  const struct hg_method *m;
  double p[HG_MAX_PARAMS];    /* parallel to m->params; NAN = absent */
} hg_spec;

typedef struct hg_method {
  const char *name;
  const hg_param *params;
  int nparams;
  int npositional;            /* leading params that may be given positionally */
  const char *sig, *doc;      /* for the constructor builtin */
  /* Stored inner trajectory needed: returns how many of the last inner steps
   * to keep (-1: all of them, 0: none). */
  long (*traj)(const hg_spec *sp);
  /* Settings check at solve start (e.g. unroll refuses the adam inner
   * optimizer); NULL: none. */
  int (*check)(struct bl_run *r, const hg_spec *sp);
  /* Per-solve state: allocated once by setup (may be NULL), freed by cleanup. */
  int (*setup)(struct bl_run *r, const hg_spec *sp, void **st);
  /* Before each inner loop (outer step), NULL: nothing. */
  int (*begin)(struct bl_run *r, const hg_spec *sp, void *st);
  /* Before the update of inner step t, at y_t with r->gy = grad_y f(x, y_t). */
  int (*inner_step)(struct bl_run *r, const hg_spec *sp, void *st, long t);
  /* After the inner loop: d (length m) = the hypergradient at (x, y_T).
   * r->F, r->Fx, r->Fy hold F and its gradients there. */
  int (*compute)(struct bl_run *r, const hg_spec *sp, void *st, double *d);
  void (*cleanup)(struct bl_run *r, void *st);
  /* HG_ESTIMATOR: compute() returns an estimate of dPhi/dx;
   * HG_RANDOM: a random one (each call draws; r->expectation asks for its mean);
   * HG_SOLVER: part of a solve's update rule, not an estimate of dPhi/dx on
   * its own (hypergrad() and check_hypergrad() refuse it). */
  int kind;
} hg_method;

enum { HG_ESTIMATOR, HG_RANDOM, HG_SOLVER };

const hg_method *hg_find(const char *name);
const hg_method *hg_at(size_t i);          /* NULL past the end */
/* Reads a method spec: a record {method = "cg", ...} (as cg() returns) or a
 * method name string; defaults fill the absent parameters. */
int hg_parse(blo_state *S, const ast_node *at, const char *what, value v, hg_spec *out);
int hg_to_value(blo_state *S, const ast_node *at, const hg_spec *sp, value *out);
double hg_get(const hg_spec *sp, const char *name);   /* NAN if absent */
/* A constructor builtin's arguments (positional and named) to a spec record. */
int hg_from_args(blo_state *S, callargs *a, const hg_method *m, value *out);

/* ---- problems ---- */
/* One number or tensor of a variable: the whole variable, or a field of a
 * record variable. */
typedef struct bl_leaf {
  int rank;
  size_t shape[TN_MAX_RANK];
  size_t size, off;           /* element count, offset in x or y */
  int is_num;                 /* a number */
  char *path;                 /* "net.c1" (record fields; NULL for a whole variable) */
} bl_leaf;

/* The fields of a record variable, fixed at declaration: field i is the
 * record kids[i], or (kids[i] NULL) the next leaf. */
typedef struct bl_rec {
  int n;
  char **keys;
  struct bl_rec **kids;
} bl_rec;

typedef struct bl_var {
  const char *name;
  const ast_node *decl;       /* N_VARDECL */
  int outer;
  int rank;
  size_t shape[TN_MAX_RANK];
  size_t size, off;           /* element count, offset in x or y */
  int is_num;                 /* held as a number (scalar declared from a number) */
  bl_rec *rec;                /* a record variable's fields, NULL otherwise */
  bl_leaf *leaves;            /* a record variable's leaves (owned), NULL otherwise */
  int nleaves;
  int leaf0;                  /* index of its first leaf in the problem's leaf list */
  double *lo, *hi;            /* box, size entries each, or NULL */
  double *init0;              /* value at declaration: x0 / y0 of the diagnostics */
  int init_uses_outer;        /* the init expression names an outer variable */
  /* inner constraint (bl_constrain.c): BLC_BOX with cexpr = {lo, hi},
   * BLC_SIMPLEX, BLC_BALL with cexpr[0] = r; cadj: hidden adjoint names */
  int ckind;
  const ast_node *cexpr[2];
  const char *cadj[2];
  int c_uses_outer;           /* a bound names an outer variable */
} bl_var;

/* Adds the scalar pairing of e with the hidden variable adj_name to *acc
 * (starting a sum when *acc is NULL): dot(e, adj) for a record (by_field),
 * else sum(e * adj).  Reverse mode over the sum gives (de/dx)^T adj, the
 * term the init and bound adjoints need.  -1 when the arena runs out. */
int bl_ast_add_pairing(ast_arena *a, ast_loc loc, const ast_node *e, const char *adj_name, int by_field,
                       ast_node **acc);
/* Fills dst (v->size doubles) from a number (broadcast), a tensor of v's
 * shape, or a one-element tensor; -1 for a tensor of another shape. */
int bl_fill_shaped(const bl_var *v, value val, double *dst);
/* record variables (bl_record.c) */
/* v's fields and leaves from its init (a record); v->size their total. */
int blr_layout(blo_state *S, const ast_node *at, bl_var *v, value init);
void blr_free(bl_rec *r);
/* Copies val, a record shaped like v's, into dst (v->size doubles; NULL:
 * only check).  bcast: a number may fill a tensor field (an init).  -1 with
 * err set on a mismatch. */
int blr_read(const bl_var *v, value val, int bcast, double *dst, char *err, size_t errn);
/* A new record shaped like v holding src (v->size doubles); nil on out of memory. */
value blr_value(blo_state *S, const bl_var *v, const double *src);
/* Writes src into *slot in place when it is a record shaped like v that only
 * the variable holds: 1 if done, 0 if the caller must store a new value. */
int blr_write_in_place(const bl_var *v, value *slot, const double *src);
/* Box `in [lo, hi]` (expression e) of a record variable: lo and hi each a
 * number or a record like v; fills v->lo, v->hi. */
int blr_box(blo_state *S, bl_var *v, const ast_node *e);
/* v's fields as text, "{w = [3], b = number}", for messages. */
void blr_describe(const bl_var *v, char *buf, size_t cap);
enum { BLC_NONE, BLC_BOX, BLC_SIMPLEX, BLC_BALL };

typedef struct bl_every {
  const char *name;
  const ast_node *expr;
  int level;                  /* 0 every outer step, 1 every inner step */
} bl_every;

/* `inner subject to g <= h` / `outer subject to ...` (bl_subject.c) */
typedef struct bl_subject {
  const ast_node *decl;       /* N_SUBJECT */
  int inner;                  /* level */
  const ast_node *c;          /* c = g - h (or h - g for >=): c <= 0 */
  int rank;
  size_t shape[TN_MAX_RANK], size;
  double *mu;                 /* multiplier estimates (size), >= 0 */
  const char *mu_name;        /* the hidden global holding mu */
} bl_subject;

/* Settings of one solve (also remembered by the problem for hypergrad()). */
typedef struct bl_settings {
  int cold;
  long inner_steps, outer_steps;
  double inner_tol, outer_tol, prox;
  double rho;                 /* augmented-Lagrangian penalty of `subject to` */
  bl_optspec inner_opt, outer_opt;
  hg_spec hg;
  int has_seed;
  unsigned long long seed;
  int quiet;                  /* -1: default (quiet unless stderr is a terminal) */
  char trace[512];            /* "" = no trace */
  long inner_starts;          /* cold inner solves start from the init and k - 1 perturbations of it */
  double inner_spread;        /* standard deviation of those perturbations */
  int certificate;            /* BL_CERT_*: when the smallest eigenvalue of H_yy is estimated */
} bl_settings;

enum { BL_CERT_OFF, BL_CERT_FINAL, BL_CERT_EVERY };

struct problem {
  obj h;                      /* h.type = V_PROBLEM; must come first */
  struct problem *next;       /* S->problems list */
  const char *name;
  const ast_node *node;
  struct chunk *chunk;        /* where it was declared (error locations) */
  bl_var *vars;               /* outer variables first, then inner */
  int nvars, nouter, ninner;
  const char **names;         /* parallel to vars: outer then inner */
  bl_leaf *leaves;            /* every leaf (outer variables' first), paths shared with vars */
  int nleaves, nleaves_outer;
  char **adj_names;           /* nvars hidden globals of the init's vector-Jacobian product */
  size_t m, n;
  const ast_node *F, *f;      /* objective expressions */
  int F_max, f_max;           /* maximize: minimized as the negation */
  bl_every *every;
  int nevery, nevery_inner;
  int any_init_uses_outer;
  ast_arena *arena;           /* synthetic ASTs (the init's vector-Jacobian product) */
  const ast_node *init_dot;   /* sum_i sum(init_i * adjoint_i), NULL if not needed */
  int ncon;                   /* inner variables with a constraint */
  const ast_node *con_dot;    /* sum over bounds of sum(bound * adjoint), NULL if none names x */
  bl_subject *subj;           /* `subject to` constraints; F and f then carry their terms */
  int nsubj;
  const char *rho_name;
  const ast_node *F_written, *f_written;   /* the objectives as written, when they carry terms */
  bl_settings last;           /* settings of the last solve (defaults before) */
  double *y_written;          /* n: y as the problem last wrote it (declaration,
                                 end of a solve): a cold solve warns when the
                                 script has changed y since */
};
typedef struct problem problem;

/* ---- a running solve (or hypergrad() / check_hypergrad()) ---- */
typedef struct bl_run {
  blo_state *S;
  const ast_node *at;         /* the solve / call node, for errors */
  struct chunk *at_chunk;     /* chunk of `at` */
  problem *p;
  bl_settings set;
  size_t m, n;
  double *x, *y;              /* current point; the globals hold the same values */
  double *y_prev;             /* proximal centre (y at the start of the outer step) */
  double *gy;                 /* grad_y f(x, y_t) (with the proximal term) */
  double f;                   /* f(x, y_t) (without the proximal term) */
  double F, *Fx, *Fy;         /* F and its gradients at (x, y_T) before compute() */
  bl_opt iopt, oopt;
  double lr_now;              /* inner step size of the current inner step */
  long outer_step;            /* 1-based, for messages */
  long inner_step;            /* index of the current inner step */
  long T;                     /* inner steps done in the last inner loop */
  /* trajectory of the last traj_cap inner steps (ring buffers) */
  long traj_cap;
  double *traj_y, *traj_lr;
  value *traj_mb;             /* traj_cap x nevery_inner drawn values */
  double *scratch;            /* n + m doubles for the services */
  double *scratch2;
  void *hg_state;
  struct blc_state *con;      /* inner constraints (bl_constrain.c), NULL if none */
  diff_rec held;              /* f recorded at the held point (bl_hold_point) */
  /* per-leaf arrays of the evaluations (p->nleaves entries) */
  blo_tensor **lf_tg, **lf_grads, **lf_hvs;
  unsigned char *lf_want;
  int expectation;            /* check_hypergrad: a random method returns its expectation */
  /* What the method reported (bl_hg_report): the first failure of the run,
   * and how many hypergradients reported one. */
  char hg_status[16];         /* "ok", "singular", "indefinite", "diverged" */
  char hg_note[300];
  long hg_failures;
  int hg_failed_now;          /* the current hypergradient already counted */
  /* What the inner solver reported (bl_inner_report): the first failure of
   * the run ("ok", "line_search", "trust_region") and how many inner solves
   * reported one. */
  char inner_status[16];
  char inner_note[300];
  long inner_failures;
  /* The certificate (inner_cert.c) of the last inner point checked, and the
   * multi-start record. */
  double min_eig, min_eig_err;
  char cert[16];              /* "minimum", "saddle", "unknown", "off" */
  long saddles;               /* checks that found negative curvature */
  int cert_warned;
  tn_rng start_rng0, start_rng; /* the perturbations of inner_starts: a stream of
                                   their own, seeded from the script's at the first
                                   multi-start (without consuming it), restarted at
                                   every inner solve */
  int start_seeded;
  double *ms_y, *ms_g;        /* inner_starts: the best point so far and its gradient */
  long switches;              /* inner solves where a perturbed start won */
  int switch_warned;
  /* the first non-finite value met (nonfinite()), for the solve's report */
  int nf;
  char nf_what[64];
  double nf_val;
  long nf_inner;
} bl_run;

/* ---- services for the methods (bilevel.c) ----
 * All evaluate at the current globals (x and the current y), include the
 * proximal term of f when set, and report errors at the solve node. */
int bl_error(bl_run *r, const char *fmt, ...);
/* One warning line "file:line:col: warning: msg" at the solve / call node,
 * through the host's error callback (the CLI's stderr). */
void bl_warn(bl_run *r, const char *fmt, ...);
/* A method reports that its answer is not the hypergradient it promises
 * (status "singular", "indefinite" or "diverged") and what it returned
 * instead.  The first report of a run is kept for the result and printed
 * once as a warning; later ones are counted. */
/* Keeps the first report of a run (status into status_buf, the formatted
 * note into note) and warns once, naming the result field that holds it. */
void bl_report_first(bl_run *r, char *status_buf, size_t status_cap, char *note, size_t note_cap, const char *field,
                     const char *status, const char *fmt, va_list ap);
void bl_hg_report(bl_run *r, const char *status, const char *fmt, ...);
/* f and grad_y f (and grad_x f if gx != NULL). */
int bl_grad_f(bl_run *r, double *f, double *gx, double *gy);
/* F, grad_x F, grad_y F. */
int bl_grad_F(bl_run *r, double *F, double *gx, double *gy);
/* One pass over f with tangent v on y: hyy = H_yy v (+ eps v), hxy = H_xy v
 * (hxy NULL: only the inner variables are differentiated, which is cheaper). */
int bl_hvp(bl_run *r, const double *v, double *hxy, double *hyy);
/* Holds the current point for a series of bl_hvp calls: f is recorded once
 * and every bl_hvp until the point moves replays that recording with its
 * tangent (no primal is recomputed).  Anything that writes x or y, a
 * minibatch draw, and the end of the method's compute(), release it.  Use it
 * where many products are taken at one point (cg, neumann, exact; forward's
 * columns at one inner step), not where y changes between products (unroll).
 * While a point is held, bl_grad_f is a first-order sweep of its recording:
 * the inner loop holds each y_t for methods with an inner_step hook. */
int bl_hold_point(bl_run *r);
void bl_release_point(bl_run *r);
/* Directional derivative of grad_y f along (tx on x, ty on y):
 * out = H_yx tx + H_yy ty (+ eps ty). */
int bl_dgrad(bl_run *r, const double *tx, const double *ty, double *out);
/* Sets y (globals too). */
int bl_set_y(bl_run *r, const double *y);
/* Puts y into the globals only (r->y keeps the current point): evaluate
 * elsewhere, then bl_put_y(r, r->y) to come back. */
int bl_put_y(bl_run *r, const double *y);
/* Trajectory: puts y_t and the values drawn at step t into the globals;
 * bl_traj_restore puts back the current point. */
long bl_traj_first(const bl_run *r);      /* first stored step (T - stored) */
int bl_traj_load(bl_run *r, long t);
double bl_traj_lr(const bl_run *r, long t);
int bl_traj_restore(bl_run *r);
/* The init path of the meta-learning form: 1 when the inner init depends on
 * x and the start is cold (then y_0 = init(x)), else 0. */
int bl_init_path(const bl_run *r);
/* out (length m) += (dy_0/dx)^T a. */
int bl_init_vjp(bl_run *r, const double *a, double *out);
/* Z (n x m, row-major) = dy_0/dx. */
int bl_init_jac(bl_run *r, double *Z);
double bl_inner_lr(const bl_run *r);      /* the inner optimizer's base lr */
/* Settings check of the inner solver at run start (inner.c): lbfgs / newton
 * refuse what they cannot do, inner_starts its combinations; allocates the
 * multi-start buffers. */
int inner_solver_check(bl_run *r);
/* The inner solver reports a failure (status "line_search" or
 * "trust_region"): the first of a run is kept for the result and printed
 * once as a warning; later ones are counted. */
void bl_inner_report(bl_run *r, const char *status, const char *fmt, ...);
/* Estimates the smallest eigenvalue of H_yy at the current point (Lanczos on
 * Hessian-vector products, inner_cert.c) into r->min_eig, r->min_eig_err and
 * r->cert; warns once per run when y is a saddle.  `what` names the caller
 * in the warning ("solve p", "hypergrad"). */
int bl_certify(bl_run *r, const char *what);

/* A value for an error message: a string as itself in quotes (cut at 40
 * characters), a number as a number, anything else by its kind and shape. */
void bl_describe(value v, char *buf, size_t n);
double *bl_alloc(bl_run *r, size_t n);     /* zeroed doubles, NULL after an error */
double bl_dot(const double *a, const double *b, size_t n);
/* Relative size below which a curvature of H_yy (p'Hp / (|p|^2 ||H||), an
 * eigenvalue over the largest) is rounding noise: a product H p carries an
 * error of about sqrt(n) eps ||H|| |p|.  The implicit methods compare with
 * this, not with zero. */
double bl_curv_noise(size_t n);
double bl_norm(const double *a, size_t n);
int bl_finite(const double *a, size_t n);

/* bl_hvp without the constrained-problem reduction (bl_constrain.c). */
int bl_hvp_raw(bl_run *r, const double *v, double *hxy, double *hyy);
/* gx (length m) = gradient over x of the scalar expression e at the current
 * globals (e in the problem's chunk). */
int bl_expr_grad_x(bl_run *r, const ast_node *e, double *gx);

/* ---- inner constraints (bl_constrain.c) ----
 * `inner y ... in [lo, hi]`, `in simplex`, `in ball(r)`: the inner steps are
 * projected, and the implicit methods (cg, neumann, exact) see the reduced
 * system of the projected fixed point through bl_hvp (see the file). */
/* At declaration, for an inner variable with `in ...` (shape and init known). */
int blc_declare(blo_state *S, problem *p, bl_var *v);
/* After all variables are laid out: checks the bounds at the inits and
 * builds p->con_dot. */
int blc_finish(blo_state *S, problem *p);
int blc_setup(bl_run *r);                 /* in run_init, after the method's setup */
void blc_free(bl_run *r);
/* Start of an inner loop (x fixed from here): evaluates the bounds at x and
 * projects y (the globals too). */
int blc_begin(bl_run *r);
/* Projects a new inner iterate in place; t >= 0: the step it ends, whose
 * pre-projection point unroll() keeps. */
void blc_project(bl_run *r, double *y, long t);
/* The box bounds (n; -inf, inf on coordinates without a box). */
const double *blc_lo(const bl_run *r);
const double *blc_hi(const bl_run *r);
/* |y - P(y - eta g)| / eta, eta the inner lr: the stationarity measure that
 * replaces |grad_y f| (inner_tol, inner_grad_norm). */
double blc_gap(bl_run *r, const double *y, const double *g);
/* Around the method's compute(): for cg, neumann and exact, find the active
 * set at (x, y_T), fold the bounds' dependence on x into r->Fx and project
 * r->Fy; bl_hvp then returns the reduced operator. */
int blc_pre(bl_run *r);
void blc_post(bl_run *r);
int blc_reducing(const bl_run *r);
/* The reduced operator (see the file): bl_hvp while blc_reducing. */
int blc_hvp(bl_run *r, const double *v, double *hxy, double *hyy);
/* unroll(): a (the adjoint of y_{t+1}) <- J_t a at the kept pre-projection
 * point of step t, t = -1 for the projection of the init; the part that
 * follows the bounds is kept for blc_bound_vjp. */
void blc_unroll_step(bl_run *r, long t, double *a);
/* d += (d bounds / dx)^T (the kept bound adjoints), which are then cleared. */
int blc_bound_vjp(bl_run *r, double *d);

/* ---- general constraints (bl_subject.c) ---- */
int bls_declare(blo_state *S, problem *p, const ast_node *k);   /* an N_SUBJECT item */
/* After the objectives: checks the constraints and adds their augmented-
 * Lagrangian terms to F and f. */
int bls_finish(blo_state *S, problem *p);
void bls_free(problem *p);
int bls_begin(bl_run *r);                 /* in run_init: rho and the multipliers into their globals */
int bls_update(bl_run *r);                /* after an outer step: mu <- relu(mu + rho c(x, y)) */
int bls_result(bl_run *r, orec *rec);     /* the solve result's multiplier fields */

/* ---- entry points used by the builtins ---- */
/* hypergrad(problem, method, options...) and check_hypergrad(...). */
int bl_hypergrad_builtin(blo_state *S, callargs *a, int check, value *out);
/* The builtins of bilevel_builtins.c, for stdlib/builtins.c to chain to. */
const builtin_def *bilevel_builtin_find(const char *name);
const builtin_def *bilevel_builtin_at(size_t i);   /* NULL past the end */

#endif
