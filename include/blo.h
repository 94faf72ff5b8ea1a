/* blo.h: embedding API of libblo, the interpreter for .blo bilevel
 * optimization scripts.
 *
 * A blo_state is opaque and self-contained: no global state, so two states
 * may run in two threads at once.  Every function returning int returns a
 * blo_status; on error the details are in blo_last_error().  The library
 * never exits, aborts, or prints unless asked to through the callbacks. */
#ifndef BLO_H
#define BLO_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BLO_VERSION "0.1.0"

typedef struct blo_state blo_state;

typedef enum blo_status {
  BLO_OK = 0,
  BLO_ERROR_SYNTAX = 1,    /* the chunk did not parse */
  BLO_ERROR_RUNTIME = 2,   /* evaluation failed (shape, name, assert, I/O, ...) */
  BLO_ERROR_MEMORY = 3,    /* allocator returned NULL or the memory cap was hit */
  BLO_ERROR_ARGUMENT = 4,  /* the host passed something invalid */
  BLO_INTERRUPTED = 5      /* a cancel request stopped evaluation */
} blo_status;

/* Host allocator in Lua's style: ptr NULL allocates, new_size 0 frees. */
typedef void *(*blo_realloc_fn)(void *ud, void *ptr, size_t old_size, size_t new_size);
/* Receives script output (print); text is not NUL-terminated. */
typedef void (*blo_write_fn)(void *ud, const char *text, size_t len);

/* Where an error happened.  Strings are owned by the state and valid until
 * the next call on it. */
typedef struct blo_error {
  blo_status status;
  const char *message;     /* "shape mismatch in '+': [2] and [3]" */
  const char *file;        /* chunk name, "" if none */
  int line, col;           /* 1-based, 0 if unknown */
} blo_error;

/* Receives each error as a value, formatted "file:line:col: error: msg" plus
 * the source line and a caret; the structured form is in blo_last_error(). */
typedef void (*blo_error_fn)(void *ud, const char *formatted);

typedef struct blo_config {
  blo_realloc_fn realloc_fn;   /* NULL: the C library's realloc/free */
  void *alloc_ud;
  blo_write_fn write_fn;       /* NULL: output is discarded */
  void *write_ud;
  blo_error_fn error_fn;       /* NULL: errors are only kept for blo_last_error */
  void *error_ud;
  int allow_files;             /* 0: load_csv, save_csv, load_idx, trace files are refused */
  size_t mem_cap;              /* bytes of tensor data allowed, 0 = unlimited */
  unsigned long long seed;     /* initial random seed (scripts may call seed()) */
} blo_config;

/* Fills *cfg with the defaults: system allocator, no output, files allowed, no cap, seed 0. */
void blo_config_defaults(blo_config *cfg);

/* Opens a state; cfg NULL means defaults.  Returns NULL if memory runs out. */
blo_state *blo_open(const blo_config *cfg);
/* Frees the state and everything it owns.  NULL is ignored. */
void blo_close(blo_state *S);

/* Evaluates source text (len bytes) as a chunk named name (used in messages). */
int blo_eval_string(blo_state *S, const char *name, const char *src, size_t len);
/* Reads and evaluates a file; the chunk is named after the path. */
int blo_eval_file(blo_state *S, const char *path);
/* The last error; status BLO_OK if the last call succeeded. */
const blo_error *blo_last_error(const blo_state *S);
/* The last error formatted with source line and caret (owned by the state). */
const char *blo_last_error_text(blo_state *S);

/* Sets the list `args` seen by scripts (copied). */
int blo_set_args(blo_state *S, int argc, const char *const *argv);

/* Points the state at a flag that a signal handler may set (to nonzero) to
 * stop a running evaluation at the next step; the flag is cleared when the
 * interrupt is reported. */
void blo_set_interrupt_flag(blo_state *S, volatile int *flag);

/* ---- moving data in and out ---- */
/* Binds a global to a copy of data with the given shape (rank 0..4). */
int blo_set_tensor(blo_state *S, const char *name, int rank, const size_t *shape, const double *data);
int blo_set_number(blo_state *S, const char *name, double x);
/* Reads a global number or single-element tensor. */
int blo_get_number(blo_state *S, const char *name, double *out);
/* Shape of a global tensor (a number has rank 0).  shape has room for 4. */
int blo_get_shape(blo_state *S, const char *name, int *rank, size_t *shape);
/* Copies a global tensor into out (capacity n doubles). */
int blo_get_tensor(blo_state *S, const char *name, double *out, size_t n);
/* Borrowed read-only view of a global tensor's data, valid until the next
 * call that evaluates code or changes globals. */
int blo_view_tensor(blo_state *S, const char *name, const double **data, size_t *size);
/* Reads a numeric field of a global record (e.g. a solve result's "F"). */
int blo_get_field_number(blo_state *S, const char *record, const char *field, double *out);

#ifdef __cplusplus
}
#endif
#endif
