/* linalg.c: dense linear algebra on rank-2 tensors through LAPACKE.
 *
 * All calls use LAPACK_ROW_MAJOR on private copies (LAPACK overwrites its
 * inputs).  Empty dimensions are handled before reaching LAPACKE, which would
 * otherwise reject leading dimensions < 1 and print through xerbla.
 */
#define _POSIX_C_SOURCE 200809L
#include "tensor.h"

#include <cblas.h>
#include <float.h>
#include <lapacke.h>
#include <limits.h>
#include <string.h>

/* pivot arrays live in pooled double tensors */
_Static_assert(sizeof(lapack_int) <= sizeof(double), "lapack_int must fit in a double slot");

#define SB 96

/* Maps a negative LAPACKE info (no convergence / singular are handled by callers). */
static int lapack_fail(tn_ctx *ctx, const char *name, lapack_int info) {
  if (info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR)
    return tn_error(ctx, "%s: out of memory", name);
  /* parameters are validated here, so the remaining cause is LAPACKE's NaN check */
  return tn_error(ctx, "%s: input contains NaN", name);
}

static int check_square(tn_ctx *ctx, const char *name, const blo_tensor *A) {
  if (A->rank == 2 && A->shape[0] == A->shape[1]) {
    if (A->shape[0] > INT_MAX) return tn_error(ctx, "%s: matrix too large", name);
    return 0;
  }
  char s[SB];
  return tn_error(ctx, "%s: matrix must be square, got %s", name, tn_shape_str(A, s, SB));
}

static int check_matrix(tn_ctx *ctx, const char *name, const blo_tensor *A) {
  char s[SB];
  if (A->rank != 2) return tn_error(ctx, "%s: expected a matrix, got %s", name, tn_shape_str(A, s, SB));
  if (A->shape[0] > INT_MAX || A->shape[1] > INT_MAX) return tn_error(ctx, "%s: matrix too large", name);
  return 0;
}

/* A [n,n], b [n] or [n,k] -> x with b's shape, A x = b */
blo_tensor *tn_linsolve(tn_ctx *ctx, const blo_tensor *A, const blo_tensor *b) {
  if (check_square(ctx, "linsolve", A) < 0) return NULL;
  size_t n = A->shape[0];
  if ((b->rank != 1 && b->rank != 2) || b->shape[0] != n || (b->rank == 2 && b->shape[1] > INT_MAX)) {
    char s1[SB], s2[SB];
    tn_error(ctx, "linsolve: shape mismatch: A is %s, b is %s", tn_shape_str(A, s1, SB), tn_shape_str(b, s2, SB));
    return NULL;
  }
  size_t nrhs = b->rank == 2 ? b->shape[1] : 1;
  blo_tensor *x = tn_copy(ctx, b);
  if (!x || x->size == 0) return x;
  blo_tensor *lu = tn_copy(ctx, A);
  blo_tensor *piv = lu ? tn_new(ctx, 1, &n) : NULL;
  if (!piv) { tn_release(ctx, lu); tn_release(ctx, x); return NULL; }
  lapack_int info = LAPACKE_dgesv(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)nrhs, lu->data, (lapack_int)n,
                                  (lapack_int *)(void *)piv->data, x->data, (lapack_int)nrhs);
  tn_release(ctx, lu);
  tn_release(ctx, piv);
  if (info != 0) {
    if (info > 0) tn_error(ctx, "linsolve: matrix is singular");
    else lapack_fail(ctx, "linsolve", info);
    tn_release(ctx, x);
    return NULL;
  }
  return x;
}

