/* Host side, not an attacker: the caller of pyctr with a secret in its session keyring.
 * Usage: with_session_key DESC SECRET COMMAND [ARG...]
 * Joins a new anonymous session keyring (so the test never touches the real session's keys),
 * adds a "user" key DESC=SECRET to it, and execs COMMAND, which inherits that keyring.
 */
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEYCTL_JOIN_SESSION_KEYRING 1
#define KEY_SPEC_SESSION_KEYRING -3

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: with_session_key DESC SECRET COMMAND [ARG...]\n");
        return 2;
    }
    if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0) {
        perror("keyctl join");
        return 1;
    }
    if (syscall(SYS_add_key, "user", argv[1], argv[2], strlen(argv[2]), KEY_SPEC_SESSION_KEYRING) < 0) {
        perror("add_key");
        return 1;
    }
    execvp(argv[3], argv + 3);
    perror(argv[3]);
    return 127;
}
