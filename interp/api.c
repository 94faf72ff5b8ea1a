/* api.c: the public embedding API (include/blo.h) over the interpreter.
 * Natives, returned strings and the progress hook live in native.c. */
#include "interp.h"
#include "parse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void env_free_globals(blo_state *S);
void interp_syntax_error(blo_state *S, const chunk *c, int line, int col, const char *msg);
void problems_free_all(blo_state *S);   /* runtime/bilevel.c */
void complete_free(blo_state *S);       /* complete.c */
/* native.c */
int ext_open(blo_state *S);
void ext_close(blo_state *S);
const char *ext_keep_text(blo_state *S, strbuf *sb);
void ext_swap_progress(blo_state *S, blo_progress_fn *fn, void **ud);

/* Echoed tensors larger than this are summarised (print shows them whole). */
enum { ECHO_MAX_ELEMS = 1000 };

static void *default_realloc(void *ud, void *ptr, size_t old, size_t n) {
  (void)ud; (void)old;
  if (n == 0) { free(ptr); return NULL; }
  return realloc(ptr, n);
}

const char *blo_version(void) { return BLO_VERSION; }

void blo_config_defaults(blo_config *cfg) {
  if (!cfg) return;
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
  if (ext_open(S)) { blo_close(S); return NULL; }
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
  S->tape = NULL;
  chunk *c = S->chunks;
  while (c) {
    chunk *next = c->next;
    ast_arena_free(c->arena);
    free(c->name);
    free(c->src);
    free(c);
    c = next;
  }
  complete_free(S);
  /* Natives go last: values and tape nodes point at their entries. */
  ext_close(S);
  tn_ctx_free(&S->tn);
  S->cfg.realloc_fn(S->cfg.alloc_ud, S, sizeof *S, 0);
}

/* ---- errors ---- */

/* Hands the current error to the host's callback, if any. */
static void report(blo_state *S) {
  if (!S->cfg.error_fn) return;
  strbuf sb = {0};
  interp_format_error(S, &sb);
  if (sb.s) S->cfg.error_fn(S->cfg.error_ud, sb.s);
  sb_free(&sb);
}

static void clear_error(blo_state *S) {
  S->err.status = BLO_OK;
  S->err_msg[0] = 0;
  S->err_chunk[0] = 0;
  S->err_src_line[0] = 0;
  S->err.message = S->err_msg;
  S->err.file = S->err_chunk;
  S->err.line = S->err.col = 0;
}

/* Records an API misuse (no location) and returns its status. */
static int api_error(blo_state *S, blo_status st, const char *fmt, const char *name) {
  interp_error(S, NULL, fmt, name ? name : "");
  S->err.status = st;
  return st;
}

const blo_error *blo_last_error(const blo_state *S) {
  static const blo_error none = {BLO_ERROR_ARGUMENT, "no state", "", 0, 0};
  return S ? &S->err : &none;
}

