/*
 * The fault matrix: every way W&B can fail × every run command, against the
 * emulator over real HTTP, with the real wbsched binary (docs/faults.md
 * publishes the table this file asserts; keep the two in step).
 *
 * Each case: the run's prior state is made while W&B is healthy, the fault
 * is injected for good ("times": -1; "connection refused" is W&B's URL
 * switched off, see struct front), the command runs with a 1 s budget, and
 * then W&B recovers and `wbsched flush` runs.  Asserted: the wall time, the
 * exit code, a message naming the cause, no crash (and no sanitizer report:
 * the harness checks), what the spool holds, and that the run's final state
 * history is exactly what it would have been without the outage.
 *
 * Then: --strict under the same faults; faults on the request that changes
 * the state (after a read that worked), which W&B applied before failing
 * the answer; the wording of an outage; kill -9 of `wbsched flush` part-way
 * and of a state change's wbsched mid-request; a change made while a flush
 * holds the spool.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <json-c/json.h>

#include "harness.h"

static struct emu emu;

/*
 * Results live at file scope: when an assertion ends a test, what they hold
 * stays reachable, so LeakSanitizer reports the failure's cause, not noise.
 */
static struct cli_result r;  /* the tests' */
static struct cli_result hr; /* the helpers' */
static char *kept;           /* the last string a helper asserted on */

static void keep(char *s)
{
	free(kept);
	kept = s;
}

/*
 * "Connection refused" from the W&B server the changes are queued for: the
 * spool delivers a change only to the server it was made for, so the
 * outage must happen at the same URL that recovers.  The front is a port
 * that forwards to the emulator when on, and refuses connections when off.
 */
struct front {
	int port;
	pid_t pid;    /* the forwarder, while on */
	char env[96]; /* WANDB_BASE_URL=http://127.0.0.1:PORT */
};

static struct front front;

static void setup(void)
{
	emu_start(&emu);
}

static void front_off(struct front *fr);

static void teardown(void)
{
	front_off(&front);
	emu_stop(&emu);
	cli_result_release(&r);
	cli_result_release(&hr);
	keep(NULL);
}

/* One timeout for all: Criterion 2.4.1's runner leaks when a test overrides the suite's. */
TestSuite(faults, .init = setup, .fini = teardown, .timeout = 120);

#define RUN       "emu-user/proj/r1"
#define BUDGET_MS 1000
/* process start, the spool's fsyncs, a loaded 2-core machine, ASan */
#define SLACK_MS        700
#define WAIT_TIMEOUT_MS 2000

/* What the documentation promises for each kind of fault. */
enum outcome {
	OUT_KEPT,    /* W&B unavailable: exit 0, "kept in spool", delivered by flush */
	OUT_NOPERM,  /* the key is refused: exit 77, nothing queued */
	OUT_REFUSED, /* W&B refused the change: exit 1, nothing queued */
};

struct fault {
	const char *name;
	const char *json; /* NULL: connection refused */
	enum outcome outcome;
	const char *cause; /* what stderr must say */
	bool at_once;      /* Retry-After longer than the budget: give up at once */
	bool processed;    /* W&B applies the change, then the answer fails */
};

static const struct fault fault_table[] = {
	{ "connection refused", NULL, OUT_KEPT, "Couldn't connect", false, false },
	{ "blackhole", "{\"blackhole\":true,\"times\":-1}", OUT_KEPT, "timed out", false, false },
	{ "HTTP 500", "{\"status\":500,\"times\":-1}", OUT_KEPT, "HTTP 500", false, false },
	{ "HTTP 502", "{\"status\":502,\"times\":-1}", OUT_KEPT, "HTTP 502", false, false },
	{ "HTTP 503 + Retry-After: 1", "{\"status\":503,\"retry_after\":\"1\",\"times\":-1}",
	  OUT_KEPT, "HTTP 503", true, false },
	{ "HTTP 429 + Retry-After: 30", "{\"status\":429,\"retry_after\":\"30\",\"times\":-1}",
	  OUT_KEPT, "HTTP 429", true, false },
	{ "HTTP 401", "{\"status\":401,\"times\":-1}", OUT_NOPERM, "W&B refused the API key", false,
	  false },
	{ "GraphQL errors", "{\"graphql_error\":\"injected refusal\",\"times\":-1}", OUT_REFUSED,
	  "W&B refused the request: injected refusal", false, false },
	{ "malformed JSON", "{\"malformed\":true,\"times\":-1}", OUT_KEPT, "malformed reply", false,
	  false },
	{ "truncated body", "{\"truncate\":true,\"times\":-1}", OUT_KEPT, "transfer closed", false,
	  true },
	{ "oversized body (100 MB)", "{\"oversize_bytes\":104857600,\"times\":-1}", OUT_KEPT,
	  "larger than 4194304 bytes", false, false },
	{ "slow drip (50 ms/byte)", "{\"drip_ms\":50,\"times\":-1}", OUT_KEPT, "timed out", false,
	  true },
};
#define N_FAULTS (sizeof(fault_table) / sizeof(fault_table[0]))

