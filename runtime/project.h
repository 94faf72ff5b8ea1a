/* project.h: Euclidean projections onto the inner constraint sets and the
 * products with their Jacobians (plain arrays, no interpreter state).
 *
 * Each projection P has a Jacobian J = dP/dz that exists almost everywhere
 * and is symmetric, so J^T a = J a: the same routine serves forward and
 * reverse differentiation through a projected step. */
#ifndef BLO_PROJECT_H
#define BLO_PROJECT_H

#include <stddef.h>

/* box [lo, hi], n entries: y_i = min(max(y_i, lo_i), hi_i) */
void proj_box(double *y, const double *lo, const double *hi, size_t n);
/* The side of the box that z_i is beyond: 0 inside (P follows z), 1 below lo,
 * 2 above hi.  lo_i == hi_i counts as 1: the coordinate is pinned. */
int proj_box_side(double z, double lo, double hi);

/* probability simplex {y >= 0, sum y = 1}, one row of k >= 1 entries:
 * y_i = max(z_i - tau, 0) with tau chosen so the row sums to 1.  Sort-based
 * (O(k log k)); work: k doubles. */
void proj_simplex(double *y, size_t k, double *work);
/* Reference: tau by bisection on sum max(z_i - tau, 0) = 1 (for tests). */
void proj_simplex_ref(double *y, size_t k);
/* a <- J a for the simplex at a projected row p (support S = {p_i > 0}):
 * a_i - mean_{j in S} a_j on S, 0 off S (the projection onto the tangent
 * space of the face of the simplex that holds p). */
void proj_simplex_tangent(const double *p, double *a, size_t k);

/* ball {|y| <= r}, n entries: y <- y min(1, r / |y|).  Returns |z| (the norm
 * before projection). */
double proj_ball(double *y, size_t n, double r);
/* a <- s (a - u (u'a)) with u unit: the ball's Jacobian r/|z| (I - u u') at
 * z = |z| u outside the ball (s = r / |z|), or its tangent projection (s = 1).
 * Returns u'a before the update. */
double proj_ball_tangent(const double *u, double *a, size_t n, double s);

#endif
