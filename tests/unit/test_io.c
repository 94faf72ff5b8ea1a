/* test_io.c: unit tests of stdlib/io.c (CSV and IDX readers/writers).
 * Every file is created under a fresh mkdtemp directory. */
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
#include <zlib.h>

#include "../../stdlib/io.h"

static tn_ctx ctx;
static char err[512];


static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

static void setup(void) {
  scratch_make("test_io");
  tn_ctx_init(&ctx, NULL, NULL);
  err[0] = 0;
}

static void teardown(void) {
  scratch_remove();
  tn_ctx_free(&ctx);
}

/* ---------------- CSV ---------------- */

START_TEST(csv_roundtrip_exact) {
  double vals[12] = {0.1, 1.0 / 3.0, -2.5e17, 1e-300, 3.141592653589793, -0.0,
                     4.9e-324, 1.7976931348623157e308, 123456789.123456789, -7, 0, 2.0 / 3.0};
  size_t shape[2] = {4, 3};
  blo_tensor *t = tn_from(&ctx, 2, shape, vals);
  const char *p = path_of("m.csv");
  ck_assert_int_eq(io_save_csv(&ctx, p, t, NULL, 0, err, sizeof err), 0);
  blo_tensor *u = io_load_csv(&ctx, p, 0, NULL, 0, NULL, NULL, err, sizeof err);
  ck_assert_msg(u != NULL, "%s", err);
  ck_assert_int_eq(u->rank, 2);
  ck_assert_uint_eq(u->shape[0], 4);
  ck_assert_uint_eq(u->shape[1], 3);
  for (int i = 0; i < 12; i++) {
    ck_assert_msg(memcmp(&u->data[i], &vals[i], sizeof(double)) == 0, "element %d: %.17g != %.17g", i,
                  u->data[i], vals[i]);
  }
  tn_release(&ctx, t);
  tn_release(&ctx, u);
}
END_TEST

START_TEST(csv_vector_and_scalar) {
  double vals[3] = {1.5, -2, 1e10};
  size_t shape[1] = {3};
  blo_tensor *t = tn_from(&ctx, 1, shape, vals);
  const char *p = path_of("v.csv");
  ck_assert_int_eq(io_save_csv(&ctx, p, t, NULL, 0, err, sizeof err), 0);
  blo_tensor *u = io_load_csv(&ctx, p, 0, NULL, 0, NULL, NULL, err, sizeof err);
  ck_assert_ptr_nonnull(u);
  ck_assert_int_eq(u->rank, 1);
  ck_assert_uint_eq(u->shape[0], 3);
  for (int i = 0; i < 3; i++) ck_assert(u->data[i] == vals[i]);
  tn_release(&ctx, u);
  tn_release(&ctx, t);

  blo_tensor *s = tn_scalar(&ctx, 42.25);
  ck_assert_int_eq(io_save_csv(&ctx, p, s, NULL, 0, err, sizeof err), 0);
  u = io_load_csv(&ctx, p, 0, NULL, 0, NULL, NULL, err, sizeof err);
  ck_assert_ptr_nonnull(u);
  ck_assert_int_eq(u->rank, 1);
  ck_assert_uint_eq(u->shape[0], 1);
  ck_assert(u->data[0] == 42.25);
  tn_release(&ctx, u);
  tn_release(&ctx, s);
}
END_TEST