enum op_kind {
	OP_CREATE,
	OP_START,
	OP_FAIL,
	OP_PREEMPTING,
	OP_FINISH,
	OP_WAIT,
	OP_REQUEUE
};

struct op {
	const char *name;
	const char *args[8]; /* the command after the global options */
	const char *prior;   /* NULL, "pending", "running" or "preempting" */
	const char *after;   /* the history once the change is delivered */
	const char *before;  /* the history while it is not */
	const char *write;   /* fault selector of the request that changes the state */
};

static const struct op op_table[] = {
	[OP_CREATE] = { "create",
			{ "--entity", "emu-user", "--project", "proj", "create", "--id", "r1" },
			NULL,
			"pending",
			"",
			"\"operation\":\"UpsertRuns\"" },
	[OP_START] = { "start",
		       { "start", RUN },
		       "pending",
		       "pending,running",
		       "pending",
		       "\"operation\":\"UpsertRuns\"" },
	[OP_FAIL] = { "fail",
		      { "fail", "--reason", "boom", RUN },
		      "running",
		      "running,failed",
		      "running",
		      "\"operation\":\"UpdateRunState\"" },
	[OP_PREEMPTING] = { "preempting",
			    { "preempting", RUN },
			    "running",
			    "running,preempting",
			    "running",
			    "\"target\":\"file_stream\"" },
	[OP_FINISH] = { "finish",
			{ "finish", RUN },
			"running",
			"running,finished",
			"running",
			"\"target\":\"file_stream\"" },
	[OP_WAIT] = { "wait",
		      { "wait", RUN, "--timeout", "2", "--interval", "0.3" },
		      "running",
		      "running,finished", /* finished by the test once W&B is back */
		      "running",
		      NULL },
	[OP_REQUEUE] = { "requeue",
			 { "requeue", "--reason", "preempted", RUN },
			 "preempting",
			 "running,preempting,preempted,pending",
			 "running,preempting",
			 "\"operation\":\"UpdateRunState\"" },
};

/* ---- helpers ----------------------------------------------------------- */

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void run_ok(const char *const *env, const char *const *argv)
{
	cli_result_release(&hr);
	cli_run(&emu, env, argv, &hr);
	cr_assert_eq(hr.status, 0, "wbsched %s exited %d: %s", argv[0], hr.status, hr.err);
	cli_result_release(&hr);
}

#define OK(...)          run_ok(NULL, (const char *const[]){ __VA_ARGS__, NULL })
#define OK_ENV(env, ...) run_ok((env), (const char *const[]){ __VA_ARGS__, NULL })

/* The number of changes `flush --status` reports queued. */
static int queued(void)
{
	const char *p;
	int n = -1;

	cli_result_release(&hr);
	CLI(&emu, &hr, "flush", "--status");
	cr_assert_eq(hr.status, 0, "flush --status exited %d: %s", hr.status, hr.err);
	p = strstr(hr.out, ": ");
	cr_assert_not_null(p, "flush --status: '%s'", hr.out);
	cr_assert_eq(sscanf(p + 2, "%d change", &n), 1, "flush --status: '%s'", hr.out);
	cli_result_release(&hr);
	return n;
}

static void assert_states(const char *path, const char *expected, const char *what)
{
	char *states = emu_run_states(&emu, path);

	keep(states);
	cr_assert_str_eq(states, expected, "[%s] %s: history '%s', expected '%s'", what, path,
			 states, expected);
}

static int run_count(void)
{
	struct json_object *o = emu_get(&emu, "/_emu/runs"), *runs;
	int n = -1;

	if (o && json_object_object_get_ex(o, "runs", &runs))
		n = (int)json_object_array_length(runs);
	json_object_put(o);
	return n;
}

/* The run's summary value @key as a string, or NULL (caller frees). */
static char *summary_string(const char *path, const char *key)
{
	char url[256];
	struct json_object *run, *summary, *v;
	char *s = NULL;

	snprintf(url, sizeof(url), "/_emu/run?path=%s", path);
	run = emu_get(&emu, url);
	if (run && json_object_object_get_ex(run, "summary", &summary) &&
	    json_object_object_get_ex(summary, key, &v) && json_object_is_type(v, json_type_string))
		s = strdup(json_object_get_string(v));
	json_object_put(run);
	return s;
}

/* Makes the run's state before the fault, while W&B is healthy. */
static void make_prior(const char *prior, const char *id)
{
	if (!prior)
		return;
	if (strcmp(prior, "pending") == 0) {
		OK("--entity", "emu-user", "--project", "proj", "create", "--id", id);
	} else {
		OK("--entity", "emu-user", "--project", "proj", "create", "--id", id, "--state",
		   "running");
		if (strcmp(prior, "preempting") == 0) {
			char path[64];

			snprintf(path, sizeof(path), "emu-user/proj/%s", id);
			OK("preempting", path);
		}
	}
}

