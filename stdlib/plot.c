/* plot.c: the plot builtin, one call per figure, written through cairo as
 * PNG, SVG or PDF (chosen by the file extension).
 *
 *   plot("norms.png", x = Ks, y = [nw, nl], labels = ["a", "b"], xlabel = "K",
 *        logy = true)
 *
 * Series come from x/y (y a vector, a matrix whose rows are series, or a list
 * of vectors) and/or from `series`, a list of records {x, y, kind, label,
 * color, ...} for mixed figures.  `images` draws a grid of matrices instead.
 *
 * Layout rules, so that a figure needs no tweaking: fonts scale with the
 * figure (13 px tick labels at 800x500), colours come from the Okabe-Ito
 * colour-blind-safe palette, ticks are 1-2-5 steps (decades on log axes) and
 * are thinned until their labels do not overlap, and the legend goes to the
 * inside corner that covers the least data, or outside on the right when
 * every corner would cover some.
 *
 * Errors go through interp_error with the call's location; nothing is
 * printed.  Everything allocated here is freed on every path. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "config.h"
#include "interp.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#define PI 3.14159265358979323846

#ifdef HAVE_CAIRO
#include <cairo.h>
#if CAIRO_HAS_SVG_SURFACE
#include <cairo-svg.h>
#endif
#if CAIRO_HAS_PDF_SURFACE
#include <cairo-pdf.h>
#endif
#endif

const builtin_def *plot_builtin_find(const char *name);
const builtin_def *plot_builtin_at(size_t i);

static int perr(blo_state *S, callargs *a, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int perr(blo_state *S, callargs *a, const char *fmt, ...) {
  char buf[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return interp_error(S, a->call, "plot: %s", buf);
}

#ifndef HAVE_CAIRO

static int bi_plot(blo_state *S, callargs *a, value *out) {
  (void)out;
  return perr(S, a, "this blo was built without cairo; install libcairo2-dev and re-run ./configure");
}

#else

/* ======================================================================
 * figure description
 * ====================================================================== */

typedef struct rgb { double r, g, b; } rgb;

enum { K_LINE, K_SCATTER, K_BOTH };
enum { M_CIRCLE, M_SQUARE, M_TRIANGLE, M_DIAMOND, M_STAR, M_CROSS, M_PLUS };
enum { D_SOLID, D_DASHED, D_DOTTED, D_DASHDOT };
enum { L_AUTO, L_NONE, L_OUTSIDE, L_UR, L_UL, L_LR, L_LL };  /* legend placement */
enum { CM_GRAY, CM_GRAY_R, CM_VIRIDIS, CM_DIVERGING };
enum { LG_INSIDE, LG_RIGHT, LG_BELOW };

typedef struct series {
  double *x, *y;          /* n points (owned) */
  size_t n;
  int kind, marker, dash;
  const char *label;      /* borrowed from the arguments; NULL: not in the legend */
  int has_color;
  rgb color;
  double *cval;           /* per-point colour values (owned) or NULL */
  int cat;                /* cval holds small non-negative integers: palette classes */
  double cmin, cmax;      /* range of cval for the continuous map */
  const char **classes;   /* legend names of the classes (owned array of borrowed strings) */
  int nclasses;
  double alpha, size;
} series;

typedef struct image {
  double *d;              /* h * w values (owned) */
  size_t h, w;
  const char *label;      /* borrowed or NULL */
  char num[32];           /* label text when the label was a number */
} image;

typedef struct tick {
  double v;               /* position in axis space (log10 of the value on a log axis) */
  char txt[48], sup[16];  /* label; sup is a superscript drawn after txt (10^k) */
} tick;

#define MAX_TICKS 64
typedef struct axis {
  int log;
  double lo, hi;          /* range in axis space */
  double dlo, dhi;        /* range before the equal-aspect adjustment */
  int has_lim;
  tick t[MAX_TICKS];
  int nt;
  double minor[4 * MAX_TICKS];
  int nminor;
  int mult;               /* labels are multiples of 10^mult (0: none) */
} axis;

typedef struct legend_entry {
  const char *text;
  rgb color;
  int kind, marker, dash;
  double alpha, size;
} legend_entry;

typedef struct fig {
  int w, h;
  double s;               /* scale of fonts, lines and paddings (1 at 800x500) */
  const char *title, *xlabel, *ylabel;
  axis ax, ay;
  int equal, grid, legend;
  series *sv;
  int ns, scap;
  image *im;
  int nim, ncols, cmap, has_range;
  double range[2];
  int each;               /* range = "each": every image its own scale, no colour bar */
  axis ac;                /* the colour bar's scale (an image grid with a common scale) */
  int has_cbar;
  long hidden;            /* drawable points outside an explicit xlim/ylim */
  legend_entry *le;
  int nle;
  /* layout (pixels; py0 is the top of the plot area) */
  double px0, px1, py0, py1;
  double lg_x, lg_y, lg_w, lg_h;  /* legend box */
  int lg_outside;         /* 0 inside the plot area, LG_RIGHT or LG_BELOW */
  int lg_cols;            /* columns of entries (below the plot: several) */
  double lg_colw;         /* width of one column */
} fig;

/* Okabe & Ito (2008), ordered so that the first colours are the most distinct. */
static const rgb PALETTE[] = {
  {0x00 / 255.0, 0x72 / 255.0, 0xB2 / 255.0},  /* blue */
  {0xD5 / 255.0, 0x5E / 255.0, 0x00 / 255.0},  /* vermillion */
  {0x00 / 255.0, 0x9E / 255.0, 0x73 / 255.0},  /* bluish green */
  {0xE6 / 255.0, 0x9F / 255.0, 0x00 / 255.0},  /* orange */
  {0xCC / 255.0, 0x79 / 255.0, 0xA7 / 255.0},  /* reddish purple */
  {0x56 / 255.0, 0xB4 / 255.0, 0xE9 / 255.0},  /* sky blue */
  {0x00 / 255.0, 0x00 / 255.0, 0x00 / 255.0},  /* black */
  {0xF0 / 255.0, 0xE4 / 255.0, 0x42 / 255.0},  /* yellow (last: weak on white) */
};
enum { NPALETTE = sizeof PALETTE / sizeof PALETTE[0] };

static const struct { const char *name; int idx; } COLOR_NAMES[] = {
  {"blue", 0}, {"red", 1}, {"vermillion", 1}, {"green", 2}, {"orange", 3}, {"purple", 4},
  {"pink", 4}, {"skyblue", 5}, {"lightblue", 5}, {"black", 6}, {"yellow", 7},
};

static rgb viridis(double t) {
  static const rgb V[] = {
    {0x44 / 255.0, 0x01 / 255.0, 0x54 / 255.0}, {0x3b / 255.0, 0x52 / 255.0, 0x8b / 255.0},
    {0x21 / 255.0, 0x91 / 255.0, 0x8c / 255.0}, {0x5e / 255.0, 0xc9 / 255.0, 0x62 / 255.0},
    {0xfd / 255.0, 0xe7 / 255.0, 0x25 / 255.0},
  };
  if (!(t >= 0)) t = 0;
  if (t > 1) t = 1;
  double p = t * 4;
  int i = (int)p;
  if (i >= 4) return V[4];
  double f = p - i;
  rgb c = {V[i].r + f * (V[i + 1].r - V[i].r), V[i].g + f * (V[i + 1].g - V[i].g),
           V[i].b + f * (V[i + 1].b - V[i].b)};
  return c;
}

/* Blue - white - vermillion, for signed data centred on zero (t in [-1, 1]). */
static rgb diverging(double t) {
  if (!(t >= -1)) t = -1;
  if (t > 1) t = 1;
  rgb lo = {0x21 / 255.0, 0x66 / 255.0, 0xac / 255.0}, hi = {0xb2 / 255.0, 0x18 / 255.0, 0x2b / 255.0};
  rgb e = t < 0 ? lo : hi;
  double f = fabs(t);
  rgb c = {1 + f * (e.r - 1), 1 + f * (e.g - 1), 1 + f * (e.b - 1)};
  return c;
}

static void fig_free(fig *F) {
  for (int i = 0; i < F->ns; i++) {
    free(F->sv[i].x);
    free(F->sv[i].y);
    free(F->sv[i].cval);
    free(F->sv[i].classes);
  }
  free(F->sv);
  for (int i = 0; i < F->nim; i++) free(F->im[i].d);
  free(F->im);
  free(F->le);
}

/* ======================================================================
 * argument parsing
 * ====================================================================== */

static int oom(blo_state *S, callargs *a) { return interp_error(S, a->call, "out of memory"); }

static void describe(value v, char *buf, size_t n) { v_describe(v, buf, n); }

/* v as a vector of doubles: a number, a tensor with at most one axis longer
 * than 1, or a list of numbers.  Returns 0, -1 when v is not such a value,
 * -2 when memory runs out.  An empty vector gives *out = NULL, *n = 0. */
static int to_vec(value v, double **out, size_t *n) {
  *out = NULL;
  *n = 0;
  const double *src = NULL;
  size_t len = 0;
  if (v.kind == V_NUM) {
    src = &v.u.num;
    len = 1;
  } else if (v.kind == V_TENSOR) {
    const blo_tensor *t = v.u.t;
    int big = 0;
    for (int i = 0; i < t->rank; i++)
      if (t->shape[i] > 1) big++;
    if (big > 1) return -1;
    src = t->data;
    len = t->size;
  } else if (v.kind == V_LIST) {
    olist *l = (olist *)v.u.o;
    for (int i = 0; i < l->n; i++)
      if (l->items[i].kind != V_NUM) return -1;
    if (l->n <= 0) return 0;
    double *d = malloc(sizeof(double) * (size_t)l->n);
    if (!d) return -2;
    for (int i = 0; i < l->n; i++) d[i] = l->items[i].u.num;
    *out = d;
    *n = (size_t)l->n;
    return 0;
  } else {
    return -1;
  }
  if (len == 0) return 0;
  double *d = malloc(sizeof(double) * len);
  if (!d) return -2;
  memcpy(d, src, sizeof(double) * len);
  *out = d;
  *n = len;
  return 0;
}

/* A vector-valued argument, with an error naming it. */
static int get_vec(blo_state *S, callargs *a, value v, const char *what, double **out, size_t *n) {
  int rc = to_vec(v, out, n);
  if (rc == -2) return oom(S, a);
  if (rc == 0) return EV_OK;
  char d[96];
  describe(v, d, sizeof d);
  return perr(S, a, "%s must be a vector of numbers, got %s", what, d);
}

/* A vector-or-several argument split into vectors: a matrix gives its rows,
 * a list gives its items, anything else one vector.  *nv receives the count;
 * the caller frees each vs[i] and vs, and lens. */
