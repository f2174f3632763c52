/* state_files.h - the name of every file and folder the two programs keep in their state
 * directories (the appliance's, default /var/lib/replication-appliance; the agent's, default
 * /var/lib/mobility-agent), in one place: docs/operations.md describes each. */
#ifndef STATE_FILES_H
#define STATE_FILES_H

/* ---- both programs ---- */
#define STATE_CONTROL_SOCKET      "control.sock"      /* the users' commands reach the daemon here (0600) */

/* ---- the appliance ---- */
#define STATE_APPLIANCE_CONF      "appliance.conf"    /* the settings init recorded (storage, limits, retention, ...) */
#define STATE_APPLIANCE_CERT      "appliance.crt"     /* the appliance's authority (CA): agents pin it */
#define STATE_APPLIANCE_KEY       "appliance.key"     /* its private key (0600), read only by the signer process */
#define STATE_SERVER_CERT         "server.crt"        /* the listeners' TLS certificate, issued by the authority */
#define STATE_SERVER_KEY          "server.key"        /* its private key (0600) */
#define STATE_CATALOG             "catalog.db"        /* agents, disks, cycles, recovery points (SQLite) */
#define STATE_LEASE_ID            "lease-id"          /* this appliance's lease id on its page blobs */
#define STATE_GROUP               "group.conf"        /* its appliance group: the group's id and record key (0600) */
#define STATE_WEB_ADMIN           "web-admin.pbkdf2"  /* the admin password's salted hash */
#define STATE_WEB_LOGIN           "web-login.pbkdf2"  /* the one-time login token's salted hash */
#define STATE_METRICS_TOKEN       "metrics-token"     /* the bearer token /metrics wants (0600, made at first start) */
#define STATE_REGISTRATION_KEY    "registration.key"  /* older versions kept the newest key here in clear: removed */
#define STATE_JOURNAL_DIR         "journal"           /* the cache: journal/<disk uuid>/ per disk */
#define STATE_JOURNAL_APPLIED     "applied"           /* in a disk's journal folder: the last applied cycle */
#define STATE_JOURNAL_APPLIED_TMP "applied.tmp"       /* ... written first, then renamed */
#define STATE_HASHINDEX           "hashindex"         /* in a disk's journal folder: its replica's chunk hashes */
#define STATE_HASHINDEX_TMP       "hashindex.tmp"     /* ... written first, then renamed */
#define STATE_DELETE_REPLICA      "delete-replica"    /* in a disk's journal folder: its agent unprotected it with
                                                         --delete-replica; the deletion is finished after a restart */
/* a disk's journal segments: 16 hex digits (the segment's sequence number) + ".seg" */

/* ---- the agent ---- */
#define STATE_AGENT_CONF          "agent.conf"        /* the appliance's address and the protected disks */
#define STATE_AGENT_CERT          "agent.crt"         /* the certificate the appliance signed at registration */
#define STATE_AGENT_KEY           "agent.key"         /* its private key (0600) */
#define STATE_AGENT_CERT_NEXT     "agent.crt.next"    /* a renewed certificate, while it replaces agent.crt */
#define STATE_AGENT_KEY_NEXT      "agent.key.next"    /* its key (0600), written before it */
#define STATE_CBT_DIR             "cbt"               /* the tracker's records: cbt/<device>.state */
#define STATE_CBT_RECORD_SUFFIX   ".state"

#endif