const char *blo_last_error_text(blo_state *S) {
  if (!S || S->err.status == BLO_OK) return "";
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

/* ---- evaluation ---- */

typedef struct { blo_state *S; chunk *c; } syntax_ctx;

static void on_syntax_error(void *ud, const char *name, int line, int col, const char *msg) {
  syntax_ctx *sc = ud;
  (void)name;
  interp_syntax_error(sc->S, sc->c, line, col, msg);
  report(sc->S);
}

/* Parses src into a new chunk of S (as statements, or with fields set as a
 * record's fields only: its root is then an N_RECORD). */
static chunk *chunk_parse_as(blo_state *S, const char *name, const char *src, size_t len, int fields) {
  chunk *c = calloc(1, sizeof *c);
  if (!c) { interp_error(S, NULL, "out of memory while parsing"); report(S); return NULL; }
  c->name = strdup(name ? name : "<input>");
  c->src = malloc(len + 1);
  if (!c->name || !c->src) {
    free(c->name);
    free(c->src);
    free(c);
    interp_error(S, NULL, "out of memory while parsing");
    report(S);
    return NULL;
  }
  memcpy(c->src, src, len);
  c->src[len] = 0;
  c->len = len;
  parse_state ps;
  syntax_ctx sc = {S, c};
  int nerr = fields ? parse_fields(&ps, c->name, c->src, len, on_syntax_error, &sc)
                   : parse_chunk(&ps, c->name, c->src, len, on_syntax_error, &sc);
  c->arena = ps.arena;
  c->root = ps.root;
  /* Keep the chunk even on failure: the error text points into its source. */
  c->next = S->chunks;
  S->chunks = c;
  /* the parser reported (and located) it; memory is a status of its own */
  if (ps.oom) S->err.status = BLO_ERROR_MEMORY;
  if (nerr || !c->root) {
    if (!nerr) {
      interp_syntax_error(S, c, 0, 0, "out of memory while parsing");
      S->err.status = BLO_ERROR_MEMORY;
      report(S);
    }
    return NULL;
  }
  return c;
}

chunk *chunk_parse(blo_state *S, const char *name, const char *src, size_t len) {
  return chunk_parse_as(S, name, src, len, 0);
}

/* The status of a failed chunk_parse, reported to the host. */
static int parse_failed(blo_state *S) {
  if (S->err.status == BLO_OK) S->err.status = BLO_ERROR_SYNTAX;
  return S->err.status;
}

static int run_chunk(blo_state *S, chunk *c);

static int eval_text(blo_state *S, const char *name, const char *src, size_t len, chunk **pc) {
  clear_error(S);
  v_release(S, &S->last);
  chunk *c = chunk_parse(S, name, src, len);
  if (pc) *pc = c;
  if (!c) return parse_failed(S);
  return run_chunk(S, c);
}

static int run_chunk(blo_state *S, chunk *c) {
  /* A chunk's top level is the global scope, even when a native evaluates it. */
  scope *saved = S->sc;
  S->sc = NULL;
  int rc = exec_chunk(S, c);
  S->sc = saved;
  if (rc != EV_OK) {
    if (S->err.status == BLO_OK) S->err.status = BLO_ERROR_RUNTIME;
    report(S);
    return S->err.status;
  }
  return BLO_OK;
}

int blo_eval_string(blo_state *S, const char *name, const char *src, size_t len) {
  if (!S) return BLO_ERROR_ARGUMENT;
  if (!src) { clear_error(S); return api_error(S, BLO_ERROR_ARGUMENT, "blo_eval_string: no source%s", ""); }
  return eval_text(S, name, src, len, NULL);
}

/* An error about the script file itself: "path: error: msg", no line. */
static int file_error(blo_state *S, const char *path, const char *msg) {
  chunk file = {0};
  file.name = (char *)path;
  interp_syntax_error(S, &file, 0, 0, msg);
  S->err.status = BLO_ERROR_RUNTIME;
  report(S);
  return S->err.status;
}

/* Parses src and checks it without running anything (interp/check.c):
 * every problem is reported; the status is that of the last one. */
static int check_text(blo_state *S, const char *name, const char *src, size_t len) {
  clear_error(S);
  chunk *c = chunk_parse(S, name, src, len);
  if (!c) return parse_failed(S);
  return check_chunk(S, c, report) ? S->err.status : BLO_OK;
}

int blo_check_string(blo_state *S, const char *name, const char *src, size_t len) {
  if (!S) return BLO_ERROR_ARGUMENT;
  if (!src) { clear_error(S); return api_error(S, BLO_ERROR_ARGUMENT, "blo_check_string: no source%s", ""); }
  return check_text(S, name, src, len);
}

static int file_run(blo_state *S, const char *path, int check);

int blo_eval_file(blo_state *S, const char *path) { return file_run(S, path, 0); }
int blo_check_file(blo_state *S, const char *path) { return file_run(S, path, 1); }

static int file_run(blo_state *S, const char *path, int check) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  if (!path) return api_error(S, BLO_ERROR_ARGUMENT, "%s: no path", check ? "blo_check_file" : "blo_eval_file");
  FILE *f = fopen(path, "rb");
  if (!f) {
    char msg[512];
    snprintf(msg, sizeof msg, "cannot open '%s': %s", path, strerror(errno));
    interp_error(S, NULL, "%s", msg);
    report(S);
    return S->err.status;
  }
  /* fopen() accepts a directory on Linux; only the read would fail. */
  struct stat st;
  if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
    fclose(f);
    return file_error(S, path, "is a directory");
  }
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len + 4096 > cap) {
      cap = cap ? cap * 2 : 8192;
      char *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(f);
        interp_error(S, NULL, "out of memory reading '%s'", path);
        report(S);
        return S->err.status;
      }
      buf = nb;
    }
    size_t k = fread(buf + len, 1, cap - len, f);
    len += k;
    if (k == 0) break;
  }
  if (ferror(f)) {
    int e = errno;
    free(buf);
    fclose(f);
    return file_error(S, path, e ? strerror(e) : "read error");
  }
  fclose(f);
  int rc = check ? check_text(S, path, buf ? buf : "", len) : eval_text(S, path, buf ? buf : "", len, NULL);
  free(buf);
  return rc;
}

