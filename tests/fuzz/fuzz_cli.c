/*
 * fuzz_cli: the whole wbsched command line, hook_main(argc, argv).
 *
 * The input is split on NUL bytes into argv.  argv[0] is the program name,
 * which wbsched ignores; here it picks how the fake W&B answers:
 *
 *   "ok"      200, every run exists and is running
 *   "done"    200, every run finished (exit code 0)
 *   "failed"  200, every run failed (exit code 1)
 *   "gone"    200, no run exists
 *   "gqlerr"  200 with GraphQL errors (an invalid state transition)
 *   "junk"    200 with a body that is not JSON
 *   "401", "404", "429", "500"   that status
 *   anything else: connection refused (W&B unavailable: the spool path)
 *
 * and a "+q" suffix ("ok+q") starts with three changes already queued in the
 * spool (for team/proj/run-1, proj/run-2 and a create), which the command
 * delivers first or queues behind.  e.g. "ok\0--json\0status\0team/proj/run-1"
 * runs `wbsched --json status team/proj/run-1` against a server where that
 * run is running.
 *
 * What keeps it safe, fast and deterministic (link-time fakes, see
 * CMakeLists.txt, -Wl,--wrap):
 *   - wbs_transport_curl_init() is replaced: no request ever leaves the
 *     process, whatever --base-url says.  Also, the configuration points at
 *     http://127.0.0.1:1 with budget_ms=1 and max_retries=0 (WBSCHED_* variables).
 *   - clock_gettime(), clock_nanosleep(), nanosleep(), time() and getrandom()
 *     are virtual while hook_main() runs: backoff and `wait` intervals cost
 *     nothing and generated run ids are the same on every run.
 *   - openlog()/syslog() are dropped (--syslog).
 *   - The spool is a private temporary directory, emptied before each input;
 *     inputs that set spool_dir are skipped, as are those naming the watchdog
 *     command (it forks the command it is given) or `flush --all-users` (it
 *     forks a child per queue and, as root, becomes other users).
 *   - WANDB_API_KEY is a dummy; WBSCHED_CONFIG an empty file, so that
 *     /etc/wbsched/wbsched.yaml is never read.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/log.h"
#include "wbsched/transport.h"

#include "hook.h"

#include "fuzz.h"

#define MAX_ARGS  256
#define MAX_POSTS 64 /* per input; then every request is refused (401) for good */

/* ---- the fake W&B --------------------------------------------------------- */

/* The answers of "ok", "done" and "failed", made by make_body() at start. */
static char body_running[8192], body_finished[8192], body_failed[8192];

/*
 * One body that answers every operation the CLI sends: read (r0..r3), upsert
 * (r0..r3), viewer, summary, updateRunState, upsertBucket, serverInfo, and
 * file_stream (a JSON object).
 */
static void make_body(char *buf, size_t size, const char *state, const char *exitcode)
{
	char run[512], answer[1200];

	(void)snprintf(
		run, sizeof(run),
		"{\"id\":\"UnVuOnYxOnJ1bi0xOnByb2o6dGVhbQ==\",\"name\":\"run-1\",\"state\":\"%s\",\"displayName\":\"job 1\",\"group\":\"g\",\"jobType\":\"train\",\"heartbeatAt\":\"2024-01-10T15:22:45\",\"exitcode\":%s,\"project\":{\"name\":\"proj\",\"entity\":{\"name\":\"team\"}}}",
		state, exitcode);
	(void)snprintf(answer, sizeof(answer), "{\"run\":%s,\"bucket\":%s,\"inserted\":true}", run,
		       run);
	(void)snprintf(
		buf, size,
		"{\"data\":{\"viewer\":{\"id\":\"VXNlcjp0ZWFt\",\"username\":\"team\",\"entity\":\"team\"},\"r0\":%s,\"r1\":%s,\"r2\":%s,\"r3\":%s,\"project\":{\"run\":{\"id\":\"UnVuOnYxOnJ1bi0xOnByb2o6dGVhbQ==\",\"summaryMetrics\":\"{\\\"loss\\\":0.5}\"}},\"updateRunState\":{\"success\":true},\"upsertBucket\":{\"bucket\":{\"id\":\"UnVuOnYxOnJ1bi0xOnByb2o6dGVhbQ==\"}},\"serverInfo\":{\"features\":[{\"name\":\"UPDATE_RUN_STATE\",\"isEnabled\":true}]}},\"stopped\":false,\"limits\":{}}",
		answer, answer, answer, answer);
}

