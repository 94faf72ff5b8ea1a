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
  int start_tok;              /* token the scanner returns first (selects the grammar's entry), 0: none */
  /* memory: every block the scanner and the parser's stack take is on this
   * list, so a scanner that cannot allocate can be left (longjmp to oom_jmp)
   * and everything it held freed */
  void *blocks;
  void *oom_jmp;              /* jmp_buf * of the running parse_chunk */
  int oom;                    /* an allocation failed: the parse reports out of memory */
} parse_state;

/* The allocator of the scanner (flex's yyalloc) and of Bison's stack. */
void *parse_alloc(parse_state *ps, size_t n);
void *parse_realloc(parse_state *ps, void *p, size_t n);
void parse_free(parse_state *ps, void *p);
void parse_free_all(parse_state *ps);   /* every block still on the list */

/* Parses src (len bytes).  Returns the number of errors (0 on success); on
 * success ps->root holds the program, allocated in ps->arena (created here,
 * freed by the caller with ast_arena_free even on failure).  When memory runs
 * out, ps->oom is set and the last error reported is "out of memory while
 * parsing"; nothing leaks and the process is never exited. */
int parse_chunk(parse_state *ps, const char *chunk, const char *src, size_t len,
                parse_error_fn on_error, void *ud);
/* Parses src as the fields of a record literal without its braces
 * ("a = 1, b = f(2)", possibly empty, over several lines, a trailing comma
 * allowed) and nothing else: on success ps->root is an N_RECORD.  Used for
 * option text that a host passes in, which must not run as statements. */
int parse_fields(parse_state *ps, const char *chunk, const char *src, size_t len,
                 parse_error_fn on_error, void *ud);

#endif