static void format_echo(strbuf *sb, value v) {
  if (v.kind == V_TENSOR && v.u.t->size > ECHO_MAX_ELEMS) {
    char d[96];
    v_describe(v, d, sizeof d);
    sb_printf(sb, "<%s, %zu elements>", d, v.u.t->size);
    return;
  }
  v_print(sb, v, 1);
}

int blo_eval_repl(blo_state *S, const char *name, const char *src, size_t len, const char **echo) {
  if (echo) *echo = NULL;
  if (!S) return BLO_ERROR_ARGUMENT;
  if (!src) { clear_error(S); return api_error(S, BLO_ERROR_ARGUMENT, "blo_eval_repl: no source%s", ""); }
  chunk *c = NULL;
  int rc = eval_text(S, name ? name : "<repl>", src, len, &c);
  /* Only the chunk's own last statement is echoed: S->last may also have been
   * set by expression statements inside functions it called. */
  if (rc == BLO_OK && echo && c && c->root->nkids > 0 && c->root->kids[c->root->nkids - 1]->kind == N_EXPR &&
      S->last.kind != V_NIL) {
    strbuf sb = {0};
    format_echo(&sb, S->last);
    *echo = ext_keep_text(S, &sb);
    if (!*echo) {
      v_release(S, &S->last);
      rc = api_error(S, BLO_ERROR_MEMORY, "out of memory formatting the value%s", "");
      report(S);
      return rc;
    }
  }
  v_release(S, &S->last);
  return rc;
}

static void ignore_syntax(void *ud, const char *name, int line, int col, const char *msg) {
  (void)ud; (void)name; (void)line; (void)col; (void)msg;
}

int blo_input_complete(const char *src, size_t len) {
  if (!src) return 1;
  size_t n = len;
  while (n > 0 && (src[n - 1] == '\n' || src[n - 1] == '\r' || src[n - 1] == ' ' || src[n - 1] == '\t')) n--;
  if (n > 0 && src[n - 1] == '\\') return 0;   /* explicit line continuation */
  char *copy = malloc(len + 1);
  if (!copy) return 1;
  memcpy(copy, src, len);
  copy[len] = 0;
  parse_state ps;
  parse_chunk(&ps, "<input>", copy, len, ignore_syntax, NULL);
  int incomplete = ps.incomplete;
  ast_arena_free(ps.arena);
  free(copy);
  return !incomplete;
}

int blo_set_args(blo_state *S, int argc, const char *const *argv) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  if (argc < 0 || (argc > 0 && !argv)) return api_error(S, BLO_ERROR_ARGUMENT, "blo_set_args: bad arguments%s", "");
  olist *l = list_new(S, argc);
  if (!l) return api_error(S, BLO_ERROR_MEMORY, "blo_set_args: out of memory%s", "");
  value lv = v_nil();
  lv.kind = V_LIST;
  lv.u.o = &l->h;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i] ? argv[i] : "";
    value s = v_str(S, a, strlen(a));
    if (s.kind != V_STR || list_push(S, l, s)) {
      v_release(S, &lv);
      return api_error(S, BLO_ERROR_MEMORY, "blo_set_args: out of memory%s", "");
    }
  }
  if (env_set_global(S, "args", lv)) return api_error(S, BLO_ERROR_MEMORY, "blo_set_args: out of memory%s", "");
  return BLO_OK;
}

void blo_set_interrupt_flag(blo_state *S, volatile int *flag) {
  if (S) S->interrupt = (volatile sig_atomic_t *)flag;
}

void interp_write(blo_state *S, const char *s, size_t n) {
  if (S->cfg.write_fn) S->cfg.write_fn(S->cfg.write_ud, s, n);
}

/* ---- values by path ---- */

