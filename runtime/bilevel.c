/* bilevel.c: problem declarations and solve (placeholder until the runtime lands). */
#include "../interp/interp.h"

int problem_declare(blo_state *S, const ast_node *n) {
  return interp_error(S, n, "'problem' is not implemented yet");
}

int solve_eval(blo_state *S, const ast_node *n, value *out) {
  (void)out;
  return interp_error(S, n, "'solve' is not implemented yet");
}

void problem_free(blo_state *S, struct problem *p) { (void)S; (void)p; }
void problems_free_all(blo_state *S) { (void)S; }