/* [n,n] -> [n,n] */
blo_tensor *tn_inv(tn_ctx *ctx, const blo_tensor *A) {
  if (check_square(ctx, "inv", A) < 0) return NULL;
  size_t n = A->shape[0];
  blo_tensor *r = tn_copy(ctx, A);
  if (!r || n == 0) return r;
  blo_tensor *piv = tn_new(ctx, 1, &n);
  if (!piv) { tn_release(ctx, r); return NULL; }
  lapack_int *ipiv = (lapack_int *)(void *)piv->data;
  lapack_int info = LAPACKE_dgetrf(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)n, r->data, (lapack_int)n, ipiv);
  if (info == 0) info = LAPACKE_dgetri(LAPACK_ROW_MAJOR, (lapack_int)n, r->data, (lapack_int)n, ipiv);
  tn_release(ctx, piv);
  if (info != 0) {
    if (info > 0) tn_error(ctx, "inv: matrix is singular");
    else lapack_fail(ctx, "inv", info);
    tn_release(ctx, r);
    return NULL;
  }
  return r;
}

/* [n,n] -> scalar; an exactly singular matrix has determinant 0 (not an error) */
int tn_det(tn_ctx *ctx, const blo_tensor *A, double *out) {
  if (check_square(ctx, "det", A) < 0) return -1;
  size_t n = A->shape[0];
  if (n == 0) { *out = 1.0; return 0; }
  blo_tensor *lu = tn_copy(ctx, A);
  blo_tensor *piv = lu ? tn_new(ctx, 1, &n) : NULL;
  if (!piv) { tn_release(ctx, lu); return -1; }
  lapack_int *ipiv = (lapack_int *)(void *)piv->data;
  lapack_int info = LAPACKE_dgetrf(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)n, lu->data, (lapack_int)n, ipiv);
  int rc = 0;
  if (info < 0) rc = lapack_fail(ctx, "det", info);
  else {
    double d = 1.0;
    for (size_t i = 0; i < n; i++) {
      d *= lu->data[i * n + i];
      if (ipiv[i] != (lapack_int)(i + 1)) d = -d; /* each row swap flips the sign */
    }
    *out = d;
  }
  tn_release(ctx, lu);
  tn_release(ctx, piv);
  return rc;
}

/* [n,n] -> lower [n,n] with A = L L' */
blo_tensor *tn_chol(tn_ctx *ctx, const blo_tensor *A) {
  if (check_square(ctx, "chol", A) < 0) return NULL;
  size_t n = A->shape[0];
  blo_tensor *L = tn_copy(ctx, A);
  if (!L || n == 0) return L;
  lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, L->data, (lapack_int)n);
  if (info != 0) {
    if (info > 0) tn_error(ctx, "chol: matrix is not positive definite");
    else lapack_fail(ctx, "chol", info);
    tn_release(ctx, L);
    return NULL;
  }
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++) L->data[i * n + j] = 0.0; /* dpotrf leaves A's upper part */
  return L;
}

/* symmetric [n,n] -> eigenvalues [n] ascending, eigenvectors [n,n] as columns (lower triangle read) */
int tn_eigh(tn_ctx *ctx, const blo_tensor *A, blo_tensor **evals, blo_tensor **evecs) {
  *evals = *evecs = NULL;
  if (check_square(ctx, "eigh", A) < 0) return -1;
  size_t n = A->shape[0];
  blo_tensor *V = tn_copy(ctx, A);
  blo_tensor *w = V ? tn_new(ctx, 1, &n) : NULL;
  if (!w) { tn_release(ctx, V); return -1; }
  if (n > 0) {
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'L', (lapack_int)n, V->data, (lapack_int)n, w->data);
    if (info != 0) {
      if (info > 0) tn_error(ctx, "eigh: eigenvalue computation did not converge");
      else lapack_fail(ctx, "eigh", info);
      tn_release(ctx, V);
      tn_release(ctx, w);
      return -1;
    }
  }
  *evals = w;
  *evecs = V;
  return 0;
}

