/*
 * libdrc: the rdmacred.h API over D-Bus (sd-bus) to the node daemon drcc (org.drc.Node).
 *
 * A small pool of connections per process (POOL_SIZE), each opened on first use and again
 * after it broke (bus restarted) or the process forked. sd-bus connections are not
 * thread-safe, so a call borrows one connection for itself: up to POOL_SIZE threads call in
 * parallel (one shared connection behind a mutex served 8 threads at a fifth of the rate of
 * 8 connections). A thread waits for a free connection only until its own deadline, so every
 * call returns within the timeout however many threads queue behind a daemon that hangs.
 * Nothing here prints: every failure is a negated DRC code, and its reason is kept per thread
 * for drc_error_detail(). The call itself (message, error mapping, answer) is drc_call.c,
 * shared with the SPANK plugin.
 */
#define _GNU_SOURCE
#include "rdmacred.h"
#include "drc_call.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DRC_API __attribute__((visibility("default")))

#define MAX_TIMEOUT_MS 3600000UL
#define POOL_SIZE 8 /* connections per process; the system bus allows 256 per user */
#define DETAIL_SIZE 512

struct drc_info {
	uint32_t credential;
	uint32_t cookie1;
	uint32_t cookie2;
	uint32_t ptag;
	const struct drc_slingshot *slingshot; /* set by drc_access_slingshot() only */
};

/* One pooled connection. busy: a thread is calling on it (then only that thread touches
 * bus). inherited: the parent's connection across fork(), see drop_connection(). */
struct slot {
	sd_bus *bus;
	pid_t pid;
	int busy;
	sd_bus *volatile inherited;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* guards the busy flags */
static pthread_cond_t freed;                             /* a slot went back to the pool */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct slot pool[POOL_SIZE];

/* The reason for this thread's last failure (drc_error_detail). */
static __thread char detail[DETAIL_SIZE];

/* -- time ---------------------------------------------------------------------------------- */

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* DRC_TIMEOUT_MS (1 ms .. 1 h) or the default. Only a duration: identity never comes from
 * the environment. */
static uint64_t timeout_usec(void)
{
	const char *value = secure_getenv("DRC_TIMEOUT_MS");
	unsigned long ms;
	char *end;

	if (value && *value) {
		errno = 0;
		ms = strtoul(value, &end, 10);
		if (errno == 0 && *end == '\0' && ms > 0 && ms <= MAX_TIMEOUT_MS)
			return (uint64_t)ms * 1000;
	}
	return (uint64_t)DRC_DEFAULT_TIMEOUT_MS * 1000;
}

/* Time left until deadline, never 0 (sd-bus reads 0 as "its own default"). */
static uint64_t remaining(uint64_t deadline)
{
	uint64_t now = now_usec();

	return now < deadline ? deadline - now : 1;
}

static struct timespec timespec_of(uint64_t usec)
{
	struct timespec ts = {
		.tv_sec = (time_t)(usec / 1000000),
		.tv_nsec = (long)(usec % 1000000) * 1000,
	};

	return ts;
}

/* -- the detail ---------------------------------------------------------------------------- */

/* Record why this call failed and return rc (a negated code), so callers can
 * `return fail(rc, ...)`. */
__attribute__((format(printf, 2, 3))) static int fail(int rc, const char *format, ...)
{
	va_list args;

	va_start(args, format);
	vsnprintf(detail, sizeof(detail), format, args);
	va_end(args);
	return rc;
}

/* -- the pool ----------------------------------------------------------------------------- */

/* Waits on `freed` end at a CLOCK_MONOTONIC deadline, like every other wait here. */
static void init_freed(void)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&freed, &attr);
	pthread_condattr_destroy(&attr);
}

/* fork() while another thread picks a slot would copy a locked mutex. */
static void fork_prepare(void)
{
	pthread_mutex_lock(&lock);
}

static void fork_parent(void)
{
	pthread_mutex_unlock(&lock);
}

/* The child has only the forking thread: no slot is in use there, and the condition
 * variable may hold the parent's waiters, so it starts afresh. */
