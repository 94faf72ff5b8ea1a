/* blo.h: embedding API of libblo, the interpreter for .blo bilevel
 * optimization scripts.
 *
 * A blo_state is opaque and self-contained: the library keeps no global
 * state, so two states may run in two threads at once (one thread per state
 * at a time).  Every function returning int returns a blo_status (except
 * blo_input_complete, blo_builtin_info and blo_keyword_info, which answer
 * yes/no); on error the
 * details are in blo_last_error().  The library never exits, aborts, or
 * prints: output and errors reach the host only through the callbacks of
 * blo_config.
 *
 * Names ("paths"): the functions that read a value take a global name, or a
 * path into records and lists: "r.F" is the field F of the record r (a solve
 * result is such a record), "l[2]" the third item of the list l, and they
 * combine ("r.hist[0].x").  Indexes are 0-based decimal digits.  A name is an identifier that is not a
 * keyword of the language (let, fn, if, ...); every function taking a name
 * refuses anything else with BLO_ERROR_ARGUMENT.
 *
 * Strings returned as const char * are owned by the state and stay valid
 * until the next call on that state unless documented otherwise.
 * See docs/EMBEDDING.md for a walk-through. */
#ifndef BLO_H
#define BLO_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BLO_VERSION "0.1.0"
#define BLO_MAX_RANK 6      /* tensors have rank 0..6 */
#define BLO_MAX_NATIVES 64  /* native functions per state */

typedef struct blo_state blo_state;

typedef enum blo_status {
  BLO_OK = 0,
  BLO_ERROR_SYNTAX = 1,    /* the chunk did not parse */
  BLO_ERROR_RUNTIME = 2,   /* evaluation failed (shape, name, assert, I/O, ...) */
  BLO_ERROR_MEMORY = 3,    /* allocator returned NULL or the memory cap was hit */
  BLO_ERROR_ARGUMENT = 4,  /* the host passed something invalid */
  BLO_INTERRUPTED = 5      /* the interrupt flag or a progress callback stopped evaluation */
} blo_status;

/* Host allocator in Lua's style: ptr NULL allocates, new_size 0 frees (and
 * returns NULL).  Returning NULL for an allocation is reported as
 * BLO_ERROR_MEMORY.  Used for the state, tensors and script objects. */
typedef void *(*blo_realloc_fn)(void *ud, void *ptr, size_t old_size, size_t new_size);
/* Receives script output (print, printf, ...); text is not NUL-terminated.
 * The library writes nothing else: a solve's progress goes to the progress
 * callback (blo_set_progress), which the host may draw. */
typedef void (*blo_write_fn)(void *ud, const char *text, size_t len);

/* Where an error happened.  Strings are owned by the state and valid until
 * the next call on it. */
typedef struct blo_error {
  blo_status status;
  const char *message;     /* "shape mismatch in '+': [2] and [3]" */
  const char *file;        /* chunk name, "" if none */
  int line, col;           /* 1-based, 0 if unknown */
} blo_error;

/* Receives each error as it happens, formatted "file:line:col: error: msg"
 * plus the source line and a caret (NUL-terminated, valid during the call);
 * the structured form is in blo_last_error().  Warnings (a hypergradient
 * method that broke down, a cold start overwriting an inner variable) arrive
 * here too, as one line "file:line:col: warning: msg", and change no status. */
typedef void (*blo_error_fn)(void *ud, const char *formatted);

typedef struct blo_config {
  blo_realloc_fn realloc_fn;   /* NULL: the C library's realloc/free */
  void *alloc_ud;
  blo_write_fn write_fn;       /* NULL: output is discarded */
  void *write_ud;
  blo_error_fn error_fn;       /* NULL: errors are only kept for blo_last_error */
  void *error_ud;
  int allow_files;             /* 0: load_csv, save_csv, load_idx, load/save_npy, load/save_npz, load_json, trace files are refused */
  size_t mem_cap;              /* bytes of tensor data allowed, 0 = unlimited (tensors of
                                  at most 2 elements, stored in their header, are not counted) */
  unsigned long long seed;     /* initial random seed (scripts may call seed()) */
  /* The MPI communicator of rank(), allreduce() and the other collectives
   * (docs/MPI.md).  Typed MPI_Comm when the host includes <mpi.h> before this
   * header; otherwise an opaque slot of the same size, left as the defaults
   * set it.  All-zero bits (the default) or MPI_COMM_NULL, a library built
   * without MPI, or MPI not initialised: the state is one rank.  The host
   * owns the communicator and MPI_Init/MPI_Finalize; the library only uses it. */
#ifdef MPI_VERSION
  MPI_Comm comm;
#else
  void *comm;
#endif
} blo_config;

