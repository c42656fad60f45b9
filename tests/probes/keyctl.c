/* keyctl: reach the kernel keyring, which Docker's seccomp profile closes to containers.
 * Asks only for the ID of the session keyring (creates nothing, changes nothing).
 * Prints "keyctl: session keyring N" when the call works, "keyctl: blocked: REASON" when not. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEYCTL_GET_KEYRING_ID 0
#define KEY_SPEC_SESSION_KEYRING -3

int main(void)
{
    long id = syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0);
    if (id < 0) {
        printf("keyctl: blocked: %s\n", strerror(errno));
        return 1;
    }
    printf("keyctl: session keyring %ld\n", id);
    return 0;
}
