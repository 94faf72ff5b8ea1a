/* test_plot.c: unit tests of the plot builtin (stdlib/plot.c).
 *
 * Each test runs a script through the public API, reads the written PNG back
 * with cairo and checks what a reader would see: the size, and pixels of each
 * series' palette colour where the data puts them.  Files go to a fresh
 * mkdtemp directory. */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include <check.h>

#include "check_run.h"
#include "scratch_dir.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blo.h"

#ifdef HAVE_CAIRO
#include <cairo.h>
#endif



static void setup(void) {
  scratch_make("test_plot");
}

static void teardown(void) {
  scratch_remove();
}

/* Runs src with "@" replaced by the test directory; returns the status. */
static int run(blo_state *S, const char *src) {
  char buf[4096];
  size_t n = 0;
  for (const char *p = src; *p && n + 300 < sizeof buf; p++) {
    if (*p == '@') n += (size_t)snprintf(buf + n, sizeof buf - n, "%s", dir);
    else buf[n++] = *p;
  }
  buf[n] = 0;
  return blo_eval_string(S, "test", buf, n);
}

static blo_state *open_state(int allow_files) {
  blo_config cfg;
  blo_config_defaults(&cfg);
  cfg.allow_files = allow_files;
  blo_state *S = blo_open(&cfg);
  ck_assert_ptr_nonnull(S);
  return S;
}

static void run_ok(const char *src) {
  blo_state *S = open_state(1);
  int rc = run(S, src);
  ck_assert_msg(rc == BLO_OK, "script failed: %s", blo_last_error(S)->message);
  blo_close(S);
}

/* The error message of a script that must fail. */
static void run_fails(const char *src, const char *want, int allow_files) {
  blo_state *S = open_state(allow_files);
  int rc = run(S, src);
  ck_assert_int_eq(rc, BLO_ERROR_RUNTIME);
  const blo_error *e = blo_last_error(S);
  ck_assert_msg(strstr(e->message, want) != NULL, "message '%s' lacks '%s'", e->message, want);
  ck_assert_int_eq(e->line, 1);
  ck_assert_int_gt(e->col, 0);
  blo_close(S);
}

static int file_starts_with(const char *path, const char *prefix) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  char buf[64] = {0};
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  return n >= strlen(prefix) && memcmp(buf, prefix, strlen(prefix)) == 0;
}

#ifdef HAVE_CAIRO

typedef struct img {
  cairo_surface_t *s;
  int w, h, stride;
  unsigned char *d;
} img;

static img load_png(const char *path) {
  img im;
  im.s = cairo_image_surface_create_from_png(path);
  ck_assert_int_eq(cairo_surface_status(im.s), CAIRO_STATUS_SUCCESS);
  cairo_surface_flush(im.s);
  im.w = cairo_image_surface_get_width(im.s);
  im.h = cairo_image_surface_get_height(im.s);
  im.stride = cairo_image_surface_get_stride(im.s);
  im.d = cairo_image_surface_get_data(im.s);
  return im;
}

static void rgb_at(const img *im, int x, int y, int *r, int *g, int *b) {
  uint32_t px;
  memcpy(&px, im->d + (size_t)y * (size_t)im->stride + (size_t)x * 4, 4);
  *r = (px >> 16) & 0xff;
  *g = (px >> 8) & 0xff;
  *b = px & 0xff;
}

static int is_color(const img *im, int x, int y, unsigned hex) {
  int r, g, b;
  rgb_at(im, x, y, &r, &g, &b);
  int R = (hex >> 16) & 0xff, G = (hex >> 8) & 0xff, B = hex & 0xff;
  return abs(r - R) <= 6 && abs(g - G) <= 6 && abs(b - B) <= 6;
}

/* Statistics of the pixels of one colour: count, mean position, and per
 * column the mean row (NAN where the column has none). */
typedef struct cstats {
  long count;
  double mx, my;
  int xmin, xmax, ymin, ymax;
  double *col_row;
} cstats;

