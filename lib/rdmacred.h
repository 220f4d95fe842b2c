/*
 * rdmacred.h - Dynamic RDMA Credentials (drc) client API.
 *
 * Source-compatible with the Cray DRC API used by Mercury, Mochi, ADIOS2, faodel, PDC and
 * DataSpaces. Link with -ldrc; `pkg-config --cflags --libs cray-drc` gives the flags.
 * See rdmacred(3).
 *
 * Every int-returning function returns DRC_SUCCESS (0) or a negated drc_status code,
 * e.g. -DRC_EPERM. Calls go to the node daemon (drcc) over the D-Bus system bus
 * (DBUS_SYSTEM_BUS_ADDRESS when set). Each call waits at most DRC_DEFAULT_TIMEOUT_MS
 * milliseconds (or DRC_TIMEOUT_MS from the environment) for the daemon, then returns
 * -DRC_ECONNREFUSED. The library is thread-safe and never writes to stdout or stderr.
 * drc never answers a call that can succeed later with -DRC_EINVAL (Cray's DRC did, and
 * clients retry it): rdmacred(3) lists each code and whether retrying helps.
 */
#ifndef RDMACRED_H
#define RDMACRED_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes; the API returns them negated. Numbered as drc.core.errors.Code. */
typedef enum drc_status {
	DRC_SUCCESS = 0,
	DRC_EINVAL = 1,                /* invalid parameter */
	DRC_EPERM = 2,                 /* invalid permissions */
	DRC_ENOSPC = 3,                /* a limit or the resource pool is exhausted */
	DRC_ECONNREFUSED = 4,          /* no DRC daemon answered */
	DRC_ALREADY_GRANTED = 5,       /* access already granted to this target */
	DRC_CRED_NOT_FOUND = 6,        /* no such credential */
	DRC_CRED_CREATE_FAILURE = 7,   /* the credential could not be created */
	DRC_CRED_EXTERNAL_FAILURE = 8, /* external application failure */
	DRC_BAD_TOKEN = 9,             /* bad, expired or revoked token */
	/* drc's own codes: mistakes that retrying cannot fix (Cray's DRC said EINVAL). */
	DRC_EFLAGS = 10,               /* flags not valid for this call */
	DRC_EBADTARGET = 11,           /* no such grant target (job 0, id -1, never granted) */
	DRC_EFAULT = 12,               /* a required pointer argument is NULL */
	DRC_EPROTO = 13                /* the daemon's answer was not understood */
} drc_status_t;

/* Flags; numbered as drc.core.model.Flags. */
#define DRC_FLAGS_FLEX_CREDENTIAL (1 << 0) /* acquire: several jobs per node may access */
#define DRC_FLAGS_PERSISTENT      (1 << 1) /* acquire: outlives the job, until released */
#define DRC_FLAGS_TARGET_UID      (1 << 2) /* grant/revoke: target is a uid */
#define DRC_FLAGS_TARGET_GID      (1 << 3) /* grant/revoke: target is a gid */
#define DRC_FLAGS_TARGET_WLM      (1 << 4) /* grant/revoke: target is a job (WLM id) */

/* How long a call waits for the daemon, in milliseconds: longer than drcc's own budget for
 * the credential server ([link] timeout, at most 7 s), so a server outage comes back as
 * drcc's -DRC_ECONNREFUSED naming the server, not as a timeout. drc.config.CLIENT_TIMEOUT. */
#define DRC_DEFAULT_TIMEOUT_MS 10000

/* What drc_access() returns: opaque, read it with the accessors below. */
typedef struct drc_info *drc_info_handle_t;

int drc_acquire(uint32_t *credential, int flags);
int drc_access(uint32_t credential, int flags, drc_info_handle_t *info);
int drc_access_with_token(char *token, int flags, drc_info_handle_t *info);
int drc_get_credential_token(uint32_t credential, char **token);
int drc_grant(uint32_t credential, uint32_t target, int flags);
int drc_revoke(uint32_t credential, uint32_t target, int flags);
int drc_release(uint32_t credential, int flags);
int drc_release_local(drc_info_handle_t *info);

uint32_t drc_get_first_cookie(drc_info_handle_t info);
uint32_t drc_get_second_cookie(drc_info_handle_t info);
uint32_t drc_get_ptag(drc_info_handle_t info);
uint32_t drc_get_wlm_id(void);

/* A one-line message for a status code, negated or not; never NULL. */
const char *drc_error_message(int rc);

/* Why the calling thread's last failed call failed, in words (the daemon's reason, e.g.
 * "credential 4 is not FLEX and is already used by job 101 on node n1; ..."); "" if none
 * failed yet. Like errno, a successful call leaves it alone. Never NULL; valid until this
 * thread's next libdrc call. */
const char *drc_error_detail(void);

/*
 * HPE Slingshot (DRCS provider "slingshot"). A credential is a VNI: drc_access() works as
 * everywhere and drc_get_first_cookie() answers the VNI (second cookie and ptag are 0).
 * drc_access_slingshot() also makes (or reuses) the caller's CXI service on each NIC of the
 * node, restricted to the caller's uid, the VNI and the site's traffic classes; its handle
 * answers the accessors below (on other handles they answer 0 / NULL / -DRC_EINVAL). Free it
 * with drc_release_local(). See rdmacred(3), section SLINGSHOT.
 */
#define DRC_SLINGSHOT_MAX_DEVICES 16
#define DRC_AUTH_KEY_LEN 24 /* enough for "svc_id:vni" and its NUL */

int drc_access_slingshot(uint32_t credential, int flags, drc_info_handle_t *info);
uint32_t drc_get_vni(drc_info_handle_t info);
uint32_t drc_get_device_count(drc_info_handle_t info);
/* The CXI service id on device i (0 <= i < drc_get_device_count()), else 0. */
uint32_t drc_get_svc_id(drc_info_handle_t info, uint32_t i);
/* The name of device i ("cxi0"), else NULL; valid until drc_release_local(). */
const char *drc_get_device_name(drc_info_handle_t info, uint32_t i);
/* The Mercury / libfabric CXI auth key of device i, "svc_id:vni", into buf (len bytes). */
int drc_format_auth_key(drc_info_handle_t info, uint32_t i, char *buf, unsigned int len);

#ifdef __cplusplus
}
#endif

#endif /* RDMACRED_H */
