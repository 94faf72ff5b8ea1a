/* test_records.c: problem variables and differentiation variables that are
 * records of tensors.  A record variable must behave exactly as the same
 * problem written with one tensor variable per field: every comparison here
 * is against that flat form (or finite differences, or a closed form). */
#define _POSIX_C_SOURCE 200809L
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../include/blo.h"
#include "../../runtime/bilevel.h"
#include "alloc_count.h"

static blo_state *S;

static void setup(void) {
  blo_config cfg;
  blo_config_defaults(&cfg);
  S = blo_open(&cfg);
  ck_assert_ptr_nonnull(S);
}

static void teardown(void) { blo_close(S); }

static int run(const char *src) { return blo_eval_string(S, "test", src, strlen(src)); }

static void run_ok(const char *src) {
  int rc = run(src);
  ck_assert_msg(rc == BLO_OK, "script failed: %s (line %d)", blo_last_error(S)->message, blo_last_error(S)->line);
}

static double num(const char *name) {
  double d = NAN;
  ck_assert_msg(blo_get_number(S, name, &d) == BLO_OK, "no number '%s'", name);
  return d;
}

/* The error message holds msg and points at line:col. */
static void expect_error_at(const char *src, const char *msg, int line, int col) {
  int rc = run(src);
  ck_assert_int_ne(rc, BLO_OK);
  const blo_error *e = blo_last_error(S);
  ck_assert_msg(strstr(e->message, msg) != NULL, "expected '%s', got '%s'", msg, e->message);
  ck_assert_msg(e->line == line && e->col == col, "'%s' at %d:%d, expected %d:%d", e->message, e->line, e->col, line,
                col);
}

/* The same ridge-like problem twice: with one variable per tensor (flat)
 * and with record variables, outer {lam, c} and inner {w, head = {b}}.  F
 * depends on x directly, so fo() and t1t2() are not zero. */
static const char *PAIR =
  "seed(4)\n"
  "let X = randn(24, 3)\n"
  "let t = randn(24)\n"
  "let Xv = randn(12, 3)\n"
  "let tv = randn(12)\n"
  "problem flat {\n"
  "  outer lam : [3] = fill(3, -1.0)\n"
  "  outer c = 0.3\n"
  "  inner w = zeros(3)\n"
  "  inner b = 0.1\n"
  "  inner minimize mean((X @ w + b - t)^2) + sum(exp(lam) * w^2) + c^2 * b^2\n"
  "  outer minimize mean((Xv @ w + b - tv)^2) + 0.01 * sum(lam^2) + 0.1 * c^2\n"
  "}\n"
  "problem rec {\n"
  "  outer hp = {lam = fill(3, -1.0), c = 0.3}\n"
  "  inner p = {w = zeros(3), head = {b = 0.1}}\n"
  "  inner minimize mean((X @ p.w + p.head.b - t)^2) + sum(exp(hp.lam) * p.w^2) + hp.c^2 * p.head.b^2\n"
  "  outer minimize mean((Xv @ p.w + p.head.b - tv)^2) + 0.01 * sum(hp.lam^2) + 0.1 * hp.c^2\n"
  "}\n";

/* |a - b| / |b| over the concatenation, the absolute difference when b = 0 */
static double rel_err(const double *a, const double *b, int n) {
  double num2 = 0, den2 = 0;
  for (int i = 0; i < n; i++) {
    num2 += (a[i] - b[i]) * (a[i] - b[i]);
    den2 += b[i] * b[i];
  }
  return den2 > 0 ? sqrt(num2 / den2) : sqrt(num2);
}

