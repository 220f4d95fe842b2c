/*
 * A DRC client written the way public clients (Mercury's tests, Mochi SSG, ADIOS2 SST) use
 * rdmacred.h: their own static drc_strerror(), `rc == -DRC_...` checks, drc_release_local()
 * followed by free(info). Built with only `cc -Wall -Werror ... $(pkg-config --cflags --libs
 * cray-drc)`; driven by tests/clib.
 *
 * Exit status: 0, or the positive DRC code of the first failed call (100: usage); the failure
 * and drc_error_detail() go to stderr.
 *
 *   serve UID [JOB]   acquire FLEX, grant UID (and job JOB), access it, print
 *                     "<credential> <cookie1>", hold it until a line arrives on stdin
 *   access CRED       access CRED, print "<cookie1> <cookie2> <ptag>", release_local, release
 *   token CRED        print the credential's token
 *   access-token TOK  access with a token, print "<cookie1> <cookie2> <ptag>", release_local
 *   cycle UID         acquire/access/token/access_with_token/grant/revoke/release, one process
 *   threads CRED N    N threads call drc_access(CRED) at once; print how many succeeded
 *   fork CRED         access CRED, fork; the child accesses it over its own connection
 *   wlm               print drc_get_wlm_id()
 *   grant CRED T F    drc_grant(CRED, T, F) once, as a retrying client would call it
 *   revoke CRED T F   drc_revoke(CRED, T, F) once
 *   repl              commands from stdin, one client across daemon restarts (see repl())
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rdmacred.h>

#define USAGE 100

/* As in Mercury's na_test.c: the header must leave this name to us. */
static const char *drc_strerror(int errnum)
{
	switch (errnum) {
	case DRC_SUCCESS: return "DRC_SUCCESS";
	case DRC_EINVAL: return "DRC_EINVAL";
	case DRC_EPERM: return "DRC_EPERM";
	case DRC_ENOSPC: return "DRC_ENOSPC";
	case DRC_ECONNREFUSED: return "DRC_ECONNREFUSED";
	case DRC_ALREADY_GRANTED: return "DRC_ALREADY_GRANTED";
	case DRC_CRED_NOT_FOUND: return "DRC_CRED_NOT_FOUND";
	case DRC_CRED_CREATE_FAILURE: return "DRC_CRED_CREATE_FAILURE";
	case DRC_CRED_EXTERNAL_FAILURE: return "DRC_CRED_EXTERNAL_FAILURE";
	case DRC_BAD_TOKEN: return "DRC_BAD_TOKEN";
	case DRC_EFLAGS: return "DRC_EFLAGS";
	case DRC_EBADTARGET: return "DRC_EBADTARGET";
	case DRC_EFAULT: return "DRC_EFAULT";
	case DRC_EPROTO: return "DRC_EPROTO";
	default: return "UNKNOWN_DRC_ERROR";
	}
}

static int failed(const char *what, int rc)
{
	fprintf(stderr, "%s() failed (%d, %s: %s)\ndetail: %s\n", what, rc, drc_strerror(-rc),
		drc_error_message(rc), drc_error_detail());
	return -rc;
}

static uint32_t number(const char *s)
{
	return (uint32_t)strtoul(s, NULL, 0);
}

static int serve(uint32_t uid, const char *job)
{
	drc_info_handle_t info = NULL;
	uint32_t credential;
	char line[16];
	int rc;

	rc = drc_acquire(&credential, DRC_FLAGS_FLEX_CREDENTIAL);
	if (rc != DRC_SUCCESS)
		return failed("drc_acquire", rc);
	rc = drc_grant(credential, uid, DRC_FLAGS_TARGET_UID);
	if (rc != DRC_SUCCESS && rc != -DRC_ALREADY_GRANTED)
		return failed("drc_grant", rc);
	if (job) {
		rc = drc_grant(credential, number(job), DRC_FLAGS_TARGET_WLM);
		if (rc != DRC_SUCCESS)
			return failed("drc_grant(WLM)", rc);
		rc = drc_grant(credential, number(job), DRC_FLAGS_TARGET_WLM);
		if (rc != -DRC_ALREADY_GRANTED)
			return failed("drc_grant(WLM) twice", rc ? rc : -DRC_EINVAL);
	}
	rc = drc_access(credential, 0, &info);
	if (rc != DRC_SUCCESS)
		return failed("drc_access", rc);
	printf("%" PRIu32 " %" PRIu32 "\n", credential, drc_get_first_cookie(info));
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		line[0] = '\0';
	rc = drc_release_local(&info);
	free(info);
	if (rc != DRC_SUCCESS)
		return failed("drc_release_local", rc);
	rc = drc_release(credential, 0);
	if (rc != DRC_SUCCESS)
		return failed("drc_release", rc);
	return 0;
}