static cstats color_stats(const img *im, unsigned hex) {
  cstats c = {0, 0, 0, im->w, -1, im->h, -1, NULL};
  c.col_row = malloc(sizeof(double) * (size_t)im->w);
  ck_assert_ptr_nonnull(c.col_row);
  for (int x = 0; x < im->w; x++) {
    double sum = 0;
    int n = 0;
    for (int y = 0; y < im->h; y++)
      if (is_color(im, x, y, hex)) {
        c.count++;
        c.mx += x;
        c.my += y;
        sum += y;
        n++;
        if (x < c.xmin) c.xmin = x;
        if (x > c.xmax) c.xmax = x;
        if (y < c.ymin) c.ymin = y;
        if (y > c.ymax) c.ymax = y;
      }
    c.col_row[x] = n ? sum / n : NAN;
  }
  if (c.count) {
    c.mx /= (double)c.count;
    c.my /= (double)c.count;
  }
  return c;
}

enum { BLUE = 0x0072B2, VERMILLION = 0xD55E00, GREEN = 0x009E73 };

/* Two line series on linear axes: the rising line y = x is blue (first
 * palette colour), the constant y = 5 is vermillion; they cross mid-plot. */
START_TEST(png_lines_at_expected_places) {
  run_ok("let x = linspace(0, 10, 101)\n"
         "plot(\"@/lines.png\", x = x, y = [x, x * 0 + 5], legend = false, width = 640, height = 400,"
         " xlabel = \"x\", ylabel = \"y\", title = \"two lines\")\n");
  img im = load_png(path_of("lines.png"));
  ck_assert_int_eq(im.w, 640);
  ck_assert_int_eq(im.h, 400);
  cstats b = color_stats(&im, BLUE), v = color_stats(&im, VERMILLION);
  ck_assert_int_gt(b.count, 500);
  ck_assert_int_gt(v.count, 500);
  /* both span most of the width, over the same columns */
  ck_assert_int_gt(v.xmax - v.xmin, 640 * 7 / 10);
  ck_assert_int_le(abs(b.xmin - v.xmin), 3);
  ck_assert_int_le(abs(b.xmax - v.xmax), 3);
  /* the constant series is one horizontal band */
  ck_assert_int_le(v.ymax - v.ymin, 4);
  /* the rising series climbs: rows decrease from left to right, linearly */
  int q1 = b.xmin + (b.xmax - b.xmin) / 4, q3 = b.xmax - (b.xmax - b.xmin) / 4;
  double r0 = b.col_row[b.xmin + 3], r1 = b.col_row[b.xmax - 3], rq1 = b.col_row[q1], rq3 = b.col_row[q3];
  ck_assert(r0 - r1 > 200);
  ck_assert(fabs(rq1 - (0.75 * r0 + 0.25 * r1)) < 3);
  ck_assert(fabs(rq3 - (0.25 * r0 + 0.75 * r1)) < 3);
  /* they cross in the middle: the blue line reaches the vermillion row at the mid column */
  double cross = q1 + (v.my - rq1) * (q3 - q1) / (rq3 - rq1);
  ck_assert_msg(fabs(cross - (b.xmin + b.xmax) / 2.0) < 3, "cross at %g", cross);
  free(b.col_row);
  free(v.col_row);
  cairo_surface_destroy(im.s);
}
END_TEST