/* The library version, BLO_VERSION of the build that made it. */
const char *blo_version(void);

/* Fills *cfg with the defaults: system allocator, no output, no error
 * callback, files allowed, no memory cap, seed 0, no communicator (one rank). */
void blo_config_defaults(blo_config *cfg);

/* Opens a state; cfg NULL means defaults (the config is copied).  Returns
 * NULL if memory runs out.  Close it with blo_close. */
blo_state *blo_open(const blo_config *cfg);
/* Frees the state and everything it owns.  NULL is ignored. */
void blo_close(blo_state *S);

/* ---- evaluating code ---- */

/* Evaluates source text (len bytes, need not be NUL-terminated) as a chunk
 * named name (used in messages; NULL: "<input>").  Definitions persist in the
 * state.  Returns BLO_OK or the error status. */
int blo_eval_string(blo_state *S, const char *name, const char *src, size_t len);
/* Reads and evaluates a file; the chunk is named after the path.  Reading
 * the script itself is always allowed (allow_files governs what scripts do).
 * A file that cannot be read (missing, a directory, a read error) is
 * BLO_ERROR_RUNTIME and nothing runs. */
int blo_eval_file(blo_state *S, const char *path);
/* Parse and check without running (what `blo --check` does): syntax errors,
 * names that nothing in the chunk or the state binds, builtins called with
 * the wrong number of positional arguments, unknown `solve ... with {}`
 * options.  Every problem goes to the error callback; the last one is
 * blo_last_error.  Returns BLO_OK when there is none.  Nothing is defined
 * in the state.  A name any top-level statement binds counts as defined
 * everywhere, so a clean check does not promise the script runs. */
int blo_check_string(blo_state *S, const char *name, const char *src, size_t len);
int blo_check_file(blo_state *S, const char *path);
/* Like blo_eval_string, for interactive hosts: when the chunk's last
 * statement is an expression whose value is not nil, *echo receives its
 * printed form (strings quoted, large tensors summarised), otherwise NULL.
 * The text is owned by the state. */
int blo_eval_repl(blo_state *S, const char *name, const char *src, size_t len, const char **echo);
/* 0 when src ends inside an open bracket, parenthesis, brace, block or string
 * (an interactive host should read another line), 1 otherwise (including
 * input with syntax errors: evaluating it reports them).  Needs no state. */
int blo_input_complete(const char *src, size_t len);

/* The last error; status BLO_OK if the last call succeeded.  Owned by S. */
const blo_error *blo_last_error(const blo_state *S);
/* The last error formatted with source line and caret, "" if none (owned by S). */
const char *blo_last_error_text(blo_state *S);

/* Sets the list `args` seen by scripts (the strings are copied). */
int blo_set_args(blo_state *S, int argc, const char *const *argv);

/* Points the state at a flag that a signal handler may set (to nonzero) to
 * stop a running evaluation at its next step (loop iteration, function call,
 * solve step); the evaluation then fails with BLO_INTERRUPTED and the flag
 * is cleared.  The flag is also cleared when an evaluation ends.
 * NULL detaches.  The flag must outlive the state or be detached. */
void blo_set_interrupt_flag(blo_state *S, volatile int *flag);

/* ---- moving data in and out ---- */

/* A dense row-major tensor of doubles described by the host or lent by the
 * library.  A number is rank 0 with size 1. */
typedef struct blo_array {
  int rank;                        /* 0..BLO_MAX_RANK */
  size_t shape[BLO_MAX_RANK];      /* entries past rank are ignored */
  size_t size;                     /* product of the shape (1 for rank 0) */
  double *data;                    /* size elements */
} blo_array;

/* Binds a global to a copy of data with the given shape (rank 0..6; rank 0
 * binds a number and ignores shape).  Fails with BLO_ERROR_ARGUMENT on a bad
 * rank or a zero dimension, BLO_ERROR_MEMORY past the memory cap. */
int blo_set_tensor(blo_state *S, const char *name, int rank, const size_t *shape, const double *data);
int blo_set_number(blo_state *S, const char *name, double x);
/* Binds a global to a copy of the NUL-terminated string s. */
int blo_set_string(blo_state *S, const char *name, const char *s);

/* Reads a number or a single-element tensor at path into *out. */
int blo_get_number(blo_state *S, const char *path, double *out);
/* Shape of the tensor at path (a number has rank 0).  shape has room for
 * BLO_MAX_RANK entries. */
int blo_get_shape(blo_state *S, const char *path, int *rank, size_t *shape);
/* Copies the tensor (or number) at path into out, which has room for n
 * doubles; BLO_ERROR_ARGUMENT if it is too small. */
