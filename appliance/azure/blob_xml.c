/* blob_xml.c - the storage service's XML bodies (errors, page lists, blob listings), parsed with
 * expat by element path. Documents with a DOCTYPE or entity declarations are refused. */
#include <errno.h>
#include <expat.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob_internal.h"

#define XML_MAX_DEPTH 16
#define XML_NAME_MAX 48
#define XML_TEXT_MAX 4096

enum doc_kind { DOC_ERROR, DOC_PAGE_LIST, DOC_BLOB_LIST };

struct xml_state {
  XML_Parser parser;
  enum doc_kind kind;
  int depth;                         /* elements open; deeper than XML_MAX_DEPTH are not named */
  char path[XML_MAX_DEPTH][XML_NAME_MAX];
  char text[XML_TEXT_MAX];
  size_t text_len;
  bool text_overflow;
  rpl_err err;
  /* DOC_ERROR */
  char *code, *message;
  size_t codesz, messagesz;
  /* DOC_PAGE_LIST */
  struct blob_page_list *pages;
  bool have_start, have_end;
  uint64_t start, end;
  /* DOC_BLOB_LIST */
  struct blob_list *blobs;
  struct blob_item item;
  /* both lists */
  char *marker;
  size_t markersz;
};

static void fail(struct xml_state *st, rpl_err err)
{
  if (st->err == RPL_OK)
    st->err = err;
  XML_StopParser(st->parser, XML_FALSE);
}

static bool at(const struct xml_state *st, int depth, const char *const *names)
{
  if (st->depth != depth)
    return false;
  for (int i = 0; i < depth; i++)
    if (strcmp(st->path[i], names[i]) != 0)
      return false;
  return true;
}

static bool parse_u64(const char *text, uint64_t *out)
{
  if (text[0] < '0' || text[0] > '9')
    return false;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || *end)
    return false;
  *out = v;
  return true;
}

static bool parse_i64(const char *text, int64_t *out)
{
  uint64_t v;
  if (!parse_u64(text, &v) || v > INT64_MAX)
    return false;
  *out = (int64_t)v;
  return true;
}

static void copy_text(struct xml_state *st, char *dst, size_t dstsz)
{
  if (st->text_len >= dstsz) {
    fail(st, RPL_E_BLOB_TOO_LARGE);
    return;
  }
  memcpy(dst, st->text, st->text_len + 1);
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
  struct xml_state *st = ud;
  if (st->depth == 0) {
    const char *root = st->kind == DOC_ERROR ? "Error" : st->kind == DOC_PAGE_LIST ? "PageList" : "EnumerationResults";
    if (strcmp(name, root) != 0) {
      fail(st, RPL_E_BLOB_XML);
      return;
    }
  }
  if (st->depth < XML_MAX_DEPTH)
    snprintf(st->path[st->depth], XML_NAME_MAX, "%s", name);
  st->depth++;
  if (st->depth > 64) {
    fail(st, RPL_E_BLOB_XML);
    return;
  }
  st->text_len = 0;
  st->text[0] = '\0';
  st->text_overflow = false;
  if (st->kind == DOC_PAGE_LIST && st->depth == 2) {
    st->have_start = st->have_end = false;
  }
  if (st->kind == DOC_BLOB_LIST && at(st, 3, (const char *const[]){"EnumerationResults", "Blobs", "Blob"})) {
    memset(&st->item, 0, sizeof st->item);
    st->item.content_length = -1;
    st->item.sequence_number = -1;
  }
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
  struct xml_state *st = ud;
  if (st->text_len + (size_t)len >= XML_TEXT_MAX) {
    st->text_overflow = true;
    return;
  }
  memcpy(st->text + st->text_len, s, (size_t)len);
  st->text_len += (size_t)len;
  st->text[st->text_len] = '\0';
}

static void end_error(struct xml_state *st)
{
  if (at(st, 2, (const char *const[]){"Error", "Code"}))
    copy_text(st, st->code, st->codesz);
  else if (at(st, 2, (const char *const[]){"Error", "Message"})) {
    /* The first line: Azure appends "RequestId:... Time:..." lines. */
    st->text[strcspn(st->text, "\r\n")] = '\0';
    st->text_len = strlen(st->text);
    if (st->text_len >= st->messagesz)
      st->text[st->messagesz - 1] = '\0', st->text_len = st->messagesz - 1;
    copy_text(st, st->message, st->messagesz);
  }
}

