/* test_alloc.c: allocation-failure injection.  Each scenario (a syntax
 * error, a loop, a solve with cg, a plot, a host driving the API) first runs
 * cleanly to count its allocations; then, for every k from 1 to that count,
 * it runs again in a fresh state with exactly the k-th allocation failing.
 * Every run must end in BLO_ERROR_MEMORY (or an error whose message says
 * memory ran out), never crash or leak, and the same state must then run a
 * check script and get its result right.
 *
 * Two allocators fail in turn:
 *  - the host allocator, blo_config.realloc_fn (tensors, script objects);
 *  - the system malloc/calloc/realloc, which the parser, the scanner, the
 *    bookkeeping tables, libc and cairo use.  This program defines malloc,
 *    calloc, realloc and free itself: the dynamic linker binds every library's
 *    calls to the executable's definitions (libblo is a shared library, so
 *    `ld --wrap` would not reach it), and they forward to the next definition
 *    (libc's, or ASan's under the sanitizers, which keeps its leak checks).
 *    Only calls from the test's own thread are counted and failed. */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include "config.h"
#include <dlfcn.h>
#include <execinfo.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blo.h"
#include "capture_sink.h"
#ifdef HAVE_CAIRO
#include <cairo.h>
#endif

/* ---- the system allocator, interposed ---- */

typedef struct {
  int armed;          /* count (and maybe fail) the test thread's allocations */
  long count;         /* allocations seen while armed */
  long fail_at;       /* 1-based allocation to fail, 0: none */
  long failures;      /* allocations failed */
  pthread_t thread;
} injector;

/* The allocator below runs before the sanitizer runtime has set itself up
 * (the dynamic linker allocates while ASan starts): it must not be
 * instrumented. */
#if defined(__GNUC__)
#define RAW __attribute__((no_sanitize_address, noinline))
#else
#define RAW
#endif

static injector sys_inj;
static void *(*next_malloc)(size_t);
static void *(*next_calloc)(size_t, size_t);
static void *(*next_realloc)(void *, size_t);
static void (*next_free)(void *);

/* dlsym may allocate (calloc) before the real functions are known: those
 * few early requests are served from a static buffer and never freed. */
static _Alignas(max_align_t) char boot_buf[1 << 16];
static size_t boot_used;
static int resolving;

RAW static void *boot_alloc(size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (boot_used + n > sizeof boot_buf) return NULL;
  void *p = boot_buf + boot_used;
  boot_used += n;
  return p;
}

RAW static int is_boot(const void *p) {
  return (const char *)p >= boot_buf && (const char *)p < boot_buf + sizeof boot_buf;
}

RAW static void resolve_next(void) {
  if (next_free || resolving) return;
  resolving = 1;
  next_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
  next_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
  next_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
  next_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
  resolving = 0;
}

/* Pointers allocated while armed and not yet freed: what a run leaked. */
enum { LIVE_CAP = 1 << 18 };
static void *live_set[LIVE_CAP];
static long live_n;
#define TOMB ((void *)1)

