/* npy.c: NumPy's .npy and .npz formats (see npy.h).
 *
 * Reading goes through a byte source (src) that is either a plain file or one
 * member of a ZIP archive, stored or deflated; the .npy parser pulls the
 * preamble, then converts the data in fixed-size chunks straight into the
 * tensor, so no buffer proportional to the file is allocated outside the
 * tensor layer (whose memory cap applies). */
#define _POSIX_C_SOURCE 200809L
#include "npy.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define CHUNK 65536

/* ---------------- errors ---------------- */

/* The file being read, for messages: "'x.npy'" or "'x.npz' member 'w.npy'". */
typedef struct where {
  const char *path;
  const char *member;   /* NULL for a plain .npy file */
} where;

static int fail(char *err, size_t errlen, const where *w, const char *fmt, ...) {
  int k;
  if (w->member) k = snprintf(err, errlen, "'%s' member '%s' ", w->path, w->member);
  else k = snprintf(err, errlen, "'%s' ", w->path);
  if (k < 0 || (size_t)k >= errlen) return -1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
  va_end(ap);
  return -1;
}

/* ---------------- little-endian helpers ---------------- */

static uint32_t get_le(const unsigned char *p, int n) {
  uint32_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static uint64_t get_le64(const unsigned char *p) {
  return (uint64_t)get_le(p, 4) | (uint64_t)get_le(p + 4, 4) << 32;
}

static void put_le(unsigned char *p, uint32_t v, int n) {
  for (int i = 0; i < n; i++) { p[i] = (unsigned char)(v & 0xff); v >>= 8; }
}

/* ---------------- byte sources ---------------- */

typedef struct src {
  FILE *f;
  uint64_t left;         /* file bytes of this member still unread (compressed size) */
  int deflated;
  int zinit, zend;       /* inflate initialised / reached the end of the stream */
  z_stream zs;
  uLong crc;             /* CRC-32 of the bytes produced */
  uint64_t produced;
  int zerr;              /* inflate reported corrupt data */
  unsigned char in[16384];
} src;

static void src_init(src *s, FILE *f, uint64_t left, int deflated) {
  memset(s, 0, sizeof *s);
  s->f = f;
  s->left = left;
  s->deflated = deflated;
  s->crc = crc32(0L, Z_NULL, 0);
}

static void src_end(src *s) {
  if (s->zinit) inflateEnd(&s->zs);
  s->zinit = 0;
}

/* Reads up to n bytes; returns the count (short at the end of the member or
 * on an error: s->zerr says corrupt deflate data, ferror a read failure). */
static size_t src_read(src *s, unsigned char *buf, size_t n) {
  size_t got = 0;
  if (!s->deflated) {
    size_t want = n < s->left ? n : (size_t)s->left;
    got = want ? fread(buf, 1, want, s->f) : 0;
    s->left -= got;
  } else {
    if (!s->zinit) {
      if (inflateInit2(&s->zs, -15) != Z_OK) { s->zerr = 1; return 0; }
      s->zinit = 1;
    }
    while (got < n && !s->zend && !s->zerr) {
      if (s->zs.avail_in == 0) {
        size_t want = sizeof s->in < s->left ? sizeof s->in : (size_t)s->left;
        size_t k = want ? fread(s->in, 1, want, s->f) : 0;
        s->left -= k;
        s->zs.next_in = s->in;
        s->zs.avail_in = (uInt)k;
      }
      size_t room = n - got;
      if (room > UINT_MAX) room = UINT_MAX;
      s->zs.next_out = buf + got;
      s->zs.avail_out = (uInt)room;
      int had_input = s->zs.avail_in > 0;
      int rc = inflate(&s->zs, Z_NO_FLUSH);
      got += room - s->zs.avail_out;
      if (rc == Z_STREAM_END) s->zend = 1;
      else if (rc == Z_BUF_ERROR && !had_input) break;   /* compressed data ran out */
      else if (rc != Z_OK && rc != Z_BUF_ERROR) s->zerr = 1;
    }
  }
  /* crc32 takes a uInt length: feed it in pieces */
  for (size_t off = 0; off < got;) {
    size_t k = got - off > UINT_MAX ? UINT_MAX : got - off;
    s->crc = crc32(s->crc, buf + off, (uInt)k);
    off += k;
  }
  s->produced += got;
  return got;
}

/* ---------------- header parsing ---------------- */

typedef struct npy_hdr {
  char descr[32];
  int have_descr, have_fortran, have_shape;
  int fortran;
  int rank;
  size_t shape[TN_MAX_RANK];
} npy_hdr;

typedef struct pstate {
  const char *p, *end;
  const where *w;
  char *err;
  size_t errlen;
} pstate;

static void skip_ws(pstate *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

/* A printable rendering of the next few header characters, for messages. */
static const char *near(const pstate *s, char *buf, size_t n) {
  size_t k = 0;
  for (const char *q = s->p; q < s->end && k + 1 < n && k < 20; q++)
    buf[k++] = (*q >= 32 && *q < 127) ? *q : '?';
  buf[k] = 0;
  return k ? buf : "the end";
}

static int perr(pstate *s, const char *what) {
  char b[32];
  return fail(s->err, s->errlen, s->w, "has a malformed header: %s at '%s'", what, near(s, b, sizeof b));
}

/* A Python string literal without escapes, into out (n bytes). */
static int parse_str(pstate *s, char *out, size_t n) {
  if (s->p >= s->end || (*s->p != '\'' && *s->p != '"')) return perr(s, "expected a string");
  char q = *s->p++;
  size_t k = 0;
  while (s->p < s->end && *s->p != q) {
    if (*s->p == '\\') return perr(s, "escapes in strings are not supported");
    if (k + 1 >= n) return perr(s, "string too long");
    out[k++] = *s->p++;
  }
  if (s->p >= s->end) return perr(s, "unterminated string");
  s->p++;
  out[k] = 0;
  return 0;
}

static int parse_shape(pstate *s, npy_hdr *h) {
  if (s->p >= s->end || *s->p != '(') return perr(s, "'shape' must be a tuple");
  s->p++;
  int n = 0, trailing_comma = 0;
  for (;;) {
    skip_ws(s);
    if (s->p < s->end && *s->p == ')') { s->p++; break; }
    if (s->p >= s->end || *s->p < '0' || *s->p > '9') {
      if (s->p < s->end && *s->p == '-') return perr(s, "negative dimension");
      return perr(s, "expected a dimension");
    }
    size_t v = 0;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
      if (__builtin_mul_overflow(v, (size_t)10, &v) || __builtin_add_overflow(v, (size_t)(*s->p - '0'), &v))
        return perr(s, "dimension too large");
      s->p++;
    }
    if (s->p < s->end && *s->p == 'L') s->p++;  /* Python 2 long literal */
    if (n < TN_MAX_RANK) h->shape[n] = v;
    n++;
    skip_ws(s);
    trailing_comma = 0;
    if (s->p < s->end && *s->p == ',') { s->p++; trailing_comma = 1; continue; }
    if (s->p < s->end && *s->p == ')') { s->p++; break; }
    return perr(s, "expected ',' or ')' in the shape");
  }
  if (n == 1 && !trailing_comma) return perr(s, "a one-element shape needs a trailing comma");
  if (n > TN_MAX_RANK)
    return fail(s->err, s->errlen, s->w, "holds an array of rank %d: blo tensors have at most %d dimensions", n,
                TN_MAX_RANK);
  h->rank = n;
  return 0;
}

static int parse_header(const char *text, size_t len, npy_hdr *h, const where *w, char *err, size_t errlen) {
  pstate s = {text, text + len, w, err, errlen};
  memset(h, 0, sizeof *h);
  skip_ws(&s);
  if (s.p >= s.end || *s.p != '{') return perr(&s, "expected '{'");
  s.p++;
  for (;;) {
    skip_ws(&s);
    if (s.p < s.end && *s.p == '}') { s.p++; break; }
    char key[32];
    if (parse_str(&s, key, sizeof key)) return -1;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != ':') return perr(&s, "expected ':'");
    s.p++;
    skip_ws(&s);
    if (!strcmp(key, "descr")) {
      if (h->have_descr) return perr(&s, "'descr' given twice");
      if (s.p < s.end && (*s.p == '[' || *s.p == '('))
        return fail(err, errlen, w, "holds a structured array: only plain numeric dtypes are supported");
      if (parse_str(&s, h->descr, sizeof h->descr)) return -1;
      h->have_descr = 1;
    } else if (!strcmp(key, "fortran_order")) {
      if (h->have_fortran) return perr(&s, "'fortran_order' given twice");
      if (s.end - s.p >= 4 && !memcmp(s.p, "True", 4)) { h->fortran = 1; s.p += 4; }
      else if (s.end - s.p >= 5 && !memcmp(s.p, "False", 5)) { h->fortran = 0; s.p += 5; }
      else return perr(&s, "'fortran_order' must be True or False");
      h->have_fortran = 1;
    } else if (!strcmp(key, "shape")) {
      if (h->have_shape) return perr(&s, "'shape' given twice");
      if (parse_shape(&s, h)) return -1;
      h->have_shape = 1;
    } else {
      return fail(err, errlen, w, "has a malformed header: unexpected key '%s'", key);
    }
    skip_ws(&s);
    if (s.p < s.end && *s.p == ',') { s.p++; continue; }
    if (s.p < s.end && *s.p == '}') { s.p++; break; }
    return perr(&s, "expected ',' or '}'");
  }
  skip_ws(&s);
  if (s.p != s.end) return perr(&s, "unexpected text after '}'");
  if (!h->have_descr) return fail(err, errlen, w, "has a malformed header: no 'descr'");
  if (!h->have_fortran) return fail(err, errlen, w, "has a malformed header: no 'fortran_order'");
  if (!h->have_shape) return fail(err, errlen, w, "has a malformed header: no 'shape'");
  return 0;
}

