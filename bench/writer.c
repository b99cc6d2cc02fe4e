/* Log-throughput writer: prints the numbers 1..N, one per line, to stdout as
 * fast as it can. Before the first line it writes its start time
 * (CLOCK_REALTIME, nanoseconds) to the file named by argv[2], so the bench can
 * time "writer start -> every line on disk" independently of the supervisor. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: writer N STARTFILE\n"); return 2; }
    long n = atol(argv[1]);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    FILE *f = fopen(argv[2], "w");
    if (!f) { perror("startfile"); return 2; }
    fprintf(f, "%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    fclose(f);
    static char buf[1 << 16];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    for (long i = 1; i <= n; i++) printf("%ld\n", i);
    return fflush(stdout) == 0 ? 0 : 1;
}
