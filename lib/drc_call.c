/*
 * One call to drcc over sd-bus: the message, the D-Bus error mapped to a DRC code, the answer
 * read against the signature drc_verbs[] promises. Shared by libdrc (drc.c, which adds the
 * connection pool and the per-thread detail) and the SPANK plugin (one connection per
 * callback); see drc_call.h.
 */
#define _GNU_SOURCE
#include "drc_call.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drc_errors.h"

/* Checked against packaging/dbus/org.drc.Node.xml by tests/clib/test_signatures.py. */
const struct drc_signature drc_verbs[DRC_N_VERBS] = {
	[DRC_VERB_ACQUIRE] = { "Acquire", "u", "u" },
	[DRC_VERB_ACCESS] = { "Access", "uu", "uuuu" },
	[DRC_VERB_ACCESS_WITH_TOKEN] = { "AccessWithToken", "su", "uuuu" },
	[DRC_VERB_ACCESS_SLINGSHOT] = { "AccessSlingshot", "uu", "uus" },
	[DRC_VERB_GET_CREDENTIAL_TOKEN] = { "GetCredentialToken", "u", "s" },
	[DRC_VERB_GRANT] = { "Grant", "uuu", "" },
	[DRC_VERB_REVOKE] = { "Revoke", "uuu", "" },
	[DRC_VERB_RELEASE] = { "Release", "uu", "b" },
	[DRC_VERB_RELEASE_LOCAL] = { "ReleaseLocal", "u", "" },
	[DRC_VERB_GET_WLM_ID] = { "GetWlmId", "", "u" },
	[DRC_VERB_JOB_CREDENTIAL] = { "JobCredential", "", "u" },
	[DRC_VERB_REGISTER_JOB_PID] = { "RegisterJobPid", "uu", "" },
	[DRC_VERB_JOB_ENDED] = { "JobEnded", "u", "au" },
};

/* D-Bus errors meaning "nobody answered": the daemon is not running or went away. */
static const char *const not_running[] = {
	SD_BUS_ERROR_SERVICE_UNKNOWN,
	SD_BUS_ERROR_NAME_HAS_NO_OWNER,
	SD_BUS_ERROR_NO_REPLY,
	SD_BUS_ERROR_DISCONNECTED,
	SD_BUS_ERROR_NO_SERVER,
};
/* Our own deadline passed (sd-bus names it so): drcc is there but said nothing. */
static const char *const timed_out[] = {
	SD_BUS_ERROR_TIMEOUT,
	"org.freedesktop.DBus.Error.TimedOut",
};

const char *drc_status_name(int rc)
{
	long code = rc < 0 ? -(long)rc : rc;

	return code < DRC_N_CODES ? drc_error_names[code] : NULL;
}

const char *drc_status_message(int rc)
{
	long code = rc < 0 ? -(long)rc : rc;

	return code < DRC_N_CODES ? drc_error_messages[code] : "unknown DRC error";
}

/* Write why into detail and return rc, so callers can `return note(...)`. */
__attribute__((format(printf, 4, 5))) static int note(char *detail, size_t len, int rc,
						       const char *format, ...)
{
	va_list args;

	va_start(args, format);
	vsnprintf(detail, len, format, args);
	va_end(args);
	return rc;
}

/* A D-Bus error name from drcc (org.drc.Error.<NAME>) -> the DRC code; 0 if it is not one. */
static int drc_code_of(const char *name)
{
	size_t prefix = strlen(DRC_ERROR_PREFIX);
	int code;

	if (strncmp(name, DRC_ERROR_PREFIX, prefix) != 0)
		return 0;
	for (code = DRC_SUCCESS + 1; code < DRC_N_CODES; code++)
		if (strcmp(name + prefix, drc_error_names[code]) == 0)
			return code;
	return DRC_EPROTO; /* a code from a newer drcc */
}

static int is_one_of(const char *name, const char *const *names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(name, names[i]) == 0)
			return 1;
	return 0;
}

#define IS_ONE_OF(name, names) is_one_of(name, names, sizeof(names) / sizeof(names[0]))

/* A failed sd_bus_call -> negated DRC code (and the detail). bus_open: is the connection
 * still usable. */
static int status_of_call(const char *member, int r, const sd_bus_error *error, int bus_open,
			  char *detail, size_t len)
{
	const char *name = sd_bus_error_is_set(error) ? error->name : NULL;
	const char *text = name && error->message ? error->message : "";
	int code = name ? drc_code_of(name) : 0;

	if (code) /* drcc's answer: a DRCS it could not reach is named here, with the reason */
		return note(detail, len, -code, "%s", *text ? text : name);
	if (name && IS_ONE_OF(name, not_running))
		return note(detail, len, -DRC_ECONNREFUSED,
			    "drcc (%s) is not running (%s: %s); start it: systemctl start "
			    "drcc.service",
			    DRC_NODE_NAME, member, *text ? text : name);
	if ((name && IS_ONE_OF(name, timed_out)) || (!name && r == -ETIMEDOUT))
		return note(detail, len, -DRC_ECONNREFUSED,
			    "drcc (%s) did not answer %s in time: it is running but hung or "
			    "overloaded; check it: systemctl status drcc.service, its journal, and "
			    "restart it if hung",
			    DRC_NODE_NAME, member);
	if (name && strcmp(name, SD_BUS_ERROR_ACCESS_DENIED) == 0)
		return note(detail, len, -DRC_EPERM, "the D-Bus policy refused %s: %s", member,
			    text);
	if (!bus_open || r == -ETIMEDOUT || r == -ECONNRESET || r == -ENOTCONN || r == -EPIPE)
		return note(detail, len, -DRC_ECONNREFUSED, "drcc (%s) did not answer %s: %s",
			    DRC_NODE_NAME, member, strerror(-r));
	return note(detail, len, -DRC_EPROTO, "%s: %s %s", member, name ? name : strerror(-r),
		    text);
}

