/* json_out.c - the streaming JSON writer behind --json (see json_out.h). */
#include "json_out.h"

#include <inttypes.h>

void json_init(struct json_out *j, FILE *out)
{
  j->out = out;
  j->depth = 0;
  j->has_items[0] = false;
  j->failed = false;
}

static void write_escaped(FILE *out, const char *s)
{
  const unsigned char *p = (const unsigned char *)s;
  fputc('"', out);
  while (*p) {
    unsigned char c = *p;
    if (c == '"' || c == '\\') {
      fputc('\\', out);
      fputc(c, out);
      p++;
    } else if (c < 0x20 || c == 0x7f) {
      static const char short_forms[] = "btn\0fr"; /* \b \t \n - \f \r for 8..13 */
      if (c >= 8 && c <= 13 && c != 11)
        fprintf(out, "\\%c", short_forms[c - 8]);
      else
        fprintf(out, "\\u%04x", c);
      p++;
    } else if (c < 0x80) {
      fputc(c, out);
      p++;
    } else {
      /* Copy a well-formed UTF-8 sequence; anything else becomes U+FFFD. */
      int len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 0;
      int ok = len > 0;
      for (int i = 1; ok && i < len; i++)
        ok = (p[i] & 0xc0) == 0x80;
      if (ok && len == 3) /* no overlong forms, no surrogates */
        ok = !(c == 0xe0 && p[1] < 0xa0) && !(c == 0xed && p[1] >= 0xa0);
      if (ok && len == 4)
        ok = !(c == 0xf0 && p[1] < 0x90) && !(c == 0xf4 && p[1] >= 0x90);
      if (ok) {
        fwrite(p, 1, (size_t)len, out);
        p += len;
      } else {
        fputs("\\ufffd", out);
        p++;
      }
    }
  }
  fputc('"', out);
}

/* Comma and key before a value at the current level. */
static void begin_value(struct json_out *j, const char *key)
{
  if (j->has_items[j->depth])
    fputc(',', j->out);
  j->has_items[j->depth] = true;
  if (key) {
    write_escaped(j->out, key);
    fputc(':', j->out);
  }
}

static void open_container(struct json_out *j, const char *key, char open)
{
  begin_value(j, key);
  fputc(open, j->out);
  if (j->depth + 1 >= JSON_MAX_DEPTH) {
    j->failed = true;
    return;
  }
  j->has_items[++j->depth] = false;
}

static void close_container(struct json_out *j, char close)
{
  if (j->depth == 0) {
    j->failed = true;
    return;
  }
  j->depth--;
  fputc(close, j->out);
}

void json_object_begin(struct json_out *j, const char *key) { open_container(j, key, '{'); }
void json_object_end(struct json_out *j) { close_container(j, '}'); }
void json_array_begin(struct json_out *j, const char *key) { open_container(j, key, '['); }
void json_array_end(struct json_out *j) { close_container(j, ']'); }

void json_string(struct json_out *j, const char *key, const char *value)
{
  begin_value(j, key);
  if (value)
    write_escaped(j->out, value);
  else
    fputs("null", j->out);
}

void json_u64(struct json_out *j, const char *key, uint64_t value)
{
  begin_value(j, key);
  fprintf(j->out, "%" PRIu64, value);
}

void json_bool(struct json_out *j, const char *key, bool value)
{
  begin_value(j, key);
  fputs(value ? "true" : "false", j->out);
}

bool json_finish(struct json_out *j)
{
  fputc('\n', j->out);
  if (fflush(j->out) != 0 || ferror(j->out))
    j->failed = true;
  return !j->failed && j->depth == 0;
}
