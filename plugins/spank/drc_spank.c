/*
 * drc.so - SPANK plugin: Dynamic RDMA Credentials for Slurm jobs. It relays the --drc*
 * options (drc_options.c) to drcc through libdrc's call layer (lib/drc_call.c, built in).
 * plugstack.conf arguments: bus=ADDRESS (default $DBUS_SYSTEM_BUS_ADDRESS, else the system
 * bus); fail_hard (a failed job-end report fails the epilog: Slurm drains the node; without
 * it drc-jedi reconciles later); slingshot (drc_slingshot.c: SLINGSHOT_* for libfabric).
 *
 *   init_post_opt  root: vouch to drcc that this slurmstepd is the job's (RegisterJobPid)
 *   user_init      as the user, per step and node: acquire or access, grant, token; export
 *                  DRC_CREDENTIAL, DRC_COOKIE1, DRC_COOKIE2, DRC_CREDENTIAL_JOB (DRC_TOKEN).
 *                  --drc=acquire takes the credential drcc says the job already holds
 *                  (JobCredential: the batch step's, on any node), else acquires one -- not
 *                  in a multi-node step, which has no one place to acquire for all its nodes.
 *                  The job's environment, which the user controls, is not consulted.
 *   task_post_fork root: register each task pid with its job (forge-proof libdrc callers)
 *   task_init      as the user: print user_init's failure on the task's stderr, fail it
 *   job_epilog     root: tell drcc the job ended (JobEnded), which drops its references
 * Each callback closes its connection before returning (slurmstepd must not keep one open as
 * the user), so libdrc's connection pool is not used here.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

#include "drc_spank.h"
#include "rdmacred.h"

SPANK_PLUGIN(drc, 1);

#define DEFAULT_BUS "unix:path=/run/dbus/system_bus_socket"
/* libdrc's default: longer than drcc's budget for DRCS, so its reason reaches the job. */
#define CALL_TIMEOUT_USEC (DRC_DEFAULT_TIMEOUT_MS * 1000ULL)

char drc_reason[640];       /* "DRC_EPERM: drcc's reason" of the last failed call */
static char detail[512];    /* the call layer's reason, into drc_reason */
static char failure[1024];  /* set in user_init, printed by task_init */

/* -- calls to drcc ------------------------------------------------------------------------- */

/* rc; a failure's detail goes into drc_reason as "DRC_<NAME>: detail". */
static int noted(int rc)
{
	if (rc < 0)
		snprintf(drc_reason, sizeof(drc_reason), "DRC_%s: %s", drc_status_name(rc), detail);
	return rc;
}

/* A connection to drcc's bus as the current euid/egid/groups; < 0 with drc_reason set. */
static int open_bus(sd_bus **bus)
{
	const char *env = getenv("DBUS_SYSTEM_BUS_ADDRESS");
	const char *address = drc_config.bus ? drc_config.bus : env && *env ? env : DEFAULT_BUS;

	return noted(drc_connect(address, bus, detail, sizeof(detail)));
}

int drc_relay(sd_bus *bus, enum drc_verb verb, struct drc_answer *a, ...)
{
	va_list args;
	int rc;

	va_start(args, a);
	rc = drc_vcall(bus, CALL_TIMEOUT_USEC, verb, a, detail, sizeof(detail), args);
	va_end(args);
	return noted(rc);
}

/* A root hook (RegisterJobPid: pid, job; JobEnded: job) on a connection of its own. */
static int root_hook(enum drc_verb verb, uint32_t x, uint32_t y)
{
	struct drc_answer a = { 0 };
	sd_bus *bus;
	int rc = open_bus(&bus);

	if (rc == 0)
		rc = verb == DRC_VERB_JOB_ENDED ? drc_relay(bus, verb, &a, x)
						: drc_relay(bus, verb, &a, x, y);
	sd_bus_close_unref(bus);
	return rc;
}

/* -- the credential, as the user (user_init) ----------------------------------------------- */

int drc_fail(const char *format, ...)
{
	va_list args;

	va_start(args, format);
	vsnprintf(failure, sizeof(failure), format, args);
	va_end(args);
	slurm_info("%s", failure); /* the node's log; the user reads it from task_init */
	return -1;
}