START_TEST(csv_header_and_cols) {
  const char *p = path_of("h.csv");
  write_text(p, "a, b ,c\r\n1,2,3\r\n\r\n4, 5 ,6\r\n");
  char **names;
  int nn;
  blo_tensor *u = io_load_csv(&ctx, p, 1, NULL, 0, &names, &nn, err, sizeof err);
  ck_assert_msg(u != NULL, "%s", err);
  ck_assert_int_eq(nn, 3);
  ck_assert_str_eq(names[0], "a");
  ck_assert_str_eq(names[1], "b");
  ck_assert_str_eq(names[2], "c");
  io_free_names(names, nn);
  ck_assert_int_eq(u->rank, 2);
  ck_assert_uint_eq(u->shape[0], 2);
  ck_assert_uint_eq(u->shape[1], 3);
  double want[6] = {1, 2, 3, 4, 5, 6};
  for (int i = 0; i < 6; i++) ck_assert(u->data[i] == want[i]);
  tn_release(&ctx, u);

  long cols[2] = {2, 0};
  u = io_load_csv(&ctx, p, 1, cols, 2, &names, &nn, err, sizeof err);
  ck_assert_ptr_nonnull(u);
  ck_assert_int_eq(nn, 2);
  ck_assert_str_eq(names[0], "c");
  ck_assert_str_eq(names[1], "a");
  io_free_names(names, nn);
  ck_assert_uint_eq(u->shape[0], 2);
  ck_assert_uint_eq(u->shape[1], 2);
  ck_assert(u->data[0] == 3 && u->data[1] == 1 && u->data[2] == 6 && u->data[3] == 4);
  tn_release(&ctx, u);

  long one[1] = {-2};  /* from the end: column b */
  u = io_load_csv(&ctx, p, 1, one, 1, NULL, NULL, err, sizeof err);
  ck_assert_ptr_nonnull(u);
  ck_assert_int_eq(u->rank, 1);
  ck_assert_uint_eq(u->shape[0], 2);
  ck_assert(u->data[0] == 2 && u->data[1] == 5);
  tn_release(&ctx, u);

  long bad[1] = {3};
  u = io_load_csv(&ctx, p, 1, bad, 1, NULL, NULL, err, sizeof err);
  ck_assert_ptr_null(u);
  char want_err[600];
  snprintf(want_err, sizeof want_err, "%s: column 3 out of range (the file has 3 columns)", p);
  ck_assert_str_eq(err, want_err);
}
END_TEST

START_TEST(csv_cols_skip_text_columns) {
  const char *p = path_of("t.csv");
  write_text(p, "name,x\nalpha,1.5\n\"beta, gamma\",2.5\n");
  long cols[1] = {1};
  blo_tensor *u = io_load_csv(&ctx, p, 1, cols, 1, NULL, NULL, err, sizeof err);
  ck_assert_msg(u != NULL, "%s", err);
  ck_assert_int_eq(u->rank, 1);
  ck_assert_uint_eq(u->shape[0], 2);
  ck_assert(u->data[0] == 1.5 && u->data[1] == 2.5);
  tn_release(&ctx, u);
}
END_TEST

START_TEST(csv_save_header_roundtrip) {
  double vals[4] = {1, 2, 3, 4};
  size_t shape[2] = {2, 2};
  blo_tensor *t = tn_from(&ctx, 2, shape, vals);
  const char *hdr[2] = {"x, y", "say \"hi\""};
  const char *p = path_of("sh.csv");
  ck_assert_int_eq(io_save_csv(&ctx, p, t, hdr, 2, err, sizeof err), 0);
  char **names;
  int nn;
  blo_tensor *u = io_load_csv(&ctx, p, 1, NULL, 0, &names, &nn, err, sizeof err);
  ck_assert_msg(u != NULL, "%s", err);
  ck_assert_int_eq(nn, 2);
  ck_assert_str_eq(names[0], "x, y");
  ck_assert_str_eq(names[1], "say \"hi\"");
  io_free_names(names, nn);
  for (int i = 0; i < 4; i++) ck_assert(u->data[i] == vals[i]);
  tn_release(&ctx, u);

  const char *hdr1[1] = {"only"};
  ck_assert_int_eq(io_save_csv(&ctx, p, t, hdr1, 1, err, sizeof err), -1);
  ck_assert_str_eq(err, "header has 1 name but the data has 2 columns");
  tn_release(&ctx, t);
}
END_TEST

