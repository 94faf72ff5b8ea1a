/* parser.y: pure Bison parser for .blo.  Builds the AST in the parse arena;
 * syntax errors go to the parse state's callback and the parser recovers at
 * the next statement boundary, so one run reports several errors. */
%require "3.0"
%define api.pure full
%define api.prefix {blo_yy}
%define parse.error verbose
%locations
%lex-param   { void *scanner }
%parse-param { void *scanner } { parse_state *ps }

%code requires {
#include "parse.h"
}

%union {
  double num;
  const char *str;
  struct { const char *s; size_t len; } lstr;   /* a string literal, which may hold NUL */
  ast_node *node;
  ast_list list;
}

%code {
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lexer.h"

/* Bison's stack (past its first 200 entries) and long error messages come
 * from the parse state's allocator: a failure is noted there as out of memory. */
#define YYMALLOC(n) parse_alloc(ps, (n))
#define YYFREE(p) parse_free(ps, (p))

static ast_loc mkloc(const BLO_YYLTYPE *l) {
  ast_loc r = {l->first_line, l->first_column, l->last_line, l->last_column};
  return r;
}
#define NEW(k, l) ast_new(ps->arena, (k), mkloc(&(l)))
#define PUSH(list, n) ast_list_push(ps->arena, &(list), (n))

static ast_node *mk_bin(parse_state *ps, int op, ast_node *a, ast_node *b, BLO_YYLTYPE l) {
  ast_node *n = NEW(N_BINARY, l);
  if (n) { n->op = op; n->a = a; n->b = b; }
  return n;
}
static ast_node *mk1(parse_state *ps, ast_kind k, ast_node *a, BLO_YYLTYPE l) {
  ast_node *n = NEW(k, l);
  if (n) n->a = a;
  return n;
}
static void blo_yyerror(BLO_YYLTYPE *l, void *scanner, parse_state *ps, const char *msg);
/* `inner subject to EXPR` / `outer subject to EXPR`: subject and to are
 * names, not keywords, so scripts may still use them as variables. */
static ast_node *mk_subject(parse_state *ps, void *scanner, int inner, const char *w1, const char *w2, ast_node *e,
                            BLO_YYLTYPE l, BLO_YYLTYPE l1) {
  if (strcmp(w1, "subject") != 0 || strcmp(w2, "to") != 0) {
    blo_yyerror(&l1, scanner, ps, inner ? "syntax error, after 'inner' comes a variable (inner y = init), an objective "
                                          "(inner minimize f) or a constraint (inner subject to g <= 0)"
                                        : "syntax error, after 'outer' comes a variable (outer x = init), an objective "
                                          "(outer minimize F) or a constraint (outer subject to g <= 0)");
    return NULL;
  }
  ast_node *n = NEW(N_SUBJECT, l);
  if (n) { n->op = inner; n->a = e; }
  return n;
}

/* The parser's stacks are arrays in yyparse's frame (about 34 bytes a
 * state) that never grow: running out of them means input nested too
 * deeply (10^5 parentheses), never a failed allocation.  A few states per
 * level, so anything within PARSE_MAX_DEPTH levels fits. */
#define YYINITDEPTH (PARSE_MAX_NEST - 64)
#define YYMAXDEPTH (PARSE_MAX_NEST - 64)
}

%token <num> NUM
%token <lstr> STR
%token <str> NAME BADCHAR
%token LET FN IF ELSE FOR IN WHILE BREAK CONTINUE RETURN PRINT PROBLEM OUTER INNER
%token MINIMIZE MAXIMIZE EVERY SOLVE WITH TRUE_ FALSE_ AND OR EQ NE LE GE DOTDOT
%token NEWLINE LBRACE_REC BADSTR
%token FIELDS_ONLY   /* first token of a parse_fields input */

%type <node> stmt simple_stmt block if_stmt expr postfix primary arg index_arg
%type <node> pitem opt_shape opt_box record
%type <list> stmts args arglist exprs params pitems fields index_args field_list

%left OR
%left AND
%nonassoc EQ NE '<' '>' LE GE
%nonassoc DOTDOT
%left '+' '-'
%left '*' '/' '%' '@'
%precedence UNARY
%right '^'

