/* agent_readiness.h - the latest boot readiness for Azure each agent reported (READINESS), kept in
 * memory until it reports again (at each connection, so a restarted appliance hears it again);
 * appliance/ internal: session.c stores it, status.c shows it per agent. Thread-safe. */
#ifndef APPLIANCE_AGENT_READINESS_H
#define APPLIANCE_AGENT_READINESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "json_out.h"
#include "proto.h"
#include "rpl_error.h"

/* Decodes a READINESS frame from agent and keeps it as that agent's latest. */
RPL_MUST_CHECK rpl_err agent_readiness_on_frame(const uint8_t agent[PROTO_ID_SIZE], const struct proto_frame *f);
/* Writes the member "readiness" of the agent's status object: {checked_unix, generation, checks,
 * failed, warned, ok, problems: ["FAIL name: detail", ...]}, or null when it reported none. */
void agent_readiness_json(struct json_out *j, const uint8_t agent[PROTO_ID_SIZE]);
/* Whether the agent's latest report has a failed check: how many, and the first "FAIL name: detail"
 * line into first. False when it reported none or all passed. */
bool agent_readiness_failed(const uint8_t agent[PROTO_ID_SIZE], unsigned *failed, char *first, size_t firstsz);
/* One line for the text status, "  readiness: ...\n", or nothing when it reported none. */
void agent_readiness_text(FILE *f, const uint8_t agent[PROTO_ID_SIZE]);

#endif
