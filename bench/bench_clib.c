/*
 * libdrc benchmark driver (run by bench/bench_clib.py).
 *
 *   bench_clib latency N      acquire a FLEX credential, then N times alternately: one
 *                             drc_access on the cached association, one raw sd-bus
 *                             org.freedesktop.DBus.Peer.Ping to org.drc.Node on the same bus;
 *                             prints "access <usec>" and "ping <usec>" per sample
 *   bench_clib misses ID...   drc_access on each credential ID (the first a warm-up), each
 *                             the first of its association (a cache miss, answered by DRCS),
 *                             alternately with one raw sd-bus Peer.Ping to org.drc.Node;
 *                             prints "miss <usec>" and "ping <usec>" per sample
 *   bench_clib loop SECONDS   acquire, then drc_access for SECONDS; prints the call count
 *   bench_clib threads T SECONDS [raw]
 *                             T threads call drc_access for SECONDS on one credential,
 *                             through libdrc (its pool of connections), or ("raw") each
 *                             over its own sd-bus connection; prints the call count
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rdmacred.h>
#include <systemd/sd-bus.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int access_once(uint32_t credential)
{
	drc_info_handle_t info;
	int rc = drc_access(credential, 0, &info);

	if (rc == DRC_SUCCESS)
		free(info); /* keep the association: no release_local in the measured loop */
	return rc;
}

static int ping(sd_bus *bus)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	int r = sd_bus_call_method(bus, "org.drc.Node", "/org/drc/Node",
				   "org.freedesktop.DBus.Peer", "Ping", &error, NULL, "");

	sd_bus_error_free(&error);
	return r;
}

/* Alternate n accesses with n raw pings to DRCC, printing each latency: the same credential
 * every time ("access": DRCC's cache answers), or each of ids once ("miss": DRCS answers). The
 * first access of credential warms the path up, untimed. */
static int alternate(const char *label, uint32_t credential, char **ids, long n)
{
	sd_bus *bus = NULL;
	double t0;
	long i;

	if (sd_bus_open_system(&bus) < 0 || ping(bus) < 0 || access_once(credential))
		return 1;
	for (i = 0; i < n; i++) {
		if (ids)
			credential = strtoul(ids[i], NULL, 10);
		t0 = now();
		if (access_once(credential))
			return 1;
		printf("%s %.3f\n", label, (now() - t0) * 1e6);
		t0 = now();
		if (ping(bus) < 0)
			return 1;
		printf("ping %.3f\n", (now() - t0) * 1e6);
	}
	sd_bus_flush_close_unref(bus);
	return 0;
}

static long loop(uint32_t credential, double seconds)
{
	double end = now() + seconds;
	long calls = 0;

	while (now() < end) {
		if (access_once(credential))
			return -1;
		calls++;
	}
	return calls;
}

struct worker {
	pthread_t thread;
	uint32_t credential;
	double seconds;
	int raw;
	long calls;
};

static long raw_loop(uint32_t credential, double seconds)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	double end = now() + seconds;
	sd_bus *bus = NULL;
	long calls = 0;
	int r = 0;

	if (sd_bus_open_system(&bus) < 0)
		return -1;
	while (r >= 0 && now() < end) {
		r = sd_bus_call_method(bus, "org.drc.Node", "/org/drc/Node", "org.drc.Node",
				       "Access", &error, NULL, "uu", credential, 0);
		calls++;
	}
	sd_bus_error_free(&error);
	sd_bus_flush_close_unref(bus);
	return r < 0 ? -1 : calls;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	w->calls = w->raw ? raw_loop(w->credential, w->seconds) : loop(w->credential, w->seconds);
	return NULL;
}

static int threads(uint32_t credential, int n, double seconds, int raw)
{
	struct worker w[64];
	long total = 0;
	int i;

	if (n < 1 || n > 64 || access_once(credential))
		return 1;
	for (i = 0; i < n; i++) {
		w[i] = (struct worker){ .credential = credential, .seconds = seconds, .raw = raw };
		pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
	}
	for (i = 0; i < n; i++) {
		pthread_join(w[i].thread, NULL);
		if (w[i].calls < 0)
			return 1;
		total += w[i].calls;
	}
	printf("%ld\n", total);
	return 0;
}

int main(int argc, char **argv)
{
	uint32_t credential;
	long calls;
	int rc;

	if (argc >= 3 && strcmp(argv[1], "misses") == 0)
		/* credentials acquired by the caller; the first warms up */
		return alternate("miss", strtoul(argv[2], NULL, 10), argv + 3, argc - 3);
	rc = drc_acquire(&credential, DRC_FLAGS_FLEX_CREDENTIAL);
	if (rc != DRC_SUCCESS) {
		fprintf(stderr, "drc_acquire: %s\n", drc_error_message(rc));
		return 1;
	}
	if (argc == 3 && strcmp(argv[1], "latency") == 0)
		return alternate("access", credential, NULL, atol(argv[2]));
	if (argc == 3 && strcmp(argv[1], "loop") == 0) {
		calls = loop(credential, atof(argv[2]));
		printf("%ld\n", calls);
		return calls < 0;
	}
	if (argc >= 4 && strcmp(argv[1], "threads") == 0)
		return threads(credential, atoi(argv[2]), atof(argv[3]), argc > 4);
	fprintf(stderr, "usage: %s latency N | misses ID... | loop SECONDS | threads T SECONDS [raw]\n",
		argv[0]);
	return 2;
}