static int get_vecs(blo_state *S, callargs *a, value v, const char *what, double ***vs, size_t **lens, int *nv) {
  *vs = NULL;
  *lens = NULL;
  *nv = 0;
  int cnt = 1;
  int rows = 0, items = 0;
  if (v.kind == V_TENSOR && v.u.t->rank == 2) {
    rows = 1;
    cnt = (int)v.u.t->shape[0];
  } else if (v.kind == V_TENSOR && v.u.t->rank > 2) {
    char d[96];
    describe(v, d, sizeof d);
    return perr(S, a, "%s must be a vector, a matrix (one series per row) or a list of vectors, got %s", what, d);
  } else if (v.kind == V_LIST) {
    olist *l = (olist *)v.u.o;
    int allnum = 1;
    for (int i = 0; i < l->n; i++)
      if (l->items[i].kind != V_NUM) allnum = 0;
    if (!allnum) {
      items = 1;
      cnt = l->n;
    }
  }
  double **arr = calloc((size_t)(cnt > 0 ? cnt : 1), sizeof(double *));
  size_t *ln = calloc((size_t)(cnt > 0 ? cnt : 1), sizeof(size_t));
  if (!arr || !ln) {
    free(arr);
    free(ln);
    return oom(S, a);
  }
  int rc = EV_OK;
  if (rows) {
    const blo_tensor *t = v.u.t;
    size_t c = t->shape[1];
    for (int i = 0; i < cnt && rc == EV_OK; i++) {
      ln[i] = c;
      if (c == 0) continue;
      arr[i] = malloc(sizeof(double) * c);
      if (!arr[i]) rc = oom(S, a);
      else memcpy(arr[i], t->data + (size_t)i * c, sizeof(double) * c);
    }
  } else if (items) {
    olist *l = (olist *)v.u.o;
    for (int i = 0; i < cnt && rc == EV_OK; i++) {
      char what2[64];
      snprintf(what2, sizeof what2, "%s item %d", what, i + 1);
      rc = get_vec(S, a, l->items[i], what2, &arr[i], &ln[i]);
    }
  } else {
    rc = get_vec(S, a, v, what, &arr[0], &ln[0]);
  }
  if (rc != EV_OK) {
    for (int i = 0; i < cnt; i++) free(arr[i]);
    free(arr);
    free(ln);
    return EV_ERR;
  }
  *vs = arr;
  *lens = ln;
  *nv = cnt;
  return EV_OK;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* One colour: "#rrggbb", "#rgb", a name, or a palette index.  -1 if invalid. */
static int parse_color(value v, rgb *out) {
  if (v.kind == V_NUM) {
    double d = v.u.num;
    if (!(d >= 0 && d == floor(d) && d < 1e6)) return -1;
    *out = PALETTE[(long)d % NPALETTE];
    return 0;
  }
  if (v.kind != V_STR) return -1;
  const char *s = v_cstr(v);
  if (s[0] == '#') {
    size_t n = strlen(s + 1);
    int h[6];
    if (n != 6 && n != 3) return -1;
    for (size_t i = 0; i < n; i++)
      if ((h[i] = hexval((unsigned char)s[1 + i])) < 0) return -1;
    if (n == 6) {
      out->r = (h[0] * 16 + h[1]) / 255.0;
      out->g = (h[2] * 16 + h[3]) / 255.0;
      out->b = (h[4] * 16 + h[5]) / 255.0;
    } else {
      out->r = h[0] * 17 / 255.0;
      out->g = h[1] * 17 / 255.0;
      out->b = h[2] * 17 / 255.0;
    }
    return 0;
  }
  for (size_t i = 0; i < sizeof COLOR_NAMES / sizeof COLOR_NAMES[0]; i++)
    if (strcmp(s, COLOR_NAMES[i].name) == 0) {
      *out = PALETTE[COLOR_NAMES[i].idx];
      return 0;
    }
  if (strcmp(s, "gray") == 0 || strcmp(s, "grey") == 0) {
    out->r = out->g = out->b = 0.55;
    return 0;
  }
  if (strcmp(s, "white") == 0) {
    out->r = out->g = out->b = 1;
    return 0;
  }
  return -1;
}

static int color_error(blo_state *S, callargs *a, const char *what, value v) {
  char d[96];
  describe(v, d, sizeof d);
  return perr(S, a,
              "%s: expected \"#rrggbb\", a colour name (blue, red, green, orange, purple, skyblue, black, "
              "yellow, gray) or a palette index, got %s",
              what, d);
}

static int str_in(const char *s, const char *const *names) {
  for (int i = 0; names[i]; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

static const char *const KIND_NAMES[] = {"line", "scatter", "both", NULL};
static const char *const MARKER_NAMES[] = {"o", "s", "^", "d", "*", "x", "+", NULL};
static const char *const DASH_NAMES[] = {"solid", "dashed", "dotted", "dashdot", NULL};

static int enum_arg(blo_state *S, callargs *a, value v, const char *what, const char *const *names,
                    const char *list, int *out) {
  if (v.kind == V_STR) {
    int k = str_in(v_cstr(v), names);
    if (k >= 0) {
      *out = k;
      return EV_OK;
    }
    return perr(S, a, "%s must be one of %s, got \"%s\"", what, list, v_cstr(v));
  }
  char d[96];
  describe(v, d, sizeof d);
  return perr(S, a, "%s must be one of %s, got %s", what, list, d);
}

static int parse_kind(blo_state *S, callargs *a, value v, const char *what, int *out) {
  return enum_arg(S, a, v, what, KIND_NAMES, "\"line\", \"scatter\", \"both\"", out);
}
static int parse_marker(blo_state *S, callargs *a, value v, const char *what, int *out) {
  return enum_arg(S, a, v, what, MARKER_NAMES, "\"o\", \"s\", \"^\", \"d\", \"*\", \"x\", \"+\"", out);
}
static int parse_dash(blo_state *S, callargs *a, value v, const char *what, int *out) {
  return enum_arg(S, a, v, what, DASH_NAMES, "\"solid\", \"dashed\", \"dotted\", \"dashdot\"", out);
}

static int num_arg(blo_state *S, callargs *a, value v, const char *what, double lo, double hi, double *out) {
  double d;
  if (v_to_double(v, &d) == 0 && d >= lo && d <= hi) {
    *out = d;
    return EV_OK;
  }
  char desc[96];
  describe(v, desc, sizeof desc);
  return perr(S, a, "%s must be a number in [%g, %g], got %s", what, lo, hi, desc);
}

static series *new_series(blo_state *S, callargs *a, fig *F) {
  if (F->ns == F->scap) {
    int cap = F->scap ? F->scap * 2 : 8;
    series *n = realloc(F->sv, sizeof(series) * (size_t)cap);
    if (!n) {
      oom(S, a);
      return NULL;
    }
    F->sv = n;
    F->scap = cap;
  }
  series *s = &F->sv[F->ns++];
  memset(s, 0, sizeof *s);
  s->kind = K_LINE;
  s->alpha = -1;  /* decided by kind and size of the series */
  s->size = 1;
  return s;
}

/* Per-point colours: categorical when every value is a small non-negative integer. */
static int set_point_colors(blo_state *S, callargs *a, series *s, double *c, size_t n, const char *what) {
  if (n != s->n) {
    free(c);
    return perr(S, a, "%s has %zu values but the series has %zu points", what, n, s->n);
  }
  free(s->cval);
  s->cval = c;
  s->cat = 1;
  s->cmin = INFINITY;
  s->cmax = -INFINITY;
  for (size_t i = 0; i < n; i++) {
    double v = c[i];
    if (!isfinite(v)) continue;
    if (!(v >= 0 && v == floor(v) && v < 64)) s->cat = 0;
    if (v < s->cmin) s->cmin = v;
    if (v > s->cmax) s->cmax = v;
  }
  if (s->kind == K_LINE) s->kind = K_SCATTER;
  return EV_OK;
}

static int set_classes(blo_state *S, callargs *a, series *s, value v, const char *what) {
  if (v.kind == V_STR) {
    s->classes = malloc(sizeof(char *));
    if (!s->classes) return oom(S, a);
    s->classes[0] = v_cstr(v);
    s->nclasses = 1;
    return EV_OK;
  }
  if (v.kind == V_LIST) {
    olist *l = (olist *)v.u.o;
    s->classes = malloc(sizeof(char *) * (size_t)(l->n ? l->n : 1));
    if (!s->classes) return oom(S, a);
    for (int i = 0; i < l->n; i++) {
      if (l->items[i].kind != V_STR) return perr(S, a, "%s item %d must be a string", what, i + 1);
      s->classes[i] = v_cstr(l->items[i]);
    }
    s->nclasses = l->n;
    return EV_OK;
  }
  char d[96];
  describe(v, d, sizeof d);
  return perr(S, a, "%s must be a list of strings, got %s", what, d);
}

/* The series given by x = and y = (and the per-series options beside them). */
static int parse_xy(blo_state *S, callargs *a, fig *F, value *xv, value *yv) {
  double **ys = NULL, **xs = NULL;
  size_t *yl = NULL, *xl = NULL;
  int ny = 0, nx = 0, rc = EV_OK;
  if (get_vecs(S, a, *yv, "y", &ys, &yl, &ny)) return EV_ERR;
  if (xv && get_vecs(S, a, *xv, "x", &xs, &xl, &nx)) {
    rc = EV_ERR;
    goto done;
  }
  if (xv && nx != 1 && nx != ny) {
    rc = perr(S, a, "x gives %d series but y gives %d (rows of a matrix y are series)", nx, ny);
    goto done;
  }
  int first = F->ns;
  for (int i = 0; i < ny; i++) {
    series *s = new_series(S, a, F);
    if (!s) { rc = EV_ERR; goto done; }
    s->n = yl[i];
    s->y = ys[i];
    ys[i] = NULL;
    if (xv) {
      int k = nx == 1 ? 0 : i;
      if (xl[k] != s->n) {
        if (ny == 1)
          rc = perr(S, a, "x has %zu values but y has %zu", xl[k], s->n);
        else
          rc = perr(S, a, "x has %zu values but series %d of y has %zu (rows of a matrix y are series)", xl[k],
                    i + 1, s->n);
        goto done;
      }
      if (nx == 1 && i + 1 < ny) {
        if (s->n) {
          s->x = malloc(sizeof(double) * s->n);
          if (!s->x) { rc = oom(S, a); goto done; }
          memcpy(s->x, xs[0], sizeof(double) * s->n);
        }
      } else {
        s->x = xs[k];
        xs[k] = NULL;
      }
    } else if (s->n) {
      s->x = malloc(sizeof(double) * s->n);
      if (!s->x) { rc = oom(S, a); goto done; }
      for (size_t j = 0; j < s->n; j++) s->x[j] = (double)j;
    }
  }
  /* per-series options */
  value *v;
  if ((v = arg_named(a, "kind"))) {
    if (v->kind == V_LIST) {
      olist *l = (olist *)v->u.o;
      if (l->n != ny) { rc = perr(S, a, "kind lists %d kinds for %d series", l->n, ny); goto done; }
      for (int i = 0; i < ny && rc == EV_OK; i++) rc = parse_kind(S, a, l->items[i], "kind", &F->sv[first + i].kind);
    } else {
      int k = 0;
      rc = parse_kind(S, a, *v, "kind", &k);
      for (int i = 0; i < ny; i++) F->sv[first + i].kind = k;
    }
    if (rc) goto done;
  }
  if ((v = arg_named(a, "labels"))) {
    if (v->kind == V_STR) {
      if (ny != 1) { rc = perr(S, a, "labels: one label for %d series (give a list)", ny); goto done; }
      F->sv[first].label = v_cstr(*v);
    } else if (v->kind == V_LIST) {
      olist *l = (olist *)v->u.o;
      if (l->n != ny) { rc = perr(S, a, "labels lists %d labels for %d series", l->n, ny); goto done; }
      for (int i = 0; i < ny; i++) {
        if (l->items[i].kind != V_STR) { rc = perr(S, a, "labels item %d must be a string", i + 1); goto done; }
        F->sv[first + i].label = v_cstr(l->items[i]);
      }
    } else {
      char d[96];
      describe(*v, d, sizeof d);
      rc = perr(S, a, "labels must be a string or a list of strings, got %s", d);
      goto done;
    }
  }
  int marker = -1, dash = -1;
  double alpha = -1, size = 1;
  if ((v = arg_named(a, "marker")) && parse_marker(S, a, *v, "marker", &marker)) { rc = EV_ERR; goto done; }
  if ((v = arg_named(a, "dash")) && parse_dash(S, a, *v, "dash", &dash)) { rc = EV_ERR; goto done; }
  if ((v = arg_named(a, "alpha")) && num_arg(S, a, *v, "alpha", 0, 1, &alpha)) { rc = EV_ERR; goto done; }
  if ((v = arg_named(a, "size")) && num_arg(S, a, *v, "size", 0, 100, &size)) { rc = EV_ERR; goto done; }
  for (int i = 0; i < ny; i++) {
    series *s = &F->sv[first + i];
    if (marker >= 0) s->marker = marker;
    if (dash >= 0) s->dash = dash;
    s->alpha = alpha;
    s->size = size;
  }
  if ((v = arg_named(a, "color"))) {
    if (v->kind == V_STR || v->kind == V_NUM) {
      rgb c;
      if (parse_color(*v, &c)) { rc = color_error(S, a, "color", *v); goto done; }
      for (int i = 0; i < ny; i++) {
        F->sv[first + i].has_color = 1;
        F->sv[first + i].color = c;
      }
    } else if (v->kind == V_LIST && ((olist *)v->u.o)->n > 0 &&
               (((olist *)v->u.o)->items[0].kind == V_STR || ny > 1)) {
      olist *l = (olist *)v->u.o;
      if (l->n != ny) { rc = perr(S, a, "color lists %d colours for %d series", l->n, ny); goto done; }
      for (int i = 0; i < ny; i++) {
        if (parse_color(l->items[i], &F->sv[first + i].color)) { rc = color_error(S, a, "color", l->items[i]); goto done; }
        F->sv[first + i].has_color = 1;
      }
    } else {
      double *c;
      size_t n;
      if (get_vec(S, a, *v, "color", &c, &n)) { rc = EV_ERR; goto done; }
      int per_point = 1;
      for (int i = 0; i < ny; i++)
        if (F->sv[first + i].n != n) per_point = 0;
      if (!per_point && (size_t)ny == n) {
        /* one palette index per series */
        for (int i = 0; i < ny && rc == EV_OK; i++) {
          if (parse_color(v_num(c[i]), &F->sv[first + i].color)) rc = color_error(S, a, "color", v_num(c[i]));
          F->sv[first + i].has_color = 1;
        }
        free(c);
        if (rc) goto done;
      } else {
        for (int i = 0; i < ny && rc == EV_OK; i++) {
          double *ci = c;
          if (i + 1 < ny) {
            ci = n ? malloc(sizeof(double) * n) : NULL;
            if (n && !ci) { rc = oom(S, a); break; }
            if (n) memcpy(ci, c, sizeof(double) * n);
          }
          rc = set_point_colors(S, a, &F->sv[first + i], ci, n, "color");
          if (i + 1 == ny) c = NULL;
        }
        free(c);
        if (rc) goto done;
      }
    }
  }
  if ((v = arg_named(a, "classes"))) {
    for (int i = 0; i < ny && rc == EV_OK; i++) rc = set_classes(S, a, &F->sv[first + i], *v, "classes");
    if (rc) goto done;
  }
done:
  for (int i = 0; i < ny; i++) free(ys[i]);
  for (int i = 0; i < nx; i++) free(xs[i]);
  free(ys);
  free(yl);
  free(xs);
  free(xl);
  return rc;
}

static const char *const SERIES_FIELDS[] = {"x", "y", "kind", "label", "color", "alpha", "size", "marker",
                                            "dash", "classes", "shade", NULL};

static int parse_series_rec(blo_state *S, callargs *a, fig *F, value rv, int idx) {
  char what[64];
  snprintf(what, sizeof what, "series %d", idx + 1);
  if (rv.kind != V_REC) {
    char d[96];
    describe(rv, d, sizeof d);
    return perr(S, a, "%s must be a record {x =, y =, kind =, label =, color =}, got %s", what, d);
  }
  orec *r = (orec *)rv.u.o;
  for (int i = 0; i < r->n; i++)
    if (str_in(r->keys[i], SERIES_FIELDS) < 0)
      return perr(S, a, "%s: unknown field '%s' (allowed: x, y, kind, label, color, alpha, size, marker, dash, "
                  "classes, shade)", what, r->keys[i]);
  value *yv = rec_get(r, "y"), *xv = rec_get(r, "x"), *v;
  if (!yv) return perr(S, a, "%s has no field y", what);
  series *s = new_series(S, a, F);
  if (!s) return EV_ERR;
  char w2[80];
  snprintf(w2, sizeof w2, "%s: y", what);
  if (get_vec(S, a, *yv, w2, &s->y, &s->n)) return EV_ERR;
  if (xv) {
    size_t nx;
    snprintf(w2, sizeof w2, "%s: x", what);
    if (get_vec(S, a, *xv, w2, &s->x, &nx)) return EV_ERR;
    if (nx != s->n) return perr(S, a, "%s: x has %zu values but y has %zu", what, nx, s->n);
  } else if (s->n) {
    s->x = malloc(sizeof(double) * s->n);
    if (!s->x) return oom(S, a);
    for (size_t j = 0; j < s->n; j++) s->x[j] = (double)j;
  }
  snprintf(w2, sizeof w2, "%s: ", what);
  size_t pl = strlen(w2);
  if ((v = rec_get(r, "kind"))) {
    snprintf(w2 + pl, sizeof w2 - pl, "kind");
    if (parse_kind(S, a, *v, w2, &s->kind)) return EV_ERR;
  }
  if ((v = rec_get(r, "label"))) {
    if (v->kind != V_STR) return perr(S, a, "%s: label must be a string", what);
    s->label = v_cstr(*v);
  }
  if ((v = rec_get(r, "marker"))) {
    snprintf(w2 + pl, sizeof w2 - pl, "marker");
    if (parse_marker(S, a, *v, w2, &s->marker)) return EV_ERR;
  }
  if ((v = rec_get(r, "dash"))) {
    snprintf(w2 + pl, sizeof w2 - pl, "dash");
    if (parse_dash(S, a, *v, w2, &s->dash)) return EV_ERR;
  }
  if ((v = rec_get(r, "alpha"))) {
    snprintf(w2 + pl, sizeof w2 - pl, "alpha");
    if (num_arg(S, a, *v, w2, 0, 1, &s->alpha)) return EV_ERR;
  }
  if ((v = rec_get(r, "size"))) {
    snprintf(w2 + pl, sizeof w2 - pl, "size");
    if (num_arg(S, a, *v, w2, 0, 100, &s->size)) return EV_ERR;
  }
  if ((v = rec_get(r, "shade"))) {
    double t;
    snprintf(w2 + pl, sizeof w2 - pl, "shade");
    if (num_arg(S, a, *v, w2, 0, 1, &t)) return EV_ERR;
    s->color = viridis(t);
    s->has_color = 1;
  }
  if ((v = rec_get(r, "color"))) {
    snprintf(w2 + pl, sizeof w2 - pl, "color");
    if (v->kind == V_STR || v->kind == V_NUM) {
      if (parse_color(*v, &s->color)) return color_error(S, a, w2, *v);
      s->has_color = 1;
    } else {
      double *c;
      size_t n;
      if (get_vec(S, a, *v, w2, &c, &n)) return EV_ERR;
      if (set_point_colors(S, a, s, c, n, w2)) return EV_ERR;
    }
  }
  if ((v = rec_get(r, "classes"))) {
    snprintf(w2 + pl, sizeof w2 - pl, "classes");
    if (set_classes(S, a, s, *v, w2)) return EV_ERR;
  }
  return EV_OK;
}

static int parse_images(blo_state *S, callargs *a, fig *F, value v) {
  int n = 0;
  if (v.kind == V_TENSOR && v.u.t->rank == 3) n = (int)v.u.t->shape[0];
  else if (v.kind == V_TENSOR && v.u.t->rank == 2) n = 1;
  else if (v.kind == V_LIST) n = ((olist *)v.u.o)->n;
  else {
    char d[96];
    describe(v, d, sizeof d);
    return perr(S, a, "images must be a matrix, a [n, h, w] tensor or a list of matrices, got %s", d);
  }
  if (n == 0) return perr(S, a, "images is empty");
  if (n > 400) return perr(S, a, "images: at most 400 images, got %d", n);
  F->im = calloc((size_t)n, sizeof(image));
  if (!F->im) return oom(S, a);
  F->nim = n;
  for (int i = 0; i < n; i++) {
    image *im = &F->im[i];
    const double *src;
    if (v.kind == V_TENSOR) {
      const blo_tensor *t = v.u.t;
      im->h = t->shape[t->rank - 2];
      im->w = t->shape[t->rank - 1];
      src = t->data + (size_t)i * im->h * im->w;
    } else {
      value it = ((olist *)v.u.o)->items[i];
      if (it.kind != V_TENSOR || it.u.t->rank != 2) {
        char d[96];
        describe(it, d, sizeof d);
        return perr(S, a, "images item %d must be a matrix, got %s", i + 1, d);
      }
      im->h = it.u.t->shape[0];
      im->w = it.u.t->shape[1];
      src = it.u.t->data;
    }
    if (im->h == 0 || im->w == 0 || im->h > 4096 || im->w > 4096)
      return perr(S, a, "images item %d has an unusable size %zux%zu", i + 1, im->h, im->w);
    im->d = malloc(sizeof(double) * im->h * im->w);
    if (!im->d) return oom(S, a);
    memcpy(im->d, src, sizeof(double) * im->h * im->w);
  }
  value *lv = arg_named(a, "labels");
  if (lv) {
    int cnt = 0;
    if (lv->kind == V_LIST) {
      olist *l = (olist *)lv->u.o;
      cnt = l->n;
      if (cnt != n) return perr(S, a, "labels lists %d labels for %d images", cnt, n);
      for (int i = 0; i < n; i++) {
        value it = l->items[i];
        if (it.kind == V_STR) F->im[i].label = v_cstr(it);
        else if (it.kind == V_NUM) fmt_double(F->im[i].num, sizeof F->im[i].num, it.u.num);
        else return perr(S, a, "labels item %d must be a string or a number", i + 1);
      }
    } else if (lv->kind == V_STR && n == 1) {
      F->im[0].label = v_cstr(*lv);
    } else {
      double *d;
      size_t m;
      if (get_vec(S, a, *lv, "labels", &d, &m)) return EV_ERR;
      if ((int)m != n) {
        free(d);
        return perr(S, a, "labels lists %zu labels for %d images", m, n);
      }
      for (int i = 0; i < n; i++) fmt_double(F->im[i].num, sizeof F->im[i].num, d[i]);
      free(d);
    }
  }
  value *cv = arg_named(a, "cmap");
  if (cv) {
    static const char *const CMAPS[] = {"gray", "gray_r", "viridis", "diverging", NULL};
    if (enum_arg(S, a, *cv, "cmap", CMAPS, "\"gray\", \"gray_r\", \"viridis\", \"diverging\"", &F->cmap))
      return EV_ERR;
  }
  value *rv = arg_named(a, "range");
  if (rv && rv->kind == V_STR) {
    if (strcmp(v_cstr(*rv), "each") != 0) return perr(S, a, "range must be [lo, hi] with lo < hi, or \"each\"");
    F->each = 1;
  } else if (rv) {
    double *d;
    size_t m;
    if (get_vec(S, a, *rv, "range", &d, &m)) return EV_ERR;
    int ok = m == 2 && d[0] < d[1];
    if (ok) {
      F->range[0] = d[0];
      F->range[1] = d[1];
      F->has_range = 1;
    }
    free(d);
    if (!ok) return perr(S, a, "range must be [lo, hi] with lo < hi, or \"each\"");
  }
  long nc = 0;
  if (named_int(S, a, "ncols", 0, &nc)) return EV_ERR;
  if (nc < 0 || nc > 400) return perr(S, a, "ncols must be between 1 and 400");
  F->ncols = (int)nc;
  return EV_OK;
}

static int parse_lim(blo_state *S, callargs *a, const char *name, axis *ax) {
  value *v = arg_named(a, name);
  if (!v) return EV_OK;
  double *d;
  size_t m;
  if (get_vec(S, a, *v, name, &d, &m)) return EV_ERR;
  int ok = m == 2 && isfinite(d[0]) && isfinite(d[1]) && d[0] < d[1];
  if (ok && ax->log) ok = d[0] > 0;
  if (ok) {
    ax->has_lim = 1;
    ax->lo = ax->log ? log10(d[0]) : d[0];
    ax->hi = ax->log ? log10(d[1]) : d[1];
  }
  free(d);
  if (!ok) return perr(S, a, "%s must be [lo, hi] with lo < hi%s", name, ax->log ? " and lo > 0 (log axis)" : "");
  return EV_OK;
}

/* ======================================================================
 * text
 * ====================================================================== */

static void font(cairo_t *cr, double px, int bold) {
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                         bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, px);
}

static double text_w(cairo_t *cr, const char *s) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, s, &e);
  return e.x_advance;
}

