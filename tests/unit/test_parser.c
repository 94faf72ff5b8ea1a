/* test_parser.c: the scanner and parser, checked through the AST they build
 * and the errors they report. */
#include <check.h>

#include "check_run.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

typedef struct { int n; char msgs[8][256]; int lines[8], cols[8]; } errs;

static void collect(void *ud, const char *chunk, int line, int col, const char *msg) {
  errs *e = ud;
  (void)chunk;
  if (e->n < 8) {
    snprintf(e->msgs[e->n], sizeof e->msgs[0], "%s", msg);
    e->lines[e->n] = line;
    e->cols[e->n] = col;
  }
  e->n++;
}

static parse_state ps;
static errs E;

static ast_node *parse(const char *src) {
  memset(&E, 0, sizeof E);
  parse_chunk(&ps, "t.blo", src, strlen(src), collect, &E);
  return ps.root;
}

static void done(void) { ast_arena_free(ps.arena); ps.arena = NULL; }

START_TEST(test_let_and_precedence) {
  ast_node *r = parse("let y = 1 + 2 * 3 ^ 2\n");
  ck_assert_int_eq(E.n, 0);
  ck_assert_int_eq(r->nkids, 1);
  ast_node *let = r->kids[0];
  ck_assert_int_eq(let->kind, N_LET);
  ck_assert_str_eq(let->name, "y");
  ast_node *add = let->a;
  ck_assert_int_eq(add->kind, N_BINARY);
  ck_assert_int_eq(add->op, OP_ADD);
  ck_assert_int_eq(add->b->op, OP_MUL);
  ck_assert_int_eq(add->b->b->op, OP_POW);
  done();
}
END_TEST

START_TEST(test_unary_minus_binds_looser_than_pow) {
  ast_node *r = parse("-x^2");
  ck_assert_int_eq(E.n, 0);
  ast_node *e = r->kids[0]->a;
  ck_assert_int_eq(e->kind, N_UNARY);
  ck_assert_int_eq(e->a->op, OP_POW);
  done();
}
END_TEST

START_TEST(test_transpose_matmul) {
  ast_node *r = parse("let g = 2 * X' @ (X @ w - y) / n");
  ck_assert_int_eq(E.n, 0);
  ast_node *div = r->kids[0]->a;
  ck_assert_int_eq(div->op, OP_DIV);
  ast_node *mm = div->a;            /* (2 * X') @ (...) : same precedence, left assoc */
  ck_assert_int_eq(mm->op, OP_MATMUL);
  ck_assert_int_eq(mm->a->op, OP_MUL);
  ck_assert_int_eq(mm->a->b->kind, N_TRANSPOSE);
  done();
}
END_TEST

START_TEST(test_statements_and_separators) {
  ast_node *r = parse("let a = 1; let b = 2\n\n\nprint a, b;\n");
  ck_assert_int_eq(E.n, 0);
  ck_assert_int_eq(r->nkids, 3);
  ck_assert_int_eq(r->kids[2]->kind, N_PRINT);
  ck_assert_int_eq(r->kids[2]->nkids, 2);
  done();
}
END_TEST

START_TEST(test_block_vs_record_braces) {
  ast_node *r = parse("let o = {lr = 0.1,\n steps = 5}\nif o.lr > 0 { print 1 } else { print 2 }\n");
  ck_assert_int_eq(E.n, 0);
  ck_assert_int_eq(r->nkids, 2);
  ck_assert_int_eq(r->kids[0]->a->kind, N_RECORD);
  ck_assert_int_eq(r->kids[0]->a->nkids, 2);
  ast_node *iff = r->kids[1];
  ck_assert_int_eq(iff->kind, N_IF);
  ck_assert_int_eq(iff->b->kind, N_BLOCK);
  ck_assert_ptr_nonnull(iff->c);
  done();
}
END_TEST

START_TEST(test_functions) {
  ast_node *r = parse("fn f(a, b) = a + b\nfn g(w, lr) {\n  let t = w\n  return t - lr\n}\n");
  ck_assert_int_eq(E.n, 0);
  ck_assert_int_eq(r->nkids, 2);
  ck_assert_int_eq(r->kids[0]->kind, N_FNDEF);
  ck_assert_int_eq(r->kids[0]->nkids, 2);
  ck_assert_int_eq(r->kids[0]->is_block, 0);
  ck_assert_int_eq(r->kids[1]->is_block, 1);
  ck_assert_int_eq(r->kids[1]->a->nkids, 2);
  done();
}
END_TEST

START_TEST(test_loops_and_ranges) {
  ast_node *r = parse("for i in 0..n + 1 { continue }\nwhile x < 3 { x = x + 1; break }\n");
  ck_assert_int_eq(E.n, 0);
  ck_assert_int_eq(r->kids[0]->kind, N_FOR);
  ck_assert_int_eq(r->kids[0]->a->kind, N_RANGE);
  ck_assert_int_eq(r->kids[0]->a->b->op, OP_ADD);   /* 0..(n+1) */
  ck_assert_int_eq(r->kids[1]->kind, N_WHILE);
  ck_assert_int_eq(r->kids[1]->b->nkids, 2);
  done();
}
END_TEST

