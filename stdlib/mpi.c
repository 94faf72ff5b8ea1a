/* mpi.c: the collectives of SPMD scripts (docs/MPI.md): rank, nranks,
 * allreduce, bcast, allgather, barrier and shard.
 *
 * (rank() itself lives in stdlib/builtins.c beside rank(x).)
 *
 * The communicator belongs to the state (blo_config.comm); the library never
 * initialises or finalises MPI.  Built without MPI, or with no usable
 * communicator, every builtin behaves as on one rank, so a script runs
 * unchanged on a laptop.
 *
 * Every collective first exchanges a small header (status, parameter, kind,
 * rank, shape) with one allgather, so that a bad argument or a shape that
 * differs between ranks becomes the same located error on every rank instead
 * of a hang or a truncated message. */
#include "config.h"
#ifdef HAVE_MPI
#include <mpi.h>   /* before blo.h: blo_config.comm is then an MPI_Comm */
#endif
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "interp.h"

const builtin_def *mpi_builtin_find(const char *name);
const builtin_def *mpi_builtin_at(size_t i);
int mpi_process_rank(blo_state *S);

static const char *const NO_NAMED[] = {NULL};

/* ---- the communicator ---- */

#ifdef HAVE_MPI
/* blo.h stores the field as a void * for hosts that do not include mpi.h: the
 * layouts agree only if an MPI_Comm fits that slot. */
_Static_assert(sizeof(MPI_Comm) <= sizeof(void *), "MPI_Comm must fit blo_config's communicator slot");

/* The state's communicator, or 0 when it is one rank (none configured, or MPI
 * not running). */
static int mpi_comm(blo_state *S, MPI_Comm *out) {
  static const unsigned char zero[sizeof(MPI_Comm)];
  MPI_Comm c = S->cfg.comm;
  if (memcmp(&c, zero, sizeof c) == 0 || c == MPI_COMM_NULL) return 0;
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init || fin) return 0;
  *out = c;
  return 1;
}
#endif

static void mpi_rank_size(blo_state *S, int *rank, int *size) {
  *rank = 0;
  *size = 1;
#ifdef HAVE_MPI
  MPI_Comm c;
  if (mpi_comm(S, &c)) {
    MPI_Comm_rank(c, rank);
    MPI_Comm_size(c, size);
  }
#else
  (void)S;
#endif
}

/* ---- the header every collective agrees on ---- */

enum { H_STATUS, H_PARAM, H_KIND, H_RANK, H_DIMS, H_LEN = H_DIMS + TN_MAX_RANK };
enum { K_NONE = 0, K_NUM = 1, K_TENSOR = 2 };

static void mpi_header(long *h, int status, long param, int kind, const blo_tensor *t) {
  memset(h, 0, H_LEN * sizeof *h);
  h[H_STATUS] = status;
  h[H_PARAM] = param;
  h[H_KIND] = kind;
  if (t) {
    h[H_RANK] = t->rank;
    for (int d = 0; d < t->rank; d++) h[H_DIMS + d] = (long)t->shape[d];
  }
}

static const char *mpi_hshape(const long *h, char *buf, size_t n) {
  size_t shape[TN_MAX_RANK];
  int r = (int)h[H_RANK];
  for (int d = 0; d < r; d++) shape[d] = (size_t)h[H_DIMS + d];
  return tn_shape_str_raw(r, shape, buf, n);
}

/* Gathers every rank's header into all (size * H_LEN longs, the caller's
 * buffer).  Then, if this rank failed (status set: it has already recorded
 * its own error) returns EV_ERR; if another rank failed, records an error
 * naming it.  On one rank all is just h. */
static int mpi_agree(blo_state *S, callargs *a, const char *name, const long *h, long *all, int size) {
#ifdef HAVE_MPI
  MPI_Comm c;
  if (size > 1 && mpi_comm(S, &c))
    MPI_Allgather((void *)h, H_LEN, MPI_LONG, all, H_LEN, MPI_LONG, c);
  else
    memcpy(all, h, H_LEN * sizeof *h);
#else
  memcpy(all, h, H_LEN * sizeof *h);
#endif
  if (h[H_STATUS]) return EV_ERR;
  for (int r = 0; r < size; r++)
    if (all[r * H_LEN + H_STATUS])
      return interp_error(S, a->call, "%s: rank %d reported an error (see its message)", name, r);
  return EV_OK;
}

