/* parse.h: the state one parse shares between the reentrant scanner and the
 * pure parser.  Errors go to a callback as values; nothing is printed here. */
#ifndef BLO_PARSE_H
#define BLO_PARSE_H

#include "ast.h"

typedef void (*parse_error_fn)(void *ud, const char *chunk, int line, int col, const char *msg);

/* Open delimiters the scanner tracks: more than the parser's stacks hold
 * (YYMAXDEPTH in parser.y, at least one state per delimiter), so deeper
 * input is reported as nested too deeply before this could overflow. */
enum { PARSE_MAX_NEST = 3072 };

typedef struct parse_state {
  ast_arena *arena;
  const char *chunk;          /* name used in messages: file name or "<repl>" */
  ast_node *root;             /* N_BLOCK of top-level statements */
  int nerrors;
  parse_error_fn on_error;
  void *error_ud;
  /* scanner bookkeeping */
  void *scanner;
  int line, col;              /* position of the next character */
  int last_tok;               /* previous token, to tell a block '{' from a record '{' */
  int nest[PARSE_MAX_NEST];   /* open delimiters: '(' '[' 'r' (record) 'b' (block) */
  int depth;
  int incomplete;             /* input ended inside an open delimiter or string (REPL continuation) */
} parse_state;

/* Parses src (len bytes).  Returns the number of errors (0 on success); on
 * success ps->root holds the program, allocated in ps->arena (created here,
 * freed by the caller with ast_arena_free even on failure). */
int parse_chunk(parse_state *ps, const char *chunk, const char *src, size_t len,
                parse_error_fn on_error, void *ud);

#endif
