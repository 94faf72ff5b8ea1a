/* test_bilevel.c: unit tests of the bilevel runtime (runtime/bilevel*.c,
 * optim.c, hg_*.c), driven through the public API with small scripts, plus
 * a look inside the state (interp.h) for the steady-state allocation check.
 * The numerical reference values are the closed forms of docs/METHODS.md §5. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>

#include "check_run.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/blo.h"
#include "../../runtime/bilevel.h"
#include "alloc_count.h"

static blo_state *S;
static char dir[256];

static void setup(void) {
  blo_config cfg;
  blo_config_defaults(&cfg);
  S = blo_open(&cfg);
  ck_assert_ptr_nonnull(S);
  strcpy(dir, "/tmp/blo_test_bilevel_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void) {
  blo_close(S);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

static int run(const char *src) { return blo_eval_string(S, "test", src, strlen(src)); }

static void run_ok(const char *src) {
  int rc = run(src);
  ck_assert_msg(rc == BLO_OK, "script failed: %s", blo_last_error(S)->message);
}

static double num(const char *name) {
  double d = NAN;
  ck_assert_msg(blo_get_number(S, name, &d) == BLO_OK, "no number '%s'", name);
  return d;
}

static void expect_error(const char *src, const char *msg) {
  int rc = run(src);
  ck_assert_int_ne(rc, BLO_OK);
  ck_assert_msg(strstr(blo_last_error(S)->message, msg) != NULL, "expected '%s', got '%s'", msg,
                blo_last_error(S)->message);
}

/* P1, 1-D: w*(lam) = 3 / (5 + lam), F = 1/2 (w - 0.5)^2. */
static const char *P1 =
  "let xt = [1, 2]\n"
  "problem p1 {\n"
  "  outer lam = 0.0\n"
  "  inner w = 0.0\n"
  "  inner minimize 0.5 * sum((xt * w - 1)^2) + 0.5 * lam * w^2\n"
  "  outer minimize 0.5 * (w - 0.5)^2\n"
  "}\n";

START_TEST(p1_closed_form_every_method) {
  run_ok(P1);
  const char *methods[] = {"cg()", "exact()", "unroll()", "forward()", "neumann(60)"};
  for (int i = 0; i < 5; i++) {
    char src[256];
    snprintf(src, sizeof src, "lam = 0\nlet g0 = hypergrad(p1, %s, inner_steps = 200)\n"
             "lam = 2\nlet g2 = hypergrad(p1, %s, inner_steps = 200)\n", methods[i], methods[i]);
    run_ok(src);
    ck_assert_msg(fabs(num("g0") / -0.012 - 1) < 1e-8, "%s at 0: %.17g", methods[i], num("g0"));
    ck_assert_msg(fabs(num("g2") / 0.0043731778425656 - 1) < 1e-8, "%s at 2: %.17g", methods[i], num("g2"));
  }
  /* hypergrad() leaves the variables as they were */
  ck_assert_double_eq(num("lam"), 2);
  ck_assert_double_eq(num("w"), 0);
}
END_TEST

START_TEST(p1_solve_reaches_optimum) {
  run_ok(P1);
  run_ok("let r = solve p1 with {inner_steps = 100, outer_steps = 200, outer_opt = sgd(lr = 50)}");
  ck_assert(fabs(num("lam") - 1) < 1e-8);
  ck_assert(fabs(num("w") - 0.5) < 1e-8);
  double F, steps;
  ck_assert_int_eq(blo_get_field_number(S, "r", "F", &F), BLO_OK);
  ck_assert_int_eq(blo_get_field_number(S, "r", "steps", &steps), BLO_OK);
  ck_assert(F < 1e-16);
  ck_assert_double_eq(steps, 200);
  /* check_hypergrad: finite differences of the cold-start solution map */
  run_ok("lam = 0.3\nlet e = check_hypergrad(p1, cg(), inner_steps = 200)");
  ck_assert(num("e") < 1e-8);
}
END_TEST

static int read_file(const char *path, char *buf, size_t n) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t k = fread(buf, 1, n - 1, f);
  buf[k] = 0;
  fclose(f);
  return 0;
}

/* Drops the 8th column (wall time) of every line. */
static void drop_time(char *s) {
  char *out = s;
  int col = 0;
  for (char *p = s; *p; p++) {
    if (*p == '\n') { col = 0; *out++ = *p; continue; }
    if (*p == ',') col++;
    if (col != 7) *out++ = *p;
  }
  *out = 0;
}

static const char *MB =
  "seed(1)\n"
  "let X = randn(40, 3)\n"
  "let y = X @ [1, -2, 0.5] + 0.1 * randn(40)\n"
  "problem mb {\n"
  "  every outer let task = randn(3)\n"
  "  every inner let idx = randint(0, 40, 8)\n"
  "  outer lam = [0.5, 0.5, 0.5]\n"
  "  inner w = zeros(3)\n"
  "  inner minimize 0.5 * mean((X[idx] @ w - y[idx])^2) + 0.5 * sum(lam * (w - task)^2)\n"
  "  outer minimize 0.5 * mean((X @ w - y)^2)\n"
  "}\n";