/* The command with the small budget of the matrix: argv for cli_run. */
static void budget_argv(const struct op *op, const char **argv, size_t max)
{
	static const char *const budget[] = { "--set", "budget_ms=1000",
					      "--set", "max_retries=2",
					      "--set", "breaker_cooldown_ms=0" };
	size_t n = 0;

	for (size_t i = 0; i < sizeof(budget) / sizeof(budget[0]); i++)
		argv[n++] = budget[i];
	for (size_t i = 0; op->args[i] && n + 1 < max; i++)
		argv[n++] = op->args[i];
	argv[n] = NULL;
}

static void flush_delivers(const char *const *env, int expected, const char *what)
{
	char line[64];

	cli_result_release(&hr);
	cli_run(&emu, env, (const char *const[]){ "flush", NULL }, &hr);
	cr_assert_eq(hr.status, 0, "[%s] flush exited %d: %s", what, hr.status, hr.err);
	snprintf(line, sizeof(line), "delivered %d change%s, 0 queued\n", expected,
		 expected == 1 ? "" : "s");
	cr_assert_str_eq(hr.out, line, "[%s] flush: '%s' (stderr '%s')", what, hr.out, hr.err);
	cli_result_release(&hr);
}

/* ---- the front: W&B's URL, on (forwarding to the emulator) or off ------- */

static void front_init(struct front *fr)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(s, 0);
	cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
	close(s);
	fr->port = ntohs(a.sin_port);
	fr->pid = 0;
	snprintf(fr->env, sizeof(fr->env), "WANDB_BASE_URL=http://127.0.0.1:%d", fr->port);
}

static bool write_all(int fd, const char *buf, ssize_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, (size_t)n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		buf += w;
		n -= w;
	}
	return true;
}