static int setenv_u32(spank_t sp, const char *name, uint32_t value)
{
	char text[16];

	snprintf(text, sizeof(text), "%" PRIu32, value);
	return spank_setenv(sp, name, text, 1) == ESPANK_SUCCESS ? 0 : -1;
}

/* --drc=ID, else the credential drcc says the job holds on this node, else 0: acquire. */
static int credential_of_step(sd_bus *bus, uint32_t step, uint32_t nnodes, uint32_t *id)
{
	struct drc_answer a = { 0 };

	if ((*id = drc_request.id))
		return 0;
	if (drc_relay(bus, DRC_VERB_JOB_CREDENTIAL, &a) < 0)
		return drc_fail("drc: --drc=acquire: asking drcc for the job's credential: %s",
				drc_reason);
	if ((*id = a.u[0]) || step == SLURM_BATCH_SCRIPT)
		return 0;
	if (nnodes > 1)
		return drc_fail("drc: --drc=acquire in a %" PRIu32 "-node step: this job holds "
				"no credential, and a step has no one place to acquire for all its "
				"nodes: acquire in a batch job (sbatch --drc=acquire) or pass "
				"--drc=ID", nnodes);
	return 0;
}

static int grant_all(sd_bus *bus, uint32_t id)
{
	struct drc_answer a = { 0 };
	int i, rc;

	for (i = 0; i < drc_request.n_grants; i++) {
		rc = drc_relay(bus, DRC_VERB_GRANT, &a, id, drc_request.grants[i].target,
			       (uint32_t)drc_request.grants[i].flags);
		if (rc < 0 && rc != -DRC_ALREADY_GRANTED)
			return drc_fail("drc: grant of credential %" PRIu32 ": %s", id, drc_reason);
	}
	return 0;
}

static int use_credential(spank_t sp, sd_bus *bus, uint32_t job, uint32_t step, uint32_t nnodes)
{
	struct drc_answer a = { 0 }, token = { 0 };
	uint32_t id;
	int rc;

	if (credential_of_step(bus, step, nnodes, &id) < 0)
		return -1;
	if (id == 0 && drc_relay(bus, DRC_VERB_ACQUIRE, &a, (uint32_t)drc_request.flags) < 0)
		return drc_fail("drc: --drc=acquire: %s", drc_reason);
	id = id ? id : a.u[0];
	if (drc_relay(bus, DRC_VERB_ACCESS, &a, id, 0) < 0)
		return drc_fail("drc: access to credential %" PRIu32 ": %s", id, drc_reason);
	if (drc_config.slingshot && drc_export_slingshot(sp, bus, id) < 0)
		return -1;
	if (grant_all(bus, id) < 0)
		return -1;
	if (setenv_u32(sp, "DRC_CREDENTIAL", id) < 0 || setenv_u32(sp, "DRC_COOKIE1", a.u[1]) < 0 ||
	    setenv_u32(sp, "DRC_COOKIE2", a.u[2]) < 0 ||
	    setenv_u32(sp, "DRC_CREDENTIAL_JOB", job) < 0)
		return drc_fail("drc: cannot set DRC_* in the job environment");
	if (!drc_request.token)
		return 0;
	if (drc_relay(bus, DRC_VERB_GET_CREDENTIAL_TOKEN, &token, id) < 0)
		return drc_fail("drc: token for credential %" PRIu32 ": %s", id, drc_reason);
	rc = spank_setenv(sp, "DRC_TOKEN", token.s, 1) == ESPANK_SUCCESS
		     ? 0
		     : drc_fail("drc: cannot set DRC_TOKEN in the job environment");
	free(token.s);
	return rc;
}

/* -- SPANK callbacks ----------------------------------------------------------------------- */

