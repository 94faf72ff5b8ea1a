/* api.c: the public embedding API (include/blo.h) over the interpreter. */
#include "interp.h"
#include "parse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void env_free_globals(blo_state *S);
void interp_syntax_error(blo_state *S, const chunk *c, int line, int col, const char *msg);
void problems_free_all(blo_state *S);   /* runtime/bilevel.c */

static void *default_realloc(void *ud, void *ptr, size_t old, size_t n) {
  (void)ud; (void)old;
  if (n == 0) { free(ptr); return NULL; }
  return realloc(ptr, n);
}

void blo_config_defaults(blo_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->realloc_fn = default_realloc;
  cfg->allow_files = 1;
}

blo_state *blo_open(const blo_config *cfg) {
  blo_config c;
  if (cfg) c = *cfg;
  else blo_config_defaults(&c);
  if (!c.realloc_fn) c.realloc_fn = default_realloc;
  blo_state *S = c.realloc_fn(c.alloc_ud, NULL, 0, sizeof *S);
  if (!S) return NULL;
  memset(S, 0, sizeof *S);
  S->cfg = c;
  tn_ctx_init(&S->tn, (tn_reallocf)c.realloc_fn, c.alloc_ud);
  S->tn.mem_cap = c.mem_cap;
  tn_rng_seed(&S->rng, c.seed);
  S->ret = v_nil();
  S->last = v_nil();
  S->err.message = "";
  S->err.file = "";
  olist *args = list_new(S, 0);
  if (!args) { blo_close(S); return NULL; }
  value av = v_nil();
  av.kind = V_LIST;
  av.u.o = &args->h;
  if (env_set_global(S, "args", av)) { blo_close(S); return NULL; }
  return S;
}

void blo_close(blo_state *S) {
  if (!S) return;
  v_release(S, &S->ret);
  v_release(S, &S->last);
  env_free_globals(S);
  problems_free_all(S);
  if (S->tape) ad_tape_free(&S->tn, S->tape);
  chunk *c = S->chunks;
  while (c) {
    chunk *next = c->next;
    ast_arena_free(c->arena);
    free(c->name);
    free(c->src);
    free(c);
    c = next;
  }
  tn_ctx_free(&S->tn);
  S->cfg.realloc_fn(S->cfg.alloc_ud, S, sizeof *S, 0);
}

typedef struct { blo_state *S; chunk *c; } syntax_ctx;

static void on_syntax_error(void *ud, const char *name, int line, int col, const char *msg) {
  syntax_ctx *sc = ud;
  (void)name;
  interp_syntax_error(sc->S, sc->c, line, col, msg);
  if (sc->S->cfg.error_fn) {
    strbuf sb = {0};
    interp_format_error(sc->S, &sb);
    if (sb.s) sc->S->cfg.error_fn(sc->S->cfg.error_ud, sb.s);
    sb_free(&sb);
  }
}

chunk *chunk_parse(blo_state *S, const char *name, const char *src, size_t len) {
  chunk *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->name = strdup(name ? name : "<input>");
  c->src = malloc(len + 1);
  if (!c->name || !c->src) { free(c->name); free(c->src); free(c); return NULL; }
  memcpy(c->src, src, len);
  c->src[len] = 0;
  c->len = len;
  parse_state ps;
  syntax_ctx sc = {S, c};
  int nerr = parse_chunk(&ps, c->name, c->src, len, on_syntax_error, &sc);
  c->arena = ps.arena;
  c->root = ps.root;
  /* Keep the chunk even on failure: the error text points into its source. */
  c->next = S->chunks;
  S->chunks = c;
  if (nerr || !c->root) {
    if (!nerr) interp_syntax_error(S, c, 0, 0, "out of memory while parsing");
    return NULL;
  }
  return c;
}

static void clear_error(blo_state *S) {
  S->err.status = BLO_OK;
  S->err_msg[0] = 0;
  S->err.line = S->err.col = 0;
}

