/* Does this process still have the admin's terminal? Prints its session and controlling tty
 * (from /proc/self/stat), then tries TIOCSTI (typing into a terminal's input) on fds 0, 1, 2
 * and on /dev/tty. The byte typed is a harmless '#'. One line each:
 *   pid=P sid=S tty_nr=T
 *   fd0: injected | fd0: ENOTTY ...
 *   /dev/tty: injected | /dev/tty: open ENXIO ...
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static const char *name(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case ENOTTY: return "ENOTTY";
    case ENXIO: return "ENXIO";
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    default: return strerror(e);
    }
}

static void try_inject(const char *label, int fd) {
    char c = '#';
    if (ioctl(fd, TIOCSTI, &c) == 0)
        printf("%s: injected\n", label);
    else
        printf("%s: %s\n", label, name(errno));
}

int main(void) {
    char stat[1024] = {0};
    int fd = open("/proc/self/stat", O_RDONLY);
    if (fd >= 0) {
        read(fd, stat, sizeof stat - 1);
        close(fd);
    }
    /* pid (comm) state ppid pgrp session tty_nr ... */
    int pid = 0, ppid = 0, pgrp = 0, sid = 0, tty_nr = 0;
    char *after = strrchr(stat, ')');
    if (after)
        sscanf(after + 2, "%*c %d %d %d %d", &ppid, &pgrp, &sid, &tty_nr);
    sscanf(stat, "%d", &pid);
    printf("pid=%d sid=%d tty_nr=%d\n", pid, sid, tty_nr);

    try_inject("fd0", 0);
    try_inject("fd1", 1);
    try_inject("fd2", 2);
    int tty = open("/dev/tty", O_RDWR);
    if (tty < 0)
        printf("/dev/tty: open %s\n", name(errno));
    else
        try_inject("/dev/tty", tty);
    fflush(stdout);
    return 0;
}