START_TEST(trace_same_seed_same_trace) {
  run_ok(MB);
  static char a[1 << 16], b[1 << 16], c[1 << 16];
  const char *seeds[3] = {"7", "7", "8"};
  char *bufs[3] = {a, b, c};
  for (int k = 0; k < 3; k++) {
    char src[512];
    snprintf(src, sizeof src, "lam = [0.5, 0.5, 0.5]\nw = zeros(3)\n"
             "let r = solve mb with {inner_steps = 20, outer_steps = 15, hypergrad = unroll(), seed = %s,"
             " outer_opt = adam(lr = 0.05), trace = \"%s/t%d.csv\"}\n", seeds[k], dir, k);
    run_ok(src);
    char path[300];
    snprintf(path, sizeof path, "%s/t%d.csv", dir, k);
    ck_assert_int_eq(read_file(path, bufs[k], sizeof a), 0);
  }
  ck_assert(strncmp(a, "step,F,f,inner_grad_norm,hypergrad_norm,x_dist2,y_dist2,time,lam[0],lam[1],lam[2]\n",
                    strlen("step,F,f,inner_grad_norm,hypergrad_norm,x_dist2,y_dist2,time,lam[0]")) == 0);
  int lines = 0;
  for (char *p = a; *p; p++) lines += *p == '\n';
  ck_assert_int_eq(lines, 16);   /* header + one row per outer step */
  drop_time(a);
  drop_time(b);
  drop_time(c);
  ck_assert_str_eq(a, b);
  ck_assert_str_ne(a, c);
}
END_TEST

START_TEST(trace_refused_without_files) {
  blo_close(S);
  blo_config cfg;
  blo_config_defaults(&cfg);
  cfg.allow_files = 0;
  S = blo_open(&cfg);
  run_ok(P1);
  char src[300];
  snprintf(src, sizeof src, "let r = solve p1 with {trace = \"%s/t.csv\"}", dir);
  expect_error(src, "trace files are disabled");
}
END_TEST

START_TEST(interrupt_stops_the_solve) {
  volatile int flag = 1;
  blo_set_interrupt_flag(S, &flag);
  run_ok(P1);   /* the flag is polled by loops and solves only */
  flag = 1;
  int rc = run("let r = solve p1 with {outer_steps = 100}");
  ck_assert_int_eq(rc, BLO_INTERRUPTED);
  ck_assert_str_eq(blo_last_error(S)->message, "interrupted at outer step 1");
  ck_assert_int_eq(flag, 0);
  ck_assert_double_eq(num("lam"), 0);
  ck_assert(isfinite(num("w")));
  blo_set_interrupt_flag(S, NULL);
}
END_TEST

START_TEST(nan_names_step_and_keeps_finite_values) {
  run_ok("problem bad {\n outer a = 1.0\n inner w = 1.0\n inner minimize (w + a)^2 + 0 * log(w)\n"
         " outer minimize w^2\n}\n");
  expect_error("let r = solve bad with {outer_steps = 5, inner_steps = 10, inner_opt = sgd(lr = 0.1)}",
               "solve bad: inner objective is NaN at outer step 1, inner step 4");
  ck_assert_double_eq(num("a"), 1);
  ck_assert(isfinite(num("w")));
  /* a diverging inner loop: Inf, and an exploding outer step */
  run_ok(P1);
  expect_error("let r = solve p1 with {inner_opt = sgd(lr = 10)}", "solve p1: inner objective is NaN at outer step 1");
  /* a NaN in the outer gradient (0 * d sqrt(lam) / d lam at lam = 0) */
  run_ok("problem p3 {\n outer lam = 0.0\n inner w = 0.0\n inner minimize (w - 1)^2\n"
         " outer minimize 0.5 * (w - 0.5)^2 + 0 * sqrt(lam)\n}\n");
  expect_error("let r = solve p3 with {inner_steps = 20}", "solve p3: outer gradient is NaN at outer step 1, inner step 20");
  ck_assert_double_eq(num("lam"), 0);
}
END_TEST

/* An outer step that overshoots makes the next inner loop overflow: the
 * error names that outer step and its size, and the variables keep the last
 * finite pair.  F = -a^3 with w independent of the outer objective: the
 * hypergradient is -3 a^2, so sgd(lr = 1) gives a = 1, 4, 52, 8164, and
 * exp(8164) overflows at the first inner evaluation of outer step 4. */
