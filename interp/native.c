/* native.c: native functions registered by the host (blo_register), and the
 * per-state extension record behind S->native_fns that the embedding API
 * needs (returned strings, the progress callback, the figure hook).
 *
 * Builtins are called as fn(S, args, out) with no user-data pointer, so each
 * native slot gets its own trampoline that knows its index: a call finds its
 * native through the index into this state's table, whatever name the value
 * is bound to and however it is called (by name, through a variable, from
 * call_value).  No global state: the trampolines are constant code. */
#include "interp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct nat_entry {
  builtin_def def;             /* what scripts see: fn is the slot's trampoline */
  blo_native user;             /* the host's definition (name, sig, doc owned here) */
  ad_custom op;                /* derivative callbacks for the autodiff layer */
  blo_state *S;
} nat_entry;

typedef struct host_ext {
  nat_entry *nat[BLO_MAX_NATIVES];
  int nnat;
  blo_tensor **frame_out;      /* result slot of the running native, NULL outside one */
  char nerr[512];              /* message set by blo_native_error */
  int has_nerr;
  char *text;                  /* the last string returned by the API (malloc'd) */
  blo_progress_fn progress;
  void *progress_ud;
  blo_figure_fn figure;
  void *figure_ud;
} host_ext;

static host_ext *ext(blo_state *S) { return (host_ext *)S->native_fns; }

int ext_open(blo_state *S) {
  host_ext *x = S->cfg.realloc_fn(S->cfg.alloc_ud, NULL, 0, sizeof *x);
  if (!x) return -1;
  memset(x, 0, sizeof *x);
  S->native_fns = x;
  return 0;
}

static void entry_free(blo_state *S, nat_entry *e) {
  free((char *)e->user.name);
  free((char *)e->user.sig);
  free((char *)e->user.doc);
  S->cfg.realloc_fn(S->cfg.alloc_ud, e, sizeof *e, 0);
}

/* After the globals and the tape are gone: nothing refers to the entries. */
void ext_close(blo_state *S) {
  host_ext *x = ext(S);
  if (!x) return;
  for (int i = 0; i < x->nnat; i++) entry_free(S, x->nat[i]);
  free(x->text);
  S->cfg.realloc_fn(S->cfg.alloc_ud, x, sizeof *x, 0);
  S->native_fns = NULL;
}

/* Takes the text of sb as the string the API returns now (the previous one
 * is freed).  NULL if sb ran out of memory. */
const char *ext_keep_text(blo_state *S, strbuf *sb) {
  host_ext *x = ext(S);
  free(x->text);
  x->text = NULL;
  if (sb->oom || !sb->s) {
    int oom = sb->oom;   /* sb_free clears it */
    sb_free(sb);
    return oom ? NULL : "";
  }
  x->text = sb->s;
  memset(sb, 0, sizeof *sb);
  return x->text;
}

void blo_set_progress(blo_state *S, blo_progress_fn fn, void *ud) {
  if (!S) return;
  ext(S)->progress = fn;
  ext(S)->progress_ud = ud;
}

void blo_set_figure_hook(blo_state *S, blo_figure_fn fn, void *ud) {
  if (!S) return;
  ext(S)->figure = fn;
  ext(S)->figure_ud = ud;
}

void interp_figure_written(blo_state *S, const char *path, const char *format) {
  host_ext *x = ext(S);
  if (x->figure) x->figure(x->figure_ud, path, format);
}

void ext_swap_progress(blo_state *S, blo_progress_fn *fn, void **ud) {
  host_ext *x = ext(S);
  blo_progress_fn f = x->progress;
  void *u = x->progress_ud;
  x->progress = *fn;
  x->progress_ud = *ud;
  *fn = f;
  *ud = u;
}

int interp_solve_progress(blo_state *S, const ast_node *at, const blo_progress *p) {
  if (S->interrupt && *S->interrupt) {
    *S->interrupt = 0;
    interp_error(S, at, "interrupted at outer step %ld", p ? p->step : 0L);
    S->err.status = BLO_INTERRUPTED;
    return EV_ERR;
  }
  host_ext *x = ext(S);
  if (x->progress && p && x->progress(x->progress_ud, p)) {
    interp_error(S, at, "solve cancelled by the host at outer step %ld", p->step);
    S->err.status = BLO_INTERRUPTED;
    return EV_ERR;
  }
  return EV_OK;
}