static value *global_slot(blo_state *S, const char *name) {
  scope *saved = S->sc;
  S->sc = NULL;           /* the host sees globals, even from inside a native */
  value *v = name ? env_lookup(S, name) : NULL;
  S->sc = saved;
  return v;
}

/* "name", "name.field.field", "name[2]" or "r.hist[0].x": a borrowed slot,
 * NULL if absent.  A part is an identifier, then any number of 0-based list
 * indexes in brackets; dots step into records. */
static value *resolve(blo_state *S, const char *path) {
  if (!path) return NULL;
  char part[256];
  const char *p = path;
  value *v = NULL;
  for (int first = 1;; first = 0) {
    size_t n = strcspn(p, ".[");
    if (n == 0 || n >= sizeof part) return NULL;
    memcpy(part, p, n);
    part[n] = 0;
    if (!ast_is_name(part)) return NULL;
    if (first) {
      v = global_slot(S, part);
    } else {
      if (v->kind != V_REC) return NULL;
      v = rec_get((orec *)v->u.o, part);
    }
    p += n;
    while (v && *p == '[') {
      /* digits only: no sign, no spaces, no empty index */
      size_t k = 0, d = strspn(p + 1, "0123456789");
      if (d == 0 || d > 9 || p[1 + d] != ']') return NULL;
      for (size_t i = 0; i < d; i++) k = k * 10 + (size_t)(p[1 + i] - '0');
      if (v->kind != V_LIST || k >= (size_t)((olist *)v->u.o)->n) return NULL;
      v = &((olist *)v->u.o)->items[k];
      p += d + 2;
    }
    if (!v || !*p) return v;
    if (*p != '.') return NULL;
    p++;
  }
}

static int not_found(blo_state *S, const char *path) {
  /* say why a path that no script could write is refused */
  char part[256];
  for (const char *p = path; p;) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    if (n >= sizeof part) n = sizeof part - 1;
    memcpy(part, p, n);
    part[n] = 0;
    if (ast_is_keyword(part)) {
      char msg[400];
      snprintf(msg, sizeof msg, "'%.200s' is not a valid path: '%.40s' is a keyword", path, part);
      return api_error(S, BLO_ERROR_ARGUMENT, "%s", msg);
    }
    p = dot ? dot + 1 : NULL;
  }
  return api_error(S, BLO_ERROR_ARGUMENT, "no value named '%s'", path);
}

static int wrong_kind(blo_state *S, const char *path, value *v, const char *want) {
  char d[64], msg[512];
  v_describe(*v, d, sizeof d);
  snprintf(msg, sizeof msg, "'%.200s' is a %s, not %s", path, d, want);
  return api_error(S, BLO_ERROR_ARGUMENT, "%s", msg);
}

/* A name the host binds or reads must be one a script could write: an
 * identifier and not a keyword.  Returns BLO_OK or records the error. */
static int check_name(blo_state *S, const char *who, const char *what, const char *name) {
  if (ast_is_name(name)) return BLO_OK;
  char msg[400];
  snprintf(msg, sizeof msg, "%s: '%.200s' is %s, not a valid %s", who, name ? name : "(null)",
           ast_is_keyword(name) ? "a keyword" : "not an identifier", what);
  return api_error(S, BLO_ERROR_ARGUMENT, "%s", msg);
}

static int bind(blo_state *S, const char *name, value v) {
  if (env_set_global(S, name, v)) return api_error(S, BLO_ERROR_MEMORY, "out of memory binding '%s'", name);
  return BLO_OK;
}

int blo_set_tensor(blo_state *S, const char *name, int rank, const size_t *shape, const double *data) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  if (check_name(S, "blo_set_tensor", "name", name)) return S->err.status;
  if (rank < 0 || rank > TN_MAX_RANK)
    return api_error(S, BLO_ERROR_ARGUMENT, "blo_set_tensor: rank out of range 0..6 for '%s'", name);
  if (!data || (rank > 0 && !shape))
    return api_error(S, BLO_ERROR_ARGUMENT, "blo_set_tensor: no data or shape for '%s'", name);
  if (rank == 0) return bind(S, name, v_num(data[0]));
  for (int i = 0; i < rank; i++)
    if (shape[i] == 0) return api_error(S, BLO_ERROR_ARGUMENT, "blo_set_tensor: zero dimension in the shape of '%s'", name);
  blo_tensor *t = tn_from(&S->tn, rank, shape, data);
  if (!t) {
    interp_tn_error(S, NULL);
    if (S->err.status != BLO_ERROR_MEMORY) S->err.status = BLO_ERROR_ARGUMENT;
    return S->err.status;
  }
  return bind(S, name, v_tensor(t));
}