/* ---------------- dtypes ---------------- */

typedef struct dtype {
  char kind;     /* 'f', 'i', 'u', 'b' */
  int size;      /* bytes */
  int big;       /* big-endian */
} dtype;

static int host_big(void) {
  const uint16_t one = 1;
  unsigned char b;
  memcpy(&b, &one, 1);
  return b == 0;
}

static int parse_dtype(const char *d, dtype *t, const where *w, char *err, size_t errlen) {
  char order = d[0];
  if (order != '<' && order != '>' && order != '|' && order != '=')
    return fail(err, errlen, w, "has an unsupported dtype '%s'", d);
  char kind = d[1];
  const char *num = d + 2;
  int size = 0;
  for (const char *q = num; *q; q++) {
    if (*q < '0' || *q > '9' || size > 1000) { size = -1; break; }
    size = size * 10 + (*q - '0');
  }
  switch (kind) {
  case 'O': return fail(err, errlen, w, "holds an object array (dtype '%s'): only numeric arrays are supported", d);
  case 'c': return fail(err, errlen, w, "holds a complex array (dtype '%s'): only real arrays are supported", d);
  case 'U': case 'S': case 'a':
    return fail(err, errlen, w, "holds a string array (dtype '%s'): only numeric arrays are supported", d);
  case 'V': return fail(err, errlen, w, "holds a void/structured array (dtype '%s'): not supported", d);
  case 'M': case 'm':
    return fail(err, errlen, w, "holds a datetime array (dtype '%s'): only numeric arrays are supported", d);
  default: break;
  }
  int ok = (kind == 'f' && (size == 2 || size == 4 || size == 8)) ||
           ((kind == 'i' || kind == 'u') && (size == 1 || size == 2 || size == 4 || size == 8)) ||
           (kind == 'b' && size == 1);
  if (!ok) return fail(err, errlen, w, "has an unsupported dtype '%s'", d);
  if (size > 1 && order == '|')
    return fail(err, errlen, w, "has dtype '%s' without a byte order", d);
  t->kind = kind;
  t->size = size;
  t->big = order == '>' || (order == '=' && host_big());
  return 0;
}