START_TEST(outer_overshoot_is_blamed) {
  run_ok("problem ov {\n outer a = 1.0\n inner w = 0.0\n inner minimize (w - exp(a))^2\n"
         " outer minimize -a^3\n}\n");
  expect_error("let r = solve ov with {outer_opt = sgd(lr = 1), quiet = true}",
               "solve ov: outer step 3 made the inner objective non-finite (Inf at outer step 4, inner step 0): "
               "it moved x by 8.11e+03 (step size 1, hypergradient norm 8.11e+03); x and y keep their values "
               "before that step");
  ck_assert_double_eq(num("a"), 52);
  /* w answers a = 52: 100 steps of lr 0.1 on (w - e^52)^2 from 0 */
  ck_assert_double_eq_tol(num("w") / (exp(52) * (1 - pow(0.8, 100))), 1, 1e-12);
  /* the same overflow met in the final inner solve names the last step */
  run_ok("a = 1.0\nw = 0.0");
  expect_error("let r = solve ov with {outer_opt = sgd(lr = 1), outer_steps = 3, quiet = true}",
               "solve ov: outer step 3 made the inner objective non-finite (Inf in the final inner solve, inner step 0)");
  ck_assert_double_eq(num("a"), 52);
}
END_TEST

/* Warnings reach the host through the error callback, one line each. */
static char warned[8192];
static int nwarned;
static void on_error(void *ud, const char *s) {
  (void)ud;
  nwarned++;
  strncat(warned, s, sizeof warned - strlen(warned) - 1);
}

static void open_capturing(void) {
  blo_close(S);
  blo_config cfg;
  blo_config_defaults(&cfg);
  cfg.error_fn = on_error;
  S = blo_open(&cfg);
  ck_assert_ptr_nonnull(S);
  warned[0] = 0;
  nwarned = 0;
}

static int count(const char *hay, const char *needle) {
  int k = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) k++;
  return k;
}

/* A cold solve re-reads the declared init: a value the script assigned to
 * an inner variable is overwritten, and a warning says so, once. */
START_TEST(cold_start_overwrite_warns) {
  open_capturing();
  run_ok(P1);
  run_ok("let r = solve p1 with {outer_steps = 2}");
  ck_assert_int_eq(nwarned, 0);            /* y as declared: nothing to say */
  run_ok("let r = solve p1 with {outer_steps = 2}");
  ck_assert_int_eq(nwarned, 0);            /* y as the last solve left it */
  run_ok("w = -1\nlet r = solve p1 with {outer_steps = 2}");
  ck_assert_int_eq(nwarned, 1);
  ck_assert_str_eq(warned, "test:2:9: warning: solve p1: start = \"cold\" re-initialises the inner variables from "
                           "their declared init, so the value assigned to 'w' is not used (start from it with start = "
                           "\"warm\", or declare the init from a variable, inner w = w0, and set w0)\n");
  ck_assert_int_eq(blo_last_error(S)->status, BLO_OK);
  /* set back to its declared value: nothing is lost */
  run_ok("w = 0\nlet r = solve p1 with {outer_steps = 2}");
  ck_assert_int_eq(nwarned, 1);
  /* a warm start uses the assigned value: no warning */
  run_ok("w = -1\nlet r = solve p1 with {outer_steps = 2, start = \"warm\"}");
  ck_assert_int_eq(nwarned, 1);
  /* the idiom: the init names a variable the script sets */
  run_ok("let w0 = 0.25\nproblem q {\n outer lam = 0.0\n inner w = w0\n"
         " inner minimize 0.5 * sum((xt * w - 1)^2) + 0.5 * lam * w^2\n outer minimize 0.5 * (w - 0.5)^2\n}\n"
         "w0 = -1\nlet r = solve q with {outer_steps = 1, inner_steps = 0}\n");
  ck_assert_int_eq(nwarned, 1);
  ck_assert_double_eq(num("w"), -1);
}
END_TEST

/* A method's breakdown is reported once per solve (and counted in the
 * result) and once per hypergrad() call. */
START_TEST(breakdown_warns_once_per_solve) {
  open_capturing();
  run_ok("problem sg {\n outer x = 1.0\n inner y : [2] = zeros(2)\n inner minimize 0.5 * y[0]^2 - x * y[0]\n"
         " outer minimize (y[0] - 2)^2 + (y[1] - 1)^2 + 0.1 * x^2\n}\n"
         "let r = solve sg with {outer_steps = 5, hypergrad = cg()}\n");
  ck_assert_int_eq(nwarned, 1);
  ck_assert_int_eq(count(warned, "warning: solve sg: outer step 1: cg(): the inner Hessian is singular"), 1);
  double fails;
  ck_assert_int_eq(blo_get_field_number(S, "r", "hypergrad_failures", &fails), BLO_OK);
  ck_assert_double_eq(fails, 5);
  run_ok("let h = hypergrad(sg, cg())\nlet h = hypergrad(sg, cg())");
  ck_assert_int_eq(nwarned, 3);
  ck_assert_int_eq(blo_last_error(S)->status, BLO_OK);
}
END_TEST

