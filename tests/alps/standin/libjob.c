/* Stand-in for Cray's libjob job_getjid() (NOT Cray's library; see README.md).
 *
 * The job container of a process is the one recorded for it, or for its nearest ancestor,
 * in $ALPS_STANDIN_DIR/containers ("PID JID" lines): containers are inherited, as with the
 * kernel job module. Returns 0 for "in no container". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static pid_t parent_of(pid_t pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *end = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    int ppid = 0;
    if (!end || sscanf(end + 1, " %*c %d", &ppid) != 1)
        return 0;
    return (pid_t)ppid;
}

static uint64_t recorded(const char *file, pid_t pid)
{
    FILE *f = fopen(file, "r");
    if (!f)
        return 0;
    int p;
    unsigned long long jid, found = 0;
    while (fscanf(f, "%d %llx", &p, &jid) == 2)
        if (p == (int)pid)
            found = jid; /* the last record wins */
    fclose(f);
    return (uint64_t)found;
}

uint64_t job_getjid(pid_t pid)
{
    const char *dir = getenv("ALPS_STANDIN_DIR");
    char file[4096];
    if (!dir)
        return 0;
    snprintf(file, sizeof file, "%s/containers", dir);
    for (int depth = 0; pid > 1 && depth < 128; depth++) {
        uint64_t jid = recorded(file, pid);
        if (jid)
            return jid;
        pid = parent_of(pid);
    }
    return 0;
}