void interp_solve_done(blo_state *S, const blo_progress *p) {
  host_ext *x = ext(S);
  if (x->progress) (void)x->progress(x->progress_ud, p);
}

/* ---- calling a native ---- */

static blo_array array_of(const blo_tensor *t) {
  blo_array a;
  memset(&a, 0, sizeof a);
  a.rank = t->rank;
  for (int i = 0; i < TN_MAX_RANK; i++) a.shape[i] = i < t->rank ? t->shape[i] : 1;
  a.size = t->size;
  a.data = t->data;
  return a;
}

static int is_live(blo_state *S, value v) {
  return v.kind == V_TENSOR && (v.tan || (S->tape && v.gen == S->tape_gen && v.node >= 0));
}

int blo_native_output(blo_state *S, blo_array *out, int rank, const size_t *shape) {
  if (!S || !out) return BLO_ERROR_ARGUMENT;
  host_ext *x = ext(S);
  if (!x->frame_out)
    return blo_native_error(S, "blo_native_output called outside a native function"), BLO_ERROR_ARGUMENT;
  if (rank < 0 || rank > TN_MAX_RANK || (rank > 0 && !shape))
    return blo_native_error(S, "blo_native_output: bad rank %d", rank), BLO_ERROR_ARGUMENT;
  blo_tensor *t = tn_zeros(&S->tn, rank, shape);
  if (!t) {
    blo_native_error(S, "%s", S->tn.err);
    return BLO_ERROR_MEMORY;
  }
  tn_release(&S->tn, *x->frame_out);
  *x->frame_out = t;
  *out = array_of(t);
  return BLO_OK;
}

int blo_native_error(blo_state *S, const char *fmt, ...) {
  if (!S) return BLO_ERROR_ARGUMENT;
  host_ext *x = ext(S);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(x->nerr, sizeof x->nerr, fmt ? fmt : "error", ap);
  va_end(ap);
  x->has_nerr = 1;
  return BLO_ERROR_RUNTIME;
}

/* Runs the host function on tensors; *y gets its result (NULL: nothing). */
static int run_user(blo_state *S, nat_entry *e, const ast_node *at, int n, blo_tensor **ts, blo_tensor **y) {
  host_ext *x = ext(S);
  blo_array args[16];
  for (int i = 0; i < n; i++) args[i] = array_of(ts[i]);
  blo_array out;
  memset(&out, 0, sizeof out);
  blo_tensor **saved = x->frame_out;
  *y = NULL;
  x->frame_out = y;
  x->has_nerr = 0;
  int rc = e->user.fn(S, e->user.ud, n, args, &out);
  x->frame_out = saved;
  if (rc == BLO_OK) return EV_OK;
  tn_release(&S->tn, *y);
  *y = NULL;
  if (x->has_nerr) return interp_error(S, at, "%s(): %s", e->def.name, x->nerr);
  if (rc == BLO_ERROR_MEMORY) return interp_error(S, at, "%s(): out of memory", e->def.name);
  return interp_error(S, at, "%s() failed (status %d)", e->def.name, rc);
}

static int native_call(blo_state *S, int idx, callargs *a, value *out) {
  host_ext *x = ext(S);
  const ast_node *at = a->call;
  if (idx >= x->nnat) return interp_error(S, at, "native function %d is not registered", idx);
  nat_entry *e = x->nat[idx];
  const char *name = e->def.name;
  int diff = e->user.jvp || e->user.vjp;
  if (a->nnamed) return interp_error(S, at, "%s() takes no named arguments ('%s' given)", name, a->names[0]);
  int n = a->npos;
  if (n > 16) return interp_error(S, at, "%s(): at most 16 arguments", name);
  for (int i = 0; i < n; i++) {
    if (!v_is_numeric(a->pos[i])) {
      char d[64];
      v_describe(a->pos[i], d, sizeof d);
      return interp_error(S, at, "%s(): argument %d is a %s; natives take numbers and tensors", name, i + 1, d);
    }
    if (!diff && is_live(S, a->pos[i]))
      return interp_error(S, at, "%s() is not differentiable: it was registered without derivatives", name);
  }
  blo_tensor *ts[16];
  ad_val xa = {NULL, NULL, -1};
  int k = 0, rc = EV_OK;
  if (diff) {
    if (v_to_ad(S, at, a->pos[0], &xa)) return EV_ERR;
    ts[k++] = tn_retain(xa.v);
  }
  for (; k < n; k++) {
    ts[k] = v_to_tensor(S, a->pos[k]);
    if (!ts[k]) { rc = interp_tn_error(S, at); break; }
  }
  blo_tensor *y = NULL;
  if (rc == EV_OK) rc = run_user(S, e, at, n, ts, &y);
  for (int i = 0; i < k; i++) tn_release(&S->tn, ts[i]);
  if (rc == EV_OK) {
    if (!y) {
      *out = v_nil();
      if (xa.t || xa.node >= 0)
        rc = interp_error(S, at, "%s() returned nothing inside a differentiated expression", name);
    } else if (diff) {
      ad_val r;
      if (ad_custom_op(&S->tn, S->tape, &e->op, xa, y, &r)) rc = interp_tn_error(S, at);
      else *out = v_from_ad(S, r);
    } else {
      *out = v_from_ad(S, ad_const(y));
    }
  }
  ad_val_release(&S->tn, &xa);
  return rc;
}