static double half_to_double(uint32_t h) {
  int e = (int)(h >> 10 & 0x1f);
  double m = (double)(h & 0x3ff);
  double v;
  if (e == 0) v = ldexp(m, -24);
  else if (e == 31) v = m == 0 ? INFINITY : NAN;
  else v = ldexp(m + 1024, e - 25);
  return (h & 0x8000) ? -v : v;
}

/* Converts n elements of type t from raw to doubles. */
static void convert(const dtype *t, const unsigned char *raw, size_t n, double *out) {
  for (size_t i = 0; i < n; i++, raw += t->size) {
    uint64_t u = 0;
    for (int b = 0; b < t->size; b++) {
      int k = t->big ? b : t->size - 1 - b;
      u = u << 8 | raw[k];
    }
    double v;
    switch (t->kind) {
    case 'f':
      if (t->size == 8) memcpy(&v, &u, 8);
      else if (t->size == 4) { uint32_t u32 = (uint32_t)u; float f; memcpy(&f, &u32, 4); v = f; }
      else v = half_to_double((uint32_t)u);
      break;
    case 'i': {
      int sh = 64 - 8 * t->size;   /* sign-extend */
      int64_t s = (int64_t)(u << sh) >> sh;
      v = (double)s;
      break;
    }
    case 'u': v = (double)u; break;
    default: v = u != 0; break;   /* 'b' */
    }
    out[i] = v;
  }
}

/* ---------------- .npy reading ---------------- */

