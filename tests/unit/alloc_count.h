/* alloc_count.h: the system allocations a script makes, for the tests that a
 * solve in steady state allocates nothing.  For unit tests that see the
 * state's internals (runtime/bilevel.h). */
#ifndef BLO_TEST_ALLOC_COUNT_H
#define BLO_TEST_ALLOC_COUNT_H

#include <check.h>
#include <string.h>

/* The tensor pool's and the AD tape's system allocations so far. */
static size_t alloc_count_now(blo_state *S) {
  return S->tn.n_sys_alloc + (S->tape ? ad_tape_allocs(S->tape) : 0);
}

/* Runs src (it must succeed) and returns how many allocations it made. */
static size_t allocs_of(blo_state *S, const char *src) {
  size_t before = alloc_count_now(S);
  int rc = blo_eval_string(S, "test", src, strlen(src));
  ck_assert_msg(rc == BLO_OK, "script failed: %s", blo_last_error(S)->message);
  return alloc_count_now(S) - before;
}

#endif
