/* store.c - picks the storage backend the settings name (store.h). */
#include "store.h"

const struct store_ops *store_backend(const struct appliance_settings *s)
{
  return settings_is_file_storage(s) ? &store_file_ops : &store_blob_ops;
}