static const unsigned char MAGIC[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* Parses one .npy stream from s; the stream must end right after the data
 * (exact_end) or may continue (a plain file is checked by the caller). */
static blo_tensor *npy_read(tn_ctx *ctx, src *s, const where *w, char *err, size_t errlen) {
  unsigned char pre[12];
  size_t k = src_read(s, pre, 8);
  if (s->zerr) { fail(err, errlen, w, "has corrupt compressed data"); return NULL; }
  if (k < 8 && ferror(s->f)) { fail(err, errlen, w, "cannot be read: %s", strerror(errno)); return NULL; }
  if (k < 6 || memcmp(pre, MAGIC, 6)) {
    fail(err, errlen, w, "is not a NumPy .npy file (bad magic)");
    return NULL;
  }
  if (k < 8) { fail(err, errlen, w, "is truncated in its preamble"); return NULL; }
  int major = pre[6], minor = pre[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0) {
    fail(err, errlen, w, "has unsupported .npy format version %d.%d (1.0, 2.0 and 3.0 are read)", major, minor);
    return NULL;
  }
  int lenbytes = major == 1 ? 2 : 4;
  if (src_read(s, pre + 8, (size_t)lenbytes) < (size_t)lenbytes) {
    fail(err, errlen, w, "is truncated in its preamble");
    return NULL;
  }
  uint32_t hlen = get_le(pre + 8, lenbytes);
  if (hlen > NPY_MAX_HEADER) {
    fail(err, errlen, w, "has a header of %lu bytes, above the limit of %d", (unsigned long)hlen, NPY_MAX_HEADER);
    return NULL;
  }
  char text[NPY_MAX_HEADER];
  k = src_read(s, (unsigned char *)text, hlen);
  if (k < hlen) {
    if (s->zerr) fail(err, errlen, w, "has corrupt compressed data");
    else fail(err, errlen, w, "is truncated: the header is %lu bytes but only %zu follow", (unsigned long)hlen, k);
    return NULL;
  }
  npy_hdr h;
  if (parse_header(text, hlen, &h, w, err, errlen)) return NULL;
  dtype dt = {0, 0, 0};
  if (parse_dtype(h.descr, &dt, w, err, errlen)) return NULL;
  size_t n = 1, bytes;
  for (int i = 0; i < h.rank; i++)
    if (__builtin_mul_overflow(n, h.shape[i], &n)) {
      char b[160];
      fail(err, errlen, w, "has shape %s, whose element count overflows", tn_shape_str_raw(h.rank, h.shape, b, sizeof b));
      return NULL;
    }
  if (__builtin_mul_overflow(n, (size_t)dt.size, &bytes)) {
    char b[160];
    fail(err, errlen, w, "has shape %s, whose byte count overflows", tn_shape_str_raw(h.rank, h.shape, b, sizeof b));
    return NULL;
  }
  blo_tensor *t = tn_new(ctx, h.rank, h.shape);
  if (!t) { fail(err, errlen, w, "cannot be loaded: %s", ctx->err); return NULL; }
  /* fortran order: the data is read into a scratch tensor, then transposed */
  blo_tensor *f = NULL;
  if (h.fortran && h.rank > 1 && n > 1) {
    if (!(f = tn_new(ctx, h.rank, h.shape))) {
      tn_release(ctx, t);
      fail(err, errlen, w, "cannot be loaded: %s", ctx->err);
      return NULL;
    }
  }
  double *dst = f ? f->data : t->data;
  unsigned char *raw = malloc(CHUNK);
  if (!raw) {
    tn_release(ctx, t);
    tn_release(ctx, f);
    fail(err, errlen, w, "cannot be loaded: out of memory");
    return NULL;
  }
  size_t per = CHUNK / (size_t)dt.size, done = 0;
  while (done < n) {
    size_t m = n - done < per ? n - done : per;
    size_t want = m * (size_t)dt.size;
    k = src_read(s, raw, want);
    if (k < want) {
      if (s->zerr) fail(err, errlen, w, "has corrupt compressed data");
      else if (ferror(s->f)) fail(err, errlen, w, "cannot be read: %s", strerror(errno));
      else fail(err, errlen, w, "is truncated: expected %zu data bytes, got %zu", bytes, done * (size_t)dt.size + k);
      free(raw);
      tn_release(ctx, t);
      tn_release(ctx, f);
      return NULL;
    }
    convert(&dt, raw, m, dst + done);
    done += m;
  }
  free(raw);
  if (f) {
    /* C-order odometer over the index; the Fortran offset has strides
     * 1, shape[0], shape[0]*shape[1], ... */
    size_t idx[TN_MAX_RANK] = {0}, fstride[TN_MAX_RANK];
    fstride[0] = 1;
    for (int i = 1; i < h.rank; i++) fstride[i] = fstride[i - 1] * h.shape[i - 1];
    size_t off = 0;
    for (size_t c = 0; c < n; c++) {
      t->data[c] = f->data[off];
      for (int i = h.rank - 1; i >= 0; i--) {
        if (++idx[i] < h.shape[i]) { off += fstride[i]; break; }
        off -= fstride[i] * (h.shape[i] - 1);
        idx[i] = 0;
      }
    }
    tn_release(ctx, f);
  }
  return t;
}

blo_tensor *npy_load(tn_ctx *ctx, const char *path, char *err, size_t errlen) {
  where w = {path, NULL};
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
    return NULL;
  }
  src s;
  src_init(&s, fp, UINT64_MAX, 0);
  blo_tensor *t = npy_read(ctx, &s, &w, err, errlen);
  if (t) {
    unsigned char extra;
    if (fread(&extra, 1, 1, fp) == 1) {
      fail(err, errlen, &w, "has bytes after the array data (one array per .npy file is read)");
      tn_release(ctx, t);
      t = NULL;
    }
  }
  fclose(fp);
  return t;
}

