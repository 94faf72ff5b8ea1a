/* io.c: CSV and IDX readers/writers (see io.h).  Independent of the
 * interpreter so the unit tests can drive them directly. */
#define _POSIX_C_SOURCE 200809L
#include "io.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Copies a tensor-layer failure (allocation, memory cap) into err. */
static void tn_err_copy(tn_ctx *ctx, char *err, size_t errlen) {
  seterr(err, errlen, "%s", ctx->err[0] ? ctx->err : "out of memory");
}

void io_free_names(char **names, int n) {
  if (!names) return;
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
}

/* ======================================================================
 * CSV
 * ====================================================================== */

typedef struct { char **f; int n, cap; } fieldv;

static int is_blank(const char *s) {
  for (; *s; s++)
    if (*s != ' ' && *s != '\t') return 0;
  return 1;
}

/* Splits line in place into NUL-terminated fields.  Quoted fields ("a,b",
 * "say ""hi""") are unquoted; surrounding blanks are trimmed.
 * Returns 0, -1 on allocation failure, -2 on an unterminated quote. */
static int split_fields(char *line, fieldv *fv) {
  fv->n = 0;
  char *r = line;
  for (;;) {
    while (*r == ' ' || *r == '\t') r++;
    char *start = r, *w = r, *last = r;  /* last: end of the significant text */
    if (*r == '"') {
      r++;
      for (;;) {
        if (!*r) return -2;
        if (*r == '"') {
          if (r[1] == '"') { *w++ = '"'; r += 2; continue; }
          r++;
          break;
        }
        *w++ = *r++;
      }
      last = w;
      while (*r && *r != ',') r++;  /* text after the closing quote is ignored */
    } else {
      while (*r && *r != ',') {
        if (*r != ' ' && *r != '\t') last = w + 1;
        *w++ = *r++;
      }
    }
    int more = *r == ',';
    *last = '\0';
    if (fv->n == fv->cap) {
      int cap = fv->cap ? fv->cap * 2 : 16;
      char **f = realloc(fv->f, sizeof(char *) * (size_t)cap);
      if (!f) return -1;
      fv->f = f;
      fv->cap = cap;
    }
    fv->f[fv->n++] = start;
    if (!more) return 0;
    r++;
  }
}

/* Strips the line terminator; returns 1 if the line is blank. */
static int chomp(char *s, ssize_t *len) {
  while (*len > 0 && (s[*len - 1] == '\n' || s[*len - 1] == '\r')) s[--*len] = '\0';
  return is_blank(s);
}

static int parse_number(const char *s, double *out) {
  if (!*s) return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end) return -1;
  *out = v;  /* overflow gives +-inf and underflow a denormal/zero: both acceptable */
  return 0;
}

