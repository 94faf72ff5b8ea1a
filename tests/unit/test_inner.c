/* test_inner.c: unit tests of the inner solvers lbfgs() and newton()
 * (runtime/inner*.c), the certificate of the inner point and the
 * multi-start: what they refuse, what they report on stderr (once per
 * solve), and that their steps allocate nothing in steady state.  The
 * numbers against closed forms are in tests/scripts/inner_*.blo. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>

#include "capture_sink.h"
#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/blo.h"
#include "../../runtime/bilevel.h"
#include "alloc_count.h"

static blo_state *S;
static sink err;

static void setup(void) {
  blo_config cfg;
  blo_config_defaults(&cfg);
  memset(&err, 0, sizeof err);
  cfg.error_fn = sink_error;
  cfg.error_ud = &err;
  S = blo_open(&cfg);
  ck_assert_ptr_nonnull(S);
}

static void teardown(void) { blo_close(S); }

static int run(const char *src) { return blo_eval_string(S, "test", src, strlen(src)); }

static void run_ok(const char *src) {
  int rc = run(src);
  ck_assert_msg(rc == BLO_OK, "script failed: %s", blo_last_error(S)->message);
}

static double field(const char *rec, const char *name) {
  double d = NAN;
  ck_assert_msg(blo_get_field_number(S, rec, name, &d) == BLO_OK, "no field %s.%s", rec, name);
  return d;
}

static void expect_error(const char *src, const char *msg) {
  int rc = run(src);
  ck_assert_int_ne(rc, BLO_OK);
  ck_assert_msg(strstr(blo_last_error(S)->message, msg) != NULL, "expected '%s', got '%s'", msg,
                blo_last_error(S)->message);
}

static int count(const char *hay, const char *needle) {
  int k = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) k++;
  return k;
}

/* ridge with a closed form: w* = (X'X + e^lam I)^-1 X'b */
static const char *RIDGE =
  "let X = [[1.0, 2, 0.5], [0.3, -1, 2], [2, 0.1, -0.4], [1, 1, 1], [-0.5, 0.7, 0.2]]\n"
  "let b = [1.0, -2, 0.5, 0.3, 1.1]\n"
  "problem rid {\n"
  "  outer lam = 0.5\n"
  "  inner w : [3] = zeros(3)\n"
  "  inner minimize sum((X @ w - b)^2) / 2 + exp(lam) / 2 * sum(w^2)\n"
  "  outer minimize sum((w - [1, 1, 1])^2) + 0.1 * lam^2\n"
  "}\n";

/* f = (y0 - x)^2 / 2 - y1^2 / 4 + y1^4 from y = 0: a saddle, gradient 0 */
static const char *SADDLE =
  "problem sad {\n"
  "  outer x = 1.0\n"
  "  inner y : [2] = zeros(2)\n"
  "  inner minimize 0.5 * (y[0] - x)^2 - 0.25 * y[1]^2 + y[1]^4\n"
  "  outer minimize (y[0] - 2)^2 + x^2\n"
  "}\n";

