/* ast.c: the arena behind every syntax tree.  Blocks are chained and freed
 * together, so a failed parse releases everything in one call. */
#include "ast.h"

#include <stdlib.h>
#include <string.h>

typedef struct ast_block {
  struct ast_block *next;
  size_t used, cap;
  max_align_t data[];
} ast_block;

struct ast_arena {
  ast_block *head;
  int failed;           /* an allocation returned NULL: the tree is incomplete */
};

enum { ARENA_BLOCK = 16384 };

ast_arena *ast_arena_new(void) {
  return calloc(1, sizeof(ast_arena));
}

void ast_arena_free(ast_arena *ar) {
  if (!ar) return;
  ast_block *b = ar->head;
  while (b) {
    ast_block *next = b->next;
    free(b);
    b = next;
  }
  free(ar);
}

void *ast_alloc(ast_arena *ar, size_t n) {
  const size_t align = sizeof(max_align_t);
  n = (n + align - 1) / align * align;
  ast_block *b = ar->head;
  if (!b || b->used + n > b->cap) {
    size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
    b = malloc(sizeof(ast_block) + cap);
    if (!b) { ar->failed = 1; return NULL; }
    b->cap = cap;
    b->used = 0;
    b->next = ar->head;
    ar->head = b;
  }
  void *p = (char *)b->data + b->used;
  b->used += n;
  memset(p, 0, n);
  return p;
}

int ast_arena_failed(const ast_arena *ar) { return !ar || ar->failed; }

char *ast_strndup(ast_arena *ar, const char *s, size_t n) {
  char *p = ast_alloc(ar, n + 1);
  if (!p) return NULL;
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

ast_node *ast_new(ast_arena *ar, ast_kind k, ast_loc loc) {
  ast_node *n = ast_alloc(ar, sizeof(ast_node));
  if (!n) return NULL;
  n->kind = k;
  n->loc = loc;
  return n;
}

int ast_list_push(ast_arena *ar, ast_list *l, ast_node *n) {
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 4;
    ast_node **items = ast_alloc(ar, sizeof(ast_node *) * (size_t)cap);
    if (!items) return -1;
    if (l->n) memcpy(items, l->items, sizeof(ast_node *) * (size_t)l->n);
    l->items = items;
    l->cap = cap;
  }
  l->items[l->n++] = n;
  return 0;
}

void ast_set_kids(ast_node *n, ast_list *l) {
  n->kids = l->items;
  n->nkids = l->n;
}

const char *ast_kind_name(ast_kind k) {
  static const char *names[N_KIND_COUNT] = {
    "number", "string", "name", "list", "record", "field", "unary", "binary", "and", "or",
    "range", "call", "index", "slice", "field access", "transpose", "solve",
    "block", "let", "assignment", "fn", "if", "while", "for", "break", "continue",
    "return", "print", "expression", "problem", "variable declaration", "objective", "every",
    "constraint"};
  return (k >= 0 && k < N_KIND_COUNT) ? names[k] : "?";
}

/* The scanner's keyword rules (lexer.l) list the same words. */
static const char *const keywords[] = {
  "let", "fn", "if", "else", "for", "in", "while", "break", "continue", "return", "print",
  "problem", "outer", "inner", "minimize", "maximize", "every", "solve", "with", "true", "false"};

int ast_is_keyword(const char *s) {
  if (!s) return 0;
  for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++)
    if (strcmp(s, keywords[i]) == 0) return 1;
  return 0;
}

int ast_is_name(const char *s) {
  if (!s || !(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z'))) return 0;
  for (const char *p = s; *p; p++)
    if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) return 0;
  return !ast_is_keyword(s);
}
