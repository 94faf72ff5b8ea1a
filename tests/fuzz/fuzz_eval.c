/* fuzz_eval.c: libFuzzer target.  Each input is a script, evaluated through
 * the public API (blo.h) in a fresh state the way an untrusting host would
 * run it: no file access (allow_files = 0), a cap on tensor memory, a cap on
 * everything the state allocates through its allocator, and a CPU budget
 * enforced through the interrupt flag.  A script that is merely slow or
 * greedy therefore ends in BLO_INTERRUPTED or BLO_ERROR_MEMORY, not in a
 * libFuzzer timeout or out-of-memory report; what remains reported is a
 * sanitizer error, a leak, a broken API invariant (checked below) or a run
 * that ignores the interrupt flag (libFuzzer's -timeout, set well above the
 * budget, catches that).
 *
 * Build and run it with `make fuzz` (tests/fuzz/build.sh, tests/fuzz/run.sh).
 * The binary also replays files given on its command line:
 *   tests/fuzz/fuzz_eval crash-<sha1>     (one input)
 * and with FUZZ_EVAL_VERBOSE=1 in the environment prints how each ended,
 * and docs/TESTING.md says how to turn a finding into a script test. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L   /* sigaction, setitimer */
#endif
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "blo.h"

/* CPU time one input may use before the interrupt flag is raised. */
#define CPU_BUDGET_MS 1000
/* After the budget, the flag is raised again this often: the evaluator clears
 * it when it reports the interruption, and it must stay raised until the
 * evaluation has actually returned. */
#define REPEAT_MS 20
/* Tensor data (blo_config.mem_cap) and everything the state allocates
 * through its realloc function (tensors, script objects, the state). */
#define TENSOR_CAP ((size_t)64 << 20)
#define HEAP_CAP ((size_t)256 << 20)

/* Sanitizer settings that belong to the harness rather than to whoever
 * starts it: a single allocation above 64 MB fails (returns NULL, which the
 * library must report as BLO_ERROR_MEMORY) instead of being granted; memory
 * the library takes from malloc directly (parser, strings, temporaries) is
 * outside HEAP_CAP, so this bounds it per allocation and libFuzzer's
 * -rss_limit_mb bounds the total. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "allocator_may_return_null=1:max_allocation_size_mb=64:detect_leaks=1";
}

static volatile int stop_flag;
static int verbose;   /* FUZZ_EVAL_VERBOSE set: print each input's status and error */

static void on_sigprof(int sig) {
  (void)sig;
  stop_flag = 1;
}

static void budget_start(void) {
  struct itimerval it = {{0, REPEAT_MS * 1000}, {CPU_BUDGET_MS / 1000, (CPU_BUDGET_MS % 1000) * 1000}};
  setitimer(ITIMER_PROF, &it, NULL);
}

static void budget_stop(void) {
  struct itimerval it;
  memset(&it, 0, sizeof it);
  setitimer(ITIMER_PROF, &it, NULL);
  stop_flag = 0;
}

/* A Lua-style allocator that keeps each block's size in a header, so the cap
 * is exact whatever the caller claims, and that checks the caller's claim:
 * old_size must be the size the block was allocated with. */
typedef struct {
  size_t used;
} heap;

#define HDR 16   /* keeps the user pointer 16-byte aligned */

static void *cap_realloc(void *ud, void *ptr, size_t old_size, size_t new_size) {
  heap *hp = ud;
  unsigned char *blk = ptr ? (unsigned char *)ptr - HDR : NULL;
  size_t had = 0;
  if (blk) {
    memcpy(&had, blk, sizeof had);
    if (old_size != had) {
      fprintf(stderr, "fuzz_eval: realloc_fn called with old_size %zu for a block of %zu bytes\n",
              old_size, had);
      abort();
    }
  }
  if (new_size == 0) {
    hp->used -= had;
    free(blk);
    return NULL;
  }
  if (new_size > HEAP_CAP - HDR || hp->used - had + new_size > HEAP_CAP) return NULL;
  unsigned char *nb = realloc(blk, new_size + HDR);
  if (!nb) return NULL;
  hp->used = hp->used - had + new_size;
  memcpy(nb, &new_size, sizeof new_size);
  return nb + HDR;
}

/* Output and errors are discarded, but read in full so that the sanitizers
 * check the lengths the library passes. */
static volatile unsigned sink;