blo_tensor *io_load_csv(tn_ctx *ctx, const char *path, int header, const long *cols, int ncols,
                        char ***colnames_out, int *ncolnames, char *err, size_t errlen) {
  if (colnames_out) *colnames_out = NULL;
  if (ncolnames) *ncolnames = 0;
  FILE *fp = fopen(path, "r");
  if (!fp) {
    seterr(err, errlen, "cannot open '%s': %s", path, strerror(errno));
    return NULL;
  }
  char *line = NULL;
  size_t linecap = 0;
  fieldv fv = {0};
  long *sel = NULL;          /* selected columns, normalised */
  int nsel = 0, nfields = -1;
  char **names = NULL;
  double *data = NULL;
  size_t ndata = 0, datacap = 0, rows = 0;
  blo_tensor *result = NULL;
  long lineno = 0;
  ssize_t len;
  int need_header = header;

  while ((len = getline(&line, &linecap, fp)) >= 0) {
    lineno++;
    char *text = line;
    if (lineno == 1 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB &&
        (unsigned char)text[2] == 0xBF) {
      text += 3;  /* UTF-8 byte order mark, as spreadsheet exports write it */
      len -= 3;
    }
    if (chomp(text, &len)) continue;
    int rc = split_fields(text, &fv);
    if (rc == -1) { seterr(err, errlen, "%s:%ld: out of memory", path, lineno); goto done; }
    if (rc == -2) { seterr(err, errlen, "%s:%ld: unterminated quoted field", path, lineno); goto done; }
    if (nfields < 0) {
      /* The first line fixes the field count and resolves the selection. */
      nfields = fv.n;
      nsel = ncols > 0 ? ncols : nfields;
      sel = malloc(sizeof(long) * (size_t)nsel);
      if (!sel) { seterr(err, errlen, "out of memory"); goto done; }
      for (int i = 0; i < nsel; i++) {
        long c = ncols > 0 ? cols[i] : i;
        long cn = c < 0 ? c + nfields : c;
        if (cn < 0 || cn >= nfields) {
          seterr(err, errlen, "%s: column %ld out of range (the file has %d column%s)", path, c, nfields,
                 nfields == 1 ? "" : "s");
          goto done;
        }
        sel[i] = cn;
      }
    } else if (fv.n != nfields) {
      seterr(err, errlen, "%s:%ld: expected %d field%s, got %d", path, lineno, nfields,
             nfields == 1 ? "" : "s", fv.n);
      goto done;
    }
    if (need_header) {
      need_header = 0;
      if (colnames_out) {
        names = calloc((size_t)nsel, sizeof(char *));
        if (!names) { seterr(err, errlen, "out of memory"); goto done; }
        for (int i = 0; i < nsel; i++) {
          names[i] = strdup(fv.f[sel[i]]);
          if (!names[i]) { seterr(err, errlen, "out of memory"); goto done; }
        }
      }
      continue;
    }
    if (ndata + (size_t)nsel > datacap) {
      size_t cap = datacap ? datacap * 2 : 1024;
      while (cap < ndata + (size_t)nsel) cap *= 2;
      double *d = realloc(data, cap * sizeof(double));
      if (!d) { seterr(err, errlen, "%s:%ld: out of memory", path, lineno); goto done; }
      data = d;
      datacap = cap;
    }
    for (int i = 0; i < nsel; i++) {
      const char *s = fv.f[sel[i]];
      if (parse_number(s, &data[ndata]) < 0) {
        seterr(err, errlen, "%s:%ld: field %ld is not a number: '%.60s%s'", path, lineno, sel[i] + 1, s,
               strlen(s) > 60 ? "..." : "");
        goto done;
      }
      ndata++;
    }
    rows++;
  }
  if (ferror(fp)) { seterr(err, errlen, "%s: read error: %s", path, strerror(errno)); goto done; }

  {
    size_t shape[2] = {rows, (size_t)(nsel > 0 ? nsel : 0)};
    int rank = nsel == 1 || nsel <= 0 ? 1 : 2;
    result = tn_new(ctx, rank, shape);
    if (!result) { tn_err_copy(ctx, err, errlen); goto done; }
    if (ndata) memcpy(result->data, data, ndata * sizeof(double));
  }
  if (colnames_out && names) {
    *colnames_out = names;
    if (ncolnames) *ncolnames = nsel;
    names = NULL;
  }

done:
  if (names) io_free_names(names, nsel);
  free(data);
  free(sel);
  free(fv.f);
  free(line);
  fclose(fp);
  return result;
}

/* Quotes a header name if it would not read back as one field. */
static void put_name(FILE *fp, const char *s) {
  if (!strpbrk(s, ",\"\n\r") && s[0] != ' ' && s[0] != '\t') { fputs(s, fp); return; }
  fputc('"', fp);
  for (; *s; s++) {
    if (*s == '"') fputc('"', fp);
    fputc(*s, fp);
  }
  fputc('"', fp);
}

int io_save_csv(tn_ctx *ctx, const char *path, const blo_tensor *t, const char *const *header,
                int nheader, char *err, size_t errlen) {
  (void)ctx;
  if (t->rank > 2) {
    char s[96];
    seterr(err, errlen, "expected a number, vector or matrix, got a tensor %s", tn_shape_str(t, s, sizeof s));
    return -1;
  }
  size_t nrows = t->rank == 0 ? 1 : t->shape[0];
  size_t ncol = t->rank == 2 ? t->shape[1] : 1;
  if (nheader > 0 && (size_t)nheader != ncol) {
    seterr(err, errlen, "header has %d name%s but the data has %zu column%s", nheader,
           nheader == 1 ? "" : "s", ncol, ncol == 1 ? "" : "s");
    return -1;
  }
  FILE *fp = fopen(path, "w");
  if (!fp) {
    seterr(err, errlen, "cannot open '%s' for writing: %s", path, strerror(errno));
    return -1;
  }
  if (nheader > 0) {
    for (int j = 0; j < nheader; j++) {
      if (j) fputc(',', fp);
      put_name(fp, header[j]);
    }
    fputc('\n', fp);
  }
  for (size_t i = 0; i < nrows; i++) {
    for (size_t j = 0; j < ncol; j++)
      fprintf(fp, j ? ",%.17g" : "%.17g", t->data[i * ncol + j]);
    fputc('\n', fp);
  }
  int bad = ferror(fp);
  int e = errno;
  if (fclose(fp) != 0 && !bad) { bad = 1; e = errno; }
  if (bad) {
    seterr(err, errlen, "error writing '%s': %s", path, strerror(e));
    return -1;
  }
  return 0;
}

/* ======================================================================
 * IDX
 * ====================================================================== */

