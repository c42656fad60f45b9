/* Prints the capability lines of its own /proc/self/status: run with file capabilities, it shows
 * what exec gave it. */
#include <stdio.h>
#include <string.h>

int main(void) {
    char line[256];
    FILE *status = fopen("/proc/self/status", "r");
    if (!status) { perror("status"); return 1; }
    while (fgets(line, sizeof line, status))
        if (strncmp(line, "Cap", 3) == 0 || strncmp(line, "Uid", 3) == 0)
            fputs(line, stdout);
    return 0;
}
