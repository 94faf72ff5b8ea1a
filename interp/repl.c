/* repl.c: the interactive session on GNU readline.  Part of the blo program
 * only; the library never sees readline.  Everything here goes through the
 * public API (blo.h), like any other host.
 *
 * readline runs in callback mode around pselect(), so that a SIGINT (whose
 * handler in main.c only sets a flag) interrupts the wait: at the prompt it
 * clears the line, during evaluation the interpreter sees the flag. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>
#include <readline/readline.h>
#include <readline/history.h>

#include "blo.h"

/* Process-wide because readline's callbacks take no user data (the program
 * has one session). */
static blo_state *sess;
static char *pending;              /* lines of an unfinished entry */
static size_t pending_len;
static char *line_in;
static int got_line, at_eof;

static const char *const commands[] = {"help", "vars", "load", "reset", "quit", NULL};

/* ---- completion ---- */

static char **cands;
static size_t ncands, capcands;

static void cands_clear(void) {
  for (size_t i = 0; i < ncands; i++) free(cands[i]);
  ncands = 0;
}

static void cand_add(const char *prefix, const char *name, const char *text) {
  size_t pl = prefix ? strlen(prefix) : 0;
  size_t tl = strlen(text);
  /* text is the whole word typed, prefix the part before the completed name */
  if (tl < pl || strncmp(name, text + pl, tl - pl) != 0) return;
  for (size_t i = 0; i < ncands; i++)
    if (strcmp(cands[i] + pl, name) == 0) return;
  if (ncands == capcands) {
    size_t cap = capcands ? capcands * 2 : 64;
    char **p = realloc(cands, cap * sizeof *p);
    if (!p) return;
    cands = p;
    capcands = cap;
  }
  char *s = malloc(pl + strlen(name) + 1);
  if (!s) return;
  memcpy(s, prefix ? prefix : "", pl);
  strcpy(s + pl, name);
  cands[ncands++] = s;
}

static char *cand_gen(const char *text, int state) {
  static size_t next;
  (void)text;
  if (!state) next = 0;
  return next < ncands ? strdup(cands[next++]) : NULL;
}

static void add_names(const char *text) {
  const char *name;
  for (size_t i = 0; blo_keyword_info(i, &name, NULL); i++) cand_add(NULL, name, text);
  for (size_t i = 0; blo_builtin_info(i, &name, NULL, NULL); i++) cand_add(NULL, name, text);
  size_t it = 0;
  while ((name = blo_next_global(sess, &it)) != NULL) cand_add(NULL, name, text);
}

static char **complete(const char *text, int start, int end) {
  (void)end;
  rl_attempted_completion_over = 1;     /* no file names unless asked for */
  cands_clear();
  const char *line = rl_line_buffer;
  while (*line == ' ') line++;
  if (line[0] == ':') {
    const char *cmd = line + 1;
    if (start <= (int)(cmd - rl_line_buffer)) {
      for (int i = 0; commands[i]; i++) cand_add(NULL, commands[i], text);
    } else if (strncmp(cmd, "load", 4) == 0) {
      rl_attempted_completion_over = 0;
      return rl_completion_matches(text, rl_filename_completion_function);
    } else if (strncmp(cmd, "help", 4) == 0) {
      add_names(text);
    }
  } else {
    /* blo_complete reads the context: the earlier lines of an unfinished
     * entry, then this line up to the cursor */
    size_t pl = pending ? pending_len : 0;
    char *src = malloc(pl + (size_t)end + 1);
    if (src) {
      if (pl) memcpy(src, pending, pl);
      memcpy(src + pl, rl_line_buffer, (size_t)end);
      src[pl + (size_t)end] = 0;
      size_t ws, n = blo_complete(sess, src, pl + (size_t)end, &ws);
      /* readline replaces `text`; use the candidates when both agree on the word */
      if (pl + (size_t)end - ws == (size_t)(end - start))
        for (size_t i = 0; i < n; i++) cand_add(NULL, blo_completion(sess, i), text);
      free(src);
    }
    if (strchr(text, '.')) rl_completion_append_character = '\0';
  }
  if (!ncands) return NULL;
  return rl_completion_matches(text, cand_gen);
}