START_TEST(every_method_record_matches_flat) {
  run_ok(PAIR);
  int checked = 0;
  for (size_t i = 0; hg_at(i); i++) {
    const hg_method *m = hg_at(i);
    if (m->kind == HG_SOLVER) continue;   /* penalty: compared through solve below */
    char src[600];
    /* warm start from y moved away from its init, so warm and cold differ */
    for (int warm = 0; warm < 2; warm++) {
      snprintf(src, sizeof src,
               "let g1 = hypergrad(flat, \"%s\", start = \"%s\", inner_steps = 40, inner_opt = momentum(lr = 0.1), "
               "seed = 5)\n"
               "let g2 = hypergrad(rec, \"%s\", start = \"%s\", inner_steps = 40, inner_opt = momentum(lr = 0.1), "
               "seed = 5)\n"
               "let va = concat(g1[0], [g1[1]])\n"
               "let vb = concat(g2.lam, [g2.c])\n",
               m->name, warm ? "warm" : "cold", m->name, warm ? "warm" : "cold");
      run_ok(src);
      double a[4], b[4];
      ck_assert_int_eq(blo_get_tensor(S, "va", a, 4), BLO_OK);
      ck_assert_int_eq(blo_get_tensor(S, "vb", b, 4), BLO_OK);
      ck_assert_msg(b[0] != 0 || b[3] != 0, "%s: a zero hypergradient checks nothing", m->name);
      double e = rel_err(b, a, 4);
      ck_assert_msg(e < 1e-12, "%s (%s): record vs flat %.3g", m->name, warm ? "warm" : "cold", e);
      checked++;
    }
  }
  ck_assert_int_ge(checked, 16);
}
END_TEST

/* The meta-learning form: the inner init is the outer record (phi = theta),
 * so unroll, forward, fo and ufo add the path through the init, (dy0/dx)^T a
 * (a dot of two records) and dy0/dx (forward mode over a record-valued init). */
static const char *MAML =
  "seed(6)\n"
  "let X = randn(8, 2)\n"
  "let t = randn(8)\n"
  "let Xv = randn(6, 2)\n"
  "let tv = randn(6)\n"
  "problem mflat {\n"
  "  outer tw = [0.5, -0.5]\n"
  "  outer tb = 0.1\n"
  "  inner w = tw * 1.5\n"
  "  inner b = tb\n"
  "  inner minimize mean((X @ w + b - t)^2)\n"
  "  outer minimize mean((Xv @ w + b - tv)^2) + 0.1 * sum(tw^2)\n"
  "}\n"
  "problem mrec {\n"
  "  outer th = {w = [0.5, -0.5], b = 0.1}\n"
  "  inner p = {w = th.w * 1.5, b = th.b}\n"
  "  inner minimize mean((X @ p.w + p.b - t)^2)\n"
  "  outer minimize mean((Xv @ p.w + p.b - tv)^2) + 0.1 * sum(th.w^2)\n"
  "}\n";

START_TEST(meta_init_record_matches_flat) {
  run_ok(MAML);
  const char *methods[] = {"unroll()", "forward()", "fo()", "ufo(0.5)", "cg()"};
  for (int k = 0; k < 5; k++) {
    char src[600];
    snprintf(src, sizeof src,
             "let g1 = hypergrad(mflat, %s, inner_steps = 6, inner_opt = sgd(lr = 0.1), seed = 2)\n"
             "let g2 = hypergrad(mrec, %s, inner_steps = 6, inner_opt = sgd(lr = 0.1), seed = 2)\n"
             "let va = concat(g1[0], [g1[1]])\nlet vb = concat(g2.w, [g2.b])\n",
             methods[k], methods[k]);
    run_ok(src);
    double a[3], b[3];
    ck_assert_int_eq(blo_get_tensor(S, "va", a, 3), BLO_OK);
    ck_assert_int_eq(blo_get_tensor(S, "vb", b, 3), BLO_OK);
    ck_assert_msg(a[0] != 0, "%s: zero hypergradient", methods[k]);
    double e = rel_err(b, a, 3);
    ck_assert_msg(e < 1e-12, "%s: record vs flat %.3g", methods[k], e);
  }
  /* unroll through the init is the exact derivative of the cold-start map */
  run_ok("let e = check_hypergrad(mrec, unroll(), inner_steps = 6, inner_opt = sgd(lr = 0.1))\n");
  ck_assert_msg(num("e") < 1e-8, "check_hypergrad %.3g", num("e"));
}
END_TEST