%start program

%%

program
  : stmts            { ps->root = NEW(N_BLOCK, @$); if (ps->root) ast_set_kids(ps->root, &$1); }
  | FIELDS_ONLY field_list opt_newline { ps->root = NEW(N_RECORD, @2); if (ps->root) ast_set_kids(ps->root, &$2); }
  ;

/* parse_fields: a record literal's fields without the braces */
field_list
  : %empty           { memset(&$$, 0, sizeof $$); }
  | fields           { $$ = $1; }
  | fields ','       { $$ = $1; }
  ;

opt_newline : %empty | NEWLINE ;

/* A statement list: statements separated by newlines or ';'. */
/* Every statement ends with a separator: the scanner supplies a newline
 * before a closing '}' and at the end of input, so the last one may omit it. */
stmts
  : %empty                { memset(&$$, 0, sizeof $$); }
  | stmts sep             { $$ = $1; }
  | stmts stmt sep        { $$ = $1; if ($2) PUSH($$, $2); }
  | stmts error sep       { $$ = $1; yyerrok; }
  ;

sep : NEWLINE | ';' ;

stmt
  : simple_stmt
  | if_stmt
  | WHILE expr block                 { $$ = NEW(N_WHILE, @$); if ($$) { $$->a = $2; $$->b = $3; } }
  | FOR NAME IN expr block           { $$ = NEW(N_FOR, @$); if ($$) { $$->name = $2; $$->a = $4; $$->b = $5; } }
  | FN NAME '(' params ')' '=' expr  { $$ = NEW(N_FNDEF, @$); if ($$) { $$->name = $2; ast_set_kids($$, &$4); $$->a = $7; } }
  | FN NAME '(' params ')' block     { $$ = NEW(N_FNDEF, @$); if ($$) { $$->name = $2; ast_set_kids($$, &$4); $$->a = $6; $$->is_block = 1; } }
  | PROBLEM NAME '{' pitems '}'      { $$ = NEW(N_PROBLEM, @$); if ($$) { $$->name = $2; ast_set_kids($$, &$4); } }
  ;

simple_stmt
  : LET NAME '=' expr      { $$ = NEW(N_LET, @$); if ($$) { $$->name = $2; $$->a = $4; } }
  | postfix '=' expr       {
                             $$ = NEW(N_ASSIGN, @$);
                             if ($$) { $$->a = $1; $$->b = $3; }
                             if ($1 && $1->kind != N_NAME && $1->kind != N_INDEX && $1->kind != N_GETFIELD)
                               blo_yyerror(&@1, scanner, ps, "cannot assign to this expression");
                           }
  | PRINT exprs            { $$ = NEW(N_PRINT, @$); if ($$) ast_set_kids($$, &$2); }
  | PRINT                  { $$ = NEW(N_PRINT, @$); }
  | BREAK                  { $$ = NEW(N_BREAK, @$); }
  | CONTINUE               { $$ = NEW(N_CONTINUE, @$); }
  | RETURN expr            { $$ = mk1(ps, N_RETURN, $2, @$); }
  | RETURN                 { $$ = mk1(ps, N_RETURN, NULL, @$); }
  | expr                   { $$ = mk1(ps, N_EXPR, $1, @$); }
  ;

if_stmt
  : IF expr block                 { $$ = NEW(N_IF, @$); if ($$) { $$->a = $2; $$->b = $3; } }
  | IF expr block ELSE block      { $$ = NEW(N_IF, @$); if ($$) { $$->a = $2; $$->b = $3; $$->c = $5; } }
  | IF expr block ELSE if_stmt    { $$ = NEW(N_IF, @$); if ($$) { $$->a = $2; $$->b = $3; $$->c = $5; } }
  ;

block
  : '{' stmts '}'    { $$ = NEW(N_BLOCK, @$); if ($$) ast_set_kids($$, &$2); }
  ;

params
  : %empty               { memset(&$$, 0, sizeof $$); }
  | NAME                 { memset(&$$, 0, sizeof $$); ast_node *n = NEW(N_NAME, @1); if (n) { n->name = $1; PUSH($$, n); } }
  | params ',' NAME      { $$ = $1; ast_node *n = NEW(N_NAME, @3); if (n) { n->name = $3; PUSH($$, n); } }
  ;