int blo_set_number(blo_state *S, const char *name, double x) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  if (check_name(S, "blo_set_number", "name", name)) return S->err.status;
  return bind(S, name, v_num(x));
}

int blo_set_string(blo_state *S, const char *name, const char *s) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  if (check_name(S, "blo_set_string", "name", name)) return S->err.status;
  if (!s) return api_error(S, BLO_ERROR_ARGUMENT, "blo_set_string: no string for '%s'", name);
  value v = v_str(S, s, strlen(s));
  if (v.kind != V_STR) return api_error(S, BLO_ERROR_MEMORY, "blo_set_string: out of memory for '%s'", name);
  return bind(S, name, v);
}

int blo_get_number(blo_state *S, const char *path, double *out) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  value *v = resolve(S, path);
  if (!v) return not_found(S, path);
  if (!out || v_to_double(*v, out)) return wrong_kind(S, path, v, "a number");
  return BLO_OK;
}

int blo_get_field_number(blo_state *S, const char *record, const char *field, double *out) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  value *v = resolve(S, record);
  if (!v) return not_found(S, record);
  if (v->kind != V_REC) return wrong_kind(S, record, v, "a record");
  value *f = field ? rec_get((orec *)v->u.o, field) : NULL;
  if (!f) return api_error(S, BLO_ERROR_ARGUMENT, "record has no field '%s'", field);
  if (!out || v_to_double(*f, out)) return wrong_kind(S, field, f, "a number");
  return BLO_OK;
}

int blo_get_shape(blo_state *S, const char *path, int *rank, size_t *shape) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  value *v = resolve(S, path);
  if (!v) return not_found(S, path);
  if (!rank) return api_error(S, BLO_ERROR_ARGUMENT, "blo_get_shape: no rank pointer%s", "");
  if (v->kind == V_NUM) { *rank = 0; return BLO_OK; }
  if (v->kind != V_TENSOR) return wrong_kind(S, path, v, "a tensor");
  if (!shape && v->u.t->rank > 0) return api_error(S, BLO_ERROR_ARGUMENT, "blo_get_shape: no shape buffer%s", "");
  *rank = v->u.t->rank;
  for (int i = 0; i < v->u.t->rank; i++) shape[i] = v->u.t->shape[i];
  return BLO_OK;
}

int blo_get_tensor(blo_state *S, const char *path, double *out, size_t n) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  value *v = resolve(S, path);
  if (!v) return not_found(S, path);
  if (v->kind == V_NUM) {
    if (n < 1 || !out) return api_error(S, BLO_ERROR_ARGUMENT, "buffer too small for '%s'", path);
    out[0] = v->u.num;
    return BLO_OK;
  }
  if (v->kind != V_TENSOR) return wrong_kind(S, path, v, "a tensor");
  if (n < v->u.t->size || (!out && v->u.t->size)) return api_error(S, BLO_ERROR_ARGUMENT, "buffer too small for '%s'", path);
  if (v->u.t->size) memcpy(out, v->u.t->data, v->u.t->size * sizeof(double));
  return BLO_OK;
}

int blo_view_array(blo_state *S, const char *path, blo_array *out) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  value *v = resolve(S, path);
  if (!v) return not_found(S, path);
  if (!out) return api_error(S, BLO_ERROR_ARGUMENT, "blo_view_array: no output%s", "");
  memset(out, 0, sizeof *out);
  if (v->kind == V_NUM) {
    out->size = 1;
    out->data = &v->u.num;
    return BLO_OK;
  }
  if (v->kind != V_TENSOR) return wrong_kind(S, path, v, "a tensor");
  out->rank = v->u.t->rank;
  for (int i = 0; i < TN_MAX_RANK; i++) out->shape[i] = i < out->rank ? v->u.t->shape[i] : 1;
  out->size = v->u.t->size;
  out->data = v->u.t->data;
  return BLO_OK;
}