int blo_get_tensor(blo_state *S, const char *path, double *out, size_t n);
/* Borrowed read-only view of the data of the tensor (or number) at path:
 * valid until the next call on S that evaluates code, calls a function or
 * changes globals.  Do not write through it. */
int blo_view_tensor(blo_state *S, const char *path, const double **data, size_t *size);
/* The same view as a blo_array (data must still be treated as read-only). */
int blo_view_array(blo_state *S, const char *path, blo_array *out);
/* Reads a numeric field of a global record (e.g. a solve result's "F");
 * same as blo_get_number(S, "record.field"). */
int blo_get_field_number(blo_state *S, const char *record, const char *field, double *out);
/* Borrowed NUL-terminated text of the string at path (valid like a view).
 * A string may hold NUL bytes ("a\0b"): this view ends at the first. */
int blo_get_string(blo_state *S, const char *path, const char **out);
/* The same with its length in bytes, NUL bytes included (out[*len] is 0). */
int blo_get_lstring(blo_state *S, const char *path, const char **out, size_t *len);

/* ---- introspection (REPLs, debuggers, generic hosts) ---- */

typedef enum blo_kind {
  BLO_NIL, BLO_NUMBER, BLO_TENSOR, BLO_STRING, BLO_LIST, BLO_RECORD,
  BLO_FUNCTION, BLO_BUILTIN, BLO_PROBLEM
} blo_kind;

/* Kind of the value at path; BLO_ERROR_ARGUMENT if there is none. */
int blo_kind_of(blo_state *S, const char *path, blo_kind *kind);
/* "number", "tensor [2, 3]", "record", ... for the value at path, NULL if
 * none or out of memory (then blo_last_error says BLO_ERROR_MEMORY). */
const char *blo_describe(blo_state *S, const char *path);
/* The value at path as print shows it (strings quoted), NULL if none or out
 * of memory (then blo_last_error says BLO_ERROR_MEMORY). */
const char *blo_format(blo_state *S, const char *path);
/* Iterates over the global names: start with *iter = 0; returns NULL at the
 * end.  Order is unspecified; defining a global restarts nothing but may skip
 * or repeat names, so do not evaluate code while iterating. */
const char *blo_next_global(blo_state *S, size_t *iter);
/* Name of field i (0-based) of the record at path, NULL past the end or if
 * path is not a record. */
const char *blo_field_name(blo_state *S, const char *path, size_t i);
/* Number of items of the list, or of fields of the record, at path. */
int blo_length(blo_state *S, const char *path, size_t *n);
/* The i-th keyword of the language (0-based) with one line of documentation
 * (either may be NULL); returns 1, or 0 past the end.  Together with
 * blo_builtin_info and blo_next_global these are the names a host completes. */
int blo_keyword_info(size_t i, const char **name, const char **doc);
/* Context-aware completion for interactive hosts: the candidates for the
 * word (a name, or a dotted path) that ends at byte cursor of src, the entry
 * typed so far (NUL-terminated; text after cursor is ignored).  After
 * `solve ` they are the problems, after `hypergrad = ` the hypergradient
 * methods, after `inner_opt = ` / `outer_opt = ` the optimizers, at a field
 * name inside `with { }` the solve options, after `name.` the fields of the
 * record, elsewhere the keywords, builtins and globals.  *start (may be
 * NULL) receives the offset where the word begins: a host replaces
 * src[*start, cursor) with a candidate.  Returns the number of candidates,
 * sorted and distinct, read with blo_completion; 0 if none. */
size_t blo_complete(blo_state *S, const char *src, size_t cursor, size_t *start);
/* The i-th candidate of the last blo_complete (NULL past the end), owned by
 * S and valid until the next blo_complete or blo_close. */
const char *blo_completion(blo_state *S, size_t i);
/* The i-th builtin (0-based, in the interpreter's table order): sets name, signature and one
 * line of documentation (any may be NULL) and returns 1; 0 past the end. */
int blo_builtin_info(size_t i, const char **name, const char **sig, const char **doc);
/* Signature and documentation of a callable name as a script would see it:
 * a native or script function bound to the global, else a builtin.  Returns
 * BLO_ERROR_ARGUMENT if the name is not callable. */
int blo_help(blo_state *S, const char *name, const char **sig, const char **doc);

/* ---- native functions ----
 * A native is a C function callable from scripts.  Registering binds it to a
 * global of that name: like any global it shadows a builtin of the same name,
 * and a script's `let name = ...` replaces it.  Arguments are numbers or
 * tensors (positional only), borrowed for the duration of the call. */

/* Computes the result: fill *out with blo_native_output (leave it untouched
 * to return nothing).  Return BLO_OK, or an error status, preferably through
 * blo_native_error for a message. */