/* The solve as a whole: x, y and F after cold and warm solves with adam,
 * and the penalty solver. */
START_TEST(solve_record_matches_flat) {
  const char *opts[] = {
    "outer_steps = 15, inner_steps = 60, inner_opt = sgd(lr = 0.1), outer_opt = adam(lr = 0.05), hypergrad = cg()",
    "outer_steps = 15, inner_steps = 5, start = \"warm\", inner_opt = momentum(lr = 0.05), "
    "outer_opt = sgd(lr = 0.1), hypergrad = unroll()",
    "outer_steps = 15, inner_steps = 5, start = \"warm\", inner_opt = sgd(lr = 0.05), hypergrad = penalty()",
    "outer_steps = 5, inner_steps = 30, hypergrad = neumann(20, 0.05), outer_tol = 1e-12",
  };
  for (int k = 0; k < 4; k++) {
    run_ok(PAIR);
    char src[800];
    snprintf(src, sizeof src,
             "let r1 = solve flat with {%s, quiet = true}\n"
             "let r2 = solve rec with {%s, quiet = true}\n"
             "let va = concat(r1.x[0], [r1.x[1]], r1.y[0], [r1.y[1]], [r1.F])\n"
             "let vb = concat(r2.x.lam, [r2.x.c], r2.y.w, [r2.y.head.b], [r2.F])\n"
             "let globs = concat(hp.lam, [hp.c], p.w, [p.head.b])\n",
             opts[k], opts[k]);
    run_ok(src);
    double a[9], b[9], g[8];
    ck_assert_int_eq(blo_get_tensor(S, "va", a, 9), BLO_OK);
    ck_assert_int_eq(blo_get_tensor(S, "vb", b, 9), BLO_OK);
    ck_assert_int_eq(blo_get_tensor(S, "globs", g, 8), BLO_OK);
    double e = rel_err(b, a, 9);
    ck_assert_msg(e < 1e-12, "solve %d: record vs flat %.3g", k, e);
    /* the globals hold the result */
    ck_assert_msg(rel_err(g, b, 8) == 0, "solve %d: globals differ from the result", k);
    /* the result's fields through the API's dotted paths */
    ck_assert_double_eq(num("r2.x.c"), b[3]);
    ck_assert_double_eq(num("r2.y.head.b"), b[7]);
    /* the solve moved x */
    ck_assert_msg(fabs(a[0] + 1) > 1e-4, "solve %d did not move lam", k);
  }
}
END_TEST