static int access_once(uint32_t credential)
{
	drc_info_handle_t info;
	int rc;

	rc = drc_access(credential, 0, &info);
	if (rc != DRC_SUCCESS)
		return failed("drc_access", rc);
	printf("%" PRIu32 " %" PRIu32 " %" PRIu32 "\n", drc_get_first_cookie(info),
	       drc_get_second_cookie(info), drc_get_ptag(info));
	rc = drc_release_local(&info);
	free(info);
	if (rc != DRC_SUCCESS)
		return failed("drc_release_local", rc);
	rc = drc_release(credential, 0);
	if (rc != DRC_SUCCESS)
		return failed("drc_release", rc);
	return 0;
}

static int print_token(uint32_t credential)
{
	char *token = NULL;
	int rc;

	rc = drc_get_credential_token(credential, &token);
	if (rc != DRC_SUCCESS)
		return failed("drc_get_credential_token", rc);
	printf("%s\n", token);
	free(token);
	return 0;
}

static int access_token(char *token)
{
	drc_info_handle_t info;
	int rc;

	rc = drc_access_with_token(token, 0, &info);
	if (rc != DRC_SUCCESS)
		return failed("drc_access_with_token", rc);
	printf("%" PRIu32 " %" PRIu32 " %" PRIu32 "\n", drc_get_first_cookie(info),
	       drc_get_second_cookie(info), drc_get_ptag(info));
	rc = drc_release_local(&info);
	free(info);
	return rc == DRC_SUCCESS ? 0 : failed("drc_release_local", rc);
}

/* Everything once, in one process: what valgrind watches. */
static int cycle(uint32_t uid)
{
	drc_info_handle_t info = NULL, by_token = NULL;
	uint32_t credential;
	char *token = NULL;
	int rc;

	rc = drc_acquire(&credential, DRC_FLAGS_FLEX_CREDENTIAL);
	if (rc != DRC_SUCCESS)
		return failed("drc_acquire", rc);
	rc = drc_grant(credential, uid, DRC_FLAGS_TARGET_UID);
	if (rc != DRC_SUCCESS)
		return failed("drc_grant", rc);
	rc = drc_access(credential, 0, &info);
	if (rc != DRC_SUCCESS)
		return failed("drc_access", rc);
	rc = drc_get_credential_token(credential, &token);
	if (rc != DRC_SUCCESS)
		return failed("drc_get_credential_token", rc);
	rc = drc_access_with_token(token, 0, &by_token);
	if (rc != DRC_SUCCESS)
		return failed("drc_access_with_token", rc);
	if (drc_get_first_cookie(by_token) != drc_get_first_cookie(info))
		return failed("cookies differ", -DRC_EINVAL);
	rc = drc_access_with_token("not-a-token", 0, &by_token);
	if (rc != -DRC_BAD_TOKEN)
		return failed("drc_access_with_token(forged)", rc ? rc : -DRC_EINVAL);
	rc = drc_revoke(credential, uid, DRC_FLAGS_TARGET_UID);
	if (rc != DRC_SUCCESS)
		return failed("drc_revoke", rc);
	printf("wlm %" PRIu32 "\n", drc_get_wlm_id());
	rc = drc_release_local(&by_token);
	free(by_token);
	if (rc == DRC_SUCCESS)
		rc = drc_release_local(&info);
	free(info);
	free(token);
	if (rc != DRC_SUCCESS)
		return failed("drc_release_local", rc);
	rc = drc_release(credential, 0);
	if (rc != DRC_SUCCESS)
		return failed("drc_release", rc);
	printf("cycle ok %" PRIu32 "\n", credential);
	return 0;
}

/* A child must not reuse the parent's bus connection; both keep working. */
static int forked(uint32_t credential)
{
	int status, rc;
	pid_t pid;

	rc = access_once(credential);
	if (rc != 0)
		return rc;
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return USAGE;
	if (pid == 0)
		exit(access_once(credential));
	rc = access_once(credential);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return USAGE;
	return rc ? rc : WEXITSTATUS(status);
}

struct worker {
	pthread_t thread;
	uint32_t credential;
	int rc;
	uint32_t cookie;
};

static void *access_worker(void *arg)
{
	struct worker *w = arg;
	drc_info_handle_t info;

	w->rc = drc_access(w->credential, 0, &info);
	if (w->rc == DRC_SUCCESS) {
		w->cookie = drc_get_first_cookie(info);
		w->rc = drc_release_local(&info);
		free(info);
	}
	return NULL;
}

static int threads(uint32_t credential, int n)
{
	struct worker workers[64];
	int i, ok = 0, first_rc = 0;

	if (n < 1 || n > 64)
		return USAGE;
	for (i = 0; i < n; i++) {
		workers[i].credential = credential;
		if (pthread_create(&workers[i].thread, NULL, access_worker, &workers[i]) != 0)
			return USAGE;
	}
	for (i = 0; i < n; i++) {
		pthread_join(workers[i].thread, NULL);
		if (workers[i].rc == DRC_SUCCESS && workers[i].cookie == workers[0].cookie)
			ok++;
		else if (!first_rc)
			first_rc = workers[i].rc ? workers[i].rc : -DRC_EINVAL;
	}
	printf("%d\n", ok);
	return ok == n ? 0 : failed("drc_access (threads)", first_rc);
}