START_TEST(bad_options) {
  run_ok(P1);
  expect_error("let r = solve p1 with {inner_step = 3}", "unknown solve option 'inner_step' (did you mean 'inner_steps'?)");
  expect_error("let r = solve p1 with {inner_steps = \"3\"}",
               "solve option 'inner_steps' must be a non-negative integer, got \"3\"");
  expect_error("let r = solve p1 with {outer_steps = -1}", "solve option 'outer_steps' must be a non-negative integer, got -1");
  expect_error("let r = solve p1 with {hypergrad = cgg(iters = 5)}", "'cgg' (did you mean 'cg'?)");
  expect_error("let r = solve p1 with {hypergrad = \"unrol\"}",
               "solve option 'hypergrad': unknown hypergradient method 'unrol' (did you mean 'unroll'?)");
  expect_error("let r = solve p1 with {hypergrad = cg(iter = 5)}", "cg() has no option 'iter' (did you mean 'iters'?)");
  expect_error("let r = solve p1 with {hypergrad = sgd()}", "solve option 'hypergrad' must be a hypergradient method");
  expect_error("let r = solve p1 with {inner_opt = cg()}", "solve option 'inner_opt' must be an optimizer");
  expect_error("let r = solve p1 with {inner_opt = sgd(lr = 0)}", "sgd(): 'lr' must be > 0, got 0");
  expect_error("let r = solve p1 with {start = \"hot\"}", "solve option 'start' must be \"cold\" or \"warm\", got \"hot\"");
  expect_error("let r = solve p1 with {start = 1}", "solve option 'start' must be \"cold\" or \"warm\", got 1");
  expect_error("let r = solve p1 with {trace = [1, 2]}", "solve option 'trace' must be a file name (string), got tensor [2]");
  expect_error("let r = solve p1 with {hypergrad = cg(iters = \"5\")}", "cg(): 'iters' must be an integer, got \"5\"");
  expect_error("let r = solve p1 with {inner_opt = \"sgdd\"}", "unknown optimizer 'sgdd'");
  expect_error("let r = solve p1 with {inner_opt = sgd(lr = \"big\")}", "'lr' must be a number, got \"big\"");
  expect_error("let h = hypergrad(\"p1\")", "argument 1 must be a problem, got \"p1\" (pass the problem itself");
  expect_error("let r = solve p1 with {start = \"cold\", proximal = 0.1}", "is a warm-start option");
  expect_error("let r = solve p1 with {inner_opt = adam(), hypergrad = unroll()}",
               "unroll() cannot differentiate through the adam inner optimizer");
  expect_error("let r = solve p1 with {inner_opt = adam(), hypergrad = forward()}",
               "forward() cannot differentiate through the adam inner optimizer");
  expect_error("let r = solve p1 with 3", "the options must be a record");
  expect_error("let r = solve p2", "unknown problem 'p2' (did you mean 'p1'?)");
  expect_error("let r = solve xt", "'xt' is not a problem (it is a tensor [2])");
  expect_error("let h = hypergrad(3)", "hypergrad: argument 1 must be a problem, got 3");
  expect_error("let h = hypergrad(p1, cg(), outer_steps = 3)", "unknown hypergrad option 'outer_steps'");
  expect_error("let h = unroll(1, 2)", "unroll() takes at most 1 positional argument");
  /* a variable rebound to something else is reported at solve time */
  run_ok("w = [1, 2]");
  expect_error("let r = solve p1", "inner variable 'w' must hold a number, but it holds tensor [2]");
}
END_TEST

START_TEST(bad_declarations) {
  expect_error("problem q {\n outer a = 1.0\n inner w : [5] = zeros(4)\n}", "inner w: declared shape [5], init has shape [4]");
  expect_error("problem q {\n outer a = 1.0\n inner w = 0\n inner minimize w^2\n}", "problem q has no outer objective");
  expect_error("problem q {\n outer a = 1.0\n inner minimize a\n outer minimize a\n}", "problem q has no inner variable");
  expect_error("problem q {\n outer a = 2.0 in [0, 1]\n inner w = 0\n}", "outer a: the initial value is outside its box");
  expect_error("problem q {\n outer a = 0.5 in [0, 1, 2]\n inner w = 0\n}", "outer a: a box must be [lo, hi]");
  expect_error("problem q {\n outer a = 0.5\n inner w = 0 in [0, 1, 2]\n inner minimize w^2\n outer minimize a\n}",
               "inner w: a constraint on an inner variable is 'in [lo, hi]', 'in simplex' or 'in ball(r)'");
  expect_error("problem q {\n outer a = 0.5\n inner w = zeros(2) in [0, a - 1]\n inner minimize sum(w^2)\n outer minimize a\n}",
               "inner w: empty box: the lower bound 0 is above the upper bound -0.5 (element 0)");
  expect_error("problem q {\n outer a = 0.5\n inner a = 0\n}", "variable 'a' declared twice in problem q");
  expect_error("problem q {\n outer a = 0.5\n inner w = zeros(2)\n inner minimize w\n outer minimize a\n}",
               "the inner objective must be a number, got tensor [2]");
}
END_TEST

