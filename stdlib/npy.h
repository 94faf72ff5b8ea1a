/* npy.h: NumPy's .npy and .npz file formats.
 *
 * Pure data functions, like io.h: they know nothing of the interpreter,
 * report failure by returning NULL / -1 with a message in err that names the
 * file (and the archive member), and take tensors from the given tn_ctx so
 * the memory cap applies.  The files are untrusted input: every length read
 * from them is bounded and every size computation is checked for overflow.
 *
 * Written: float64 little-endian, C order, format version 1.0 (2.0 when the
 * header would not fit in 1.0), the header laid out byte for byte as
 * numpy.save writes it.
 * Read: format versions 1.0, 2.0 and 3.0; dtypes f2, f4, f8, i1, i2, i4, i8,
 * u1, u2, u4, u8 and b1 in either byte order, converted to double (integers
 * beyond 2^53 round to the nearest double); fortran_order True is transposed
 * to C order.  Rejected with a message: object, string, complex, datetime
 * and structured dtypes, rank above TN_MAX_RANK, malformed or oversized
 * headers, truncated data. */
#ifndef BLO_NPY_H
#define BLO_NPY_H

#include <stddef.h>
#include "../runtime/tensor.h"

/* The header NumPy's longest header may have (numpy.lib.format's bound). */
#define NPY_MAX_HEADER 10000

blo_tensor *npy_load(tn_ctx *ctx, const char *path, char *err, size_t errlen);
int npy_save(tn_ctx *ctx, const char *path, const blo_tensor *t, char *err, size_t errlen);

/* The preamble numpy.save writes for a float64 C-order array of this shape:
 * magic, version, header length, the header dict padded with spaces and a
 * final '\n' so that the data starts at a multiple of 64 bytes.  Returns its
 * length (at most n, which must be at least 512), 0 if it does not fit. */
size_t npy_preamble(int rank, const size_t *shape, unsigned char *buf, size_t n);

/* .npz: a ZIP archive whose members are NAME.npy files.  Written stored
 * (uncompressed, no ZIP64: every member and the archive below 4 GiB); read
 * stored or deflated members through the central directory (ZIP64 extra
 * fields are understood), with each member's CRC-32 and sizes checked. */
typedef struct npz_entry {
  char *name;         /* the member name without ".npy" (e.g. "a/b"); malloc'd */
  blo_tensor *t;
} npz_entry;

/* names[i] is written as member "names[i].npy"; names must be nonempty. */
int npz_save(tn_ctx *ctx, const char *path, const char *const *names, const blo_tensor *const *ts, size_t n,
             char *err, size_t errlen);
/* On success *out holds *n entries in archive order (free with npz_free). */
int npz_load(tn_ctx *ctx, const char *path, npz_entry **out, size_t *n, char *err, size_t errlen);
void npz_free(tn_ctx *ctx, npz_entry *e, size_t n);

#endif