static void end_page_list(struct xml_state *st)
{
  bool in_range = st->depth == 3 && strcmp(st->path[0], "PageList") == 0 &&
                  (strcmp(st->path[1], "PageRange") == 0 || strcmp(st->path[1], "ClearRange") == 0);
  if (in_range && strcmp(st->path[2], "Start") == 0) {
    if (!parse_u64(st->text, &st->start))
      fail(st, RPL_E_BLOB_XML);
    st->have_start = true;
  } else if (in_range && strcmp(st->path[2], "End") == 0) {
    if (!parse_u64(st->text, &st->end))
      fail(st, RPL_E_BLOB_XML);
    st->have_end = true;
  } else if (st->depth == 2 && strcmp(st->path[1], "PageRange") == 0) {
    /* Ranges are whole pages: Start % 512 == 0 and End + 1 a multiple of 512. */
    if (!st->have_start || !st->have_end || st->end < st->start || st->start % BLOB_PAGE_SIZE ||
        (st->end + 1) % BLOB_PAGE_SIZE || st->end == UINT64_MAX) {
      fail(st, RPL_E_BLOB_XML);
      return;
    }
    rpl_err err = blob_page_list_add(st->pages, st->start, st->end - st->start + 1);
    if (err != RPL_OK)
      fail(st, err);
  } else if (st->depth == 2 && strcmp(st->path[1], "ClearRange") == 0) {
    if (!st->have_start || !st->have_end || st->end < st->start)
      fail(st, RPL_E_BLOB_XML);
  } else if (at(st, 2, (const char *const[]){"PageList", "NextMarker"})) {
    copy_text(st, st->marker, st->markersz);
  }
}

static void end_blob_list(struct xml_state *st)
{
  static const char *const blob[] = {"EnumerationResults", "Blobs", "Blob"};
  if (at(st, 2, (const char *const[]){"EnumerationResults", "NextMarker"})) {
    copy_text(st, st->marker, st->markersz);
    return;
  }
  if (at(st, 3, blob)) {
    if (!st->item.name[0]) {
      fail(st, RPL_E_BLOB_XML);
      return;
    }
    struct blob_list *l = st->blobs;
    if (l->count == l->cap) {
      if (l->cap >= BLOB_LIST_MAX_ITEMS) {
        fail(st, RPL_E_LIMIT);
        return;
      }
      size_t ncap = l->cap ? l->cap * 2 : 16;
      struct blob_item *grown = realloc(l->items, ncap * sizeof *grown);
      if (!grown) {
        fail(st, RPL_E_NOMEM);
        return;
      }
      l->items = grown;
      l->cap = ncap;
    }
    l->items[l->count++] = st->item;
    return;
  }
  if (st->depth == 4 && strcmp(st->path[3], "Name") == 0 && at(st, 3, blob) == false &&
      strcmp(st->path[2], "Blob") == 0 && strcmp(st->path[1], "Blobs") == 0) {
    copy_text(st, st->item.name, sizeof st->item.name);
    return;
  }
  if (st->depth == 4 && strcmp(st->path[3], "Snapshot") == 0 && strcmp(st->path[2], "Blob") == 0 &&
      strcmp(st->path[1], "Blobs") == 0) {
    copy_text(st, st->item.snapshot, sizeof st->item.snapshot);
    return;
  }
  if (st->depth == 5 && strcmp(st->path[2], "Blob") == 0 && strcmp(st->path[3], "Metadata") == 0) {
    /* "key=value\n" lines; what does not fit is left out (the caller names the keys it needs) */
    size_t have = strlen(st->item.metadata), need = strlen(st->path[4]) + 2 + strlen(st->text);
    if (have + need < sizeof st->item.metadata && !strchr(st->text, '\n'))
      snprintf(st->item.metadata + have, sizeof st->item.metadata - have, "%s=%s\n", st->path[4], st->text);
    return;
  }
  if (st->depth == 5 && strcmp(st->path[2], "Blob") == 0 && strcmp(st->path[3], "Properties") == 0) {
    const char *field = st->path[4];
    if (strcmp(field, "Content-Length") == 0) {
      if (!parse_i64(st->text, &st->item.content_length))
        fail(st, RPL_E_BLOB_XML);
    } else if (strcmp(field, "x-ms-blob-sequence-number") == 0) {
      if (!parse_i64(st->text, &st->item.sequence_number))
        fail(st, RPL_E_BLOB_XML);
    } else if (strcmp(field, "BlobType") == 0) {
      copy_text(st, st->item.blob_type, sizeof st->item.blob_type);
    } else if (strcmp(field, "LeaseState") == 0) {
      copy_text(st, st->item.lease_state, sizeof st->item.lease_state);
    }
  }
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
  struct xml_state *st = ud;
  if (st->text_overflow && st->depth <= XML_MAX_DEPTH) {
    fail(st, RPL_E_BLOB_TOO_LARGE);
    return;
  }
  if (st->depth <= XML_MAX_DEPTH) {
    switch (st->kind) {
    case DOC_ERROR: end_error(st); break;
    case DOC_PAGE_LIST: end_page_list(st); break;
    case DOC_BLOB_LIST: end_blob_list(st); break;
    }
  }
  st->depth--;
  st->text_len = 0;
  st->text[0] = '\0';
}