/* A log y axis turns y = 10^x into a straight line. */
START_TEST(png_log_axis_straightens_exponential) {
  run_ok("let x = linspace(0, 5, 51)\n"
         "plot(\"@/log.png\", x = x, y = 10^x, logy = true, legend = false)\n");
  img im = load_png(path_of("log.png"));
  ck_assert_int_eq(im.w, 800);
  ck_assert_int_eq(im.h, 500);
  cstats b = color_stats(&im, BLUE);
  ck_assert_int_gt(b.count, 500);
  /* least-squares line through the column means; residuals stay within 2 px */
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  int n = 0;
  for (int x = b.xmin + 3; x <= b.xmax - 3; x++) {
    if (isnan(b.col_row[x])) continue;
    sx += x;
    sy += b.col_row[x];
    sxx += (double)x * x;
    sxy += x * b.col_row[x];
    n++;
  }
  ck_assert_int_gt(n, 400);
  double slope = (n * sxy - sx * sy) / (n * sxx - sx * sx), icpt = (sy - slope * sx) / n;
  ck_assert(slope < -0.3);
  for (int x = b.xmin + 3; x <= b.xmax - 3; x++)
    if (!isnan(b.col_row[x])) ck_assert_msg(fabs(b.col_row[x] - (icpt + slope * x)) < 2.0, "column %d", x);
  free(b.col_row);
  cairo_surface_destroy(im.s);
}
END_TEST

/* Per-point colours: class 0 (blue) on the left, class 1 (vermillion) on
 * the right; a line series from `series` is green (the next free colour). */
START_TEST(png_scatter_point_colors_and_series) {
  run_ok("seed(3)\n"
         "let x = concat(rand(40), rand(40) + 9)\n"
         "let y = rand(80)\n"
         "let c = concat(zeros(40), ones(40))\n"
         "plot(\"@/scatter.png\", series = [{x = x, y = y, kind = \"scatter\", color = c,"
         " classes = [\"left\", \"right\"]}, {x = [0, 10], y = [0.5, 0.5], label = \"boundary\"}])\n");
  img im = load_png(path_of("scatter.png"));
  cstats b = color_stats(&im, BLUE), v = color_stats(&im, VERMILLION), g = color_stats(&im, GREEN);
  ck_assert_int_gt(b.count, 200);
  ck_assert_int_gt(v.count, 200);
  ck_assert_int_gt(g.count, 200);
  /* the legend adds a few markers of each class colour; the bulk is the data */
  ck_assert(b.mx < im.w * 0.45);
  ck_assert(v.mx > im.w * 0.55);
  free(b.col_row);
  free(v.col_row);
  free(g.col_row);
  cairo_surface_destroy(im.s);
}
END_TEST

/* An image grid: a 2x2 checkerboard scaled up shows black and white in equal parts. */
START_TEST(png_image_grid) {
  run_ok("plot(\"@/img.png\", images = [[[0, 1], [1, 0]], [[1, 0], [0, 1]]], labels = [\"a\", \"b\"],"
         " width = 400, height = 300)\n");
  img im = load_png(path_of("img.png"));
  ck_assert_int_eq(im.w, 400);
  ck_assert_int_eq(im.h, 300);
  long black = 0, white_in_cells = 0;
  cstats k = color_stats(&im, 0x000000);
  black = k.count;
  /* white pixels inside the bounding box of the black ones are image cells */
  for (int y = k.ymin; y <= k.ymax; y++)
    for (int x = k.xmin; x <= k.xmax; x++)
      if (is_color(&im, x, y, 0xFFFFFF)) white_in_cells++;
  ck_assert_int_gt(black, 5000);
  ck_assert(fabs((double)black - (double)white_in_cells) < 0.2 * (double)black);
  free(k.col_row);
  cairo_surface_destroy(im.s);
}
END_TEST

START_TEST(svg_and_pdf_written) {
  run_ok("plot(\"@/f.svg\", y = [1, 3, 2], labels = \"s\", title = \"svg\")\n"
         "plot(\"@/f.pdf\", y = [[1, 3, 2], [2, 2, 1]], kind = \"scatter\", logy = true)\n"
         "plot(\"@/F.PNG\", y = [1, 2])\n");
  ck_assert(file_starts_with(path_of("f.svg"), "<?xml"));
  ck_assert(file_starts_with(path_of("f.pdf"), "%PDF"));
  ck_assert(file_starts_with(path_of("F.PNG"), "\x89PNG"));
  FILE *f = fopen(path_of("f.svg"), "rb");
  ck_assert_ptr_nonnull(f);
  char buf[4096] = {0};
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  ck_assert(n > 100);
  ck_assert_ptr_nonnull(strstr(buf, "<svg"));
  ck_assert_ptr_nonnull(strstr(buf, "width=\"800"));
}
END_TEST