/* The forwarder: one process, poll() over the listener and up to 32 pairs. */
static void front_serve(int lfd, int upstream_port)
{
	enum {
		MAX_PAIRS = 32
	};
	int fds[2 * MAX_PAIRS];
	size_t n = 0;

	for (;;) {
		struct pollfd p[1 + 2 * MAX_PAIRS] = { { .fd = lfd, .events = POLLIN } };

		for (size_t i = 0; i < n; i++)
			p[1 + i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
		if (poll(p, 1 + n, -1) < 0)
			continue;
		for (size_t i = n; i-- > 0;) {
			char buf[65536];
			size_t peer = i ^ 1;
			ssize_t got;

			if (!(p[1 + i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			got = read(fds[i], buf, sizeof(buf));
			if (got > 0 && write_all(fds[peer], buf, got))
				continue;
			/* one side is gone: drop the pair (the last pair moves into its place) */
			close(fds[i & ~(size_t)1]);
			close(fds[i | 1]);
			fds[i & ~(size_t)1] = fds[n - 2];
			fds[i | 1] = fds[n - 1];
			n -= 2;
			break; /* the indexes moved: poll again */
		}
		if (p[0].revents & POLLIN) {
			struct sockaddr_in up = { .sin_family = AF_INET,
						  .sin_port = htons((uint16_t)upstream_port),
						  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
			int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC), u;

			if (c < 0)
				continue;
			u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (n == 2 * MAX_PAIRS || u < 0 ||
			    connect(u, (struct sockaddr *)&up, sizeof(up)) < 0) {
				close(c);
				if (u >= 0)
					close(u);
				continue;
			}
			fds[n++] = c;
			fds[n++] = u;
		}
	}
}

/* W&B answers at the front's URL (listening before this returns). */
static void front_on(struct front *fr)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)fr->port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1, s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_eq(fr->pid, 0);
	cr_assert_geq(s, 0);
	(void)setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0, "front port %d: %s", fr->port,
		     strerror(errno));
	cr_assert_eq(listen(s, 64), 0);
	fr->pid = fork();
	cr_assert_geq(fr->pid, 0);
	if (fr->pid == 0) {
		front_serve(s, emu.port);
		_exit(0);
	}
	close(s);
}

/* The front's URL refuses connections again; open ones are cut. */
static void front_off(struct front *fr)
{
	if (fr->pid > 0) {
		kill(fr->pid, SIGKILL);
		waitpid(fr->pid, NULL, 0);
		fr->pid = 0;
	}
}

/* ---- the matrix: fault × operation ------------------------------------- */

struct matrix_case {
	int fault;
	int op;
};

static struct matrix_case matrix_cases[N_FAULTS * 6];

ParameterizedTestParameters(faults, matrix)
{
	static const int ops[] = {
		OP_CREATE, OP_START, OP_FAIL, OP_PREEMPTING, OP_FINISH, OP_WAIT
	};
	size_t n = 0;

	for (size_t f = 0; f < N_FAULTS; f++)
		for (size_t o = 0; o < sizeof(ops) / sizeof(ops[0]); o++)
			matrix_cases[n++] = (struct matrix_case){ (int)f, ops[o] };
	return cr_make_param_array(struct matrix_case, matrix_cases, n);
}

ParameterizedTest(struct matrix_case *c, faults, matrix)
{
	const struct fault *f = &fault_table[c->fault];
	const struct op *op = &op_table[c->op];
	const char *env[] = { f->json ? NULL : front.env, NULL };
	const char *argv[24];
	char what[96];
	int expected, before_requests, requests;

	snprintf(what, sizeof(what), "%s × %s", f->name, op->name);
	make_prior(op->prior, "r1");
	if (f->json)
		emu_fault(&emu, f->json);
	else
		front_init(&front); /* W&B's URL, refusing connections */
	before_requests = emu_request_count(&emu);
	budget_argv(op, argv, sizeof(argv) / sizeof(argv[0]));
	cli_run(&emu, env, argv, &r);
	requests = emu_request_count(&emu) - before_requests;
	cr_log_info("[%s] exit %d in %ld ms, %d requests", what, r.status, r.elapsed_ms, requests);

	/* no crash, the documented exit code, a message naming the cause */
	cr_assert_lt(r.status, 128, "[%s] wbsched died (status %d): %s", what, r.status, r.err);
	if (c->op == OP_WAIT)
		expected = f->outcome == OUT_NOPERM ? 77 : 2;
	else
		expected = f->outcome == OUT_KEPT ? 0 : f->outcome == OUT_NOPERM ? 77 : 1;
	cr_assert_eq(r.status, expected, "[%s] exit %d, expected %d: %s", what, r.status, expected,
		     r.err);
	cr_assert_not_null(strstr(r.err, f->cause), "[%s] stderr does not say '%s': %s", what,
			   f->cause, r.err);
	if (f->outcome == OUT_KEPT) {
		cr_assert_not_null(strstr(r.err, "W&B unavailable"), "[%s] %s", what, r.err);
		if (c->op != OP_WAIT)
			cr_assert_not_null(strstr(r.err, "for run '" RUN "' is kept in spool"),
					   "[%s] %s", what, r.err);
	}
	if (c->op == OP_WAIT && expected == 2)
		cr_assert_not_null(strstr(r.err, "gave up waiting after 2 s"), "[%s] %s", what,
				   r.err);
	if (c->op == OP_CREATE && expected == 0)
		cr_assert_str_eq(r.out, RUN "\n", "[%s] a queued create prints the run's path",
				 what);

	/* wall time: the budget (wait: its timeout, plus the poll under way) */
	if (c->op == OP_WAIT && expected == 2) {
		cr_assert_geq(r.elapsed_ms, WAIT_TIMEOUT_MS - 50, "[%s] %ld ms", what,
			      r.elapsed_ms);
		cr_assert_leq(r.elapsed_ms, WAIT_TIMEOUT_MS + BUDGET_MS + SLACK_MS, "[%s] %ld ms",
			      what, r.elapsed_ms);
	} else if (f->at_once || expected != 0) {
		cr_assert_leq(r.elapsed_ms, SLACK_MS, "[%s] took %ld ms: should give up at once",
			      what, r.elapsed_ms);
	} else {
		cr_assert_leq(r.elapsed_ms, BUDGET_MS + SLACK_MS, "[%s] took %ld ms", what,
			      r.elapsed_ms);
	}
	/* the retry policy: never more than 1 + max_retries attempts of one operation */
	if (c->op != OP_WAIT && f->json) {
		cr_assert_leq(requests, 3, "[%s] %d requests", what, requests);
		if (f->at_once)
			cr_assert_eq(requests, 1, "[%s] %d requests: Retry-After not honoured",
				     what, requests);
	}

	/* what waits: a change W&B could not take, and nothing else */
	cr_assert_eq(queued(), c->op != OP_WAIT && f->outcome == OUT_KEPT ? 1 : 0, "[%s]", what);
	/* create and start write first: a processed fault applied them already */
	assert_states(RUN,
		      f->processed && (c->op == OP_CREATE || c->op == OP_START) ? op->after
										: op->before,
		      what);

	/* W&B recovers */
	cli_result_release(&r);
	emu_clear_faults(&emu);
	if (!f->json)
		front_on(&front);
	if (c->op == OP_WAIT) {
		json_object_put(emu_post(&emu, "/_emu/set",
					 "{\"path\":\"" RUN "\",\"state\":\"finished\"}"));
		CLI(&emu, &r, "wait", RUN, "--timeout", "5", "--interval", "0.3");
		cr_assert_eq(r.status, 0, "[%s] wait after recovery exited %d: %s", what, r.status,
			     r.err);
		cli_result_release(&r);
		assert_states(RUN, op->after, what);
		cr_assert_eq(queued(), 0, "[%s]", what);
		return;
	}
	flush_delivers(env, f->outcome == OUT_KEPT ? 1 : 0, what);
	/* exactly once in effect: the history of a run that never saw the outage */
	assert_states(RUN, f->outcome == OUT_KEPT ? op->after : op->before, what);
	cr_assert_eq(run_count(), c->op == OP_CREATE && f->outcome != OUT_KEPT ? 0 : 1, "[%s]",
		     what);
	if (c->op == OP_FAIL && f->outcome == OUT_KEPT) {
		char *reason = summary_string(RUN, "wbsched/reason");

		keep(reason);

		cr_assert_not_null(reason, "[%s] the reason was not recorded", what);
		cr_assert_str_eq(reason, "boom", "[%s]", what);
	}
	cr_assert_eq(queued(), 0, "[%s]", what);
}

/* ---- --strict: deliver now or exit 69, keep nothing ---------------------- */

static int strict_cases[N_FAULTS];

ParameterizedTestParameters(faults, strict)
{
	size_t n = 0;

	for (size_t f = 0; f < N_FAULTS; f++)
		if (fault_table[f].outcome == OUT_KEPT)
			strict_cases[n++] = (int)f;
	return cr_make_param_array(int, strict_cases, n);
}

ParameterizedTest(int *c, faults, strict)
{
	const struct fault *f = &fault_table[*c];
	const char *env[] = { f->json ? NULL : front.env, NULL };
	char what[96];

	snprintf(what, sizeof(what), "%s × finish --strict", f->name);
	make_prior("running", "r1");
	if (f->json)
		emu_fault(&emu, f->json);
	else
		front_init(&front);
	cli_run(&emu, env,
		(const char *const[]){ "--strict", "--set", "budget_ms=1000", "--set",
				       "max_retries=2", "--set", "breaker_cooldown_ms=0", "finish",
				       RUN, NULL },
		&r);
	cr_log_info("[%s] exit %d in %ld ms", what, r.status, r.elapsed_ms);
	cr_assert_lt(r.status, 128, "[%s] wbsched died (status %d): %s", what, r.status, r.err);
	cr_assert_eq(r.status, 69, "[%s] exit %d: %s", what, r.status, r.err);
	cr_assert_not_null(strstr(r.err, f->cause), "[%s] %s", what, r.err);
	cr_assert_not_null(strstr(r.err, "the change was not kept for later delivery"), "[%s] %s",
			   what, r.err);
	cr_assert_leq(r.elapsed_ms, (f->at_once ? 0 : BUDGET_MS) + SLACK_MS, "[%s] took %ld ms",
		      what, r.elapsed_ms);
	cli_result_release(&r);
	cr_assert_eq(queued(), 0, "[%s]", what);
	emu_clear_faults(&emu);
	if (!f->json)
		front_on(&front);
	flush_delivers(env, 0, what);
	assert_states(RUN, "running", what);
}

/* ---- faults on the request that changes the state ----------------------- */

/*
 * The read before the change works; the write fails.  "processed" faults
 * are answered after W&B applied the change (a proxy's 502 after the
 * backend did the work, a reply cut short): W&B has the change, the client
 * does not know.  Once: W&B recovers within the budget, the client's retry
 * must succeed.  Forever: the change is kept and flush must not apply it
 * twice.
 */
struct late_case {
	int op;
	int kind; /* 0: 502 after processing, 1: truncated reply (processed) */
	bool forever;
};

static const char *const late_kinds[] = { "\"status\":502,\"process\":true", "\"truncate\":true" };
static const char *const late_names[] = { "HTTP 502 after W&B applied it",
					  "truncated reply after W&B applied it" };

static struct late_case late_cases[6 * 2 * 2];

ParameterizedTestParameters(faults, write_request)
{
	static const int ops[] = { OP_CREATE, OP_START, OP_PREEMPTING,
				   OP_FINISH, OP_FAIL,  OP_REQUEUE };
	size_t n = 0;

	for (size_t o = 0; o < sizeof(ops) / sizeof(ops[0]); o++)
		for (int k = 0; k < 2; k++)
			for (int forever = 0; forever < 2; forever++) {
				/* create and start write first: the matrix has them forever */
				if (forever && (ops[o] == OP_CREATE || ops[o] == OP_START))
					continue;
				late_cases[n++] = (struct late_case){ ops[o], k, forever };
			}
	return cr_make_param_array(struct late_case, late_cases, n);
}

ParameterizedTest(struct late_case *c, faults, write_request)
{
	const struct op *op = &op_table[c->op];
	const char *argv[24];
	char fault[256], what[128];

	snprintf(what, sizeof(what), "%s %s × %s", late_names[c->kind],
		 c->forever ? "(for good)" : "(once)", op->name);
	make_prior(op->prior, "r1");
	snprintf(fault, sizeof(fault), "{%s,%s,\"times\":%d}", op->write, late_kinds[c->kind],
		 c->forever ? -1 : 1);
	emu_fault(&emu, fault);
	budget_argv(op, argv, sizeof(argv) / sizeof(argv[0]));
	cli_run(&emu, NULL, argv, &r);
	cr_log_info("[%s] exit %d in %ld ms", what, r.status, r.elapsed_ms);

	cr_assert_lt(r.status, 128, "[%s] wbsched died (status %d): %s", what, r.status, r.err);
	cr_assert_leq(r.elapsed_ms, BUDGET_MS + SLACK_MS, "[%s] took %ld ms", what, r.elapsed_ms);
	/* W&B has the change in every case: the command must not say it refused it */
	cr_expect_eq(r.status, 0, "[%s] exit %d: %s", what, r.status, r.err);
	if (c->forever) {
		cr_assert_not_null(strstr(r.err, "kept in spool"), "[%s] %s", what, r.err);
		cr_assert_eq(queued(), 1, "[%s]", what);
	} else {
		cr_assert_null(strstr(r.err, "kept in spool"), "[%s] %s", what, r.err);
		cr_assert_eq(queued(), 0, "[%s] delivered at once, nothing to keep", what);
	}
	cli_result_release(&r);

	emu_clear_faults(&emu);
	flush_delivers(NULL, c->forever ? 1 : 0, what);
	assert_states(RUN, op->after, what);
	cr_assert_eq(run_count(), 1, "[%s]", what);
	if (c->op == OP_FAIL || c->op == OP_REQUEUE) {
		char *reason = summary_string(RUN, "wbsched/reason");

		keep(reason);
		cr_assert_not_null(reason, "[%s] the --reason was not recorded", what);
		cr_assert_str_eq(reason, c->op == OP_FAIL ? "boom" : "preempted", "[%s]", what);
	}
	cr_assert_eq(queued(), 0, "[%s]", what);
}

/* ---- messages ------------------------------------------------------------ */

/*
 * "W&B refused the request" is the wording of a final refusal (exit 1); an
 * outage that is kept for later must not be worded as one.
 */
Test(faults, an_outage_is_not_worded_as_a_refusal)
{
	static const char *const statuses[] = { "500", "502", "503", "429" };

	make_prior("pending", "r1");
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
		char fault[96];

		emu_clear_faults(&emu);
		/* deliver the last round's start, so this one is not coalesced with it */
		CLI(&emu, &r, "flush");
		cli_result_release(&r);
		snprintf(fault, sizeof(fault), "{\"status\":%s,\"times\":-1}", statuses[i]);
		emu_fault(&emu, fault);
		CLI(&emu, &r, "--set", "budget_ms=1000", "--set", "breaker_cooldown_ms=0", "start",
		    RUN);
		cr_assert_eq(r.status, 0, "HTTP %s: %s", statuses[i], r.err);
		cr_assert_not_null(strstr(r.err, "W&B unavailable"), "HTTP %s: %s", statuses[i],
				   r.err);
		cr_assert_null(strstr(r.err, "refused"),
			       "HTTP %s: an outage worded as a refusal: %s", statuses[i], r.err);
		cli_result_release(&r);
	}
}