START_TEST(csv_wrong_field_count) {
  const char *p = path_of("a.csv");
  write_text(p, "1,2,3,4\n5,6,7,8\n9,10,11\n");
  blo_tensor *u = io_load_csv(&ctx, p, 0, NULL, 0, NULL, NULL, err, sizeof err);
  ck_assert_ptr_null(u);
  char want[600];
  snprintf(want, sizeof want, "%s:3: expected 4 fields, got 3", p);
  ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(csv_not_a_number) {
  const char *p = path_of("b.csv");
  write_text(p, "x,y\n1,2\n\n3,abc\n");
  blo_tensor *u = io_load_csv(&ctx, p, 1, NULL, 0, NULL, NULL, err, sizeof err);
  ck_assert_ptr_null(u);
  char want[600];
  snprintf(want, sizeof want, "%s:4: field 2 is not a number: 'abc'", p);
  ck_assert_str_eq(err, want);

  write_text(p, "1,,3\n");
  u = io_load_csv(&ctx, p, 0, NULL, 0, NULL, NULL, err, sizeof err);
  ck_assert_ptr_null(u);
  snprintf(want, sizeof want, "%s:1: field 2 is not a number: ''", p);
  ck_assert_str_eq(err, want);

  /* a header line is not parsed as numbers when header = 0 is wrong */
  write_text(p, "x,y\n1,2\n");
  u = io_load_csv(&ctx, p, 0, NULL, 0, NULL, NULL, err, sizeof err);
  ck_assert_ptr_null(u);
  snprintf(want, sizeof want, "%s:1: field 1 is not a number: 'x'", p);
  ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(csv_missing_file) {
  const char *p = path_of("nope.csv");
  blo_tensor *u = io_load_csv(&ctx, p, 0, NULL, 0, NULL, NULL, err, sizeof err);
  ck_assert_ptr_null(u);
  char want[600];
  snprintf(want, sizeof want, "cannot open '%s': No such file or directory", p);
  ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(csv_empty_and_header_only) {
  const char *p = path_of("e.csv");
  write_text(p, "");
  blo_tensor *u = io_load_csv(&ctx, p, 0, NULL, 0, NULL, NULL, err, sizeof err);
  ck_assert_ptr_nonnull(u);
  ck_assert_uint_eq(u->size, 0);
  tn_release(&ctx, u);
  write_text(p, "a,b\n");
  u = io_load_csv(&ctx, p, 1, NULL, 0, NULL, NULL, err, sizeof err);
  ck_assert_ptr_nonnull(u);
  ck_assert_int_eq(u->rank, 2);
  ck_assert_uint_eq(u->shape[0], 0);
  ck_assert_uint_eq(u->shape[1], 2);
  tn_release(&ctx, u);
}
END_TEST

START_TEST(csv_utf8_bom) {
  const char *p = path_of("bom.csv");
  write_text(p, "\xEF\xBB\xBF" "a,b\n1,2\n");
  char **names;
  int nn;
  blo_tensor *u = io_load_csv(&ctx, p, 1, NULL, 0, &names, &nn, err, sizeof err);
  ck_assert_msg(u != NULL, "%s", err);
  ck_assert_str_eq(names[0], "a");
  io_free_names(names, nn);
  ck_assert(u->data[0] == 1 && u->data[1] == 2);
  tn_release(&ctx, u);
  write_text(p, "\xEF\xBB\xBF" "3,4\n");
  u = io_load_csv(&ctx, p, 0, NULL, 0, NULL, NULL, err, sizeof err);
  ck_assert_msg(u != NULL, "%s", err);
  ck_assert(u->data[0] == 3 && u->data[1] == 4);
  tn_release(&ctx, u);
}
END_TEST

START_TEST(csv_special_numbers) {
  const char *p = path_of("s.csv");
  write_text(p, "nan,inf,-inf, 1e3 \n");
  blo_tensor *u = io_load_csv(&ctx, p, 0, NULL, 0, NULL, NULL, err, sizeof err);
  ck_assert_msg(u != NULL, "%s", err);
  ck_assert(isnan(u->data[0]));
  ck_assert(isinf(u->data[1]) && u->data[1] > 0);
  ck_assert(isinf(u->data[2]) && u->data[2] < 0);
  ck_assert(u->data[3] == 1000);
  tn_release(&ctx, u);
}
END_TEST

/* ---------------- IDX ---------------- */

static size_t be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
  return 4;
}

/* Builds an IDX image: header for (type, dims) followed by payload bytes. */
static size_t idx_image(unsigned char *buf, int type, int nd, const uint32_t *dims, const unsigned char *payload,
                        size_t npayload) {
  size_t n = 0;
  buf[n++] = 0;
  buf[n++] = 0;
  buf[n++] = (unsigned char)type;
  buf[n++] = (unsigned char)nd;
  for (int i = 0; i < nd; i++) n += be32(buf + n, dims[i]);
  memcpy(buf + n, payload, npayload);
  return n + npayload;
}

static void write_bytes(const char *path, const unsigned char *b, size_t n, int gz) {
  if (gz) {
    gzFile f = gzopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(gzwrite(f, b, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(f), Z_OK);
  } else {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, n, f), n);
    fclose(f);
  }
}

static void check_ubyte_cube(int gz) {
  unsigned char payload[24], img[64];
  for (int i = 0; i < 24; i++) payload[i] = (unsigned char)(i * 10);
  uint32_t dims[3] = {2, 3, 4};
  size_t n = idx_image(img, 0x08, 3, dims, payload, 24);
  const char *p = path_of(gz ? "cube.idx.gz" : "cube.idx");
  write_bytes(p, img, n, gz);
  blo_tensor *t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_msg(t != NULL, "%s", err);
  ck_assert_int_eq(t->rank, 3);
  ck_assert_uint_eq(t->shape[0], 2);
  ck_assert_uint_eq(t->shape[1], 3);
  ck_assert_uint_eq(t->shape[2], 4);
  for (int i = 0; i < 24; i++) ck_assert(t->data[i] == i * 10);
  tn_release(&ctx, t);
}

START_TEST(idx_ubyte_plain) { check_ubyte_cube(0); }
END_TEST

START_TEST(idx_ubyte_gzip) { check_ubyte_cube(1); }
END_TEST

START_TEST(idx_mnist_like_large_gzip) {
  /* 100 images of 28x28: more than one read chunk */
  size_t npix = 100 * 28 * 28;
  unsigned char *payload = malloc(npix), *img = malloc(npix + 32);
  for (size_t i = 0; i < npix; i++) payload[i] = (unsigned char)(i * 7 % 256);
  uint32_t dims[3] = {100, 28, 28};
  size_t n = idx_image(img, 0x08, 3, dims, payload, npix);
  const char *p = path_of("train-images-idx3-ubyte.gz");
  write_bytes(p, img, n, 1);
  blo_tensor *t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_msg(t != NULL, "%s", err);
  ck_assert_uint_eq(t->size, npix);
  for (size_t i = 0; i < npix; i++) ck_assert(t->data[i] == (double)(i * 7 % 256));
  tn_release(&ctx, t);
  free(payload);
  free(img);
}
END_TEST

START_TEST(idx_types) {
  unsigned char img[128];
  uint32_t d3[1] = {3};
  const char *p = path_of("types.idx");
  blo_tensor *t;

  unsigned char b8[3] = {0x80, 0xff, 0x05};  /* signed byte: -128, -1, 5 */
  write_bytes(p, img, idx_image(img, 0x09, 1, d3, b8, 3), 0);
  t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_msg(t != NULL, "%s", err);
  ck_assert(t->data[0] == -128 && t->data[1] == -1 && t->data[2] == 5);
  tn_release(&ctx, t);

  unsigned char b16[6] = {0x80, 0x00, 0xff, 0xfe, 0x01, 0x02};  /* -32768, -2, 258 */
  write_bytes(p, img, idx_image(img, 0x0B, 1, d3, b16, 6), 0);
  t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_msg(t != NULL, "%s", err);
  ck_assert(t->data[0] == -32768 && t->data[1] == -2 && t->data[2] == 258);
  tn_release(&ctx, t);

  unsigned char b32[12] = {0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01, 0x00, 0x00};
  write_bytes(p, img, idx_image(img, 0x0C, 1, d3, b32, 12), 0);
  t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_msg(t != NULL, "%s", err);
  ck_assert(t->data[0] == -2147483648.0 && t->data[1] == -1 && t->data[2] == 65536);
  tn_release(&ctx, t);

  /* float32 1.5 = 0x3FC00000, -0.25 = 0xBE800000, 0.1f = 0x3DCCCCCD */
  unsigned char f32[12] = {0x3f, 0xc0, 0, 0, 0xbe, 0x80, 0, 0, 0x3d, 0xcc, 0xcc, 0xcd};
  write_bytes(p, img, idx_image(img, 0x0D, 1, d3, f32, 12), 0);
  t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_msg(t != NULL, "%s", err);
  ck_assert(t->data[0] == 1.5 && t->data[1] == -0.25 && t->data[2] == (double)0.1f);
  tn_release(&ctx, t);

  /* float64 0.1 = 0x3FB999999999999A, -2 = 0xC000000000000000, 1e300 */
  unsigned char f64[24];
  double dv[3] = {0.1, -2, 1e300};
  for (int i = 0; i < 3; i++) {
    uint64_t u;
    memcpy(&u, &dv[i], 8);
    for (int k = 0; k < 8; k++) f64[i * 8 + k] = (unsigned char)(u >> (56 - 8 * k));
  }
  ck_assert(f64[0] == 0x3f && f64[1] == 0xb9 && f64[7] == 0x9a);
  write_bytes(p, img, idx_image(img, 0x0E, 1, d3, f64, 24), 1);
  t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_msg(t != NULL, "%s", err);
  ck_assert(t->data[0] == 0.1 && t->data[1] == -2 && t->data[2] == 1e300);
  tn_release(&ctx, t);

  /* a 1-D label file and a 4-D one */
  uint32_t d4[4] = {1, 2, 1, 2};
  unsigned char q[4] = {9, 8, 7, 6};
  write_bytes(p, img, idx_image(img, 0x08, 4, d4, q, 4), 0);
  t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_msg(t != NULL, "%s", err);
  ck_assert_int_eq(t->rank, 4);
  ck_assert(t->data[3] == 6);
  tn_release(&ctx, t);
}
END_TEST

START_TEST(idx_truncated) {
  unsigned char payload[5] = {1, 2, 3, 4, 5}, img[64];
  uint32_t dims[2] = {2, 5};
  size_t n = idx_image(img, 0x08, 2, dims, payload, 5);
  const char *p = path_of("short.idx");
  write_bytes(p, img, n, 0);
  blo_tensor *t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_ptr_null(t);
  char want[600];
  snprintf(want, sizeof want, "'%s' is truncated: expected 10 data bytes, got 5", p);
  ck_assert_str_eq(err, want);

  const char *pg = path_of("short.idx.gz");
  write_bytes(pg, img, n, 1);
  t = io_load_idx(&ctx, pg, err, sizeof err);
  ck_assert_ptr_null(t);
  snprintf(want, sizeof want, "'%s' is truncated: expected 10 data bytes, got 5", pg);
  ck_assert_str_eq(err, want);

  /* cut inside the dimension sizes */
  write_bytes(p, img, 9, 0);
  t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_ptr_null(t);
  snprintf(want, sizeof want, "'%s' is truncated: expected 2 dimension sizes", p);
  ck_assert_str_eq(err, want);

  /* float32 data cut mid-element */
  unsigned char f[6] = {0x3f, 0x80, 0, 0, 0x3f, 0x80};
  uint32_t d2[1] = {2};
  write_bytes(p, img, idx_image(img, 0x0D, 1, d2, f, 6), 0);
  t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_ptr_null(t);
  snprintf(want, sizeof want, "'%s' is truncated: expected 8 data bytes, got 6", p);
  ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(idx_bad_header) {
  const char *p = path_of("bad.idx");
  unsigned char img[16] = {'P', 'K', 3, 4, 0, 0, 0, 1, 0};
  write_bytes(p, img, 9, 0);
  blo_tensor *t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_ptr_null(t);
  char want[600];
  snprintf(want, sizeof want, "'%s' is not an IDX file (magic 0x504b0304)", p);
  ck_assert_str_eq(err, want);

  unsigned char img2[9] = {0, 0, 0x07, 1, 0, 0, 0, 1, 0};
  write_bytes(p, img2, 9, 0);
  t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_ptr_null(t);
  snprintf(want, sizeof want, "'%s': unknown IDX data type 0x07", p);
  ck_assert_str_eq(err, want);

  unsigned char img3[4] = {0, 0, 0x08, 7};
  write_bytes(p, img3, 4, 0);
  t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_ptr_null(t);
  snprintf(want, sizeof want, "'%s': IDX file has 7 dimensions (1 to 6 are supported)", p);
  ck_assert_str_eq(err, want);

  unsigned char img4[2] = {0, 0};
  write_bytes(p, img4, 2, 0);
  t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_ptr_null(t);
  snprintf(want, sizeof want, "'%s' is truncated: expected a 4-byte IDX header, got 2 bytes", p);
  ck_assert_str_eq(err, want);

  /* extra bytes after the data */
  unsigned char img5[12] = {0, 0, 0x08, 1, 0, 0, 0, 2, 1, 2, 3};
  write_bytes(p, img5, 11, 0);
  t = io_load_idx(&ctx, p, err, sizeof err);
  ck_assert_ptr_null(t);
  snprintf(want, sizeof want, "'%s' has more data than its dimensions [2] announce", p);
  ck_assert_str_eq(err, want);

  const char *missing = path_of("missing.idx");
  t = io_load_idx(&ctx, missing, err, sizeof err);
  ck_assert_ptr_null(t);
  snprintf(want, sizeof want, "cannot open '%s': No such file or directory", missing);
  ck_assert_str_eq(err, want);
}
END_TEST

/* Nothing leaks: all tensors released, the pool holds whatever remains. */
START_TEST(io_no_tensor_leak_on_errors) {
  const char *p = path_of("short.idx");
  unsigned char img[64], payload[3] = {1, 2, 3};
  uint32_t dims[1] = {100};
  write_bytes(p, img, idx_image(img, 0x08, 1, dims, payload, 3), 0);
  for (int i = 0; i < 10; i++) ck_assert_ptr_null(io_load_idx(&ctx, p, err, sizeof err));
  const char *c = path_of("bad.csv");
  write_text(c, "1,2\n3\n");
  for (int i = 0; i < 10; i++) ck_assert_ptr_null(io_load_csv(&ctx, c, 0, NULL, 0, NULL, NULL, err, sizeof err));
  tn_ctx_trim(&ctx);
  ck_assert_uint_eq(ctx.mem_used, 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("io");
  TCase *tc = tcase_create("io");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, csv_roundtrip_exact);
  tcase_add_test(tc, csv_vector_and_scalar);
  tcase_add_test(tc, csv_header_and_cols);
  tcase_add_test(tc, csv_cols_skip_text_columns);
  tcase_add_test(tc, csv_save_header_roundtrip);
  tcase_add_test(tc, csv_wrong_field_count);
  tcase_add_test(tc, csv_not_a_number);
  tcase_add_test(tc, csv_missing_file);
  tcase_add_test(tc, csv_empty_and_header_only);
  tcase_add_test(tc, csv_utf8_bom);
  tcase_add_test(tc, csv_special_numbers);
  tcase_add_test(tc, idx_ubyte_plain);
  tcase_add_test(tc, idx_ubyte_gzip);
  tcase_add_test(tc, idx_mnist_like_large_gzip);
  tcase_add_test(tc, idx_types);
  tcase_add_test(tc, idx_truncated);
  tcase_add_test(tc, idx_bad_header);
  tcase_add_test(tc, io_no_tensor_leak_on_errors);
  suite_add_tcase(s, tc);
  return check_run(s, "test_io", CK_NOFORK);
}