/* Reads exactly n bytes unless the file ends; returns the count or -1. */
static long long gz_read_full(gzFile f, unsigned char *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    size_t want = n - got;
    if (want > (1u << 30)) want = 1u << 30;
    int k = gzread(f, buf + got, (unsigned)want);
    if (k < 0) return -1;
    if (k == 0) break;
    got += (size_t)k;
  }
  return (long long)got;
}

static double idx_elem(int type, const unsigned char *p) {
  switch (type) {
  case 0x08: return (double)p[0];
  case 0x09: return (double)(int8_t)p[0];
  case 0x0B: return (double)(int16_t)(uint16_t)((unsigned)p[0] << 8 | p[1]);
  case 0x0C: return (double)(int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
  case 0x0D: {
    uint32_t u = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    float x;
    memcpy(&x, &u, sizeof x);
    return (double)x;
  }
  default: {
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u = u << 8 | p[i];
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
  }
  }
}

blo_tensor *io_load_idx(tn_ctx *ctx, const char *path, char *err, size_t errlen) {
  errno = 0;
  gzFile f = gzopen(path, "rb");
  if (!f) {
    seterr(err, errlen, "cannot open '%s': %s", path, errno ? strerror(errno) : "out of memory");
    return NULL;
  }
  blo_tensor *t = NULL;
  unsigned char hdr[4 + 4 * TN_MAX_RANK];
  unsigned char *buf = NULL;
  long long k = gz_read_full(f, hdr, 4);
  if (k < 0) goto gzfail;
  if (k < 4) {
    seterr(err, errlen, "'%s' is truncated: expected a 4-byte IDX header, got %lld byte%s", path, k,
           k == 1 ? "" : "s");
    goto done;
  }
  if (hdr[0] != 0 || hdr[1] != 0) {
    seterr(err, errlen, "'%s' is not an IDX file (magic 0x%02x%02x%02x%02x)", path, hdr[0], hdr[1], hdr[2],
           hdr[3]);
    goto done;
  }
  int type = hdr[2], nd = hdr[3];
  size_t esize;
  switch (type) {
  case 0x08: case 0x09: esize = 1; break;
  case 0x0B: esize = 2; break;
  case 0x0C: case 0x0D: esize = 4; break;
  case 0x0E: esize = 8; break;
  default:
    seterr(err, errlen, "'%s': unknown IDX data type 0x%02x", path, type);
    goto done;
  }
  if (nd < 1 || nd > TN_MAX_RANK) {
    seterr(err, errlen, "'%s': IDX file has %d dimensions (1 to %d are supported)", path, nd, TN_MAX_RANK);
    goto done;
  }
  k = gz_read_full(f, hdr + 4, 4 * (size_t)nd);
  if (k < 0) goto gzfail;
  if (k < 4 * nd) {
    seterr(err, errlen, "'%s' is truncated: expected %d dimension sizes", path, nd);
    goto done;
  }
  size_t shape[TN_MAX_RANK], count = 1;
  for (int i = 0; i < nd; i++) {
    const unsigned char *p = hdr + 4 + 4 * i;
    shape[i] = (size_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
    if (shape[i] && count > SIZE_MAX / sizeof(double) / shape[i]) {
      seterr(err, errlen, "'%s': IDX dimensions are too large", path);
      goto done;
    }
    count *= shape[i];
  }
  t = tn_new(ctx, nd, shape);
  if (!t) { tn_err_copy(ctx, err, errlen); goto done; }
  size_t total = count * esize, got = 0, chunk = 1 << 16;
  buf = malloc(chunk);
  if (!buf) { seterr(err, errlen, "out of memory"); goto fail; }
  while (got < total) {
    size_t want = total - got < chunk ? total - got : chunk;
    k = gz_read_full(f, buf, want);
    if (k < 0) goto gzfail;
    size_t n = (size_t)k / esize;
    double *d = t->data + got / esize;
    for (size_t i = 0; i < n; i++) d[i] = idx_elem(type, buf + i * esize);
    got += (size_t)k;
    if ((size_t)k < want) {
      seterr(err, errlen, "'%s' is truncated: expected %zu data bytes, got %zu", path, total, got);
      goto fail;
    }
  }
  k = gz_read_full(f, buf, 1);
  if (k < 0) goto gzfail;
  if (k > 0) {
    /* trailing bytes mean the header does not describe the file */
    char s[96];
    seterr(err, errlen, "'%s' has more data than its dimensions %s announce", path, tn_shape_str(t, s, sizeof s));
    goto fail;
  }
  goto done;

gzfail: {
    int zerr = 0;
    const char *m = gzerror(f, &zerr);
    seterr(err, errlen, "'%s': %s", path, zerr == Z_ERRNO ? strerror(errno) : m);
  }
fail:
  tn_release(ctx, t);
  t = NULL;
done:
  free(buf);
  gzclose(f);
  return t;
}
