/* Inside drc.so: the SPANK callbacks (drc_spank.c), the --drc* options (drc_options.c) and
 * the Slingshot environment (drc_slingshot.c). */
#ifndef DRC_SPANK_H
#define DRC_SPANK_H

#include <stdint.h>

#include <slurm/spank.h>

#include "drc_call.h"

#define DRC_MAX_GRANTS 32

/* What the options ask for, parsed where they are given (srun, sbatch, salloc: a bad value
 * fails there, before the job) and again in slurmstepd. */
struct drc_request {
	int given;    /* --drc was given */
	char text[16]; /* its value: "acquire" or the id */
	uint32_t id;  /* --drc=ID; 0 for --drc=acquire */
	int flags;    /* --drc-flags, as DRC_FLAGS_* */
	int n_grants; /* --drc-grant: (target, DRC_FLAGS_TARGET_*) */
	struct {
		uint32_t target;
		int flags;
	} grants[DRC_MAX_GRANTS];
	int token; /* --drc-token */
};

/* plugstack.conf arguments: bus=ADDRESS, fail_hard, slingshot (see drc_spank.c). */
struct drc_config {
	char *bus;
	int fail_hard;
	int slingshot;
};

DRC_INTERNAL extern struct drc_request drc_request;
DRC_INTERNAL extern struct drc_config drc_config;

/* Read the plugin arguments; every callback passes them again (job_epilog runs in a process
 * where slurm_spank_init did not). -1 on an unknown one. */
DRC_INTERNAL int drc_configure(int ac, char **av);
DRC_INTERNAL extern struct spank_option drc_options[];

/* drc_call() with the plugin's timeout; on failure "DRC_<NAME>: reason" is in drc_reason. */
DRC_INTERNAL extern char drc_reason[640];
DRC_INTERNAL int drc_relay(sd_bus *bus, enum drc_verb verb, struct drc_answer *a, ...);

/* Record user_init's failure (printed by task_init) and log it; always -1. */
DRC_INTERNAL int drc_fail(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Slingshot: make the user's CXI services for credential id and export them for libfabric. */
DRC_INTERNAL int drc_export_slingshot(spank_t sp, sd_bus *bus, uint32_t id);

#endif /* DRC_SPANK_H */