/* Height of a line of text (ascent + descent) in the current font. */
static double line_h(cairo_t *cr) {
  cairo_font_extents_t e;
  cairo_font_extents(cr, &e);
  return e.ascent + e.descent;
}

static double ascent(cairo_t *cr) {
  cairo_font_extents_t e;
  cairo_font_extents(cr, &e);
  return e.ascent;
}

/* Text with an optional superscript (10^k).  Font size fs. */
static double label_w(cairo_t *cr, double fs, const char *txt, const char *sup) {
  font(cr, fs, 0);
  double w = text_w(cr, txt);
  if (sup && sup[0]) {
    font(cr, fs * 0.72, 0);
    w += text_w(cr, sup) + fs * 0.05;
    font(cr, fs, 0);
  }
  return w;
}

/* Draws at baseline (x, y); returns the width. */
static double draw_label(cairo_t *cr, double fs, double x, double y, const char *txt, const char *sup) {
  font(cr, fs, 0);
  cairo_move_to(cr, x, y);
  cairo_show_text(cr, txt);
  double w = text_w(cr, txt);
  if (sup && sup[0]) {
    font(cr, fs * 0.72, 0);
    cairo_move_to(cr, x + w + fs * 0.05, y - fs * 0.42);
    cairo_show_text(cr, sup);
    w += text_w(cr, sup) + fs * 0.05;
    font(cr, fs, 0);
  }
  return w;
}

/* Shows text centred on cx at baseline y, shrinking the font (to 70%) and
 * then cutting the text with an ellipsis so that it fits in [xmin, xmin + maxw]. */