/* The tensor of positional argument i, or a recorded error.  Numbers are
 * rank-0 tensors; *kind says which was given. */
static int mpi_arg(blo_state *S, callargs *a, const char *name, int i, blo_tensor **t, int *kind) {
  if (i >= a->npos || !v_is_numeric(a->pos[i])) {
    char d[96] = "nothing";
    if (i < a->npos) v_describe(a->pos[i], d, sizeof d);
    return interp_error(S, a->call, "%s: expected a number or tensor, got %s", name, d);
  }
  *kind = a->pos[i].kind == V_NUM ? K_NUM : K_TENSOR;
  *t = v_to_tensor(S, a->pos[i]);
  if (!*t) return interp_tn_error(S, a->call);
  if ((*t)->size > INT_MAX) {
    size_t n = (*t)->size;
    tn_release(&S->tn, *t);
    *t = NULL;
    return interp_error(S, a->call, "%s: %zu elements exceed one message (at most %d)", name, n, INT_MAX);
  }
  return EV_OK;
}

static value mpi_result(blo_state *S, blo_tensor *t, int kind) {
  if (kind == K_NUM) {
    double x = t->data[0];
    tn_release(&S->tn, t);
    return v_num(x);
  }
  return v_tensor(t);
}

/* ---- builtins ---- */

/* rank() shares its name with rank(x), the number of axes, whose entry in
 * stdlib/builtins.c calls this when given no argument. */
int mpi_process_rank(blo_state *S) {
  int r, p;
  mpi_rank_size(S, &r, &p);
  return r;
}

static int bi_nranks(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
  int r, p;
  mpi_rank_size(S, &r, &p);
  *out = v_num(p);
  return EV_OK;
}

static int bi_barrier(blo_state *S, callargs *a, value *out) {
  if (arg_check_named(S, a, NO_NAMED)) return EV_ERR;
#ifdef HAVE_MPI
  MPI_Comm c;
  if (mpi_comm(S, &c)) MPI_Barrier(c);
#endif
  *out = v_nil();
  return EV_OK;
}

enum { OP_SUM, OP_MEAN, OP_MAX, OP_MIN };
static const char *const OP_NAMES[] = {"sum", "mean", "max", "min", NULL};

/* allreduce(t, op = "sum"): every rank gets the elementwise reduction; the
 * shapes must agree on all ranks. */
