/* complete.c: context-aware completion for interactive hosts (blo_complete).
 * The REPL and the Python package's Jupyter kernel both ask here, so they
 * offer the same names: after `solve ` the problems, after `hypergrad = `
 * the hypergradient methods, after `inner_opt = ` / `outer_opt = ` the
 * optimizers, inside `with { }` the solve options, after `name.` the fields
 * of a record, elsewhere keywords, builtins and globals. */
#include "interp.h"
#include "bilevel.h"

#include <stdlib.h>
#include <string.h>

const char *bilevel_solve_key(size_t i);   /* runtime/bilevel.c */

typedef struct cand_list {
  char **items;
  size_t n, cap;
  int oom;
} cand_list;

void complete_free(blo_state *S) {
  cand_list *c = S->completions;
  if (!c) return;
  for (size_t i = 0; i < c->n; i++) free(c->items[i]);
  free(c->items);
  free(c);
  S->completions = NULL;
}

static void cands_reset(cand_list *c) {
  for (size_t i = 0; i < c->n; i++) free(c->items[i]);
  c->n = 0;
  c->oom = 0;
}

/* Adds pre + name when name starts with part (pre may be ""). */
static void cand_add(cand_list *c, const char *pre, const char *name, const char *part, size_t plen) {
  if (strncmp(name, part, plen) != 0) return;
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 64;
    char **p = realloc(c->items, cap * sizeof *p);
    if (!p) { c->oom = 1; return; }
    c->items = p;
    c->cap = cap;
  }
  size_t a = strlen(pre), b = strlen(name);
  char *s = malloc(a + b + 1);
  if (!s) { c->oom = 1; return; }
  memcpy(s, pre, a);
  memcpy(s + a, name, b + 1);
  c->items[c->n++] = s;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorts and drops duplicates (a global shadowing a builtin is one name). */
static void cands_finish(cand_list *c) {
  if (c->n < 2) return;   /* also: items is still NULL before the first candidate */
  qsort(c->items, c->n, sizeof *c->items, cmp_str);
  size_t k = 0;
  for (size_t i = 0; i < c->n; i++) {
    if (k > 0 && strcmp(c->items[k - 1], c->items[i]) == 0) free(c->items[i]);
    else c->items[k++] = c->items[i];
  }
  c->n = k;
}

static int is_word(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_';
}

static size_t skip_space_back(const char *s, size_t i) {
  while (i > 0 && (s[i - 1] == ' ' || s[i - 1] == '\t' || s[i - 1] == '\n' || s[i - 1] == '\r')) i--;
  return i;
}

/* The identifier ending at s[i) (after skipping spaces back), copied into
 * buf; "" if there is none.  Returns where it starts. */
static size_t word_before(const char *s, size_t i, char *buf, size_t n) {
  size_t e = skip_space_back(s, i), b = e;
  while (b > 0 && is_word(s[b - 1])) b--;
  size_t len = e - b < n - 1 ? e - b : n - 1;
  memcpy(buf, s + b, len);
  buf[len] = 0;
  return b;
}

/* Position of the innermost bracket still open at src[0..end), -1 if none;
 * strings and # comments are skipped. */
static long open_bracket(const char *src, size_t end) {
  long stack[64];
  int depth = 0, over = 0;
  for (size_t i = 0; i < end; i++) {
    char ch = src[i];
    if (ch == '"') {
      for (i++; i < end && src[i] != '"' && src[i] != '\n'; i++)
        if (src[i] == '\\') i++;
    } else if (ch == '#') {
      while (i < end && src[i] != '\n') i++;
    } else if (ch == '(' || ch == '[' || ch == '{') {
      if (depth < 64) stack[depth++] = (long)i;
      else over++;
    } else if (ch == ')' || ch == ']' || ch == '}') {
      if (over) over--;
      else if (depth) depth--;
    }
  }
  return depth && !over ? stack[depth - 1] : -1;
}

static void add_globals_of_kind(blo_state *S, cand_list *c, int kind, const char *part, size_t plen) {
  for (size_t i = 0; i < S->globals.cap; i++)
    if (S->globals.slots[i].name && (kind < 0 || (int)S->globals.slots[i].val.kind == kind))
      cand_add(c, "", S->globals.slots[i].name, part, plen);
}

