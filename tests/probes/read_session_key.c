/* Can this process find a key of the caller's session keyring? Usage: read_session_key DESC
 * Looks up a "user" key by description through its keyrings (request_key(2) searches the
 * thread, process and session keyrings) and reads it. Prints one of:
 *   read: SECRET
 *   request_key: ENOKEY | EPERM (a seccomp filter, not the keyring) | ...
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEYCTL_READ 11

static const char *name(int e) {
    switch (e) {
    case ENOKEY: return "ENOKEY";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOSYS: return "ENOSYS";
    default: return strerror(e);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: read_session_key DESC\n");
        return 2;
    }
    long key = syscall(SYS_request_key, "user", argv[1], NULL, 0);
    if (key < 0) {
        printf("request_key: %s\n", name(errno));
        return 0;
    }
    char secret[256] = {0};
    long n = syscall(SYS_keyctl, KEYCTL_READ, key, secret, sizeof secret - 1);
    if (n < 0)
        printf("keyctl read: %s\n", name(errno));
    else
        printf("read: %.*s\n", (int)n, secret);
    return 0;
}