static void show_fitted(cairo_t *cr, const char *text, double fs, int bold, double cx, double y, double xmin,
                        double maxw) {
  font(cr, fs, bold);
  double w = text_w(cr, text);
  if (w > maxw) {
    double f = fmax(0.7, maxw / w);
    font(cr, fs * f, bold);
    w = text_w(cr, text);
  }
  char buf[512];
  size_t n = strlen(text);
  if (n >= sizeof buf - 4) n = sizeof buf - 4;
  memcpy(buf, text, n);
  buf[n] = 0;
  while (w > maxw && n > 1) {
    n--;
    while (n > 1 && ((unsigned char)buf[n] & 0xC0) == 0x80) n--;  /* whole UTF-8 characters */
    memcpy(buf + n, "\xe2\x80\xa6", 4);                          /* ... */
    w = text_w(cr, buf);
  }
  double x = cx - w / 2;
  if (x < xmin) x = xmin;
  if (x + w > xmin + maxw) x = xmin + maxw - w;
  cairo_move_to(cr, x, y);
  cairo_show_text(cr, buf);
}

/* strlcpy: copies as much of src as fits, always terminated. */
static void copy_str(char *dst, size_t cap, const char *src) {
  if (cap == 0) return;
  size_t n = strlen(src);
  if (n >= cap) n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = 0;
}

/* Replaces an ASCII minus sign by U+2212 (the typographic minus). */
static void nice_minus(char *s, size_t cap) {
  char tmp[64];
  size_t j = 0;
  for (size_t i = 0; s[i] && j + 4 < sizeof tmp; i++) {
    if (s[i] == '-') {
      tmp[j++] = (char)0xe2;
      tmp[j++] = (char)0x88;
      tmp[j++] = (char)0x92;
    } else {
      tmp[j++] = s[i];
    }
  }
  tmp[j] = 0;
  copy_str(s, cap, tmp);
}

/* ======================================================================
 * ticks
 * ====================================================================== */

static double nice_ceil(double x) {
  if (!(x > 0) || !isfinite(x)) return 1;
  double e = floor(log10(x)), p = pow(10, e), f = x / p;
  if (f <= 1 + 1e-9) return p;
  if (f <= 2 + 1e-9) return 2 * p;
  if (f <= 5 + 1e-9) return 5 * p;
  return 10 * p;
}

static double nice_next(double step) {
  double e = floor(log10(step) + 1e-9), p = pow(10, e), f = step / p;
  if (f < 1.5) return 2 * p;
  if (f < 3.5) return 5 * p;
  return 10 * p;
}

static void fmt_fixed(char *buf, size_t n, double v, int dec) {
  if (dec > 15) dec = 15;
  snprintf(buf, n, "%.*f", dec, v);
  /* "-0" and "-0.00" are zero */
  int allzero = 1;
  for (const char *p = buf; *p; p++)
    if (*p >= '1' && *p <= '9') allzero = 0;
  if (allzero && buf[0] == '-') memmove(buf, buf + 1, strlen(buf));
  nice_minus(buf, n);
}

/* Plain text of a positive value for log-axis minor labels (0.02, 5, 3000). */
static void fmt_plain(char *buf, size_t n, double v) {
  char t[64];
  snprintf(t, sizeof t, "%.3g", v);
  if (strchr(t, 'e')) {
    double e = floor(log10(v) + 1e-9);
    int dec = e < 0 ? (int)-e : 0;
    snprintf(t, sizeof t, "%.*f", dec > 15 ? 15 : dec, v);
  }
  copy_str(buf, n, t);
  nice_minus(buf, n);
}

typedef struct tickctx {
  cairo_t *cr;
  double fs;      /* tick label font size */
  double len;     /* axis length in pixels */
  int horiz;
  double gap;     /* minimum free space between labels */
} tickctx;

static double tick_extent(const tickctx *tc, const tick *t) {
  if (tc->horiz) return label_w(tc->cr, tc->fs, t->txt, t->sup);
  return tc->fs * (t->sup[0] ? 1.45 : 1.15);
}

/* 1 if the labels fit without overlap. */
static int ticks_fit(const tickctx *tc, const axis *ax) {
  double span = ax->hi - ax->lo;
  for (int i = 0; i + 1 < ax->nt; i++) {
    double d = (ax->t[i + 1].v - ax->t[i].v) / span * tc->len;
    if (d < tick_extent(tc, &ax->t[i]) / 2 + tick_extent(tc, &ax->t[i + 1]) / 2 + tc->gap) return 0;
  }
  return 1;
}

static void linear_ticks(const tickctx *tc, axis *ax, double lo, double hi, int as_log) {
  double span = hi - lo;
  double target = tc->horiz ? 90 * tc->fs / 13 : 55 * tc->fs / 13;
  double step = nice_ceil(span * target / tc->len);
  double m = fmax(fabs(lo), fabs(hi));
  int e = m > 0 ? (int)floor(log10(m)) : 0;
  for (int iter = 0; iter < 40; iter++) {
    ax->mult = (!as_log && (e >= 5 || e <= -4)) ? e : 0;
    /* a narrow window on large numbers (123456 .. 123458) reads better in full */
    if (ax->mult && step * pow(10, -ax->mult) < 1e-3) ax->mult = 0;
    ax->nt = 0;
    double scale = pow(10, -ax->mult);
    double rel = step * scale;
    int dec = rel >= 1 ? 0 : (int)ceil(-log10(rel) - 1e-9);
    double i0 = ceil(lo / step - 1e-9), i1 = floor(hi / step + 1e-9);
    if (i1 - i0 + 1 > MAX_TICKS) {
      step = nice_next(step);
      continue;
    }
    for (double i = i0; i <= i1; i++) {
      tick *t = &ax->t[ax->nt++];
      double v = i * step;
      if (as_log) {
        t->v = log10(v);
        fmt_plain(t->txt, sizeof t->txt, v);
      } else {
        t->v = v;
        fmt_fixed(t->txt, sizeof t->txt, v * scale, dec);
      }
      t->sup[0] = 0;
    }
    if (as_log) {
      /* non-positive values have no place on a log axis */
      int k = 0;
      for (int j = 0; j < ax->nt; j++)
        if (isfinite(ax->t[j].v)) ax->t[k++] = ax->t[j];
      ax->nt = k;
    }
    if (ticks_fit(tc, ax)) return;
    step = nice_next(step);
  }
}

/* 1 if the labels reach near both ends of the axis: neither end has a
 * quarter of the axis without a label (a reader must be able to read values
 * anywhere along it). */
static int ticks_cover(const axis *ax) {
  double span = ax->hi - ax->lo;
  if (ax->nt < 2) return 0;
  return ax->t[0].v - ax->lo <= 0.25 * span && ax->hi - ax->t[ax->nt - 1].v <= 0.25 * span;
}

/* Labels at d x 10^k for the digits d of the densest set that fits (1..9,
 * then 1-2-3-5, 1-2-5, 1-3, 1) and, when cover is set, also reaches both
 * ends.  Returns 1 with the ticks in ax, 0 (ax->t then undefined) if none. */
static int sub_decade_ticks(const tickctx *tc, axis *ax, int cover) {
  static const int sets[5][10] = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 0}, {1, 2, 3, 5, 0}, {1, 2, 5, 0}, {1, 3, 0}, {1, 0}};
  double lo = ax->lo, hi = ax->hi;
  for (int si = 0; si < 5; si++) {
    ax->nt = 0;
    for (int d = (int)floor(lo) - 1; d <= (int)ceil(hi); d++)
      for (int k = 0; sets[si][k] && ax->nt < MAX_TICKS; k++) {
        double val = sets[si][k] * pow(10, d);
        double v = log10(val);
        if (v < lo - 1e-9 || v > hi + 1e-9) continue;
        tick *t = &ax->t[ax->nt++];
        t->v = v;
        fmt_plain(t->txt, sizeof t->txt, val);
        t->sup[0] = 0;
      }
    if (ax->nt >= 3 && ticks_fit(tc, ax) && (!cover || ticks_cover(ax))) return 1;
  }
  return 0;
}

static void log_ticks(const tickctx *tc, axis *ax) {
  ax->mult = 0;
  ax->nminor = 0;
  double lo = ax->lo, hi = ax->hi;
  int d0 = (int)ceil(lo - 1e-9), d1 = (int)floor(hi + 1e-9);
  if (d1 - d0 + 1 >= 2) {
    /* decades between 0.001 and 10000 read best as plain numbers; beyond
     * that every label is a power of ten, so the axis stays consistent */
    int plain = d0 >= -3 && d1 <= 4;
    static const int strides[] = {1, 2, 3, 4, 5, 10, 20, 50, 100};
    int stride = 1;
    for (size_t si = 0; si < sizeof strides / sizeof strides[0]; si++) {
      stride = strides[si];
      ax->nt = 0;
      int start = (int)ceil(d0 / (double)stride) * stride;
      for (int d = start; d <= d1 && ax->nt < MAX_TICKS; d += stride) {
        tick *t = &ax->t[ax->nt++];
        t->v = d;
        if (plain) {
          fmt_plain(t->txt, sizeof t->txt, pow(10, d));
          t->sup[0] = 0;
        } else {
          snprintf(t->txt, sizeof t->txt, "10");
          snprintf(t->sup, sizeof t->sup, "%d", d);
          nice_minus(t->sup, sizeof t->sup);
        }
      }
      if (ax->nt >= 2 && ticks_fit(tc, ax)) break;
      if (ax->nt < 2) break;
    }
    /* Two or three decades whose labels leave an end bare (0.05 .. 3 is
     * labelled 0.1 and 1 only): digits inside the decades, if they fit. */
    if (plain && hi - lo <= 3 && !ticks_cover(ax)) {
      tick saved[MAX_TICKS];
      int nsaved = ax->nt;
      memcpy(saved, ax->t, sizeof saved);
      if (!sub_decade_ticks(tc, ax, 1)) {
        memcpy(ax->t, saved, sizeof saved);
        ax->nt = nsaved;
      }
    }
    /* minor ticks: 2..9 x 10^k, or the skipped decades */
    if (stride == 1 && (hi - lo) <= 12) {
      for (int d = (int)floor(lo); d <= (int)ceil(hi); d++)
        for (int k = 2; k <= 9 && ax->nminor < 4 * MAX_TICKS; k++) {
          double v = d + log10((double)k);
          if (v > lo && v < hi) ax->minor[ax->nminor++] = v;
        }
    } else {
      for (int d = d0; d <= d1 && ax->nminor < 4 * MAX_TICKS; d++) ax->minor[ax->nminor++] = d;
    }
    return;
  }
  /* less than two decades: labels inside the decade(s), reaching both ends */
  if (sub_decade_ticks(tc, ax, 1) || sub_decade_ticks(tc, ax, 0)) return;
  /* a narrow range: linear ticks on the values */
  linear_ticks(tc, ax, pow(10, lo), pow(10, hi), 1);
}

static void make_ticks(cairo_t *cr, fig *F, axis *ax, double len, int horiz) {
  tickctx tc = {cr, 13 * F->s, len > 10 ? len : 10, horiz, horiz ? 14 * F->s : 6 * F->s};
  ax->nminor = 0;
  if (ax->log) log_ticks(&tc, ax);
  else linear_ticks(&tc, ax, ax->lo, ax->hi, 0);
}

/* ======================================================================
 * layout
 * ====================================================================== */

static int valid_on(const axis *ax, double v) { return isfinite(v) && (!ax->log || v > 0); }
static double axv(const axis *ax, double v) { return ax->log ? log10(v) : v; }