static int bi_allreduce(blo_state *S, callargs *a, value *out) {
  static const char *const named[] = {"op", NULL};
  int me, size;
  mpi_rank_size(S, &me, &size);
  blo_tensor *t = NULL;
  int kind = K_NONE, status = 0;
  long op = OP_SUM;
  if (arg_check_named(S, a, named)) status = 1;
  if (!status) {
    value *o = arg_named(a, "op");
    if (o) {
      if (o->kind != V_STR) {
        char d[96];
        v_describe(*o, d, sizeof d);
        status = interp_error(S, a->call, "allreduce: op must be \"sum\", \"mean\", \"max\" or \"min\", got %s", d);
      } else {
        const char *s = ((ostr *)o->u.o)->s;
        for (op = 0; OP_NAMES[op] && strcmp(OP_NAMES[op], s) != 0; op++) {}
        if (!OP_NAMES[op]) {
          const char *hint = env_suggest_in(s, OP_NAMES);
          status = interp_error(S, a->call, "allreduce: unknown op \"%s\"%s%s%s (sum, mean, max or min)", s,
                                hint ? "; did you mean \"" : "", hint ? hint : "", hint ? "\"?" : "");
        }
      }
    }
  }
  if (!status && mpi_arg(S, a, "allreduce", 0, &t, &kind)) status = 1;
  long h[H_LEN], *all = malloc((size_t)size * H_LEN * sizeof *all);
  if (!all) {
    tn_release(&S->tn, t);
    return interp_error(S, a->call, "allreduce: out of memory");
  }
  mpi_header(h, status, op, kind, t);
  int rc = mpi_agree(S, a, "allreduce", h, all, size);
  for (int r = 0; r < size && rc == EV_OK; r++) {
    const long *o = all + r * H_LEN;
    if (o[H_PARAM] != op)
      rc = interp_error(S, a->call, "allreduce: op differs between ranks: \"%s\" on rank %d, \"%s\" on rank %d",
                        OP_NAMES[op], me, OP_NAMES[o[H_PARAM]], r);
    else if (memcmp(o + H_RANK, h + H_RANK, (H_LEN - H_RANK) * sizeof *h) != 0) {
      char b1[96], b2[96];
      rc = interp_error(S, a->call, "allreduce: shapes differ between ranks: %s on rank %d, %s on rank %d",
                        mpi_hshape(h, b1, sizeof b1), me, mpi_hshape(o, b2, sizeof b2), r);
    }
  }
  free(all);
  if (rc != EV_OK) {
    tn_release(&S->tn, t);
    return rc;
  }
  blo_tensor *res = tn_copy(&S->tn, t);
  tn_release(&S->tn, t);
  if (!res) return interp_tn_error(S, a->call);
#ifdef HAVE_MPI
  MPI_Comm c;
  if (size > 1 && mpi_comm(S, &c) && res->size > 0)
    MPI_Allreduce(MPI_IN_PLACE, res->data, (int)res->size, MPI_DOUBLE,
                  op == OP_MAX ? MPI_MAX : op == OP_MIN ? MPI_MIN : MPI_SUM, c);
#endif
  if (op == OP_MEAN)
    for (size_t i = 0; i < res->size; i++) res->data[i] /= size;
  *out = mpi_result(S, res, kind);
  return EV_OK;
}

/* bcast(v, root = 0): every rank gets root's number or tensor; the others'
 * v is ignored (any value will do). */
static int bi_bcast(blo_state *S, callargs *a, value *out) {
  static const char *const named[] = {"root", NULL};
  int me, size;
  mpi_rank_size(S, &me, &size);
  blo_tensor *t = NULL;
  int kind = K_NONE, status = 0;
  long root = 0;
  if (arg_check_named(S, a, named) || named_int(S, a, "root", 0, &root)) status = 1;
  else if (root < 0 || root >= size)
    status = interp_error(S, a->call, "bcast: root %ld out of range for %d rank%s", root, size, size == 1 ? "" : "s");
  else if (a->npos < 1)
    status = interp_error(S, a->call, "bcast: expected a value to send");
  else if (root == me && mpi_arg(S, a, "bcast", 0, &t, &kind))
    status = 1;
  long h[H_LEN], *all = malloc((size_t)size * H_LEN * sizeof *all);
  if (!all) {
    tn_release(&S->tn, t);
    return interp_error(S, a->call, "bcast: out of memory");
  }
  mpi_header(h, status, root, kind, t);
  int rc = mpi_agree(S, a, "bcast", h, all, size);
  for (int r = 0; r < size && rc == EV_OK; r++)
    if (all[r * H_LEN + H_PARAM] != root)
      rc = interp_error(S, a->call, "bcast: root differs between ranks: %ld on rank %d, %ld on rank %d", root, me,
                        all[r * H_LEN + H_PARAM], r);
  if (rc != EV_OK) {
    free(all);
    tn_release(&S->tn, t);
    return rc;
  }
  if (me != root) {
    const long *o = all + root * H_LEN;
    size_t shape[TN_MAX_RANK];
    for (int d = 0; d < o[H_RANK]; d++) shape[d] = (size_t)o[H_DIMS + d];
    kind = (int)o[H_KIND];
    t = tn_new(&S->tn, (int)o[H_RANK], shape);
  }
  free(all);
  /* every rank must take part in the broadcast, even one that could not
   * allocate: it receives into a scratch buffer and reports afterwards */
  int fail = t == NULL;
#ifdef HAVE_MPI
  MPI_Comm c;
  if (size > 1 && mpi_comm(S, &c)) {
    MPI_Allreduce(MPI_IN_PLACE, &fail, 1, MPI_INT, MPI_MAX, c);
    if (!fail && t->size > 0) MPI_Bcast(t->data, (int)t->size, MPI_DOUBLE, (int)root, c);
  }
#endif
  if (fail) {
    tn_release(&S->tn, t);
    return t ? interp_error(S, a->call, "bcast: another rank ran out of memory") : interp_tn_error(S, a->call);
  }
  *out = mpi_result(S, t, kind);
  return EV_OK;
}

