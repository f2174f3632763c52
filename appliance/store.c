/* store.c - picks the storage backend a storage string names (store.h). */
#include "store.h"

/* In the order they are asked; the last takes what no other claims (a connection string). */
static const struct store_ops *const backends[] = {&store_file_ops, &store_blob_ops};

const struct store_ops *store_backend_of(const char *storage)
{
  size_t n = sizeof backends / sizeof backends[0];
  for (size_t i = 0; i + 1 < n; i++)
    if (backends[i]->claims(storage))
      return backends[i];
  return backends[n - 1];
}

const struct store_ops *store_backend(const struct appliance_settings *s) { return store_backend_of(s->storage); }
