/* json_out.h - a small streaming JSON writer for --json output: correct escaping (control
 * characters, quotes, invalid UTF-8 replaced by U+FFFD), commas and nesting handled for the caller. */
#ifndef JSON_OUT_H
#define JSON_OUT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 16

/* Writes to out (not owned). key is NULL for the top-level value and for array elements. Nesting
 * deeper than JSON_MAX_DEPTH or a closing call that does not match marks the writer failed. */
struct json_out {
  FILE *out;
  int depth;
  bool has_items[JSON_MAX_DEPTH];
  bool failed;
};

void json_init(struct json_out *j, FILE *out);
void json_object_begin(struct json_out *j, const char *key);
void json_object_end(struct json_out *j);
void json_array_begin(struct json_out *j, const char *key);
void json_array_end(struct json_out *j);
void json_string(struct json_out *j, const char *key, const char *value); /* NULL value: null */
void json_u64(struct json_out *j, const char *key, uint64_t value);
void json_bool(struct json_out *j, const char *key, bool value);
/* Ends the document with a newline; false if anything failed (nesting or a write error). */
bool json_finish(struct json_out *j);

#endif