/* Data range of one axis in axis space, padded; respects an explicit limit. */
static void data_range(fig *F, axis *ax, int is_x) {
  if (ax->has_lim) {
    ax->dlo = ax->lo;
    ax->dhi = ax->hi;
    return;
  }
  double lo = INFINITY, hi = -INFINITY;
  for (int i = 0; i < F->ns; i++) {
    const series *s = &F->sv[i];
    const double *d = is_x ? s->x : s->y;
    const double *o = is_x ? s->y : s->x;
    const axis *oa = is_x ? &F->ay : &F->ax;
    for (size_t j = 0; j < s->n; j++) {
      if (!valid_on(ax, d[j]) || !valid_on(oa, o[j])) continue;
      double v = axv(ax, d[j]);
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  if (!(lo <= hi)) {
    lo = 0;
    hi = 1;
  } else if (hi - lo < 1e-12 * fmax(1, fabs(lo))) {
    double p = ax->log ? 0.5 : (lo != 0 ? fabs(lo) * 0.1 : 1);
    lo -= p;
    hi += p;
  } else {
    double p = 0.04 * (hi - lo);
    lo -= p;
    hi += p;
  }
  ax->lo = ax->dlo = lo;
  ax->hi = ax->dhi = hi;
}

/* Points that xlim/ylim leave out are not drawn, yet the legend would list
 * their series: count them and say so (the script asked for those limits,
 * so they stay).  A line's point outside whose segment crosses the plot
 * area is drawn in part and not counted. */
/* 1 if the segment (x0, y0)-(x1, y1) meets the box [bx0, bx1] x [by0, by1]
 * (Liang-Barsky clipping). */
static int segment_meets(double x0, double y0, double x1, double y1, double bx0, double bx1, double by0, double by1) {
  double t0 = 0, t1 = 1, dx = x1 - x0, dy = y1 - y0;
  double p[4] = {-dx, dx, -dy, dy}, q[4] = {x0 - bx0, bx1 - x0, y0 - by0, by1 - y0};
  for (int i = 0; i < 4; i++) {
    if (p[i] == 0) {
      if (q[i] < 0) return 0;
    } else {
      double r = q[i] / p[i];
      if (p[i] < 0 && r > t0) t0 = r;
      if (p[i] > 0 && r < t1) t1 = r;
    }
  }
  return t0 <= t1;
}

/* Whether point j of s (valid on both axes) shows: inside the limits, or,
 * on a line, an end of a drawn segment that crosses the plot area (a
 * reference line may run past the limits on purpose). */
static int point_shows(const fig *F, const series *s, size_t j) {
  double x = axv(&F->ax, s->x[j]), y = axv(&F->ay, s->y[j]);
  if (x >= F->ax.dlo && x <= F->ax.dhi && y >= F->ay.dlo && y <= F->ay.dhi) return 1;
  if (s->kind != K_LINE) return 0;
  for (int d = -1; d <= 1; d += 2) {
    if ((d < 0 && j == 0) || (d > 0 && j + 1 >= s->n)) continue;
    size_t k = d < 0 ? j - 1 : j + 1;
    if (!valid_on(&F->ax, s->x[k]) || !valid_on(&F->ay, s->y[k])) continue;
    if (segment_meets(x, y, axv(&F->ax, s->x[k]), axv(&F->ay, s->y[k]), F->ax.dlo, F->ax.dhi, F->ay.dlo, F->ay.dhi))
      return 1;
  }
  return 0;
}

static void count_hidden(blo_state *S, callargs *a, fig *F) {
  if (!F->ax.has_lim && !F->ay.has_lim) return;
  const char *first = NULL;
  int nser = 0;
  for (int i = 0; i < F->ns; i++) {
    const series *s = &F->sv[i];
    long k = 0;
    for (size_t j = 0; j < s->n; j++) {
      if (!valid_on(&F->ax, s->x[j]) || !valid_on(&F->ay, s->y[j])) continue;
      if (!point_shows(F, s, j)) k++;
    }
    if (k) {
      if (!nser) first = s->label;
      nser++;
      F->hidden += k;
    }
  }
  if (!F->hidden || !S->cfg.error_fn) return;
  char msg[600];
  const chunk *c = S->cur_chunk;
  const ast_node *at = a->call;
  snprintf(msg, sizeof msg, "%s:%d:%d: warning: plot: %ld point%s of %d series%s%s%s outside xlim/ylim, not drawn\n",
                   c && c->name ? c->name : "<input>", at ? at->loc.line : 0, at ? at->loc.col : 0, F->hidden,
                   F->hidden == 1 ? "" : "s", nser, first ? " (first: '" : "", first ? first : "", first ? "')" : "");
  S->cfg.error_fn(S->cfg.error_ud, msg);
}

static double PX(const fig *F, double v) {  /* value (data space) to pixel x */
  double a = axv(&F->ax, v);
  return F->px0 + (a - F->ax.lo) / (F->ax.hi - F->ax.lo) * (F->px1 - F->px0);
}
static double PY(const fig *F, double v) {
  double a = axv(&F->ay, v);
  return F->py1 - (a - F->ay.lo) / (F->ay.hi - F->ay.lo) * (F->py1 - F->py0);
}

static double max_tick_w(cairo_t *cr, const fig *F, const axis *ax) {
  double w = 0;
  for (int i = 0; i < ax->nt; i++) {
    double t = label_w(cr, 13 * F->s, ax->t[i].txt, ax->t[i].sup);
    if (t > w) w = t;
  }
  return w;
}

static int has_sup(const axis *ax) {
  for (int i = 0; i < ax->nt; i++)
    if (ax->t[i].sup[0]) return 1;
  return 0;
}

static void collect_legend(fig *F) {
  F->nle = 0;
  for (int i = 0; i < F->ns; i++) {
    const series *s = &F->sv[i];
    if (s->cval && s->cat && s->nclasses > 0) {
      for (int k = 0; k < s->nclasses; k++) {
        legend_entry *e = &F->le[F->nle++];
        e->text = s->classes[k];
        e->color = PALETTE[k % NPALETTE];
        e->kind = K_SCATTER;
        e->marker = s->marker;
        e->dash = s->dash;
        e->alpha = 1;
        e->size = s->size;
      }
      continue;
    }
    if (!s->label || !s->label[0]) continue;
    legend_entry *e = &F->le[F->nle++];
    e->text = s->label;
    e->color = s->color;
    e->kind = s->kind;
    e->marker = s->marker;
    e->dash = s->dash;
    e->alpha = s->alpha > 0.35 ? s->alpha : 1;  /* faint series still get a visible sample */
    e->size = s->size;
  }
}

static void legend_size(cairo_t *cr, fig *F) {
  double fs = 13 * F->s;
  font(cr, fs, 0);
  double w = 0;
  for (int i = 0; i < F->nle; i++) {
    double t = text_w(cr, F->le[i].text);
    if (t > w) w = t;
  }
  F->lg_colw = 30 * F->s + 8 * F->s + w + 10 * F->s;
  F->lg_cols = 1;
  F->lg_w = 10 * F->s + F->lg_colw;
  F->lg_h = 8 * F->s * 2 + F->nle * fs * 1.45;
}

/* Below the plot: as many columns as fit under the plot area. */
static void legend_below_size(fig *F) {
  double fs = 13 * F->s, avail = F->w - 24 * F->s;
  int cols = (int)floor((avail - 10 * F->s) / F->lg_colw);
  if (cols < 1) cols = 1;
  if (cols > F->nle) cols = F->nle;
  int rows = (F->nle + cols - 1) / cols;
  F->lg_cols = cols;
  F->lg_w = 10 * F->s + cols * F->lg_colw;
  F->lg_h = 8 * F->s * 2 + rows * fs * 1.45;
}

/* Same scale on both axes: the plot area shrinks (centred) along the axis
 * with room to spare.  Growing that axis's range instead would draw axes far
 * beyond the data and beyond an explicit xlim/ylim (a ROC plot of [0, 1]
 * running from -0.25 to 1.25). */
static void equal_box(fig *F) {
  if (!F->equal || F->ax.log || F->ay.log) return;
  double pw = F->px1 - F->px0, ph = F->py1 - F->py0;
  double ux = (F->ax.hi - F->ax.lo) / pw, uy = (F->ay.hi - F->ay.lo) / ph;
  if (ux > uy) {
    double h = (F->ay.hi - F->ay.lo) / ux, c = (F->py0 + F->py1) / 2;
    F->py0 = c - h / 2;
    F->py1 = c + h / 2;
  } else {
    double w = (F->ax.hi - F->ax.lo) / uy, c = (F->px0 + F->px1) / 2;
    F->px0 = c - w / 2;
    F->px1 = c + w / 2;
  }
}

/* Computes ticks and margins (pixels) for the current legend mode. */
static void layout_pass(cairo_t *cr, fig *F) {
  double s = F->s, fs = 13 * s, pad = 12 * s;
  font(cr, 17 * s, 1);
  double title_h = F->title ? line_h(cr) : 0;
  font(cr, 15 * s, 0);
  double lab_h = line_h(cr);
  font(cr, fs, 0);
  double tick_h = line_h(cr);
  double tick_len = 5 * s;
  /* initial guess, refined twice */
  F->px0 = 70 * s;
  F->px1 = F->w - pad;
  F->py0 = pad + (F->title ? title_h + pad : 0);
  F->py1 = F->h - 60 * s;
  for (int pass = 0; pass < 3; pass++) {
    F->ax.lo = F->ax.dlo;
    F->ax.hi = F->ax.dhi;
    F->ay.lo = F->ay.dlo;
    F->ay.hi = F->ay.dhi;
    double full[4] = {F->px0, F->px1, F->py0, F->py1};
    equal_box(F);
    make_ticks(cr, F, &F->ay, F->py1 - F->py0, 0);
    make_ticks(cr, F, &F->ax, F->px1 - F->px0, 1);
    F->px0 = full[0];
    F->px1 = full[1];
    F->py0 = full[2];
    F->py1 = full[3];
    double ytw = max_tick_w(cr, F, &F->ay);
    double top = pad + (F->title ? title_h + pad * 0.8 : 0);
    if (F->ay.mult && !F->title) top = pad + tick_h + 4 * s;
    if (has_sup(&F->ay)) top += 0.3 * fs;
    double left = pad + (F->ylabel ? lab_h + 8 * s : 0) + ytw + tick_len + 5 * s;
    double bottom = pad + (F->xlabel || F->ax.mult ? lab_h + 6 * s : 0) + tick_h * (has_sup(&F->ax) ? 1.3 : 1) +
                    tick_len + 4 * s;
    /* the last x label may stick out half its width past the plot area */
    double right = pad;
    if (F->ax.nt > 0) {
      const tick *t = &F->ax.t[F->ax.nt - 1];
      double over = label_w(cr, fs, t->txt, t->sup) / 2 -
                    (F->ax.hi - t->v) / (F->ax.hi - F->ax.lo) * (F->px1 - F->px0);
      if (over + 4 * s > right) right = over + 4 * s;
    }
    if (F->lg_outside == LG_RIGHT) right = pad + F->lg_w + 12 * s;
    if (F->lg_outside == LG_BELOW) bottom += F->lg_h + 6 * s;
    F->px0 = left;
    F->px1 = F->w - right;
    F->py0 = top;
    F->py1 = F->h - bottom;
    if (F->px1 - F->px0 < 20) F->px1 = F->px0 + 20;
    if (F->py1 - F->py0 < 20) F->py1 = F->py0 + 20;
  }
  equal_box(F);
}

/* How much data a legend box at (x, y) would cover. */
static double legend_cover(const fig *F, double x, double y) {
  double m = 4 * F->s, x0 = x - m, x1 = x + F->lg_w + m, y0 = y - m, y1 = y + F->lg_h + m;
  double cover = 0;
  for (int i = 0; i < F->ns; i++) {
    const series *s = &F->sv[i];
    double px = 0, py = 0;
    int have = 0;
    for (size_t j = 0; j < s->n; j++) {
      if (!valid_on(&F->ax, s->x[j]) || !valid_on(&F->ay, s->y[j])) {
        have = 0;
        continue;
      }
      double qx = PX(F, s->x[j]), qy = PY(F, s->y[j]);
      if (s->kind != K_LINE && qx >= x0 && qx <= x1 && qy >= y0 && qy <= y1) cover += 4;
      if (s->kind != K_SCATTER && have) {
        double len = hypot(qx - px, qy - py);
        int k = (int)fmin(2000, ceil(len / 3)) + 1;
        for (int t = 0; t <= k; t++) {
          double u = (double)t / k, sx = px + u * (qx - px), sy = py + u * (qy - py);
          if (sx >= x0 && sx <= x1 && sy >= y0 && sy <= y1) cover += 1;
        }
      }
      px = qx;
      py = qy;
      have = 1;
    }
  }
  return cover;
}

/* Outside the plot area: on the right when that leaves the plot most of the
 * width, else in columns below the axis label. */
static void go_outside(cairo_t *cr, fig *F) {
  /* a square (equal-aspect) plot has width to spare on the right */
  if (F->lg_w + 24 * F->s <= (F->equal ? 0.45 : 0.3) * F->w) {
    F->lg_outside = LG_RIGHT;
    layout_pass(cr, F);
    F->lg_x = F->px1 + 12 * F->s;
    F->lg_y = F->py0;
  } else {
    legend_below_size(F);
    F->lg_outside = LG_BELOW;
    layout_pass(cr, F);
    F->lg_x = (F->px0 + F->px1) / 2 - F->lg_w / 2;
    if (F->lg_x + F->lg_w > F->w - 6 * F->s) F->lg_x = F->w - 6 * F->s - F->lg_w;
    if (F->lg_x < 6 * F->s) F->lg_x = 6 * F->s;
    F->lg_y = F->h - 10 * F->s - F->lg_h;
  }
}

static void place_legend(cairo_t *cr, fig *F) {
  F->lg_outside = 0;
  collect_legend(F);
  if (F->nle == 0 || F->legend == L_NONE) {
    F->nle = 0;
    layout_pass(cr, F);
    return;
  }
  legend_size(cr, F);
  if (F->legend == L_OUTSIDE) {
    go_outside(cr, F);
  } else {
    layout_pass(cr, F);
    double m = 10 * F->s;
    /* the four corners first, then the middles of the right, left, top and bottom edges */
    double xr = F->px1 - m - F->lg_w, xl = F->px0 + m, xc = (F->px0 + F->px1 - F->lg_w) / 2;
    double yt = F->py0 + m, yb = F->py1 - m - F->lg_h, yc = (F->py0 + F->py1 - F->lg_h) / 2;
    double cx[8] = {xr, xl, xr, xl, xr, xl, xc, xc};
    double cy[8] = {yt, yt, yb, yb, yc, yc, yt, yb};
    int best = 0;
    if (F->legend >= L_UR) {
      best = F->legend - L_UR;
    } else {
      double bc = INFINITY;
      int fits = F->lg_w + 2 * m < F->px1 - F->px0 && F->lg_h + 2 * m < F->py1 - F->py0;
      for (int k = 0; k < 8; k++) {
        double c = legend_cover(F, cx[k], cy[k]);
        if (c < bc) {
          bc = c;
          best = k;
        }
      }
      if (bc > 0 || !fits) go_outside(cr, F);
    }
    if (!F->lg_outside) {
      F->lg_x = cx[best];
      F->lg_y = cy[best];
    }
  }
}

/* ======================================================================
 * drawing
 * ====================================================================== */

static void set_rgb(cairo_t *cr, rgb c, double alpha) { cairo_set_source_rgba(cr, c.r, c.g, c.b, alpha); }

static void set_dash(cairo_t *cr, int dash, double lw) {
  double d[4];
  switch (dash) {
  case D_DASHED: d[0] = 3.5 * lw; d[1] = 2 * lw; cairo_set_dash(cr, d, 2, 0); break;
  case D_DOTTED: d[0] = 0.01; d[1] = 2 * lw; cairo_set_dash(cr, d, 2, 0); break;
  case D_DASHDOT: d[0] = 3.5 * lw; d[1] = 1.6 * lw; d[2] = 0.01; d[3] = 1.6 * lw; cairo_set_dash(cr, d, 4, 0); break;
  default: cairo_set_dash(cr, NULL, 0, 0); break;
  }
}

static void marker_path(cairo_t *cr, int m, double x, double y, double r) {
  switch (m) {
  case M_SQUARE: cairo_rectangle(cr, x - r * 0.88, y - r * 0.88, r * 1.76, r * 1.76); break;
  case M_TRIANGLE:
    cairo_move_to(cr, x, y - r * 1.2);
    cairo_line_to(cr, x + r * 1.1, y + r * 0.75);
    cairo_line_to(cr, x - r * 1.1, y + r * 0.75);
    cairo_close_path(cr);
    break;
  case M_DIAMOND:
    cairo_move_to(cr, x, y - r * 1.25);
    cairo_line_to(cr, x + r * 1.0, y);
    cairo_line_to(cr, x, y + r * 1.25);
    cairo_line_to(cr, x - r * 1.0, y);
    cairo_close_path(cr);
    break;
  case M_STAR:
    for (int k = 0; k < 10; k++) {
      double ang = -PI / 2 + k * PI / 5, rr = (k % 2 ? 0.5 : 1.45) * r;
      if (k == 0) cairo_move_to(cr, x + rr * cos(ang), y + rr * sin(ang));
      else cairo_line_to(cr, x + rr * cos(ang), y + rr * sin(ang));
    }
    cairo_close_path(cr);
    break;
  case M_CROSS:
    cairo_move_to(cr, x - r, y - r);
    cairo_line_to(cr, x + r, y + r);
    cairo_move_to(cr, x - r, y + r);
    cairo_line_to(cr, x + r, y - r);
    break;
  case M_PLUS:
    cairo_move_to(cr, x - r * 1.2, y);
    cairo_line_to(cr, x + r * 1.2, y);
    cairo_move_to(cr, x, y - r * 1.2);
    cairo_line_to(cr, x, y + r * 1.2);
    break;
  default: cairo_new_sub_path(cr); cairo_arc(cr, x, y, r, 0, 2 * PI); break;
  }
}

static void draw_marker(cairo_t *cr, const fig *F, int m, double x, double y, double r, rgb c, double alpha) {
  marker_path(cr, m, x, y, r);
  if (m == M_CROSS || m == M_PLUS) {
    set_rgb(cr, c, alpha);
    cairo_set_line_width(cr, 2 * F->s);
    cairo_stroke(cr);
    return;
  }
  set_rgb(cr, c, alpha);
  cairo_fill_preserve(cr);
  /* big markers (learned points) get a dark edge, small ones a white one so
   * that overlapping points stay distinct */
  if (r > 6 * F->s) {
    cairo_set_source_rgba(cr, 0.1, 0.1, 0.1, fmin(1, alpha + 0.2));
    cairo_set_line_width(cr, 1.4 * F->s);
  } else {
    cairo_set_source_rgba(cr, 1, 1, 1, 0.8 * alpha);
    cairo_set_line_width(cr, 0.8 * F->s);
  }
  cairo_stroke(cr);
}

static rgb point_color(const series *s, double v) {
  if (s->cat) return PALETTE[(long)v % NPALETTE];
  double t = s->cmax > s->cmin ? (v - s->cmin) / (s->cmax - s->cmin) : 0.5;
  return viridis(t);
}

static double marker_r(const fig *F, const series *s) { return 3.8 * F->s * s->size; }

static void draw_series(cairo_t *cr, const fig *F, const series *s) {
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
  if (s->kind != K_SCATTER && s->n > 0) {
    double lw = 2.2 * F->s * s->size;
    int have = 0;
    cairo_new_path(cr);
    for (size_t j = 0; j < s->n; j++) {
      if (!valid_on(&F->ax, s->x[j]) || !valid_on(&F->ay, s->y[j])) {
        have = 0;
        continue;
      }
      double x = PX(F, s->x[j]), y = PY(F, s->y[j]);
      if (have) cairo_line_to(cr, x, y);
      else cairo_move_to(cr, x, y);
      have = 1;
    }
    set_rgb(cr, s->color, s->alpha);
    cairo_set_line_width(cr, lw);
    set_dash(cr, s->dash, lw);
    cairo_stroke(cr);
    cairo_set_dash(cr, NULL, 0, 0);
  }
  if (s->kind != K_LINE) {
    double r = marker_r(F, s);
    if (s->kind == K_BOTH) r *= 0.9;
    for (size_t j = 0; j < s->n; j++) {
      if (!valid_on(&F->ax, s->x[j]) || !valid_on(&F->ay, s->y[j])) continue;
      rgb c = s->color;
      if (s->cval) {
        if (!isfinite(s->cval[j])) continue;
        c = point_color(s, s->cval[j]);
      }
      draw_marker(cr, F, s->marker, PX(F, s->x[j]), PY(F, s->y[j]), r, c, s->alpha);
    }
  }
}

/* Snaps a coordinate to the pixel grid for crisp 1-pixel lines. */
static double crisp(double v) { return floor(v) + 0.5; }

static void draw_axes(cairo_t *cr, const fig *F) {
  double s = F->s, fs = 13 * s, tick_len = 5 * s;
  double x0 = crisp(F->px0), x1 = crisp(F->px1), y0 = crisp(F->py0), y1 = crisp(F->py1);
  /* grid */
  if (F->grid) {
    cairo_set_line_width(cr, 1);
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    for (int i = 0; i < F->ax.nt; i++) {
      double x = crisp(F->px0 + (F->ax.t[i].v - F->ax.lo) / (F->ax.hi - F->ax.lo) * (F->px1 - F->px0));
      cairo_move_to(cr, x, y0);
      cairo_line_to(cr, x, y1);
    }
    for (int i = 0; i < F->ay.nt; i++) {
      double y = crisp(F->py1 - (F->ay.t[i].v - F->ay.lo) / (F->ay.hi - F->ay.lo) * (F->py1 - F->py0));
      cairo_move_to(cr, x0, y);
      cairo_line_to(cr, x1, y);
    }
    cairo_stroke(cr);
  }
  /* frame */
  cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
  cairo_set_line_width(cr, 1);
  cairo_rectangle(cr, x0, y0, x1 - x0, y1 - y0);
  cairo_stroke(cr);
  /* ticks and labels */
  font(cr, fs, 0);
  double asc = ascent(cr);
  cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
  double xlab_base = y1 + tick_len + 3 * s + asc;
  for (int i = 0; i < F->ax.nt; i++) {
    const tick *t = &F->ax.t[i];
    double x = F->px0 + (t->v - F->ax.lo) / (F->ax.hi - F->ax.lo) * (F->px1 - F->px0);
    cairo_move_to(cr, crisp(x), y1);
    cairo_line_to(cr, crisp(x), y1 + tick_len);
    cairo_stroke(cr);
    double w = label_w(cr, fs, t->txt, t->sup);
    double base = y1 + tick_len + 3 * s + asc + (t->sup[0] ? 0.3 * fs : 0);
    draw_label(cr, fs, x - w / 2, base, t->txt, t->sup);
    if (base > xlab_base) xlab_base = base;
  }
  for (int i = 0; i < F->ax.nminor; i++) {
    double x = crisp(F->px0 + (F->ax.minor[i] - F->ax.lo) / (F->ax.hi - F->ax.lo) * (F->px1 - F->px0));
    cairo_move_to(cr, x, y1);
    cairo_line_to(cr, x, y1 + tick_len * 0.55);
  }
  cairo_stroke(cr);
  for (int i = 0; i < F->ay.nt; i++) {
    const tick *t = &F->ay.t[i];
    double y = F->py1 - (t->v - F->ay.lo) / (F->ay.hi - F->ay.lo) * (F->py1 - F->py0);
    cairo_move_to(cr, x0 - tick_len, crisp(y));
    cairo_line_to(cr, x0, crisp(y));
    cairo_stroke(cr);
    double w = label_w(cr, fs, t->txt, t->sup);
    draw_label(cr, fs, x0 - tick_len - 4 * s - w, y + asc * 0.36 + (t->sup[0] ? 0.15 * fs : 0), t->txt, t->sup);
  }
  for (int i = 0; i < F->ay.nminor; i++) {
    double y = crisp(F->py1 - (F->ay.minor[i] - F->ay.lo) / (F->ay.hi - F->ay.lo) * (F->py1 - F->py0));
    cairo_move_to(cr, x0 - tick_len * 0.55, y);
    cairo_line_to(cr, x0, y);
  }
  cairo_stroke(cr);
  /* multipliers: "x10^e" at the end of the axis */
  if (F->ay.mult) {
    char sup[16];
    snprintf(sup, sizeof sup, "%d", F->ay.mult);
    nice_minus(sup, sizeof sup);
    draw_label(cr, fs, F->px0, F->py0 - 6 * s, "\xc3\x97" "10", sup);
  }
  font(cr, 15 * s, 0);
  double lab_asc = ascent(cr);
  double xl_base = xlab_base + 8 * s + lab_asc;
  if (F->ax.mult) {
    char sup[16];
    snprintf(sup, sizeof sup, "%d", F->ax.mult);
    nice_minus(sup, sizeof sup);
    double w = label_w(cr, fs, "\xc3\x97" "10", sup);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    draw_label(cr, fs, F->px1 - w, xl_base, "\xc3\x97" "10", sup);
  }
  /* axis labels and title */
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  if (F->xlabel) {
    font(cr, 15 * s, 0);
    double w = text_w(cr, F->xlabel);
    cairo_move_to(cr, (F->px0 + F->px1) / 2 - w / 2, xl_base);
    cairo_show_text(cr, F->xlabel);
  }
  if (F->ylabel) {
    font(cr, 15 * s, 0);
    double w = text_w(cr, F->ylabel);
    cairo_save(cr);
    /* beside the tick labels, also when an equal-aspect plot area is narrowed */
    double lab_h15 = line_h(cr);
    double lx = F->px0 - max_tick_w(cr, F, &F->ay) - 10 * s - 8 * s - lab_h15;
    font(cr, 15 * s, 0);
    cairo_move_to(cr, fmax(12 * s, lx) + lab_asc, (F->py0 + F->py1) / 2 + w / 2);
    cairo_rotate(cr, -PI / 2);
    cairo_show_text(cr, F->ylabel);
    cairo_restore(cr);
  }
  if (F->title) {
    font(cr, 17 * s, 1);
    double asc17 = ascent(cr);
    show_fitted(cr, F->title, 17 * s, 1, (F->px0 + F->px1) / 2, 12 * s + asc17, 6 * s, F->w - 12 * s);
  }
}

static void draw_legend(cairo_t *cr, const fig *F) {
  if (F->nle == 0) return;
  double s = F->s, fs = 13 * s;
  cairo_rectangle(cr, F->lg_x, F->lg_y, F->lg_w, F->lg_h);
  cairo_set_source_rgba(cr, 1, 1, 1, 0.92);
  cairo_fill_preserve(cr);
  cairo_set_source_rgb(cr, 0.8, 0.8, 0.8);
  cairo_set_line_width(cr, 1);
  cairo_stroke(cr);
  font(cr, fs, 0);
  double asc = ascent(cr), row = fs * 1.45;
  for (int i = 0; i < F->nle; i++) {
    const legend_entry *e = &F->le[i];
    int r = i / F->lg_cols, c = i % F->lg_cols;
    double cy = F->lg_y + 8 * s + row * r + row / 2;
    double sx0 = F->lg_x + 10 * s + c * F->lg_colw, sx1 = sx0 + 30 * s;
    if (e->kind != K_SCATTER) {
      double lw = 2.2 * s * fmin(e->size, 2.5);
      cairo_set_line_cap(cr, e->dash == D_DOTTED || e->dash == D_DASHDOT ? CAIRO_LINE_CAP_ROUND : CAIRO_LINE_CAP_BUTT);
      set_dash(cr, e->dash, lw);
      cairo_move_to(cr, sx0, cy);
      cairo_line_to(cr, sx1, cy);
      set_rgb(cr, e->color, e->alpha);
      cairo_set_line_width(cr, lw);
      cairo_stroke(cr);
      cairo_set_dash(cr, NULL, 0, 0);
    }
    if (e->kind != K_LINE) {
      /* markers in the legend stay legible even for tiny or huge plot markers */
      double r = 3.8 * s * fmax(0.9, fmin(e->size, 2));
      draw_marker(cr, F, e->marker, (sx0 + sx1) / 2, cy, r, e->color, e->alpha);
    }
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    font(cr, fs, 0);
    cairo_move_to(cr, sx1 + 8 * s, cy - line_h(cr) / 2 + asc);
    cairo_show_text(cr, e->text);
  }
}

static void assign_colors(fig *F) {
  /* the palette colours taken by point classes are skipped for series */
  int k = 0;
  for (int i = 0; i < F->ns; i++)
    if (F->sv[i].cval && F->sv[i].cat && F->sv[i].cmax >= k) k = (int)F->sv[i].cmax + 1;
  for (int i = 0; i < F->ns; i++) {
    series *s = &F->sv[i];
    if (!s->has_color) {
      /* per-point coloured series use the palette for the points, so they do
       * not consume a series colour */
      s->color = s->cval ? PALETTE[6] : PALETTE[k++ % NPALETTE];
    }
    if (s->alpha < 0) s->alpha = (s->kind != K_LINE && s->n > 200) ? 0.7 : 1;
  }
}

static void draw_plot(cairo_t *cr, fig *F) {
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  draw_axes(cr, F);
  cairo_save(cr);
  cairo_rectangle(cr, F->px0, F->py0, F->px1 - F->px0, F->py1 - F->py0);
  cairo_clip(cr);
  for (int i = 0; i < F->ns; i++) draw_series(cr, F, &F->sv[i]);
  cairo_restore(cr);
  draw_legend(cr, F);
}

/* Grid of images, each normalised to its own range (or the shared range). */
/* The colour of value v on the scale [lo, hi]. */
static rgb image_color(const fig *F, double v, double lo, double hi) {
  double t = isfinite(v) ? (v - lo) / (hi - lo) : 0;
  rgb col;
  if (F->cmap == CM_VIRIDIS) col = viridis(t);
  else if (F->cmap == CM_DIVERGING) col = diverging(2 * t - 1);
  else {
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    if (F->cmap == CM_GRAY_R) t = 1 - t;
    col.r = col.g = col.b = t;
  }
  return col;
}

/* The value range of images [i0, i1): finite values only; a constant one
 * gets a unit either side, diverging maps are symmetric about 0. */
static void image_range(const fig *F, int i0, int i1, double *plo, double *phi) {
  double lo = INFINITY, hi = -INFINITY;
  for (int i = i0; i < i1; i++) {
    const image *im = &F->im[i];
    for (size_t k = 0; k < im->h * im->w; k++)
      if (isfinite(im->d[k])) {
        if (im->d[k] < lo) lo = im->d[k];
        if (im->d[k] > hi) hi = im->d[k];
      }
  }
  if (!(lo < hi)) {
    lo = isfinite(lo) ? lo - 1 : 0;
    hi = lo + 2;
  }
  if (F->cmap == CM_DIVERGING) {
    double m = fmax(fabs(lo), fabs(hi));
    lo = -m;
    hi = m;
  }
  *plo = lo;
  *phi = hi;
}

/* The colour bar right of an image grid: the colour map from lo (bottom)
 * to hi (top) over [y0, y1], ticks and labels on its right. */
static void draw_colorbar(cairo_t *cr, fig *F, double x, double y0, double y1, double bw) {
  double s = F->s, fs = 13 * s, lo = F->ac.lo, hi = F->ac.hi, h = y1 - y0;
  enum { STEPS = 256 };
  cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, STEPS);
  if (cairo_surface_status(img) == CAIRO_STATUS_SUCCESS) {
    cairo_surface_flush(img);
    unsigned char *data = cairo_image_surface_get_data(img);
    int stride = cairo_image_surface_get_stride(img);
    for (int k = 0; k < STEPS; k++) {
      rgb col = image_color(F, hi - (k + 0.5) / STEPS * (hi - lo), lo, hi);
      uint32_t px = 0xff000000u | ((uint32_t)lround(col.r * 255) << 16) | ((uint32_t)lround(col.g * 255) << 8) |
                    (uint32_t)lround(col.b * 255);
      memcpy(data + (size_t)k * (size_t)stride, &px, 4);
    }
    cairo_surface_mark_dirty(img);
    cairo_save(cr);
    cairo_rectangle(cr, x, y0, bw, h);
    cairo_clip(cr);
    cairo_translate(cr, x, y0);
    cairo_scale(cr, bw, h / STEPS);
    cairo_set_source_surface(cr, img, 0, 0);
    cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_NEAREST);
    cairo_paint(cr);
    cairo_restore(cr);
  }
  cairo_surface_destroy(img);
  cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
  cairo_set_line_width(cr, 1);
  cairo_rectangle(cr, x - 0.5, y0 - 0.5, bw + 1, h + 1);
  cairo_stroke(cr);
  font(cr, fs, 0);
  double asc = ascent(cr);
  for (int i = 0; i < F->ac.nt; i++) {
    const tick *t = &F->ac.t[i];
    double y = y1 - (t->v - lo) / (hi - lo) * h;
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_move_to(cr, x + bw, crisp(y));
    cairo_line_to(cr, x + bw + 5 * s, crisp(y));
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    draw_label(cr, fs, x + bw + 8 * s, y + asc * 0.4, t->txt, t->sup);
  }
  if (F->ac.mult) {
    char sup[16];
    snprintf(sup, sizeof sup, "%d", F->ac.mult);
    nice_minus(sup, sizeof sup);
    draw_label(cr, fs, x, y0 - 6 * s, "\xc3\x97" "10", sup);
  }
}