START_TEST(test_indexing_and_slices) {
  ast_node *r = parse("print X[1, :], X[:, 2], w[1:3], w[:2], w[1:], w[-1]");
  ck_assert_int_eq(E.n, 0);
  ast_node *p = r->kids[0];
  ck_assert_int_eq(p->nkids, 6);
  ck_assert_int_eq(p->kids[0]->kind, N_INDEX);
  ck_assert_int_eq(p->kids[0]->nkids, 2);
  ck_assert_int_eq(p->kids[0]->kids[1]->kind, N_SLICE);
  ck_assert_ptr_null(p->kids[0]->kids[1]->a);
  ck_assert_int_eq(p->kids[2]->kids[0]->kind, N_SLICE);
  ck_assert_ptr_nonnull(p->kids[2]->kids[0]->a);
  ck_assert_ptr_nonnull(p->kids[2]->kids[0]->b);
  done();
}
END_TEST

START_TEST(test_named_arguments) {
  ast_node *r = parse("load_csv(\"a.csv\", header = true)");
  ck_assert_int_eq(E.n, 0);
  ast_node *c = r->kids[0]->a;
  ck_assert_int_eq(c->kind, N_CALL);
  ck_assert_int_eq(c->nkids, 2);
  ck_assert_int_eq(c->kids[0]->kind, N_STR);
  ck_assert_str_eq(c->kids[0]->name, "a.csv");
  ck_assert_int_eq(c->kids[1]->kind, N_FIELD);
  ck_assert_str_eq(c->kids[1]->name, "header");
  done();
}
END_TEST

START_TEST(test_numbers_and_strings) {
  ast_node *r = parse("print 1e-3, 2.5, 7, .5, \"a\\\"b\\n\"");
  ck_assert_int_eq(E.n, 0);
  ast_node *p = r->kids[0];
  ck_assert_double_eq(p->kids[0]->num, 1e-3);
  ck_assert_double_eq(p->kids[1]->num, 2.5);
  ck_assert_double_eq(p->kids[2]->num, 7);
  ck_assert_double_eq(p->kids[3]->num, 0.5);
  ck_assert_str_eq(p->kids[4]->name, "a\"b\n");
  done();
}
END_TEST

START_TEST(test_line_continuation) {
  ast_node *r = parse("let a = 1 +\n  2\nlet b = f(1,\n 2)\n");
  ck_assert_int_eq(E.n, 0);
  ck_assert_int_eq(r->nkids, 2);
  done();
}
END_TEST

START_TEST(test_problem_and_solve) {
  const char *src =
      "problem ridge {\n"
      "  outer lam : [5] = fill(5, -1.0)\n"
      "  inner w   : [5] = zeros(5)\n"
      "  outer x = [0.5, 0.5] in [0, 1]\n"
      "  every outer let b = randn(3)\n"
      "  inner minimize mean((Xtr @ w - ytr)^2) + sum(exp(lam) * w^2)\n"
      "  outer minimize mean((Xva @ w - yva)^2)\n"
      "}\n"
      "let r = solve ridge with {\n  start = \"cold\",\n  hypergrad = cg(iters = 50, tol = 1e-10)\n}\n";
  ast_node *r = parse(src);
  ck_assert_int_eq(E.n, 0);
  ck_assert_int_eq(r->nkids, 2);
  ast_node *p = r->kids[0];
  ck_assert_int_eq(p->kind, N_PROBLEM);
  ck_assert_str_eq(p->name, "ridge");
  ck_assert_int_eq(p->nkids, 6);
  ck_assert_int_eq(p->kids[0]->kind, N_VARDECL);
  ck_assert_int_eq(p->kids[0]->op, 0);
  ck_assert_ptr_nonnull(p->kids[0]->a);
  ck_assert_ptr_null(p->kids[2]->a);
  ck_assert_ptr_nonnull(p->kids[2]->c);
  ck_assert_int_eq(p->kids[3]->kind, N_EVERY);
  ck_assert_int_eq(p->kids[4]->kind, N_OBJECTIVE);
  ck_assert_int_eq(p->kids[4]->op, 1);
  ast_node *s = r->kids[1]->a;
  ck_assert_int_eq(s->kind, N_SOLVE);
  ck_assert_str_eq(s->name, "ridge");
  ck_assert_int_eq(s->a->kind, N_RECORD);
  done();
}
END_TEST

/* inner constraints (`in simplex`, `in ball(r)`) and `subject to`, whose
 * words stay ordinary names elsewhere */