/* One trampoline per slot: the index is what identifies the native. */
#define T(i) static int tramp_##i(blo_state *S, callargs *a, value *out) { return native_call(S, i, a, out); }
T(0) T(1) T(2) T(3) T(4) T(5) T(6) T(7) T(8) T(9) T(10) T(11) T(12) T(13) T(14) T(15)
T(16) T(17) T(18) T(19) T(20) T(21) T(22) T(23) T(24) T(25) T(26) T(27) T(28) T(29) T(30) T(31)
T(32) T(33) T(34) T(35) T(36) T(37) T(38) T(39) T(40) T(41) T(42) T(43) T(44) T(45) T(46) T(47)
T(48) T(49) T(50) T(51) T(52) T(53) T(54) T(55) T(56) T(57) T(58) T(59) T(60) T(61) T(62) T(63)
#undef T
static const builtin_fn tramps[] = {
  tramp_0, tramp_1, tramp_2, tramp_3, tramp_4, tramp_5, tramp_6, tramp_7, tramp_8, tramp_9,
  tramp_10, tramp_11, tramp_12, tramp_13, tramp_14, tramp_15, tramp_16, tramp_17, tramp_18, tramp_19,
  tramp_20, tramp_21, tramp_22, tramp_23, tramp_24, tramp_25, tramp_26, tramp_27, tramp_28, tramp_29,
  tramp_30, tramp_31, tramp_32, tramp_33, tramp_34, tramp_35, tramp_36, tramp_37, tramp_38, tramp_39,
  tramp_40, tramp_41, tramp_42, tramp_43, tramp_44, tramp_45, tramp_46, tramp_47, tramp_48, tramp_49,
  tramp_50, tramp_51, tramp_52, tramp_53, tramp_54, tramp_55, tramp_56, tramp_57, tramp_58, tramp_59,
  tramp_60, tramp_61, tramp_62, tramp_63,
};
_Static_assert(sizeof tramps / sizeof tramps[0] == BLO_MAX_NATIVES, "one trampoline per native slot");

/* ---- derivative callbacks, seen by the autodiff layer ---- */

static int run_deriv(tn_ctx *ctx, void *ud, int fwd, const blo_tensor *xt, const blo_tensor *yt,
                     const blo_tensor *in, blo_tensor *outt) {
  nat_entry *e = ud;
  blo_state *S = e->S;
  host_ext *x = ext(S);
  blo_native_deriv_fn f = fwd ? e->user.jvp : e->user.vjp;
  blo_array ax = array_of(xt), ay = array_of(yt), ain = array_of(in), aout = array_of(outt);
  blo_tensor **saved = x->frame_out;
  x->frame_out = NULL;           /* the output is preallocated: blo_native_output is refused */
  x->has_nerr = 0;
  int rc = f(S, e->user.ud, &ax, &ay, &ain, &aout);
  x->frame_out = saved;
  if (rc == BLO_OK) return 0;
  if (x->has_nerr) return tn_error(ctx, "%s() %s derivative: %s", e->def.name, fwd ? "forward" : "reverse", x->nerr);
  return tn_error(ctx, "%s() %s derivative failed (status %d)", e->def.name, fwd ? "forward" : "reverse", rc);
}

static int cb_jvp(tn_ctx *ctx, void *ud, const blo_tensor *x, const blo_tensor *y, const blo_tensor *in,
                  blo_tensor *out) {
  return run_deriv(ctx, ud, 1, x, y, in, out);
}