static void draw_images(cairo_t *cr, fig *F) {
  double s = F->s, pad = 12 * s;
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  font(cr, 17 * s, 1);
  double title_h = F->title ? line_h(cr) + pad * 0.6 : 0;
  font(cr, 13 * s, 0);
  int any_label = 0;
  for (int i = 0; i < F->nim; i++)
    if (F->im[i].label || F->im[i].num[0]) any_label = 1;
  double lab_h = any_label ? line_h(cr) + 4 * s : 0;
  double aspect = (double)F->im[0].w / (double)F->im[0].h;
  double gap = 8 * s;
  /* one colour scale for every image (unless range = "each"), shown by a bar on the right */
  double cb_w = 0, bar_w = 14 * s;
  F->has_cbar = !F->each;
  if (F->has_cbar) {
    if (F->has_range) {
      F->ac.lo = F->range[0];
      F->ac.hi = F->range[1];
    } else {
      image_range(F, 0, F->nim, &F->ac.lo, &F->ac.hi);
    }
    make_ticks(cr, F, &F->ac, F->h - 2 * pad - title_h, 0);
    cb_w = 2 * gap + bar_w + 8 * s + max_tick_w(cr, F, &F->ac);
  }
  int best_c = 1;
  double best = -1;
  for (int c = 1; c <= F->nim; c++) {
    if (F->ncols && c != F->ncols) continue;
    int r = (F->nim + c - 1) / c;
    double cw = (F->w - 2 * pad - cb_w - (c - 1) * gap) / c;
    double ch = (F->h - 2 * pad - title_h - r * lab_h - (r - 1) * gap) / r;
    double size = fmin(cw, ch * aspect);
    if (size > best + 1e-9) {
      best = size;
      best_c = c;
    }
  }
  int nc = best_c, nr = (F->nim + nc - 1) / nc;
  double cw = best > 1 ? best : 1, ch = cw / aspect;
  double total_w = nc * cw + (nc - 1) * gap, total_h = nr * (ch + lab_h) + (nr - 1) * gap;
  double ox = (F->w - cb_w - total_w) / 2, oy = pad + title_h + (F->h - 2 * pad - title_h - total_h) / 2;
  if (F->title) {
    /* the title sits just above the grid, the whole block centred */
    oy = (F->h - title_h - total_h) / 2 + title_h;
    if (oy < pad + title_h) oy = pad + title_h;
    font(cr, 17 * s, 1);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    show_fitted(cr, F->title, 17 * s, 1, F->w / 2.0, oy - title_h + ascent(cr) - pad * 0.2, pad, F->w - 2 * pad);
  }
  for (int i = 0; i < F->nim; i++) {
    image *im = &F->im[i];
    int r = i / nc, c = i % nc;
    double x = ox + c * (cw + gap), y = oy + r * (ch + lab_h + gap);
    double lo, hi;
    if (F->has_cbar) {
      lo = F->ac.lo;
      hi = F->ac.hi;
    } else {
      image_range(F, i, i + 1, &lo, &hi);
    }
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)im->w, (int)im->h);
    if (cairo_surface_status(img) != CAIRO_STATUS_SUCCESS) {
      cairo_surface_destroy(img);
      continue;
    }
    cairo_surface_flush(img);
    unsigned char *data = cairo_image_surface_get_data(img);
    int stride = cairo_image_surface_get_stride(img);
    for (size_t yy = 0; yy < im->h; yy++)
      for (size_t xx = 0; xx < im->w; xx++) {
        rgb col = image_color(F, im->d[yy * im->w + xx], lo, hi);
        uint32_t px = 0xff000000u | ((uint32_t)lround(col.r * 255) << 16) | ((uint32_t)lround(col.g * 255) << 8) |
                      (uint32_t)lround(col.b * 255);
        memcpy(data + yy * (size_t)stride + xx * 4, &px, 4);
      }
    cairo_surface_mark_dirty(img);
    cairo_save(cr);
    cairo_rectangle(cr, x, y, cw, ch);
    cairo_clip(cr);
    cairo_translate(cr, x, y);
    cairo_scale(cr, cw / im->w, ch / im->h);
    cairo_set_source_surface(cr, img, 0, 0);
    cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_NEAREST);
    cairo_paint(cr);
    cairo_restore(cr);
    cairo_surface_destroy(img);
    cairo_set_source_rgb(cr, 0.6, 0.6, 0.6);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, x - 0.5, y - 0.5, cw + 1, ch + 1);
    cairo_stroke(cr);
    const char *lab = im->label ? im->label : (im->num[0] ? im->num : NULL);
    if (lab) {
      font(cr, 13 * s, 0);
      cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
      double w = text_w(cr, lab);
      cairo_move_to(cr, x + cw / 2 - w / 2, y + ch + 3 * s + ascent(cr));
      cairo_show_text(cr, lab);
    }
  }
  if (F->has_cbar) {
    /* as tall as the grid's images (a one-row grid: at least 150 px) */
    double y0 = oy, y1 = oy + total_h - lab_h;
    if (y1 - y0 < 150 * s) {
      double c = (y0 + y1) / 2;
      y0 = fmax(pad + title_h, c - 75 * s);
      y1 = fmin(F->h - pad, y0 + 150 * s);
    }
    make_ticks(cr, F, &F->ac, y1 - y0, 0);
    /* room above the bar for its x10^k */
    if (F->ac.mult && y0 < pad + title_h + 16 * s) {
      y0 = pad + title_h + 16 * s;
      make_ticks(cr, F, &F->ac, y1 - y0, 0);
    }
    draw_colorbar(cr, F, ox + total_w + 2 * gap, y0, y1, bar_w);
  }
}