START_TEST(scalar_broadcast_and_shapes) {
  run_ok("problem q {\n outer a : [3] = -1.0\n inner w : [2, 3] = 0\n"
         " inner minimize sum((w - a)^2)\n outer minimize sum((w - 1)^2)\n}\n"
         "let r = solve q with {outer_steps = 100, inner_steps = 200, outer_opt = sgd(lr = 0.1)}\n"
         "let s = shape(w)\nlet s0 = s[0]\nlet s1 = s[1]\nlet a1 = a[1]\n");
  ck_assert_double_eq(num("s0"), 2);
  ck_assert_double_eq(num("s1"), 3);
  ck_assert(fabs(num("a1") - 1) < 1e-6);
}
END_TEST

START_TEST(several_problems_and_redeclaration) {
  run_ok(P1);
  run_ok("problem p1b {\n outer mu = 0.0\n inner v = 0.0\n inner minimize (v - mu)^2\n outer minimize (v - 3)^2\n}\n"
         "let r1 = solve p1b with {outer_steps = 200, outer_opt = sgd(lr = 0.2)}\n"
         "let r2 = solve p1 with {outer_steps = 200, outer_opt = sgd(lr = 50)}\n");
  ck_assert(fabs(num("mu") - 3) < 1e-6);
  ck_assert(fabs(num("lam") - 1) < 1e-6);
  /* redeclaring resets the variables; the old problem value is freed */
  run_ok(P1);
  ck_assert_double_eq(num("lam"), 0);
  run_ok("let pp = p1\nlet ok = pp == p1");
  ck_assert_double_eq(num("ok"), 1);
}
END_TEST

/* A steady-state solve makes no system allocation for tensor data or the
 * tape per outer step: once the pool is warm, 40 outer steps allocate nothing. */
START_TEST(steady_state_no_allocation) {
  run_ok(MB);
  run_ok("let r = solve mb with {inner_steps = 10, outer_steps = 5, hypergrad = unroll(), seed = 1}");
  size_t counts[2];
  const char *srcs[2] = {
    "let r = solve mb with {inner_steps = 10, outer_steps = 5, hypergrad = unroll(), seed = 1}",
    "let r = solve mb with {inner_steps = 10, outer_steps = 40, hypergrad = unroll(), seed = 1}",
  };
  for (int k = 0; k < 2; k++) {
    counts[k] = allocs_of(S, srcs[k]);
  }
  /* (the first measured solve may still settle the pool's size classes) */
  ck_assert_msg(counts[1] <= counts[0], "5 steps: %zu allocations, 40 steps: %zu", counts[0], counts[1]);
  ck_assert_msg(counts[1] == 0, "40 steps after warm-up: %zu allocations", counts[1]);
}
END_TEST

/* forward() and penalty() record f at every inner step (its gradient and
 * the method's products are sweeps of that recording, minibatch draws
 * included): still no system allocation per outer step once warm. */
START_TEST(steady_state_no_allocation_held_steps) {
  run_ok(MB);
  const char *methods[2] = {"forward()", "penalty()"};
  for (int m = 0; m < 2; m++) {
    char srcs[3][200];
    for (int k = 0; k < 3; k++)
      snprintf(srcs[k], sizeof srcs[k],
               "let r = solve mb with {inner_steps = 10, outer_steps = %d, hypergrad = %s, seed = 1}",
               k < 2 ? 5 : 40, methods[m]);
    size_t counts[3];
    for (int k = 0; k < 3; k++) {
      counts[k] = allocs_of(S, srcs[k]);
    }
    ck_assert_msg(counts[2] == 0, "%s: 40 steps after warm-up: %zu allocations", methods[m], counts[2]);
  }
}
END_TEST

/* The same for cg (tangent-only Hessian-vector products) and a gradient
 * written with a transposed product (X' @ r: a BLAS flag, no copy). */
START_TEST(steady_state_no_allocation_cg_transposed) {
  run_ok("seed(2)\n"
         "let X = randn(30, 4)\n"
         "let y = X @ [1, -1, 0.5, 2] + 0.1 * randn(30)\n"
         "problem rt {\n"
         "  outer lam = [0.1, 0.1, 0.1, 0.1]\n"
         "  inner w = zeros(4)\n"
         "  inner minimize 0.5 * sum(w * (X' @ (X @ w - 2 * y))) / 30 + 0.5 * sum(exp(lam) * w^2)\n"
         "  outer minimize 0.5 * mean((X @ w - y)^2)\n"
         "}\n");
  const char *srcs[3] = {
    "let r = solve rt with {inner_steps = 20, outer_steps = 5, hypergrad = cg(iters = 5)}",
    "let r = solve rt with {inner_steps = 20, outer_steps = 5, hypergrad = cg(iters = 5)}",
    "let r = solve rt with {inner_steps = 20, outer_steps = 40, hypergrad = cg(iters = 5)}",
  };
  size_t counts[3];
  for (int k = 0; k < 3; k++) {
    counts[k] = allocs_of(S, srcs[k]);
  }
  ck_assert_msg(counts[2] == 0, "40 steps after warm-up: %zu allocations", counts[2]);
}
END_TEST

