/*
 * drc.so - SPANK plugin: Dynamic RDMA Credentials for Slurm jobs.
 *
 * Options (srun, sbatch and salloc):
 *   --drc=acquire|ID      acquire a new credential for the job, or access credential ID
 *   --drc-flags=LIST      with acquire: persistent, flex
 *   --drc-grant=LIST      after acquire/access: uid:NAME|UID, gid:NAME|GID, job:WLMID, ...
 *   --drc-token           also export a token for the credential as DRC_TOKEN
 *
 * plugstack.conf arguments:
 *   bus=ADDRESS   D-Bus address of drcc (default: $DBUS_SYSTEM_BUS_ADDRESS, else the
 *                 system bus)
 *   fail_hard     a failed job-end report fails the epilog, so Slurm drains the node.
 *                 Without it a DRC outage only logs: drc-jedi reconciles later.
 *   slingshot     (DRCS provider "slingshot") with --drc, also make the user's CXI services
 *                 (AccessSlingshot) and export SLINGSHOT_VNIS, SLINGSHOT_SVC_IDS and
 *                 SLINGSHOT_DEVICES for the credential's VNI, so an unmodified libfabric
 *                 CXI application lands on the shared VNI. The job's own values (from
 *                 switch/hpe_slingshot), when set, are kept as DRC_JOB_SLINGSHOT_*.
 *
 * Where things happen (all policy stays in drcc/drcs; this file only relays):
 *   init_post_opt  slurmstepd, root: when --drc was given, vouch to drcc that this
 *                  slurmstepd's pid belongs to the job (RegisterJobPid).
 *   user_init      slurmstepd with the user's euid/egid/groups, once per step and node:
 *                  connect to drcc as the user, acquire or access, grant, get a token, and
 *                  set DRC_CREDENTIAL, DRC_COOKIE1, DRC_COOKIE2 (DRC_TOKEN) for every task.
 *                  drcc sees the user's uid from the kernel and the job from the
 *                  registration above, so the reference is (credential, job, node).
 *   task_post_fork slurmstepd, root: register every task pid with its job, so that
 *                  applications calling libdrc are identified forge-proof even with
 *                  proctrack/linuxproc.
 *   task_init      the task, as the user: report a failure of user_init on the task's
 *                  stderr (srun's stderr, or the batch job's output) and fail the task.
 *   job_epilog     root: tell drcc the job ended (JobEnded), which drops its references.
 *
 * --drc=acquire acquires once per job: in the batch step of a batch job (whose steps then
 * inherit DRC_CREDENTIAL and DRC_CREDENTIAL_JOB and access that credential instead of
 * acquiring again), else in the job's single-node step. A multi-node step without an
 * inherited credential is refused: there is no place to acquire once for all its nodes
 * (acquire in a batch job, or pass --drc=ID). DRC_CREDENTIAL_JOB is compared with the job
 * id, so a stale DRC_CREDENTIAL from another job is not reused. The environment is only a
 * hint for *which* credential: drcc decides whether the caller may have it.
 *
 * Calls go over sd-bus directly rather than through libdrc: the plugin prints drcc's own
 * message with the DRC error name, and each connection is closed before the callback
 * returns (libdrc keeps one per process, which slurmstepd would keep as the user).
 */
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>
#include <systemd/sd-bus.h>

SPANK_PLUGIN(drc, 1);

#define NODE_NAME "org.drc.Node"
#define NODE_PATH "/org/drc/Node"
#define NODE_IFACE "org.drc.Node"
#define ERROR_PREFIX "org.drc.Error."
#define DEFAULT_BUS "unix:path=/run/dbus/system_bus_socket"
#define CALL_TIMEOUT_USEC (10 * 1000000ULL)

/* rdmacred.h values */
#define FLAG_FLEX (1 << 0)
#define FLAG_PERSISTENT (1 << 1)
#define TARGET_UID (1 << 2)
#define TARGET_GID (1 << 3)
#define TARGET_WLM (1 << 4)

#define MAX_GRANTS 32

struct grant {
	uint32_t target;
	int flags;
};

static char *opt_drc;     /* "acquire" or an id */
static char *opt_flags;
static char *opt_grants;
static int opt_token;