START_TEST(errors_are_located) {
  run_fails("plot(\"@/a.jpg\", y = [1, 2])", "plot: cannot tell the format of", 1);
  run_fails("plot(\"@/a.png\", y = [1, 2])", "plot: file access is disabled by the host", 0);
  run_fails("plot(\"@/a.png\", x = [1, 2, 3], y = [1, 2])", "plot: x has 3 values but y has 2", 1);
  run_fails("plot(\"@/a.png\", y = [1, 2], kind = \"bars\")", "plot: kind must be one of", 1);
  run_fails("plot(\"@/a.png\", y = [1, 2], colour = 1)", "unknown named argument 'colour'", 1);
  run_fails("plot(\"@/a.png\", y = [1, 2], color = \"mauve\")", "plot: color: expected", 1);
  run_fails("plot(\"@/a.png\")", "plot: nothing to draw", 1);
  run_fails("plot(\"@/a.png\", y = [1, 2], ylim = [0, 1], logy = true)", "lo > 0", 1);
  run_fails("plot(\"@/no/such/dir/a.png\", y = [1, 2])", "No such file or directory", 1);
  run_fails("plot(\"@/a.png\", series = [{x = [1], y = [1], colr = 2}])", "unknown field 'colr'", 1);
  /* nothing was left behind by the failed calls */
  ck_assert_int_ne(access(path_of("a.png"), F_OK), 0);
}
END_TEST

/* Degenerate data draws without trouble: one point, constant data, NaNs,
 * non-positive values on a log axis, empty series. */
START_TEST(degenerate_data) {
  run_ok("plot(\"@/d1.png\", y = 3)\n"
         "plot(\"@/d2.png\", y = [2, 2, 2])\n"
         "plot(\"@/d3.png\", y = [1, 0 / 0, 3], logy = true)\n"
         "plot(\"@/d4.png\", y = [-1, 0, 1], logy = true)\n"
         "plot(\"@/d5.png\", series = [{x = [], y = []}])\n"
         "plot(\"@/d6.png\", x = [1e6, 2e6], y = [1e-7, 3e-7], width = 100, height = 100)\n");
  for (int i = 1; i <= 6; i++) {
    char name[16];
    snprintf(name, sizeof name, "d%d.png", i);
    ck_assert_msg(file_starts_with(path_of(name), "\x89PNG"), "%s", name);
  }
}
END_TEST

/* The figure hook hears of every figure written, with its path and format,
 * in order, and of nothing when plot fails or after it is removed. */
typedef struct { int n; char path[4][512]; char fmt[4][8]; } figs_seen;

static void on_figure(void *ud, const char *path, const char *format) {
  figs_seen *f = ud;
  if (f->n < 4) {
    snprintf(f->path[f->n], sizeof f->path[0], "%s", path);
    snprintf(f->fmt[f->n], sizeof f->fmt[0], "%s", format);
  }
  f->n++;
}

