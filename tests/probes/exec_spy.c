/* Spies on the process that `exec` puts into this container while it is still the host's
 * Python. Usage: exec_spy SECRET_NAME REPORT [SECONDS]
 *
 * It watches the process until it has dropped to the container's capabilities (before, the
 * kernel refuses anyway: the target has capabilities we lack), stops it there with SIGSTOP,
 * and tries what an attacker wants: read /proc/PID/environ (looking for SECRET_NAME=) and
 * open /proc/PID/exe (the host's interpreter). Writes REPORT once:
 *   caught PID            the process was held in that window
 *   environ: read | environ-secret | EACCES...   exe: opened | EACCES...
 * or "missed" lines for processes that exec'd before the window was caught.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int read_file(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return (int)n;
}

static int is_python(int pid) {
    char path[64], comm[64];
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    return read_file(path, comm, sizeof comm) > 0 && strncmp(comm, "python", 6) == 0;
}

static char state_of(int pid) {
    char path[64], stat[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (read_file(path, stat, sizeof stat) <= 0)
        return 0;
    char *after = strrchr(stat, ')');
    return after ? after[2] : 0;
}

static void cap_prm(int pid, char *out, size_t size) {
    char path[64], status[4096];
    out[0] = 0;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    if (read_file(path, status, sizeof status) <= 0)
        return;
    char *line = strstr(status, "CapPrm:\t");
    if (line)
        snprintf(out, size, "%.16s", line + 8);
}

static void try_secrets(int pid, const char *secret, FILE *report) {
    char path[64], buf[65536];
    snprintf(path, sizeof path, "/proc/%d/environ", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        fprintf(report, "environ: %s\n", errno == EACCES ? "EACCES" : strerror(errno));
    } else {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n < 0) {
            fprintf(report, "environ: %s\n", errno == EACCES ? "EACCES" : strerror(errno));
        } else {
            int found = 0;
            size_t len = strlen(secret);
            for (ssize_t i = 0; i + (ssize_t)len < n; i++)
                if ((i == 0 || buf[i - 1] == 0) && memcmp(buf + i, secret, len) == 0 && buf[i + len] == '=')
                    found = 1;
            fprintf(report, "environ: %s\n", found ? "environ-secret" : "read");
        }
    }
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    fd = open(path, O_RDONLY);
    if (fd < 0) {
        fprintf(report, "exe: %s\n", errno == EACCES ? "EACCES" : strerror(errno));
    } else {
        fprintf(report, "exe: opened\n");
        close(fd);
    }
}

/* Watch pid until it runs with our capabilities, then stop it there; 1 if caught while still
 * the host's Python, 0 if it exec'd first. */
static int hold(int pid, const char *ours, const char *secret, FILE *report, time_t deadline) {
    char theirs[32];
    do {
        cap_prm(pid, theirs, sizeof theirs);
        if (!theirs[0] || time(NULL) > deadline)
            return 0;
    } while (strcmp(theirs, ours) != 0);
    if (kill(pid, SIGSTOP) != 0)
        return 0;
    char state;
    while ((state = state_of(pid)) && state != 'T' && state != 't')
        ;
    int caught = state && is_python(pid);
    if (caught) {
        fprintf(report, "caught %d\n", pid);
        try_secrets(pid, secret, report);
    }
    kill(pid, SIGCONT);
    return caught;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: exec_spy SECRET_NAME REPORT [SECONDS]\n");
        return 2;
    }
    int seconds = argc > 3 ? atoi(argv[3]) : 60;
    char ours[32];
    cap_prm(getpid(), ours, sizeof ours);
    char partial[4096];
    snprintf(partial, sizeof partial, "%s.part", argv[2]);
    FILE *report = fopen(partial, "w");
    if (!report)
        return 1;
    time_t deadline = time(NULL) + seconds;
    int caught = 0;
    while (!caught && time(NULL) < deadline) {
        DIR *proc = opendir("/proc");
        struct dirent *entry;
        while (proc && !caught && (entry = readdir(proc))) {
            int pid = atoi(entry->d_name);
            if (pid > 1 && pid != getpid() && is_python(pid)) {
                caught = hold(pid, ours, argv[1], report, deadline);
                if (!caught)
                    fprintf(report, "missed %d\n", pid);
                fflush(report);
            }
        }
        if (proc)
            closedir(proc);
        struct timespec pause = {0, 50000};
        nanosleep(&pause, NULL);
    }
    if (!caught)
        fprintf(report, "timeout\n");
    fclose(report);
    rename(partial, argv[2]);
    return 0;
}