/* Read the reply, whose D-Bus signature must be exactly types, into a. */
static int read_answer(sd_bus_message *reply, const char *types, struct drc_answer *a,
		       char *detail, size_t len)
{
	const char *s;
	int r = 1, n = 0;

	if (sd_bus_message_has_signature(reply, types) <= 0)
		return note(detail, len, -DRC_EPROTO,
			    "drcc answered with signature '%s', drc expects '%s'",
			    sd_bus_message_get_signature(reply, 1), types);
	if (strcmp(types, "au") == 0)
		return DRC_SUCCESS; /* JobEnded's list of freed credentials: not needed here */
	for (; *types && r > 0; types++) {
		if (*types == 'u' && n < 4) {
			r = sd_bus_message_read_basic(reply, 'u', &a->u[n++]);
		} else if (*types == 'b') {
			r = sd_bus_message_read_basic(reply, 'b', &a->b);
		} else if (*types == 's' && !a->s) {
			r = sd_bus_message_read_basic(reply, 's', &s);
			if (r > 0 && !(a->s = strdup(s)))
				return note(detail, len, -DRC_ENOSPC, "out of memory");
		} else {
			r = -EINVAL;
		}
	}
	if (r <= 0) {
		free(a->s);
		a->s = NULL;
		return note(detail, len, -DRC_EPROTO, "drcc's answer could not be read");
	}
	return DRC_SUCCESS;
}

int drc_vcall(sd_bus *bus, uint64_t timeout_usec, enum drc_verb verb, struct drc_answer *a,
	      char *detail, size_t len, va_list args)
{
	const struct drc_signature *v = &drc_verbs[verb];
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *call = NULL, *reply = NULL;
	int r, rc;

	r = sd_bus_message_new_method_call(bus, &call, DRC_NODE_NAME, DRC_NODE_PATH,
					   DRC_NODE_INTERFACE, v->member);
	if (r >= 0)
		r = sd_bus_message_appendv(call, v->in, args);
	if (r == -ENOMEM) {
		rc = note(detail, len, -DRC_ENOSPC, "out of memory");
	} else if (r < 0 && verb == DRC_VERB_ACCESS_WITH_TOKEN) {
		rc = note(detail, len, -DRC_BAD_TOKEN, "the token is not a valid UTF-8 string");
	} else if (r < 0) {
		rc = note(detail, len, -DRC_EPROTO, "%s could not be sent: %s", v->member,
			  strerror(-r));
	} else {
		r = sd_bus_call(bus, call, timeout_usec, &error, &reply);
		rc = r < 0 ? status_of_call(v->member, r, &error, sd_bus_is_open(bus) > 0, detail,
					    len)
			   : read_answer(reply, v->out, a, detail, len);
	}
	/* Messages hold references to the connection: release them before it may go. */
	sd_bus_message_unref(reply);
	sd_bus_message_unref(call);
	sd_bus_error_free(&error);
	return rc;
}

int drc_call(sd_bus *bus, uint64_t timeout_usec, enum drc_verb verb, struct drc_answer *a,
	     char *detail, size_t len, ...)
{
	va_list args;
	int rc;

	va_start(args, len);
	rc = drc_vcall(bus, timeout_usec, verb, a, detail, len, args);
	va_end(args);
	return rc;
}

int drc_connect(const char *address, sd_bus **bus, char *detail, size_t len)
{
	int r;

	*bus = NULL;
	if ((r = sd_bus_new(bus)) < 0)
		return note(detail, len, -DRC_ENOSPC, "out of memory");
	if ((r = sd_bus_set_address(*bus, address)) < 0 ||
	    (r = sd_bus_set_bus_client(*bus, 1)) < 0 || (r = sd_bus_start(*bus)) < 0) {
		*bus = sd_bus_close_unref(*bus);
		return note(detail, len, -DRC_ECONNREFUSED, "cannot reach drcc on %s: %s", address,
			    strerror(-r));
	}
	return DRC_SUCCESS;
}

/* drcc's "cxi0:5,cxi1:6" (device:svc_id by NIC) into s; -DRC_EPROTO when malformed. */
int drc_parse_services(const char *text, struct drc_slingshot *s)
{
	const char *p = text;

	s->count = 0;
	while (*p) {
		const char *colon = strchr(p, ':');
		char *end;
		unsigned long id;
		size_t n;

		if (!colon || s->count == DRC_SLINGSHOT_MAX_DEVICES)
			return -DRC_EPROTO;
		n = (size_t)(colon - p);
		if (n == 0 || n >= sizeof(s->names[0]))
			return -DRC_EPROTO;
		errno = 0;
		id = strtoul(colon + 1, &end, 10);
		if (errno || end == colon + 1 || id == 0 || id > UINT32_MAX ||
		    (*end != ',' && *end != '\0'))
			return -DRC_EPROTO;
		memcpy(s->names[s->count], p, n);
		s->names[s->count][n] = '\0';
		s->svc_ids[s->count++] = (uint32_t)id;
		p = *end ? end + 1 : end;
	}
	return DRC_SUCCESS;
}
