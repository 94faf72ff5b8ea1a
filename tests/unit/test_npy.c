/* test_npy.c: unit tests of stdlib/npy.c (NumPy .npy and .npz files).
 * Round trips, the header bytes against the format's specification, fixtures
 * written by NumPy (tests/scripts/data/npy, made by make_fixtures.py there),
 * corrupt input, and, when Python with NumPy is installed, NumPy reading
 * blo's files. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>

#include "check_run.h"
#include "scratch_dir.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../include/blo.h"
#include "../../stdlib/npy.h"

static tn_ctx ctx;
static char err[1024];

static void setup(void) {
  scratch_make("test_npy");
  tn_ctx_init(&ctx, NULL, NULL);
  err[0] = 0;
}

static void teardown(void) {
  scratch_remove();
  tn_ctx_free(&ctx);
}

/* A fixture written by NumPy. */
static const char *fixture(const char *name) {
  static char buf[4][1024];
  static int k;
  k = (k + 1) % 4;
  const char *src = getenv("SRCDIR");
  snprintf(buf[k], sizeof buf[k], "%s/tests/scripts/data/npy/%s", src ? src : ".", name);
  return buf[k];
}

static void write_bytes(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(b, 1, n, f), n);
  fclose(f);
}

static unsigned char *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)len + 1);
  ck_assert_ptr_nonnull(b);
  ck_assert_uint_eq(fread(b, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  *n = (size_t)len;
  return b;
}

static int bits_equal(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static void expect_err(const char *msg_part) {
  ck_assert_msg(strstr(err, msg_part) != NULL, "error '%s' does not contain '%s'", err, msg_part);
}

/* Loads a fixture and compares it with the given shape and values exactly. */
static void check_fixture(const char *name, int rank, const size_t *shape, const double *want) {
  blo_tensor *t = npy_load(&ctx, fixture(name), err, sizeof err);
  ck_assert_msg(t != NULL, "%s: %s", name, err);
  ck_assert_int_eq(t->rank, rank);
  size_t n = 1;
  for (int i = 0; i < rank; i++) {
    ck_assert_uint_eq(t->shape[i], shape[i]);
    n *= shape[i];
  }
  ck_assert_uint_eq(t->size, n);
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(bits_equal(t->data[i], want[i]), "%s[%zu]: %.17g != %.17g", name, i, t->data[i], want[i]);
  tn_release(&ctx, t);
}

/* ---------------- round trips ---------------- */

static const double specials[] = {0.1, -0.0, 1.0 / 3.0, 4.9e-324, 1.7976931348623157e308, -2.5e-300};

static double special_value(size_t i) {
  if (i % 9 == 6) return NAN;
  if (i % 9 == 7) return INFINITY;
  if (i % 9 == 8) return -INFINITY;
  return specials[i % 9 % 6] * (double)(i + 1);
}

START_TEST(npy_roundtrip_all_ranks) {
  /* ranks 0 .. TN_MAX_RANK, values with NaN, infinities, -0 and subnormals */
  for (int rank = 0; rank <= TN_MAX_RANK; rank++) {
    size_t shape[TN_MAX_RANK];
    for (int i = 0; i < rank; i++) shape[i] = (size_t)(2 + (i % 3));
    blo_tensor *t = tn_new(&ctx, rank, shape);
    ck_assert_ptr_nonnull(t);
    for (size_t i = 0; i < t->size; i++) t->data[i] = special_value(i);
    /* a NaN with a payload and the sign bit set keeps its bits too */
    if (t->size > 6) {
      uint64_t u = 0xfff8000000012345ull;
      memcpy(&t->data[6], &u, 8);
    }
    const char *p = path_of("r.npy");
    ck_assert_msg(npy_save(&ctx, p, t, err, sizeof err) == 0, "%s", err);
    blo_tensor *u = npy_load(&ctx, p, err, sizeof err);
    ck_assert_msg(u != NULL, "rank %d: %s", rank, err);
    ck_assert_int_eq(u->rank, rank);
    for (int i = 0; i < rank; i++) ck_assert_uint_eq(u->shape[i], shape[i]);
    for (size_t i = 0; i < t->size; i++)
      ck_assert_msg(bits_equal(u->data[i], t->data[i]), "rank %d element %zu", rank, i);
    /* the data starts at a multiple of 64 and the file is exactly preamble + data */
    size_t n;
    unsigned char *b = read_all(p, &n);
    size_t hl = (size_t)b[8] | (size_t)b[9] << 8;
    ck_assert_uint_eq((10 + hl) % 64, 0);
    ck_assert_uint_eq(n, 10 + hl + 8 * t->size);
    free(b);
    tn_release(&ctx, t);
    tn_release(&ctx, u);
  }
}
END_TEST

START_TEST(npy_roundtrip_empty_dims) {
  size_t shapes[3][2] = {{0, 3}, {2, 0}, {0, 0}};
  for (int k = 0; k < 3; k++) {
    blo_tensor *t = tn_new(&ctx, 2, shapes[k]);
    ck_assert_ptr_nonnull(t);
    const char *p = path_of("e.npy");
    ck_assert_msg(npy_save(&ctx, p, t, err, sizeof err) == 0, "%s", err);
    blo_tensor *u = npy_load(&ctx, p, err, sizeof err);
    ck_assert_msg(u != NULL, "%s", err);
    ck_assert_int_eq(u->rank, 2);
    ck_assert_uint_eq(u->shape[0], shapes[k][0]);
    ck_assert_uint_eq(u->shape[1], shapes[k][1]);
    ck_assert_uint_eq(u->size, 0);
    tn_release(&ctx, t);
    tn_release(&ctx, u);
  }
}
END_TEST

/* ---------------- the header against the specification ---------------- */

/* magic, version 1.0, little-endian uint16 header length, the dict, spaces
 * and '\n' up to a multiple of 64 bytes */
static void expect_preamble(int rank, const size_t *shape, const char *dict, size_t total) {
  unsigned char want[512], got[512];
  memcpy(want, "\x93NUMPY\x01\x00", 8);
  want[8] = (unsigned char)((total - 10) & 0xff);
  want[9] = (unsigned char)((total - 10) >> 8);
  size_t dl = strlen(dict);
  memcpy(want + 10, dict, dl);
  memset(want + 10 + dl, ' ', total - 10 - dl - 1);
  want[total - 1] = '\n';
  size_t n = npy_preamble(rank, shape, got, sizeof got);
  ck_assert_uint_eq(n, total);
  ck_assert_msg(memcmp(got, want, total) == 0, "preamble for '%s' differs", dict);
}

START_TEST(npy_header_bytes) {
  size_t s23[2] = {2, 3}, s5[1] = {5}, big[3] = {123456789012ull, 1, 7};
  /* numpy.save adds 21 - len(str(shape[0])) spaces of room after the dict;
   * all of these still fit in 128 bytes */
  expect_preamble(2, s23, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", 128);
  expect_preamble(1, s5, "{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }", 128);
  expect_preamble(0, NULL, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", 128);
  expect_preamble(3, big, "{'descr': '<f8', 'fortran_order': False, 'shape': (123456789012, 1, 7), }", 128);
  /* the whole file: preamble then little-endian doubles */
  double v[6] = {1, 2, 3, 4, 5, -0.5};
  blo_tensor *t = tn_from(&ctx, 2, s23, v);
  const char *p = path_of("h.npy");
  ck_assert_int_eq(npy_save(&ctx, p, t, err, sizeof err), 0);
  size_t n;
  unsigned char *b = read_all(p, &n);
  ck_assert_uint_eq(n, 128 + 48);
  unsigned char pre[512];
  ck_assert_uint_eq(npy_preamble(2, s23, pre, sizeof pre), 128);
  ck_assert_int_eq(memcmp(b, pre, 128), 0);
  /* -0.5 is 0xbfe0000000000000: its bytes, least significant first */
  static const unsigned char last[8] = {0, 0, 0, 0, 0, 0, 0xe0, 0xbf};
  ck_assert_int_eq(memcmp(b + 128 + 40, last, 8), 0);
  static const unsigned char one[8] = {0, 0, 0, 0, 0, 0, 0xf0, 0x3f};
  ck_assert_int_eq(memcmp(b + 128, one, 8), 0);
  free(b);
  tn_release(&ctx, t);
}
END_TEST

/* ---------------- NumPy's fixtures ---------------- */

START_TEST(npy_fixture_dtypes) {
  size_t s2[1] = {2}, s3[1] = {3}, s4[1] = {4}, s22[2] = {2, 2}, s23[2] = {2, 3};
  double f4[6] = {(double)0.1f, -2.5, 3.0, (double)1e-3f, 65504.0, -0.0};
  check_fixture("f4.npy", 2, s23, f4);
  /* 6e-08 in half precision is the subnormal 1 * 2^-24 */
  double f2[4] = {0.5, -1.5, 65504.0, ldexp(1, -24)};
  check_fixture("f2.npy", 1, s4, f2);
  double u1[4] = {0, 1, 127, 255};
  check_fixture("u1.npy", 1, s4, u1);
  double i1[4] = {-128, -1, 0, 127};
  check_fixture("i1.npy", 1, s4, i1);
  double i2[2] = {-32768, 32767};
  check_fixture("i2.npy", 1, s2, i2);
  double i4[4] = {-2147483648.0, 7, 2147483647.0, -7};
  check_fixture("i4.npy", 2, s22, i4);
  double i8[4] = {-5, ldexp(1, 40), -ldexp(1, 62), ldexp(1, 53)};
  check_fixture("i8.npy", 1, s4, i8);
  double u2[2] = {65535, 1};
  check_fixture("u2.npy", 1, s2, u2);
  double u4[2] = {4294967295.0, 2};
  check_fixture("u4.npy", 1, s2, u4);
  double u8[2] = {(double)UINT64_MAX, 3};   /* rounds to 2^64 */
  check_fixture("u8.npy", 1, s2, u8);
  double b1[3] = {1, 0, 1};
  check_fixture("b1.npy", 1, s3, b1);
  double be[3] = {1.5, -2.0, 1e300};
  check_fixture("be_f8.npy", 1, s3, be);
  double bei[2] = {-2, 258};
  check_fixture("be_i4.npy", 1, s2, bei);
  double sc[1] = {2.75};
  check_fixture("scalar.npy", 0, NULL, sc);
  size_t s03[2] = {0, 3};
  check_fixture("empty.npy", 2, s03, NULL);
  double v2[4] = {1, 2, 3, 4};
  check_fixture("v2.npy", 2, s22, v2);
  double v3[2] = {5, 6};
  check_fixture("v3.npy", 1, s2, v3);
}
END_TEST

START_TEST(npy_fixture_fortran_order) {
  size_t s[3] = {2, 3, 4};
  double want[24];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++)
      for (int k = 0; k < 4; k++) want[(i * 3 + j) * 4 + k] = 100 * i + 10 * j + k;
  check_fixture("fortran.npy", 3, s, want);
  check_fixture("fortran_u1.npy", 3, s, want);
}
END_TEST

START_TEST(npy_fixture_rank_limit) {
  blo_tensor *t = npy_load(&ctx, fixture("rank5.npy"), err, sizeof err);
  if (TN_MAX_RANK >= 5) {
    ck_assert_msg(t != NULL, "%s", err);
    ck_assert_int_eq(t->rank, 5);
    for (size_t i = 0; i < 32; i++) ck_assert(t->data[i] == (double)i);
    tn_release(&ctx, t);
  } else {
    ck_assert_ptr_null(t);
    expect_err("holds an array of rank 5: blo tensors have at most");
  }
  if (TN_MAX_RANK < 7) {
    ck_assert_ptr_null(npy_load(&ctx, fixture("rank7.npy"), err, sizeof err));
    expect_err("rank7.npy' holds an array of rank 7");
  }
}
END_TEST

START_TEST(npy_fixture_rejected_dtypes) {
  ck_assert_ptr_null(npy_load(&ctx, fixture("complex.npy"), err, sizeof err));
  expect_err("complex.npy' holds a complex array (dtype '<c16')");
  ck_assert_ptr_null(npy_load(&ctx, fixture("structured.npy"), err, sizeof err));
  expect_err("structured.npy' holds a structured array");
  ck_assert_ptr_null(npy_load(&ctx, fixture("unicode.npy"), err, sizeof err));
  expect_err("holds a string array (dtype '<U2')");
  ck_assert_ptr_null(npy_load(&ctx, fixture("object.npy"), err, sizeof err));
  expect_err("holds an object array (dtype '|O')");
}
END_TEST

static const npz_entry *find_entry(const npz_entry *e, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(e[i].name, name)) return &e[i];
  ck_abort_msg("no member '%s'", name);
  return NULL;
}

static void check_entry(const npz_entry *e, size_t n, const char *name, int rank, const double *want, size_t size) {
  const npz_entry *x = find_entry(e, n, name);
  ck_assert_int_eq(x->t->rank, rank);
  ck_assert_uint_eq(x->t->size, size);
  for (size_t i = 0; i < size; i++) ck_assert_msg(bits_equal(x->t->data[i], want[i]), "%s[%zu]", name, i);
}

START_TEST(npz_fixture_stored_and_deflated) {
  npz_entry *e;
  size_t n;
  double w[6] = {0, 1, 2, 3, 4, 5};
  ck_assert_msg(npz_load(&ctx, fixture("stored.npz"), &e, &n, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(n, 4);
  /* archive order is numpy.savez's keyword order */
  ck_assert_str_eq(e[0].name, "w");
  ck_assert_str_eq(e[1].name, "b");
  ck_assert_str_eq(e[2].name, "net/c1");
  ck_assert_str_eq(e[3].name, "net/s");
  check_entry(e, n, "w", 2, w, 6);
  double b[2] = {0.25, -1};
  check_entry(e, n, "b", 1, b, 2);
  double c1[4] = {1, 2, 3, 4};
  check_entry(e, n, "net/c1", 2, c1, 4);
  double s[1] = {9};
  check_entry(e, n, "net/s", 0, s, 1);
  npz_free(&ctx, e, n);

  ck_assert_msg(npz_load(&ctx, fixture("deflated.npz"), &e, &n, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(n, 3);
  check_entry(e, n, "w", 2, w, 6);
  double labels[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  check_entry(e, n, "labels", 1, labels, 10);
  double c[1] = {1.5};
  check_entry(e, n, "net/c1", 1, c, 1);
  npz_free(&ctx, e, n);

  ck_assert_msg(npz_load(&ctx, fixture("positional.npz"), &e, &n, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(n, 2);
  check_entry(e, n, "arr_0", 2, w, 6);
  double m3[1] = {-3};
  check_entry(e, n, "arr_1", 1, m3, 1);
  npz_free(&ctx, e, n);
}
END_TEST

START_TEST(npz_roundtrip) {
  size_t s23[2] = {2, 3}, s0[1] = {0};
  double v[6] = {1.5, NAN, -INFINITY, -0.0, 4.9e-324, 7};
  const blo_tensor *ts[4];
  blo_tensor *a = tn_from(&ctx, 2, s23, v), *b = tn_scalar(&ctx, -2.25), *c = tn_new(&ctx, 1, s0);
  size_t s4[4] = {2, 1, 3, 2};
  blo_tensor *d = tn_new(&ctx, 4, s4);
  for (size_t i = 0; i < d->size; i++) d->data[i] = special_value(i);
  ts[0] = a; ts[1] = b; ts[2] = c; ts[3] = d;
  const char *names[4] = {"a", "net/b", "net/empty", "x/y/z"};
  const char *p = path_of("r.npz");
  ck_assert_msg(npz_save(&ctx, p, names, ts, 4, err, sizeof err) == 0, "%s", err);
  npz_entry *e;
  size_t n;
  ck_assert_msg(npz_load(&ctx, p, &e, &n, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(n, 4);
  for (size_t i = 0; i < 4; i++) {
    ck_assert_str_eq(e[i].name, names[i]);
    ck_assert(tn_same_shape(e[i].t, ts[i]));
    for (size_t j = 0; j < ts[i]->size; j++) ck_assert(bits_equal(e[i].t->data[j], ts[i]->data[j]));
  }
  npz_free(&ctx, e, n);
  /* an empty archive is a valid .npz */
  ck_assert_int_eq(npz_save(&ctx, p, NULL, NULL, 0, err, sizeof err), 0);
  ck_assert_msg(npz_load(&ctx, p, &e, &n, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(n, 0);
  npz_free(&ctx, e, n);
  /* saving twice gives the same bytes (fixed timestamps) */
  ck_assert_int_eq(npz_save(&ctx, p, names, ts, 4, err, sizeof err), 0);
  const char *q = path_of("r2.npz");
  ck_assert_int_eq(npz_save(&ctx, q, names, ts, 4, err, sizeof err), 0);
  size_t n1, n2;
  unsigned char *b1 = read_all(p, &n1), *b2 = read_all(q, &n2);
  ck_assert_uint_eq(n1, n2);
  ck_assert_int_eq(memcmp(b1, b2, n1), 0);
  /* each member is the .npy file npy_save writes, stored at offset 30 + name */
  const char *one = path_of("a.npy");
  ck_assert_int_eq(npy_save(&ctx, one, a, err, sizeof err), 0);
  size_t n3;
  unsigned char *b3 = read_all(one, &n3);
  ck_assert_int_eq(memcmp(b1, "PK\x03\x04", 4), 0);
  ck_assert_int_eq(memcmp(b1 + 30, "a.npy", 5), 0);
  ck_assert_int_eq(memcmp(b1 + 35, b3, n3), 0);
  free(b1);
  free(b2);
  free(b3);
  tn_release(&ctx, a);
  tn_release(&ctx, b);
  tn_release(&ctx, c);
  tn_release(&ctx, d);
}
END_TEST

/* ---------------- corrupt input ---------------- */

/* A .npy file with the given version and header text (padded to 64 bytes as
 * NumPy does) followed by ndata bytes of data. */
static void write_npy_raw(const char *path, int major, const char *header, size_t ndata) {
  unsigned char b[20000];
  size_t lenb = major == 1 ? 2 : 4, hl = strlen(header);
  size_t total = (6 + 2 + lenb + hl + 1 + 63) / 64 * 64;
  memcpy(b, "\x93NUMPY", 6);
  b[6] = (unsigned char)major;
  b[7] = 0;
  size_t h = total - 8 - lenb;
  for (size_t i = 0; i < lenb; i++) b[8 + i] = (unsigned char)(h >> (8 * i));
  memcpy(b + 8 + lenb, header, hl);
  memset(b + 8 + lenb + hl, ' ', total - (8 + lenb + hl) - 1);
  b[total - 1] = '\n';
  ck_assert(total + ndata <= sizeof b);
  for (size_t i = 0; i < ndata; i++) b[total + i] = (unsigned char)i;
  write_bytes(path, b, total + ndata);
}

static void expect_npy_error(const char *header, size_t ndata, const char *msg_part) {
  const char *p = path_of("bad.npy");
  write_npy_raw(p, 1, header, ndata);
  blo_tensor *t = npy_load(&ctx, p, err, sizeof err);
  ck_assert_msg(t == NULL, "header %s was accepted", header);
  ck_assert_msg(strstr(err, "bad.npy'") != NULL, "error '%s' does not name the file", err);
  expect_err(msg_part);
}

START_TEST(npy_corrupt_headers) {
  expect_npy_error("{'descr': '<q8', 'fortran_order': False, 'shape': (2,), }", 16, "unsupported dtype '<q8'");
  expect_npy_error("{'descr': '<f16', 'fortran_order': False, 'shape': (2,), }", 32, "unsupported dtype '<f16'");
  expect_npy_error("{'descr': '|f8', 'fortran_order': False, 'shape': (2,), }", 16, "without a byte order");
  expect_npy_error("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 2), }", 0,
                   "whose element count overflows");
  expect_npy_error("{'descr': '<f8', 'fortran_order': False, 'shape': (2147483648, 2147483648), }", 0,
                   "whose byte count overflows");
  expect_npy_error("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }", 0,
                   "dimension too large");
  expect_npy_error("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", 0, "negative dimension");
  expect_npy_error("{'descr': '<f8', 'fortran_order': False, 'shape': (3), }", 24, "trailing comma");
  expect_npy_error("{'descr': '<f8', 'fortran_order': False, }", 8, "no 'shape'");
  expect_npy_error("{'descr': '<f8', 'shape': (1,), }", 8, "no 'fortran_order'");
  expect_npy_error("{'fortran_order': False, 'shape': (1,), }", 8, "no 'descr'");
  expect_npy_error("{'descr': '<f8', 'fortran_order': Maybe, 'shape': (1,), }", 8, "must be True or False");
  expect_npy_error("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1}", 8, "unexpected key 'x'");
  expect_npy_error("{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", 8, "given twice");
  expect_npy_error("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), } junk", 8, "unexpected text");
  expect_npy_error("{'descr': '<f8', 'fortran_order': False, 'shape': (1,)", 8, "expected ',' or '}'");
  expect_npy_error("['<f8']", 8, "expected '{'");
  expect_npy_error("{'descr': '<f8\\n', 'fortran_order': False, 'shape': (1,), }", 8, "escapes");
  expect_npy_error("{'descr': '<f8, 'fortran_order': False, 'shape': (1,), }", 8, "malformed header");
  /* the data is short by one byte */
  expect_npy_error("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", 31,
                   "is truncated: expected 32 data bytes, got 31");
  /* a fortran-order file that is short */
  expect_npy_error("{'descr': '<i4', 'fortran_order': True, 'shape': (2, 2), }", 15, "expected 16 data bytes, got 15");
  /* trailing bytes after the data */
  expect_npy_error("{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }", 3, "bytes after the array data");
}
END_TEST

START_TEST(npy_corrupt_preamble) {
  const char *p = path_of("x.npy");
  write_bytes(p, "\x93NUMPX\x01\x00\x10\x00", 10);
  ck_assert_ptr_null(npy_load(&ctx, p, err, sizeof err));
  expect_err("is not a NumPy .npy file (bad magic)");
  write_bytes(p, "", 0);
  ck_assert_ptr_null(npy_load(&ctx, p, err, sizeof err));
  expect_err("bad magic");
  write_bytes(p, "\x93NUMPY\x01", 7);
  ck_assert_ptr_null(npy_load(&ctx, p, err, sizeof err));
  expect_err("is truncated in its preamble");
  write_bytes(p, "\x93NUMPY\x01\x00\x76", 9);
  ck_assert_ptr_null(npy_load(&ctx, p, err, sizeof err));
  expect_err("is truncated in its preamble");
  write_bytes(p, "\x93NUMPY\x04\x00\x10\x00", 10);
  ck_assert_ptr_null(npy_load(&ctx, p, err, sizeof err));
  expect_err("unsupported .npy format version 4.0");
  /* the header length points past the end of the file */
  write_bytes(p, "\x93NUMPY\x01\x00\x76\x00{'descr'", 17);
  ck_assert_ptr_null(npy_load(&ctx, p, err, sizeof err));
  expect_err("is truncated: the header is 118 bytes but only 7 follow");
  /* version 2.0 with a 4 GiB header length */
  write_bytes(p, "\x93NUMPY\x02\x00\xff\xff\xff\xff", 12);
  ck_assert_ptr_null(npy_load(&ctx, p, err, sizeof err));
  expect_err("has a header of 4294967295 bytes, above the limit of 10000");
  /* a directory opens but cannot be read */
  ck_assert_ptr_null(npy_load(&ctx, dir, err, sizeof err));
  expect_err("' cannot be read: Is a directory");
  ck_assert_ptr_null(npy_load(&ctx, path_of("missing.npy"), err, sizeof err));
  expect_err("cannot open '");
  expect_err("No such file");
  /* a truncated copy of a real file */
  size_t s[2] = {3, 3};
  blo_tensor *t = tn_zeros(&ctx, 2, s);
  ck_assert_int_eq(npy_save(&ctx, p, t, err, sizeof err), 0);
  size_t n;
  unsigned char *b = read_all(p, &n);
  write_bytes(p, b, n - 5);
  ck_assert_ptr_null(npy_load(&ctx, p, err, sizeof err));
  expect_err("is truncated: expected 72 data bytes, got 67");
  free(b);
  tn_release(&ctx, t);
}
END_TEST

START_TEST(npy_memory_cap) {
  /* the header asks for 8e9 doubles: the tensor layer refuses, nothing is read */
  const char *p = path_of("huge.npy");
  write_npy_raw(p, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 80000), }", 0);
  ctx.mem_cap = 1 << 20;
  ck_assert_ptr_null(npy_load(&ctx, p, err, sizeof err));
  expect_err("huge.npy' cannot be loaded: ");
  ctx.mem_cap = 0;
}
END_TEST

static unsigned char *saved_npz(const char *p, size_t *n) {
  size_t s[1] = {4};
  double v[4] = {1, 2, 3, 4};
  blo_tensor *t = tn_from(&ctx, 1, s, v);
  const char *names[1] = {"w"};
  const blo_tensor *ts[1] = {t};
  ck_assert_int_eq(npz_save(&ctx, p, names, ts, 1, err, sizeof err), 0);
  tn_release(&ctx, t);
  return read_all(p, n);
}

START_TEST(npz_corrupt) {
  const char *p = path_of("c.npz");
  size_t n;
  npz_entry *e;
  size_t ne;
  unsigned char *b = saved_npz(p, &n);
  /* a flipped data byte fails the CRC-32 check */
  unsigned char *c = malloc(n);
  memcpy(c, b, n);
  c[30 + 5 + 128 + 9] ^= 0x40;
  write_bytes(p, c, n);
  ck_assert_int_eq(npz_load(&ctx, p, &e, &ne, err, sizeof err), -1);
  expect_err("c.npz' member 'w.npy' fails its CRC-32 check");
  ck_assert_ptr_null(e);
  /* cut short: no end record */
  write_bytes(p, b, n - 30);
  ck_assert_int_eq(npz_load(&ctx, p, &e, &ne, err, sizeof err), -1);
  expect_err("is not a ZIP archive");
  /* not a zip at all */
  write_bytes(p, "hello", 5);
  ck_assert_int_eq(npz_load(&ctx, p, &e, &ne, err, sizeof err), -1);
  expect_err("is not a ZIP archive");
  /* the central directory offset points past its end */
  memcpy(c, b, n);
  c[n - 22 + 16] = 0xf0;
  write_bytes(p, c, n);
  ck_assert_int_eq(npz_load(&ctx, p, &e, &ne, err, sizeof err), -1);
  expect_err("has a central directory outside the file");
  /* a member whose name is not NAME.npy */
  memcpy(c, b, n);
  for (size_t i = 0; i + 5 <= n; i++)
    if (!memcmp(c + i, "w.npy", 5)) c[i + 2] = 'x';
  write_bytes(p, c, n);
  ck_assert_int_eq(npz_load(&ctx, p, &e, &ne, err, sizeof err), -1);
  expect_err("member 'w.xpy' is not a .npy member");
  /* an unknown compression method in the central directory */
  memcpy(c, b, n);
  size_t cd = n - 22 - (46 + 5);
  ck_assert_int_eq(memcmp(c + cd, "PK\x01\x02", 4), 0);
  c[cd + 10] = 12;   /* bzip2 */
  write_bytes(p, c, n);
  ck_assert_int_eq(npz_load(&ctx, p, &e, &ne, err, sizeof err), -1);
  expect_err("uses ZIP compression method 12");
  /* the directory's uncompressed size disagrees with the member */
  memcpy(c, b, n);
  c[cd + 20] ^= 1;
  c[cd + 24] ^= 1;
  write_bytes(p, c, n);
  ck_assert_int_eq(npz_load(&ctx, p, &e, &ne, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "member 'w.npy'") != NULL, "%s", err);
  free(c);
  free(b);
}
END_TEST

START_TEST(npz_corrupt_deflate) {
  /* the deflated fixture with one byte of compressed data changed */
  size_t n;
  unsigned char *b = read_all(fixture("deflated.npz"), &n);
  ck_assert_int_eq(memcmp(b, "PK\x03\x04", 4), 0);
  size_t data = 30 + ((size_t)b[26] | (size_t)b[27] << 8) + ((size_t)b[28] | (size_t)b[29] << 8);
  b[data + 20] ^= 0xff;
  const char *p = path_of("d.npz");
  write_bytes(p, b, n);
  npz_entry *e;
  size_t ne;
  ck_assert_int_eq(npz_load(&ctx, p, &e, &ne, err, sizeof err), -1);
  ck_assert_msg(strstr(err, "d.npz' member 'w.npy'") != NULL, "%s", err);
  free(b);
}
END_TEST

/* Nothing leaks on the error paths: every tensor comes back to the pool. */
START_TEST(npy_no_tensor_leak_on_errors) {
  const char *p = path_of("l.npy");
  write_npy_raw(p, 1, "{'descr': '<f8', 'fortran_order': True, 'shape': (20, 20), }", 100);
  for (int i = 0; i < 5; i++) ck_assert_ptr_null(npy_load(&ctx, p, err, sizeof err));
  const char *q = path_of("l.npz");
  size_t n;
  unsigned char *b = saved_npz(q, &n);
  b[30 + 5 + 128 + 9] ^= 0x40;
  write_bytes(q, b, n);
  npz_entry *e;
  size_t ne;
  for (int i = 0; i < 5; i++) ck_assert_int_eq(npz_load(&ctx, q, &e, &ne, err, sizeof err), -1);
  free(b);
  tn_ctx_trim(&ctx);
  ck_assert_uint_eq(ctx.mem_used, 0);
}
END_TEST

/* ---------------- arbitrary damage never crashes ---------------- */

/* Every single-byte change (three values per position) and every truncation
 * of NumPy's files either loads or fails with a message naming the file;
 * under the sanitizers this also proves no read goes out of bounds. */
static void mutate_file(const char *name, int npz) {
  size_t n;
  unsigned char *orig = read_all(fixture(name), &n);
  unsigned char *b = malloc(n);
  /* thousands of small files: in memory (/dev/shm) where there is one, as
   * writing them to a disk-backed /tmp takes milliseconds each */
  char shm[128];
  snprintf(shm, sizeof shm, "/dev/shm/blo_test_npy_%ld.%s", (long)getpid(), npz ? "npz" : "npy");
  FILE *probe = fopen(shm, "wb");
  if (probe) fclose(probe);
  const char *p = probe ? shm : path_of(npz ? "m.npz" : "m.npy");
  static const unsigned char vals[3] = {0x00, 0xff, 0x7f};
  for (size_t i = 0; i <= n; i++) {
    for (int k = 0; k < 4; k++) {
      size_t len = n;
      memcpy(b, orig, n);
      if (k == 3) len = i;              /* truncated at i */
      else if (i < n) b[i] = orig[i] != vals[k] ? vals[k] : (unsigned char)(vals[k] ^ 0x55);
      else continue;
      write_bytes(p, b, len);
      err[0] = 0;
      if (npz) {
        npz_entry *e;
        size_t ne;
        if (npz_load(&ctx, p, &e, &ne, err, sizeof err) == 0) npz_free(&ctx, e, ne);
        else ck_assert_msg(strstr(err, p) != NULL, "%s byte %zu: '%s'", name, i, err);
      } else {
        blo_tensor *t = npy_load(&ctx, p, err, sizeof err);
        if (t) tn_release(&ctx, t);
        else ck_assert_msg(strstr(err, p) != NULL, "%s byte %zu: '%s'", name, i, err);
      }
    }
  }
  if (probe) unlink(shm);
  free(b);
  free(orig);
}

START_TEST(npy_mutations_are_errors_or_values) {
  mutate_file("f4.npy", 0);
  mutate_file("fortran_u1.npy", 0);
  mutate_file("fortran.npy", 0);
  mutate_file("v3.npy", 0);
  mutate_file("stored.npz", 1);
  mutate_file("deflated.npz", 1);
  mutate_file("positional.npz", 1);
  tn_ctx_trim(&ctx);
  ck_assert_uint_eq(ctx.mem_used, 0);
}
END_TEST

/* ---------------- the builtins ---------------- */

static int run(blo_state *S, const char *src) { return blo_eval_string(S, "t.blo", src, strlen(src)); }

START_TEST(builtins_respect_allow_files) {
  blo_config c;
  blo_config_defaults(&c);
  c.allow_files = 0;
  blo_state *S = blo_open(&c);
  ck_assert_ptr_nonnull(S);
  char code[1024];
  const char *calls[4] = {"save_npy(\"%s\", [1, 2])", "save_npz(\"%s\", {a = 1})", "let x = load_npy(\"%s\")",
                          "let x = load_npz(\"%s\")"};
  const char *files[4] = {path_of("no.npy"), path_of("no.npz"), fixture("f4.npy"), fixture("stored.npz")};
  for (int i = 0; i < 4; i++) {
    snprintf(code, sizeof code, calls[i], files[i]);
    ck_assert_int_eq(run(S, code), BLO_ERROR_RUNTIME);
    ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "file access is disabled"));
  }
  ck_assert_int_eq(access(files[0], F_OK), -1);
  ck_assert_int_eq(access(files[1], F_OK), -1);
  blo_close(S);
}
END_TEST

START_TEST(builtins_memory_cap) {
  const char *p = path_of("big.npy");
  write_npy_raw(p, 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1000, 1000), }", 0);
  blo_config c;
  blo_config_defaults(&c);
  c.mem_cap = 1 << 20;
  blo_state *S = blo_open(&c);
  char code[1024];
  snprintf(code, sizeof code, "let x = load_npy(\"%s\")", p);
  ck_assert_int_eq(run(S, code), BLO_ERROR_MEMORY);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "memory cap exceeded"));
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "big.npy'"));
  blo_close(S);
}
END_TEST

START_TEST(builtins_records) {
  blo_config c;
  blo_config_defaults(&c);
  blo_state *S = blo_open(&c);
  char code[2048];
  const char *p = path_of("net.npz");
  snprintf(code, sizeof code,
           "let net = {c1 = [[1, 2], [3, 4]], b = 0.5, deep = {w = [1, 2, 3], deeper = {s = -1}}}\n"
           "save_npz(\"%s\", net)\n"
           "let r = load_npz(\"%s\")\n"
           "let total = sum(r.c1) + r.b + sum(r.deep.w) + r.deep.deeper.s\n", p, p);
  ck_assert_int_eq(run(S, code), BLO_OK);
  double total = 0;
  ck_assert_int_eq(blo_get_number(S, "total", &total), BLO_OK);
  ck_assert(total == 10 + 0.5 + 6 - 1);
  /* the members are flat names with '/' */
  npz_entry *e;
  size_t n;
  ck_assert_msg(npz_load(&ctx, p, &e, &n, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(n, 4);
  ck_assert_str_eq(e[0].name, "c1");
  ck_assert_str_eq(e[1].name, "b");
  ck_assert_str_eq(e[2].name, "deep/w");
  ck_assert_str_eq(e[3].name, "deep/deeper/s");
  npz_free(&ctx, e, n);
  /* a member that is both an array and a record */
  const char *q = path_of("both.npz");
  size_t s1[1] = {1};
  blo_tensor *t = tn_zeros(&ctx, 1, s1);
  const char *names[2] = {"a", "a/b"};
  const blo_tensor *ts[2] = {t, t};
  ck_assert_int_eq(npz_save(&ctx, q, names, ts, 2, err, sizeof err), 0);
  tn_release(&ctx, t);
  snprintf(code, sizeof code, "let z = load_npz(\"%s\")", q);
  ck_assert_int_eq(run(S, code), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "member 'a/b.npy' maps to field 'a', which another member uses"));
  snprintf(code, sizeof code, "save_npz(\"%s\", [1, 2])", q);
  ck_assert_int_eq(run(S, code), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "save_npz: argument 2 must be a record of tensors"));
  blo_close(S);
}
END_TEST

/* ---------------- NumPy reads blo's files ---------------- */

/* A Python 3 with NumPy, or NULL. */
static const char *numpy_python(void) {
  static const char *const cands[] = {"python3", "/usr/bin/python3", NULL};
  for (int i = 0; cands[i]; i++) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s -c 'import numpy' >/dev/null 2>&1", cands[i]);
    if (system(cmd) == 0) return cands[i];
  }
  return NULL;
}

START_TEST(numpy_reads_blo_files) {
  const char *py = numpy_python();
  if (!py) {
    fprintf(stderr, "test_npy: NumPy not found (python3-numpy): skipping the NumPy interoperability test\n");
    return;
  }
  size_t s23[2] = {2, 3}, s5[1] = {5};
  double v[6] = {0.1, -0.0, 1e-310, INFINITY, NAN, 1.0 / 3.0};
  blo_tensor *a = tn_from(&ctx, 2, s23, v), *b = tn_scalar(&ctx, 2.5), *c = tn_new(&ctx, 1, s5);
  for (int i = 0; i < 5; i++) c->data[i] = i * i - 0.5;
  ck_assert_int_eq(npy_save(&ctx, path_of("a.npy"), a, err, sizeof err), 0);
  ck_assert_int_eq(npy_save(&ctx, path_of("b.npy"), b, err, sizeof err), 0);
  const char *names[3] = {"a", "net/b", "net/c"};
  const blo_tensor *ts[3] = {a, b, c};
  ck_assert_int_eq(npz_save(&ctx, path_of("r.npz"), names, ts, 3, err, sizeof err), 0);
  /* NumPy checks values bit for bit and that np.save writes the same bytes;
   * zipfile.testzip checks every member's CRC */
  char script[4096];
  snprintf(script, sizeof script,
           "import io, sys, zipfile, numpy as np\n"
           "d = sys.argv[1]\n"
           "def same(x, want):\n"
           "    want = np.array(want, dtype='<f8')\n"
           "    assert x.dtype == np.dtype('<f8') and x.shape == want.shape, (x.dtype, x.shape)\n"
           "    assert x.tobytes() == want.tobytes(), (x, want)\n"
           "def npsave(x):\n"
           "    f = io.BytesIO(); np.save(f, x); return f.getvalue()\n"
           "a = np.load(d + '/a.npy')\n"
           "same(a, [[0.1, -0.0, 1e-310], [np.inf, np.nan, 1/3]])\n"
           "assert npsave(a) == open(d + '/a.npy', 'rb').read()\n"
           "b = np.load(d + '/b.npy')\n"
           "same(b, 2.5)\n"
           "assert npsave(b) == open(d + '/b.npy', 'rb').read()\n"
           "z = np.load(d + '/r.npz')\n"
           "assert z.files == ['a', 'net/b', 'net/c'], z.files\n"
           "same(z['a'], a); same(z['net/b'], 2.5); same(z['net/c'], [i * i - 0.5 for i in range(5)])\n"
           "assert zipfile.ZipFile(d + '/r.npz').testzip() is None\n"
           "print('numpy ok')\n");
  const char *sp = path_of("check.py");
  write_bytes(sp, script, strlen(script));
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s '%s' '%s' > '%s' 2>&1", py, sp, dir, path_of("py.out"));
  int rc = system(cmd);
  size_t n;
  unsigned char *out = read_all(path_of("py.out"), &n);
  out[n] = 0;
  ck_assert_msg(rc == 0 && strstr((char *)out, "numpy ok"), "NumPy check failed: %s", out);
  free(out);
  tn_release(&ctx, a);
  tn_release(&ctx, b);
  tn_release(&ctx, c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("npy");
  TCase *tc = tcase_create("npy");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, npy_roundtrip_all_ranks);
  tcase_add_test(tc, npy_roundtrip_empty_dims);
  tcase_add_test(tc, npy_header_bytes);
  tcase_add_test(tc, npy_fixture_dtypes);
  tcase_add_test(tc, npy_fixture_fortran_order);
  tcase_add_test(tc, npy_fixture_rank_limit);
  tcase_add_test(tc, npy_fixture_rejected_dtypes);
  tcase_add_test(tc, npz_fixture_stored_and_deflated);
  tcase_add_test(tc, npz_roundtrip);
  tcase_add_test(tc, npy_corrupt_headers);
  tcase_add_test(tc, npy_corrupt_preamble);
  tcase_add_test(tc, npy_memory_cap);
  tcase_add_test(tc, npz_corrupt);
  tcase_add_test(tc, npz_corrupt_deflate);
  tcase_add_test(tc, npy_no_tensor_leak_on_errors);
  tcase_add_test(tc, npy_mutations_are_errors_or_values);
  tcase_add_test(tc, builtins_respect_allow_files);
  tcase_add_test(tc, builtins_memory_cap);
  tcase_add_test(tc, builtins_records);
  tcase_add_test(tc, numpy_reads_blo_files);
  suite_add_tcase(s, tc);
  return check_run(s, "test_npy", CK_NOFORK);
}