static const struct mode {
	const char *name;
	long status; /* 0: connection refused */
	const char *body;
} modes[] = {
	{ "ok", 200, body_running },
	{ "done", 200, body_finished },
	{ "failed", 200, body_failed },
	{ "gone", 200,
	  "{\"data\":{\"viewer\":{\"entity\":\"team\"},\"r0\":{\"run\":null},\"r1\":{\"run\":null},"
	  "\"project\":{\"run\":null}},\"stopped\":false}" },
	{ "gqlerr", 200,
	  "{\"data\":{\"updateRunState\":null},\"errors\":[{\"message\":\"invalid state transition from finished to pending\"}]}" },
	{ "junk", 200, "<html>502 Bad Gateway</html>" },
	{ "401", 401, "{\"errors\":[{\"message\":\"user is not logged in\"}]}" },
	{ "404", 404, "{\"error\":\"run not found\"}" },
	{ "429", 429, "{\"errors\":[{\"message\":\"rate limited\"}]}" },
	{ "500", 500, "{\"errors\":[{\"message\":\"internal error\"}]}" },
};

static const struct mode *mode;
static unsigned posts;

/* The spool of "+q" inputs (fixed: what is replayed never comes from the input). */
static const char queued[] =
	"{\"run\":\"team/proj/run-1\",\"entity\":\"team\",\"project\":\"proj\",\"argv\":[\"start\",\"--name\",\"job 1\",\"team/proj/run-1\"],\"seq\":1,\"at\":1699999990000}\n"
	"{\"run\":\"-/proj/run-2\",\"entity\":null,\"project\":\"proj\",\"argv\":[\"fail\",\"--reason\",\"oom\",\"proj/run-2\"],\"seq\":2,\"at\":1699999995000}\n"
	"{\"run\":\"-/uncategorized/abc\",\"entity\":null,\"project\":\"uncategorized\",\"argv\":[\"create\",\"--count\",\"2\",\"--id\",\"abc\"],\"seq\":3,\"at\":1699999999000}\n";

static int fake_post(void *ctx, const struct wbs_http_request *req,
		     struct wbs_http_response *ret_resp, struct wbs_error *err)
{
	long status = mode ? mode->status : 0;
	const char *body = mode ? mode->body : "";

	(void)ctx;
	FUZZ_CHECK(req->url && req->body && req->body_len == strlen(req->body));
	if (++posts > MAX_POSTS) {
		status = 401;
		body = "{}";
	} else if (status == 0) {
		return wbs_error_set(err, -ECONNREFUSED, "fuzz transport: connection refused");
	}
	*ret_resp = (struct wbs_http_response){
		.status = status,
		.body = strdup(body),
		.body_len = strlen(body),
		.retry_after_ms = status == 429 ? 1000 : -1,
	};
	FUZZ_CHECK(ret_resp->body != NULL);
	return 0;
}

static void fake_free(void *ctx)
{
	(void)ctx;
}

static const struct wbs_transport_ops fake_ops = {
	.post = fake_post,
	.free = fake_free,
};

int __wrap_wbs_transport_curl_init(struct wbs_transport *ret, const struct wbs_config *cfg,
				   struct wbs_error *err);

int __wrap_wbs_transport_curl_init(struct wbs_transport *ret, const struct wbs_config *cfg,
				   struct wbs_error *err)
{
	(void)cfg;
	(void)err;
	*ret = (struct wbs_transport){ .ops = &fake_ops, .ctx = NULL };
	return 0;
}

/* ---- virtual time, fixed randomness, no syslog ---------------------------- */