/* A ridge problem whose products are counted below. */
static const char *HR =
  "seed(3)\n"
  "let X = randn(60, 40)\n"
  "let t = randn(60)\n"
  "problem hr {\n"
  "  outer lam = zeros(40)\n"
  "  inner w = zeros(40)\n"
  "  inner minimize 0.5 * mean((X @ w - t)^2) + 0.5 * sum(exp(lam) * w^2)\n"
  "  outer minimize 0.5 * mean((X @ w - t)^2)\n"
  "}\n";

/* cg, neumann: every product is taken at one point, so f is recorded once
 * and each Hessian-vector product replays it: for this ridge objective it
 * costs exactly 2 matrix products (X v, then X' times its adjoint), not the
 * 3 of a fresh evaluation (which also recomputes X w).  Counted as the
 * difference between 10 and 5 products of each method. */
START_TEST(held_point_hvp_costs_two_products) {
  run_ok(HR);
  const char *srcs[2][2] = {
    {"let h = hypergrad(hr, cg(iters = 5, tol = 0), inner_steps = 30)",
     "let h = hypergrad(hr, cg(iters = 10, tol = 0), inner_steps = 30)"},
    {"let h = hypergrad(hr, neumann(K = 5, alpha = 0.1), inner_steps = 30)",
     "let h = hypergrad(hr, neumann(K = 10, alpha = 0.1), inner_steps = 30)"},
  };
  for (int m = 0; m < 2; m++) {
    size_t c[2];
    for (int k = 0; k < 2; k++) {
      size_t before = S->tn.n_products;
      run_ok(srcs[m][k]);
      c[k] = S->tn.n_products - before;
    }
    ck_assert_msg(c[1] - c[0] == 10, "%s: 5 more products cost %zu matrix products, expected 10",
                  m ? "neumann" : "cg", c[1] - c[0]);
  }
}
END_TEST

/* hvp(E, w, v) of E = |X w - t|^2 + sum(exp(a) w^2) costs 3 matrix products
 * (X w, X v, X' u); the mixed hvp(E, w, v, a) only 2, its sweep skipping X' u,
 * which reaches w alone.  Values against the closed forms. */
START_TEST(mixed_hvp_skips_the_other_sweep) {
  run_ok("let X = [[1, 2], [-1, 0.5], [3, -2]]\n"
         "let t = [1, -1, 2]\n"
         "let w = [0.3, -0.7]\n"
         "let a = [0.1, -0.2]\n"
         "let v = [1.5, -0.5]\n");
  size_t before = S->tn.n_products;
  run_ok("let h = hvp(sum((X @ w - t)^2) + sum(exp(a) * w^2), w, v)");
  ck_assert_uint_eq(S->tn.n_products - before, 3);
  before = S->tn.n_products;
  run_ok("let hm = hvp(sum((X @ w - t)^2) + sum(exp(a) * w^2), w, v, a)");
  ck_assert_uint_eq(S->tn.n_products - before, 2);
  run_ok("let eh = norm(h - (2 * X' @ (X @ v) + 2 * exp(a) * v))\n"
         "let em = norm(hm - 2 * exp(a) * w * v)\n");
  ck_assert_double_le(num("eh"), 1e-14);
  ck_assert_double_le(num("em"), 1e-15);
}
END_TEST

/* unroll: the recording made at the first inner step follows y (its leaves
 * move) instead of f being evaluated again.  Each forward step then costs 2
 * matrix products (X w, X' u) and each backward step 2 (X c, X' u'), where
 * a fresh evaluation also recomputed X w_t: 10 more unrolled steps cost
 * exactly 40 products, not 50. */
START_TEST(unroll_step_costs_four_products) {
  run_ok(HR);
  size_t c[2];
  for (int k = 0; k < 2; k++) {
    size_t before = S->tn.n_products;
    run_ok(k ? "let h = hypergrad(hr, unroll(), inner_steps = 20)" : "let h = hypergrad(hr, unroll(), inner_steps = 10)");
    c[k] = S->tn.n_products - before;
  }
  ck_assert_msg(c[1] - c[0] == 40, "10 more unrolled steps cost %zu matrix products, expected 40", c[1] - c[0]);
}
END_TEST

/* The moved recording gives what evaluating f afresh gives.  The same
 * logistic problem is written twice; in the second, 0 * sum(sign(w)) adds a
 * constant computed from w, which binds each recording to its point, so
 * every gradient and product there comes from a fresh evaluation.  Every
 * method's hypergradient must agree to rounding. */
