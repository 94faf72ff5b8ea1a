/* check.c: a static check of a chunk without running it (blo --check).
 * It reports names that nothing binds, builtins called with the wrong number
 * of positional arguments and unknown solve options, each as a located
 * error through the host's error callback.  It is deliberately lenient
 * where the language is dynamic: any name a top-level statement binds
 * anywhere in the chunk (let, fn, for, problem and its variables) counts as
 * a global everywhere, so a function that uses a global defined further down
 * is not reported; inside a function, its parameters and every name it binds
 * count.  A clean check therefore does not promise the script runs. */
#include "interp.h"
#include "bilevel.h"

#include <stdlib.h>
#include <string.h>

const char *bilevel_solve_key(size_t i);   /* runtime/bilevel.c */

typedef struct name_set {
  const char **v;
  int n, cap;
} name_set;

typedef struct checker {
  blo_state *S;
  name_set globals;
  int nerr;
  int oom;
  void (*report)(blo_state *S);
} checker;

static void set_add(checker *ck, name_set *s, const char *name) {
  if (!name) return;
  for (int i = 0; i < s->n; i++)
    if (strcmp(s->v[i], name) == 0) return;
  if (s->n == s->cap) {
    int cap = s->cap ? s->cap * 2 : 32;
    const char **p = realloc(s->v, (size_t)cap * sizeof *p);
    if (!p) { ck->oom = 1; return; }
    s->v = p;
    s->cap = cap;
  }
  s->v[s->n++] = name;
}

static int set_has(const name_set *s, const char *name) {
  for (int i = 0; s && i < s->n; i++)
    if (strcmp(s->v[i], name) == 0) return 1;
  return 0;
}

/* Every name n binds, not descending into function bodies (their names are
 * their own).  A problem's variables and `every` names are globals while it
 * is solved, so functions its objectives call may use them. */
static void collect(checker *ck, name_set *s, const ast_node *n) {
  if (!n) return;
  switch (n->kind) {
  case N_LET: case N_FOR: case N_PROBLEM: case N_VARDECL: case N_EVERY:
    set_add(ck, s, n->name);
    break;
  case N_FNDEF:
    set_add(ck, s, n->name);
    return;
  default:
    break;
  }
  collect(ck, s, n->a);
  collect(ck, s, n->b);
  collect(ck, s, n->c);
  for (int i = 0; i < n->nkids; i++) collect(ck, s, n->kids[i]);
}

static void flag(checker *ck, const ast_node *at, const char *fmt, const char *a, const char *b) {
  if (b) interp_error(ck->S, at, fmt, a, b);
  else interp_error(ck->S, at, fmt, a);
  ck->S->err.status = BLO_ERROR_RUNTIME;
  ck->report(ck->S);
  ck->nerr++;
}

/* 1 if name is bound where it is used (locals may be NULL: top level). */
static int bound(checker *ck, const name_set *locals, const char *name) {
  return set_has(locals, name) || set_has(&ck->globals, name) || env_lookup(ck->S, name) != NULL;
}

static void walk(checker *ck, const name_set *locals, const ast_node *n);

/* "did you mean": the chunk's own names first (the run would know them by
 * then), then the state's globals and the builtins. */
static const char *suggest(checker *ck, const name_set *locals, const char *name) {
  int n = (locals ? locals->n : 0) + ck->globals.n;
  const char **cands = malloc(((size_t)n + 1) * sizeof *cands);
  const char *sug = NULL;
  if (cands) {
    int k = 0;
    for (int i = 0; locals && i < locals->n; i++) cands[k++] = locals->v[i];
    for (int i = 0; i < ck->globals.n; i++) cands[k++] = ck->globals.v[i];
    cands[k] = NULL;
    sug = env_suggest_in(name, cands);
    free(cands);
  }
  return sug ? sug : env_suggest(ck->S, name);
}

static void walk_function(checker *ck, const ast_node *fn) {
  name_set loc = {0};
  for (int i = 0; i < fn->nkids; i++) set_add(ck, &loc, fn->kids[i]->name);
  collect(ck, &loc, fn->a);
  walk(ck, &loc, fn->a);
  free(loc.v);
}

