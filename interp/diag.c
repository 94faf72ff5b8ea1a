/* diag.c: error values.  An error is recorded in the state with its chunk,
 * line and column; formatting with the source line and a caret happens only
 * when someone asks for text. */
#include "interp.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void set_src_line(blo_state *S, const chunk *c, int line) {
  S->err_src_line[0] = 0;
  if (!c || !c->src || line <= 0) return;
  const char *p = c->src, *end = c->src + c->len;
  for (int l = 1; l < line && p < end; p++)
    if (*p == '\n') l++;
  const char *e = p;
  while (e < end && *e != '\n') e++;
  size_t n = (size_t)(e - p);
  if (n >= sizeof S->err_src_line) n = sizeof S->err_src_line - 1;
  memcpy(S->err_src_line, p, n);
  S->err_src_line[n] = 0;
}

static int record(blo_state *S, const chunk *c, int line, int col, const char *msg) {
  snprintf(S->err_msg, sizeof S->err_msg, "%s", msg);
  snprintf(S->err_chunk, sizeof S->err_chunk, "%s", c ? c->name : "");
  S->err.status = BLO_ERROR_RUNTIME;
  if (strstr(msg, "memory cap exceeded") || strstr(msg, "out of memory")) S->err.status = BLO_ERROR_MEMORY;
  S->err.message = S->err_msg;
  S->err.file = S->err_chunk;
  S->err.line = line;
  S->err.col = col;
  set_src_line(S, c, line);
  return EV_ERR;
}

int interp_error(blo_state *S, const ast_node *at, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return record(S, S->cur_chunk, at ? at->loc.line : 0, at ? at->loc.col : 0, msg);
}

int interp_tn_error(blo_state *S, const ast_node *at) {
  return interp_error(S, at, "%s", S->tn.err[0] ? S->tn.err : "tensor operation failed");
}

/* Used by the parser's error callback. */
void interp_syntax_error(blo_state *S, const chunk *c, int line, int col, const char *msg) {
  record(S, c, line, col, msg);
  S->err.status = BLO_ERROR_SYNTAX;
}

void interp_format_error(blo_state *S, strbuf *out) {
  const blo_error *e = &S->err;
  if (e->line > 0) sb_printf(out, "%s:%d:%d: error: %s\n", e->file[0] ? e->file : "<input>", e->line, e->col, e->message);
  else if (e->file && e->file[0]) sb_printf(out, "%s: error: %s\n", e->file, e->message);
  else sb_printf(out, "error: %s\n", e->message);
  if (e->line > 0 && S->err_src_line[0]) {
    sb_printf(out, "  %s\n  ", S->err_src_line);
    /* keep tabs so the caret lines up under the column */
    for (int i = 1; i < e->col && S->err_src_line[i - 1]; i++) sb_putc(out, S->err_src_line[i - 1] == '\t' ? '\t' : ' ');
    sb_puts(out, "^\n");
  }
}