START_TEST(refusals_say_why_and_what_to_use) {
  run_ok(RIDGE);
  expect_error("let r = solve rid with {inner_opt = lbfgs(), hypergrad = unroll()}",
               "unroll() cannot differentiate through the lbfgs inner optimizer: its steps depend on the line search "
               "or trust region and on the solver's curvature model, which are not differentiated: use an implicit "
               "method (cg(), neumann(), exact())");
  expect_error("let r = solve rid with {inner_opt = newton(), hypergrad = forward()}",
               "forward() cannot differentiate through the newton inner optimizer");
  expect_error("let r = solve rid with {inner_opt = newton(), hypergrad = ufo()}",
               "ufo() needs the exact unrolled gradient, which cannot go through the newton inner optimizer");
  expect_error("let r = solve rid with {inner_opt = lbfgs(), hypergrad = penalty()}",
               "penalty() takes its own gradient steps on the penalized objective");
  expect_error("let r = solve rid with {outer_opt = lbfgs()}",
               "solve option 'outer_opt': lbfgs() is an inner optimizer only");
  expect_error("let g = hypergrad(rid, unroll(), inner_opt = newton())",
               "unroll() cannot differentiate through the newton inner optimizer");
  expect_error("let o = lbfgs(line_search = \"exact\")", "lbfgs(): 'line_search' must be \"wolfe\" or \"armijo\", got \"exact\"");
  expect_error("let o = lbfgs(memory = 0)", "lbfgs(): 'memory' must be an integer in [1, 1e6], got 0");
  expect_error("let o = newton(tol = 2)", "newton(): 'tol' must be in [0, 1), got 2");
  expect_error("let o = newton(memory = 3)", "newton() has no option 'memory'");
  expect_error("let o = lbfgs(5)", "lbfgs() takes its options by name, e.g. lbfgs(memory = ...)");
  expect_error("let r = solve rid with {inner_opt = {optimizer = \"newton\", cg_iters = 2.5}}",
               "solve option 'inner_opt': newton's 'cg_iters' must be an integer in [1, 1e6], got 2.5");
  expect_error("let r = solve rid with {inner_starts = 3, hypergrad = unroll()}",
               "inner_starts = 3: unroll() follows the inner trajectory");
  expect_error("let r = solve rid with {inner_starts = 3, start = \"warm\"}",
               "inner_starts = 3: several starts are a cold-start option");
  expect_error("let r = solve rid with {inner_starts = 0}", "solve option 'inner_starts' must be an integer >= 1, got 0");
  expect_error("let r = solve rid with {certificate = \"always\"}",
               "solve option 'certificate' must be \"final\", \"every\" or \"off\", got \"always\"");
  /* minibatch inner steps change f from step to step */
  run_ok("let Xs = randn(10, 2)\n"
         "problem mb {\n outer a = 0.0\n inner v : [2] = zeros(2)\n every inner let i = randint(0, 10, 4)\n"
         " inner minimize mean((Xs[i] @ v - 1)^2) + exp(a) * sum(v^2)\n outer minimize sum(v^2)\n}\n");
  expect_error("let r = solve mb with {inner_opt = lbfgs()}",
               "inner_opt = lbfgs(): the problem draws `every inner` values at each inner step");
  ck_assert_int_eq(count(err.buf, "warning"), 0);
}
END_TEST

/* One warning per solve for a saddle, however many outer steps see it;
 * hypergrad() and check_hypergrad() warn too. */
START_TEST(saddle_warns_once_per_solve) {
  run_ok(SADDLE);
  run_ok("let r = solve sad with {outer_steps = 4, certificate = \"every\", inner_opt = newton()}");
  ck_assert_int_eq(err.calls, 1);
  ck_assert_int_eq(count(err.buf, "warning: solve sad: outer step 1: the inner point is not a minimum of f: H_yy has an "
                                  "eigenvalue <= -0.5 (Lanczos, 2 products) at |grad_y f| = 0"), 1);
  ck_assert_double_eq(field("r", "inner_saddles"), 5);   /* 4 outer steps and the final point */
  ck_assert_double_eq_tol(field("r", "inner_min_eig"), -0.5, 1e-14);
  run_ok("let g = hypergrad(sad, cg())");
  ck_assert_int_eq(err.calls, 2);
  ck_assert_int_eq(count(err.buf, "test:1:9: warning: hypergrad: the inner point is not a minimum of f"), 1);
  run_ok("let e = check_hypergrad(sad, cg())");
  ck_assert_int_eq(count(err.buf, "warning: check_hypergrad: the inner point is not a minimum of f"), 1);
  /* off: nothing computed, nothing said */
  int before = err.calls;
  run_ok("let r = solve sad with {outer_steps = 2, certificate = \"off\"}");
  ck_assert_int_eq(err.calls, before);
  ck_assert(isnan(field("r", "inner_min_eig")));
  ck_assert_int_eq(blo_last_error(S)->status, BLO_OK);
}
END_TEST

/* Negative curvature at a point the inner loop has not converged to (a warm
 * start of one step from y1 = 0.05, where f'' = -0.5 + 12 * 0.05^2 < 0):
 * "curvature", not "saddle"; unroll differentiates the steps taken and says
 * nothing, cg assumes a minimum and warns. */