/* allgather(t): every rank's tensor concatenated along axis 0 in rank order
 * (numbers join as one-element vectors); shapes after axis 0 must agree. */
static int bi_allgather(blo_state *S, callargs *a, value *out) {
  int me, size;
  mpi_rank_size(S, &me, &size);
  blo_tensor *t = NULL;
  int kind = K_NONE, status = 0;
  if (arg_check_named(S, a, NO_NAMED) || mpi_arg(S, a, "allgather", 0, &t, &kind)) status = 1;
  long h[H_LEN], *all = malloc((size_t)size * H_LEN * sizeof *all);
  int *counts = malloc((size_t)size * 2 * sizeof *counts);
  if (!all || !counts) {
    free(all);
    free(counts);
    tn_release(&S->tn, t);
    return interp_error(S, a->call, "allgather: out of memory");
  }
  mpi_header(h, status, 0, kind, t);
  if (t && t->rank == 0) {   /* a number joins as [1] */
    h[H_RANK] = 1;
    h[H_DIMS] = 1;
  }
  int rc = mpi_agree(S, a, "allgather", h, all, size);
  int agreed = rc == EV_OK;   /* the same on every rank: all saw the same statuses */
  long rows = 0;
  size_t inner = 1;
  for (int d = 1; d < h[H_RANK]; d++) inner *= (size_t)h[H_DIMS + d];
  for (int r = 0; r < size && rc == EV_OK; r++) {
    const long *o = all + r * H_LEN;
    if (memcmp(o + H_RANK, h + H_RANK, sizeof *h) != 0 ||
        memcmp(o + H_DIMS + 1, h + H_DIMS + 1, (TN_MAX_RANK - 1) * sizeof *h) != 0) {
      char b1[96], b2[96];
      rc = interp_error(S, a->call,
                        "allgather: shapes after axis 0 differ between ranks: %s on rank %d, %s on rank %d",
                        mpi_hshape(h, b1, sizeof b1), me, mpi_hshape(o, b2, sizeof b2), r);
    } else {
      rows += o[H_DIMS];
    }
  }
  if (rc == EV_OK && (double)rows * (double)inner > INT_MAX)
    rc = interp_error(S, a->call, "allgather: the result exceeds one message (at most %d elements)", INT_MAX);
  blo_tensor *res = NULL;
  if (rc == EV_OK) {
    size_t shape[TN_MAX_RANK];
    for (int d = 0; d < h[H_RANK]; d++) shape[d] = (size_t)h[H_DIMS + d];
    shape[0] = (size_t)rows;
    res = tn_new(&S->tn, (int)h[H_RANK], shape);
    if (!res) rc = interp_tn_error(S, a->call);
  }
  if (agreed) {
    /* all ranks passed the header: whether one failed since then is agreed
     * on before moving data, so nobody waits for a rank that left */
    int fail = rc != EV_OK;
#ifdef HAVE_MPI
    MPI_Comm c;
    if (size > 1 && mpi_comm(S, &c)) {
      int any = fail;
      MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, c);
      if (any && !fail) rc = interp_error(S, a->call, "allgather: another rank ran out of memory");
      if (!any) {
        int *displs = counts + size;
        int off = 0;
        for (int r = 0; r < size; r++) {
          counts[r] = (int)(all[r * H_LEN + H_DIMS] * (long)inner);
          displs[r] = off;
          off += counts[r];
        }
        MPI_Allgatherv(t->data, (int)t->size, MPI_DOUBLE, res->data, counts, displs, MPI_DOUBLE, c);
      }
    } else if (!fail) {
      memcpy(res->data, t->data, t->size * sizeof *t->data);
    }
#else
    if (!fail) memcpy(res->data, t->data, t->size * sizeof *t->data);
#endif
  }
  free(all);
  free(counts);
  tn_release(&S->tn, t);
  if (rc != EV_OK) {
    tn_release(&S->tn, res);
    return rc;
  }
  *out = v_tensor(res);
  return EV_OK;
}