/* problem body */
pitems
  : %empty                { memset(&$$, 0, sizeof $$); }
  | pitems sep            { $$ = $1; }
  | pitems pitem sep      { $$ = $1; if ($2) PUSH($$, $2); }
  | pitems error sep      { $$ = $1; yyerrok; }
  ;

pitem
  : OUTER NAME opt_shape '=' expr opt_box { $$ = NEW(N_VARDECL, @$); if ($$) { $$->op = 0; $$->name = $2; $$->a = $3; $$->b = $5; $$->c = $6; } }
  | INNER NAME opt_shape '=' expr opt_box { $$ = NEW(N_VARDECL, @$); if ($$) { $$->op = 1; $$->name = $2; $$->a = $3; $$->b = $5; $$->c = $6; } }
  | INNER NAME NAME expr  { $$ = mk_subject(ps, scanner, 1, $2, $3, $4, @$, @2); }
  | OUTER NAME NAME expr  { $$ = mk_subject(ps, scanner, 0, $2, $3, $4, @$, @2); }
  | INNER MINIMIZE expr   { $$ = NEW(N_OBJECTIVE, @$); if ($$) { $$->op = 1; $$->a = $3; } }
  | OUTER MINIMIZE expr   { $$ = NEW(N_OBJECTIVE, @$); if ($$) { $$->op = 0; $$->a = $3; } }
  | INNER MAXIMIZE expr   { $$ = NEW(N_OBJECTIVE, @$); if ($$) { $$->op = 1; $$->is_block = 1; $$->a = $3; } }
  | OUTER MAXIMIZE expr   { $$ = NEW(N_OBJECTIVE, @$); if ($$) { $$->op = 0; $$->is_block = 1; $$->a = $3; } }
  | EVERY OUTER LET NAME '=' expr { $$ = NEW(N_EVERY, @$); if ($$) { $$->op = 0; $$->name = $4; $$->a = $6; } }
  | EVERY INNER LET NAME '=' expr { $$ = NEW(N_EVERY, @$); if ($$) { $$->op = 1; $$->name = $4; $$->a = $6; } }
  | LET NAME '=' expr     { $$ = NEW(N_EVERY, @$); if ($$) { $$->op = 2; $$->name = $2; $$->a = $4; } }
  ;

opt_shape
  : %empty        { $$ = NULL; }
  | ':' postfix   { $$ = $2; }
  ;

opt_box
  : %empty        { $$ = NULL; }
  | IN postfix    { $$ = $2; }
  ;

exprs
  : expr               { memset(&$$, 0, sizeof $$); PUSH($$, $1); }
  | exprs ',' expr     { $$ = $1; PUSH($$, $3); }
  ;

expr
  : expr OR expr       { $$ = NEW(N_OR, @$); if ($$) { $$->a = $1; $$->b = $3; } }
  | expr AND expr      { $$ = NEW(N_AND, @$); if ($$) { $$->a = $1; $$->b = $3; } }
  | expr EQ expr       { $$ = mk_bin(ps, OP_EQ, $1, $3, @2); }
  | expr NE expr       { $$ = mk_bin(ps, OP_NE, $1, $3, @2); }
  | expr '<' expr      { $$ = mk_bin(ps, OP_LT, $1, $3, @2); }
  | expr '>' expr      { $$ = mk_bin(ps, OP_GT, $1, $3, @2); }
  | expr LE expr       { $$ = mk_bin(ps, OP_LE, $1, $3, @2); }
  | expr GE expr       { $$ = mk_bin(ps, OP_GE, $1, $3, @2); }
  | expr DOTDOT expr   { $$ = NEW(N_RANGE, @$); if ($$) { $$->a = $1; $$->b = $3; } }
  | expr '+' expr      { $$ = mk_bin(ps, OP_ADD, $1, $3, @2); }
  | expr '-' expr      { $$ = mk_bin(ps, OP_SUB, $1, $3, @2); }
  | expr '*' expr      { $$ = mk_bin(ps, OP_MUL, $1, $3, @2); }
  | expr '/' expr      { $$ = mk_bin(ps, OP_DIV, $1, $3, @2); }
  | expr '%' expr      { $$ = mk_bin(ps, OP_MOD, $1, $3, @2); }
  | expr '@' expr      { $$ = mk_bin(ps, OP_MATMUL, $1, $3, @2); }
  | expr '^' expr      { $$ = mk_bin(ps, OP_POW, $1, $3, @2); }
  | '-' expr %prec UNARY { $$ = NEW(N_UNARY, @$); if ($$) { $$->op = OP_NEG; $$->a = $2; } }
  | '+' expr %prec UNARY { $$ = $2; }
  | '!' expr %prec UNARY { $$ = NEW(N_UNARY, @$); if ($$) { $$->op = OP_NOT; $$->a = $2; } }
  | SOLVE NAME           { $$ = NEW(N_SOLVE, @$); if ($$) $$->name = $2; }
  | SOLVE NAME WITH postfix { $$ = NEW(N_SOLVE, @$); if ($$) { $$->name = $2; $$->a = $4; } }
  | postfix
  ;