static void on_write(void *ud, const char *text, size_t len) {
  (void)ud;
  unsigned h = 0;
  for (size_t i = 0; i < len; i++) h = h * 31 + (unsigned char)text[i];
  sink += h;
}

static void on_error(void *ud, const char *formatted) {
  (void)ud;
  sink += (unsigned)strlen(formatted);
}

static int on_progress(void *ud, const blo_progress *p) {
  (void)ud;
  (void)p;
  return stop_flag;   /* a solve stops as soon as the budget is spent */
}

static void invariant(int ok, const char *what, int rc, const blo_state *S) {
  if (ok) return;
  const blo_error *e = blo_last_error(S);
  fprintf(stderr, "fuzz_eval: broken invariant: %s (status %d, message \"%s\")\n", what, rc,
          e && e->message ? e->message : "(null)");
  abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  verbose = getenv("FUZZ_EVAL_VERBOSE") != NULL;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigprof;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPROF, &sa, NULL);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  heap hp = {0};
  blo_config cfg;
  blo_config_defaults(&cfg);
  cfg.realloc_fn = cap_realloc;
  cfg.alloc_ud = &hp;
  cfg.write_fn = on_write;
  cfg.error_fn = on_error;
  cfg.allow_files = 0;
  cfg.mem_cap = TENSOR_CAP;
  cfg.seed = 1;
  blo_state *S = blo_open(&cfg);
  if (!S) abort();   /* a fresh state fits in any cap */
  stop_flag = 0;
  blo_set_interrupt_flag(S, &stop_flag);
  blo_set_progress(S, on_progress, NULL);

  /* The static check (blo --check) reads every input without running it:
   * a known status, matching blo_last_error, and nothing defined. */
  int rc0 = blo_check_string(S, "fuzz", (const char *)data, size);
  invariant(rc0 == BLO_OK || rc0 == BLO_ERROR_SYNTAX || rc0 == BLO_ERROR_RUNTIME || rc0 == BLO_ERROR_MEMORY,
            "check status out of range", rc0, S);
  invariant((int)blo_last_error(S)->status == rc0, "blo_last_error disagrees with the check's status", rc0, S);

  budget_start();
  int rc = blo_eval_string(S, "fuzz", (const char *)data, size);
  budget_stop();

  if (verbose) fprintf(stderr, "fuzz_eval: status %d\n%s\n", rc, rc ? blo_last_error_text(S) : "");

  /* What every host relies on: a known status, the same one in
   * blo_last_error, and a message for every failure. */
  const blo_error *e = blo_last_error(S);
  invariant(rc >= BLO_OK && rc <= BLO_INTERRUPTED, "status out of range", rc, S);
  invariant(e && (int)e->status == rc, "blo_last_error disagrees with the returned status", rc, S);
  if (rc != BLO_OK) {
    invariant(e->message && e->message[0], "failure without a message", rc, S);
    invariant(blo_last_error_text(S)[0] != 0, "failure without formatted text", rc, S);
  }

  /* The state survives whatever the script did and runs the next chunk. */
  static const char after[] = "let fuzz_after__ = 1 + 1\n";
  budget_start();
  int rc2 = blo_eval_string(S, "after", after, sizeof after - 1);
  budget_stop();
  invariant(rc2 == BLO_OK || rc2 == BLO_ERROR_MEMORY,
            "the state cannot run a chunk after the input", rc2, S);
  if (rc2 == BLO_OK) {
    double two = 0;
    invariant(blo_get_number(S, "fuzz_after__", &two) == BLO_OK && two == 2,
              "a global defined after the input reads back wrong", rc2, S);
  }

  /* Completion reads the input as an entry typed so far, with whatever the
   * script defined: every candidate must start like the word it completes. */
  char *text = malloc(size + 1);
  if (text) {
    memcpy(text, data, size);
    text[size] = 0;
    size_t cursor = strlen(text) / 2, start = 0;
    size_t n = blo_complete(S, text, cursor, &start);
    invariant(start <= cursor, "completion starts after the cursor", 0, S);
    for (size_t i = 0; i < n; i++) {
      const char *c = blo_completion(S, i);
      invariant(c && strncmp(c, text + start, cursor - start) == 0, "a candidate does not extend the word", 0, S);
    }
    free(text);
  }

  blo_close(S);
  if (hp.used != 0) {
    fprintf(stderr, "fuzz_eval: %zu bytes still allocated through realloc_fn after blo_close\n", hp.used);
    abort();
  }
  return 0;
}
