/* repl.c: interactive session on GNU readline (placeholder: line by line). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <readline/readline.h>
#include <readline/history.h>

#include "blo.h"

int repl_run(blo_state *S, volatile int *interrupted) {
  (void)interrupted;
  char *line;
  while ((line = readline("blo> ")) != NULL) {
    if (*line) add_history(line);
    blo_eval_string(S, "<repl>", line, strlen(line));
    free(line);
  }
  return BLO_OK;
}