static char *bus_address; /* plugin argument bus= */
static int fail_hard;     /* plugin argument fail_hard */
static int slingshot;     /* plugin argument slingshot */

static char failure[1024]; /* set in user_init, reported by task_init */

/* -- option parsing (every context: srun/sbatch check early, slurmstepd again) ----------- */

/* A decimal uint32; zero only when allowed (uid/gid 0, not a credential or job id). */
static int parse_u32(const char *s, uint32_t *out, int allow_zero)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || (v == 0 && !allow_zero) || v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int parse_id(const char *s, uint32_t *id)
{
	return parse_u32(s, id, 0);
}

static int parse_flags(const char *spec, int *flags)
{
	char *copy, *tok, *save = NULL;
	int rc = 0;

	*flags = 0;
	if (!spec)
		return 0;
	copy = strdup(spec);
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (strcmp(tok, "persistent") == 0)
			*flags |= FLAG_PERSISTENT;
		else if (strcmp(tok, "flex") == 0)
			*flags |= FLAG_FLEX;
		else {
			slurm_error("drc: --drc-flags: unknown flag '%s' (known: persistent, flex)",
				    tok);
			rc = -1;
		}
	}
	free(copy);
	return rc;
}

static int parse_target(const char *tok, struct grant *g)
{
	const char *value = strchr(tok, ':');
	struct passwd *pw;
	struct group *gr;

	if (!value)
		return -1;
	value++;
	if (strncmp(tok, "uid:", 4) == 0) {
		g->flags = TARGET_UID;
		if (parse_u32(value, &g->target, 1) == 0)
			return 0;
		if (!(pw = getpwnam(value)))
			return -1;
		g->target = pw->pw_uid;
		return 0;
	}
	if (strncmp(tok, "gid:", 4) == 0) {
		g->flags = TARGET_GID;
		if (parse_u32(value, &g->target, 1) == 0)
			return 0;
		if (!(gr = getgrnam(value)))
			return -1;
		g->target = gr->gr_gid;
		return 0;
	}
	if (strncmp(tok, "job:", 4) == 0) {
		g->flags = TARGET_WLM;
		return parse_id(value, &g->target);
	}
	return -1;
}

static int parse_grants(const char *spec, struct grant *grants, int *n)
{
	char *copy, *tok, *save = NULL;
	int rc = 0;

	*n = 0;
	if (!spec)
		return 0;
	copy = strdup(spec);
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (*n == MAX_GRANTS) {
			slurm_error("drc: --drc-grant: more than %d targets", MAX_GRANTS);
			rc = -1;
			break;
		}
		if (parse_target(tok, &grants[*n]) < 0) {
			slurm_error("drc: --drc-grant: bad target '%s' (uid:NAME|UID, gid:NAME|GID "
				    "or job:WLMID)", tok);
			rc = -1;
			continue;
		}
		(*n)++;
	}
	free(copy);
	return rc;
}

static int set_opt(char **where, const char *optarg)
{
	free(*where);
	*where = optarg ? strdup(optarg) : NULL;
	return 0;
}

static int opt_drc_cb(int val, const char *optarg, int remote)
{
	uint32_t id;

	(void)val;
	(void)remote;
	if (!optarg || (strcmp(optarg, "acquire") != 0 && parse_id(optarg, &id) < 0)) {
		slurm_error("drc: --drc=%s: expected 'acquire' or a credential id",
			    optarg ? optarg : "");
		return -1;
	}
	return set_opt(&opt_drc, optarg);
}

static int opt_flags_cb(int val, const char *optarg, int remote)
{
	int flags;

	(void)val;
	(void)remote;
	if (parse_flags(optarg, &flags) < 0)
		return -1;
	return set_opt(&opt_flags, optarg);
}

static int opt_grant_cb(int val, const char *optarg, int remote)
{
	struct grant grants[MAX_GRANTS];
	int n;

	(void)val;
	(void)remote;
	if (parse_grants(optarg, grants, &n) < 0)
		return -1;
	return set_opt(&opt_grants, optarg);
}

static int opt_token_cb(int val, const char *optarg, int remote)
{
	(void)val;
	(void)optarg;
	(void)remote;
	opt_token = 1;
	return 0;
}