int blo_eval_string(blo_state *S, const char *name, const char *src, size_t len) {
  if (!S || !src) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  chunk *c = chunk_parse(S, name, src, len);
  if (!c) return S->err.status ? (int)S->err.status : BLO_ERROR_SYNTAX;
  int rc = exec_chunk(S, c);
  if (rc != X_OK) {
    if (S->err.status == BLO_OK) S->err.status = BLO_ERROR_RUNTIME;
    if (S->cfg.error_fn) {
      strbuf sb = {0};
      interp_format_error(S, &sb);
      if (sb.s) S->cfg.error_fn(S->cfg.error_ud, sb.s);
      sb_free(&sb);
    }
    return S->err.status;
  }
  return BLO_OK;
}

int blo_eval_file(blo_state *S, const char *path) {
  if (!S || !path) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  FILE *f = fopen(path, "rb");
  if (!f) {
    char msg[512];
    snprintf(msg, sizeof msg, "cannot open '%s': %s", path, strerror(errno));
    interp_error(S, NULL, "%s", msg);
    if (S->cfg.error_fn) {
      strbuf sb = {0};
      interp_format_error(S, &sb);
      if (sb.s) S->cfg.error_fn(S->cfg.error_ud, sb.s);
      sb_free(&sb);
    }
    return S->err.status;
  }
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len + 4096 > cap) {
      cap = cap ? cap * 2 : 8192;
      char *nb = realloc(buf, cap);
      if (!nb) { free(buf); fclose(f); return BLO_ERROR_MEMORY; }
      buf = nb;
    }
    size_t k = fread(buf + len, 1, cap - len, f);
    len += k;
    if (k == 0) break;
  }
  fclose(f);
  int rc = blo_eval_string(S, path, buf ? buf : "", len);
  free(buf);
  return rc;
}

const blo_error *blo_last_error(const blo_state *S) { return &S->err; }

const char *blo_last_error_text(blo_state *S) {
  static const char none[] = "";
  if (S->err.status == BLO_OK) return none;
  strbuf sb = {0};
  interp_format_error(S, &sb);
  size_t n = sb.n;
  char *dst = S->err_text;
  if (n >= sizeof S->err_text) n = sizeof S->err_text - 1;
  if (sb.s) memcpy(dst, sb.s, n);
  dst[n] = 0;
  sb_free(&sb);
  return dst;
}

void interp_write(blo_state *S, const char *s, size_t n) {
  if (S->cfg.write_fn) S->cfg.write_fn(S->cfg.write_ud, s, n);
}

int blo_set_args(blo_state *S, int argc, const char *const *argv) {
  olist *l = list_new(S, argc);
  if (!l) return BLO_ERROR_MEMORY;
  value lv = v_nil();
  lv.kind = V_LIST;
  lv.u.o = &l->h;
  for (int i = 0; i < argc; i++) {
    value s = v_str(S, argv[i], strlen(argv[i]));
    if (s.kind != V_STR || list_push(S, l, s)) { v_release(S, &lv); return BLO_ERROR_MEMORY; }
  }
  return env_set_global(S, "args", lv) ? BLO_ERROR_MEMORY : BLO_OK;
}

void blo_set_interrupt_flag(blo_state *S, volatile int *flag) {
  S->interrupt = (volatile sig_atomic_t *)flag;
}

static int api_error(blo_state *S, blo_status st, const char *msg, const char *name) {
  interp_error(S, NULL, msg, name);
  S->err.status = st;
  return st;
}

int blo_set_tensor(blo_state *S, const char *name, int rank, const size_t *shape, const double *data) {
  clear_error(S);
  if (rank < 0 || rank > TN_MAX_RANK || !name || (!data && rank > 0))
    return api_error(S, BLO_ERROR_ARGUMENT, "blo_set_tensor: bad rank or data for '%s'", name ? name : "");
  blo_tensor *t = tn_from(&S->tn, rank, shape, data);
  if (!t) return api_error(S, BLO_ERROR_MEMORY, "blo_set_tensor: cannot allocate '%s'", name);
  return env_set_global(S, name, v_tensor(t)) ? BLO_ERROR_MEMORY : BLO_OK;
}