/* ---- commands ---- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void cmd_vars(void) {
  size_t it = 0, n = 0, cap = 0;
  const char **names = NULL;
  const char *name;
  while ((name = blo_next_global(sess, &it)) != NULL) {
    if (n == cap) {
      cap = cap ? cap * 2 : 32;
      const char **p = realloc(names, cap * sizeof *p);
      if (!p) break;
      names = p;
    }
    names[n++] = name;
  }
  qsort(names, n, sizeof *names, cmp_str);
  size_t w = 4;
  for (size_t i = 0; i < n; i++) if (strlen(names[i]) > w) w = strlen(names[i]);
  for (size_t i = 0; i < n; i++) {
    const char *d = blo_describe(sess, names[i]);
    printf("  %-*s  %s\n", (int)w, names[i], d ? d : "?");
  }
  if (!n) printf("  (no variables)\n");
  free(names);
}

static void cmd_help(const char *arg) {
  if (!*arg) {
    printf("Commands:\n"
           "  :help [name]   this list, or the signature and description of a builtin\n"
           "  :vars          variables with their kinds and shapes\n"
           "  :load FILE     run a script in this session\n"
           "  :reset         forget every variable and function\n"
           "  :quit          leave (also Ctrl-D)\n"
           "Enter statements or expressions; an expression's value is shown.  A line\n"
           "ending inside ( [ { or after a trailing \\ continues on the next one.\n"
           "Ctrl-C stops a running computation, or clears the line being typed.\n"
           "Builtins (:help NAME for one):\n");
    const char *name;
    int col = 0;
    for (size_t i = 0; blo_builtin_info(i, &name, NULL, NULL); i++) {
      if (col + (int)strlen(name) + 2 > 78) { putchar('\n'); col = 0; }
      col += printf("%s%s", col ? "  " : "  ", name);
    }
    if (col) putchar('\n');
    return;
  }
  const char *sig, *doc;
  if (blo_help(sess, arg, &sig, &doc) == BLO_OK) {
    printf("%s\n  %s\n", sig, doc);
    return;
  }
  const char *kw;
  for (size_t i = 0; blo_keyword_info(i, &kw, &doc); i++)
    if (strcmp(kw, arg) == 0) {
      printf("%s (keyword)\n  %s\n", arg, doc);
      return;
    }
  const char *d = blo_describe(sess, arg);
  if (d) printf("%s is a %s\n", arg, d);
  else printf("no help for '%s'\n", arg);
}

/* Returns 1 to leave the session. */
static int run_command(const char *cmdline, blo_state *(*reopen)(blo_state *)) {
  const char *p = cmdline + 1;
  size_t n = 0;
  while (p[n] && p[n] != ' ' && p[n] != '\t') n++;
  const char *arg = p + n;
  while (*arg == ' ' || *arg == '\t') arg++;
  char argbuf[1024];
  snprintf(argbuf, sizeof argbuf, "%s", arg);
  size_t al = strlen(argbuf);
  while (al && (argbuf[al - 1] == ' ' || argbuf[al - 1] == '\t' || argbuf[al - 1] == '\n')) argbuf[--al] = 0;
#define IS(s) (n == strlen(s) && strncmp(p, s, n) == 0)
  if (IS("quit") || IS("q") || IS("exit")) return 1;
  if (IS("help") || IS("h") || IS("?")) cmd_help(argbuf);
  else if (IS("vars")) cmd_vars();
  else if (IS("load")) {
    if (!al) printf("usage: :load FILE\n");
    else blo_eval_file(sess, argbuf);
  } else if (IS("reset")) {
    blo_state *S = reopen(sess);
    if (!S) {
      fputs("blo: out of memory\n", stderr);
      return 1;
    }
    sess = S;
    printf("session reset\n");
  } else {
    printf("unknown command ':%.*s' (try :help)\n", (int)n, p);
  }
#undef IS
  return 0;
}

/* ---- the loop ---- */

