/* interp.h: the interpreter's internal interface, shared by the evaluator,
 * the builtins (stdlib/) and the bilevel runtime (runtime/bilevel*.c). */
#ifndef BLO_INTERP_H
#define BLO_INTERP_H

#include <stddef.h>
#include <signal.h>
#include "value.h"
#include "../runtime/ad.h"
#include "../include/blo.h"

/* One parsed chunk (a file, a -e string, a REPL entry).  Chunks stay alive
 * until the state closes because functions keep pointers into their AST. */
typedef struct chunk {
  struct chunk *next;
  char *name;
  char *src;
  size_t len;
  ast_arena *arena;
  ast_node *root;
} chunk;

typedef struct binding { const char *name; value val; } binding;

/* Local scope of a function call or block. */
typedef struct scope {
  struct scope *parent;   /* NULL: next is the global table */
  binding *vars;
  int n, cap;
  int is_fn;              /* lookups stop here and go to globals */
} scope;

/* cache: the slot last found for a name pointer (AST names are looked up on
 * every evaluation; hashing and comparing the string each time showed in
 * profiles of tiny problems).  Cleared when slots move (growth); a hit is
 * confirmed by comparing the strings, so a reused pointer is harmless. */
enum { GT_CACHE = 64 };
typedef struct gcache { const char *key; binding *b; } gcache;
typedef struct gtable { binding *slots; size_t cap, n; gcache cache[GT_CACHE]; } gtable;

/* Status of executing a statement. */
enum { EV_OK = 0, EV_ERR = 1, EV_BREAK, EV_CONTINUE, EV_RETURN };

struct blo_state {
  blo_config cfg;
  tn_ctx tn;
  tn_rng rng;
  gtable globals;
  scope *sc;                 /* innermost local scope, NULL at top level */
  chunk *chunks;
  chunk *cur_chunk;          /* chunk of the code being evaluated */
  int call_depth;
  int eval_depth;            /* nested eval_expr calls (bounded: each is C stack) */
  /* autodiff */
  ad_tape *tape;             /* recording tape, NULL when not differentiating */
  uint32_t tape_gen;
  int ad_depth;
  /* last error */
  blo_error err;
  char err_msg[1024];
  char err_chunk[256];
  char err_src_line[512];
  char err_text[2048];       /* formatted error, for blo_last_error_text */
  value ret;                 /* value carried by EV_RETURN */
  value last;                /* value of the last expression statement (REPL echo) */
  volatile sig_atomic_t *interrupt;   /* set by a host signal handler: stop at next step */
  struct problem *problems;  /* every declared problem, freed at close */
  void *native_fns;          /* registered native functions (api.c) */
  void *completions;         /* the candidates of the last blo_complete (complete.c) */
};

/* ---- errors ----
 * Records "msg" at node's location (node may be NULL: no location) and
 * returns EV_ERR, so `return interp_error(S, n, "...")` reads naturally. */
int interp_error(blo_state *S, const ast_node *at, const char *fmt, ...);
/* Same, taking the message from the tensor layer (S->tn.err). */
int interp_tn_error(blo_state *S, const ast_node *at);
/* Formats the last error as "file:line:col: error: msg\n<line>\n   ^\n". */
void interp_format_error(blo_state *S, strbuf *out);

/* ---- variables ---- */
value *env_lookup(blo_state *S, const char *name);               /* borrowed slot or NULL */
int env_define(blo_state *S, const char *name, value v);          /* let: takes ownership */
int env_set_global(blo_state *S, const char *name, value v);      /* takes ownership */
const char *env_suggest(blo_state *S, const char *name);          /* "did you mean" or NULL */
/* The closest of a NULL-terminated list of names (option keys, methods), or NULL. */
const char *env_suggest_in(const char *name, const char *const *cands);
/* A key from a file (n bytes, maybe holding NUL) as a field name: characters
 * other than letters, digits and '_' become '_', a leading digit gets a '_'
 * in front and a keyword one behind.  out holds n + 3 bytes.  load_npz maps
 * member names and load_json object keys with it (stdlib/builtins.c). */
void field_name_from_key(const char *s, size_t n, char *out);
void env_push(blo_state *S, scope *sc, int is_fn);
void env_pop(blo_state *S, scope *sc);