/* ---------------- .npy writing ---------------- */

size_t npy_preamble(int rank, const size_t *shape, unsigned char *buf, size_t n) {
  char hdr[512];
  int k = snprintf(hdr, sizeof hdr, "{'descr': '<f8', 'fortran_order': False, 'shape': (");
  for (int i = 0; i < rank; i++)
    k += snprintf(hdr + k, sizeof hdr - (size_t)k, i ? ", %zu" : "%zu", shape[i]);
  k += snprintf(hdr + k, sizeof hdr - (size_t)k, rank == 1 ? ",), }" : "), }");
  /* numpy.save leaves room for the first axis to grow to 21 digits */
  if (rank > 0) {
    char d[32];
    int dl = snprintf(d, sizeof d, "%zu", shape[0]);
    for (int i = dl; i < 21; i++) hdr[k++] = ' ';
  }
  /* magic (6) + version (2) + length (2) + header + '\n', padded to 64 */
  size_t total = 10 + (size_t)k + 1;
  total = (total + 63) / 64 * 64;
  if (total > n || total - 10 > 65535) return 0;
  memcpy(buf, MAGIC, 6);
  buf[6] = 1;
  buf[7] = 0;
  put_le(buf + 8, (uint32_t)(total - 10), 2);
  memcpy(buf + 10, hdr, (size_t)k);
  memset(buf + 10 + k, ' ', total - 10 - (size_t)k - 1);
  buf[total - 1] = '\n';
  return total;
}

/* Writes t's data as little-endian doubles to fp (if not NULL) and updates
 * *crc (if not NULL). */
static int write_data(FILE *fp, const blo_tensor *t, uLong *crc) {
  unsigned char buf[8 * 1024];
  size_t i = 0;
  while (i < t->size) {
    size_t m = 0;
    for (; m < sizeof buf / 8 && i < t->size; m++, i++) {
      uint64_t u;
      memcpy(&u, &t->data[i], 8);
      put_le(buf + 8 * m, (uint32_t)u, 4);
      put_le(buf + 8 * m + 4, (uint32_t)(u >> 32), 4);
    }
    if (crc) *crc = crc32(*crc, buf, (uInt)(8 * m));
    if (fp && fwrite(buf, 1, 8 * m, fp) != 8 * m) return -1;
  }
  return 0;
}