static struct spank_option options[] = {
	{ "drc", "acquire|ID",
	  "Dynamic RDMA Credential for the job: acquire a new one, or access credential ID",
	  1, 0, opt_drc_cb },
	{ "drc-flags", "persistent,flex", "flags of a credential acquired with --drc=acquire",
	  1, 0, opt_flags_cb },
	{ "drc-grant", "uid:U,gid:G,job:J", "grant the --drc credential to users, groups or jobs",
	  1, 0, opt_grant_cb },
	{ "drc-token", NULL, "also export a DRC token for the credential as DRC_TOKEN",
	  0, 0, opt_token_cb },
	SPANK_OPTIONS_TABLE_END
};

/* -- D-Bus ------------------------------------------------------------------------------ */

static const char *address(void)
{
	const char *env = getenv("DBUS_SYSTEM_BUS_ADDRESS");

	if (bus_address)
		return bus_address;
	return env && *env ? env : DEFAULT_BUS;
}

/* A bus connection with the caller's current euid/egid/groups; NULL with r set on error. */
static sd_bus *bus_connect(int *r)
{
	sd_bus *bus = NULL;

	if ((*r = sd_bus_new(&bus)) < 0)
		return NULL;
	if ((*r = sd_bus_set_address(bus, address())) < 0 ||
	    (*r = sd_bus_set_bus_client(bus, 1)) < 0 || (*r = sd_bus_start(bus)) < 0) {
		sd_bus_close_unref(bus);
		return NULL;
	}
	return bus;
}

/* "DRC_EPERM: <drcc's message>" for a failed call into buf. */
static void describe(char *buf, size_t len, int r, const sd_bus_error *e)
{
	if (e && sd_bus_error_is_set(e) && strncmp(e->name, ERROR_PREFIX, strlen(ERROR_PREFIX)) == 0)
		snprintf(buf, len, "DRC_%s: %s", e->name + strlen(ERROR_PREFIX), e->message);
	else if (e && sd_bus_error_is_set(e))
		snprintf(buf, len, "DRC_ECONNREFUSED: drcc did not answer (%s: %s)", e->name,
			 e->message ? e->message : "");
	else
		snprintf(buf, len, "DRC_ECONNREFUSED: cannot reach drcc on %s: %s", address(),
			 strerror(-r));
}

/* Call member(in...) -> reply; on error describe it into err and return < 0. */
static int call(sd_bus *bus, sd_bus_message **reply, char *err, size_t errlen,
		const char *member, const char *types, ...)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL;
	va_list ap;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, NODE_NAME, NODE_PATH, NODE_IFACE, member);
	if (r >= 0) {
		va_start(ap, types);
		r = sd_bus_message_appendv(m, types, ap);
		va_end(ap);
	}
	if (r >= 0)
		r = sd_bus_call(bus, m, CALL_TIMEOUT_USEC, &e, reply);
	if (r < 0)
		describe(err, errlen, r, &e);
	sd_bus_error_free(&e);
	sd_bus_message_unref(m);
	return r;
}

/* A root hook (RegisterJobPid, JobEnded) on a connection of its own. */
static int root_hook(char *err, size_t errlen, const char *member, const char *types, ...)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL, *reply = NULL;
	sd_bus *bus;
	va_list ap;
	int r;

	if (!(bus = bus_connect(&r))) {
		describe(err, errlen, r, NULL);
		return r;
	}
	r = sd_bus_message_new_method_call(bus, &m, NODE_NAME, NODE_PATH, NODE_IFACE, member);
	if (r >= 0) {
		va_start(ap, types);
		r = sd_bus_message_appendv(m, types, ap);
		va_end(ap);
	}
	if (r >= 0)
		r = sd_bus_call(bus, m, CALL_TIMEOUT_USEC, &e, &reply);
	if (r < 0)
		describe(err, errlen, r, &e);
	sd_bus_error_free(&e);
	sd_bus_message_unref(reply);
	sd_bus_message_unref(m);
	sd_bus_close_unref(bus);
	return r;
}

/* -- the credential, as the user (user_init) ------------------------------------------- */

