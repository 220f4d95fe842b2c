/*
 * drc.so with the plugin argument `slingshot` (DRCS provider "slingshot"): the user's CXI
 * services for the credential's VNI (AccessSlingshot), exported as SLINGSHOT_VNIS,
 * SLINGSHOT_SVC_IDS and SLINGSHOT_DEVICES so an unmodified libfabric CXI application lands on
 * the shared VNI. The job's own values (switch/hpe_slingshot's) are kept as
 * DRC_JOB_SLINGSHOT_*.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drc_spank.h"

/* Keep the job's own SLINGSHOT_<name> as DRC_JOB_SLINGSHOT_<name>, then set it to value. */
static int replace_env(spank_t sp, const char *name, const char *value)
{
	char var[64], saved[80], old[1024];

	snprintf(var, sizeof(var), "SLINGSHOT_%s", name);
	snprintf(saved, sizeof(saved), "DRC_JOB_SLINGSHOT_%s", name);
	if (spank_getenv(sp, var, old, sizeof(old)) == ESPANK_SUCCESS &&
	    spank_setenv(sp, saved, old, 0) != ESPANK_SUCCESS)
		return -1;
	return spank_setenv(sp, var, value, 1) == ESPANK_SUCCESS ? 0 : -1;
}

int drc_export_slingshot(spank_t sp, sd_bus *bus, uint32_t id)
{
	char vni[16], devices[DRC_SLINGSHOT_MAX_DEVICES * 17] = "";
	char svc_ids[DRC_SLINGSHOT_MAX_DEVICES * 11] = "";
	struct drc_answer a = { 0 };
	struct drc_slingshot s;
	size_t d, v;
	uint32_t i;
	int rc;

	if (drc_relay(bus, DRC_VERB_ACCESS_SLINGSHOT, &a, id, 0) < 0)
		return drc_fail("drc: CXI services for credential %" PRIu32 ": %s", id, drc_reason);
	rc = drc_parse_services(a.s, &s);
	if (rc < 0)
		drc_fail("drc: drcc answered CXI services '%s' that are not understood", a.s);
	free(a.s);
	for (i = 0; rc == 0 && i < s.count; i++) {
		d = strlen(devices);
		v = strlen(svc_ids);
		snprintf(devices + d, sizeof(devices) - d, "%s%s", i ? "," : "", s.names[i]);
		snprintf(svc_ids + v, sizeof(svc_ids) - v, "%s%" PRIu32, i ? "," : "",
			 s.svc_ids[i]);
	}
	snprintf(vni, sizeof(vni), "%" PRIu32, a.u[1]);
	if (rc == 0 &&
	    (replace_env(sp, "VNIS", vni) < 0 || replace_env(sp, "SVC_IDS", svc_ids) < 0 ||
	     replace_env(sp, "DEVICES", devices) < 0))
		return drc_fail("drc: cannot set SLINGSHOT_* in the job environment");
	return rc;
}
