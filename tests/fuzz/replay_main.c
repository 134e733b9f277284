/*
 * A main() for the harnesses without libFuzzer: runs LLVMFuzzerTestOneInput()
 * once on each file named on the command line, and on each file in each
 * directory named (sorted, not recursive; names starting with '.' are
 * skipped).  This is how the corpus and the regression inputs are replayed
 * by ctest in every build, gcc and the sanitizer build included.
 *
 *   fuzz_config_replay tests/fuzz/corpus/fuzz_config tests/fuzz/regressions/fuzz_config
 *
 * Exits 1 when a path cannot be read; a crash or a sanitizer report ends the
 * process as it would under libFuzzer.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

#pragma weak LLVMFuzzerInitialize

/* How many file descriptors the process has open. */
static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	(void)closedir(d);
	return n - 1; /* the directory's own */
}

/*
 * The file descriptors open after the first input (which may open what a
 * harness keeps for good): a later input that leaves one more open leaks,
 * and a fuzzer running thousands of them would run out.
 */
static int fds_kept = -1;

/* Reads @path into a buffer of exactly its size, so ASan sees any overread. */
static int replay_file(const char *path)
{
	struct stat st;
	uint8_t *buf;
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "replay: cannot read '%s': %s\n", path, strerror(errno));
		if (fd >= 0)
			(void)close(fd);
		return -1;
	}
	buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
	if (!buf)
		abort();
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	(void)close(fd);
	fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
	(void)LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	if (fds_kept < 0) {
		fds_kept = open_fds();
	} else if (open_fds() > fds_kept) {
		fprintf(stderr, "replay: '%s' leaked %d file descriptor%s\n", path,
			open_fds() - fds_kept, open_fds() - fds_kept == 1 ? "" : "s");
		return -1;
	}
	return 0;
}

static int skip_hidden(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* Returns the number of inputs replayed, or -1. */
static int replay_path(const char *path)
{
	struct dirent **names;
	struct stat st;
	int n, done = 0;

	if (stat(path, &st) < 0) {
		fprintf(stderr, "replay: cannot read '%s': %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return replay_file(path) < 0 ? -1 : 1;
	n = scandir(path, &names, skip_hidden, alphasort);
	if (n < 0) {
		fprintf(stderr, "replay: cannot list '%s': %s\n", path, strerror(errno));
		return -1;
	}
	for (int i = 0; i < n; i++) {
		char *file;

		if (done >= 0 && asprintf(&file, "%s/%s", path, names[i]->d_name) >= 0) {
			if (stat(file, &st) == 0 && S_ISREG(st.st_mode))
				done = replay_file(file) < 0 ? -1 : done + 1;
			free(file);
		}
		free(names[i]);
	}
	free(names);
	return done;
}

int main(int argc, char **argv)
{
	int total = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
		return 2;
	}
	if (LLVMFuzzerInitialize)
		(void)LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		int n = replay_path(argv[i]);

		if (n < 0)
			return 1;
		total += n;
	}
	fprintf(stderr, "replay: %d input%s, no crash\n", total, total == 1 ? "" : "s");
	return 0;
}