/* grad, jvp and hvp of a nested record against central differences. */
START_TEST(grad_record_matches_fd) {
  run_ok("let p = {a = [0.3, -0.7, 1.1], h = {m = [[0.2, 0.5], [-0.4, 0.9]], s = 0.6}}\n"
         "fn E(p) { return sum(sin(p.a) * p.a^2) + sum(exp(p.h.m) * p.h.s) + p.h.s^3 * sum(p.a) }\n"
         "let g = grad(E(p), p)\n"
         "let d = {a = [0.5, 0.1, -0.3], h = {m = [[1, -2], [0.5, 0.25]], s = -0.8}}\n"
         "let h = 1e-5\n"
         "fn shift(p, d, t) { return {a = p.a + t * d.a, h = {m = p.h.m + t * d.h.m, s = p.h.s + t * d.h.s}} }\n"
         "let fd = (E(shift(p, d, h)) - E(shift(p, d, -h))) / (2 * h)\n"
         "let gd = dot(g, d)\n"
         "let jv = jvp(E(p), p, d)\n"
         "let hv = hvp(E(p), p, d)\n"
         "fn gradE(q) { let q2 = q\n return grad(E(q2), q2) }\n"
         "let hfd = dot(gradE(shift(p, d, h)), d) - dot(gradE(shift(p, d, -h)), d)\n"
         "let hvd = dot(hv, d)\n"
         "let ga = grad(E(p), p).h.m\n");
  double fd = num("fd"), gd = num("gd"), jv = num("jv");
  ck_assert_msg(fabs(gd - fd) < 1e-8 * fabs(fd), "grad . d = %.17g, fd %.17g", gd, fd);
  ck_assert_msg(fabs(jv - gd) < 1e-13 * fabs(gd), "jvp %.17g, grad . d %.17g", jv, gd);
  double hfd = num("hfd") / 2e-5, hvd = num("hvd");
  ck_assert_msg(fabs(hvd - hfd) < 1e-7 * fabs(hfd), "d' H d = %.17g, fd %.17g", hvd, hfd);
  /* the record's shape: the gradient of h.m is exp(m) * s */
  double ga[4];
  ck_assert_int_eq(blo_get_tensor(S, "ga", ga, 4), BLO_OK);
  const double m[4] = {0.2, 0.5, -0.4, 0.9};
  for (int i = 0; i < 4; i++) ck_assert(fabs(ga[i] - exp(m[i]) * 0.6) < 1e-15);
  /* a value the variable shares with another holder is not changed by binding */
  run_ok("let q = p\nlet gq = grad(sum(p.a * q.a), p)\nlet back = sum(abs(q.a - [0.3, -0.7, 1.1]))\n"
         "let ga0 = gq.a[0]");
  ck_assert_double_eq(num("back"), 0);
  /* q is a constant: d/da sum(a * q.a) = q.a */
  ck_assert(fabs(num("ga0") - 0.3) < 1e-15);
}
END_TEST

/* 24 variables (12 outer, 12 inner): f = sum_i (w_i - lam_i)^2 / 2 has
 * w* = lam, F = sum_i (w_i - c_i)^2 / 2, so dPhi/dlam_i = lam_i - c_i. */
START_TEST(many_variables) {
  enum { K = 12 };
  char src[8192];
  size_t o = 0;
  o += (size_t)snprintf(src + o, sizeof src - o, "problem big {\n");
  for (int i = 0; i < K; i++) o += (size_t)snprintf(src + o, sizeof src - o, "  outer l%d = %d.5\n", i, i);
  for (int i = 0; i < K; i++) o += (size_t)snprintf(src + o, sizeof src - o, "  inner w%d = 0.0\n", i);
  o += (size_t)snprintf(src + o, sizeof src - o, "  inner minimize 0");
  for (int i = 0; i < K; i++) o += (size_t)snprintf(src + o, sizeof src - o, " + (w%d - l%d)^2 / 2", i, i);
  o += (size_t)snprintf(src + o, sizeof src - o, "\n  outer minimize 0");
  for (int i = 0; i < K; i++) o += (size_t)snprintf(src + o, sizeof src - o, " + (w%d - %d)^2 / 2", i, 2 * i);
  o += (size_t)snprintf(src + o, sizeof src - o, "\n}\n");
  run_ok(src);
  const char *methods[] = {"cg()", "exact()", "unroll()", "forward()"};
  for (int k = 0; k < 4; k++) {
    snprintf(src, sizeof src, "let g = hypergrad(big, %s, inner_steps = 200, inner_opt = sgd(lr = 0.5))\n"
             "let g5 = g[5]\nlet n = len(g)\n", methods[k]);
    run_ok(src);
    ck_assert_double_eq(num("n"), K);
    /* dPhi/dl5 = 5.5 - 10, the inner loop converged to rounding (factor 0.5^200) */
    ck_assert_msg(fabs(num("g5") + 4.5) < 1e-12, "%s: %.17g", methods[k], num("g5"));
  }
  run_ok("let r = solve big with {outer_steps = 50, inner_steps = 100, inner_opt = sgd(lr = 0.5), "
         "outer_opt = sgd(lr = 0.5), quiet = true}\nlet x7 = r.x[7]\nlet y11 = w11");
  ck_assert(fabs(num("x7") - 14) < 1e-9);
  ck_assert(fabs(num("y11") - 22) < 1e-9);
  /* grad over 20 names at once */
  o = 0;
  o += (size_t)snprintf(src + o, sizeof src - o, "let gg = grad(0");
  for (int i = 0; i < 20; i++) o += (size_t)snprintf(src + o, sizeof src - o, " + %d * v%d^2", i, i);
  o += (size_t)snprintf(src + o, sizeof src - o, ", [");
  for (int i = 0; i < 20; i++) o += (size_t)snprintf(src + o, sizeof src - o, "%sv%d", i ? ", " : "", i);
  o += (size_t)snprintf(src + o, sizeof src - o, "])\nlet g19 = gg[19]\n");
  char defs[2048];
  size_t d = 0;
  for (int i = 0; i < 20; i++) d += (size_t)snprintf(defs + d, sizeof defs - d, "let v%d = %d.0\n", i, i + 1);
  run_ok(defs);
  run_ok(src);
  ck_assert_double_eq(num("g19"), 2 * 19 * 20);
}
END_TEST