int blo_set_number(blo_state *S, const char *name, double x) {
  clear_error(S);
  if (!name) return BLO_ERROR_ARGUMENT;
  return env_set_global(S, name, v_num(x)) ? BLO_ERROR_MEMORY : BLO_OK;
}

static value *global_slot(blo_state *S, const char *name) {
  scope *saved = S->sc;
  S->sc = NULL;
  value *v = name ? env_lookup(S, name) : NULL;
  S->sc = saved;
  return v;
}

int blo_get_number(blo_state *S, const char *name, double *out) {
  clear_error(S);
  value *v = global_slot(S, name);
  if (!v) return api_error(S, BLO_ERROR_ARGUMENT, "no global named '%s'", name ? name : "");
  if (v_to_double(*v, out)) return api_error(S, BLO_ERROR_ARGUMENT, "'%s' is not a number", name);
  return BLO_OK;
}

int blo_get_shape(blo_state *S, const char *name, int *rank, size_t *shape) {
  clear_error(S);
  value *v = global_slot(S, name);
  if (!v) return api_error(S, BLO_ERROR_ARGUMENT, "no global named '%s'", name ? name : "");
  if (v->kind == V_NUM) { *rank = 0; return BLO_OK; }
  if (v->kind != V_TENSOR) return api_error(S, BLO_ERROR_ARGUMENT, "'%s' is not a tensor", name);
  *rank = v->u.t->rank;
  for (int i = 0; i < v->u.t->rank; i++) shape[i] = v->u.t->shape[i];
  return BLO_OK;
}

int blo_get_tensor(blo_state *S, const char *name, double *out, size_t n) {
  clear_error(S);
  value *v = global_slot(S, name);
  if (!v) return api_error(S, BLO_ERROR_ARGUMENT, "no global named '%s'", name ? name : "");
  if (v->kind == V_NUM) {
    if (n < 1) return api_error(S, BLO_ERROR_ARGUMENT, "buffer too small for '%s'", name);
    out[0] = v->u.num;
    return BLO_OK;
  }
  if (v->kind != V_TENSOR) return api_error(S, BLO_ERROR_ARGUMENT, "'%s' is not a tensor", name);
  if (n < v->u.t->size) return api_error(S, BLO_ERROR_ARGUMENT, "buffer too small for '%s'", name);
  memcpy(out, v->u.t->data, v->u.t->size * sizeof(double));
  return BLO_OK;
}

int blo_view_tensor(blo_state *S, const char *name, const double **data, size_t *size) {
  clear_error(S);
  value *v = global_slot(S, name);
  if (!v) return api_error(S, BLO_ERROR_ARGUMENT, "no global named '%s'", name ? name : "");
  if (v->kind == V_NUM) { *data = &v->u.num; *size = 1; return BLO_OK; }
  if (v->kind != V_TENSOR) return api_error(S, BLO_ERROR_ARGUMENT, "'%s' is not a tensor", name);
  *data = v->u.t->data;
  *size = v->u.t->size;
  return BLO_OK;
}

int blo_get_field_number(blo_state *S, const char *record, const char *field, double *out) {
  clear_error(S);
  value *v = global_slot(S, record);
  if (!v || v->kind != V_REC) return api_error(S, BLO_ERROR_ARGUMENT, "no global record named '%s'", record ? record : "");
  value *f = rec_get((orec *)v->u.o, field);
  if (!f || v_to_double(*f, out)) return api_error(S, BLO_ERROR_ARGUMENT, "record has no numeric field '%s'", field);
  return BLO_OK;
}
