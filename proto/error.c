/* error.c - messages and names for the project's error enum (rpl_error.h). */
#include "rpl_error.h"

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
