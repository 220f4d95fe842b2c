/*
 * Loads drc.so the way slurmstepd does (dlopen) with a stand-in for the few Slurm functions it
 * calls, to drive user_init where a real Slurm cannot be made to fail: spank_get_item answers
 * the job and step ids but refuses the item named by argv[1] ("S_JOB_NNODES", "S_JOB_STEPID").
 * Prints task_init's return and what it wrote; exit 0. Built and run by test_spank_items.py.
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <slurm/spank.h>

static const char *refused;
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
	*va_arg(args, uint32_t *) = item == S_JOB_ID ? 4242 : item == S_JOB_STEPID ? 0 : 2;
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
	(void)sp, (void)var, (void)val, (void)overwrite;
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

int main(int argc, char **argv)
{
	spank_f *init, *user_init, *task_init, *spank_exit;
	void *plugin;
	int i, rc;

	if (argc != 3)
		return 2;
	refused = argv[2];
	plugin = dlopen(argv[1], RTLD_NOW);
	if (!plugin) {
		fprintf(stderr, "%s\n", dlerror());
		return 2;
	}
	*(void **)&init = dlsym(plugin, "slurm_spank_init");
	*(void **)&user_init = dlsym(plugin, "slurm_spank_user_init");
	*(void **)&task_init = dlsym(plugin, "slurm_spank_task_init");
	*(void **)&spank_exit = dlsym(plugin, "slurm_spank_exit");
	char *args[] = { "bus=unix:path=/nonexistent/drc-test-bus" };
	if (init(NULL, 1, args) != 0)
		return 2;
	for (i = 0; i < n_registered; i++)
		if (strcmp(registered[i]->name, "drc") == 0)
			registered[i]->cb(registered[i]->val, "acquire", 1);
	fflush(stdout);
	user_init(NULL, 0, NULL);
	fflush(stdout);
	rc = task_init(NULL, 0, NULL);
	fflush(stderr);
	printf("task_init=%d\n", rc);
	spank_exit(NULL, 0, NULL);
	dlclose(plugin);
	return 0;
}