/* S_JOB_ID, and S_JOB_STEPID when step is wanted; -1 (logged) if Slurm did not tell. */
static int job_ids(spank_t sp, uint32_t *job, uint32_t *step)
{
	if (spank_get_item(sp, S_JOB_ID, job) == ESPANK_SUCCESS &&
	    (!step || spank_get_item(sp, S_JOB_STEPID, step) == ESPANK_SUCCESS))
		return 0;
	slurm_error("drc: Slurm did not tell the job %s", step ? "and step ids" : "id");
	return -1;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	int i;

	for (i = 0; drc_options[i].name; i++)
		if (spank_option_register(sp, &drc_options[i]) != ESPANK_SUCCESS) {
			slurm_error("drc: cannot register --%s", drc_options[i].name);
			return -1;
		}
	return drc_configure(ac, av);
}

int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	uint32_t job, step;

	(void)ac, (void)av;
	if (!spank_remote(sp) || !drc_request.given)
		return 0;
	if (job_ids(sp, &job, &step) < 0)
		return drc_fail("drc: --drc=%s: no job and step ids", drc_request.text);
	if (step != SLURM_EXTERN_CONT &&
	    root_hook(DRC_VERB_REGISTER_JOB_PID, (uint32_t)getpid(), job) < 0)
		return drc_fail("drc: --drc=%s: registering job %" PRIu32 " with drcc: %s",
				drc_request.text, job, drc_reason);
	return 0;
}

int slurm_spank_user_init(spank_t sp, int ac, char **av)
{
	uint32_t job, step, nnodes;
	sd_bus *bus;

	(void)ac, (void)av;
	if (!spank_remote(sp) || !drc_request.given || failure[0])
		return 0; /* a failure is printed in task_init, where stderr is the user's */
	if (job_ids(sp, &job, &step) < 0)
		return drc_fail("drc: --drc=%s: no job and step ids", drc_request.text);
	if (step == SLURM_EXTERN_CONT)
		return 0;
	if (spank_get_item(sp, S_JOB_NNODES, &nnodes) != ESPANK_SUCCESS)
		return drc_fail("drc: --drc=%s: Slurm did not tell the job's node count: no "
				"credential for this step", drc_request.text);
	if (open_bus(&bus) < 0)
		return drc_fail("drc: --drc=%s: %s", drc_request.text, drc_reason);
	use_credential(sp, bus, job, step, nnodes);
	sd_bus_close_unref(bus);
	return 0;
}

int slurm_spank_task_post_fork(spank_t sp, int ac, char **av)
{
	uint32_t job;
	pid_t pid;

	(void)ac, (void)av;
	if (!spank_remote(sp))
		return 0;
	if (job_ids(sp, &job, NULL) < 0 || spank_get_item(sp, S_TASK_PID, &pid) != ESPANK_SUCCESS)
		return drc_request.given ? drc_fail("drc: a task without job id or pid") : 0;
	/* Without the registration drcc still asks slurmd; only --drc makes it required. */
	if (root_hook(DRC_VERB_REGISTER_JOB_PID, (uint32_t)pid, job) == 0)
		return 0;
	if (drc_request.given)
		return drc_fail("drc: registering task %d of job %" PRIu32 ": %s", (int)pid, job,
				drc_reason);
	slurm_verbose("drc: registering task %d of job %" PRIu32 ": %s", (int)pid, job, drc_reason);
	return 0;
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	(void)ac, (void)av;
	if (!spank_remote(sp) || !failure[0])
		return 0;
	fprintf(stderr, "%s\n", failure);
	fflush(stderr);
	return -1;
}

int slurm_spank_job_epilog(spank_t sp, int ac, char **av)
{
	uint32_t job;

	if (drc_configure(ac, av) < 0 || job_ids(sp, &job, NULL) < 0)
		return drc_config.fail_hard ? -1 : 0;
	if (root_hook(DRC_VERB_JOB_ENDED, job, 0) == 0)
		return 0;
	slurm_error("drc: job %" PRIu32 " ended, but drcc was not told: %s%s", job, drc_reason,
		    drc_config.fail_hard ? "" : " (drc-jedi reconcile will expire it)");
	return drc_config.fail_hard ? -1 : 0;
}

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	(void)sp, (void)ac, (void)av;
	free(drc_config.bus);
	drc_config.bus = NULL;
	return 0;
}
