/* maxrss.c: peak resident set size of a command, for bench/run.sh when
 * /usr/bin/time is missing.  Usage: maxrss OUTFILE CMD ARGS...  runs CMD
 * (its stdout and stderr pass through) and writes the peak RSS of the process
 * in kilobytes (getrusage's ru_maxrss via wait4) to OUTFILE; exits with CMD's
 * status. */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: maxrss OUTFILE CMD ARGS...\n"); return 2; }
  pid_t pid = fork();
  if (pid < 0) { perror("fork"); return 2; }
  if (pid == 0) {
    execvp(argv[2], argv + 2);
    perror(argv[2]);
    _exit(127);
  }
  int st = 0;
  struct rusage ru;
  if (wait4(pid, &st, 0, &ru) < 0) { perror("wait4"); return 2; }
  FILE *f = fopen(argv[1], "w");
  if (!f) { perror(argv[1]); return 2; }
  fprintf(f, "%ld\n", ru.ru_maxrss);
  fclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
