/* io.h: reading and writing numeric data files (CSV, IDX).
 *
 * Pure data functions: they know nothing of the interpreter.  Every function
 * reports failure by returning NULL / -1 with a message in err (no location
 * prefix beyond "file:line:" for parse errors); the caller adds its own
 * context ("load_csv: ...").  Tensors come from the given tn_ctx, so the
 * memory cap applies to them. */
#ifndef BLO_IO_H
#define BLO_IO_H

#include <stddef.h>
#include "../runtime/tensor.h"

/* Reads a numeric CSV file (comma separated, blank lines skipped, "\r\n"
 * accepted).  header != 0: the first line holds column names and is not
 * parsed as numbers; the names of the returned columns are stored in
 * *colnames_out (if not NULL; free them with io_free_names) and their count
 * in *ncolnames.  cols (ncols > 0) selects columns by 0-based position
 * (negative counts from the end), in the given order; only those are parsed,
 * so other columns may hold text.  Every line must have as many fields as the
 * first one.  Result: [rows, ncols], or [rows] when one column results.
 * Errors: "cannot open 'a.csv': No such file or directory",
 *         "a.csv:3: expected 4 fields, got 3",
 *         "a.csv:3: field 2 is not a number: 'abc'",
 *         "a.csv: column 7 out of range (the file has 4 columns)". */
blo_tensor *io_load_csv(tn_ctx *ctx, const char *path, int header, const long *cols, int ncols,
                        char ***colnames_out, int *ncolnames, char *err, size_t errlen);
void io_free_names(char **names, int n);

/* Writes t (rank 0, 1 or 2; a vector is written as one column) as CSV with
 * every number printed with %.17g, so loading it back gives the same doubles.
 * header (nheader > 0) must name every column. */
int io_save_csv(tn_ctx *ctx, const char *path, const blo_tensor *t, const char *const *header,
                int nheader, char *err, size_t errlen);

/* Reads an IDX file (the MNIST format), plain or gzip-compressed: magic
 * 0x00 0x00 type ndims, ndims big-endian uint32 sizes (1..4 dims), then the
 * big-endian data.  type: 0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C int32,
 * 0x0D float32, 0x0E float64.  The result has the file's dims as its shape.
 * Errors name the file: "'x.idx' is truncated: expected 784 data bytes, got 100". */
blo_tensor *io_load_idx(tn_ctx *ctx, const char *path, char *err, size_t errlen);

#endif