START_TEST(figure_hook_sees_each_figure) {
  blo_state *S = open_state(1);
  figs_seen f;
  memset(&f, 0, sizeof f);
  blo_set_figure_hook(S, on_figure, &f);
  ck_assert_int_eq(run(S, "plot(\"@/h1.png\", y = [1, 2])\nplot(\"@/h2.SVG\", y = [1, 2])\n"
                          "plot(\"@/h3.pdf\", y = [1, 2])"), BLO_OK);
  ck_assert_int_eq(f.n, 3);
  ck_assert_str_eq(f.path[0], path_of("h1.png"));
  ck_assert_str_eq(f.fmt[0], "png");
  ck_assert_str_eq(f.path[1], path_of("h2.SVG"));
  ck_assert_str_eq(f.fmt[1], "svg");
  ck_assert_str_eq(f.fmt[2], "pdf");
  ck_assert(file_starts_with(f.path[0], "\x89PNG"));
  /* a failed plot (bad option, unwritable path) calls nothing */
  ck_assert_int_eq(run(S, "plot(\"@/h4.png\", y = [1, 2], nonsense = 1)"), BLO_ERROR_RUNTIME);
  ck_assert_int_eq(run(S, "plot(\"@/no/such/dir/h5.png\", y = [1, 2])"), BLO_ERROR_RUNTIME);
  ck_assert_int_eq(f.n, 3);
  blo_set_figure_hook(S, NULL, NULL);
  ck_assert_int_eq(run(S, "plot(\"@/h6.png\", y = [1, 2])"), BLO_OK);
  ck_assert_int_eq(f.n, 3);
  blo_set_figure_hook(NULL, on_figure, &f);   /* ignored */
  blo_close(S);
}
END_TEST

/* Reads the vector at path (at most 64 values); returns its length. */
static size_t vec(blo_state *S, const char *path, double *v) {
  int rank;
  size_t shape[6];
  ck_assert_int_eq(blo_get_shape(S, path, &rank, shape), BLO_OK);
  ck_assert_int_eq(rank, 1);
  ck_assert_uint_le(shape[0], 64);
  ck_assert_int_eq(blo_get_tensor(S, path, v, 64), BLO_OK);
  return shape[0];
}

/* Labelled ticks inside the axis, and reaching near both ends: neither end
 * has a quarter of the axis (in axis space) without a label. */
static void check_axis(blo_state *S, const char *lim, const char *ticks, int log) {
  double l[64], t[64];
  ck_assert_uint_eq(vec(S, lim, l), 2);
  size_t n = vec(S, ticks, t);
  ck_assert_uint_ge(n, 2);
  double a = log ? log10(l[0]) : l[0], b = log ? log10(l[1]) : l[1];
  for (size_t i = 0; i < n; i++) {
    ck_assert(t[i] >= l[0] && t[i] <= l[1]);
    if (i) ck_assert(t[i] > t[i - 1]);
  }
  double t0 = log ? log10(t[0]) : t[0], t1 = log ? log10(t[n - 1]) : t[n - 1];
  ck_assert_msg(t0 - a <= 0.25 * (b - a), "%s: no label in the lowest quarter (first at %g, axis from %g)", ticks,
                t[0], l[0]);
  ck_assert_msg(b - t1 <= 0.25 * (b - a), "%s: no label in the highest quarter (last at %g, axis to %g)", ticks,
                t[n - 1], l[1]);
}

/* plot(..., info = true) returns the axes drawn.  Log axes spanning less
 * than two decades, or two to three, are labelled near both ends (a loss
 * curve from 2.7 down to 0.22 used to be labelled 0.5, 1, 2 only), and the
 * ranges hold every point without running far beyond the data. */