static void add_fields(blo_state *S, cand_list *c, const char *word, size_t len) {
  /* "a.b.pa": the record at path "a.b", fields starting with "pa" */
  size_t dot = len;
  while (dot > 0 && word[dot - 1] != '.') dot--;
  char path[512], pre[512];
  if (dot < 2 || dot >= sizeof path) return;
  memcpy(path, word, dot - 1);
  path[dot - 1] = 0;
  memcpy(pre, word, dot);
  pre[dot] = 0;
  const char *f;
  for (size_t i = 0; (f = blo_field_name(S, path, i)) != NULL; i++) cand_add(c, pre, f, word + dot, len - dot);
}

size_t blo_complete(blo_state *S, const char *src, size_t cursor, size_t *start) {
  if (start) *start = cursor;
  if (!S || !src) return 0;
  size_t len = strlen(src);
  if (cursor > len) cursor = len;
  cand_list *c = S->completions;
  if (!c) {
    c = calloc(1, sizeof *c);
    if (!c) return 0;
    S->completions = c;
  }
  cands_reset(c);
  size_t b = cursor;
  while (b > 0 && (is_word(src[b - 1]) || src[b - 1] == '.')) b--;
  if (start) *start = b;
  char word[512];
  size_t wl = cursor - b < sizeof word - 1 ? cursor - b : sizeof word - 1;
  memcpy(word, src + b, wl);
  word[wl] = 0;
  if (wl && word[0] >= '0' && word[0] <= '9') return 0;   /* a number */
  if (memchr(word, '.', wl)) {
    add_fields(S, c, word, wl);
  } else {
    char prev[64], key[64];
    word_before(src, b, prev, sizeof prev);
    size_t q = skip_space_back(src, b);
    long ob = open_bracket(src, b);
    /* `hypergrad = ` / `inner_opt = `: a lone '=' after the option's name */
    int after_eq = !prev[0] && q > 0 && src[q - 1] == '=' &&
                   !(q > 1 && strchr("=!<>", src[q - 2]));
    if (after_eq) word_before(src, q - 1, key, sizeof key);
    if (strcmp(prev, "solve") == 0) {
      add_globals_of_kind(S, c, V_PROBLEM, word, wl);
    } else if (after_eq && strcmp(key, "hypergrad") == 0) {
      const hg_method *m;
      for (size_t i = 0; (m = hg_at(i)) != NULL; i++) cand_add(c, "", m->name, word, wl);
    } else if (after_eq && (strcmp(key, "inner_opt") == 0 || strcmp(key, "outer_opt") == 0)) {
      /* lbfgs and newton are inner solvers only (refused as outer_opt) */
      int last = strcmp(key, "inner_opt") == 0 ? OPT_NEWTON : OPT_ADAM;
      for (int k = OPT_SGD; k <= last; k++) cand_add(c, "", opt_name((bl_opt_kind)k), word, wl);
    } else if (ob >= 0 && src[ob] == '{' && q > 0 && (src[q - 1] == '{' || src[q - 1] == ',')) {
      /* a field name of the record right after `with`: the solve options
       * (a ',' inside a call in the record has that call's '(' innermost) */
      char w[16];
      word_before(src, (size_t)ob, w, sizeof w);
      const char *k;
      if (strcmp(w, "with") == 0) {
        for (size_t i = 0; (k = bilevel_solve_key(i)) != NULL; i++) cand_add(c, "", k, word, wl);
      }
    } else {
      const char *name;
      for (size_t i = 0; blo_keyword_info(i, &name, NULL); i++) cand_add(c, "", name, word, wl);
      for (size_t i = 0; blo_builtin_info(i, &name, NULL, NULL); i++) cand_add(c, "", name, word, wl);
      add_globals_of_kind(S, c, -1, word, wl);
    }
  }
  if (c->oom) {
    cands_reset(c);
    return 0;
  }
  cands_finish(c);
  return c->n;
}

const char *blo_completion(blo_state *S, size_t i) {
  if (!S || !S->completions) return NULL;
  cand_list *c = S->completions;
  return i < c->n ? c->items[i] : NULL;
}