static void fork_child(void)
{
	int i;

	for (i = 0; i < POOL_SIZE; i++)
		pool[i].busy = 0;
	init_freed();
	pthread_mutex_unlock(&lock);
}

static void init_once(void)
{
	init_freed();
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* Borrow a slot, preferring one whose connection is open; NULL at the deadline. */
static struct slot *borrow(uint64_t deadline)
{
	struct timespec until = timespec_of(deadline);
	struct slot *found = NULL;
	int i, r = 0;

	pthread_mutex_lock(&lock);
	while (!found && r == 0) {
		for (i = 0; i < POOL_SIZE; i++) {
			if (pool[i].busy)
				continue;
			if (!found || (!found->bus && pool[i].bus))
				found = &pool[i];
			if (found->bus)
				break;
		}
		if (!found)
			r = pthread_cond_timedwait(&freed, &lock, &until);
	}
	if (found)
		found->busy = 1;
	pthread_mutex_unlock(&lock);
	return found;
}

static void give_back(struct slot *slot)
{
	pthread_mutex_lock(&lock);
	slot->busy = 0;
	pthread_cond_signal(&freed);
	pthread_mutex_unlock(&lock);
}

/* -- a connection (its slot borrowed) ------------------------------------------------------ */

/* A connection inherited across fork() is the parent's, and libsystemd >= 255 will not free
 * it in the child (sd_bus_unref() does nothing there): keep it referenced, not leaked. */
static void drop_connection(struct slot *slot)
{
	if (slot->bus && slot->pid != getpid()) {
		slot->inherited = slot->bus;
		slot->bus = NULL;
		return;
	}
	slot->bus = sd_bus_close_unref(slot->bus);
}

/* Drive the new connection's authentication and Hello until ready or the deadline. */
static int wait_ready(sd_bus *bus, uint64_t deadline)
{
	int r;

	for (;;) {
		r = sd_bus_is_ready(bus);
		if (r != 0)
			return r < 0 ? r : 0;
		if (sd_bus_is_open(bus) <= 0)
			return -ENOTCONN;
		r = sd_bus_process(bus, NULL);
		if (r < 0)
			return r;
		if (r > 0)
			continue;
		if (now_usec() >= deadline)
			return -ETIMEDOUT;
		r = sd_bus_wait(bus, remaining(deadline));
		if (r < 0 && r != -EINTR)
			return r;
	}
}

/* The slot's open connection: reopened when missing, closed by the peer, or inherited from
 * the parent across fork(). */
static int connection(struct slot *slot, uint64_t deadline, sd_bus **bus)
{
	int r;

	if (slot->bus && (slot->pid != getpid() || sd_bus_is_open(slot->bus) <= 0))
		drop_connection(slot);
	if (!slot->bus) {
		r = sd_bus_open_system_with_description(&slot->bus, "libdrc");
		if (r < 0) {
			slot->bus = NULL;
			return r;
		}
		slot->pid = getpid();
	}
	r = wait_ready(slot->bus, deadline);
	if (r < 0) {
		drop_connection(slot);
		return r;
	}
	*bus = slot->bus;
	return 0;
}

/* -- calls --------------------------------------------------------------------------------- */

/* One call on a borrowed slot; its connection is dropped when the call found it closed. */
static int call_on(struct slot *slot, uint64_t deadline, enum drc_verb verb, struct drc_answer *a,
		   va_list args)
{
	sd_bus *bus;
	va_list copy;
	int r, rc;

	r = connection(slot, deadline, &bus);
	if (r < 0)
		return fail(-DRC_ECONNREFUSED, "no connection to the D-Bus system bus: %s",
			    strerror(-r));
	va_copy(copy, args);
	rc = drc_vcall(bus, remaining(deadline), verb, a, detail, sizeof(detail), copy);
	va_end(copy);
	if (sd_bus_is_open(bus) <= 0)
		drop_connection(slot);
	return rc;
}

/* Call drcc's verb(in args...) and fill a with its out args; 0 or a negated DRC code. */
static int call_node(enum drc_verb verb, struct drc_answer *a, ...)
{
	uint64_t deadline = now_usec() + timeout_usec();
	struct slot *slot;
	va_list args;
	int rc;

	pthread_once(&once, init_once);
	slot = borrow(deadline);
	if (!slot) /* other threads held every connection up to our deadline */
		return fail(-DRC_ECONNREFUSED, "drcc did not answer %s in time: all %d connections"
			    " stayed busy", drc_verbs[verb].member, POOL_SIZE);
	va_start(args, a);
	rc = call_on(slot, deadline, verb, a, args);
	va_end(args);
	give_back(slot);
	return rc;
}

/* -- the API ------------------------------------------------------------------------------- */

static int new_info(const struct drc_answer *a, drc_info_handle_t *info)
{
	struct drc_info *handle = malloc(sizeof(*handle));

	if (!handle)
		return -DRC_ENOSPC;
	handle->credential = a->u[0];
	handle->cookie1 = a->u[1];
	handle->cookie2 = a->u[2];
	handle->ptag = a->u[3];
	handle->slingshot = NULL;
	*info = handle;
	return DRC_SUCCESS;
}

DRC_API int drc_acquire(uint32_t *credential, int flags)
{
	struct drc_answer a = { 0 };
	int rc;

	if (!credential)
		return fail(-DRC_EFAULT, "drc_acquire: credential is NULL");
	rc = call_node(DRC_VERB_ACQUIRE, &a, (uint32_t)flags);
	if (rc == DRC_SUCCESS)
		*credential = a.u[0];
	return rc;
}

DRC_API int drc_access(uint32_t credential, int flags, drc_info_handle_t *info)
{
	struct drc_answer a = { 0 };
	int rc;

	if (!info)
		return fail(-DRC_EFAULT, "drc_access: info is NULL");
	rc = call_node(DRC_VERB_ACCESS, &a, credential, (uint32_t)flags);
	return rc == DRC_SUCCESS ? new_info(&a, info) : rc;
}

DRC_API int drc_access_with_token(char *token, int flags, drc_info_handle_t *info)
{
	struct drc_answer a = { 0 };
	int rc;

	if (!token || !info)
		return fail(-DRC_EFAULT, "drc_access_with_token: %s is NULL", token ? "info" : "token");
	rc = call_node(DRC_VERB_ACCESS_WITH_TOKEN, &a, token, (uint32_t)flags);
	return rc == DRC_SUCCESS ? new_info(&a, info) : rc;
}

DRC_API int drc_get_credential_token(uint32_t credential, char **token)
{
	struct drc_answer a = { 0 };
	int rc;

	if (!token)
		return fail(-DRC_EFAULT, "drc_get_credential_token: token is NULL");
	rc = call_node(DRC_VERB_GET_CREDENTIAL_TOKEN, &a, credential);
	if (rc == DRC_SUCCESS)
		*token = a.s;
	return rc;
}

DRC_API int drc_grant(uint32_t credential, uint32_t target, int flags)
{
	struct drc_answer a = { 0 };

	return call_node(DRC_VERB_GRANT, &a, credential, target, (uint32_t)flags);
}

DRC_API int drc_revoke(uint32_t credential, uint32_t target, int flags)
{
	struct drc_answer a = { 0 };

	return call_node(DRC_VERB_REVOKE, &a, credential, target, (uint32_t)flags);
}

DRC_API int drc_release(uint32_t credential, int flags)
{
	struct drc_answer a = { 0 };

	return call_node(DRC_VERB_RELEASE, &a, credential, (uint32_t)flags);
}

/* Frees the handle and sets *info = NULL whatever drcc answered: the caller's free(*info)
 * afterwards is then harmless, and nothing leaks when the daemon is gone. */
DRC_API int drc_release_local(drc_info_handle_t *info)
{
	struct drc_answer a = { 0 };
	int rc;

	if (!info || !*info)
		return fail(-DRC_EFAULT, "drc_release_local: %s is NULL", info ? "*info" : "info");
	rc = call_node(DRC_VERB_RELEASE_LOCAL, &a, (*info)->credential);
	free(*info);
	*info = NULL;
	return rc;
}

DRC_API uint32_t drc_get_first_cookie(drc_info_handle_t info)
{
	return info ? info->cookie1 : 0;
}

DRC_API uint32_t drc_get_second_cookie(drc_info_handle_t info)
{
	return info ? info->cookie2 : 0;
}

DRC_API uint32_t drc_get_ptag(drc_info_handle_t info)
{
	return info ? info->ptag : 0;
}

DRC_API uint32_t drc_get_wlm_id(void)
{
	struct drc_answer a = { 0 };

	return call_node(DRC_VERB_GET_WLM_ID, &a) == DRC_SUCCESS ? a.u[0] : 0;
}

DRC_API const char *drc_error_message(int rc)
{
	return drc_status_message(rc);
}

/* -- HPE Slingshot ------------------------------------------------------------------------- */

/* One allocation holds both, so drc_release_local()'s free() frees both. */
struct drc_slingshot_handle {
	struct drc_info info;
	struct drc_slingshot s;
};

DRC_API int drc_access_slingshot(uint32_t credential, int flags, drc_info_handle_t *info)
{
	struct drc_slingshot_handle *h;
	struct drc_answer a = { 0 };
	int rc;

	if (!info)
		return -DRC_EFAULT;
	rc = call_node(DRC_VERB_ACCESS_SLINGSHOT, &a, credential, (uint32_t)flags);
	if (rc != DRC_SUCCESS)
		return rc;
	h = calloc(1, sizeof(*h));
	if (!h) {
		free(a.s);
		return -DRC_ENOSPC;
	}
	rc = drc_parse_services(a.s, &h->s);
	free(a.s);
	if (rc != DRC_SUCCESS) {
		free(h);
		return rc;
	}
	h->info.credential = a.u[0];
	h->info.cookie1 = a.u[1]; /* the VNI: drc_get_first_cookie() on Slingshot */
	h->info.slingshot = &h->s;
	*info = &h->info;
	return DRC_SUCCESS;
}

DRC_API uint32_t drc_get_vni(drc_info_handle_t info)
{
	return info && info->slingshot ? info->cookie1 : 0;
}

DRC_API uint32_t drc_get_device_count(drc_info_handle_t info)
{
	return info && info->slingshot ? info->slingshot->count : 0;
}

DRC_API uint32_t drc_get_svc_id(drc_info_handle_t info, uint32_t i)
{
	return i < drc_get_device_count(info) ? info->slingshot->svc_ids[i] : 0;
}

DRC_API const char *drc_get_device_name(drc_info_handle_t info, uint32_t i)
{
	return i < drc_get_device_count(info) ? info->slingshot->names[i] : NULL;
}

DRC_API int drc_format_auth_key(drc_info_handle_t info, uint32_t i, char *buf, unsigned int len)
{
	int n;

	if (!buf)
		return -DRC_EFAULT;
	if (i >= drc_get_device_count(info))
		return -DRC_EINVAL; /* no such device: nothing allocated, a retry harms nothing */
	n = snprintf(buf, len, "%u:%u", (unsigned int)info->slingshot->svc_ids[i],
		     (unsigned int)info->cookie1);
	return n < 0 || (unsigned int)n >= len ? -DRC_ENOSPC : DRC_SUCCESS;
}

DRC_API const char *drc_error_detail(void)
{
	return detail;
}

/* On unload (dlclose or exit) close the connections no call is using. */
__attribute__((destructor)) static void drc_unload(void)
{
	int i;

	if (pthread_mutex_trylock(&lock) != 0)
		return;
	for (i = 0; i < POOL_SIZE; i++)
		if (!pool[i].busy && pool[i].bus && pool[i].pid == getpid())
			drop_connection(&pool[i]);
	pthread_mutex_unlock(&lock);
}
