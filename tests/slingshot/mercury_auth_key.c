/*
 * A Mercury-style client on Slingshot: access a drc credential and print the auth key it
 * would hand to Mercury (NA_Initialize_opt's auth_key, "svc_id:vni") or libfabric's CXI
 * provider (struct cxi_auth_key {svc_id, vni}), one line per NIC.
 *
 *   mercury_auth_key CREDENTIAL
 *
 * Prints "vni V first_cookie C" then "DEVICE auth_key SVC:VNI" lines; exit 1 on a DRC error.
 */
#include <rdmacred.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	drc_info_handle_t info = NULL;
	char key[DRC_AUTH_KEY_LEN], tiny[3];
	uint32_t cred, i;
	int rc;

	if (argc != 2)
		return 2;
	cred = (uint32_t)strtoul(argv[1], NULL, 10);
	rc = drc_access_slingshot(cred, 0, &info);
	if (rc != DRC_SUCCESS) {
		printf("error %s\n", drc_error_message(rc));
		return 1;
	}
	printf("vni %u first_cookie %u\n", drc_get_vni(info), drc_get_first_cookie(info));
	for (i = 0; i < drc_get_device_count(info); i++) {
		rc = drc_format_auth_key(info, i, key, sizeof(key));
		if (rc != DRC_SUCCESS)
			return 1;
		printf("%s auth_key %s\n", drc_get_device_name(info, i), key);
	}
	/* Out of range and too small are errors, never a write past the buffer. */
	if (drc_format_auth_key(info, drc_get_device_count(info), key, sizeof(key)) != -DRC_EINVAL ||
	    drc_format_auth_key(info, 0, tiny, sizeof(tiny)) != -DRC_ENOSPC ||
	    drc_get_device_name(info, 99) != NULL || drc_get_svc_id(info, 99) != 0)
		return 3;
	drc_release_local(&info);
	return 0;
}