/* ---- kill -9 ------------------------------------------------------------- */

/* Starts wbsched in the background as cli_run() would; output into @log. */
static pid_t spawn(const char *const *env, const char *const *argv, const char *log)
{
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		const char *args[64] = { "wbsched" };
		char base_url[96], key[80], home[96], spool[128];
		size_t n = 1;
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		if (fd < 0)
			_exit(126);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		clearenv();
		snprintf(base_url, sizeof(base_url), "WANDB_BASE_URL=%s", emu.url);
		snprintf(key, sizeof(key), "WANDB_API_KEY=%s", emu.key);
		snprintf(home, sizeof(home), "HOME=%s", emu.home);
		snprintf(spool, sizeof(spool), "WBSCHED_SPOOL_DIR=%s/spool", emu.home);
		putenv(base_url);
		putenv(key);
		putenv(home);
		putenv(spool);
		putenv((char *)"PATH=/usr/bin:/bin");
		for (; env && *env; env++)
			putenv((char *)*env);
		for (; *argv && n < 63; argv++)
			args[n++] = *argv;
		args[n] = NULL;
		execv(WBS_BINARY, (char *const *)args);
		_exit(127);
	}
	return pid;
}

/* SIGKILLs @pid after @after_ms; asserts it was still running then. */
static void kill_after(pid_t pid, long after_ms, const char *what)
{
	int status;

	sleep_ms(after_ms);
	cr_assert_eq(waitpid(pid, &status, WNOHANG), 0, "[%s] wbsched ended before the kill", what);
	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "[%s]", what);
}