int blo_view_tensor(blo_state *S, const char *path, const double **data, size_t *size) {
  blo_array a;
  int rc = blo_view_array(S, path, &a);
  if (rc != BLO_OK) return rc;
  if (!data || !size) return api_error(S, BLO_ERROR_ARGUMENT, "blo_view_tensor: no output pointers%s", "");
  *data = a.data;
  *size = a.size;
  return BLO_OK;
}

int blo_get_string(blo_state *S, const char *path, const char **out) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  value *v = resolve(S, path);
  if (!v) return not_found(S, path);
  if (v->kind != V_STR || !out) return wrong_kind(S, path, v, "a string");
  *out = v_cstr(*v);
  return BLO_OK;
}

int blo_get_lstring(blo_state *S, const char *path, const char **out, size_t *len) {
  int rc = blo_get_string(S, path, out);
  if (rc == BLO_OK && len) *len = ((const ostr *)resolve(S, path)->u.o)->len;
  return rc;
}

/* ---- introspection ---- */

int blo_kind_of(blo_state *S, const char *path, blo_kind *kind) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  value *v = resolve(S, path);
  if (!v) return not_found(S, path);
  static const blo_kind map[] = {
    [V_NIL] = BLO_NIL, [V_NUM] = BLO_NUMBER, [V_TENSOR] = BLO_TENSOR, [V_STR] = BLO_STRING,
    [V_LIST] = BLO_LIST, [V_REC] = BLO_RECORD, [V_FUNC] = BLO_FUNCTION, [V_BUILTIN] = BLO_BUILTIN,
    [V_PROBLEM] = BLO_PROBLEM,
  };
  if (kind) *kind = map[v->kind];
  return BLO_OK;
}

const char *blo_describe(blo_state *S, const char *path) {
  if (!S) return NULL;
  value *v = resolve(S, path);
  if (!v) return NULL;
  char d[128];
  v_describe(*v, d, sizeof d);
  strbuf sb = {0};
  sb_puts(&sb, d);
  if (v->kind == V_LIST) sb_printf(&sb, " of %d", ((olist *)v->u.o)->n);
  const char *s = ext_keep_text(S, &sb);
  if (!s) api_error(S, BLO_ERROR_MEMORY, "out of memory describing '%s'", path);
  return s;
}

const char *blo_format(blo_state *S, const char *path) {
  if (!S) return NULL;
  value *v = resolve(S, path);
  if (!v) return NULL;
  strbuf sb = {0};
  v_print(&sb, *v, 1);
  const char *s = ext_keep_text(S, &sb);
  if (!s) api_error(S, BLO_ERROR_MEMORY, "out of memory formatting '%s'", path);
  return s;
}

const char *blo_next_global(blo_state *S, size_t *iter) {
  if (!S || !iter) return NULL;
  for (size_t i = *iter; i < S->globals.cap; i++) {
    if (S->globals.slots[i].name) {
      *iter = i + 1;
      return S->globals.slots[i].name;
    }
  }
  *iter = S->globals.cap;
  return NULL;
}

const char *blo_field_name(blo_state *S, const char *path, size_t i) {
  if (!S) return NULL;
  value *v = resolve(S, path);
  if (!v || v->kind != V_REC) return NULL;
  orec *r = (orec *)v->u.o;
  return i < (size_t)r->n ? r->keys[i] : NULL;
}

int blo_length(blo_state *S, const char *path, size_t *n) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  value *v = resolve(S, path);
  if (!v) return not_found(S, path);
  if (!n) return api_error(S, BLO_ERROR_ARGUMENT, "blo_length: no output pointer%s", "");
  if (v->kind == V_LIST) *n = (size_t)((olist *)v->u.o)->n;
  else if (v->kind == V_REC) *n = (size_t)((orec *)v->u.o)->n;
  else return wrong_kind(S, path, v, "a list or a record");
  return BLO_OK;
}