START_TEST(test_problem_constraints) {
  const char *src =
      "problem q {\n"
      "  outer x = 1.0\n"
      "  inner y : [3] = zeros(3) in simplex\n"
      "  inner z = [0, 0] in ball(2 * x)\n"
      "  inner subject to sum(z) <= x\n"
      "  outer subject to x >= 0\n"
      "}\n"
      "let subject = 1; let to = subject\n";
  ast_node *r = parse(src);
  ck_assert_int_eq(E.n, 0);
  ast_node *p = r->kids[0];
  ck_assert_int_eq(p->nkids, 5);
  ck_assert_int_eq(p->kids[1]->c->kind, N_NAME);
  ck_assert_str_eq(p->kids[1]->c->name, "simplex");
  ck_assert_int_eq(p->kids[2]->c->kind, N_CALL);
  ck_assert_int_eq(p->kids[3]->kind, N_SUBJECT);
  ck_assert_int_eq(p->kids[3]->op, 1);
  ck_assert_int_eq(p->kids[3]->a->kind, N_BINARY);
  ck_assert_int_eq(p->kids[3]->a->op, OP_LE);
  ck_assert_int_eq(p->kids[4]->kind, N_SUBJECT);
  ck_assert_int_eq(p->kids[4]->op, 0);
  ck_assert_int_eq(r->nkids, 3);
  done();
  /* any other pair of words after inner is a syntax error at the first */
  parse("problem q {\n  inner subject too y <= 1\n}\n");
  ck_assert_int_eq(E.n, 1);
  ck_assert_int_eq(E.lines[0], 2);
  ck_assert_int_eq(E.cols[0], 9);
  done();
}
END_TEST

START_TEST(test_error_location) {
  parse("let x = 1\nlet y = (2 + )\n");
  ck_assert_int_eq(E.n, 1);
  ck_assert_int_eq(E.lines[0], 2);
  ck_assert_int_eq(E.cols[0], 14);
  ck_assert_str_eq(E.msgs[0], "syntax error: unexpected ')'");
  done();
}
END_TEST

START_TEST(test_error_recovery_reports_several) {
  parse("let = 1\nprint 2\nlet y = * 3\nlet z = 4\nfor in x { }\n");
  ck_assert_int_eq(E.n, 3);
  ck_assert_int_eq(E.lines[0], 1);
  ck_assert_int_eq(E.lines[1], 3);
  ck_assert_int_eq(E.lines[2], 5);
  ck_assert_ptr_nonnull(strstr(E.msgs[0], "unexpected '='"));
  ck_assert_ptr_nonnull(strstr(E.msgs[0], "expecting name"));
  done();
}
END_TEST

START_TEST(test_error_bad_character_and_string) {
  parse("let a = 3 $ 4\n");
  ck_assert_int_eq(E.n, 1);
  ck_assert_ptr_nonnull(strstr(E.msgs[0], "invalid character"));
  done();
  parse("print \"abc\n");
  ck_assert_int_eq(E.n, 1);
  ck_assert_ptr_nonnull(strstr(E.msgs[0], "unterminated string"));
  done();
}
END_TEST

START_TEST(test_incomplete_input_flag) {
  parse("fn f(x) {\n  return x\n");
  ck_assert_int_ge(E.n, 1);
  ck_assert_int_eq(ps.incomplete, 1);
  done();
  parse("let a = [1, 2,\n");
  ck_assert_int_eq(ps.incomplete, 1);
  done();
  parse("let a = [1, 2]\n");
  ck_assert_int_eq(ps.incomplete, 0);
  done();
}
END_TEST

START_TEST(test_assignment_targets) {
  ast_node *r = parse("x[1, 2] = 3\nr.a = 4\n");
  ck_assert_int_eq(E.n, 0);
  ck_assert_int_eq(r->kids[0]->kind, N_ASSIGN);
  ck_assert_int_eq(r->kids[0]->a->kind, N_INDEX);
  ck_assert_int_eq(r->kids[1]->a->kind, N_GETFIELD);
  done();
  parse("f(x) = 3\n");
  ck_assert_int_eq(E.n, 1);
  ck_assert_str_eq(E.msgs[0], "cannot assign to this expression");
  done();
}
END_TEST

int main(void) {
  Suite *s = suite_create("parser");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_let_and_precedence);
  tcase_add_test(tc, test_unary_minus_binds_looser_than_pow);
  tcase_add_test(tc, test_transpose_matmul);
  tcase_add_test(tc, test_statements_and_separators);
  tcase_add_test(tc, test_block_vs_record_braces);
  tcase_add_test(tc, test_functions);
  tcase_add_test(tc, test_loops_and_ranges);
  tcase_add_test(tc, test_indexing_and_slices);
  tcase_add_test(tc, test_named_arguments);
  tcase_add_test(tc, test_numbers_and_strings);
  tcase_add_test(tc, test_line_continuation);
  tcase_add_test(tc, test_problem_and_solve);
  tcase_add_test(tc, test_problem_constraints);
  tcase_add_test(tc, test_error_location);
  tcase_add_test(tc, test_error_recovery_reports_several);
  tcase_add_test(tc, test_error_bad_character_and_string);
  tcase_add_test(tc, test_incomplete_input_flag);
  tcase_add_test(tc, test_assignment_targets);
  suite_add_tcase(s, tc);
  return check_run(s, "test_parser", CK_FORK);
}