static void walk_call(checker *ck, const name_set *locals, const ast_node *n) {
  int npos = 0;
  for (int i = 0; i < n->nkids; i++)
    if (n->kids[i]->kind != N_FIELD) npos++;
  if (n->a->kind == N_NAME && !bound(ck, locals, n->a->name)) {
    const builtin_def *b = builtin_find(n->a->name);
    if (!b) {
      const char *sug = suggest(ck, locals, n->a->name);
      if (sug) flag(ck, n->a, "unknown function '%s' (did you mean '%s'?)", n->a->name, sug);
      else flag(ck, n->a, "unknown function '%s'", n->a->name, NULL);
    } else if (b->special & BI_CONST) {
      flag(ck, n->a, "'%s' is a constant, not a function", b->name, NULL);
    } else if (npos < b->min_args || (b->max_args >= 0 && npos > b->max_args)) {
      char msg[160];
      if (b->min_args == b->max_args)
        snprintf(msg, sizeof msg, "%s() takes %d argument%s, got %d", b->name, b->min_args,
                 b->min_args == 1 ? "" : "s", npos);
      else
        snprintf(msg, sizeof msg, "%s() got %d positional arguments", b->name, npos);
      flag(ck, n, "%s (usage: %s)", msg, b->sig);
    }
  } else {
    walk(ck, locals, n->a);
  }
  for (int i = 0; i < n->nkids; i++) walk(ck, locals, n->kids[i]);
}

static void walk_solve(checker *ck, const name_set *locals, const ast_node *n) {
  if (!bound(ck, locals, n->name)) flag(ck, n, "unknown problem '%s'", n->name, NULL);
  if (n->a && n->a->kind == N_RECORD) {
    const char *keys[64];
    size_t nk = 0;
    for (const char *k; nk + 1 < sizeof keys / sizeof keys[0] && (k = bilevel_solve_key(nk)) != NULL; nk++) keys[nk] = k;
    keys[nk] = NULL;
    for (int i = 0; i < n->a->nkids; i++) {
      const ast_node *f = n->a->kids[i];
      int known = 0;
      for (size_t j = 0; j < nk && !known; j++) known = strcmp(keys[j], f->name) == 0;
      if (known) continue;
      const char *sug = env_suggest_in(f->name, keys);
      if (sug) flag(ck, f, "unknown solve option '%s' (did you mean '%s'?)", f->name, sug);
      else flag(ck, f, "unknown solve option '%s'", f->name, NULL);
    }
  }
  walk(ck, locals, n->a);
}

static void walk(checker *ck, const name_set *locals, const ast_node *n) {
  if (!n) return;
  switch (n->kind) {
  case N_NAME:
    if (!bound(ck, locals, n->name) && !builtin_find(n->name)) {
      const char *sug = suggest(ck, locals, n->name);
      if (sug) flag(ck, n, "unknown name '%s' (did you mean '%s'?)", n->name, sug);
      else flag(ck, n, "unknown name '%s'", n->name, NULL);
    }
    return;
  case N_CALL: walk_call(ck, locals, n); return;
  case N_SOLVE: walk_solve(ck, locals, n); return;
  case N_FNDEF: walk_function(ck, n); return;
  case N_FIELD: walk(ck, locals, n->a); return;      /* the name is a field, not a use */
  case N_GETFIELD: walk(ck, locals, n->a); return;
  case N_VARDECL:
    walk(ck, locals, n->a);
    walk(ck, locals, n->b);
    /* `in simplex` and `in ball(r)` name constraints, not variables */
    if (n->c && n->c->kind == N_NAME && strcmp(n->c->name, "simplex") == 0) return;
    if (n->c && n->c->kind == N_CALL && n->c->a->kind == N_NAME && strcmp(n->c->a->name, "ball") == 0) {
      for (int i = 0; i < n->c->nkids; i++) walk(ck, locals, n->c->kids[i]);
      return;
    }
    walk(ck, locals, n->c);
    return;
  default:
    walk(ck, locals, n->a);
    walk(ck, locals, n->b);
    walk(ck, locals, n->c);
    for (int i = 0; i < n->nkids; i++) walk(ck, locals, n->kids[i]);
    return;
  }
}

int check_chunk(blo_state *S, chunk *c, void (*report)(blo_state *S)) {
  checker ck = {S, {0}, 0, 0, report};
  chunk *saved = S->cur_chunk;
  S->cur_chunk = c;
  collect(&ck, &ck.globals, c->root);
  walk(&ck, NULL, c->root);
  S->cur_chunk = saved;
  free(ck.globals.v);
  if (ck.oom) {
    interp_error(S, NULL, "out of memory while checking");
    S->err.status = BLO_ERROR_MEMORY;
    report(S);
    ck.nerr++;
  }
  return ck.nerr;
}