/* One line of help per keyword, for :help NAME and completion in hosts. */
static const char *const keyword_help[][2] = {
  {"let", "let NAME = expr: a new binding in the current scope"},
  {"fn", "fn NAME(a, b) = expr  or  fn NAME(a, b) { ... }: define a function"},
  {"if", "if cond { ... } else { ... }"},
  {"else", "if cond { ... } else { ... }  (else stays on the line of the closing })"},
  {"for", "for i in a..b { ... }  or  for x in T { ... }"},
  {"in", "for x in T { ... }; in a problem: outer x : [2] = init in [lo, hi] (a box)"},
  {"while", "while cond { ... }"},
  {"break", "leave the innermost loop"},
  {"continue", "next iteration of the innermost loop"},
  {"return", "return expr: leave the function with a value"},
  {"print", "print e1, e2, ...: values separated by a space, then a newline"},
  {"problem", "problem NAME { outer ..., inner ..., inner minimize ..., outer minimize ... }"},
  {"outer", "outer NAME : [shape] = init: an outer variable; outer minimize expr: the outer objective"},
  {"inner", "inner NAME : [shape] = init: an inner variable; inner minimize expr: the inner objective"},
  {"minimize", "inner minimize expr / outer minimize expr: an objective of a problem"},
  {"maximize", "inner maximize expr / outer maximize expr: an objective to maximize"},
  {"every", "every outer let NAME = expr / every inner let NAME = expr: redraw once per step"},
  {"solve", "solve NAME with { options }: run a bilevel problem, returns a result record"},
  {"with", "solve NAME with { options }"},
  {"true", "the number 1"},
  {"false", "the number 0"},
};

int blo_keyword_info(size_t i, const char **name, const char **doc) {
  if (i >= sizeof keyword_help / sizeof keyword_help[0]) return 0;
  if (name) *name = keyword_help[i][0];
  if (doc) *doc = keyword_help[i][1];
  return 1;
}

int blo_builtin_info(size_t i, const char **name, const char **sig, const char **doc) {
  const builtin_def *b = builtin_at(i);
  if (!b) return 0;
  if (name) *name = b->name;
  if (sig) *sig = b->sig;
  if (doc) *doc = b->doc;
  return 1;
}

int blo_help(blo_state *S, const char *name, const char **sig, const char **doc) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  if (!name) return api_error(S, BLO_ERROR_ARGUMENT, "blo_help: no name%s", "");
  value *v = strchr(name, '.') ? NULL : global_slot(S, name);
  const builtin_def *b = NULL;
  if (v && v->kind == V_BUILTIN) {
    b = v->u.fn;
  } else if (v && v->kind == V_FUNC) {
    const ast_node *def = ((ofunc *)v->u.o)->def;
    strbuf sb = {0};
    sb_printf(&sb, "%s(", def->name);
    for (int i = 0; i < def->nkids; i++) sb_printf(&sb, "%s%s", i ? ", " : "", def->kids[i]->name);
    sb_putc(&sb, ')');
    const char *s = ext_keep_text(S, &sb);
    if (!s) return api_error(S, BLO_ERROR_MEMORY, "blo_help: out of memory%s", "");
    if (sig) *sig = s;
    if (doc) *doc = "function defined in the script";
    return BLO_OK;
  } else if (v) {
    return wrong_kind(S, name, v, "a function");
  } else {
    b = builtin_find(name);
  }
  if (!b) return api_error(S, BLO_ERROR_ARGUMENT, "no function named '%s'", name);
  if (sig) *sig = b->sig;
  if (doc) *doc = b->doc;
  return BLO_OK;
}

/* ---- calling and solving ---- */

