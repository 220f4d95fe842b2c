/*
 * The one D-Bus call layer of drc's C code (internal, not installed): libdrc and the SPANK
 * plugin both build drc_call.c in and call drcc (org.drc.Node) only through drc_call().
 *
 * drc_verbs[] is the single table of what the C code calls -- member, in and out D-Bus
 * signatures -- and drc_call() sends exactly those, so tests/clib/test_signatures.py can hold
 * the table against the shipped introspection XML without a bus or root. Nothing here prints
 * or keeps state: every failure is a negated DRC code with its reason written into detail.
 */
#ifndef DRC_CALL_H
#define DRC_CALL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-bus.h>

#include "rdmacred.h"

#define DRC_INTERNAL __attribute__((visibility("hidden")))

#define DRC_NODE_NAME "org.drc.Node"
#define DRC_NODE_PATH "/org/drc/Node"
#define DRC_NODE_INTERFACE "org.drc.Node"

/* The members of org.drc.Node the C code calls; drc_verbs[] gives their signatures. */
enum drc_verb {
	DRC_VERB_ACQUIRE,
	DRC_VERB_ACCESS,
	DRC_VERB_ACCESS_WITH_TOKEN,
	DRC_VERB_ACCESS_SLINGSHOT,
	DRC_VERB_GET_CREDENTIAL_TOKEN,
	DRC_VERB_GRANT,
	DRC_VERB_REVOKE,
	DRC_VERB_RELEASE,
	DRC_VERB_RELEASE_LOCAL,
	DRC_VERB_GET_WLM_ID,
	DRC_VERB_JOB_CREDENTIAL,
	DRC_VERB_REGISTER_JOB_PID,
	DRC_VERB_JOB_ENDED,
	DRC_N_VERBS
};

struct drc_signature {
	const char *member; /* D-Bus member name */
	const char *in;     /* signature of the in args, as drc_call()'s varargs */
	const char *out;    /* signature of the answer: only u (up to four), b, s and au */
};

DRC_INTERNAL extern const struct drc_signature drc_verbs[DRC_N_VERBS];

/* A reply's out args: up to four uint32, a boolean, a malloc'd string (the caller frees it).
 * An "au" answer (JobEnded) is checked, not kept. */
struct drc_answer {
	uint32_t u[4];
	int b;
	char *s;
};

/* A Slingshot access's CXI services, one per NIC (AccessSlingshot answers "cxi0:5,cxi1:6"). */
struct drc_slingshot {
	uint32_t count;
	uint32_t svc_ids[DRC_SLINGSHOT_MAX_DEVICES];
	char names[DRC_SLINGSHOT_MAX_DEVICES][16];
};

/* Call verb(in args...) on an open connection, waiting at most timeout_usec (> 0); fill a.
 * DRC_SUCCESS or a negated DRC code, whose reason goes into detail (len bytes). A closed
 * connection afterwards (sd_bus_is_open) means drcc or the bus went away. */
DRC_INTERNAL int drc_call(sd_bus *bus, uint64_t timeout_usec, enum drc_verb verb,
			  struct drc_answer *a, char *detail, size_t len, ...);
DRC_INTERNAL int drc_vcall(sd_bus *bus, uint64_t timeout_usec, enum drc_verb verb,
			   struct drc_answer *a, char *detail, size_t len, va_list args);

/* A new connection to the bus at address, as the caller's current euid/egid/groups
 * (the plugin's connections: one per callback, closed with sd_bus_close_unref). */
DRC_INTERNAL int drc_connect(const char *address, sd_bus **bus, char *detail, size_t len);

/* drcc's "cxi0:5,cxi1:6" (device:svc_id by NIC) into s; -DRC_EPROTO when malformed. */
DRC_INTERNAL int drc_parse_services(const char *text, struct drc_slingshot *s);

/* "EPERM" for DRC_EPERM (either sign); NULL if not a code. */
DRC_INTERNAL const char *drc_status_name(int rc);

/* The one-line message of a code (either sign), never NULL. */
DRC_INTERNAL const char *drc_status_message(int rc);

#endif /* DRC_CALL_H */