START_TEST(info_axes_cover_the_data) {
  blo_state *S = open_state(1);
  static const char *const cases[] = {
    "[2.7, 0.6, 0.35, 0.3, 0.25, 0.24, 0.23, 0.22]", "[0.05, 0.4, 3]", "[0.011, 0.5, 0.9]",
    "[1.2, 1.9]", "[3e-5, 2e-2]", "[7, 70, 700, 7000, 7e4, 7e5]", NULL};
  for (int i = 0; cases[i]; i++) {
    char src[512];
    snprintf(src, sizeof src,
             "let y = %s\nlet r = plot(\"@/i%d.png\", x = 0..len(y), y = y, logy = true, info = true)", cases[i], i);
    ck_assert_msg(run(S, src) == BLO_OK, "%s", blo_last_error(S)->message);
    check_axis(S, "r.ylim", "r.yticks", 1);
    check_axis(S, "r.xlim", "r.xticks", 0);
    double y[64], l[64];
    size_t n = vec(S, "y", y);
    vec(S, "r.ylim", l);
    double lo = INFINITY, hi = -INFINITY;
    for (size_t k = 0; k < n; k++) {
      ck_assert(y[k] >= l[0] && y[k] <= l[1]);   /* every point inside */
      lo = fmin(lo, y[k]);
      hi = fmax(hi, y[k]);
    }
    /* and the padding is small: 4% of the data's span in axis space each side */
    double span = log10(hi) - log10(lo);
    ck_assert_double_eq_tol(log10(lo) - log10(l[0]), 0.04 * span, 1e-9);
    ck_assert_double_eq_tol(log10(l[1]) - log10(hi), 0.04 * span, 1e-9);
  }
  /* linear axes too; labels are the values as written */
  ck_assert_int_eq(run(S, "let r = plot(\"@/lin.png\", x = [0, 1], y = [-0.3, 0.7], info = true)"), BLO_OK);
  check_axis(S, "r.ylim", "r.yticks", 0);
  double t[64];
  size_t n = vec(S, "r.yticks", t);
  for (size_t k = 0; k < n; k++) ck_assert_double_eq(t[k] * 10, round(t[k] * 10));   /* 0.1 steps, exact */
  /* an image grid has no data axes; without info plot returns nothing */
  ck_assert_int_eq(run(S, "let g = plot(\"@/img.png\", images = [eye(3)], info = true)\n"
                          "let none = plot(\"@/plain.png\", y = [1, 2])"), BLO_OK);
  size_t len = 99;
  ck_assert_int_eq(blo_length(S, "g.xticks", &len), BLO_OK);
  ck_assert_uint_eq(len, 0);
  blo_kind k;
  ck_assert_int_eq(blo_kind_of(S, "none", &k), BLO_OK);
  ck_assert_int_eq(k, BLO_NIL);
  ck_assert_int_eq(run(S, "plot(\"@/bad.png\", y = [1, 2], info = \"yes\")"), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "info"));
  blo_close(S);
}
END_TEST

/* equal = true keeps the ranges asked for (or the data's) and shrinks the
 * plot area instead: a ROC plot on [0, 1] x [0, 1] in a wide figure used to
 * get an x axis from -0.25 to 1.25.  The diagonal y = x then spans as many
 * pixels across as down. */
START_TEST(equal_aspect_keeps_the_ranges) {
  blo_state *S = open_state(1);
  ck_assert_int_eq(run(S, "let r = plot(\"@/eq.png\", x = [0, 1], y = [0, 1], xlim = [0, 1], ylim = [0, 1],"
                          " equal = true, width = 900, height = 500, legend = false, grid = false, info = true)\n"
                          "let d = plot(\"@/eq2.png\", x = [0, 4], y = [0, 1], equal = true, legend = false, info = true)"),
                   BLO_OK);
  double l[64];
  ck_assert_uint_eq(vec(S, "r.xlim", l), 2);
  ck_assert_double_eq(l[0], 0);
  ck_assert_double_eq(l[1], 1);
  ck_assert_uint_eq(vec(S, "r.ylim", l), 2);
  ck_assert_double_eq(l[0], 0);
  ck_assert_double_eq(l[1], 1);
  check_axis(S, "r.xlim", "r.xticks", 0);
  check_axis(S, "r.ylim", "r.yticks", 0);
  /* without limits: the data range plus 4% on each axis, not more */
  ck_assert_uint_eq(vec(S, "d.xlim", l), 2);
  ck_assert_double_eq_tol(l[0], -0.16, 1e-12);
  ck_assert_double_eq_tol(l[1], 4.16, 1e-12);
  ck_assert_uint_eq(vec(S, "d.ylim", l), 2);
  ck_assert_double_eq_tol(l[0], -0.04, 1e-12);
  ck_assert_double_eq_tol(l[1], 1.04, 1e-12);
  img im = load_png(path_of("eq.png"));
  cstats b = color_stats(&im, BLUE);
  ck_assert_int_gt(b.count, 300);
  int dx = b.xmax - b.xmin, dy = b.ymax - b.ymin;
  ck_assert_msg(abs(dx - dy) <= 3, "diagonal spans %d x %d pixels", dx, dy);
  ck_assert_int_gt(dy, 500 / 2);
  free(b.col_row);
  cairo_surface_destroy(im.s);
  blo_close(S);
}
END_TEST