typedef int (*blo_native_fn)(blo_state *S, void *ud, int nargs, const blo_array *args, blo_array *out);
/* Derivative of y = f(x) for a native of one argument:
 *   jvp: out (shaped like y, zeroed) = J(x) in   (in shaped like x)
 *   vjp: out (shaped like x, zeroed) = J(x)^T in (in shaped like y)
 * x and y are the point and the primal result.  Return BLO_OK or an error. */
typedef int (*blo_native_deriv_fn)(blo_state *S, void *ud, const blo_array *x, const blo_array *y,
                                   const blo_array *in, blo_array *out);

typedef struct blo_native {
  const char *name;            /* a valid identifier (copied) */
  blo_native_fn fn;            /* required */
  blo_native_deriv_fn jvp;     /* forward mode (jvp, hvp); NULL: not supported */
  blo_native_deriv_fn vjp;     /* reverse mode (grad, hvp, solve); NULL: not supported */
  void *ud;                    /* passed to the callbacks */
  int min_args, max_args;      /* max -1: any.  With jvp or vjp: exactly 1 */
  const char *sig, *doc;       /* for :help (copied); NULL: generated / none */
} blo_native;

/* Registers (or replaces, keeping the binding) a native.  A native with jvp
 * or vjp may sit inside a differentiated expression; second-order products
 * (hvp, implicit hypergradients) through it use J^T only, so they omit the
 * native's own curvature: exact for natives linear in x.  Fails with
 * BLO_ERROR_ARGUMENT on a bad definition or when BLO_MAX_NATIVES are taken. */
int blo_register(blo_state *S, const blo_native *def);
/* Inside a native function: allocates its result tensor (zero-filled, rank
 * 0..6, counted against the memory cap) and describes it in *out.  A second
 * call replaces the first result.  Derivative callbacks get their output
 * preallocated and must not call it (BLO_ERROR_ARGUMENT). */
int blo_native_output(blo_state *S, blo_array *out, int rank, const size_t *shape);
/* Inside a native or derivative callback: records an error message (printf
 * style); returns BLO_ERROR_RUNTIME for `return blo_native_error(...)`. */
int blo_native_error(blo_state *S, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- calling scripts from C ---- */

/* Calls the function (script function, native or builtin) bound to fn with
 * nargs numeric arguments (copied); binds the return value to the global
 * named result (NULL: discarded) so the getters can read it. */
int blo_call(blo_state *S, const char *fn, int nargs, const blo_array *args, const char *result);

/* ---- solving ---- */

/* Reported once per outer step of a solve. */
typedef struct blo_progress {
  const char *problem;         /* problem name */
  long step, steps;            /* outer step (1-based) and the planned number */
  double F, f;                 /* outer and inner objectives */
  double hypergrad_norm;       /* norm of the hypergradient of this step */
  double inner_grad_norm;      /* norm of grad_y f at the end of the inner loop */
  double elapsed;              /* seconds since the solve started */
  int quiet;                   /* the script asked for quiet = true: do not draw */
  int done;                    /* 1 on the last report of a solve, after its loop
                                  ended for any reason (finished, converged,
                                  error, stop); time to erase a progress line */
} blo_progress;
/* Return 0 to continue, nonzero to stop the solve (it then fails with
 * BLO_INTERRUPTED; the variables keep their last values).  The return value
 * of the final report (done = 1) is ignored. */
typedef int (*blo_progress_fn)(void *ud, const blo_progress *p);

/* Installs a progress callback for every solve the state runs (NULL removes). */
void blo_set_progress(blo_state *S, blo_progress_fn fn, void *ud);

/* ---- figures ---- */

/* Called after plot() wrote a figure file: path as the script gave it,
 * format "png", "svg" or "pdf" (both valid during the call).  A notebook host
 * reads the file to show the figure.  The hook runs inside the evaluation:
 * it must not call functions on the state. */
typedef void (*blo_figure_fn)(void *ud, const char *path, const char *format);
/* Installs the figure hook of the state (NULL removes). */
void blo_set_figure_hook(blo_state *S, blo_figure_fn fn, void *ud);
/* Runs `let result = solve problem with {options}`: options is the text of
 * the record's fields (e.g. "outer_steps = 50, hypergrad = cg()"; NULL or ""
 * for the defaults), parsed as fields only: text that is not a list of
 * `name = expression` fields is BLO_ERROR_SYNTAX and runs nothing.  fn, if not NULL, is the progress callback for this
 * solve only.  The result record is bound to the global result (NULL:
 * "result"); read it with blo_get_number(S, "result.F", &F). */
int blo_solve(blo_state *S, const char *problem, const char *options, const char *result,
              blo_progress_fn fn, void *ud);

#ifdef __cplusplus
}
#endif
#endif