/* The block [*start, *start + *len) of n items that rank r of p owns:
 * contiguous, in rank order, sizes differing by at most one (the first
 * n % p ranks take one more). */
static void mpi_block(size_t n, int r, int p, size_t *start, size_t *len) {
  size_t base = n / (size_t)p, rem = n % (size_t)p, rr = (size_t)r;
  *start = rr * base + (rr < rem ? rr : rem);
  *len = base + (rr < rem ? 1 : 0);
}

/* shard(X, axis = 0): this rank's contiguous block along axis (no
 * communication: every rank holds X and keeps its part). */
static int bi_shard(blo_state *S, callargs *a, value *out) {
  static const char *const named[] = {"axis", NULL};
  if (arg_check_named(S, a, named)) return EV_ERR;
  if (a->npos != 1 || a->pos[0].kind != V_TENSOR) {
    char d[96] = "nothing";
    if (a->npos >= 1) v_describe(a->pos[0], d, sizeof d);
    return interp_error(S, a->call, "shard: expected a tensor of rank >= 1, got %s", d);
  }
  blo_tensor *x = a->pos[0].u.t;
  if (x->rank < 1) return interp_error(S, a->call, "shard: expected a tensor of rank >= 1, got a scalar tensor");
  int axis;
  if (arg_axis(S, a, x->rank, &axis)) return EV_ERR;
  if (axis < 0) axis = 0;   /* absent: rows */
  int me, size;
  mpi_rank_size(S, &me, &size);
  size_t n = x->shape[axis], start, len, outer = 1, inner = 1;
  mpi_block(n, me, size, &start, &len);
  for (int d = 0; d < axis; d++) outer *= x->shape[d];
  for (int d = axis + 1; d < x->rank; d++) inner *= x->shape[d];
  size_t shape[TN_MAX_RANK];
  memcpy(shape, x->shape, (size_t)x->rank * sizeof *shape);
  shape[axis] = len;
  blo_tensor *res = tn_new(&S->tn, x->rank, shape);
  if (!res) return interp_tn_error(S, a->call);
  for (size_t o = 0; o < outer; o++)
    if (len * inner > 0)
      memcpy(res->data + o * len * inner, x->data + (o * n + start) * inner, len * inner * sizeof *res->data);
  *out = v_tensor(res);
  return EV_OK;
}

static const builtin_def mpi_builtins[] = {
  {"allgather", bi_allgather, 1, 1, "allgather(t)",
   "every rank's tensor concatenated along axis 0 in rank order (numbers join as one-element vectors); shapes after axis 0 must agree", 0},
  {"allreduce", bi_allreduce, 1, 1, "allreduce(t, op = \"sum\")",
   "elementwise sum, mean, max or min of t over all ranks, on every rank (shapes must agree); one rank: t", 0},
  {"barrier", bi_barrier, 0, 0, "barrier()", "waits until every rank has reached it; one rank: returns at once", 0},
  {"bcast", bi_bcast, 1, 1, "bcast(v, root = 0)",
   "root's number or tensor, on every rank (the others' v is ignored); one rank: v", 0},
  {"nranks", bi_nranks, 0, 0, "nranks()", "the number of MPI ranks running the script (1 without MPI)", 0},
  {"shard", bi_shard, 1, 1, "shard(X, axis = 0)",
   "this rank's contiguous block of X along axis (rank order, sizes differ by at most one); one rank: X", 0},
};

enum { NMPI = sizeof mpi_builtins / sizeof mpi_builtins[0] };

const builtin_def *mpi_builtin_find(const char *name) {
  for (size_t i = 0; i < NMPI; i++)
    if (strcmp(name, mpi_builtins[i].name) == 0) return &mpi_builtins[i];
  return NULL;
}

const builtin_def *mpi_builtin_at(size_t i) { return i < NMPI ? &mpi_builtins[i] : NULL; }