/* A record variable of many fields (30 leaves) goes through diff_run's heap path. */
START_TEST(many_fields) {
  char src[4096];
  size_t o = 0;
  o += (size_t)snprintf(src + o, sizeof src - o, "problem mf {\n  outer l = {");
  for (int i = 0; i < 30; i++) o += (size_t)snprintf(src + o, sizeof src - o, "%sf%d = %d.5", i ? ", " : "", i, i);
  o += (size_t)snprintf(src + o, sizeof src - o, "}\n  inner w = {");
  for (int i = 0; i < 30; i++) o += (size_t)snprintf(src + o, sizeof src - o, "%sf%d = 0.0", i ? ", " : "", i);
  o += (size_t)snprintf(src + o, sizeof src - o, "}\n  inner minimize 0");
  for (int i = 0; i < 30; i++) o += (size_t)snprintf(src + o, sizeof src - o, " + (w.f%d - l.f%d)^2 / 2", i, i);
  o += (size_t)snprintf(src + o, sizeof src - o, "\n  outer minimize 0");
  for (int i = 0; i < 30; i++) o += (size_t)snprintf(src + o, sizeof src - o, " + (w.f%d - %d)^2 / 2", i, 2 * i);
  o += (size_t)snprintf(src + o, sizeof src - o, "\n}\nlet g = hypergrad(mf, cg(), inner_steps = 200, "
                        "inner_opt = sgd(lr = 0.5))\nlet g29 = g.f29\n");
  run_ok(src);
  ck_assert_msg(fabs(num("g29") - (29.5 - 58)) < 1e-12, "%.17g", num("g29"));
}
END_TEST

START_TEST(record_box_projects_each_field) {
  /* F pulls hp.a to 3 and hp.b to -3; the box holds a in [0, 1] (per
   * element: [0, 2] for the second) and b in [-1, 5] */
  run_ok("problem bx {\n"
         "  outer hp = {a = [0.5, 0.5], b = 0.0} in [{a = 0, b = -1}, {a = [1, 2], b = 5}]\n"
         "  inner w = {u = [0.0, 0.0], v = 0.0}\n"
         "  inner minimize sum((w.u - hp.a)^2) + (w.v - hp.b)^2\n"
         "  outer minimize sum((w.u - 3)^2) + (w.v + 3)^2\n"
         "}\n"
         "let r = solve bx with {outer_steps = 100, inner_steps = 50, inner_opt = sgd(lr = 0.25), "
         "outer_opt = sgd(lr = 0.1), quiet = true}\n"
         "let a0 = hp.a[0]\nlet a1 = hp.a[1]\nlet b = hp.b\n");
  ck_assert_double_eq(num("a0"), 1);
  ck_assert_double_eq(num("a1"), 2);
  ck_assert_double_eq(num("b"), -1);
  /* a scalar box bounds every element of every field */
  run_ok("problem bs {\n"
         "  outer hp = {a = [0.5, 0.5], b = 0.0} in [-0.5, 0.75]\n"
         "  inner w = {u = [0.0, 0.0], v = 0.0}\n"
         "  inner minimize sum((w.u - hp.a)^2) + (w.v - hp.b)^2\n"
         "  outer minimize sum((w.u - 3)^2) + (w.v + 3)^2\n"
         "}\n"
         "let r = solve bs with {outer_steps = 100, inner_steps = 50, inner_opt = sgd(lr = 0.25), "
         "outer_opt = sgd(lr = 0.1), quiet = true}\n"
         "let a1 = hp.a[1]\nlet b = hp.b\n");
  ck_assert_double_eq(num("a1"), 0.75);
  ck_assert_double_eq(num("b"), -0.5);
}
END_TEST