static int fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(failure, sizeof(failure), fmt, ap);
	va_end(ap);
	/* For the node's log; the user reads it from task_init (slurm_error in slurmstepd
	 * would reach srun's stderr too, but not a batch job's output). */
	slurm_info("%s", failure);
	return -1;
}

static int setenv_u32(spank_t sp, const char *name, uint32_t value)
{
	char buf[16];

	snprintf(buf, sizeof(buf), "%" PRIu32, value);
	return spank_setenv(sp, name, buf, 1) == ESPANK_SUCCESS ? 0 : -1;
}

/* The id this step should access: --drc=ID, the batch step's credential, or 0: acquire. */
static int credential_of_step(spank_t sp, uint32_t job, uint32_t step, uint32_t *id)
{
	char cred[32], owner[32];
	uint32_t owner_job, nnodes = 1;

	*id = 0;
	if (strcmp(opt_drc, "acquire") != 0)
		return parse_id(opt_drc, id);
	if (spank_getenv(sp, "DRC_CREDENTIAL", cred, sizeof(cred)) == ESPANK_SUCCESS &&
	    spank_getenv(sp, "DRC_CREDENTIAL_JOB", owner, sizeof(owner)) == ESPANK_SUCCESS &&
	    parse_id(owner, &owner_job) == 0 && owner_job == job && parse_id(cred, id) == 0)
		return 0;
	spank_get_item(sp, S_JOB_NNODES, &nnodes);
	if (step != SLURM_BATCH_SCRIPT && nnodes > 1)
		return fail("drc: --drc=acquire in a %" PRIu32 "-node step: acquire in a batch "
			    "job (sbatch --drc=acquire) or pass --drc=ID", nnodes);
	return 0;
}

static int grant_all(sd_bus *bus, uint32_t id, char *err, size_t errlen)
{
	struct grant grants[MAX_GRANTS];
	sd_bus_message *reply = NULL;
	int i, n, r;

	if (parse_grants(opt_grants, grants, &n) < 0)
		return fail("drc: --drc-grant=%s: not understood here", opt_grants);
	for (i = 0; i < n; i++) {
		r = call(bus, &reply, err, errlen, "Grant", "uuu", id, grants[i].target,
			 (uint32_t)grants[i].flags);
		reply = sd_bus_message_unref(reply);
		if (r < 0 && !strstr(err, "DRC_ALREADY_GRANTED"))
			return fail("drc: grant of credential %" PRIu32 ": %s", id, err);
	}
	return 0;
}

/* Keep the job's own SLINGSHOT_<name> (switch/hpe_slingshot's) as DRC_JOB_SLINGSHOT_<name>,
 * then set it to value. */
static int replace_slingshot_env(spank_t sp, const char *name, const char *value)
{
	char var[64], saved[80], old[1024];

	snprintf(var, sizeof(var), "SLINGSHOT_%s", name);
	snprintf(saved, sizeof(saved), "DRC_JOB_SLINGSHOT_%s", name);
	if (spank_getenv(sp, var, old, sizeof(old)) == ESPANK_SUCCESS &&
	    spank_setenv(sp, saved, old, 0) != ESPANK_SUCCESS)
		return -1;
	return spank_setenv(sp, var, value, 1) == ESPANK_SUCCESS ? 0 : -1;
}

/* Slingshot: the user's CXI services for credential id, exported for libfabric's CXI
 * provider. drcc answers (credential, VNI, "cxi0:SVC,cxi1:SVC"). */
