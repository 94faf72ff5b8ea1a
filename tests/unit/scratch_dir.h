/* scratch_dir.h: a fresh mkdtemp directory per test for the tests that write
 * files (test_io, test_plot), and paths inside it. */
#ifndef BLO_SCRATCH_DIR_H
#define BLO_SCRATCH_DIR_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[256];

/* Creates /tmp/blo_<tag>_XXXXXX as dir. */
static void scratch_make(const char *tag) {
  snprintf(dir, sizeof dir, "/tmp/blo_%s_XXXXXX", tag);
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void scratch_remove(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

/* dir/name; four rotating buffers, so a test may hold a few paths at once. */
static const char *path_of(const char *name) {
  static char buf[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

#endif