/* Waits for @pid at most @max_ms; returns its exit code. */
static int reap(pid_t pid, long max_ms)
{
	long deadline = now_ms() + max_ms;
	int status;

	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			cr_assert_fail("wbsched (pid %d) still running after %ld ms", (int)pid,
				       max_ms);
		}
		sleep_ms(20);
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *s = calloc(1, 65536);
	size_t n;

	cr_assert_not_null(s);
	if (f) {
		n = fread(s, 1, 65535, f);
		s[n] = '\0';
		fclose(f);
	}
	return s;
}

#define N_KILL_RUNS   10
#define KILL_EXPECTED "pending,running,preempting,preempted,pending,running,finished"

/*
 * ~50 changes for 10 runs queued during an outage; W&B comes back slow
 * (100 ms a request); `wbsched flush` is SIGKILLed part-way, three times at
 * different moments (mid-request, mid-replay of a multi-request change),
 * then a flush runs to the end.  Every run ends with exactly the history it
 * would have had without the outage, and nothing stays queued.
 */
Test(faults, kill_9_of_flush_part_way_loses_and_doubles_nothing)
{
	static const long kills[] = { 1000, 900, 1300 };
	const char *down[] = { front.env, NULL };
	char log[128];
	int left = 5 * N_KILL_RUNS;

	front_init(&front);
	for (int k = 0; k < N_KILL_RUNS; k++) {
		char id[16];

		snprintf(id, sizeof(id), "k%d", k);
		OK("--entity", "emu-user", "--project", "proj", "create", "--id", id);
	}
	/* W&B down: the first change trips the breaker, the rest queue at once */
	for (int k = 0; k < N_KILL_RUNS; k++) {
		char path[64];

		snprintf(path, sizeof(path), "emu-user/proj/k%d", k);
		OK_ENV(down, "--set", "budget_ms=500", "start", path);
		OK_ENV(down, "preempting", path);
		OK_ENV(down, "requeue", "--reason", "preempted", path);
		OK_ENV(down, "start", path);
		OK_ENV(down, "finish", path);
	}
	cr_assert_eq(queued(), 5 * N_KILL_RUNS);

	/* W&B back, but slow: each flush is killed part-way */
	front_on(&front);
	emu_fault(&emu, "{\"delay_ms\":100,\"times\":-1}");
	snprintf(log, sizeof(log), "%s/flush.log", emu.home);
	for (size_t i = 0; i < sizeof(kills) / sizeof(kills[0]); i++) {
		char what[64];
		pid_t pid = spawn(down, (const char *const[]){ "-v", "flush", NULL }, log);
		int now;

		snprintf(what, sizeof(what), "flush killed after %ld ms", kills[i]);
		kill_after(pid, kills[i], what);
		sleep_ms(250); /* the request it left behind lands */
		now = queued();
		keep(slurp(log));
		/* what it delivered is recorded as it goes, or it will be delivered again */
		cr_expect_lt(now, left, "[%s] no progress recorded: %d queued; flush said: %s",
			     what, now, kept);
		cr_assert_gt(now, 0, "[%s] the flush was not killed part-way", what);
		left = now;
	}
	emu_clear_faults(&emu);
	{
		cli_run(&emu, down, (const char *const[]){ "flush", NULL }, &r);
		cr_assert_eq(r.status, 0, "%s", r.err);
		cr_assert_null(strstr(r.err, "dropping"), "a change was dropped: %s", r.err);
		cli_result_release(&r);
	}
	cr_assert_eq(queued(), 0);
	for (int k = 0; k < N_KILL_RUNS; k++) {
		char path[64], *reason;

		snprintf(path, sizeof(path), "emu-user/proj/k%d", k);
		assert_states(path, KILL_EXPECTED, "kill -9 of flush");
		reason = summary_string(path, "wbsched/reason");
		keep(reason);
		cr_assert_not_null(reason, "%s: no reason", path);
		cr_assert_str_eq(reason, "preempted", "%s", path);
	}
	cr_assert_eq(run_count(), N_KILL_RUNS);
}