int npy_save(tn_ctx *ctx, const char *path, const blo_tensor *t, char *err, size_t errlen) {
  (void)ctx;
  unsigned char pre[512];
  size_t plen = npy_preamble(t->rank, t->shape, pre, sizeof pre);
  if (!plen) { snprintf(err, errlen, "cannot write '%s': the shape does not fit a .npy header", path); return -1; }
  FILE *fp = fopen(path, "wb");
  if (!fp) {
    snprintf(err, errlen, "cannot open '%s' for writing: %s", path, strerror(errno));
    return -1;
  }
  int bad = fwrite(pre, 1, plen, fp) != plen || write_data(fp, t, NULL);
  if (fclose(fp) != 0) bad = 1;
  if (bad) {
    snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

/* ---------------- .npz writing ---------------- */

/* DOS date of 1980-01-01, 00:00: written for every member so that saving the
 * same record twice gives the same bytes. */
#define DOS_DATE 0x0021
#define DOS_TIME 0x0000

typedef struct cd_rec {
  uint32_t crc, size, offset;
} cd_rec;

int npz_save(tn_ctx *ctx, const char *path, const char *const *names, const blo_tensor *const *ts, size_t n,
             char *err, size_t errlen) {
  (void)ctx;
  if (n > 65535) { snprintf(err, errlen, "cannot write '%s': more than 65535 arrays", path); return -1; }
  for (size_t i = 0; i < n; i++)
    if (!names[i][0] || strlen(names[i]) > 1000) {
      snprintf(err, errlen, "cannot write '%s': array name %zu is empty or too long", path, i + 1);
      return -1;
    }
  cd_rec *cd = calloc(n ? n : 1, sizeof *cd);
  if (!cd) { snprintf(err, errlen, "cannot write '%s': out of memory", path); return -1; }
  FILE *fp = fopen(path, "wb");
  if (!fp) {
    snprintf(err, errlen, "cannot open '%s' for writing: %s", path, strerror(errno));
    free(cd);
    return -1;
  }
  uint64_t pos = 0;
  int io_bad = 0, too_big = 0;
  unsigned char h[64];
  for (size_t i = 0; i < n && !io_bad && !too_big; i++) {
    const blo_tensor *t = ts[i];
    unsigned char pre[512];
    size_t plen = npy_preamble(t->rank, t->shape, pre, sizeof pre);
    size_t nl = strlen(names[i]) + 4;
    uint64_t size = (uint64_t)plen + 8 * (uint64_t)t->size;
    if (!plen || size >= 0xffffffffu || pos + 30 + nl + size >= 0xffffffffu) { too_big = 1; break; }
    /* the CRC is computed in a first pass so that the local header is
     * written once, in order (no seeking back, so pipes work too) */
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, pre, (uInt)plen);
    write_data(NULL, t, &crc);
    cd[i].crc = (uint32_t)crc;
    cd[i].size = (uint32_t)size;
    cd[i].offset = (uint32_t)pos;
    put_le(h, 0x04034b50u, 4);
    put_le(h + 4, 20, 2);          /* version needed: 2.0 */
    put_le(h + 6, 0, 2);           /* flags */
    put_le(h + 8, 0, 2);           /* method: stored */
    put_le(h + 10, DOS_TIME, 2);
    put_le(h + 12, DOS_DATE, 2);
    put_le(h + 14, cd[i].crc, 4);
    put_le(h + 18, cd[i].size, 4);
    put_le(h + 22, cd[i].size, 4);
    put_le(h + 26, (uint32_t)nl, 2);
    put_le(h + 28, 0, 2);          /* extra length */
    if (fwrite(h, 1, 30, fp) != 30 || fputs(names[i], fp) == EOF || fputs(".npy", fp) == EOF ||
        fwrite(pre, 1, plen, fp) != plen || write_data(fp, t, NULL))
      io_bad = 1;
    pos += 30 + nl + size;
  }
  uint64_t cd_start = pos;
  for (size_t i = 0; i < n && !io_bad && !too_big; i++) {
    size_t nl = strlen(names[i]) + 4;
    put_le(h, 0x02014b50u, 4);
    put_le(h + 4, 3 << 8 | 20, 2); /* made by: Unix, 2.0 */
    put_le(h + 6, 20, 2);
    put_le(h + 8, 0, 2);
    put_le(h + 10, 0, 2);
    put_le(h + 12, DOS_TIME, 2);
    put_le(h + 14, DOS_DATE, 2);
    put_le(h + 16, cd[i].crc, 4);
    put_le(h + 20, cd[i].size, 4);
    put_le(h + 24, cd[i].size, 4);
    put_le(h + 28, (uint32_t)nl, 2);
    put_le(h + 30, 0, 2);          /* extra */
    put_le(h + 32, 0, 2);          /* comment */
    put_le(h + 34, 0, 2);          /* disk */
    put_le(h + 36, 0, 2);          /* internal attributes */
    put_le(h + 38, 0644u << 16, 4); /* external: rw-r--r-- */
    put_le(h + 42, cd[i].offset, 4);
    if (fwrite(h, 1, 46, fp) != 46 || fputs(names[i], fp) == EOF || fputs(".npy", fp) == EOF) io_bad = 1;
    pos += 46 + nl;
  }
  if (!io_bad && !too_big && pos >= 0xffffffffu) too_big = 1;
  if (!io_bad && !too_big) {
    put_le(h, 0x06054b50u, 4);
    put_le(h + 4, 0, 2);
    put_le(h + 6, 0, 2);
    put_le(h + 8, (uint32_t)n, 2);
    put_le(h + 10, (uint32_t)n, 2);
    put_le(h + 12, (uint32_t)(pos - cd_start), 4);
    put_le(h + 16, (uint32_t)cd_start, 4);
    put_le(h + 20, 0, 2);
    if (fwrite(h, 1, 22, fp) != 22) io_bad = 1;
  }
  int close_bad = fclose(fp) != 0;
  free(cd);
  if (too_big) {
    snprintf(err, errlen, "cannot write '%s': the archive would exceed 4 GiB (ZIP64 is not written)", path);
    return -1;
  }
  if (io_bad || close_bad) {
    snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

/* ---------------- .npz reading ---------------- */

void npz_free(tn_ctx *ctx, npz_entry *e, size_t n) {
  if (!e) return;
  for (size_t i = 0; i < n; i++) {
    free(e[i].name);
    tn_release(ctx, e[i].t);
  }
  free(e);
}

static int read_at(FILE *fp, uint64_t off, unsigned char *buf, size_t n) {
  if (off > (uint64_t)LONG_MAX || fseek(fp, (long)off, SEEK_SET) != 0) return -1;
  return fread(buf, 1, n, fp) == n ? 0 : -1;
}

/* Finds the end-of-central-directory record in the last 64 KiB + 22 bytes. */
static int find_eocd(FILE *fp, uint64_t fsize, unsigned char *eocd, uint64_t *eocd_pos) {
  size_t tail = fsize < 65535 + 22 ? (size_t)fsize : 65535 + 22;
  if (tail < 22) return -1;
  unsigned char *buf = malloc(tail);
  if (!buf) return -1;
  int found = -1;
  if (read_at(fp, fsize - tail, buf, tail) == 0) {
    for (size_t i = tail - 22 + 1; i-- > 0;) {
      if (get_le(buf + i, 4) == 0x06054b50u && i + 22 + get_le(buf + i + 20, 2) == tail) {
        memcpy(eocd, buf + i, 22);
        *eocd_pos = fsize - tail + i;
        found = 0;
        break;
      }
    }
  }
  free(buf);
  return found;
}

/* The ZIP64 extended-information extra field (id 1) replaces the 32-bit
 * fields that hold 0xffffffff, in the order usize, csize, offset. */
static int zip64_extra(const unsigned char *ex, size_t exlen, uint64_t *usize, uint64_t *csize, uint64_t *off) {
  size_t i = 0;
  while (i + 4 <= exlen) {
    unsigned id = get_le(ex + i, 2), len = get_le(ex + i + 2, 2);
    if (i + 4 + len > exlen) return -1;
    if (id == 1) {
      const unsigned char *p = ex + i + 4;
      size_t left = len;
      uint64_t *f[3] = {usize, csize, off};
      for (int k = 0; k < 3; k++) {
        if (*f[k] != 0xffffffffu) continue;
        if (left < 8) return -1;
        *f[k] = get_le64(p);
        p += 8;
        left -= 8;
      }
      return 0;
    }
    i += 4 + len;
  }
  return 0;
}

int npz_load(tn_ctx *ctx, const char *path, npz_entry **out, size_t *nout, char *err, size_t errlen) {
  *out = NULL;
  *nout = 0;
  where w = {path, NULL};
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
    return -1;
  }
  unsigned char *cdbuf = NULL;
  npz_entry *ents = NULL;
  size_t nents = 0;
  char *mname = NULL;
  int rc = -1;
  uint64_t fsize;
  if (fseek(fp, 0, SEEK_END) != 0 || ftell(fp) < 0) { fail(err, errlen, &w, "cannot be read: %s", strerror(errno)); goto done; }
  fsize = (uint64_t)ftell(fp);
  unsigned char eocd[22];
  uint64_t eocd_pos;
  if (find_eocd(fp, fsize, eocd, &eocd_pos)) {
    fail(err, errlen, &w, "is not a ZIP archive (no end of central directory): not an .npz file or truncated");
    goto done;
  }
  uint32_t count = get_le(eocd + 10, 2), cdsize = get_le(eocd + 12, 4), cdoff = get_le(eocd + 16, 4);
  if (get_le(eocd + 4, 2) != 0 || get_le(eocd + 6, 2) != 0 || get_le(eocd + 8, 2) != count) {
    fail(err, errlen, &w, "is a multi-disk ZIP archive, which is not supported");
    goto done;
  }
  if (count == 0xffff || cdsize == 0xffffffffu || cdoff == 0xffffffffu) {
    fail(err, errlen, &w, "needs ZIP64 end records (over 65535 members or 4 GiB), which are not supported");
    goto done;
  }
  if ((uint64_t)cdoff + cdsize > eocd_pos) {
    fail(err, errlen, &w, "has a central directory outside the file (truncated or corrupt)");
    goto done;
  }
  cdbuf = malloc(cdsize ? cdsize : 1);
  ents = calloc(count ? count : 1, sizeof *ents);
  mname = malloc(65536 + 1);
  if (!cdbuf || !ents || !mname) { fail(err, errlen, &w, "cannot be read: out of memory"); goto done; }
  if (read_at(fp, cdoff, cdbuf, cdsize)) { fail(err, errlen, &w, "cannot read its central directory"); goto done; }
  size_t p = 0;
  for (uint32_t i = 0; i < count; i++) {
    w.member = NULL;
    if (p + 46 > cdsize || get_le(cdbuf + p, 4) != 0x02014b50u) {
      fail(err, errlen, &w, "has a corrupt central directory (entry %u)", (unsigned)i + 1);
      goto done;
    }
    const unsigned char *e = cdbuf + p;
    unsigned flags = get_le(e + 8, 2), method = get_le(e + 10, 2);
    uint32_t crc = get_le(e + 16, 4);
    uint64_t csize = get_le(e + 20, 4), usize = get_le(e + 24, 4), loff = get_le(e + 42, 4);
    size_t nl = get_le(e + 28, 2), xl = get_le(e + 30, 2), cl = get_le(e + 32, 2);
    if (p + 46 + nl + xl + cl > cdsize) {
      fail(err, errlen, &w, "has a corrupt central directory (entry %u)", (unsigned)i + 1);
      goto done;
    }
    memcpy(mname, e + 46, nl);
    mname[nl] = 0;
    w.member = mname;
    if (memchr(mname, 0, nl)) { fail(err, errlen, &w, "has a NUL byte in its name"); goto done; }
    if (zip64_extra(e + 46 + nl, xl, &usize, &csize, &loff)) {
      fail(err, errlen, &w, "has a corrupt ZIP64 extra field");
      goto done;
    }
    p += 46 + nl + xl + cl;
    if (flags & 1) { fail(err, errlen, &w, "is encrypted, which is not supported"); goto done; }
    if (method != 0 && method != 8) {
      fail(err, errlen, &w, "uses ZIP compression method %u (only stored and deflated are read)", method);
      goto done;
    }
    if (nl < 5 || strcmp(mname + nl - 4, ".npy")) {
      fail(err, errlen, &w, "is not a .npy member (its name does not end in '.npy')");
      goto done;
    }
    if (method == 0 && csize != usize) {
      fail(err, errlen, &w, "is stored with differing sizes (%llu and %llu)", (unsigned long long)csize,
           (unsigned long long)usize);
      goto done;
    }
    unsigned char lh[30];
    if (loff + 30 > cdoff || read_at(fp, loff, lh, 30) || get_le(lh, 4) != 0x04034b50u) {
      fail(err, errlen, &w, "has a bad local header offset");
      goto done;
    }
    uint64_t data = loff + 30 + get_le(lh + 26, 2) + get_le(lh + 28, 2);
    if (data > cdoff || csize > cdoff - data) {
      fail(err, errlen, &w, "is truncated: its data runs past the central directory");
      goto done;
    }
    if (data > (uint64_t)LONG_MAX || fseek(fp, (long)data, SEEK_SET) != 0) {
      fail(err, errlen, &w, "cannot be read: %s", strerror(errno));
      goto done;
    }
    src s;
    src_init(&s, fp, csize, method == 8);
    blo_tensor *t = npy_read(ctx, &s, &w, err, errlen);
    if (!t) { src_end(&s); goto done; }
    ents[nents].t = t;
    ents[nents].name = NULL;
    nents++;
    /* the member must end exactly where the array does */
    unsigned char extra;
    if (src_read(&s, &extra, 1) == 1 && !s.zerr) {
      src_end(&s);
      fail(err, errlen, &w, "has bytes after the array data");
      goto done;
    }
    src_end(&s);
    if (s.zerr) { fail(err, errlen, &w, "has corrupt compressed data"); goto done; }
    if (s.deflated && !s.zend) { fail(err, errlen, &w, "has a truncated compressed stream"); goto done; }
    if (s.produced != usize) {
      fail(err, errlen, &w, "has %llu bytes but the directory says %llu", (unsigned long long)s.produced,
           (unsigned long long)usize);
      goto done;
    }
    if ((uint32_t)s.crc != crc) {
      fail(err, errlen, &w, "fails its CRC-32 check (%08lx, the directory says %08lx): the file is corrupt",
           (unsigned long)(uint32_t)s.crc, (unsigned long)crc);
      goto done;
    }
    if (!(ents[nents - 1].name = strndup(mname, nl - 4))) {
      fail(err, errlen, &w, "cannot be read: out of memory");
      goto done;
    }
  }
  rc = 0;
done:
  fclose(fp);
  free(cdbuf);
  free(mname);
  if (rc) npz_free(ctx, ents, nents);
  else { *out = ents; *nout = nents; }
  return rc;
}