START_TEST(record_errors_have_locations) {
  expect_error_at("problem e1 {\n  outer l = 1.0\n  inner w = {a = [1.0], s = \"x\"}\n"
                  "  inner minimize sum(w.a^2)\n  outer minimize l\n}\n",
                  "inner w: field 'w.s' is \"x\"; a record variable holds numbers, tensors and records of them", 3, 13);
  expect_error_at("problem e2 {\n  outer l = 1.0\n  inner w = {}\n  inner minimize 0\n  outer minimize l\n}\n",
                  "inner w: the initial value is an empty record", 3, 13);
  expect_error_at("problem e3 {\n  outer l = 1.0\n  inner w = {a = {}}\n  inner minimize 0\n  outer minimize l\n}\n",
                  "inner w: field 'w.a' is an empty record", 3, 13);
  expect_error_at("problem e4 {\n  outer l = 1.0\n  inner w : [2] = {a = [1.0, 2.0]}\n"
                  "  inner minimize sum(w.a^2)\n  outer minimize l\n}\n",
                  "inner w: a record variable takes the shapes of its fields from its init; leave out ': SHAPE'", 3, 13);
  /* the record changed its fields or shapes before the solve */
  run_ok("problem e5 {\n  outer l = 1.0\n  inner w = {a = [1.0, 2.0], b = 0.0}\n"
         "  inner minimize sum((w.a - l)^2) + w.b^2\n  outer minimize sum(w.a^2)\n}\n");
  expect_error_at("w = {a = [1.0, 2.0, 3.0], b = 0.0}\nlet r = solve e5\n",
                  "inner variable 'w' must hold a record like {a = [2], b = number}: field 'w.a' must be a tensor of "
                  "shape [2], but it is tensor [3]", 2, 9);
  expect_error_at("w = {a = [1.0, 2.0]}\nlet r = solve e5\n",
                  "inner variable 'w' must hold a record like {a = [2], b = number}: field 'w.b' is missing", 2, 9);
  expect_error_at("w = {a = [1.0, 2.0], b = 0, c = 1}\nlet g = hypergrad(e5, cg())\n",
                  "'w' has a field 'c' the declaration does not have", 2, 9);
  expect_error_at("w = [1.0, 2.0]\nlet r = solve e5\n", "'w' is tensor [2], not a record", 2, 9);
  /* a cold start re-evaluates the init: it must keep its fields' shapes */
  run_ok("let n = 2\nproblem e6 {\n  outer l = 1.0\n  inner w = {a = zeros(n)}\n"
         "  inner minimize sum((w.a - l)^2)\n  outer minimize sum(w.a^2)\n}\nn = 3\n");
  expect_error_at("let r = solve e6\n",
                  "inner w: the init must be a record like {a = [2]}: field 'w.a' must be a tensor of shape [2], but it is tensor [3]", 4,
                  13);
  /* boxes */
  expect_error_at("problem e7 {\n  outer l = {a = 1.0} in [0, {b = 2}]\n  inner w = 0.0\n"
                  "  inner minimize (w - l.a)^2\n  outer minimize w^2\n}\n",
                  "outer l: the upper bound of the box must be a number or a record like {a = number}", 2, 26);
  expect_error_at("problem e8 {\n  outer l = {a = [1.0, 3.0]} in [0, 2]\n  inner w = 0.0\n"
                  "  inner minimize (w - l.a[0])^2\n  outer minimize w^2\n}\n",
                  "outer l: the initial value is outside its box (element 1 of field 'l.a')", 2, 33);
  /* grad: a field that is not a tensor */
  expect_error_at("let q = {a = [1.0], f = \"s\"}\nlet g = grad(sum(q.a), q)\n",
                  "cannot differentiate with respect to 'q': field 'q.f' is a string", 2, 24);
}
END_TEST

