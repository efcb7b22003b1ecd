/*
 * stamp FILE [STATUS]: append the wall-clock time in ns (CLOCK_REALTIME) and
 * a newline to FILE, then exit with STATUS (default 1) at once. The child of
 * scripts/bench's restart-gap measurement: the gap between two consecutive
 * stamps is one respawn, plus this program's own few hundred µs.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct timespec ts;
	char buf[32];
	int fd, n;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (argc < 2)
		return 2;
	n = snprintf(buf, sizeof buf, "%lld%09ld\n", (long long)ts.tv_sec, ts.tv_nsec);
	fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd < 0 || write(fd, buf, n) != n)
		return 2;
	return argc > 2 ? atoi(argv[2]) : 1;
}
