/* Acquire a credential, access it, print "<credential> <cookie1> <cookie2>": the two cookies
 * of an ALPS (pdomain-backed) credential, read through the public accessors only.
 * Built with `cc $(pkg-config --cflags --libs cray-drc)`; exit status = the failing DRC code. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <rdmacred.h>

int main(void)
{
    uint32_t cred;
    drc_info_handle_t info = NULL;
    int rc = drc_acquire(&cred, 0);
    if (rc != DRC_SUCCESS) {
        fprintf(stderr, "drc_acquire: %s\n", drc_error_message(rc));
        return -rc;
    }
    rc = drc_access(cred, 0, &info);
    if (rc != DRC_SUCCESS) {
        fprintf(stderr, "drc_access: %s\n", drc_error_message(rc));
        return -rc;
    }
    printf("%" PRIu32 " %" PRIu32 " %" PRIu32 "\n", cred, drc_get_first_cookie(info),
           drc_get_second_cookie(info));
    drc_release_local(&info);
    free(info);
    return 0;
}
