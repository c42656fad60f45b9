/* whoami: print the real and effective user IDs, so a test sees whether a setuid-root copy of
 * this program gave its caller root. */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    printf("uid=%d euid=%d\n", (int)getuid(), (int)geteuid());
    return 0;
}
