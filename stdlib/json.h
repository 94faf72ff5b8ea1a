/* json.h: JSON documents as values (load_json), parsed by jansson.
 *
 * Mapping: numbers are numbers; strings are strings (UTF-8, NUL allowed);
 * true and false are 1 and 0, as the language writes them; objects are
 * records in key order (keys become field names as .npz member names do);
 * arrays whose elements are all numbers, or all equal-shaped numeric arrays,
 * are tensors up to rank TN_MAX_RANK; other arrays (empty, ragged, mixed,
 * deeper) are lists.  null, duplicate keys and keys that are empty or map to
 * the same field are errors. */
#ifndef BLO_JSON_H
#define BLO_JSON_H

#include "interp.h"

/* Reads the JSON file at path into *out (a new reference).  On failure
 * returns the EV_ERR of interp_error at `at`, naming the file and, for
 * syntax errors, its line and column; nothing is left allocated. */
int json_load_value(blo_state *S, const ast_node *at, const char *path, value *out);

/* A name (n bytes, not NUL-terminated, maybe holding NUL) as a field name:
 * characters other than letters, digits and '_' become '_', a leading digit
 * gets a '_' in front and a keyword gets one behind.  out holds n + 3 bytes.
 * Defined in builtins.c, where load_npz maps member names with it. */
void npz_field_name(const char *s, size_t n, char *out);

#endif