/*
 * A job step's wbsched (the plugin's child) SIGKILLed mid-request: the
 * change was written to the spool before it was sent, so the next wbsched
 * on the node delivers it, once.
 */
struct kill_child_case {
	int op;
	const char *fault;
	const char *name;
};

static struct kill_child_case kill_child_cases[] = {
	{ OP_FINISH, "{\"blackhole\":true,\"times\":-1}", "finish, W&B blackholed" },
	{ OP_FINISH, "{\"target\":\"file_stream\",\"drip_ms\":200,\"times\":-1}",
	  "finish, W&B applied it and drips the answer" },
	{ OP_REQUEUE, "{\"operation\":\"UpdateRunState\",\"blackhole\":true,\"times\":-1}",
	  "requeue, killed between its two writes" },
	{ OP_CREATE, "{\"blackhole\":true,\"times\":-1}", "create, W&B blackholed" },
};

ParameterizedTestParameters(faults, kill_9_of_a_state_change)
{
	return cr_make_param_array(struct kill_child_case, kill_child_cases,
				   sizeof(kill_child_cases) / sizeof(kill_child_cases[0]));
}

ParameterizedTest(struct kill_child_case *c, faults, kill_9_of_a_state_change)
{
	const struct op *op = &op_table[c->op];
	const char *argv[24] = { "--set", "budget_ms=3000" };
	char log[128];
	size_t n = 2;
	pid_t pid;

	make_prior(op->prior, "r1");
	emu_fault(&emu, c->fault);
	for (size_t i = 0; op->args[i]; i++)
		argv[n++] = op->args[i];
	argv[n] = NULL;
	snprintf(log, sizeof(log), "%s/child.log", emu.home);
	pid = spawn(NULL, argv, log);
	kill_after(pid, 500, c->name);

	/* nothing lost: it waits in the spool */
	cr_assert_eq(queued(), 1, "[%s] the killed change is not in the spool", c->name);
	emu_clear_faults(&emu);
	/* the next state change on the node delivers it first */
	OK("--entity", "emu-user", "--project", "proj", "create", "--id", "other");
	cr_assert_eq(queued(), 0, "[%s]", c->name);
	assert_states(RUN, op->after, c->name);
	cr_assert_eq(run_count(), 2, "[%s]", c->name);
}