postfix
  : primary
  | postfix '(' args ')'         { $$ = NEW(N_CALL, @$); if ($$) { $$->a = $1; ast_set_kids($$, &$3); } }
  /* `outer` is a keyword (problem items) and also the outer-product builtin */
  | OUTER '(' args ')'           { $$ = NEW(N_CALL, @$); ast_node *f = NEW(N_NAME, @1);
                                   if (f) f->name = "outer";
                                   if ($$) { $$->a = f; ast_set_kids($$, &$3); } }
  | postfix '[' index_args ']'   { $$ = NEW(N_INDEX, @$); if ($$) { $$->a = $1; ast_set_kids($$, &$3); } }
  | postfix '.' NAME             { $$ = NEW(N_GETFIELD, @$); if ($$) { $$->a = $1; $$->name = $3; } }
  | postfix '\''                 { $$ = mk1(ps, N_TRANSPOSE, $1, @$); }
  ;

primary
  : NUM                  { $$ = NEW(N_NUM, @$); if ($$) $$->num = $1; }
  | TRUE_                { $$ = NEW(N_NUM, @$); if ($$) $$->num = 1; }
  | FALSE_               { $$ = NEW(N_NUM, @$); if ($$) $$->num = 0; }
  | STR                  { $$ = NEW(N_STR, @$); if ($$) { $$->name = $1.s; $$->len = $1.len; } }
  | NAME                 { $$ = NEW(N_NAME, @$); if ($$) $$->name = $1; }
  | '(' expr ')'         { $$ = $2; }
  | '[' ']'              { $$ = NEW(N_LIST, @$); }
  | '[' exprs ']'        { $$ = NEW(N_LIST, @$); if ($$) ast_set_kids($$, &$2); }
  | '[' exprs ',' ']'    { $$ = NEW(N_LIST, @$); if ($$) ast_set_kids($$, &$2); }
  | record
  ;

record
  : LBRACE_REC '}'          { $$ = NEW(N_RECORD, @$); }
  | LBRACE_REC fields '}'   { $$ = NEW(N_RECORD, @$); if ($$) ast_set_kids($$, &$2); }
  | LBRACE_REC fields ',' '}' { $$ = NEW(N_RECORD, @$); if ($$) ast_set_kids($$, &$2); }
  ;

fields
  : NAME '=' expr             { memset(&$$, 0, sizeof $$); ast_node *f = NEW(N_FIELD, @$); if (f) { f->name = $1; f->a = $3; PUSH($$, f); } }
  | fields ',' NAME '=' expr  { $$ = $1; ast_node *f = NEW(N_FIELD, @3); if (f) { f->name = $3; f->a = $5; PUSH($$, f); } }
  ;

args
  : %empty                { memset(&$$, 0, sizeof $$); }
  | arglist               { $$ = $1; }
  | arglist ','           { $$ = $1; }
  ;

arglist
  : arg                   { memset(&$$, 0, sizeof $$); PUSH($$, $1); }
  | arglist ',' arg       { $$ = $1; PUSH($$, $3); }
  ;

