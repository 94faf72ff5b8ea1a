/* env.c: variable lookup.  Globals live in an open-addressing hash table;
 * locals in small per-call/per-block arrays searched linearly (they are few). */
#include "interp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t hash_str(const char *s) {
  size_t h = 1469598103934665603ull;
  while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
  return h;
}

static binding *gt_find(gtable *g, const char *name, int create) {
  if (create && (g->n + 1) * 4 >= g->cap * 3) {
    size_t cap = g->cap ? g->cap * 2 : 64;
    binding *slots = calloc(cap, sizeof *slots);
    if (!slots) return NULL;
    for (size_t i = 0; i < g->cap; i++) {
      if (!g->slots[i].name) continue;
      size_t j = hash_str(g->slots[i].name) & (cap - 1);
      while (slots[j].name) j = (j + 1) & (cap - 1);
      slots[j] = g->slots[i];
    }
    free(g->slots);
    g->slots = slots;
    g->cap = cap;
    memset(g->cache, 0, sizeof g->cache); /* the bindings moved */
  }
  if (!g->cap) return NULL;
  size_t j = hash_str(name) & (g->cap - 1);
  while (g->slots[j].name) {
    if (strcmp(g->slots[j].name, name) == 0) return &g->slots[j];
    j = (j + 1) & (g->cap - 1);
  }
  if (!create) return NULL;
  char *copy = strdup(name);
  if (!copy) return NULL;
  g->slots[j].name = copy;
  g->slots[j].val = v_nil();
  g->n++;
  return &g->slots[j];
}

void env_free_globals(blo_state *S) {
  gtable *g = &S->globals;
  for (size_t i = 0; i < g->cap; i++) {
    if (!g->slots[i].name) continue;
    v_release(S, &g->slots[i].val);
    free((char *)g->slots[i].name);
  }
  free(g->slots);
  memset(g, 0, sizeof *g);
}

/* strcmp() == 0 inline: names are short, and the libc call cost more than
 * the comparison on the cache-hit path of env_lookup */
static inline int name_eq(const char *a, const char *b) {
  while (*a && *a == *b) { a++; b++; }
  return *a == *b;
}

value *env_lookup(blo_state *S, const char *name) {
  for (scope *sc = S->sc; sc; sc = sc->parent) {
    for (int i = sc->n - 1; i >= 0; i--)
      if (strcmp(sc->vars[i].name, name) == 0) return &sc->vars[i].val;
    if (sc->is_fn) break;
  }
  gtable *g = &S->globals;
  gcache *c = &g->cache[((uintptr_t)name >> 3) & (GT_CACHE - 1)];
  if (c->key == name && name_eq(c->b->name, name)) return &c->b->val;
  binding *b = gt_find(g, name, 0);
  if (!b) return NULL;
  /* bindings are never removed, only moved by growth (which clears the cache) */
  c->key = name;
  c->b = b;
  return &b->val;
}

int env_set_global(blo_state *S, const char *name, value v) {
  binding *b = gt_find(&S->globals, name, 1);
  if (!b) { v_release(S, &v); return -1; }
  v_release(S, &b->val);
  b->val = v;
  return 0;
}

int env_define(blo_state *S, const char *name, value v) {
  scope *sc = S->sc;
  if (!sc) return env_set_global(S, name, v);
  for (int i = 0; i < sc->n; i++) {
    if (strcmp(sc->vars[i].name, name) == 0) {
      v_release(S, &sc->vars[i].val);
      sc->vars[i].val = v;
      return 0;
    }
  }
  if (sc->n == sc->cap) {
    int cap = sc->cap ? sc->cap * 2 : 8;
    binding *vars = realloc(sc->vars, sizeof(binding) * (size_t)cap);
    if (!vars) { v_release(S, &v); return -1; }
    sc->vars = vars;
    sc->cap = cap;
  }
  /* Names point into the AST arena, which outlives every scope. */
  sc->vars[sc->n].name = name;
  sc->vars[sc->n].val = v;
  sc->n++;
  return 0;
}

void env_push(blo_state *S, scope *sc, int is_fn) {
  memset(sc, 0, sizeof *sc);
  sc->parent = S->sc;
  sc->is_fn = is_fn;
  S->sc = sc;
}

void env_pop(blo_state *S, scope *sc) {
  for (int i = 0; i < sc->n; i++) v_release(S, &sc->vars[i].val);
  free(sc->vars);
  S->sc = sc->parent;
}

/* Levenshtein distance, capped: small names only. */
static int edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 40 || lb > 40) return 99;
  int d[41][41];
  for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
      d[i][j] = c;
    }
  return d[la][lb];
}

const char *env_suggest_in(const char *name, const char *const *cands) {
  const char *best = NULL;
  int bestd = (int)strlen(name) <= 3 ? 2 : 3;
  for (int i = 0; cands[i]; i++) {
    int d = edit_distance(name, cands[i]);
    if (d < bestd) { bestd = d; best = cands[i]; }
  }
  return best;
}

const char *env_suggest(blo_state *S, const char *name) {
  const char *best = NULL;
  int bestd = (int)strlen(name) <= 3 ? 2 : 3;
  for (scope *sc = S->sc; sc; sc = sc->parent) {
    for (int i = 0; i < sc->n; i++) {
      int d = edit_distance(name, sc->vars[i].name);
      if (d < bestd) { bestd = d; best = sc->vars[i].name; }
    }
    if (sc->is_fn) break;
  }
  for (size_t i = 0; i < S->globals.cap; i++) {
    const char *g = S->globals.slots[i].name;
    if (!g) continue;
    int d = edit_distance(name, g);
    if (d < bestd) { bestd = d; best = g; }
  }
  for (size_t i = 0; builtin_at(i); i++) {
    int d = edit_distance(name, builtin_at(i)->name);
    if (d < bestd) { bestd = d; best = builtin_at(i)->name; }
  }
  return best;
}
