/* main.c: the blo command-line program.  Only this file (and repl.c) knows
 * about the terminal, signals and readline; the library stays silent. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#ifdef HAVE_MPI
#include <mpi.h>   /* before blo.h: blo_config.comm is then an MPI_Comm */
#endif
#include "blo.h"

int repl_run(blo_state **pS, volatile int *interrupted, blo_state *(*reopen)(blo_state *));   /* repl.c */

/* sig_atomic_t is int with glibc, the type blo_set_interrupt_flag takes. */
static volatile sig_atomic_t interrupted;
static volatile sig_atomic_t pending_sigints;

/* Only sets a flag: the interpreter polls it at safe points.  If three come
 * without the interpreter reacting (stuck in one long kernel), give up. */
static void on_sigint(int sig) {
  (void)sig;
  if (!interrupted) pending_sigints = 0;
  interrupted = 1;
  if (++pending_sigints >= 3) {
    static const char msg[] = "\nblo: interrupted\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(130);
  }
}

/* The solve progress line: drawn in place on stderr when it is a terminal,
 * at most ten times a second, and erased before any other output. */
static int progress_shown;
static double progress_last;

static void progress_erase(void) {
  if (!progress_shown) return;
  fputs("\r\033[K", stderr);
  fflush(stderr);
  progress_shown = 0;
}

static int on_progress(void *ud, const blo_progress *p) {
  (void)ud;
  if (p->done) { progress_erase(); progress_last = 0; return 0; }
  if (p->quiet || !isatty(2)) return 0;
  if (progress_shown && p->elapsed - progress_last < 0.1 && p->step != p->steps) return 0;
  fprintf(stderr, "\rsolve %s  step %ld/%ld  F %.6g  f %.6g  |dF/dx| %.3g  |grad_y f| %.3g  %.1f steps/s\033[K",
          p->problem, p->step, p->steps, p->F, p->f, p->hypergrad_norm, p->inner_grad_norm,
          p->elapsed > 0 ? (double)p->step / p->elapsed : 0.0);
  fflush(stderr);
  progress_shown = 1;
  progress_last = p->elapsed;
  return 0;
}

/* In a job of several ranks (mpirun), script output comes from rank 0 only,
 * unless -a asks for every rank's, each line then prefixed "[rank] ". */
static int out_rank, out_nranks = 1, out_all, out_line_start = 1;

static void write_stdout(void *ud, const char *s, size_t n) {
  (void)ud;
  if (out_nranks > 1 && !out_all && out_rank != 0) return;
  progress_erase();
  if (out_nranks == 1 || !out_all) {
    fwrite(s, 1, n, stdout);
    return;
  }
  for (size_t i = 0; i < n;) {
    if (out_line_start) printf("[%d] ", out_rank);
    const char *nl = memchr(s + i, '\n', n - i);
    size_t k = nl ? (size_t)(nl - (s + i)) + 1 : n - i;
    fwrite(s + i, 1, k, stdout);
    out_line_start = nl != NULL;
    i += k;
  }
}

static void write_stderr(void *ud, const char *s) {
  (void)ud;
  progress_erase();
  fflush(stdout);
  fputs(s, stderr);
}

static int script_argc;
static const char *const *script_argv;

/* A state configured for the command line; closes old (for :reset). */
static blo_state *cli_open(blo_state *old) {
  blo_close(old);
  blo_config cfg;
  blo_config_defaults(&cfg);
  cfg.write_fn = write_stdout;
  cfg.error_fn = write_stderr;
#ifdef HAVE_MPI
  cfg.comm = MPI_COMM_WORLD;   /* rank(), allreduce() and the rest span the whole job */
#endif
  blo_state *S = blo_open(&cfg);
  if (!S) return NULL;
  if (blo_set_args(S, script_argc, script_argv) != BLO_OK) { blo_close(S); return NULL; }
  blo_set_interrupt_flag(S, (volatile int *)&interrupted);
  blo_set_progress(S, on_progress, NULL);
  return S;
}

static void usage(FILE *f) {
  fputs("usage: blo [options] [FILE [args...]]\n"
        "       blo --check FILE...\n"
        "  FILE            run a .blo script (args are available as `args`)\n"
        "  -e CODE         run CODE\n"
        "  -               read the script from standard input\n"
        "  --check FILE... parse and check each FILE without running it (unknown names,\n"
        "                  builtin arity, solve options); exit 1 if any has an error\n"
        "  -a              under mpirun: print from every rank, lines prefixed [rank]\n"
        "                  (default: rank 0 only)\n"
        "  --version       print the version\n"
        "  --help          print this help\n"
        "With no FILE on a terminal, blo starts an interactive session.\n", f);
}

static int cli_main(int argc, char **argv) {
  const char *code = NULL, *file = NULL;
  int i = 1;
  if (argc > 1 && strcmp(argv[1], "--check") == 0) {
    if (argc < 3) { fputs("blo: --check needs a file\n", stderr); usage(stderr); return 2; }
    int bad = 0;
    for (int k = 2; k < argc; k++) {
      /* a fresh state per file: one file's definitions must not hide another's mistakes */
      blo_state *S = cli_open(NULL);
      if (!S) { fputs("blo: out of memory\n", stderr); return 1; }
      if (blo_check_file(S, argv[k]) != BLO_OK) bad = 1;
      blo_close(S);
    }
    return bad;
  }
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--version") == 0) { printf("blo %s\n", BLO_VERSION); return 0; }
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) { usage(stdout); return 0; }
    if (strcmp(argv[i], "-a") == 0) { out_all = 1; continue; }
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
  script_argc = argc - i;
  script_argv = (const char *const *)argv + i;
  blo_state *S = cli_open(NULL);
  if (!S) { fputs("blo: out of memory\n", stderr); return 1; }
  /* No SA_RESTART: the REPL's pselect() must wake up on Ctrl-C. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, NULL);
  int rc;
  if (code) {
    rc = blo_eval_string(S, "<-e>", code, strlen(code));
  } else if (file && strcmp(file, "-") != 0) {
    rc = blo_eval_file(S, file);
  } else if (!file && isatty(0)) {
    rc = repl_run(&S, (volatile int *)&interrupted, cli_open);
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

/* With MPI the program is one rank of a job (a plain `blo` is a job of one).
 * A rank that fails ends the whole job: the others may be waiting for it in a
 * collective and would otherwise hang. */
#ifdef HAVE_MPI
/* Launched by mpirun/mpiexec (Open MPI, MPICH) or srun (PMI, PMIx)?  A plain
 * `blo` skips MPI_Init: as a singleton it costs about a second (Open MPI
 * starts a helper daemon), and the collectives then act as one rank. */
static int cli_launched_by_mpi(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MPI_LOCALNRANKS", NULL};
  for (int i = 0; vars[i]; i++)
    if (getenv(vars[i])) return 1;
  return 0;
}
#endif

int main(int argc, char **argv) {
#ifdef HAVE_MPI
  if (!cli_launched_by_mpi()) return cli_main(argc, argv);
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &out_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &out_nranks);
  int rc = cli_main(argc, argv);
  int size = out_nranks;
  if (rc == 1 && size > 1) {
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return rc;
#else
  return cli_main(argc, argv);
#endif
}
