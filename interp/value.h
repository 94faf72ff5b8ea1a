/* value.h: the values a script manipulates.
 *
 * Numbers are unboxed doubles (V_NUM, never differentiated themselves).
 * Tensors carry optional autodiff state: a tangent (forward mode) and a tape
 * node (reverse mode), valid only while gen matches the state's tape
 * generation, so a value that escapes a grad() evaluation is a constant.
 * Strings, lists, records, functions and problems are reference counted. */
#ifndef BLO_VALUE_H
#define BLO_VALUE_H

#include <stdint.h>
#include <string.h>
#include "../runtime/tensor.h"
#include "../grammar/ast.h"

typedef enum {
  V_NIL, V_NUM, V_TENSOR, V_STR, V_LIST, V_REC, V_FUNC, V_BUILTIN, V_PROBLEM
} vkind;

/* dead_next chains lists and records being freed, so that freeing a
 * structure nested a million deep takes no recursion (v_release). */
typedef struct obj { int refcount; vkind type; struct obj *dead_next; } obj;
struct builtin_def;

typedef struct value {
  vkind kind;
  int node;            /* autodiff tape node, -1 if none */
  uint32_t gen;        /* tape generation node belongs to */
  union {
    double num;
    blo_tensor *t;
    obj *o;
    const struct builtin_def *fn;
  } u;
  blo_tensor *tan;     /* forward-mode tangent, NULL means zero */
} value;

typedef struct ostr { obj h; size_t len; char s[]; } ostr;
typedef struct olist { obj h; int n, cap; value *items; } olist;
typedef struct orec { obj h; int n, cap; char **keys; value *vals; } orec;

struct chunk;
typedef struct ofunc {
  obj h;
  const ast_node *def;       /* N_FNDEF */
  struct chunk *chunk;       /* where it was defined, for error locations */
} ofunc;

struct problem;              /* runtime/bilevel.h */

struct blo_state;
typedef struct blo_state blo_state;

static inline value v_nil(void) { value v = {V_NIL, -1, 0, {0}, NULL}; return v; }
static inline value v_num(double x) { value v = {V_NUM, -1, 0, {0}, NULL}; v.u.num = x; return v; }
/* Takes ownership of t. */
static inline value v_tensor(blo_tensor *t) { value v = {V_TENSOR, -1, 0, {0}, NULL}; v.u.t = t; return v; }
static inline int v_is_numeric(value v) { return v.kind == V_NUM || v.kind == V_TENSOR; }

value v_retain(value v);
void v_release(blo_state *S, value *v);      /* sets *v to nil */

value v_str(blo_state *S, const char *s, size_t len);   /* nil kind on OOM */
/* A string's bytes (NUL-terminated, but it may also hold NUL: use its length). */
static inline const char *v_cstr(value v) { return ((ostr *)v.u.o)->s; }
static inline size_t v_strlen(value v) { return ((ostr *)v.u.o)->len; }
/* A string that reads the same as C text (no NUL inside): what a name,
 * option value or path must be, so "cg\0x" is never taken for "cg". */
static inline int v_is_text(value v) {
  return v.kind == V_STR && strlen(((ostr *)v.u.o)->s) == ((ostr *)v.u.o)->len;
}

olist *list_new(blo_state *S, int cap);
int list_push(blo_state *S, olist *l, value v);          /* takes ownership of v */
orec *rec_new(blo_state *S);
int rec_set(blo_state *S, orec *r, const char *key, value v);  /* takes ownership of v */
value *rec_get(orec *r, const char *key);                /* borrowed, NULL if absent */

const char *v_kind_name(value v);   /* "number", "tensor [2, 3]" is produced by v_describe */
void v_describe(value v, char *buf, size_t n);   /* kind and shape, for error messages */

/* Numeric views: new tensor reference (a rank-0 tensor for a number). */
blo_tensor *v_to_tensor(blo_state *S, value v);
/* A number or a single-element tensor as a double; -1 if not numeric scalar. */
int v_to_double(value v, double *out);

/* Printing: numbers shortest round-trip; tensors as nested [..]; records {a = 1}. */
typedef struct strbuf { char *s; size_t n, cap; int oom; } strbuf;
void sb_putc(strbuf *b, char c);
void sb_puts(strbuf *b, const char *s);
void sb_putn(strbuf *b, const char *s, size_t n);   /* n bytes, NUL included */
void sb_printf(strbuf *b, const char *fmt, ...);
void sb_free(strbuf *b);
void fmt_double(char *buf, size_t n, double x);  /* shortest text that reads back to x */
/* Lists and records nested deeper than VALUE_PRINT_DEPTH print as [...] and {...}. */
enum { VALUE_PRINT_DEPTH = 100 };
void v_print(strbuf *b, value v, int quote_strings);

#endif