static void on_line(char *line) {
  got_line = 1;
  line_in = line;
  if (!line) at_eof = 1;
  rl_callback_handler_remove();        /* evaluation runs with the terminal in normal mode */
}

static void history_path(char *buf, size_t n) {
  const char *home = getenv("HOME");
  buf[0] = 0;
  if (home && *home) snprintf(buf, n, "%s/.blo_history", home);
}

static int append_pending(const char *line) {
  size_t l = strlen(line);
  char *p = realloc(pending, pending_len + l + 2);
  if (!p) return -1;
  pending = p;
  memcpy(pending + pending_len, line, l);
  pending_len += l;
  pending[pending_len++] = '\n';
  pending[pending_len] = 0;
  return 0;
}

static void drop_pending(void) {
  free(pending);
  pending = NULL;
  pending_len = 0;
}

int repl_run(blo_state **pS, volatile int *interrupted, blo_state *(*reopen)(blo_state *)) {
  sess = *pS;
  char hist[4096];
  history_path(hist, sizeof hist);
  using_history();
  stifle_history(1000);
  if (hist[0]) read_history(hist);
  rl_readline_name = "blo";
  rl_catch_signals = 0;                /* SIGINT is ours: see main.c */
  rl_attempted_completion_function = complete;
  rl_completer_word_break_characters = " \t\n\"'`@$><=;:|&{}()[],+-*/%^!~#";
  printf("blo %s  (:help for help, :quit or Ctrl-D to leave)\n", blo_version());
  int quit = 0;
  while (!quit) {
    fflush(stdout);
    fflush(stderr);
    got_line = 0;
    rl_completion_append_character = ' ';
    rl_callback_handler_install(pending ? "...> " : "blo> ", on_line);
    /* SIGINT stays blocked except inside pselect, so a Ctrl-C that lands
     * between the flag check and the wait cannot be missed. */
    sigset_t block, orig;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &orig);
    while (!got_line) {
      if (*interrupted) {
        /* Ctrl-C at the prompt: forget the line and any unfinished entry. */
        *interrupted = 0;
        /* "^C" before the handler goes: removing it may return the cursor
         * to column 0 (the end of bracketed-paste mode sends a CR). */
        fputs("^C", stdout);
        fflush(stdout);
        rl_free_line_state();
        rl_replace_line("", 0);
        rl_callback_handler_remove();
        fputs("\n", stdout);
        drop_pending();
        fflush(stdout);
        rl_callback_handler_install("blo> ", on_line);
        continue;
      }
      fd_set fds;
      FD_ZERO(&fds);
      FD_SET(fileno(rl_instream), &fds);
      int r = pselect(fileno(rl_instream) + 1, &fds, NULL, NULL, NULL, &orig);
      if (r < 0 && errno != EINTR) { at_eof = 1; got_line = 1; rl_callback_handler_remove(); break; }
      if (r > 0) rl_callback_read_char();
    }
    sigprocmask(SIG_SETMASK, &orig, NULL);
    if (at_eof) { putchar('\n'); break; }
    char *line = line_in;
    line_in = NULL;
    const char *t = line;
    while (*t == ' ' || *t == '\t') t++;
    if (*t) add_history(line);
    if (!pending && *t == ':') {
      quit = run_command(t, reopen);
      free(line);
      continue;
    }
    if (!pending && !*t) { free(line); continue; }
    int oom = append_pending(line);
    free(line);
    if (oom) { fputs("blo: out of memory\n", stderr); drop_pending(); continue; }
    if (!blo_input_complete(pending, pending_len)) continue;
    *interrupted = 0;
    const char *echo = NULL;
    int rc = blo_eval_repl(sess, "<repl>", pending, pending_len, &echo);
    drop_pending();
    *interrupted = 0;                  /* a Ctrl-C that arrived after the last check */
    fflush(stdout);
    if (rc == BLO_OK && echo) printf("%s\n", echo);
  }
  drop_pending();
  cands_clear();
  free(cands);
  cands = NULL;
  capcands = 0;
  if (hist[0]) write_history(hist);
  *pS = sess;
  return BLO_OK;
}