/* ---- evaluation ---- */
int eval_expr(blo_state *S, const ast_node *n, value *out);       /* EV_OK / EV_ERR */
int exec_block(blo_state *S, const ast_node *n);                  /* EV_OK / EV_ERR / EV_BREAK / ... */
int exec_chunk(blo_state *S, chunk *c);
chunk *chunk_parse(blo_state *S, const char *name, const char *src, size_t len);
/* Checks c without running it (check.c): unknown names, builtins called
 * with the wrong number of arguments, unknown solve options; each problem is
 * recorded and passed to report.  Returns how many there were. */
int check_chunk(blo_state *S, chunk *c, void (*report)(blo_state *S));
/* Calls a callable (function, builtin) with positional arguments (borrowed). */
int call_value(blo_state *S, const ast_node *at, value fn, value *args, int nargs, value *out);

/* The integer a script number d stands for as an index, a slice bound or a
 * count.  Not finite, or not an integer: a located error naming d ("<what>
 * must be an integer, got 1.5").  Beyond 2^53 in magnitude (no position of
 * anything a script can make) it saturates there and sets *big: callers
 * clamp (slice bounds) or report d out of range. */
int interp_index_num(blo_state *S, const ast_node *at, const char *what, double d, long *out, int *big);

/* Numeric operators on values (used by builtins and the runtime). */
int op_binary(blo_state *S, const ast_node *at, int op, value a, value b, value *out);
int op_unary(blo_state *S, const ast_node *at, tn_unary_op op, value a, value *out);
/* ad_val view of a numeric value (new references). */
int v_to_ad(blo_state *S, const ast_node *at, value v, ad_val *out);
value v_from_ad(blo_state *S, ad_val a);   /* takes ownership; rank-0 constants become numbers */

/* ---- builtins ---- */
typedef struct callargs {
  value *pos; int npos;
  const char **names; value *named; int nnamed;
  const ast_node *call;        /* the N_CALL node, for locations and special forms */
} callargs;

typedef int (*builtin_fn)(blo_state *S, callargs *a, value *out);

typedef struct builtin_def {
  const char *name;
  builtin_fn fn;
  int min_args, max_args;      /* positional; max -1 = any */
  const char *sig;             /* "norm(x, axis = all)" */
  const char *doc;             /* one line */
  int special;                 /* BI_* flags */
} builtin_def;
enum {
  BI_SPECIAL = 1,    /* receives unevaluated arguments (grad, jvp, hvp) */
  /* reads the differentiated values among its positional arguments only
   * through recorded operations, never as data (see diff_note_call) */
  BI_OPS_ALL = 2,    /* all of them */
  BI_OPS_FIRST = 4,  /* the first one (the others are sizes) */
  BI_CONST = 8       /* a constant (pi): its name evaluates to fn's result; a script cannot call it */
};

const builtin_def *builtin_find(const char *name);
const builtin_def *builtin_at(size_t i);   /* iteration for :help and completion, NULL at end */

/* Argument helpers for builtins: each reports a located error on failure. */
value *arg_named(callargs *a, const char *name);   /* NULL if absent; marks it used */
int arg_check_named(blo_state *S, callargs *a, const char *const *allowed);
int arg_double(blo_state *S, callargs *a, int i, double *out);
int arg_int(blo_state *S, callargs *a, int i, long *out);
int arg_tensor(blo_state *S, callargs *a, int i, blo_tensor **out);  /* new reference */
int arg_str(blo_state *S, callargs *a, int i, const char **out);
int named_double(blo_state *S, callargs *a, const char *name, double dflt, double *out);
int named_int(blo_state *S, callargs *a, const char *name, long dflt, long *out);
int named_bool(blo_state *S, callargs *a, const char *name, int dflt, int *out);
int arg_axis(blo_state *S, callargs *a, int rank, int *axis);   /* axis = named, -1 = all */

/* ---- differentiation (interp/diff.c) ----
 * Evaluates expr with the named variables as independent variables, at
 * their current values.  Forward mode when tangents are given; reverse mode
 * (gradients, and with tangents the second-order products) when reverse is
 * set.  The variables keep their values; outputs are new references.
 *
 * A variable holds a number, a tensor, or a record of numbers, tensors and
 * records (nested): its leaves are its numbers and tensors, depth first in
 * field order.  Every per-variable array (tangents, grads, hvs, want) has one
 * entry per leaf, the variables' leaves one after the other. */
