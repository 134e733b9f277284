/* Helpers shared by the harnesses: temp directory, files, environment. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"

extern char **environ;

static char tmpdir[256];

char *fuzz_strdup(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		abort();
	if (size)
		memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	(void)remove(path);
	return 0;
}

void fuzz_rm_rf(const char *path)
{
	(void)nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void remove_tmpdir(void)
{
	if (tmpdir[0])
		fuzz_rm_rf(tmpdir);
}

const char *fuzz_tmpdir(void)
{
	const char *own = getenv("WBS_FUZZ_TMPDIR"), *env = getenv("TMPDIR");
	const char *bases[] = { own && *own ? own : "/dev/shm", "/dev/shm",
				env && *env ? env : "/tmp", "/tmp" };

	if (tmpdir[0])
		return tmpdir;
	for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
		(void)snprintf(tmpdir, sizeof(tmpdir), "%s/wbs-fuzz-XXXXXX", bases[i]);
		if (mkdtemp(tmpdir)) {
			atexit(remove_tmpdir);
			return tmpdir;
		}
	}
	fprintf(stderr, "fuzz: cannot create a temporary directory: %s\n", strerror(errno));
	abort();
}

int fuzz_write_file(const char *path, const uint8_t *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t done = 0;

	if (fd < 0)
		return -errno;
	while (done < size) {
		ssize_t n = write(fd, data + done, size - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int r = n < 0 ? -errno : -EIO;

			(void)close(fd);
			return r;
		}
		done += (size_t)n;
	}
	return close(fd) < 0 ? -errno : 0;
}

void fuzz_clean_env(void)
{
	for (;;) {
		const char *found = NULL;
		char *name;

		for (char **e = environ; e && *e && !found; e++)
			if (strncmp(*e, "WANDB_", 6) == 0 || strncmp(*e, "WBSCHED_", 8) == 0)
				found = *e;
		if (!found)
			return;
		name = strndup(found, strcspn(found, "="));
		if (!name || unsetenv(name) < 0)
			abort();
		free(name);
	}
}

/* The sanitizers' "SUMMARY:" line, which libFuzzer keeps even with -close_fd_mask=2. */
void __sanitizer_report_error_summary(const char *summary) __attribute__((weak));

void fuzz_check(int cond, const char *what, const char *file, int line)
{
	char msg[512];

	if (cond)
		return;
	(void)snprintf(msg, sizeof(msg), "fuzz check failed: %s (%s:%d)", what, file, line);
	fprintf(stderr, "%s\n", msg);
	if (__sanitizer_report_error_summary)
		__sanitizer_report_error_summary(msg);
	remove_tmpdir(); /* abort() skips atexit() */
	abort();
}
