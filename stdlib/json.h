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

#endif