/* ======================================================================
 * output
 * ====================================================================== */

typedef struct sink { FILE *fp; int err; } sink;

static cairo_status_t write_cb(void *closure, const unsigned char *data, unsigned int len) {
  sink *k = closure;
  if (fwrite(data, 1, len, k->fp) != len) {
    k->err = errno ? errno : EIO;
    return CAIRO_STATUS_WRITE_ERROR;
  }
  return CAIRO_STATUS_SUCCESS;
}

enum { FMT_PNG, FMT_SVG, FMT_PDF };

static int ext_format(const char *path, int *fmt) {
  const char *dot = strrchr(path, '.');
  const char *slash = strrchr(path, '/');
  if (!dot || (slash && dot < slash)) return -1;
  char e[8];
  size_t n = strlen(dot + 1);
  if (n == 0 || n >= sizeof e) return -1;
  for (size_t i = 0; i <= n; i++) e[i] = (char)tolower((unsigned char)dot[1 + i]);
  if (strcmp(e, "png") == 0) *fmt = FMT_PNG;
  else if (strcmp(e, "svg") == 0) *fmt = FMT_SVG;
  else if (strcmp(e, "pdf") == 0) *fmt = FMT_PDF;
  else return -1;
  return 0;
}

static void render(cairo_t *cr, fig *F) {
  cairo_font_options_t *fo = cairo_font_options_create();
  cairo_font_options_set_hint_metrics(fo, CAIRO_HINT_METRICS_OFF);
  cairo_font_options_set_hint_style(fo, CAIRO_HINT_STYLE_SLIGHT);
  cairo_font_options_set_antialias(fo, CAIRO_ANTIALIAS_GRAY);
  cairo_set_font_options(cr, fo);
  cairo_font_options_destroy(fo);
  if (F->nim) {
    draw_images(cr, F);
  } else {
    place_legend(cr, F);
    draw_plot(cr, F);
  }
}