/* Only while hook_main() runs on this thread; everything else sees the real thing. */
static __thread bool in_hook;
static long long virtual_ns; /* since the start of the input */
static unsigned long long random_state;

#define MONOTONIC_START 1000LL       /* s */
#define REALTIME_START  1700000000LL /* s, 2023-11-14 */

int __real_clock_gettime(clockid_t clock, struct timespec *ts);
int __wrap_clock_gettime(clockid_t clock, struct timespec *ts);
int __wrap_clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
			   struct timespec *rem);
int __real_clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
			   struct timespec *rem);
int __wrap_nanosleep(const struct timespec *req, struct timespec *rem);
int __real_nanosleep(const struct timespec *req, struct timespec *rem);
time_t __wrap_time(time_t *t);
time_t __real_time(time_t *t);
ssize_t __wrap_getrandom(void *buf, size_t len, unsigned int flags);
ssize_t __real_getrandom(void *buf, size_t len, unsigned int flags);
void __wrap_openlog(const char *ident, int option, int facility);
void __real_openlog(const char *ident, int option, int facility);
void __wrap_syslog(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void __wrap___syslog_chk(int priority, int flag, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static bool is_realtime(clockid_t clock)
{
	return clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE;
}

int __wrap_clock_gettime(clockid_t clock, struct timespec *ts)
{
	long long start;

	if (!in_hook)
		return __real_clock_gettime(clock, ts);
	if (is_realtime(clock))
		start = REALTIME_START;
	else if (clock == CLOCK_MONOTONIC || clock == CLOCK_MONOTONIC_COARSE ||
		 clock == CLOCK_MONOTONIC_RAW || clock == CLOCK_BOOTTIME)
		start = MONOTONIC_START;
	else
		return __real_clock_gettime(clock, ts);
	ts->tv_sec = (time_t)(start + virtual_ns / 1000000000LL);
	ts->tv_nsec = (long)(virtual_ns % 1000000000LL);
	return 0;
}

static long long ns_of(const struct timespec *ts)
{
	return (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

int __wrap_clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
			   struct timespec *rem)
{
	if (!in_hook)
		return __real_clock_nanosleep(clock, flags, req, rem);
	if (flags & TIMER_ABSTIME) {
		long long until =
			ns_of(req) -
			(is_realtime(clock) ? REALTIME_START : MONOTONIC_START) * 1000000000LL;

		if (until > virtual_ns)
			virtual_ns = until;
	} else if (req->tv_sec >= 0 && req->tv_nsec >= 0) {
		virtual_ns += ns_of(req);
	}
	return 0;
}

int __wrap_nanosleep(const struct timespec *req, struct timespec *rem)
{
	if (!in_hook)
		return __real_nanosleep(req, rem);
	if (req->tv_sec >= 0 && req->tv_nsec >= 0)
		virtual_ns += ns_of(req);
	return 0;
}

time_t __wrap_time(time_t *t)
{
	time_t now;

	if (!in_hook)
		return __real_time(t);
	now = (time_t)(REALTIME_START + virtual_ns / 1000000000LL);
	if (t)
		*t = now;
	return now;
}

ssize_t __wrap_getrandom(void *buf, size_t len, unsigned int flags)
{
	unsigned char *p = buf;

	if (!in_hook)
		return __real_getrandom(buf, len, flags);
	for (size_t i = 0; i < len; i++) {
		random_state = random_state * 6364136223846793005ULL + 1442695040888963407ULL;
		p[i] = (unsigned char)(random_state >> 56);
	}
	return (ssize_t)len;
}

void __wrap_openlog(const char *ident, int option, int facility)
{
	if (!in_hook)
		__real_openlog(ident, option, facility);
}

void __wrap_syslog(int priority, const char *fmt, ...)
{
	va_list ap;

	if (in_hook)
		return;
	va_start(ap, fmt);
	vsyslog(priority, fmt, ap);
	va_end(ap);
}

void __wrap___syslog_chk(int priority, int flag, const char *fmt, ...)
{
	va_list ap;

	(void)flag;
	if (in_hook)
		return;
	va_start(ap, fmt);
	vsyslog(priority, fmt, ap);
	va_end(ap);
}

/* ---- the harness ------------------------------------------------------------ */

static char spool_dir[4200];

static void set_env(const char *name, const char *value)
{
	if (setenv(name, value, 1) < 0)
		abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char config[4200];

	(void)argc;
	(void)argv;
	make_body(body_running, sizeof(body_running), "running", "null");
	make_body(body_finished, sizeof(body_finished), "finished", "0");
	make_body(body_failed, sizeof(body_failed), "failed", "1");
	fuzz_clean_env();
	(void)snprintf(spool_dir, sizeof(spool_dir), "%s/spool", fuzz_tmpdir());
	(void)snprintf(config, sizeof(config), "%s/empty.yaml", fuzz_tmpdir());
	FUZZ_CHECK(fuzz_write_file(config, (const uint8_t *)"", 0) == 0);
	set_env("WBSCHED_CONFIG", config);
	set_env("WBSCHED_SPOOL_DIR", spool_dir);
	set_env("WBSCHED_BASE_URL", "http://127.0.0.1:1");
	set_env("WBSCHED_BUDGET_MS", "1");
	set_env("WBSCHED_MAX_RETRIES", "0");
	set_env("WBSCHED_CONNECT_TIMEOUT_MS", "1");
	set_env("WANDB_API_KEY", "fuzz0000000000000000000000000000000000000");
	set_env("HOME", fuzz_tmpdir());
	set_env("NETRC", config);
	return 0;
}

/* Fills the spool as wbsched would have left it ("+q"). */
static void queue_changes(void)
{
	char path[4300];

	FUZZ_CHECK(mkdir(spool_dir, 0700) == 0);
	(void)snprintf(path, sizeof(path), "%s/%u", spool_dir, (unsigned)geteuid());
	FUZZ_CHECK(mkdir(path, 0700) == 0);
	(void)snprintf(path, sizeof(path), "%s/%u/queue", spool_dir, (unsigned)geteuid());
	FUZZ_CHECK(fuzz_write_file(path, (const uint8_t *)queued, strlen(queued)) == 0);
}

/* Inputs the harness does not run: see the top of the file. */
static bool is_unsafe(char **argv, int argc)
{
	for (int i = 1; i < argc; i++) {
		size_t len = strlen(argv[i]);

		if (strcmp(argv[i], "watchdog") == 0 || strstr(argv[i], "spool_dir"))
			return true;
		/* getopt takes any unambiguous abbreviation: --a, --al, ... */
		if (len >= 3 && strncmp(argv[i], "--all-users", len) == 0)
			return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = fuzz_strdup(data, size); /* a NUL after the last word */
	/* "a\0b" and "a\0b\0" are both {"a", "b"}: a final NUL ends a word */
	char *end = buf + (size > 0 && data[size - 1] == 0 ? size - 1 : size);
	char *argv[MAX_ARGS + 1];
	size_t name_len;
	int argc = 0;

	for (char *p = buf; argc < MAX_ARGS && p <= end; p += strlen(p) + 1)
		argv[argc++] = p;
	argv[argc] = NULL;
	if (is_unsafe(argv, argc)) {
		free(buf);
		return -1; /* not kept in the corpus */
	}

	name_len = strcspn(argv[0], "+");
	mode = NULL;
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]) && !mode; i++)
		if (strlen(modes[i].name) == name_len &&
		    strncmp(argv[0], modes[i].name, name_len) == 0)
			mode = &modes[i];
	posts = 0;
	virtual_ns = 0;
	random_state = 42;
	fuzz_rm_rf(spool_dir);
	if (strstr(argv[0], "+q"))
		queue_changes();
	wbs_log_set_level(WBS_LOG_INFO);

	in_hook = true;
	(void)hook_main(argc, argv);
	in_hook = false;

	(void)fflush(stdout);
	free(buf);
	return 0;
}
