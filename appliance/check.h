/* check.h - the prerequisite checks of the storage path (appliance/ internal; used by cmd_check.c for
 * `check` and web_api.c for the configuration manager's /api/check). */
#ifndef APPLIANCE_CHECK_H
#define APPLIANCE_CHECK_H

#include <stddef.h>
#include <stdio.h>

#include "settings.h"

/* Runs every check against settings s and writes the `check --json` document to out; *failed gets
 * the number of failed checks. */
void check_write_json(const char *state_dir, const struct appliance_settings *s, FILE *out, size_t *failed);

#endif