static int export_slingshot(spank_t sp, sd_bus *bus, uint32_t id)
{
	char err[512], vni_text[16], devices[512] = "", svc_ids[512] = "";
	sd_bus_message *reply = NULL;
	const char *services, *p;
	uint32_t cred, vni;
	int rc = -1;

	if (call(bus, &reply, err, sizeof(err), "AccessSlingshot", "uu", id, 0) < 0 ||
	    sd_bus_message_read(reply, "uus", &cred, &vni, &services) < 0) {
		fail("drc: CXI services for credential %" PRIu32 ": %s", id, err);
		goto out;
	}
	for (p = services; *p;) {
		const char *colon = strchr(p, ':'), *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);

		if (!colon || (comma && colon > comma) ||
		    strlen(devices) + (size_t)(colon - p) + 2 > sizeof(devices) ||
		    strlen(svc_ids) + (n - (size_t)(colon - p)) + 1 > sizeof(svc_ids)) {
			fail("drc: drcc answered CXI services '%s' that are not understood", services);
			goto out;
		}
		if (*devices)
			strcat(devices, ",");
		strncat(devices, p, (size_t)(colon - p));
		if (*svc_ids)
			strcat(svc_ids, ",");
		strncat(svc_ids, colon + 1, n - (size_t)(colon - p) - 1);
		p += n + (comma ? 1 : 0);
	}
	snprintf(vni_text, sizeof(vni_text), "%" PRIu32, vni);
	if (replace_slingshot_env(sp, "VNIS", vni_text) < 0 ||
	    replace_slingshot_env(sp, "SVC_IDS", svc_ids) < 0 ||
	    replace_slingshot_env(sp, "DEVICES", devices) < 0) {
		fail("drc: cannot set SLINGSHOT_* in the job environment");
		goto out;
	}
	rc = 0;
out:
	sd_bus_message_unref(reply);
	return rc;
}

static int get_credential(spank_t sp, uint32_t job, uint32_t step)
{
	char err[512];
	sd_bus_message *reply = NULL;
	uint32_t id, cred, cookie1, cookie2, ptag;
	const char *token;
	int flags, r, rc = -1;
	sd_bus *bus;

	if (credential_of_step(sp, job, step, &id) < 0)
		return -1;
	if (parse_flags(opt_flags, &flags) < 0)
		return fail("drc: --drc-flags=%s: not understood", opt_flags);
	if (!(bus = bus_connect(&r))) {
		describe(err, sizeof(err), r, NULL);
		return fail("drc: --drc=%s: %s", opt_drc, err);
	}
	if (id == 0) {
		if (call(bus, &reply, err, sizeof(err), "Acquire", "u", (uint32_t)flags) < 0 ||
		    sd_bus_message_read(reply, "u", &id) < 0) {
			fail("drc: --drc=acquire: %s", err);
			goto out;
		}
		reply = sd_bus_message_unref(reply);
	}
	if (call(bus, &reply, err, sizeof(err), "Access", "uu", id, 0) < 0 ||
	    sd_bus_message_read(reply, "uuuu", &cred, &cookie1, &cookie2, &ptag) < 0) {
		fail("drc: access to credential %" PRIu32 ": %s", id, err);
		goto out;
	}
	reply = sd_bus_message_unref(reply);
	if (slingshot && export_slingshot(sp, bus, id) < 0)
		goto out;
	if (grant_all(bus, id, err, sizeof(err)) < 0)
		goto out;
	if (setenv_u32(sp, "DRC_CREDENTIAL", id) < 0 || setenv_u32(sp, "DRC_COOKIE1", cookie1) < 0 ||
	    setenv_u32(sp, "DRC_COOKIE2", cookie2) < 0 ||
	    setenv_u32(sp, "DRC_CREDENTIAL_JOB", job) < 0) {
		fail("drc: cannot set DRC_* in the job environment");
		goto out;
	}
	if (opt_token) {
		if (call(bus, &reply, err, sizeof(err), "GetCredentialToken", "u", id) < 0 ||
		    sd_bus_message_read(reply, "s", &token) < 0) {
			fail("drc: token for credential %" PRIu32 ": %s", id, err);
			goto out;
		}
		if (spank_setenv(sp, "DRC_TOKEN", token, 1) != ESPANK_SUCCESS) {
			fail("drc: cannot set DRC_TOKEN in the job environment");
			goto out;
		}
	}
	rc = 0;
out:
	sd_bus_message_unref(reply);
	sd_bus_close_unref(bus);
	return rc;
}

/* -- SPANK callbacks -------------------------------------------------------------------- */

static int job_ids(spank_t sp, uint32_t *job, uint32_t *step)
{
	if (spank_get_item(sp, S_JOB_ID, job) != ESPANK_SUCCESS) {
		slurm_error("drc: cannot get the job id");
		return -1;
	}
	if (step && spank_get_item(sp, S_JOB_STEPID, step) != ESPANK_SUCCESS) {
		slurm_error("drc: cannot get the step id of job %" PRIu32, *job);
		return -1;
	}
	return 0;
}