/*
 * While `wbsched flush` delivers a backlog to a slow W&B it holds the spool;
 * a job step's state change made then, which W&B cannot take (its request
 * is blackholed), must still be kept (exit 0) within its budget: not lost,
 * not two budgets late.  The backlog is of preemptings (two requests each,
 * not batched), so that the flush lasts while the change is made.
 */
Test(faults, a_change_made_while_flush_holds_the_spool_is_kept)
{
	char log[128], *out;
	pid_t pid;
	int rc;

	for (int k = 0; k < 8; k++) {
		char id[16];

		snprintf(id, sizeof(id), "q%d", k);
		OK("--entity", "emu-user", "--project", "proj", "create", "--id", id, "--state",
		   "running");
	}
	make_prior("pending", "r1");
	/* the backlog: the first fails, the breaker queues the others at once */
	emu_fault(&emu, "{\"target\":\"file_stream\",\"status\":503,\"times\":-1}");
	for (int k = 0; k < 8; k++) {
		char path[64];

		snprintf(path, sizeof(path), "emu-user/proj/q%d", k);
		OK("--set", "budget_ms=500", "preempting", path);
	}
	cr_assert_eq(queued(), 8);
	/* W&B back but slow (300 ms an answer), and run upserts hang */
	emu_clear_faults(&emu);
	emu_fault(&emu, "{\"operation\":\"UpsertRuns\",\"blackhole\":true,\"times\":-1}");
	emu_fault(&emu, "{\"delay_ms\":300,\"times\":-1}");
	snprintf(log, sizeof(log), "%s/flush.log", emu.home);
	pid = spawn(NULL, (const char *const[]){ "flush", NULL }, log);
	sleep_ms(300);

	/* the job step's change, while the flush delivers the backlog (~5 s) */
	cli_run(&emu, NULL,
		(const char *const[]){ "--set", "budget_ms=1000", "--set", "breaker_cooldown_ms=0",
				       "start", RUN, NULL },
		&r);
	cr_log_info("change during a flush: exit %d in %ld ms", r.status, r.elapsed_ms);
	cr_assert_eq(waitpid(pid, NULL, WNOHANG), 0, "the flush ended before the change");
	rc = reap(pid, 60000);
	out = slurp(log);
	keep(out);
	/* 69: it also took the change made meanwhile, which W&B hung on (upserts blackholed) */
	cr_assert(rc == 0 || rc == 69, "flush: exit %d: %s", rc, out);
	cr_assert_null(strstr(out, "Sanitizer"), "%s", out);
	cr_assert_null(strstr(out, "runtime error:"), "%s", out);

	cr_assert_lt(r.status, 128, "wbsched died: %s", r.err);
	cr_expect_leq(r.elapsed_ms, BUDGET_MS + SLACK_MS, "took %ld ms: %s", r.elapsed_ms, r.err);
	cr_assert_eq(r.status, 0, "exit %d: the change was not kept: %s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "kept in spool"), "%s", r.err);
	cli_result_release(&r);

	/* W&B back: the change arrives (the earlier flush may have taken it already) */
	emu_clear_faults(&emu);
	CLI(&emu, &r, "flush");
	cr_assert_eq(r.status, 0, "flush: %s", r.err);
	cr_assert_not_null(strstr(r.out, ", 0 queued\n"), "flush: %s", r.out);
	cli_result_release(&r);
	assert_states(RUN, "pending,running", "change made during a flush");
	for (int k = 0; k < 8; k++) {
		char path[64];

		snprintf(path, sizeof(path), "emu-user/proj/q%d", k);
		assert_states(path, "running,preempting", "the flushed backlog");
	}
	cr_assert_eq(queued(), 0);
}