START_TEST(moved_recording_matches_fresh_evaluation) {
  run_ok("seed(5)\n"
         "let X = randn(50, 6)\n"
         "let s = sign(randn(50))\n"
         "let Xv = randn(30, 6)\n"
         "let sv = sign(randn(30))\n"
         "problem lm {\n"
         "  outer lam = fill(6, -1.0)\n"
         "  inner w = zeros(6)\n"
         "  inner minimize mean(softplus(-s * (X @ w))) + 0.5 * sum(exp(lam) * w^2)\n"
         "  outer minimize mean(softplus(-sv * (Xv @ w)))\n"
         "}\n"
         "problem lb {\n"
         "  outer lam = fill(6, -1.0)\n"
         "  inner w = zeros(6)\n"
         "  inner minimize mean(softplus(-s * (X @ w))) + 0.5 * sum(exp(lam) * w^2) + 0 * sum(sign(w))\n"
         "  outer minimize mean(softplus(-sv * (Xv @ w)))\n"
         "}\n");
  const char *methods[] = {"unroll()", "unroll(K = 5)", "forward()", "cg(iters = 8, tol = 0)",
                           "neumann(K = 8, alpha = 0.5)", "exact()"};
  for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
    char src[400];
    snprintf(src, sizeof src,
             "let hm = hypergrad(lm, %s, inner_steps = 25)\n"
             "let hb = hypergrad(lb, %s, inner_steps = 25)\n"
             "let e = norm(hm - hb) / norm(hb)\n",
             methods[m], methods[m]);
    run_ok(src);
    ck_assert_msg(num("e") <= 1e-13, "%s: moved vs fresh: relative difference %.3g", methods[m], num("e"));
  }
  /* penalty() is a solver (hypergrad refuses it): compare three outer steps */
  const char *opts = "{start = \"warm\", inner_steps = 25, outer_steps = 3, hypergrad = penalty(), quiet = true}";
  char src[600];
  snprintf(src, sizeof src,
           "lam = fill(6, -1.0)\nw = zeros(6)\nlet rm = solve lm with %s\nlet lm_lam = lam\n"
           "lam = fill(6, -1.0)\nw = zeros(6)\nlet rb = solve lb with %s\n"
           "let e = norm(lm_lam - lam) / norm(lam + 1)\n", opts, opts);
  run_ok(src);
  ck_assert_msg(num("e") <= 1e-12, "penalty: moved vs fresh: relative difference %.3g", num("e"));
}
END_TEST

/* A branch on the inner variable binds the recording to its point: the
 * inner loop must take the branch of each y_t.  With lr = 0.5, from w = 0
 * the steep branch (gradient 20 (w - 2)) jumps to w = 20, and the gentle
 * one (gradient 2 (w - 2)) lands on 2 exactly; replaying the first
 * recording's branch would diverge (20, -160, ...). */
START_TEST(branch_on_the_inner_variable_binds) {
  /* the condition is a differentiable value (no comparison, which would
   * bind the tape by itself): the read of its value as data must bind it */
  run_ok("fn g(w) {\n"
         "  if max(w - 1, 0) { return (w - 2)^2 }\n"
         "  return 10 * (w - 2)^2\n"
         "}\n"
         "problem br {\n"
         "  outer a = 0.0\n"
         "  inner w = 0.0\n"
         "  inner minimize g(w) + a * w\n"
         "  outer minimize (w - 1)^2\n"
         "}\n"
         "let r = solve br with {start = \"cold\", inner_steps = 10, inner_opt = sgd(lr = 0.5), outer_steps = 1,\n"
         "                       outer_opt = sgd(lr = 1e-12), hypergrad = unroll(), quiet = true}\n");
  ck_assert_double_eq_tol(num("w"), 2.0, 1e-9);
}
END_TEST

/* Random draws inside f bind the recording: each inner step must draw anew.
 * With lr = 1 the step lands on the step's draw, so 1 and 5 inner steps end
 * apart; a replayed recording would reuse its first draw, and both solves
 * (same seed) would end on the same w. */
START_TEST(random_draw_in_f_binds) {
  run_ok("problem rn {\n"
         "  outer a = 0.0\n"
         "  inner w = zeros(3)\n"
         "  inner minimize 0.5 * sum((w - randn(3))^2) + a * sum(w)\n"
         "  outer minimize sum(w^2)\n"
         "}\n"
         "let r1 = solve rn with {start = \"cold\", inner_steps = 1, inner_opt = sgd(lr = 1), outer_steps = 1,\n"
         "                        outer_opt = sgd(lr = 1e-12), hypergrad = fo(), seed = 1, quiet = true}\n"
         "let w1 = w\n"
         "let r5 = solve rn with {start = \"cold\", inner_steps = 5, inner_opt = sgd(lr = 1), outer_steps = 1,\n"
         "                        outer_opt = sgd(lr = 1e-12), hypergrad = fo(), seed = 1, quiet = true}\n"
         "let d = norm(w - w1)\n");
  ck_assert_double_gt(num("d"), 0.1);
}
END_TEST

