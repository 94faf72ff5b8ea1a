/* main.c: the blo command-line program.  Only this file (and repl.c) knows
 * about the terminal, signals and readline; the library stays silent. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blo.h"

int repl_run(blo_state *S, volatile int *interrupted);   /* repl.c */

static volatile int interrupted;

/* Only sets a flag: the interpreter polls it at safe points. */
static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

static void write_stdout(void *ud, const char *s, size_t n) {
  (void)ud;
  fwrite(s, 1, n, stdout);
}

static void write_stderr(void *ud, const char *s) {
  (void)ud;
  fflush(stdout);
  fputs(s, stderr);
}

static void usage(FILE *f) {
  fputs("usage: blo [options] [FILE [args...]]\n"
        "  FILE            run a .blo script (args are available as `args`)\n"
        "  -e CODE         run CODE\n"
        "  -               read the script from standard input\n"
        "  --version       print the version\n"
        "  --help          print this help\n"
        "With no FILE on a terminal, blo starts an interactive session.\n", f);
}

int main(int argc, char **argv) {
  const char *code = NULL, *file = NULL;
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--version") == 0) { printf("blo %s\n", BLO_VERSION); return 0; }
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) { usage(stdout); return 0; }
    if (strcmp(argv[i], "-e") == 0) {
      if (i + 1 >= argc) { fputs("blo: -e needs an argument\n", stderr); usage(stderr); return 2; }
      code = argv[++i];
      i++;
      break;
    }
    if (strcmp(argv[i], "-") == 0) { file = "-"; i++; break; }
    if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "blo: unknown option '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
    file = argv[i++];
    break;
  }
  blo_config cfg;
  blo_config_defaults(&cfg);
  cfg.write_fn = write_stdout;
  cfg.error_fn = write_stderr;
  blo_state *S = blo_open(&cfg);
  if (!S) { fputs("blo: out of memory\n", stderr); return 1; }
  blo_set_args(S, argc - i, (const char *const *)argv + i);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, NULL);
  blo_set_interrupt_flag(S, &interrupted);
  int rc;
  if (code) {
    rc = blo_eval_string(S, "<-e>", code, strlen(code));
  } else if (file && strcmp(file, "-") != 0) {
    rc = blo_eval_file(S, file);
  } else if (!file && isatty(0)) {
    rc = repl_run(S, &interrupted);
  } else {
    /* script on standard input */
    char *buf = NULL;
    size_t len = 0, cap = 0, k;
    do {
      if (len + 4096 > cap) {
        cap = cap ? cap * 2 : 8192;
        char *nb = realloc(buf, cap);
        if (!nb) { free(buf); blo_close(S); fputs("blo: out of memory\n", stderr); return 1; }
        buf = nb;
      }
      k = fread(buf + len, 1, cap - len, stdin);
      len += k;
    } while (k > 0);
    rc = blo_eval_string(S, "<stdin>", buf ? buf : "", len);
    free(buf);
  }
  fflush(stdout);
  blo_close(S);
  return rc == BLO_OK ? 0 : 1;
}
