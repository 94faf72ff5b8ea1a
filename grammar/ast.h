/* ast.h: syntax tree of a .blo chunk.  All nodes and strings of one parse
 * live in one arena, freed with ast_arena_free(). */
#ifndef BLO_AST_H
#define BLO_AST_H

#include <stddef.h>

typedef struct ast_loc {
  int line, col;        /* 1-based start */
  int end_line, end_col;
} ast_loc;

typedef enum {
  /* expressions */
  N_NUM, N_STR, N_NAME, N_LIST,      /* [a, b, ...] */
  N_RECORD,                          /* {k = v, ...}: kids are N_FIELD */
  N_FIELD,                           /* name = a (record field or named argument) */
  N_UNARY, N_BINARY, N_AND, N_OR, N_RANGE,
  N_CALL,                            /* a(kids...) */
  N_INDEX,                           /* a[kids...] */
  N_SLICE,                           /* a:b inside an index, either may be NULL */
  N_GETFIELD,                        /* a.name */
  N_TRANSPOSE,                       /* a' */
  N_SOLVE,                           /* solve name with a */
  /* statements */
  N_BLOCK, N_LET, N_ASSIGN,          /* ASSIGN: target a (name, index, field), value b */
  N_FNDEF,                           /* name, params in kids (N_NAME), body a (expr or block), is_block */
  N_IF, N_WHILE, N_FOR,              /* FOR: name, iterable a, body b */
  N_BREAK, N_CONTINUE, N_RETURN, N_PRINT, N_EXPR,
  N_PROBLEM,                         /* name, kids are N_VARDECL / N_OBJECTIVE / N_EVERY / N_SUBJECT */
  N_VARDECL,                         /* op = 0 outer / 1 inner; name; a shape, b init, c box */
  N_OBJECTIVE,                       /* op = 0 outer / 1 inner; a expr */
  N_EVERY,                           /* op = 0 outer / 1 inner; name; a expr */
  N_SUBJECT,                         /* subject to: op = 0 outer / 1 inner; a the constraint (g <= h, g >= h) */
  N_KIND_COUNT
} ast_kind;

/* Operator codes for N_UNARY / N_BINARY (kept independent of the tensor layer). */
enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MOD, OP_POW, OP_MATMUL,
       OP_LT, OP_LE, OP_GT, OP_GE, OP_EQ, OP_NE, OP_NEG, OP_NOT };

typedef struct ast_node ast_node;
struct ast_node {
  ast_kind kind;
  int op;
  ast_loc loc;
  double num;
  const char *name;      /* identifier or string contents (arena) */
  size_t len;            /* N_STR: bytes of name, which may hold NUL ("a\0b") */
  ast_node *a, *b, *c;
  ast_node **kids;
  int nkids;
  int is_block;
};

typedef struct ast_arena ast_arena;

ast_arena *ast_arena_new(void);
void ast_arena_free(ast_arena *ar);
void *ast_alloc(ast_arena *ar, size_t n);              /* zeroed, NULL on OOM */
/* 1 once an allocation from ar has failed (or ar is NULL): whatever was built
 * from it may lack nodes, so a parse that sees this reports out of memory. */
int ast_arena_failed(const ast_arena *ar);
char *ast_strndup(ast_arena *ar, const char *s, size_t n);
ast_node *ast_new(ast_arena *ar, ast_kind k, ast_loc loc);

/* Growable child list used by the parser; kids end up in the arena. */
typedef struct ast_list { ast_node **items; int n, cap; } ast_list;
int ast_list_push(ast_arena *ar, ast_list *l, ast_node *n);
void ast_set_kids(ast_node *n, ast_list *l);

const char *ast_kind_name(ast_kind k);

/* 1 if s is one of the language's keywords (let, fn, if, ..., true, false):
 * such a word never reaches the parser as a name, so nothing can bind it. */
int ast_is_keyword(const char *s);
/* 1 if s is an identifier a script can bind: [A-Za-z_][A-Za-z0-9_]* and not
 * a keyword. */
int ast_is_name(const char *s);

#endif