START_TEST(builtin_registry) {
  const char *names[] = {"adam", "cg", "check_hypergrad", "exact", "fo", "forward", "hypergrad", "lbfgs", "momentum",
                         "neumann", "newton", "penalty", "sgd", "t1t2", "ufo", "unroll"};
  size_t n = sizeof names / sizeof names[0];
  for (size_t i = 0; i < n; i++) {
    const builtin_def *b = bilevel_builtin_find(names[i]);
    ck_assert_ptr_nonnull(b);
    ck_assert_str_eq(b->name, names[i]);
    ck_assert_ptr_eq(bilevel_builtin_at(i), b);
  }
  ck_assert_ptr_null(bilevel_builtin_at(n));
  ck_assert_ptr_null(bilevel_builtin_find("cgg"));
  /* each method in the table has its constructor */
  for (size_t i = 0; hg_at(i); i++) ck_assert_ptr_nonnull(bilevel_builtin_find(hg_at(i)->name));
  /* specs are records a script can read */
  run_ok("let s = cg(iters = 7)\nlet k = s.iters\nlet t = neumann(3).K\nlet lr = adam(lr = 0.02).lr");
  ck_assert_double_eq(num("k"), 7);
  ck_assert_double_eq(num("t"), 3);
  ck_assert_double_eq(num("lr"), 0.02);
}
END_TEST

START_TEST(optimizers_match_formulas) {
  bl_optspec sp;
  bl_opt o;
  double x[2] = {1, -1}, g[2] = {0.5, 2};
  opt_default(&sp, OPT_MOMENTUM);
  sp.lr = 0.1;
  sp.beta = 0.5;
  ck_assert_int_eq(opt_init(&o, &sp, 2), 0);
  opt_step(&o, x, g);   /* v = g; x -= 0.1 g */
  opt_step(&o, x, g);   /* v = 0.5 g + g = 1.5 g; x -= 0.15 g */
  ck_assert(fabs(x[0] - (1 - 0.25 * 0.5)) < 1e-15);
  ck_assert(fabs(x[1] - (-1 - 0.25 * 2)) < 1e-15);
  opt_free(&o);
  opt_default(&sp, OPT_ADAM);
  sp.lr = 0.01;
  ck_assert_int_eq(opt_init(&o, &sp, 2), 0);
  x[0] = 1;
  x[1] = -1;
  opt_step(&o, x, g);   /* first bias-corrected adam step moves by lr * g / (|g| + eps) */
  ck_assert(fabs(x[0] - (1 - 0.01 * 0.5 / (0.5 + 1e-8))) < 1e-15);
  ck_assert(fabs(x[1] - (-1 - 0.01 * 2 / (2 + 1e-8))) < 1e-15);
  opt_free(&o);
  opt_default(&sp, OPT_SGD);
  sp.lr = 1;
  sp.decay = 1;
  ck_assert_int_eq(opt_init(&o, &sp, 1), 0);
  ck_assert_double_eq(opt_lr(&o), 1);
  opt_step(&o, x, g);
  ck_assert_double_eq(opt_lr(&o), 0.5);
  opt_free(&o);
}
END_TEST

int main(void) {
  Suite *s = suite_create("bilevel");
  TCase *tc = tcase_create("bilevel");
  tcase_set_timeout(tc, 120);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, p1_closed_form_every_method);
  tcase_add_test(tc, p1_solve_reaches_optimum);
  tcase_add_test(tc, trace_same_seed_same_trace);
  tcase_add_test(tc, trace_refused_without_files);
  tcase_add_test(tc, interrupt_stops_the_solve);
  tcase_add_test(tc, nan_names_step_and_keeps_finite_values);
  tcase_add_test(tc, outer_overshoot_is_blamed);
  tcase_add_test(tc, cold_start_overwrite_warns);
  tcase_add_test(tc, breakdown_warns_once_per_solve);
  tcase_add_test(tc, bad_options);
  tcase_add_test(tc, bad_declarations);
  tcase_add_test(tc, scalar_broadcast_and_shapes);
  tcase_add_test(tc, several_problems_and_redeclaration);
  tcase_add_test(tc, steady_state_no_allocation);
  tcase_add_test(tc, steady_state_no_allocation_cg_transposed);
  tcase_add_test(tc, held_point_hvp_costs_two_products);
  tcase_add_test(tc, steady_state_no_allocation_held_steps);
  tcase_add_test(tc, mixed_hvp_skips_the_other_sweep);
  tcase_add_test(tc, unroll_step_costs_four_products);
  tcase_add_test(tc, moved_recording_matches_fresh_evaluation);
  tcase_add_test(tc, branch_on_the_inner_variable_binds);
  tcase_add_test(tc, random_draw_in_f_binds);
  tcase_add_test(tc, builtin_registry);
  tcase_add_test(tc, optimizers_match_formulas);
  suite_add_tcase(s, tc);
  return check_run(s, "test_bilevel", CK_NOFORK);
}