static long long usec_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000000LL + (t.tv_nsec - t0->tv_nsec) / 1000;
}

/* Every call once, on CRED, with HELD (if any) for drc_release_local: "<rc>... <max usec>".
 * Meant for a daemon that does not answer. */
static void each_call(uint32_t credential, drc_info_handle_t *held)
{
	drc_info_handle_t info = NULL;
	char *token = NULL;
	uint32_t acquired;
	struct timespec t0;
	long long usec, max_usec = 0;
	int rc[8], i;

	for (i = 0; i < 8; i++) {
		clock_gettime(CLOCK_MONOTONIC, &t0);
		switch (i) {
		case 0: rc[i] = drc_acquire(&acquired, 0); break;
		case 1: rc[i] = drc_access(credential, 0, &info); break;
		case 2: rc[i] = drc_access_with_token("not-a-token", 0, &info); break;
		case 3: rc[i] = drc_get_credential_token(credential, &token); break;
		case 4: rc[i] = drc_grant(credential, 0, DRC_FLAGS_TARGET_UID); break;
		case 5: rc[i] = drc_revoke(credential, 0, DRC_FLAGS_TARGET_UID); break;
		case 6: rc[i] = drc_release(credential, 0); break;
		case 7: rc[i] = *held ? drc_release_local(held) : -DRC_EINVAL; break;
		}
		usec = usec_since(&t0);
		if (usec > max_usec)
			max_usec = usec;
	}
	for (i = 0; i < 8; i++)
		printf("%d ", rc[i]);
	printf("%lld\n", max_usec);
	free(info);
	free(token);
}

/* One long-lived client: survives the daemon going away and coming back. Per stdin line:
 * "acquire" | "access CRED" (then release_local) print "<rc> <usec>"; "hold CRED" keeps the
 * handle; "all CRED" runs each_call(). */
static int repl(void)
{
	drc_info_handle_t info, held = NULL;
	char line[64];
	uint32_t credential;
	struct timespec t0;
	int rc;

	while (fgets(line, sizeof(line), stdin)) {
		clock_gettime(CLOCK_MONOTONIC, &t0);
		if (strncmp(line, "acquire", 7) == 0) {
			rc = drc_acquire(&credential, 0);
		} else if (strncmp(line, "access ", 7) == 0) {
			rc = drc_access(number(line + 7), 0, &info);
			if (rc == DRC_SUCCESS) {
				rc = drc_release_local(&info);
				free(info);
			}
		} else if (strncmp(line, "hold ", 5) == 0) {
			rc = drc_access(number(line + 5), 0, &held);
		} else if (strncmp(line, "all ", 4) == 0) {
			each_call(number(line + 4), &held);
			fflush(stdout);
			continue;
		} else {
			return USAGE;
		}
		printf("%d %lld\n", rc, usec_since(&t0));
		fflush(stdout);
	}
	free(held);
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";

	if (strcmp(cmd, "serve") == 0 && argc >= 3)
		return serve(number(argv[2]), argc > 3 ? argv[3] : NULL);
	if (strcmp(cmd, "access") == 0 && argc == 3)
		return access_once(number(argv[2]));
	if (strcmp(cmd, "token") == 0 && argc == 3)
		return print_token(number(argv[2]));
	if (strcmp(cmd, "access-token") == 0 && argc == 3)
		return access_token(argv[2]);
	if (strcmp(cmd, "cycle") == 0 && argc == 3)
		return cycle(number(argv[2]));
	if (strcmp(cmd, "threads") == 0 && argc == 4)
		return threads(number(argv[2]), atoi(argv[3]));
	if (strcmp(cmd, "fork") == 0 && argc == 3)
		return forked(number(argv[2]));
	if (strcmp(cmd, "wlm") == 0) {
		printf("%" PRIu32 "\n", drc_get_wlm_id());
		return 0;
	}
	if (strcmp(cmd, "repl") == 0)
		return repl();
	if (strcmp(cmd, "grant") == 0 && argc == 5) {
		int rc = drc_grant(number(argv[2]), number(argv[3]), (int)number(argv[4]));

		return rc ? failed("drc_grant", rc) : 0;
	}
	if (strcmp(cmd, "revoke") == 0 && argc == 5) {
		int rc = drc_revoke(number(argv[2]), number(argv[3]), (int)number(argv[4]));

		return rc ? failed("drc_revoke", rc) : 0;
	}
	fprintf(stderr, "usage: %s serve|access|token|access-token|cycle|threads|fork|wlm|repl"
		"|grant|revoke ...\n", argv[0]);
	return USAGE;
}