static int cb_vjp(tn_ctx *ctx, void *ud, const blo_tensor *x, const blo_tensor *y, const blo_tensor *in,
                  blo_tensor *out) {
  return run_deriv(ctx, ud, 0, x, y, in, out);
}

/* ---- registration ---- */

static int api_fail(blo_state *S, int st, const char *fmt, const char *name) {
  interp_error(S, NULL, fmt, name ? name : "");
  S->err.status = st;
  return st;
}

static int valid_name(const char *s) { return ast_is_name(s); }

static char *dup_or_null(const char *s, int *oom) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *oom = 1;
  return d;
}

int blo_register(blo_state *S, const blo_native *def) {
  if (!S) return BLO_ERROR_ARGUMENT;
  S->err.status = BLO_OK;
  if (!def) return api_fail(S, BLO_ERROR_ARGUMENT, "blo_register: no definition%s", "");
  if (!valid_name(def->name)) return api_fail(S, BLO_ERROR_ARGUMENT, "blo_register: '%s' is not a valid name", def->name);
  if (!def->fn) return api_fail(S, BLO_ERROR_ARGUMENT, "blo_register: native '%s' has no function", def->name);
  int mn = def->min_args, mx = def->max_args;
  if (def->jvp || def->vjp) {
    if ((mn != 0 || mx != 0) && (mn > 1 || (mx >= 0 && mx < 1)))
      return api_fail(S, BLO_ERROR_ARGUMENT, "blo_register: differentiable native '%s' must take exactly 1 argument",
                      def->name);
    mn = mx = 1;
  } else if (mn < 0 || mn > 16 || mx > 16 || (mx >= 0 && mx < mn)) {
    return api_fail(S, BLO_ERROR_ARGUMENT, "blo_register: bad argument counts for '%s' (0..16, max -1 = any)",
                    def->name);
  }
  host_ext *x = ext(S);
  nat_entry *e = NULL;
  for (int i = 0; i < x->nnat; i++)
    if (strcmp(x->nat[i]->user.name, def->name) == 0) e = x->nat[i];
  int fresh = !e;
  if (fresh) {
    if (x->nnat >= BLO_MAX_NATIVES)
      return api_fail(S, BLO_ERROR_ARGUMENT, "blo_register: no room for '%s' (at most 64 natives per state)",
                      def->name);
    e = S->cfg.realloc_fn(S->cfg.alloc_ud, NULL, 0, sizeof *e);
    if (!e) return api_fail(S, BLO_ERROR_MEMORY, "blo_register: out of memory for '%s'", def->name);
    memset(e, 0, sizeof *e);
  }
  int oom = 0;
  char gen[160];
  snprintf(gen, sizeof gen, "%s(%s)", def->name, mn == mx && mn == 1 ? "x" : mn == mx && mn == 0 ? "" : "...");
  char *name = fresh ? dup_or_null(def->name, &oom) : (char *)e->user.name;
  char *sig = dup_or_null(def->sig ? def->sig : gen, &oom);
  char *doc = dup_or_null(def->doc ? def->doc : "native function", &oom);
  if (oom) {
    free(sig);
    free(doc);
    if (fresh) { free(name); S->cfg.realloc_fn(S->cfg.alloc_ud, e, sizeof *e, 0); }
    return api_fail(S, BLO_ERROR_MEMORY, "blo_register: out of memory for '%s'", def->name);
  }
  if (!fresh) {
    free((char *)e->user.sig);
    free((char *)e->user.doc);
  }
  e->user = *def;
  e->user.name = name;
  e->user.sig = sig;
  e->user.doc = doc;
  e->user.min_args = mn;
  e->user.max_args = mx;
  e->S = S;
  int idx = fresh ? x->nnat : -1;
  if (fresh) {
    e->def.fn = tramps[idx];
    x->nat[x->nnat++] = e;
  }
  e->def.name = name;
  e->def.min_args = mn;
  e->def.max_args = mx;
  e->def.sig = sig;
  e->def.doc = doc;
  e->def.special = 0;
  e->op.name = name;
  e->op.jvp = def->jvp ? cb_jvp : NULL;
  e->op.vjp = def->vjp ? cb_vjp : NULL;
  e->op.ud = e;
  value v = v_nil();
  v.kind = V_BUILTIN;
  v.u.fn = &e->def;
  if (env_set_global(S, name, v)) return api_fail(S, BLO_ERROR_MEMORY, "blo_register: out of memory for '%s'", name);
  return BLO_OK;
}