RAW static size_t live_hash(const void *p) { return ((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull >> 46; }

RAW static void live_add(void *p) {
  size_t j = live_hash(p) & (LIVE_CAP - 1);
  while (live_set[j] && live_set[j] != TOMB) j = (j + 1) & (LIVE_CAP - 1);
  live_set[j] = p;
  live_n++;
}

RAW static void live_remove(void *p) {
  if (!live_n) return;
  size_t j = live_hash(p) & (LIVE_CAP - 1);
  while (live_set[j]) {
    if (live_set[j] == p) { live_set[j] = TOMB; live_n--; return; }
    j = (j + 1) & (LIVE_CAP - 1);
  }
}

static void live_reset(void) {
  memset(live_set, 0, sizeof live_set);
  live_n = 0;
}

/* BLO_ALLOC_TRACE=1 prints the stack of each failed allocation (with
 * BLO_ALLOC_ONLY=scenario:host|system:k to rerun one case). */
static int trace_failures;

RAW static void trace_failure(const char *which, long k) {
  if (!trace_failures) return;
  void *frames[32];
  int n = backtrace(frames, 32);
  char head[96];
  int len = snprintf(head, sizeof head, "-- %s allocation %ld fails here:\n", which, k);
  if (write(2, head, (size_t)len) < 0) return;
  backtrace_symbols_fd(frames, n, 2);
}

/* Two libraries under plot() crash when their own allocations fail, flaws
 * outside blo: fontconfig (under cairo's text: FcConfigSubstituteWithPat
 * hands a NULL string list to FcStrListDone, or a NULL string to
 * FcStrCmpIgnoreCase) and cairo's rasteriser inside cairo_stroke and
 * cairo_fill.  Allocations made with those on the stack (directly or through
 * libc's strdup and the like) are neither counted nor failed; cairo's other
 * allocations (surfaces, contexts, paths, fonts, glyphs, PNG output) are. */
RAW static int fragile(void *pc) {
  Dl_info di;
  if (!dladdr(pc, &di)) return 0;
  if (di.dli_fname && strstr(di.dli_fname, "libfontconfig")) return 1;
  return di.dli_sname && (strncmp(di.dli_sname, "cairo_stroke", 12) == 0 || strncmp(di.dli_sname, "cairo_fill", 10) == 0);
}

RAW static int exempt(void *caller) {
  /* blo's own calls (most of them) need no look at the stack */
  Dl_info di;
  if (dladdr(caller, &di) && di.dli_fname && strstr(di.dli_fname, "libblo")) return 0;
  if (fragile(caller)) return 1;
  void *frames[24];
  int n = backtrace(frames, 24);
  for (int i = 1; i < n; i++)
    if (fragile(frames[i])) return 1;
  return 0;
}

/* 1 if this allocation (made by code at caller) is to fail; counts it. */
RAW static int inject(void *caller) {
  if (!sys_inj.armed || !pthread_equal(pthread_self(), sys_inj.thread)) return 0;
  if (exempt(caller)) return 0;
  sys_inj.count++;
  if (sys_inj.count == sys_inj.fail_at) {
    sys_inj.failures++;
    trace_failure("system", sys_inj.count);
    return 1;
  }
  return 0;
}

RAW static int tracking(void) { return sys_inj.armed && pthread_equal(pthread_self(), sys_inj.thread); }

RAW void *malloc(size_t n) {
  resolve_next();
  if (!next_malloc) return boot_alloc(n);
  if (inject(__builtin_return_address(0))) return NULL;
  void *p = next_malloc(n);
  if (p && tracking()) live_add(p);
  return p;
}

RAW void *calloc(size_t n, size_t m) {
  resolve_next();
  if (!next_calloc) {
    void *p = (m && n > (size_t)-1 / m) ? NULL : boot_alloc(n * m);
    if (p) memset(p, 0, n * m);
    return p;
  }
  if (inject(__builtin_return_address(0))) return NULL;
  void *p = next_calloc(n, m);
  if (p && tracking()) live_add(p);
  return p;
}

RAW void *realloc(void *old, size_t n) {
  resolve_next();
  if (old && is_boot(old)) {
    void *p = malloc(n);
    size_t avail = (size_t)(boot_buf + sizeof boot_buf - (char *)old);
    if (p) memcpy(p, old, n < avail ? n : avail);
    return p;
  }
  if (!next_realloc) return boot_alloc(n);
  if (n > 0 && inject(__builtin_return_address(0))) return NULL;
  void *p = next_realloc(old, n);
  if (tracking()) {
    if (old && (p || n == 0)) live_remove(old);
    if (p) live_add(p);
  }
  return p;
}

RAW void free(void *p) {
  if (!p || is_boot(p)) return;
  resolve_next();
  /* the set belongs to the test's thread (OpenBLAS has others) */
  if (pthread_equal(pthread_self(), sys_inj.thread)) live_remove(p);
  next_free(p);
}

static void sys_arm(long fail_at) {
  sys_inj.count = 0;
  sys_inj.failures = 0;
  sys_inj.fail_at = fail_at;
  sys_inj.thread = pthread_self();
  live_reset();
  sys_inj.armed = 1;
}

static void sys_disarm(void) { sys_inj.armed = 0; }

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#ifdef UNDER_ASAN
/* LeakSanitizer ignores what the dynamic linker allocates by looking at the
 * caller of malloc, which is now the malloc above: the dependency list that
 * loading libgcc_s (for backtrace) leaves would be reported as a leak. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:_dl_map_object_deps\n"; }
#endif

/* 1 when the system allocator really is the one defined above: under some
 * sanitizer runtimes the interposition does not take. */
static int sys_interposed(void) {
  void *(*volatile m)(size_t) = malloc;   /* a call the compiler cannot elide */
  void (*volatile f)(void *) = free;
  sys_arm(0);
  void *p = m(24);
  long seen = sys_inj.count;
  sys_disarm();
  f(p);
  return seen == 1;
}

/* ---- the host allocator ---- */

typedef struct { injector inj; long long live; } host_alloc;

static void *host_realloc(void *ud, void *p, size_t old, size_t n) {
  host_alloc *h = ud;
  (void)old;
  if (n == 0) {
    if (p) h->live--;
    free(p);
    return NULL;
  }
  if (h->inj.armed) {
    h->inj.count++;
    if (h->inj.count == h->inj.fail_at) {
      h->inj.failures++;
      trace_failure("host", h->inj.count);
      return NULL;
    }
  }
  void *q = realloc(p, n);
  if (q && !p) h->live++;
  return q;
}

/* ---- output capture ---- */

static sink out_sink, err_sink;

/* ---- scenarios ---- */

static int eval(blo_state *S, const char *src) { return blo_eval_string(S, "s.blo", src, strlen(src)); }

static char scratch[256];   /* a directory for the plot */

static int sc_parse_error(blo_state *S) {
  return eval(S,
              "let a = 1\n"
              "fn f(x) = x + \n"
              "for i in 0..3 {\n"
              "  let b = [1, 2, a\n"
              "}\n"
              "print a + $\n");
}

static int sc_loop(blo_state *S) {
  return eval(S,
              "fn sq(v) = v * v\n"
              "let s = 0\n"
              "for i in 0..5 { s = s + sq(i) }\n"
              "let l = [1, \"two\", {a = 3}]\n"
              "for e in l { print e }\n"
              "let t = [1, 2, 3]\n"
              "for x in t { s = s + x }\n"
              "print s, \"text\" + \"s\"\n");
}

static const char *solve_src =
  "let xs = [1, 2]\n"
  "problem p {\n"
  "  outer lam = 1.0\n"
  "  inner w : [2] = zeros(2)\n"
  "  inner minimize 0.5 * sum((w - xs)^2) + 0.5 * lam * sum(w^2)\n"
  "  outer minimize 0.5 * sum((w - [0.5, 0.5])^2)\n"
  "}\n";

static int sc_solve(blo_state *S) {
  int rc = eval(S, solve_src);
  if (rc) return rc;
  return eval(S,
              "let r = solve p with {outer_steps = 2, inner_steps = 5, hypergrad = cg(iters = 3),\n"
              "                      outer_opt = sgd(lr = 0.1)}\n"
              "print r.steps, lam\n");
}

static int sc_plot(blo_state *S) {
  char src[512];
  snprintf(src, sizeof src,
           "plot(\"%s/p.png\", x = [0, 1, 2], y = [[1, 4, 9], [2, 3, 1]], labels = [\"a\", \"b\"],\n"
           "     title = \"t\", xlabel = \"x\", width = 120, height = 100)\n"
           "print \"plotted\"\n",
           scratch);
  return eval(S, src);
}

static int sc_host(blo_state *S) {
  double d[3] = {1, 2, 3};
  size_t shape[1] = {3};
  int rc = blo_set_tensor(S, "v", 1, shape, d);
  if (!rc) rc = blo_set_string(S, "label", "host");
  if (!rc) rc = eval(S, "fn norm2(x) = sum(x * x)\n");
  blo_array a = {1, {3}, 3, d};
  if (!rc) rc = blo_call(S, "norm2", 1, &a, "n2");
  if (!rc) rc = eval(S, solve_src);
  if (!rc) rc = blo_solve(S, "p", "outer_steps = 2, inner_steps = 4,\n hypergrad = cg(iters = 2)", "res", NULL, NULL);
  double F;
  if (!rc) rc = blo_get_number(S, "res.F", &F);
  if (!rc) {
    char line[64];
    snprintf(line, sizeof line, "%.6g\n", F);
    sink_write(&out_sink, line, strlen(line));
  }
  return rc;
}

static int sc_autodiff(blo_state *S) {
  return eval(S,
              "let x = [1, 2, 3]\n"
              "fn f(v) = sum(exp(v) * v) + norm(v)^2\n"
              "let g = grad(f(x), x)\n"
              "let h = hvp(f(x), x, [1, 0, 0])\n"
              "let r = {g = g, s = format(\"%.3f\", g[0]), l = [h, \"x\"]}\n"
              "let m = reshape(x, 3, 1) @ reshape(x, 1, 3)\n"
              "print r.s, sum(m), m[1, :], x[0:2], h[0] > 0\n");
}

/* record variables: a solve over records (the meta-learning init, a box),
 * grad/jvp/hvp of a record shared with another name (the copy path) */
static int sc_records(blo_state *S) {
  return eval(S,
              "let xs = [1, 2]\n"
              "problem pr {\n"
              "  outer th = {w = [0.1, 0.2], s = {b = 0.5}} in [-1, {w = 2, s = {b = 1}}]\n"
              "  inner p = th\n"
              "  inner minimize 0.5 * sum((p.w - xs)^2) + 0.5 * th.s.b * sum(p.w^2) + p.s.b^2\n"
              "  outer minimize 0.5 * sum((p.w - [0.5, 0.5])^2) + p.s.b^2\n"
              "}\n"
              "let r = solve pr with {outer_steps = 2, inner_steps = 3, hypergrad = unroll()}\n"
              "let q = th\n"
              "let g = grad(sum(th.w^2) * th.s.b, [th, xs])\n"
              "let j = jvp({u = th.w * 2}, th, {w = [1, 0], s = {b = 1}})\n"
              "let h = hvp(sum(th.w^3), th, {w = [1, 0], s = {b = 1}})\n"
              "print r.x.w, g[0].s.b, j.u, h.w, dot(q, q)\n");
}

static int sc_repl(blo_state *S) {
  const char *lines[] = {"let a = [1, 2]\n", "fn k(z) = z * 2\n", "k(a) + 1\n", "{u = a, w = \"s\"}\n"};
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
    if (!blo_input_complete(lines[i], strlen(lines[i]))) return -2;   /* never wrong */
    const char *echo = NULL;
    int rc = blo_eval_repl(S, "<repl>", lines[i], strlen(lines[i]), &echo);
    if (rc) return rc;
    if (echo) {
      sink_write(&out_sink, echo, strlen(echo));
      sink_write(&out_sink, "\n", 1);
    }
  }
  /* out of memory, it answers "complete": the host evaluates and gets the error */
  (void)blo_input_complete("let q = [1,\n", 12);
  /* each returned string lasts until the next call on the state */
  const char *d = blo_describe(S, "a");
  if (!d) return BLO_ERROR_MEMORY;
  sink_write(&out_sink, d, strlen(d));
  const char *f = blo_format(S, "a");
  if (!f) return BLO_ERROR_MEMORY;
  sink_write(&out_sink, f, strlen(f));
  return BLO_OK;
}

/* 1 + (1 + (1 + ...)) 80 deep: three entries of Bison's stack per level, so
 * the parser outgrows its first 200 and allocates its stack */
static int sc_nested(blo_state *S) {
  enum { DEPTH = 80 };
  char src[8 * DEPTH + 32];
  size_t n = 0;
  n += (size_t)snprintf(src + n, sizeof src - n, "let deep = ");
  for (int i = 0; i < DEPTH; i++) n += (size_t)snprintf(src + n, sizeof src - n, "1 + (");
  n += (size_t)snprintf(src + n, sizeof src - n, "1");
  for (int i = 0; i < DEPTH; i++) src[n++] = ')';
  n += (size_t)snprintf(src + n, sizeof src - n, "\nprint deep\n");
  return eval(S, src);
}

typedef struct {
  const char *name;
  int (*run)(blo_state *S);
  int expect;            /* status of a clean run */
  const char *runtime;   /* a runtime error starting so is also a clean outcome */
} scenario;

static const scenario scenarios[] = {
  {"parse_error", sc_parse_error, BLO_ERROR_SYNTAX, NULL},
  {"loop", sc_loop, BLO_OK, NULL},
  {"solve_cg", sc_solve, BLO_OK, NULL},
  /* cairo reports FreeType's failures as "error occurred in libfreetype" */
  {"plot", sc_plot, BLO_OK, "plot: cannot draw"},
  {"host_api", sc_host, BLO_OK, NULL},
  {"autodiff", sc_autodiff, BLO_OK, NULL},
  {"records", sc_records, BLO_OK, NULL},
  {"repl", sc_repl, BLO_OK, NULL},
  {"nested", sc_nested, BLO_OK, NULL},
};

/* After a failed run the state must still work: 1^2 + 2^2 + 3^2 and a loop. */
static const char *check_src =
  "fn chk_f(v) = sum(v * v)\n"
  "let chk = chk_f([1, 2, 3])\n"
  "for chk_i in 0..4 { chk = chk + chk_i }\n";
static const double check_value = 1 + 4 + 9 + (0 + 1 + 2 + 3);

typedef enum { VIA_HOST, VIA_SYSTEM } via;

typedef struct {
  long total;
  long failed_runs;
  char first[2200];
} tally;

static blo_state *open_state(host_alloc *h) {
  blo_config c;
  blo_config_defaults(&c);
  c.realloc_fn = host_realloc;
  c.alloc_ud = h;
  c.write_fn = sink_write;
  c.write_ud = &out_sink;
  c.error_fn = sink_error;
  c.error_ud = &err_sink;
  return blo_open(&c);
}

static void note(tally *t, const scenario *sc, via v, long k, const char *what) {
  t->failed_runs++;
  char line[2200];
  snprintf(line, sizeof line, "%s, %s allocation %ld failing: %s", sc->name, v == VIA_HOST ? "host" : "system", k,
           what);
  if (t->failed_runs <= 20) fprintf(stderr, "%s\n", line);
  if (!t->first[0]) snprintf(t->first, sizeof t->first, "%s", line);
}

/* One run with allocation k failing (0: none).  Returns the number of
 * allocations counted; *rc_out the scenario's status (-1: blo_open failed). */
static long run_once(const scenario *sc, via v, long k, int *rc_out, long *failures, long long *leaked,
                     int *check_ok, char *msg, size_t msgn) {
  host_alloc h = {{0}, 0};
  memset(&out_sink, 0, sizeof out_sink);
  memset(&err_sink, 0, sizeof err_sink);
  if (v == VIA_HOST) {
    h.inj.armed = 1;
    h.inj.fail_at = k;
  } else {
    sys_arm(k);
  }
  blo_state *S = open_state(&h);
  int rc = S ? sc->run(S) : -1;
  long count;
  if (v == VIA_HOST) {
    h.inj.armed = 0;
    count = h.inj.count;
    *failures = h.inj.failures;
  } else {
    sys_disarm();
    count = sys_inj.count;
    *failures = sys_inj.failures;
  }
  *rc_out = rc;
  *check_ok = 1;
  msg[0] = 0;
  if (S) {
    snprintf(msg, msgn, "%s", blo_last_error(S)->message);
    double x = NAN;
    *check_ok = eval(S, check_src) == BLO_OK && blo_get_number(S, "chk", &x) == BLO_OK && x == check_value;
    /* closing frees what the run took: track it again for the leak count */
    if (v == VIA_SYSTEM) sys_inj.armed = 1, sys_inj.fail_at = 0;
    blo_close(S);
#ifdef HAVE_CAIRO
    /* cairo keeps fonts and glyphs in global caches, which a failure can
     * leave differently filled: empty them, so that what is left was lost,
     * not cached (only then: refilling them costs thousands of allocations) */
    if (v == VIA_SYSTEM && live_n) cairo_debug_reset_static_data();
#endif
    if (v == VIA_SYSTEM) sys_disarm();
  }
  *leaked = v == VIA_HOST ? h.live : live_n;
  return count;
}

static char only_name[64];
static int only_via = -1;
static long only_k;

static void sweep(const scenario *sc, via v, tally *t) {
  int rc, ok;
  long fails;
  long long leaked;
  char msg[1024];
  if (only_name[0] && (strcmp(only_name, sc->name) != 0 || only_via != (int)v)) return;
  /* a first run lets libraries (OpenBLAS, cairo, fontconfig, stdio) set up
   * their global state, which later runs find ready */
  run_once(sc, v, 0, &rc, &fails, &leaked, &ok, msg, sizeof msg);
  long total = run_once(sc, v, 0, &rc, &fails, &leaked, &ok, msg, sizeof msg);
  char clean_out[sizeof out_sink.buf], clean_msg[sizeof msg];
  memcpy(clean_out, out_sink.buf, sizeof clean_out);
  memcpy(clean_msg, msg, sizeof clean_msg);
  ck_assert_msg(rc == sc->expect, "%s: clean run status %d: %s", sc->name, rc, msg);
  ck_assert_msg(ok, "%s: the check script failed after a clean run", sc->name);
  ck_assert_msg(leaked == 0, "%s: a clean run leaked %lld blocks", sc->name, leaked);
  ck_assert_int_gt(total, 0);
  t->total = total;
  for (long k = only_k ? only_k : 1; k <= (only_k ? only_k : total); k++) {
    long count = run_once(sc, v, k, &rc, &fails, &leaked, &ok, msg, sizeof msg);
    char what[2048];
    if (fails == 0) {
      /* fewer allocations than the clean run (cairo's caches were fuller):
       * then it must have done exactly what the clean run did */
      if (rc != sc->expect || strcmp(out_sink.buf, clean_out) != 0) {
        snprintf(what, sizeof what, "no allocation failed (%ld counted) and the run differs: status %d", count, rc);
        note(t, sc, v, k, what);
      }
    } else if (rc == -1) {
      /* blo_open returned NULL: nothing else to check */
    } else if (rc == sc->expect && strcmp(out_sink.buf, clean_out) == 0 && strcmp(msg, clean_msg) == 0) {
      /* the failure was absorbed (an allocation retried later, or only an
       * optimisation) and the run did exactly what the clean one did */
    } else if (rc != BLO_ERROR_MEMORY && !(rc == BLO_ERROR_RUNTIME && strstr(msg, "memory")) &&
               !(rc == BLO_ERROR_RUNTIME && sc->runtime && strncmp(msg, sc->runtime, strlen(sc->runtime)) == 0)) {
      snprintf(what, sizeof what, "status %d, message '%s', output '%.300s'", rc, msg, out_sink.buf);
      note(t, sc, v, k, what);
    } else if (!msg[0]) {
      note(t, sc, v, k, "an error without a message");
    }
    if (leaked) {
      snprintf(what, sizeof what, "%lld blocks leaked", leaked);
      note(t, sc, v, k, what);
    }
    if (!ok) note(t, sc, v, k, "the state cannot run the check script afterwards");
  }
  printf("test_alloc: %-11s %-6s allocator: %5ld allocations, each failed in turn\n", sc->name,
         v == VIA_HOST ? "host" : "system", total);
  fflush(stdout);
}

static int have_scenario(const scenario *sc) {
#ifndef HAVE_CAIRO
  if (strcmp(sc->name, "plot") == 0) {
    printf("test_alloc: plot skipped (built without cairo)\n");
    return 0;
  }
#endif
  (void)sc;
  return 1;
}

START_TEST(host_allocator_fails) {
  const scenario *sc = &scenarios[_i];
  if (!have_scenario(sc)) return;
  tally t = {0};
  sweep(sc, VIA_HOST, &t);
  ck_assert_msg(t.failed_runs == 0, "%ld bad runs; first: %s", t.failed_runs, t.first);
}
END_TEST

START_TEST(system_allocator_fails) {
  const scenario *sc = &scenarios[_i];
  if (!have_scenario(sc)) return;
  if (!sys_interposed()) {
    printf("test_alloc: system malloc is not interposable in this build; %s skipped\n", sc->name);
    return;
  }
  tally t = {0};
  sweep(sc, VIA_SYSTEM, &t);
  ck_assert_msg(t.failed_runs == 0, "%ld bad runs; first: %s", t.failed_runs, t.first);
}
END_TEST

int main(void) {
  snprintf(scratch, sizeof scratch, "/tmp/blo_test_alloc_XXXXXX");
  if (!mkdtemp(scratch)) {
    perror("mkdtemp");
    return 1;
  }
  const char *tr = getenv("BLO_ALLOC_TRACE");
  trace_failures = tr && *tr && *tr != '0';
  void *warm[2];
  backtrace(warm, 2);   /* loads what backtrace needs before any allocation is counted */
  const char *only = getenv("BLO_ALLOC_ONLY");
  char viab[16];
  if (only && sscanf(only, "%63[^:]:%15[^:]:%ld", only_name, viab, &only_k) == 3)
    only_via = strcmp(viab, "host") == 0 ? VIA_HOST : VIA_SYSTEM;
  Suite *s = suite_create("alloc");
  TCase *tc = tcase_create("alloc");
  tcase_set_timeout(tc, 600);
  int n = (int)(sizeof scenarios / sizeof scenarios[0]);
  tcase_add_loop_test(tc, host_allocator_fails, 0, n);
  tcase_add_loop_test(tc, system_allocator_fails, 0, n);
  suite_add_tcase(s, tc);
  int rc = check_run(s, "test_alloc", CK_NOFORK);
  char p[300];
  snprintf(p, sizeof p, "%s/p.png", scratch);
  unlink(p);
  rmdir(scratch);
  return rc;
}