START_TEST(curvature_before_convergence) {
  run_ok(SADDLE);
  run_ok("y = [0, 0.05]\n"
         "let r = solve sad with {inner_steps = 1, start = \"warm\", hypergrad = unroll(), outer_steps = 1}\n"
         "let c1 = r.inner_certificate");
  ck_assert_int_eq(err.calls, 0);
  const char *c;
  ck_assert_int_eq(blo_get_string(S, "c1", &c), BLO_OK);
  ck_assert_str_eq(c, "curvature");
  ck_assert(field("r", "inner_min_eig") < -0.4);
  ck_assert(field("r", "inner_grad_norm") > 0.1);
  run_ok("y = [0, 0.05]\n"
         "let r = solve sad with {inner_steps = 1, start = \"warm\", hypergrad = cg(), outer_steps = 1}");
  ck_assert_int_eq(err.calls, 1);
  ck_assert_int_eq(count(err.buf, "the inner loop stopped before a minimum of f: H_yy has an eigenvalue <= "), 1);
  ck_assert_int_eq(count(err.buf, "and cg() assumes y is a minimum"), 1);
}
END_TEST

/* A convex problem: no warning, "minimum", the exact smallest eigenvalue. */
START_TEST(convex_is_quiet) {
  run_ok(RIDGE);
  run_ok("let r = solve rid with {outer_steps = 3, inner_opt = lbfgs(), certificate = \"every\"}\n"
         "let ok = r.inner_certificate == \"minimum\"\n"
         "let ev = eigh(X' @ X + exp(lam) * eye(3)).values[0]");
  ck_assert_int_eq(err.calls, 0);
  double ok, ev;
  ck_assert_int_eq(blo_get_number(S, "ok", &ok), BLO_OK);
  ck_assert_int_eq(blo_get_number(S, "ev", &ev), BLO_OK);
  ck_assert_double_eq(ok, 1);
  ck_assert_double_eq_tol(field("r", "inner_min_eig"), ev, 1e-12 * ev);
  ck_assert_double_eq(field("r", "inner_saddles"), 0);
}
END_TEST

/* Starts that disagree are reported once per solve and counted per inner solve. */
START_TEST(starts_disagree_warns_once) {
  run_ok("problem mir {\n outer x = 2.0\n inner y = 1.0\n"
         " inner minimize -x * exp(-(y + 1)^2) - exp(-(y - 1)^2)\n outer minimize (x - 2)^2 + (y - 1)^2\n}\n"
         "let r = solve mir with {outer_steps = 3, inner_opt = newton(), inner_starts = 4, hypergrad = cg()}");
  ck_assert_int_eq(err.calls, 1);
  ck_assert_int_eq(count(err.buf, "warning: solve mir: the inner starts disagree: from the declared init the inner "
                                  "solve reached f = -1.04418, from perturbed start"), 1);
  ck_assert_double_eq(field("r", "inner_switches"), 4);   /* 3 outer steps and the final solve */
  /* at x = 2 the deep well (f = -2.019) against the shallow one (-1.044) */
  run_ok("x = 2.0\nlet r = solve mir with {outer_steps = 0, inner_opt = newton(), inner_starts = 4}");
  ck_assert(field("r", "f") < -2.019);
  ck_assert_int_eq(err.calls, 2);
  run_ok("let r = solve mir with {outer_steps = 0, inner_opt = newton()}");
  ck_assert_int_eq(err.calls, 2);
  ck_assert_double_eq(field("r", "inner_switches"), 0);
  ck_assert(field("r", "f") > -1.045);
}
END_TEST

/* A line search or trust region that finds no decrease is reported, once
 * per solve, in the result and on stderr.  f = |y - x| - (y - x) / 2 has its
 * minimum at the kink y = x, where the gradient jumps from -1.5 to 0.5 and
 * never vanishes: no step along it decreases f as its slope promises. */