/* An image grid shares one colour scale, shown by a colour bar: two constant
 * images 0 and 1 take the two ends of viridis (each image on its own scale,
 * both would be the middle colour, and a reader could not tell them apart).
 * The bar runs from the low colour at the bottom to the high one at the top. */
enum { VIR0 = 0x440154, VIR25 = 0x3b528b, VIR50 = 0x21918c, VIR100 = 0xfde725 };
START_TEST(image_grid_colour_scale) {
  blo_state *S = open_state(1);
  ck_assert_int_eq(run(S, "let Z = [zeros(10, 10), ones(10, 10)]\n"
                          "let r = plot(\"@/cs.png\", images = Z, cmap = \"viridis\", ncols = 2, info = true)\n"
                          "let e = plot(\"@/each.png\", images = Z, cmap = \"viridis\", ncols = 2, range = \"each\", info = true)\n"
                          "let f = plot(\"@/fixed.png\", images = Z, cmap = \"viridis\", ncols = 2, range = [-1, 3], info = true)\n"
                          "let d = plot(\"@/div.png\", images = [Z[0] - 2, Z[1] * 0.5], cmap = \"diverging\", info = true)\n"
                          "let p = plot(\"@/plain2.png\", y = [1, 2], info = true)"),
                   BLO_OK);
  double l[64];
  ck_assert_uint_eq(vec(S, "r.crange", l), 2);
  ck_assert_double_eq(l[0], 0);
  ck_assert_double_eq(l[1], 1);
  check_axis(S, "r.crange", "r.cticks", 0);
  ck_assert_uint_eq(vec(S, "f.crange", l), 2);
  ck_assert_double_eq(l[0], -1);
  ck_assert_double_eq(l[1], 3);
  check_axis(S, "f.crange", "f.cticks", 0);
  ck_assert_uint_eq(vec(S, "d.crange", l), 2);   /* diverging: symmetric about 0 */
  ck_assert_double_eq(l[0], -2);
  ck_assert_double_eq(l[1], 2);
  size_t len = 99;
  ck_assert_int_eq(blo_length(S, "e.crange", &len), BLO_OK);
  ck_assert_uint_eq(len, 0);
  ck_assert_int_eq(blo_length(S, "p.cticks", &len), BLO_OK);
  ck_assert_uint_eq(len, 0);

  img im = load_png(path_of("cs.png"));
  cstats lo = color_stats(&im, VIR0), hi = color_stats(&im, VIR100);
  ck_assert_int_gt(lo.count, 50000);
  ck_assert_int_gt(hi.count, 50000);
  ck_assert_int_lt(lo.mx, hi.mx);                 /* image 0 left of image 1 */
  /* the bar: right of both images, low colour below the high one */
  ck_assert_int_gt(lo.xmax, hi.xmax - 1);
  int bx = lo.xmax - 2;
  ck_assert(isfinite(lo.col_row[bx]) && isfinite(hi.col_row[bx]));
  ck_assert(lo.col_row[bx] > hi.col_row[bx] + 100);
  free(lo.col_row);
  free(hi.col_row);
  cairo_surface_destroy(im.s);

  im = load_png(path_of("each.png"));
  cstats mid = color_stats(&im, VIR50);
  lo = color_stats(&im, VIR0);
  ck_assert_int_gt(mid.count, 100000);
  ck_assert_int_lt(lo.count, 50);
  free(mid.col_row);
  free(lo.col_row);
  cairo_surface_destroy(im.s);

  im = load_png(path_of("fixed.png"));
  cstats q = color_stats(&im, VIR25);             /* 0 on [-1, 3] is a quarter up */
  ck_assert_int_gt(q.count, 50000);
  free(q.col_row);
  cairo_surface_destroy(im.s);

  ck_assert_int_eq(run(S, "plot(\"@/bad.png\", images = [eye(2)], range = \"all\")"), BLO_ERROR_RUNTIME);
  ck_assert_ptr_nonnull(strstr(blo_last_error(S)->message, "\"each\""));
  blo_close(S);
}
END_TEST