/* Plugin arguments. Every callback passes them again: job_epilog runs in a process
 * (slurmstepd spank epilog) where slurm_spank_init did not run. */
static int configure(int ac, char **av)
{
	int i;

	for (i = 0; i < ac; i++) {
		if (strncmp(av[i], "bus=", 4) == 0) {
			free(bus_address);
			bus_address = strdup(av[i] + 4);
		} else if (strcmp(av[i], "fail_hard") == 0) {
			fail_hard = 1;
		} else if (strcmp(av[i], "slingshot") == 0) {
			slingshot = 1;
		} else {
			slurm_error("drc: unknown plugin argument '%s' (known: bus=ADDRESS, "
				    "fail_hard, slingshot)", av[i]);
			return -1;
		}
	}
	return 0;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	int i;

	for (i = 0; options[i].name; i++)
		if (spank_option_register(sp, &options[i]) != ESPANK_SUCCESS) {
			slurm_error("drc: cannot register --%s", options[i].name);
			return -1;
		}
	return configure(ac, av);
}

int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	char err[512];
	uint32_t job, step;

	(void)ac;
	(void)av;
	if (!spank_remote(sp) || !opt_drc)
		return 0;
	if (job_ids(sp, &job, &step) < 0 || step == SLURM_EXTERN_CONT)
		return 0;
	if (root_hook(err, sizeof(err), "RegisterJobPid", "uu", (uint32_t)getpid(), job) < 0)
		return fail("drc: --drc=%s: registering job %" PRIu32 " with drcc: %s", opt_drc,
			    job, err);
	return 0;
}

int slurm_spank_user_init(spank_t sp, int ac, char **av)
{
	uint32_t job, step;

	(void)ac;
	(void)av;
	if (!spank_remote(sp) || !opt_drc || failure[0])
		return 0;
	if (job_ids(sp, &job, &step) < 0)
		return fail("drc: --drc=%s: no job id", opt_drc);
	if (step == SLURM_EXTERN_CONT)
		return 0;
	/* A failure is reported in task_init, where stderr is the user's. */
	get_credential(sp, job, step);
	return 0;
}

int slurm_spank_task_post_fork(spank_t sp, int ac, char **av)
{
	char err[512];
	uint32_t job;
	pid_t pid;

	(void)ac;
	(void)av;
	if (!spank_remote(sp) || job_ids(sp, &job, NULL) < 0)
		return 0;
	if (spank_get_item(sp, S_TASK_PID, &pid) != ESPANK_SUCCESS) {
		slurm_error("drc: cannot get a task pid of job %" PRIu32, job);
		return 0;
	}
	/* Without the registration drcc still asks slurmd; only --drc makes it required. */
	if (root_hook(err, sizeof(err), "RegisterJobPid", "uu", (uint32_t)pid, job) < 0) {
		if (opt_drc)
			return fail("drc: registering task %d of job %" PRIu32 ": %s", (int)pid,
				    job, err);
		slurm_verbose("drc: registering task %d of job %" PRIu32 ": %s", (int)pid, job,
			      err);
	}
	return 0;
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	(void)ac;
	(void)av;
	if (!spank_remote(sp) || !failure[0])
		return 0;
	fprintf(stderr, "%s\n", failure);
	fflush(stderr);
	return -1;
}

int slurm_spank_job_epilog(spank_t sp, int ac, char **av)
{
	char err[512];
	uint32_t job;

	if (configure(ac, av) < 0 || job_ids(sp, &job, NULL) < 0)
		return fail_hard ? -1 : 0;
	if (root_hook(err, sizeof(err), "JobEnded", "u", job) < 0) {
		slurm_error("drc: job %" PRIu32 " ended, but drcc was not told: %s%s", job, err,
			    fail_hard ? "" : " (drc-jedi reconcile will expire it)");
		return fail_hard ? -1 : 0;
	}
	return 0;
}

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	(void)sp;
	(void)ac;
	(void)av;
	free(opt_drc);
	free(opt_flags);
	free(opt_grants);
	free(bus_address);
	opt_drc = opt_flags = opt_grants = bus_address = NULL;
	return 0;
}