static int write_figure(blo_state *S, callargs *a, fig *F, const char *path, int fmt) {
  sink k = {NULL, 0};
  k.fp = fopen(path, "wb");
  if (!k.fp) return perr(S, a, "cannot open '%s' for writing: %s", path, strerror(errno));
  cairo_surface_t *surf = NULL;
  if (fmt == FMT_PNG) {
    surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, F->w, F->h);
  } else if (fmt == FMT_SVG) {
#if CAIRO_HAS_SVG_SURFACE
    surf = cairo_svg_surface_create_for_stream(write_cb, &k, F->w, F->h);
#endif
  } else {
#if CAIRO_HAS_PDF_SURFACE
    surf = cairo_pdf_surface_create_for_stream(write_cb, &k, F->w, F->h);
#endif
  }
  if (!surf) {
    fclose(k.fp);
    remove(path);
    return perr(S, a, "this cairo cannot write %s files", fmt == FMT_SVG ? "SVG" : "PDF");
  }
  cairo_t *cr = cairo_create(surf);
  render(cr, F);
  cairo_status_t st = cairo_status(cr);
  cairo_destroy(cr);
  if (st == CAIRO_STATUS_SUCCESS) {
    if (fmt == FMT_PNG) st = cairo_surface_write_to_png_stream(surf, write_cb, &k);
    else {
      cairo_surface_finish(surf);
      st = cairo_surface_status(surf);
    }
  }
  cairo_surface_destroy(surf);
  int cerr = fclose(k.fp);
  if (st == CAIRO_STATUS_SUCCESS && cerr == 0) return EV_OK;
  remove(path);
  if (k.err) return perr(S, a, "cannot write '%s': %s", path, strerror(k.err));
  if (st != CAIRO_STATUS_SUCCESS) return perr(S, a, "cannot draw '%s': %s", path, cairo_status_to_string(st));
  return perr(S, a, "cannot write '%s': %s", path, strerror(errno));
}

/* ======================================================================
 * the builtin
 * ====================================================================== */

static int opt_str(blo_state *S, callargs *a, const char *name, const char **out) {
  value *v = arg_named(a, name);
  *out = NULL;
  if (!v) return EV_OK;
  if (v->kind != V_STR) {
    char d[96];
    describe(*v, d, sizeof d);
    return perr(S, a, "%s must be a string, got %s", name, d);
  }
  *out = v_cstr(*v);
  if (!(*out)[0]) *out = NULL;
  return EV_OK;
}

/* The labelled tick values of an axis (data space) as a vector, or [] when
 * it has none (an image grid). */
static int axis_value(blo_state *S, const axis *ax, int ticks, value *out) {
  double buf[MAX_TICKS];
  size_t n = 0;
  if (ticks) {
    for (int i = 0; i < ax->nt; i++) buf[n++] = ax->log ? pow(10, ax->t[i].v) : ax->t[i].v;
  } else {
    buf[n++] = ax->log ? pow(10, ax->lo) : ax->lo;
    buf[n++] = ax->log ? pow(10, ax->hi) : ax->hi;
  }
  /* 15 digits: a label's value reads back as written (0.2, not
   * 0.20000000000000004 from 10^log10(0.2)), and -0 as 0 */
  for (size_t i = 0; i < n; i++) {
    char num[32];
    snprintf(num, sizeof num, "%.15g", buf[i]);
    buf[i] = strtod(num, NULL) + 0.0;
  }
  if (n == 0) {
    olist *l = list_new(S, 0);
    if (!l) return -1;
    *out = v_nil();
    out->kind = V_LIST;
    out->u.o = &l->h;
    return 0;
  }
  blo_tensor *t = tn_from(&S->tn, 1, &n, buf);
  if (!t) return -1;
  *out = v_tensor(t);
  return 0;
}

/* plot(..., info = true): what was drawn, for checks of a figure:
 * {xlim = [lo, hi], ylim = [lo, hi], xticks = [...], yticks = [...]}, the
 * axis ranges and the labelled tick values in data units. */
static int layout_record(blo_state *S, callargs *a, const fig *F, value *out) {
  orec *rec = rec_new(S);
  if (!rec) return oom(S, a);
  value rv = v_nil();
  rv.kind = V_REC;
  rv.u.o = &rec->h;
  static const char *const names[] = {"xlim", "ylim", "xticks", "yticks", "crange", "cticks"};
  for (int i = 0; i < 4; i++) {
    value v;
    const axis *ax = i % 2 ? &F->ay : &F->ax;
    if (F->nim && i < 2) {   /* an image grid has no data axes */
      if (axis_value(S, ax, 1, &v)) goto fail;
    } else if (axis_value(S, ax, i >= 2 || F->nim, &v)) {
      goto fail;
    }
    if (rec_set(S, rec, names[i], v)) goto fail;
  }
  if (rec_set(S, rec, "hidden", v_num((double)F->hidden))) goto fail;
  /* the colour bar of an image grid (empty lists without one) */
  for (int i = 4; i < 6; i++) {
    value v;
    if (axis_value(S, &F->ac, i == 5 || !F->has_cbar, &v)) goto fail;
    if (rec_set(S, rec, names[i], v)) goto fail;
  }
  *out = rv;
  return EV_OK;
fail:
  v_release(S, &rv);
  if (S->err.status == BLO_ERROR_MEMORY) return EV_ERR;
  return oom(S, a);
}

static int bi_plot(blo_state *S, callargs *a, value *out) {
  static const char *const allowed[] = {
    "x", "y", "labels", "kind", "color", "classes", "marker", "dash", "alpha", "size", "series",
    "xlabel", "ylabel", "title", "logx", "logy", "xlim", "ylim", "equal", "grid", "legend",
    "width", "height", "images", "cmap", "range", "ncols", "info", NULL};
  if (arg_check_named(S, a, allowed)) return EV_ERR;
  const char *path;
  if (arg_str(S, a, 0, &path)) return EV_ERR;
  int fmt;
  if (ext_format(path, &fmt))
    return perr(S, a, "cannot tell the format of '%s': the file name must end in .png, .svg or .pdf", path);
  if (!S->cfg.allow_files) return perr(S, a, "file access is disabled by the host");

  fig F;
  memset(&F, 0, sizeof F);
  int rc = EV_OK;
  long w = 800, h = 500;
  int logx = 0, logy = 0;
  if (named_int(S, a, "width", 800, &w) || named_int(S, a, "height", 500, &h) ||
      named_bool(S, a, "logx", 0, &logx) || named_bool(S, a, "logy", 0, &logy) ||
      named_bool(S, a, "equal", 0, &F.equal) || named_bool(S, a, "grid", 1, &F.grid) ||
      opt_str(S, a, "title", &F.title) || opt_str(S, a, "xlabel", &F.xlabel) || opt_str(S, a, "ylabel", &F.ylabel))
    return EV_ERR;
  if (w < 100 || w > 8000 || h < 100 || h > 8000)
    return perr(S, a, "width and height must be between 100 and 8000 pixels, got %ldx%ld", w, h);
  F.w = (int)w;
  F.h = (int)h;
  F.s = sqrt((double)w * (double)h / (800.0 * 500.0));
  if (F.s < 0.9) F.s = 0.9;
  if (F.s > 4) F.s = 4;
  F.ax.log = logx;
  F.ay.log = logy;

  value *lv = arg_named(a, "legend");
  F.legend = L_AUTO;
  if (lv) {
    if (lv->kind == V_STR) {
      static const char *const LEG[] = {"auto", "none", "outside", "upper right", "upper left", "lower right",
                                        "lower left", NULL};
      if (enum_arg(S, a, *lv, "legend", LEG,
                   "\"auto\", \"none\", \"outside\", \"upper right\", \"upper left\", \"lower right\", \"lower left\"",
                   &F.legend))
        return EV_ERR;
    } else {
      int on;
      if (named_bool(S, a, "legend", 1, &on)) return EV_ERR;
      F.legend = on ? L_AUTO : L_NONE;
    }
  }

  value *yv = arg_named(a, "y"), *xv = arg_named(a, "x"), *sv = arg_named(a, "series"), *iv = arg_named(a, "images");
  if (iv) {
    if (yv || xv || sv) return perr(S, a, "images cannot be combined with x, y or series");
    rc = parse_images(S, a, &F, *iv);
    goto draw;
  }
  if (!yv && !sv) return perr(S, a, "nothing to draw: give y = (and optionally x =), series = or images =");
  if (xv && !yv) return perr(S, a, "x is given without y");
  if (parse_lim(S, a, "xlim", &F.ax) || parse_lim(S, a, "ylim", &F.ay)) return EV_ERR;
  if (yv && (rc = parse_xy(S, a, &F, xv, yv))) goto done;
  if (sv) {
    if (sv->kind == V_REC) {
      rc = parse_series_rec(S, a, &F, *sv, 0);
    } else if (sv->kind == V_LIST) {
      olist *l = (olist *)sv->u.o;
      for (int i = 0; i < l->n && rc == EV_OK; i++) rc = parse_series_rec(S, a, &F, l->items[i], i);
    } else {
      char d[96];
      describe(*sv, d, sizeof d);
      rc = perr(S, a, "series must be a list of records {x =, y =, ...}, got %s", d);
    }
    if (rc) goto done;
  }
  {
    int nle = 0;
    for (int i = 0; i < F.ns; i++) nle += F.sv[i].nclasses + 1;
    F.le = calloc((size_t)(nle ? nle : 1), sizeof(legend_entry));
    if (!F.le) {
      rc = oom(S, a);
      goto done;
    }
  }
  assign_colors(&F);
  data_range(&F, &F.ax, 1);
  data_range(&F, &F.ay, 0);
  count_hidden(S, a, &F);
draw:
  if (rc == EV_OK) rc = write_figure(S, a, &F, path, fmt);
  if (rc == EV_OK) interp_figure_written(S, path, fmt == FMT_PNG ? "png" : fmt == FMT_SVG ? "svg" : "pdf");
  if (rc == EV_OK) {
    int info = 0;
    rc = named_bool(S, a, "info", 0, &info);
    *out = v_nil();
    if (rc == EV_OK && info) rc = layout_record(S, a, &F, out);
  }
done:
  fig_free(&F);
  return rc;
}

#endif /* HAVE_CAIRO */

static const builtin_def plot_builtins[] = {
  {"plot", bi_plot, 1, 1,
   "plot(path, x =, y =, labels =, kind = \"line\", xlabel =, ylabel =, title =, logx =, logy =, series =, images =, info = false)",
   "write a figure (line and scatter series, or an image grid) to a .png, .svg or .pdf file; info = true: returns {xlim, ylim, xticks, yticks, crange, cticks, hidden}", 0},
};

enum { NPLOT = sizeof plot_builtins / sizeof plot_builtins[0] };

const builtin_def *plot_builtin_find(const char *name) {
  for (size_t i = 0; i < NPLOT; i++)
    if (strcmp(name, plot_builtins[i].name) == 0) return &plot_builtins[i];
  return NULL;
}

const builtin_def *plot_builtin_at(size_t i) { return i < NPLOT ? &plot_builtins[i] : NULL; }
