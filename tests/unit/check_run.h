/* check_run.h: runs a Check suite, lists the failures, and prints the one
 * summary line ("test_x: N passed, M failed") that .ci/run adds up. */
#ifndef BLO_CHECK_RUN_H
#define BLO_CHECK_RUN_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

/* fork: CK_FORK to isolate crashing tests, CK_NOFORK where tests share a
 * process on purpose (threads, leak checks). Returns the exit code. */
static inline int check_run(Suite *s, const char *name, enum fork_status fork) {
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, fork);
  srunner_run_all(sr, CK_SILENT);
  int run = srunner_ntests_run(sr), failed = srunner_ntests_failed(sr);
  if (failed) {
    TestResult **res = srunner_failures(sr);
    for (int i = 0; i < failed; i++)
      fprintf(stderr, "%s:%d: %s\n", tr_lfile(res[i]), tr_lno(res[i]), tr_msg(res[i]));
    free(res);
  }
  srunner_free(sr);
  printf("%s: %d passed, %d failed\n", name, run - failed, failed);
  return failed == 0 ? 0 : 1;
}

#endif