typedef struct diff_req {
  int n;
  const char *const *names;
  blo_tensor *const *tangents;   /* NULL, or one per leaf (each may be NULL = zero) */
  int reverse;
  value result;                  /* out: value of expr (constant) */
  blo_tensor *dir;               /* out: tangent of expr (forward), NULL if zero; for a
                                    record-valued expr, its leaves' tangents flattened */
  blo_tensor **grads;            /* out (reverse): one gradient per leaf, shaped like it; NULL when only
                                    hvs are wanted (a cheaper second-order sweep) */
  blo_tensor **hvs;              /* out (reverse + tangents): second-order products per leaf, or NULL */
  const unsigned char *want;     /* in (reverse): NULL = every leaf's results; else only those of leaf
                                    i with want[i] set are computed (the others stay NULL), and the
                                    sweep skips what only the others depend on */
  int nleaves;                   /* in: entries of the per-leaf arrays (0: n, each variable a number or
                                    tensor); another count is an error */
} diff_req;
int diff_run(blo_state *S, const ast_node *at, const ast_node *expr, diff_req *r);
void diff_req_free(blo_state *S, diff_req *r);
/* The number of leaves of v (a variable named name): 1 for a number or
 * tensor; an empty record, a field that is neither numeric nor a record,
 * and records nested more than 64 deep are errors naming the field. */
int diff_count_leaves(blo_state *S, const ast_node *at, const char *name, value v, int *count);

/* A recorded objective: expr evaluated once at the current values of names
 * (all of them leaves, no tangents), its tape kept.  Hessian-vector products
 * at that point then replay the tape with new tangents (ad_retangent)
 * instead of evaluating expr again, which skips the primal work (X y) of
 * every product.  The caller drops the recording when the point moves.
 * Set n, names and nleaves (0: n), zero the rest, before the first
 * diff_record. */
typedef struct diff_rec {
  int n;
  const char *const *names;
  int nleaves;                   /* leaves expected (0: n) */
  ad_tape *tape;                 /* owned, reused by the next recording */
  int *nodes;                    /* leaf node of each leaf (owned) */
  int nodes_cap, nl;             /* its capacity; the leaves recorded */
  ad_val out;                    /* the recorded value (a scalar) */
  double value;
  const ast_node *expr;
  int live;
} diff_rec;
int diff_record(blo_state *S, const ast_node *at, const ast_node *expr, diff_rec *rec);
/* A sweep of the recording for each leaf i with want[i] set (want NULL:
 * every leaf; the others' entries are NULL): grads[i] (NULL array: none
 * wanted) gets its gradient, hvs[i] (NULL array: none) the tangent of its
 * adjoint, H_{i,*} t for the tangents t (one per leaf, an entry or the array
 * NULL = zero).  Without grads the sweep is tangent-only. */
int diff_replay(blo_state *S, diff_rec *rec, blo_tensor *const *tangents, const unsigned char *want,
                blo_tensor **grads, blo_tensor **hvs);
/* Moves leaf i of the recording to value v (its shape) without
 * evaluating expr again (ad_set_leaf): only a movable recording, see below. */
int diff_rec_move(blo_state *S, diff_rec *rec, int i, blo_tensor *v);
int diff_rec_movable(const diff_rec *rec);
double diff_rec_value(blo_state *S, diff_rec *rec, int *err);  /* expr at the current point */
void diff_rec_drop(blo_state *S, diff_rec *rec);   /* forget the recording, keep the tape's arrays */
/* A recording in progress holds only at its point once the script reads a
 * differentiated value as data: a branch, an index, a loop over it, a
 * builtin that does not differentiate it; or draws random numbers (a
 * replay would reuse them).  These calls note such reads. */
void diff_note_read(blo_state *S, value v);
void diff_note_random(blo_state *S);
void diff_note_call(blo_state *S, const builtin_def *b, const value *pos, int npos, const value *named, int nnamed);
void diff_rec_free(blo_state *S, diff_rec *rec);

/* Output through the configured callback. */
void interp_write(blo_state *S, const char *s, size_t n);

/* ---- embedding hooks (interp/native.c) ----
 * The solve loop calls this once per outer step, after the step: it reports
 * progress to the host's callback (blo_set_progress / blo_solve) and checks
 * the interrupt flag.  EV_ERR (error recorded, status BLO_INTERRUPTED) means
 * stop now, keeping the variables' last values. */
int interp_solve_progress(blo_state *S, const ast_node *at, const blo_progress *p);
/* The final report of a solve (p->done = 1); cannot fail or stop anything. */
void interp_solve_done(blo_state *S, const blo_progress *p);
/* Tells the host's figure hook (blo_set_figure_hook) that a figure file was
 * written; format is "png", "svg" or "pdf". */
void interp_figure_written(blo_state *S, const char *path, const char *format);

#endif
