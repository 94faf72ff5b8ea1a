/* env.c: variable lookup.  Globals live in an open-addressing hash table;
 * locals in small per-call/per-block arrays searched linearly (they are few). */
#include "interp.h"

#include <stdint.h>
#include <stdlib.h>
#include <ctype.h>
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

/* Edit distance counting an insertion, a deletion, a substitution or a swap
 * of two adjacent characters as one edit (the optimal string alignment
 * distance: "sigmiod" is one edit from "sigmoid"); 99 for names over 40
 * characters. */
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
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < c)
        c = d[i - 2][j - 2] + 1;
      d[i][j] = c;
    }
  return d[la][lb];
}

/* lng is shrt with one character added that repeats its neighbour
 * ("cgg" from "cg") */
static int doubles_a_letter(const char *lng, const char *shrt) {
  size_t i = 0;
  while (shrt[i] && lng[i] == shrt[i]) i++;
  if (strcmp(lng + i + 1, shrt + i) != 0) return 0;
  return (i > 0 && lng[i - 1] == lng[i]) || lng[i + 1] == lng[i];
}

/* a and b, of one length, differ by a swap of two adjacent characters
 * ("tna", "tan"), or in one character by its case ("k", "K") or one digit
 * for another ("p2", "p1") */
static int slip_of_same_length(const char *a, const char *b) {
  size_t n = strlen(a), i = 0;
  while (i < n && a[i] == b[i]) i++;
  if (i == n) return 0;
  if (strcmp(a + i + 1, b + i + 1) == 0)
    return tolower((unsigned char)a[i]) == tolower((unsigned char)b[i]) ||
           (isdigit((unsigned char)a[i]) && isdigit((unsigned char)b[i]));
  return i + 1 < n && a[i] == b[i + 1] && a[i + 1] == b[i] && strcmp(a + i + 2, b + i + 2) == 0;
}

/* The rule for "did you mean": cand, d edits away from the unknown name, is
 * suggested only when it looks like a misspelling of that name rather than
 * another word.
 *  - At most max(1, n / 3) edits, n the length of the name typed: one edit up
 *    to 5 characters (lamda -> lambda, iter -> iters), two up to 8 (lenght ->
 *    length counts one), three up to 11.
 *  - When either name has fewer than 4 characters, one letter changed, added
 *    or dropped usually makes another word (tan and tanh, erf and erfc, int
 *    and inv, cot and cos): then only a slip is suggested, a swap of two
 *    adjacent characters (tna -> tan), a change of case (k -> K), a digit for
 *    a digit (p2 -> p1) or a doubled character (cgg -> cg).
 *  An exact match is never suggested. */
static int suggestible(const char *name, const char *cand, int d) {
  size_t n = strlen(name), m = strlen(cand);
  if (d <= 0 || d > (n / 3 > 1 ? (int)(n / 3) : 1)) return 0;
  if (n >= 4 && m >= 4) return 1;
  if (d != 1) return 0;
  if (n == m) return slip_of_same_length(name, cand);
  return n > m ? doubles_a_letter(name, cand) : doubles_a_letter(cand, name);
}

/* Keeps cand in *best when it is suggestible and closer than *bestd. */
static void consider(const char *name, const char *cand, int *bestd, const char **best) {
  int d = edit_distance(name, cand);
  if (d < *bestd && suggestible(name, cand, d)) {
    *bestd = d;
    *best = cand;
  }
}

const char *env_suggest_in(const char *name, const char *const *cands) {
  const char *best = NULL;
  int bestd = 99;
  for (int i = 0; cands[i]; i++) consider(name, cands[i], &bestd, &best);
  return best;
}

const char *env_suggest(blo_state *S, const char *name) {
  const char *best = NULL;
  int bestd = 99;
  for (scope *sc = S->sc; sc; sc = sc->parent) {
    for (int i = 0; i < sc->n; i++) consider(name, sc->vars[i].name, &bestd, &best);
    if (sc->is_fn) break;
  }
  for (size_t i = 0; i < S->globals.cap; i++)
    if (S->globals.slots[i].name) consider(name, S->globals.slots[i].name, &bestd, &best);
  for (size_t i = 0; builtin_at(i); i++) consider(name, builtin_at(i)->name, &bestd, &best);
  return best;
}