/* Storage bodies never declare a DTD; one here is an attack (entity expansion) or not storage. */
static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
  fail(ud, RPL_E_BLOB_XML);
}

static void XMLCALL on_entity(void *ud, const XML_Char *name, int is_param, const XML_Char *value,
                              int value_len, const XML_Char *base, const XML_Char *sysid,
                              const XML_Char *pubid, const XML_Char *notation)
{
  fail(ud, RPL_E_BLOB_XML);
}

static rpl_err run(struct xml_state *st, const char *xml, size_t len)
{
  if (len > BLOB_XML_MAX_BYTES)
    return RPL_E_BLOB_TOO_LARGE;
  st->parser = XML_ParserCreate("UTF-8");
  if (!st->parser)
    return RPL_E_NOMEM;
  XML_SetUserData(st->parser, st);
  XML_SetElementHandler(st->parser, on_start, on_end);
  XML_SetCharacterDataHandler(st->parser, on_text);
  XML_SetStartDoctypeDeclHandler(st->parser, on_doctype);
  XML_SetEntityDeclHandler(st->parser, on_entity);
  enum XML_Status status = XML_Parse(st->parser, xml, (int)len, XML_TRUE);
  XML_ParserFree(st->parser);
  st->parser = NULL;
  if (st->err != RPL_OK)
    return st->err;
  return status == XML_STATUS_OK ? RPL_OK : RPL_E_BLOB_XML;
}

rpl_err blob_xml_parse_error(const char *xml, size_t len, char *code, size_t codesz, char *message,
                             size_t messagesz)
{
  struct xml_state *st = calloc(1, sizeof *st);
  if (!st)
    return RPL_E_NOMEM;
  if (codesz)
    code[0] = '\0';
  if (messagesz)
    message[0] = '\0';
  st->kind = DOC_ERROR;
  st->code = code;
  st->codesz = codesz;
  st->message = message;
  st->messagesz = messagesz;
  rpl_err err = run(st, xml, len);
  free(st);
  return err;
}

rpl_err blob_xml_parse_page_list(const char *xml, size_t len, struct blob_page_list *list,
                                 char *next_marker, size_t markersz)
{
  struct xml_state *st = calloc(1, sizeof *st);
  if (!st)
    return RPL_E_NOMEM;
  if (markersz)
    next_marker[0] = '\0';
  st->kind = DOC_PAGE_LIST;
  st->pages = list;
  st->marker = next_marker;
  st->markersz = markersz;
  rpl_err err = run(st, xml, len);
  free(st);
  return err;
}

rpl_err blob_xml_parse_blob_list(const char *xml, size_t len, struct blob_list *list, char *next_marker,
                                 size_t markersz)
{
  struct xml_state *st = calloc(1, sizeof *st);
  if (!st)
    return RPL_E_NOMEM;
  if (markersz)
    next_marker[0] = '\0';
  st->kind = DOC_BLOB_LIST;
  st->blobs = list;
  st->marker = next_marker;
  st->markersz = markersz;
  rpl_err err = run(st, xml, len);
  free(st);
  return err;
}

rpl_err blob_page_list_add(struct blob_page_list *list, uint64_t offset, uint64_t length)
{
  if (length == 0)
    return RPL_OK;
  if (list->count > 0) {
    struct blob_range *last = &list->ranges[list->count - 1];
    if (last->offset + last->length == offset) {
      last->length += length;
      return RPL_OK;
    }
  }
  if (list->count == list->cap) {
    if (list->cap >= BLOB_PAGE_LIST_MAX_RANGES)
      return RPL_E_LIMIT;
    size_t ncap = list->cap ? list->cap * 2 : 64;
    struct blob_range *grown = realloc(list->ranges, ncap * sizeof *grown);
    if (!grown)
      return RPL_E_NOMEM;
    list->ranges = grown;
    list->cap = ncap;
  }
  list->ranges[list->count++] = (struct blob_range){offset, length};
  return RPL_OK;
}

void blob_page_list_free(struct blob_page_list *list)
{
  free(list->ranges);
  memset(list, 0, sizeof *list);
}

void blob_list_free(struct blob_list *list)
{
  free(list->items);
  memset(list, 0, sizeof *list);
}
