/*
 * Loads drc.so the way slurmstepd does (dlopen) with a stand-in for the few Slurm functions it
 * calls, to drive the callbacks where a real Slurm cannot be made to fail, and under valgrind
 * (which cannot follow slurmstepd): spank_get_item answers job 4242, one node, but refuses the
 * item named by argv[2] ("S_JOB_NNODES", "S_JOB_STEPID"). Prints the plugin's log, its
 * spank_setenv calls and the callbacks' returns. Built and run by test_spank_items.py.
 * For one node's part of a multi-node job: SPANK_ITEMS_NNODES (the node count S_JOB_NNODES
 * answers, default 1), SPANK_ITEMS_STEPS ("batch": the batch step only; "step": a later
 * step only; default both), SPANK_ITEMS_EPILOG=0 (the job goes on: no job_epilog).
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

static const char *refused;
static uint32_t step;	   /* what S_JOB_STEPID answers */
static uint32_t nnodes = 1; /* what S_JOB_NNODES answers */
static struct spank_option *registered[8];
static int n_registered;

int spank_remote(spank_t sp)
{
	(void)sp;
	return 1;
}

spank_err_t spank_option_register(spank_t sp, struct spank_option *opt)
{
	(void)sp;
	registered[n_registered++] = opt;
	return ESPANK_SUCCESS;
}

spank_err_t spank_get_item(spank_t sp, spank_item_t item, ...)
{
	const char *name = item == S_JOB_ID	  ? "S_JOB_ID"
			   : item == S_JOB_STEPID ? "S_JOB_STEPID"
			   : item == S_JOB_NNODES ? "S_JOB_NNODES"
						  : "other";
	va_list args;

	(void)sp;
	if (strcmp(name, refused) == 0 || strcmp(name, "other") == 0)
		return ESPANK_ERROR;
	va_start(args, item);
	*va_arg(args, uint32_t *) = item == S_JOB_ID ? 4242 : item == S_JOB_STEPID ? step : nnodes;
	va_end(args);
	return ESPANK_SUCCESS;
}

spank_err_t spank_getenv(spank_t sp, const char *var, char *buf, int len)
{
	(void)sp, (void)var, (void)buf, (void)len;
	return ESPANK_ENV_NOEXIST;
}

spank_err_t spank_setenv(spank_t sp, const char *var, const char *val, int overwrite)
{
	(void)sp, (void)overwrite;
	printf("setenv %s=%s\n", var, val);
	return ESPANK_SUCCESS;
}

static void say(const char *format, va_list args)
{
	vfprintf(stdout, format, args);
	fputc('\n', stdout);
}

#define LOG(name)                                       \
	void name(const char *format, ...)              \
	{                                               \
		va_list args;                           \
		va_start(args, format);                 \
		fputs(#name ": ", stdout);              \
		say(format, args);                      \
		va_end(args);                           \
	}
LOG(slurm_info)
LOG(slurm_error)
LOG(slurm_verbose)

/* Call the registered option callback of "--name=value" (or "--name"). */
static int option(const char *arg)
{
	const char *eq = strchr(arg, '=');
	size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
	int i;

	for (i = 0; i < n_registered; i++)
		if (strlen(registered[i]->name) == n - 2 &&
		    strncmp(registered[i]->name, arg + 2, n - 2) == 0)
			return registered[i]->cb(registered[i]->val, eq ? eq + 1 : NULL, 1);
	return -1;
}

static spank_f *callback(void *plugin, const char *name)
{
	spank_f *f;

	*(void **)&f = dlsym(plugin, name);
	if (!f) {
		fprintf(stderr, "no %s in the plugin\n", name);
		exit(2);
	}
	return f;
}

/* spank_items PLUGIN REFUSED_ITEM BUS|none [--drc=... --drc-token ...]: init, the options,
 * init_post_opt (not with none), user_init twice (the batch step, then a later step of the
 * job), task_init, job_epilog, exit -- the order slurmstepd calls them in. */
int main(int argc, char **argv)
{
	const char *env_nnodes = getenv("SPANK_ITEMS_NNODES"), *steps = getenv("SPANK_ITEMS_STEPS");
	const char *epilog = getenv("SPANK_ITEMS_EPILOG");
	char bus[512];
	char *args[] = { bus };
	void *plugin;
	int i, offline;

	if (argc < 4)
		return 2;
	if (env_nnodes)
		nnodes = (uint32_t)strtoul(env_nnodes, NULL, 10);
	refused = argv[2];
	offline = strcmp(argv[3], "none") == 0;
	snprintf(bus, sizeof(bus), "bus=%s", offline ? "unix:path=/nonexistent/drc-test-bus" : argv[3]);
	plugin = dlopen(argv[1], RTLD_NOW);
	if (!plugin) {
		fprintf(stderr, "%s\n", dlerror());
		return 2;
	}
	if (callback(plugin, "slurm_spank_init")(NULL, 1, args) != 0)
		return 2;
	for (i = 4; i < argc; i++)
		if (option(argv[i]) != 0)
			return 2;
	if (!offline) /* registering the job would fail first */
		printf("init_post_opt=%d\n",
		       callback(plugin, "slurm_spank_init_post_opt")(NULL, 1, args));
	for (i = 0; i < 2; i++) {
		if (steps && strcmp(steps, i ? "step" : "batch") != 0)
			continue;
		step = i ? 1 : SLURM_BATCH_SCRIPT;
		callback(plugin, "slurm_spank_user_init")(NULL, 1, args);
	}
	fflush(stdout);
	printf("task_init=%d\n", callback(plugin, "slurm_spank_task_init")(NULL, 1, args));
	if (!epilog || strcmp(epilog, "0") != 0)
		printf("job_epilog=%d\n",
		       callback(plugin, "slurm_spank_job_epilog")(NULL, 1, args));
	callback(plugin, "slurm_spank_exit")(NULL, 1, args);
	fflush(stderr);
	dlclose(plugin);
	return 0;
}