int blo_call(blo_state *S, const char *fn, int nargs, const blo_array *args, const char *result) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  if (!fn) return api_error(S, BLO_ERROR_ARGUMENT, "blo_call: no function name%s", "");
  if (nargs < 0 || nargs > 64 || (nargs > 0 && !args))
    return api_error(S, BLO_ERROR_ARGUMENT, "blo_call: bad argument list for '%s'", fn);
  if (result && check_name(S, "blo_call", "result name", result)) return S->err.status;
  /* `outer` is a keyword that scripts call as a builtin; other keywords name nothing */
  if (!ast_is_name(fn) && !(ast_is_keyword(fn) && builtin_find(fn)))
    return check_name(S, "blo_call", "function name", fn);
  value f = v_nil();
  value *slot = global_slot(S, fn);
  if (slot) {
    f = *slot;
  } else {
    const builtin_def *b = builtin_find(fn);
    if (!b) return api_error(S, BLO_ERROR_ARGUMENT, "no function named '%s'", fn);
    f.kind = V_BUILTIN;
    f.u.fn = b;
  }
  if (f.kind != V_FUNC && f.kind != V_BUILTIN) return wrong_kind(S, fn, &f, "a function");
  if (f.kind == V_BUILTIN && (f.u.fn->special & BI_CONST))
    return api_error(S, BLO_ERROR_ARGUMENT, "blo_call: '%s' is a constant, not a function", fn);
  if (f.kind == V_BUILTIN && (f.u.fn->special & BI_SPECIAL))
    return api_error(S, BLO_ERROR_ARGUMENT, "blo_call: '%s' takes an unevaluated expression; use blo_eval_string", fn);
  for (int i = 0; i < nargs; i++) {
    const blo_array *a = &args[i];
    int bad = a->rank < 0 || a->rank > TN_MAX_RANK || !a->data;
    for (int k = 0; !bad && k < a->rank; k++) bad = a->shape[k] == 0;
    if (bad) {
      char msg[160];
      snprintf(msg, sizeof msg, "blo_call: argument %d of '%%s' has a bad rank, shape or data", i + 1);
      return api_error(S, BLO_ERROR_ARGUMENT, msg, fn);
    }
  }
  f = v_retain(f);   /* the call may rebind the global */
  value stackbuf[8];
  value *vals = nargs <= 8 ? stackbuf : calloc((size_t)nargs, sizeof(value));
  int rc = EV_OK, made = 0;
  if (!vals) rc = interp_error(S, NULL, "out of memory");
  for (; rc == EV_OK && made < nargs; made++) {
    const blo_array *a = &args[made];
    if (a->rank == 0) {
      vals[made] = v_num(a->data[0]);
    } else {
      blo_tensor *t = tn_from(&S->tn, a->rank, a->shape, a->data);
      if (!t) { rc = interp_tn_error(S, NULL); break; }
      vals[made] = v_tensor(t);
    }
  }
  value out = v_nil();
  if (rc == EV_OK) rc = call_value(S, NULL, f, vals, nargs, &out);
  for (int i = 0; i < made; i++) v_release(S, &vals[i]);
  if (vals && vals != stackbuf) free(vals);
  v_release(S, &f);
  if (rc != EV_OK) {
    v_release(S, &out);
    if (S->err.status == BLO_OK) S->err.status = BLO_ERROR_RUNTIME;
    report(S);
    return S->err.status;
  }
  if (result) return bind(S, result, out);
  v_release(S, &out);
  return BLO_OK;
}

int blo_solve(blo_state *S, const char *problem, const char *options, const char *result,
              blo_progress_fn fn, void *ud) {
  if (!S) return BLO_ERROR_ARGUMENT;
  clear_error(S);
  if (!result) result = "result";
  if (check_name(S, "blo_solve", "problem name", problem)) return S->err.status;
  if (check_name(S, "blo_solve", "result name", result)) return S->err.status;
  value *p = global_slot(S, problem);
  if (!p) return api_error(S, BLO_ERROR_ARGUMENT, "no problem named '%s'", problem);
  if (p->kind != V_PROBLEM) return wrong_kind(S, problem, p, "a problem");
  /* The options are parsed as a record's fields and nothing else; the
   * statement `let result = solve problem with {options}` is built as a
   * tree around them, so no text the host passes is read as code. */
  v_release(S, &S->last);
  if (!options) options = "";
  chunk *c = chunk_parse_as(S, "<blo_solve>", options, strlen(options), 1);
  if (!c) return parse_failed(S);
  ast_node *rec = c->root;
  ast_node *solve = ast_new(c->arena, N_SOLVE, rec->loc);
  ast_node *let = ast_new(c->arena, N_LET, rec->loc);
  ast_node *top = ast_new(c->arena, N_BLOCK, rec->loc);
  ast_node **kids = ast_alloc(c->arena, sizeof *kids);
  const char *pname = ast_strndup(c->arena, problem, strlen(problem));
  const char *rname = ast_strndup(c->arena, result, strlen(result));
  if (!solve || !let || !top || !kids || !pname || !rname)
    return api_error(S, BLO_ERROR_MEMORY, "blo_solve: out of memory%s", "");
  solve->name = pname;
  solve->a = rec;
  let->name = rname;
  let->a = solve;
  kids[0] = let;
  top->kids = kids;
  top->nkids = 1;
  c->root = top;
  void *u = ud;
  blo_progress_fn f = fn;
  if (fn) ext_swap_progress(S, &f, &u);
  int rc = run_chunk(S, c);
  if (fn) ext_swap_progress(S, &f, &u);
  return rc;
}