/* A steady-state solve over record variables writes the records in place:
 * no system allocation for tensor data per outer step once warm. */
START_TEST(record_steady_state_no_allocation) {
  run_ok(PAIR);
  const char *methods[2] = {"cg()", "unroll()"};
  for (int m = 0; m < 2; m++) {
    char srcs[3][200];
    for (int k = 0; k < 3; k++)
      snprintf(srcs[k], sizeof srcs[k], "let r = solve rec with {inner_steps = 10, outer_steps = %d, hypergrad = %s}",
               k < 2 ? 5 : 40, methods[m]);
    size_t counts[3];
    for (int k = 0; k < 3; k++) {
      counts[k] = allocs_of(S, srcs[k]);
    }
    ck_assert_msg(counts[2] == 0, "%s: 40 steps after warm-up: %zu allocations", methods[m], counts[2]);
  }
}
END_TEST

/* The trace names each element of an outer record's fields, and its x
 * columns are the record's leaves in field order. */
START_TEST(record_trace_columns) {
  run_ok(PAIR);
  char path[] = "/tmp/blo_test_records_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  close(fd);
  char src[400];
  snprintf(src, sizeof src, "let r = solve rec with {outer_steps = 2, inner_steps = 20, trace = \"%s\", quiet = true}\n"
           "let lam1 = hp.lam[1]\n", path);
  run_ok(src);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  char head[400], row1[800] = "", row2[800] = "";
  ck_assert_ptr_nonnull(fgets(head, sizeof head, f));
  ck_assert_ptr_nonnull(fgets(row1, sizeof row1, f));
  ck_assert_ptr_nonnull(fgets(row2, sizeof row2, f));
  fclose(f);
  unlink(path);
  ck_assert_str_eq(head, "step,F,f,inner_grad_norm,hypergrad_norm,x_dist2,y_dist2,time,hp.lam[0],hp.lam[1],hp.lam[2],hp.c\n");
  /* row 1 holds x0 = (-1, -1, -1, 0.3) */
  double v[12];
  char *q = row1;
  for (int i = 0; i < 12; i++) {
    v[i] = strtod(q, &q);
    if (*q == ',') q++;
  }
  ck_assert_double_eq(v[8], -1);
  ck_assert_double_eq(v[11], 0.3);
  ck_assert_double_eq(v[0], 1);
}
END_TEST

int main(void) {
  Suite *s = suite_create("records");
  TCase *tc = tcase_create("records");
  tcase_set_timeout(tc, 120);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, every_method_record_matches_flat);
  tcase_add_test(tc, solve_record_matches_flat);
  tcase_add_test(tc, meta_init_record_matches_flat);
  tcase_add_test(tc, grad_record_matches_fd);
  tcase_add_test(tc, many_variables);
  tcase_add_test(tc, many_fields);
  tcase_add_test(tc, record_box_projects_each_field);
  tcase_add_test(tc, record_errors_have_locations);
  tcase_add_test(tc, record_steady_state_no_allocation);
  tcase_add_test(tc, record_trace_columns);
  suite_add_tcase(s, tc);
  return check_run(s, "test_records", CK_FORK);
}