/* [m,n] -> [n,m] Moore-Penrose inverse via SVD A = U S V' */
blo_tensor *tn_pinv(tn_ctx *ctx, const blo_tensor *A) {
  if (check_matrix(ctx, "pinv", A) < 0) return NULL;
  size_t m = A->shape[0], n = A->shape[1], k = m < n ? m : n;
  size_t oshape[2] = {n, m}, ushape[2] = {m, k}, vshape[2] = {k, n};
  if (k == 0) return tn_zeros(ctx, 2, oshape);
  blo_tensor *a = tn_copy(ctx, A), *s = NULL, *u = NULL, *vt = NULL, *o = NULL;
  if (!a || !(s = tn_new(ctx, 1, &k)) || !(u = tn_new(ctx, 2, ushape)) || !(vt = tn_new(ctx, 2, vshape)) ||
      !(o = tn_new(ctx, 2, oshape)))
    goto fail;
  lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m, (lapack_int)n, a->data, (lapack_int)n,
                                   s->data, u->data, (lapack_int)k, vt->data, (lapack_int)n);
  if (info != 0) {
    if (info > 0) tn_error(ctx, "pinv: SVD did not converge");
    else lapack_fail(ctx, "pinv", info);
    goto fail;
  }
  /* singular values below the NumPy-style cutoff are treated as exact zeros */
  double cutoff = (double)(m > n ? m : n) * DBL_EPSILON * s->data[0];
  for (size_t i = 0; i < k; i++) {
    double f = s->data[i] > cutoff ? 1.0 / s->data[i] : 0.0;
    for (size_t j = 0; j < n; j++) vt->data[i * n + j] *= f;
  }
  /* (S^+ V')' @ U' : [n,k] @ [k,m] -> [n,m] */
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasTrans, (int)n, (int)m, (int)k, 1.0, vt->data, (int)n, u->data,
              (int)k, 0.0, o->data, (int)m);
  tn_release(ctx, a); tn_release(ctx, s); tn_release(ctx, u); tn_release(ctx, vt);
  return o;
fail:
  tn_release(ctx, a); tn_release(ctx, s); tn_release(ctx, u); tn_release(ctx, vt); tn_release(ctx, o);
  return NULL;
}

/* A [m,n], b [m] or [m,k] -> minimum-norm least-squares x [n] or [n,k] */
blo_tensor *tn_lstsq(tn_ctx *ctx, const blo_tensor *A, const blo_tensor *b) {
  if (check_matrix(ctx, "lstsq", A) < 0) return NULL;
  size_t m = A->shape[0], n = A->shape[1];
  if ((b->rank != 1 && b->rank != 2) || b->shape[0] != m || (b->rank == 2 && b->shape[1] > INT_MAX)) {
    char s1[SB], s2[SB];
    tn_error(ctx, "lstsq: shape mismatch: A is %s, b is %s", tn_shape_str(A, s1, SB), tn_shape_str(b, s2, SB));
    return NULL;
  }
  size_t nrhs = b->rank == 2 ? b->shape[1] : 1, mx = m > n ? m : n, k = m < n ? m : n;
  size_t xshape[2] = {n, nrhs}, bshape[2] = {mx, nrhs};
  if (k == 0 || nrhs == 0) return tn_zeros(ctx, b->rank, xshape);
  blo_tensor *a = tn_copy(ctx, A), *bb = NULL, *s = NULL, *x = NULL;
  if (!a || !(bb = tn_zeros(ctx, 2, bshape)) || !(s = tn_new(ctx, 1, &k)) || !(x = tn_new(ctx, b->rank, xshape)))
    goto fail;
  memcpy(bb->data, b->data, b->size * sizeof(double)); /* dgelsd needs max(m,n) rows */
  lapack_int rank;
  double rcond = (double)mx * DBL_EPSILON; /* same cutoff as tn_pinv */
  lapack_int info = LAPACKE_dgelsd(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)n, (lapack_int)nrhs, a->data,
                                   (lapack_int)n, bb->data, (lapack_int)nrhs, s->data, rcond, &rank);
  if (info != 0) {
    if (info > 0) tn_error(ctx, "lstsq: SVD did not converge");
    else lapack_fail(ctx, "lstsq", info);
    goto fail;
  }
  memcpy(x->data, bb->data, n * nrhs * sizeof(double));
  tn_release(ctx, a); tn_release(ctx, bb); tn_release(ctx, s);
  return x;
fail:
  tn_release(ctx, a); tn_release(ctx, bb); tn_release(ctx, s); tn_release(ctx, x);
  return NULL;
}