START_TEST(solver_failure_is_reported) {
  run_ok("problem kink {\n outer x = 0.3\n inner y = 1.0\n inner minimize abs(y - x) - 0.5 * (y - x)\n"
         " outer minimize y^2\n}\n");
  const char *opts[3] = {"lbfgs()", "lbfgs(line_search = \"armijo\")", "newton()"};
  const char *msgs[3] = {"lbfgs(): the Wolfe line search found no step with sufficient decrease of f at inner step",
                         "lbfgs(): the Armijo line search found no step with sufficient decrease of f at inner step",
                         "newton(): the trust region collapsed"};
  const char *status[3] = {"line_search", "line_search", "trust_region"};
  for (int k = 0; k < 3; k++) {
    char src[300];
    snprintf(src, sizeof src,
             "x = 0.3\nlet r = solve kink with {outer_steps = 3, inner_opt = %s, inner_tol = 1e-8, inner_steps = 100,\n"
             "                          outer_opt = sgd(lr = 1e-3), hypergrad = fo()}\n"
             "let st = r.inner_status", opts[k]);
    int before = err.calls;
    run_ok(src);
    ck_assert_msg(err.calls == before + 1, "%s", err.buf);
    ck_assert_int_eq(count(err.buf, msgs[k]), 1);
    const char *st = NULL;
    ck_assert_int_eq(blo_get_string(S, "st", &st), BLO_OK);
    ck_assert_str_eq(st, status[k]);
    ck_assert_double_eq(field("r", "inner_failures"), 4);   /* 3 outer steps and the final solve */
    /* y stopped at the kink, x */
    double x = NAN, y = NAN;
    ck_assert_int_eq(blo_get_number(S, "x", &x), BLO_OK);
    ck_assert_int_eq(blo_get_number(S, "y", &y), BLO_OK);
    ck_assert_msg(fabs(y - x) < 1e-6, "%s: y = %.17g, x = %.17g", opts[k], y, x);
  }
}
END_TEST

/* After warm-up, lbfgs and newton solves allocate nothing: the same solve
 * again (from the same lam, so along the same path: a line search or trust
 * region that takes a new branch may grow the tensor pool once) with ten
 * times the inner steps allocates nothing. */
START_TEST(steady_state_no_allocation) {
  run_ok(RIDGE);
  const char *opts[2] = {"lbfgs()", "newton()"};
  for (int k = 0; k < 2; k++) {
    char srcs[3][220];
    for (int j = 0; j < 3; j++)
      snprintf(srcs[j], sizeof srcs[j],
               "lam = 0.5\nlet r = solve rid with {inner_steps = %d, outer_steps = 40, inner_opt = %s, "
               "certificate = \"off\"}",
               j < 2 ? 20 : 200, opts[k]);
    size_t counts[3];
    for (int j = 0; j < 3; j++) {
      counts[j] = allocs_of(S, srcs[j]);
    }
    /* (the second run still allocates the result's x and y while the first
     * run's record is alive) */
    ck_assert_msg(counts[2] == 0, "%s: 10x the inner steps after warm-up: %zu allocations", opts[k], counts[2]);
  }
}
END_TEST

/* the specs print with their defaults */
START_TEST(specs_print) {
  run_ok("let a = str(lbfgs())\nlet b = str(newton(cg_iters = 5))\nlet c = str(lbfgs(line_search = \"armijo\"))");
  const char *a = NULL;
  ck_assert_int_eq(blo_get_string(S, "a", &a), BLO_OK);
  ck_assert_str_eq(a, "{optimizer = \"lbfgs\", lr = 0.1, memory = 10, line_search = \"wolfe\"}");
  ck_assert_int_eq(blo_get_string(S, "b", &a), BLO_OK);
  ck_assert_str_eq(a, "{optimizer = \"newton\", lr = 0.1, cg_iters = 5, tol = 1e-10}");
  ck_assert_int_eq(blo_get_string(S, "c", &a), BLO_OK);
  ck_assert_str_eq(a, "{optimizer = \"lbfgs\", lr = 0.1, memory = 10, line_search = \"armijo\"}");
}
END_TEST

int main(void) {
  Suite *s = suite_create("inner");
  TCase *tc = tcase_create("inner");
  tcase_set_timeout(tc, 60);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, refusals_say_why_and_what_to_use);
  tcase_add_test(tc, saddle_warns_once_per_solve);
  tcase_add_test(tc, curvature_before_convergence);
  tcase_add_test(tc, convex_is_quiet);
  tcase_add_test(tc, starts_disagree_warns_once);
  tcase_add_test(tc, solver_failure_is_reported);
  tcase_add_test(tc, steady_state_no_allocation);
  tcase_add_test(tc, specs_print);
  suite_add_tcase(s, tc);
  return check_run(s, "test_inner", CK_NOFORK);
}
