/* host.c: a small program embedding blo.
 *
 * It hands the interpreter a data set from C arrays, registers a native
 * differentiable function (the Huber loss, with its forward and reverse
 * derivatives), declares a bilevel problem that uses it, solves it with a
 * progress callback, and reads the result back.
 *
 * The problem: ridge regression whose per-feature regularisation exp(lam) is
 * tuned so that the Huber loss on a validation set (with outliers) is small.
 *
 * Build against an installed libblo:
 *   cc host.c $(pkg-config --cflags --libs blo) -o host
 * `make check` builds and runs it from the source tree. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "blo.h"

enum { NTR = 40, NVA = 30, D = 3 };

/* Huber loss with threshold delta (the user data), elementwise. */
static double huber1(double r, double d) { return fabs(r) <= d ? 0.5 * r * r : d * (fabs(r) - 0.5 * d); }
static double huber1_d(double r, double d) { return fabs(r) <= d ? r : (r > 0 ? d : -d); }

static int huber(blo_state *S, void *ud, int nargs, const blo_array *args, blo_array *out) {
  double delta = *(const double *)ud;
  (void)nargs;
  int rc = blo_native_output(S, out, args[0].rank, args[0].shape);
  if (rc != BLO_OK) return rc;
  for (size_t i = 0; i < out->size; i++) out->data[i] = huber1(args[0].data[i], delta);
  return BLO_OK;
}

/* The Jacobian is diagonal, so forward and reverse are the same product. */
static int huber_deriv(blo_state *S, void *ud, const blo_array *x, const blo_array *y, const blo_array *in,
                       blo_array *out) {
  double delta = *(const double *)ud;
  (void)S; (void)y;
  for (size_t i = 0; i < out->size; i++) out->data[i] = huber1_d(x->data[i], delta) * in->data[i];
  return BLO_OK;
}

static void on_output(void *ud, const char *text, size_t len) {
  (void)ud;
  fwrite(text, 1, len, stdout);
}

static void on_error(void *ud, const char *formatted) {
  (void)ud;
  fputs(formatted, stderr);
}

static int on_progress(void *ud, const blo_progress *p) {
  int *calls = ud;
  if (p->done) return 0;   /* the final report, after the loop: nothing to draw */
  ++*calls;
  if (p->step == 1 || p->step % 20 == 0 || p->step == p->steps)
    printf("  step %3ld/%ld  F = %.6f  f = %.6f  |hypergrad| = %.3g\n", p->step, p->steps, p->F, p->f,
           p->hypergrad_norm);
  return 0;   /* nonzero would cancel the solve */
}

/* A deterministic data set: y = X w* + noise, with a few validation outliers. */
static void make_data(double *X, double *y, int n, int outliers, unsigned *seed) {
  static const double wstar[D] = {1.5, -2.0, 0.5};
  for (int i = 0; i < n; i++) {
    double t = 0;
    for (int j = 0; j < D; j++) {
      *seed = *seed * 1103515245u + 12345u;
      X[i * D + j] = ((double)(*seed >> 8 & 0xffff) / 65536.0) * 2 - 1;
      t += X[i * D + j] * wstar[j];
    }
    *seed = *seed * 1103515245u + 12345u;
    y[i] = t + 0.1 * (((double)(*seed >> 8 & 0xffff) / 65536.0) - 0.5);
    if (i < outliers) y[i] += 8;
  }
}

#define TRY(call) do { if ((call) != BLO_OK) { fprintf(stderr, "host: %s failed: %s\n", #call, \
                                                        blo_last_error(S)->message); goto fail; } } while (0)

int main(void) {
  blo_config cfg;
  blo_config_defaults(&cfg);
  cfg.write_fn = on_output;
  cfg.error_fn = on_error;
  cfg.allow_files = 0;              /* this host's scripts need no files */
  cfg.mem_cap = 64u << 20;
  blo_state *S = blo_open(&cfg);
  if (!S) { fputs("host: out of memory\n", stderr); return 1; }

  /* data in: copied into the state */
  double Xtr[NTR * D], ytr[NTR], Xva[NVA * D], yva[NVA];
  unsigned seed = 7;
  make_data(Xtr, ytr, NTR, 0, &seed);
  make_data(Xva, yva, NVA, 3, &seed);
  size_t str[2] = {NTR, D}, sva[2] = {NVA, D}, ntr = NTR, nva = NVA;
  TRY(blo_set_tensor(S, "Xtr", 2, str, Xtr));
  TRY(blo_set_tensor(S, "ytr", 1, &ntr, ytr));
  TRY(blo_set_tensor(S, "Xva", 2, sva, Xva));
  TRY(blo_set_tensor(S, "yva", 1, &nva, yva));

  /* a native differentiable function */
  static const double delta = 1.0;
  blo_native h = {"huber", huber, huber_deriv, huber_deriv, (void *)&delta, 1, 1,
                  "huber(r)", "Huber loss of each residual (delta = 1), from the host"};
  TRY(blo_register(S, &h));

  const char *src =
    "problem tune {\n"
    "  outer lam : [3] = zeros(3)\n"
    "  inner w : [3] = zeros(3)\n"
    "  inner minimize mean((Xtr @ w - ytr)^2) + sum(exp(lam) * w^2)\n"
    "  outer minimize mean(huber(Xva @ w - yva))\n"
    "}\n"
    "fn val_loss(w) = mean(huber(Xva @ w - yva))\n";
  TRY(blo_eval_string(S, "tune.blo", src, strlen(src)));

  /* a script function called from C, at the initial point */
  double w0[D] = {0, 0, 0};
  blo_array arg = {1, {D}, D, w0};
  TRY(blo_call(S, "val_loss", 1, &arg, "F0"));
  double F0;
  TRY(blo_get_number(S, "F0", &F0));

  /* solve, with a progress callback */
  int calls = 0;
  printf("solving (validation loss at w = 0: %.6f)\n", F0);
  TRY(blo_solve(S, "tune", "outer_steps = 60, inner_steps = 100, hypergrad = cg(iters = 20), "
                           "outer_opt = adam(lr = 0.05), quiet = true",
                "res", on_progress, &calls));

  /* results out: fields of the result record, and the variables themselves */
  double F, lam[D], w[D];
  TRY(blo_get_number(S, "res.F", &F));
  TRY(blo_get_tensor(S, "lam", lam, D));
  TRY(blo_get_tensor(S, "w", w, D));
  printf("F = %.6f after %d progress reports\n", F, calls);
  printf("lam = [%.4f, %.4f, %.4f]\n", lam[0], lam[1], lam[2]);
  printf("w   = [%.4f, %.4f, %.4f]\n", w[0], w[1], w[2]);

  /* a borrowed view: no copy, valid until the next evaluation */
  const double *view;
  size_t n;
  TRY(blo_view_tensor(S, "w", &view, &n));
  int ok = n == D && isfinite(F) && F < F0 && calls == 60;
  for (int j = 0; j < D; j++) ok = ok && view[j] == w[j];
  blo_close(S);
  printf("embed: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
fail:
  blo_close(S);
  return 1;
}
