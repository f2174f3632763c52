/* blob_internal.h - parsers and helpers shared by the sources in appliance/azure/; unit tests and
 * fuzz targets may include it too. Nothing else may: the client's promise is appliance/azure/blob.h. */
#ifndef BLOB_INTERNAL_H
#define BLOB_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "blob.h"

/* Hard caps on what a server can make us hold. */
#define BLOB_XML_MAX_BYTES (16u * 1024u * 1024u)   /* one listing / page list / error body */
#define BLOB_PAGE_LIST_MAX_RANGES (16u * 1024u * 1024u)
#define BLOB_LIST_MAX_ITEMS (1024u * 1024u)
#define BLOB_TOKEN_JSON_MAX (64u * 1024u)

/* <Error><Code/><Message/></Error>: code and the first line of the message. */
RPL_MUST_CHECK rpl_err blob_xml_parse_error(const char *xml, size_t len, char *code, size_t codesz,
                                            char *message, size_t messagesz);
/* <PageList>: appends each <PageRange> (Start/End inclusive) to list; next_marker gets
 * <NextMarker> ("" when none). */
RPL_MUST_CHECK rpl_err blob_xml_parse_page_list(const char *xml, size_t len, struct blob_page_list *list,
                                                char *next_marker, size_t markersz);
/* <EnumerationResults>: appends each <Blob> to list; next_marker as above. */
RPL_MUST_CHECK rpl_err blob_xml_parse_blob_list(const char *xml, size_t len, struct blob_list *list,
                                                char *next_marker, size_t markersz);
/* Appends [offset, offset+length), merging with the last range when adjacent; RPL_E_LIMIT at the cap. */
RPL_MUST_CHECK rpl_err blob_page_list_add(struct blob_page_list *list, uint64_t offset, uint64_t length);

/* A managed-identity token response (a flat JSON object): access_token, expires_on or expires_in
 * (strings or numbers), token_type Bearer when given. now anchors expires_in. */
RPL_MUST_CHECK rpl_err blob_token_parse(const char *json, size_t len, time_t now, struct blob_token *out,
                                        char *why, size_t whysz);

/* snprintf into why when why is not NULL. */
void blob_set_why(char *why, size_t whysz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