/* Points outside an explicit xlim/ylim are not drawn: plot counts them in
 * info (hidden) and warns at the call, naming the first such series; a
 * line's point whose segment crosses the plot area is partly drawn and
 * not counted. */
static char warned[1024];
static void on_warn(void *ud, const char *text) {
  (void)ud;
  snprintf(warned + strlen(warned), sizeof warned - strlen(warned), "%s", text);
}

START_TEST(points_outside_the_limits_are_reported) {
  blo_config cfg;
  blo_config_defaults(&cfg);
  cfg.error_fn = on_warn;
  blo_state *S = blo_open(&cfg);
  ck_assert_ptr_nonnull(S);
  warned[0] = 0;
  ck_assert_int_eq(run(S, "let r = plot(\"@/h.png\", series = [{x = [0, 1, 5, 6], y = [0, 1, 2, 0], label = \"far\"},"
                          " {x = [0.5], y = [-3], kind = \"scatter\", label = \"low\"}, {x = [1], y = [1]},"
                          " {x = [0.5, 0.5], y = [-9, 9], label = \"rule\"}],"
                          " xlim = [0, 2], ylim = [-1, 3], info = true)"),
                   BLO_OK);
  double h;
  ck_assert_int_eq(blo_get_number(S, "r.hidden", &h), BLO_OK);
  /* "far": (5, 2) ends the segment from (1, 1), drawn up to the limit, but
   * (6, 0) ends only segments outside the plot; "low" (a scatter) at y = -3;
   * "rule" runs past both limits yet crosses the plot area: drawn */
  ck_assert_double_eq(h, 2);
  ck_assert_str_eq(warned, "test:1:9: warning: plot: 2 points of 2 series (first: 'far') outside xlim/ylim, not drawn\n");
  /* without limits the range holds every point: nothing hidden, no warning */
  warned[0] = 0;
  ck_assert_int_eq(run(S, "let q = plot(\"@/h2.png\", x = [0, 1, 5], y = [0, 1, -3], info = true)"), BLO_OK);
  ck_assert_int_eq(blo_get_number(S, "q.hidden", &h), BLO_OK);
  ck_assert_double_eq(h, 0);
  ck_assert_str_eq(warned, "");
  blo_close(S);
}
END_TEST

#else

START_TEST(without_cairo_reports) {
  run_fails("plot(\"@/a.png\", y = [1, 2])", "built without cairo", 1);
}
END_TEST

#endif

int main(void) {
  Suite *s = suite_create("plot");
  TCase *tc = tcase_create("plot");
  tcase_set_timeout(tc, 60);
  tcase_add_checked_fixture(tc, setup, teardown);
#ifdef HAVE_CAIRO
  tcase_add_test(tc, png_lines_at_expected_places);
  tcase_add_test(tc, png_log_axis_straightens_exponential);
  tcase_add_test(tc, png_scatter_point_colors_and_series);
  tcase_add_test(tc, png_image_grid);
  tcase_add_test(tc, svg_and_pdf_written);
  tcase_add_test(tc, errors_are_located);
  tcase_add_test(tc, degenerate_data);
  tcase_add_test(tc, figure_hook_sees_each_figure);
  tcase_add_test(tc, info_axes_cover_the_data);
  tcase_add_test(tc, equal_aspect_keeps_the_ranges);
  tcase_add_test(tc, image_grid_colour_scale);
  tcase_add_test(tc, points_outside_the_limits_are_reported);
#else
  tcase_add_test(tc, without_cairo_reports);
#endif
  suite_add_tcase(s, tc);
  return check_run(s, "test_plot", CK_NOFORK);
}
