/*
 * What drc.so is asked to do: the user's --drc=acquire|ID, --drc-flags=persistent,flex,
 * --drc-grant=uid:NAME|UID,gid:NAME|GID,job:WLMID and --drc-token (drc_request), and the
 * admin's plugstack.conf arguments (drc_config). Every refusal names the bad value.
 */
#include "drc_spank.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <slurm/slurm.h>

#include "rdmacred.h"

enum option { OPT_DRC, OPT_FLAGS, OPT_GRANT, OPT_TOKEN };

struct drc_request drc_request;
struct drc_config drc_config;

/* A decimal uint32; zero only when allowed (uid/gid 0, not a credential or job id). */
static int parse_u32(const char *s, uint32_t *out, int allow_zero)
{
	unsigned long long v;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || (v == 0 && !allow_zero) || v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int parse_flag(const char *tok, struct drc_request *r)
{
	if (strcmp(tok, "persistent") == 0)
		r->flags |= DRC_FLAGS_PERSISTENT;
	else if (strcmp(tok, "flex") == 0)
		r->flags |= DRC_FLAGS_FLEX_CREDENTIAL;
	else {
		slurm_error("drc: --drc-flags: unknown flag '%s' (known: persistent, flex)", tok);
		return -1;
	}
	return 0;
}

/* uid:NAME|UID, gid:NAME|GID or job:WLMID. */
static int parse_grant(const char *tok, struct drc_request *r)
{
	const char *value = strchr(tok, ':') ? strchr(tok, ':') + 1 : "";
	uint32_t *target = &r->grants[r->n_grants].target;
	struct passwd *pw;
	struct group *gr;
	int flags = 0;

	if (r->n_grants == DRC_MAX_GRANTS) {
		slurm_error("drc: --drc-grant: more than %d targets", DRC_MAX_GRANTS);
		return -1;
	}
	if (strncmp(tok, "job:", 4) == 0 && parse_u32(value, target, 0) == 0)
		flags = DRC_FLAGS_TARGET_WLM;
	else if (strncmp(tok, "uid:", 4) == 0 && parse_u32(value, target, 1) == 0)
		flags = DRC_FLAGS_TARGET_UID;
	else if (strncmp(tok, "uid:", 4) == 0 && (pw = getpwnam(value)))
		flags = DRC_FLAGS_TARGET_UID, *target = pw->pw_uid;
	else if (strncmp(tok, "gid:", 4) == 0 && parse_u32(value, target, 1) == 0)
		flags = DRC_FLAGS_TARGET_GID;
	else if (strncmp(tok, "gid:", 4) == 0 && (gr = getgrnam(value)))
		flags = DRC_FLAGS_TARGET_GID, *target = gr->gr_gid;
	if (!flags) {
		slurm_error("drc: --drc-grant: bad target '%s' (uid:NAME|UID, gid:NAME|GID or "
			    "job:WLMID)", tok);
		return -1;
	}
	r->grants[r->n_grants++].flags = flags;
	return 0;
}

/* Each comma-separated item of spec through parse; -1 if any was refused. */
static int each(const char *spec, int (*parse)(const char *, struct drc_request *),
		struct drc_request *r)
{
	char *copy = strdup(spec ? spec : ""), *tok, *save = NULL;
	int rc = copy ? 0 : -1;

	for (tok = copy ? strtok_r(copy, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save))
		if (parse(tok, r) < 0)
			rc = -1;
	free(copy);
	return rc;
}

static int option_cb(int val, const char *optarg, int remote)
{
	struct drc_request r = drc_request;

	(void)remote;
	if (val == OPT_DRC && optarg && strcmp(optarg, "acquire") == 0) {
		r.given = 1, r.id = 0;
		snprintf(r.text, sizeof(r.text), "acquire");
	} else if (val == OPT_DRC) {
		if (parse_u32(optarg, &r.id, 0) < 0) {
			slurm_error("drc: --drc=%s: expected 'acquire' or a credential id",
				    optarg ? optarg : "");
			return -1;
		}
		r.given = 1;
		snprintf(r.text, sizeof(r.text), "%s", optarg);
	} else if (val == OPT_FLAGS) {
		r.flags = 0;
		if (each(optarg, parse_flag, &r) < 0)
			return -1;
	} else if (val == OPT_GRANT) {
		r.n_grants = 0;
		if (each(optarg, parse_grant, &r) < 0)
			return -1;
	} else {
		r.token = 1;
	}
	drc_request = r;
	return 0;
}

struct spank_option drc_options[] = {
	{ "drc", "acquire|ID",
	  "Dynamic RDMA Credential for the job: acquire a new one, or access credential ID", 1,
	  OPT_DRC, option_cb },
	{ "drc-flags", "persistent,flex", "flags of a credential acquired with --drc=acquire", 1,
	  OPT_FLAGS, option_cb },
	{ "drc-grant", "uid:U,gid:G,job:J", "grant the --drc credential to users, groups or jobs",
	  1, OPT_GRANT, option_cb },
	{ "drc-token", NULL, "also export a DRC token for the credential as DRC_TOKEN", 0,
	  OPT_TOKEN, option_cb },
	SPANK_OPTIONS_TABLE_END
};

int drc_configure(int ac, char **av)
{
	int i;

	for (i = 0; i < ac; i++) {
		if (strncmp(av[i], "bus=", 4) == 0) {
			free(drc_config.bus);
			drc_config.bus = strdup(av[i] + 4);
		} else if (strcmp(av[i], "fail_hard") == 0) {
			drc_config.fail_hard = 1;
		} else if (strcmp(av[i], "slingshot") == 0) {
			drc_config.slingshot = 1;
		} else {
			slurm_error("drc: unknown plugin argument '%s' (known: bus=ADDRESS, "
				    "fail_hard, slingshot)", av[i]);
			return -1;
		}
	}
	return 0;
}