arg
  : expr                  { $$ = $1; }
  | NAME '=' expr         { $$ = NEW(N_FIELD, @$); if ($$) { $$->name = $1; $$->a = $3; } }
  ;

index_args
  : index_arg                  { memset(&$$, 0, sizeof $$); PUSH($$, $1); }
  | index_args ',' index_arg   { $$ = $1; PUSH($$, $3); }
  ;

index_arg
  : expr                  { $$ = $1; }
  | ':'                   { $$ = NEW(N_SLICE, @$); }
  | expr ':'              { $$ = NEW(N_SLICE, @$); if ($$) $$->a = $1; }
  | ':' expr              { $$ = NEW(N_SLICE, @$); if ($$) $$->b = $2; }
  | expr ':' expr         { $$ = NEW(N_SLICE, @$); if ($$) { $$->a = $1; $$->b = $3; } }
  ;

%%

static void blo_yyerror(BLO_YYLTYPE *l, void *scanner, parse_state *ps, const char *msg) {
  (void)scanner;
  ps->nerrors++;
  /* once memory ran out the input was cut short: parse_run reports that alone */
  if (ps->oom || ast_arena_failed(ps->arena)) return;
  if (strcmp(msg, "memory exhausted") == 0) msg = "expression nested too deeply";  /* the stacks are full */
  /* Bison's token names are internal; say what the user typed instead. */
  char buf[512];
  if (strncmp(msg, "syntax error", 12) != 0) {
    if (ps->on_error) ps->on_error(ps->error_ud, ps->chunk, l->first_line, l->first_column, msg);
    return;
  }
  const char *m = msg + 12;
  if (strncmp(m, ", ", 2) == 0) m += 2;
  snprintf(buf, sizeof buf, "syntax error%s%s", *m ? ": " : "", m);
  static const struct { const char *from, *to; } names[] = {
    {"NEWLINE", "end of line"}, {"$end", "end of input"}, {"end of file", "end of input"},
    {"NUM", "number"}, {"STR", "string"}, {"NAME", "name"}, {"LBRACE_REC", "'{'"},
    {"DOTDOT", "'..'"}, {"EQ", "'=='"}, {"NE", "'!='"}, {"LE", "'<='"}, {"GE", "'>='"},
    {"AND", "'&&'"}, {"OR", "'||'"}, {"TRUE_", "'true'"}, {"FALSE_", "'false'"},
    {"BADCHAR", "invalid character"}, {"BADSTR", "unterminated string"},
    {"LET", "'let'"}, {"FN", "'fn'"}, {"IF", "'if'"}, {"ELSE", "'else'"}, {"FOR", "'for'"},
    {"IN", "'in'"}, {"WHILE", "'while'"}, {"BREAK", "'break'"}, {"CONTINUE", "'continue'"},
    {"RETURN", "'return'"}, {"PRINT", "'print'"}, {"PROBLEM", "'problem'"},
    {"OUTER", "'outer'"}, {"INNER", "'inner'"}, {"MINIMIZE", "'minimize'"},
    {"MAXIMIZE", "'maximize'"}, {"EVERY", "'every'"}, {"SOLVE", "'solve'"}, {"WITH", "'with'"},
  };
  char out[512];
  size_t o = 0;
  for (const char *p = buf; *p && o + 1 < sizeof out;) {
    int done = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
      size_t n = strlen(names[i].from);
      if (strncmp(p, names[i].from, n) == 0 && !(p[n] >= 'A' && p[n] <= 'Z') && !(p[n] == '_')) {
        size_t tl = strlen(names[i].to);
        if (o + tl + 1 >= sizeof out) break;
        memcpy(out + o, names[i].to, tl);
        o += tl;
        p += n;
        done = 1;
        break;
      }
    }
    if (!done) out[o++] = *p++;
  }
  out[o] = 0;
  if (ps->on_error) ps->on_error(ps->error_ud, ps->chunk, l->first_line, l->first_column, out);
}

/* Every walker of the tree (the evaluator, differentiation, the bilevel
 * runtime) recurses once per level, so the depth of the tree is bounded
 * here.  A left-associative chain (1+1+...+1, r.a.a..., a transpose chain)
 * nests without filling the parser's stacks, so the tree itself is
 * measured, with an explicit stack.  Reports the first node found too deep. */
