/* error.c - messages and names for the project's error enum, and the per-thread detail of the
 * last failure (rpl_error.h). */
#include "rpl_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local struct {
  rpl_err err;
  char text[RPL_DETAIL_MAX];
} detail;

rpl_err rpl_fail(rpl_err err, const char *fmt, ...)
{
  /* Formatted aside first: a caller adding context to a callee's detail passes rpl_detail(err)
   * itself as an argument, which must not be overwritten while it is read. */
  char text[RPL_DETAIL_MAX];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  if (n < 0)
    text[0] = '\0';
  memcpy(detail.text, text, sizeof text);
  detail.err = err;
  return err;
}

const char *rpl_detail(rpl_err err)
{
  return err != RPL_OK && detail.err == err ? detail.text : "";
}

void rpl_detail_clear(void)
{
  detail.err = RPL_OK;
  detail.text[0] = '\0';
}

const char *rpl_describe(rpl_err err, char *buf, size_t size)
{
  const char *d = rpl_detail(err);
  snprintf(buf, size, "%s%s%s", rpl_strerror(err), d[0] ? ": " : "", d);
  return buf;
}

const char *rpl_strerror(rpl_err err)
{
  switch (err) {
#define RPL_ERROR_MSG(name, value, msg) case name: return msg;
    RPL_ERROR_LIST(RPL_ERROR_MSG)
#undef RPL_ERROR_MSG
  }
  return "unknown error code";
}

const char *rpl_errname(rpl_err err)
{
  switch (err) {
#define RPL_ERROR_NAME(name, value, msg) case name: return #name;
    RPL_ERROR_LIST(RPL_ERROR_NAME)
#undef RPL_ERROR_NAME
  }
  return "RPL_E_UNKNOWN";
}