enum { PARSE_MAX_DEPTH = 512 };

static void check_depth(parse_state *ps) {
  typedef struct { const ast_node *n; int d; } item;
  size_t cap = 256, top = 0;
  item *st = malloc(cap * sizeof *st);
  const char *msg = NULL;
  const ast_node *at = NULL;
  if (!st) { msg = "out of memory while parsing"; ps->oom = 1; }
  else st[top++] = (item){ps->root, 0};
  while (!msg && top > 0) {
    item it = st[--top];
    if (it.d > PARSE_MAX_DEPTH) {
      at = it.n;
      msg = it.n->kind < N_BLOCK ? "expression nested too deeply" : "blocks nested too deeply";
      break;
    }
    const ast_node *kids[3] = {it.n->a, it.n->b, it.n->c};
    int nk = it.n->nkids;
    if (top + 3 + (size_t)nk > cap) {
      size_t nc = (top + 3 + (size_t)nk) * 2;
      item *ns = realloc(st, nc * sizeof *ns);
      if (!ns) { msg = "out of memory while parsing"; ps->oom = 1; break; }
      st = ns;
      cap = nc;
    }
    for (int i = nk - 1; i >= 0; i--)
      if (it.n->kids[i]) st[top++] = (item){it.n->kids[i], it.d + 1};
    for (int i = 2; i >= 0; i--)
      if (kids[i]) st[top++] = (item){kids[i], it.d + 1};
  }
  free(st);
  if (msg) {
    ps->nerrors++;
    if (ps->on_error) ps->on_error(ps->error_ud, ps->chunk, at ? at->loc.line : ps->line, at ? at->loc.col : ps->col, msg);
  }
}

static int parse_run(parse_state *ps, const char *chunk, const char *src, size_t len,
                     parse_error_fn on_error, void *ud, int fields) {
  memset(ps, 0, sizeof *ps);
  if (fields) {
    /* inside record braces: newlines separate nothing, a '}' closes them */
    ps->start_tok = FIELDS_ONLY;
    ps->nest[ps->depth++] = 'r';
  }
  ps->chunk = chunk;
  ps->on_error = on_error;
  ps->error_ud = ud;
  ps->line = 1;
  ps->col = 1;
  jmp_buf oom_jmp;
  ps->oom_jmp = &oom_jmp;
  ps->arena = ast_arena_new();
  yyscan_t scanner = NULL;
  if (!ps->arena || blo_yylex_init_extra(ps, &scanner)) {
    ps->oom = 1;
  } else if (setjmp(oom_jmp) == 0) {
    /* Flex allocates only here, setting up the buffer (the input is scanned
     * in memory, so yylex never grows it); lex_fatal jumps back above. */
    ps->scanner = scanner;
    YY_BUFFER_STATE buf = blo_yy_scan_bytes(src, (int)len, scanner);
    int rc = blo_yyparse(scanner, ps);
    blo_yy_delete_buffer(buf, scanner);
    blo_yylex_destroy(scanner);
    if (rc != 0 && ps->nerrors == 0 && !ps->oom) ps->nerrors = 1;
  }
  /* after a jump out of the scanner: free what it held (nothing otherwise) */
  parse_free_all(ps);
  ps->scanner = NULL;
  ps->oom_jmp = NULL;
  if (ps->oom || ast_arena_failed(ps->arena)) {
    ps->oom = 1;
    ps->root = NULL;
    ps->nerrors++;
    if (on_error) on_error(ud, chunk, ps->line, ps->col, "out of memory while parsing");
  }
  if (ps->nerrors == 0 && ps->root) check_depth(ps);
  return ps->nerrors;
}

int parse_chunk(parse_state *ps, const char *chunk, const char *src, size_t len,
                parse_error_fn on_error, void *ud) {
  return parse_run(ps, chunk, src, len, on_error, ud, 0);
}

int parse_fields(parse_state *ps, const char *chunk, const char *src, size_t len,
                 parse_error_fn on_error, void *ud) {
  return parse_run(ps, chunk, src, len, on_error, ud, 1);
}
