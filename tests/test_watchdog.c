/*
 * wbsched watchdog through real processes and signals, against the W&B
 * emulator and loopback fakes of the Kubernetes API server
 * (tests/fakes/k8s_fake.js) and of the GCE, AWS and Azure metadata services
 * (tests/fakes/imds_fake.js).  Each lifecycle asserts the run's state
 * sequence and the exit status.  The pure parts (the end-state rule, the pod
 * classification, the parsers) are unit-tested in test_k8s.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <json-c/json.h>

#include "wbsched/cleanup.h"
#include "wbsched/graphql.h"

#include "harness.h"

#define PROJECT  "proj"
#define JOB_UID  "3f1c6a2e-8b7d-4c55-9e10-2a6b9d4c7e01"
#define POD      "train-0-abcde"
#define NS       "ml"
#define RUN_PATH "emu-user/" PROJECT "/" JOB_UID

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

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len = 0;
	FILE *m;
	int c;

	m = open_memstream(&buf, &len);
	cr_assert_not_null(m);
	while (f && (c = fgetc(f)) != EOF)
		fputc(c, m);
	fclose(m);
	if (f)
		fclose(f);
	return buf;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");

	cr_assert_not_null(f, "cannot write '%s'", path);
	fputs(text, f);
	fclose(f);
}

/* ---- fixtures ---------------------------------------------------------- */

static struct emu emu;
static char tmp[64];
static int spawned;

/* A Node.js fake on loopback; its first stdout line says where it listens. */
struct fake {
	pid_t pid;
	char line[256];
	int port;       /* the service */
	struct emu ctl; /* its control API, reached with emu_get()/emu_post() */
};

static struct fake k8s, imds, k8s2;

static bool fake_start(struct fake *f, const char *script, const char *const *args)
{
	const char *argv[24] = { "node", NULL };
	char path[256];
	int out[2];
	size_t n = 0, a = 2;
	long deadline = now_ms() + 15000;

	snprintf(path, sizeof(path), "%s/%s", WBS_FAKES_DIR, script);
	argv[1] = path;
	for (; args && *args && a < 23; args++)
		argv[a++] = *args;
	argv[a] = NULL;
	memset(f, 0, sizeof(*f));
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	f->pid = fork();
	cr_assert_geq(f->pid, 0);
	if (f->pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		execv(WBS_NODE, (char *const *)argv);
		_exit(127);
	}
	close(out[1]);
	while (n < sizeof(f->line) - 1 && now_ms() < deadline) {
		struct pollfd p = { .fd = out[0], .events = POLLIN };

		if (poll(&p, 1, 200) <= 0)
			continue;
		if (read(out[0], f->line + n, 1) <= 0 || f->line[n] == '\n')
			break;
		n++;
	}
	f->line[n] = '\0';
	close(out[0]);
	return strstr(f->line, "listening on") != NULL;
}

static void fake_stop(struct fake *f)
{
	if (f->pid > 0) {
		kill(f->pid, SIGTERM);
		waitpid(f->pid, NULL, 0);
	}
	f->pid = 0;
}

/* A self-signed certificate for 127.0.0.1 and ::1, the token and the namespace file. */
static void make_serviceaccount(void)
{
	char cmd[768], path[128];

	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
		 "-keyout %s/key.pem -out %s/ca.crt -days 1 -subj /CN=kubernetes "
		 "-addext subjectAltName=IP:127.0.0.1,IP:::1 >/dev/null 2>&1",
		 tmp, tmp);
	cr_assert_eq(system(cmd), 0, "openssl could not make a certificate");
	snprintf(path, sizeof(path), "%s/token", tmp);
	write_file(path, "token-1\n");
	snprintf(path, sizeof(path), "%s/namespace", tmp);
	write_file(path, NS "\n");
}

/* The Kubernetes fake for pod @pod on @host (127.0.0.1 or ::1). */
static bool k8s_start(struct fake *f, const char *host, const char *pod, bool kueue)
{
	char cert[96], key[96];
	const char *args[16] = { "--cert",
				 cert,
				 "--key",
				 key,
				 "--host",
				 host,
				 "--pod",
				 pod,
				 "--job-uid",
				 JOB_UID,
				 "--namespace",
				 NS,
				 kueue ? "--kueue" : NULL,
				 NULL };
	int ctl;

	snprintf(cert, sizeof(cert), "%s/ca.crt", tmp);
	snprintf(key, sizeof(key), "%s/key.pem", tmp);
	if (access(cert, F_OK) != 0)
		make_serviceaccount();
	if (!fake_start(f, "k8s_fake.js", args))
		return false;
	cr_assert(sscanf(strstr(f->line, "]:") ? strstr(f->line, "]:") + 2
					       : strstr(f->line, "127.0.0.1:") + 10,
			 "%d", &f->port) == 1,
		  "%s", f->line);
	cr_assert_eq(sscanf(strstr(f->line, "control http://127.0.0.1:"),
			    "control http://127.0.0.1:%d", &ctl),
		     1);
	snprintf(f->ctl.url, sizeof(f->ctl.url), "http://127.0.0.1:%d", ctl);
	return true;
}

static void imds_start(void)
{
	cr_assert(fake_start(&imds, "imds_fake.js", NULL), "imds fake: '%s'", imds.line);
	cr_assert_eq(sscanf(imds.line, "imds-fake listening on http://127.0.0.1:%d", &imds.port),
		     1);
	snprintf(imds.ctl.url, sizeof(imds.ctl.url), "http://127.0.0.1:%d", imds.port);
}

static void setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/wbs-wd-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	spawned = 0;
	emu_start(&emu);
}

static void teardown(void)
{
	char cmd[128];

	fake_stop(&k8s);
	fake_stop(&k8s2);
	fake_stop(&imds);
	emu_stop(&emu);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	(void)!system(cmd);
}

TestSuite(watchdog, .init = setup, .fini = teardown, .timeout = 40);

/* ---- processes --------------------------------------------------------- */

/* An environment under construction: "NAME=value" strings. */
struct env {
	char *v[40];
	size_t n;
};

static void env_add(struct env *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void env_add(struct env *e, const char *fmt, ...)
{
	va_list ap;

	cr_assert_lt(e->n, ELEMENTSOF(e->v) - 1);
	va_start(ap, fmt);
	cr_assert_geq(vasprintf(&e->v[e->n++], fmt, ap), 0);
	va_end(ap);
	e->v[e->n] = NULL;
}

static void env_free(struct env *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->v[i]);
	e->n = 0;
}

/* What a pod of the Job gets from the Downward API and the service account. */
static void env_pod(struct env *e, const struct fake *f, const char *host, const char *pod)
{
	env_add(e, "KUBERNETES_SERVICE_HOST=%s", host);
	env_add(e, "KUBERNETES_SERVICE_PORT=%d", f->port);
	env_add(e, "WBSCHED_K8S_TOKEN_FILE=%s/token", tmp);
	env_add(e, "WBSCHED_K8S_CA_FILE=%s/ca.crt", tmp);
	env_add(e, "POD_NAME=%s", pod);
	env_add(e, "JOB_UID=%s", JOB_UID);
	env_add(e, "JOB_NAME=train");
	env_add(e, "NODE_NAME=node-1");
}

/* wbsched running in the background, stdout and stderr in files. */
struct proc {
	pid_t pid;
	char out[128], err[128];
	int status;
	long started, ended;
};

static void spawn(struct proc *p, const struct env *env, const char *const *argv)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->out, sizeof(p->out), "%s/p%d.out", tmp, spawned);
	snprintf(p->err, sizeof(p->err), "%s/p%d.err", tmp, spawned++);
	p->started = now_ms();
	p->pid = fork();
	cr_assert_geq(p->pid, 0);
	if (p->pid == 0) {
		const char *args[40] = { "wbsched" };
		size_t n = 1;
		char base_url[96], key[80], home[96], wbs[300], spool[128];
		int o = open(p->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		int er = open(p->err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		if (o < 0 || er < 0)
			_exit(127);
		dup2(o, STDOUT_FILENO);
		dup2(er, STDERR_FILENO);
		clearenv();
		snprintf(base_url, sizeof(base_url), "WANDB_BASE_URL=%s", emu.url);
		snprintf(key, sizeof(key), "WANDB_API_KEY=%s", emu.key);
		snprintf(home, sizeof(home), "HOME=%s", emu.home);
		snprintf(wbs, sizeof(wbs), "WBS=%s", WBS_BINARY);
		putenv(base_url);
		putenv(key);
		putenv(home);
		putenv(wbs);
		/* each test its own spool, so tests never replay each other's changes */
		snprintf(spool, sizeof(spool), "WBSCHED_SPOOL_DIR=%s/spool", emu.home);
		putenv(spool);
		putenv((char *)"PATH=/usr/bin:/bin");
		for (size_t i = 0; env && i < env->n; i++)
			putenv(env->v[i]);
		for (; *argv && n < 39; argv++)
			args[n++] = *argv;
		args[n] = NULL;
		execv(WBS_BINARY, (char *const *)args);
		_exit(127);
	}
}

static char *proc_stderr(const struct proc *p)
{
	return read_file(p->err);
}

/* Waits for the process; fails the test after @timeout_ms (and kills it). */
static int proc_wait(struct proc *p, long timeout_ms)
{
	long deadline = now_ms() + timeout_ms;
	char *err;
	int st;

	for (;;) {
		pid_t r = waitpid(p->pid, &st, WNOHANG);

		if (r == p->pid)
			break;
		if (now_ms() > deadline) {
			kill(p->pid, SIGKILL);
			waitpid(p->pid, &st, 0);
			err = proc_stderr(p);
			cr_assert_fail("wbsched did not end within %ld ms; stderr:\n%s", timeout_ms,
				       err);
		}
		sleep_ms(20);
	}
	p->ended = now_ms();
	p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	err = proc_stderr(p);
	cr_assert_null(strstr(err, "Sanitizer"), "wbsched: %s", err);
	cr_assert_null(strstr(err, "runtime error:"), "wbsched: %s", err);
	free(err);
	return p->status;
}

static bool stderr_has(const struct proc *p, const char *s)
{
	char *err = proc_stderr(p);
	bool yes = strstr(err, s) != NULL;

	free(err);
	return yes;
}

static void wait_stderr(const struct proc *p, const char *s, long timeout_ms)
{
	long deadline = now_ms() + timeout_ms;
	char *err;

	while (now_ms() < deadline) {
		if (stderr_has(p, s))
			return;
		sleep_ms(30);
	}
	err = proc_stderr(p);
	cr_assert_fail("stderr never said '%s':\n%s", s, err);
}

static void wait_state(const char *run, const char *state, long timeout_ms)
{
	long deadline = now_ms() + timeout_ms;
	char *s = NULL;

	while (now_ms() < deadline) {
		s = emu_run_state(&emu, run);
		if (s && strcmp(s, state) == 0) {
			free(s);
			return;
		}
		free(s);
		sleep_ms(30);
	}
	s = emu_run_states(&emu, run);
	cr_assert_fail("run '%s' never became %s: %s", run, state, s);
}

/* Until the watchdog's helper has an open watch on the fake API server. */
static void wait_watching(struct fake *f, long timeout_ms)
{
	long deadline = now_ms() + timeout_ms;

	while (now_ms() < deadline) {
		struct json_object *st = emu_get(&f->ctl, "/_fake/state");
		int watchers = json_object_get_int(wbs_json_path(st, "watchers"));

		json_object_put(st);
		if (watchers > 0)
			return;
		sleep_ms(30);
	}
	cr_assert_fail("the watchdog never watched the pod");
}

static void assert_states(const char *run, const char *expected)
{
	char *states = emu_run_states(&emu, run);

	cr_assert_str_eq(states, expected);
	free(states);
}

/* The run's summary value @key as text ("" when absent); caller frees. */
static char *summary(const char *run, const char *key)
{
	char path[256];
	struct json_object *o, *v = NULL;
	char *s;

	snprintf(path, sizeof(path), "/_emu/run?path=%s", run);
	o = emu_get(&emu, path);
	json_object_object_get_ex(wbs_json_path(o, "summary"), key, &v);
	s = strdup(v ? json_object_get_string(v) : "");
	json_object_put(o);
	return s;
}

static void assert_reason_has(const char *run, const char *part)
{
	char *r = summary(run, "wbsched/reason");

	cr_assert(strstr(r, part), "reason '%s' lacks '%s'", r, part);
	free(r);
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	(void)ptr;
	(void)userdata;
	return size * nmemb;
}

/* DELETE /_emu/faults: W&B is back. */
static void clear_faults(void)
{
	CURL *c = curl_easy_init();
	char url[128];

	cr_assert_not_null(c);
	snprintf(url, sizeof(url), "%s/_emu/faults", emu.url);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE");
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	cr_assert_eq(curl_easy_perform(c), CURLE_OK);
	curl_easy_cleanup(c);
}

static void post(struct fake *f, const char *path, const char *json)
{
	json_object_put(emu_post(&f->ctl, path, json));
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* `wbsched --project proj watchdog --grace 1 OPTS... -- sh -c SCRIPT` in the background. */
static void watchdog(struct proc *p, const struct env *env, const char *const *opts,
		     const char *script)
{
	const char *argv[32] = { "--project", PROJECT, "watchdog", "--grace", "1" };
	size_t n = 5;

	for (; opts && *opts; opts++)
		argv[n++] = *opts;
	argv[n++] = "--";
	argv[n++] = "sh";
	argv[n++] = "-c";
	argv[n++] = script;
	argv[n] = NULL;
	spawn(p, env, argv);
}

/* A CMD that runs until SIGTERM, then exits @code. */
#define UNTIL_TERM(code) "trap 'kill $!; exit " #code "' TERM; sleep 20 & wait"

/* ---- plain lifecycles -------------------------------------------------- */

Test(watchdog, exit_0_finishes_and_cmd_gets_the_run)
{
	struct env env = { 0 };
	struct proc p;

	env_add(&env, "WANDB_RUN_ID=r1");
	watchdog(&p, &env, NULL,
		 "test \"$WANDB_RUN_ID\" = r1 && test \"$WANDB_RESUME\" = allow && "
		 "test \"$WANDB_PROJECT\" = " PROJECT);
	cr_assert_eq(proc_wait(&p, 10000), 0);
	assert_states("emu-user/proj/r1", "running,finished");
	env_free(&env);
}

Test(watchdog, exit_non_zero_fails_with_its_code)
{
	struct env env = { 0 };
	struct proc p;
	char *code;

	env_add(&env, "WANDB_RUN_ID=r1");
	watchdog(&p, &env, NULL, "sleep 0.2; exit 3");
	cr_assert_eq(proc_wait(&p, 10000), 3);
	assert_states("emu-user/proj/r1", "running,failed");
	assert_reason_has("emu-user/proj/r1", "exit code 3");
	code = summary("emu-user/proj/r1", "wbsched/exit_code");
	cr_assert_str_eq(code, "3");
	free(code);
	env_free(&env);
}

Test(watchdog, killed_by_a_signal_fails_and_exits_128_plus_n)
{
	struct env env = { 0 };
	struct proc p;

	env_add(&env, "WANDB_RUN_ID=r1");
	watchdog(&p, &env, NULL, "kill -KILL $$");
	cr_assert_eq(proc_wait(&p, 10000), 137);
	assert_states("emu-user/proj/r1", "running,failed");
	assert_reason_has("emu-user/proj/r1", "killed by signal 9 (SIGKILL)");
	env_free(&env);
}

Test(watchdog, heartbeats_keep_a_run_without_wandb_init_alive)
{
	struct env env = { 0 };
	struct proc p;

	/* the emulator calls a run crashed after 1.2 s without file_stream */
	json_object_put(emu_post(&emu, "/_emu/config", "{\"crash_after_ms\":1200}"));
	env_add(&env, "WANDB_RUN_ID=r1");
	watchdog(&p, &env, ARGS("--heartbeat", "0.3"), "sleep 2.5");
	cr_assert_eq(proc_wait(&p, 10000), 0);
	assert_states("emu-user/proj/r1", "running,finished");
	env_free(&env);
}

Test(watchdog, sigterm_marks_preempting_before_cmd_sees_it)
{
	struct env env = { 0 };
	struct proc p;
	char seen[128], *text;

	snprintf(seen, sizeof(seen), "%s/seen", tmp);
	env_add(&env, "WANDB_RUN_ID=r1");
	env_add(&env, "SEEN=%s", seen);
	/* CMD asks W&B for the run's state when SIGTERM reaches it */
	watchdog(&p, &env, NULL,
		 "trap '\"$WBS\" status > \"$SEEN\"; kill $!; exit 143' TERM; sleep 20 & wait");
	wait_state("emu-user/proj/r1", "running", 5000);
	kill(p.pid, SIGTERM);
	cr_assert_eq(proc_wait(&p, 10000), 143);
	text = read_file(seen);
	cr_assert_str_eq(text, "emu-user/proj/r1 preempting\n");
	free(text);
	assert_states("emu-user/proj/r1", "running,preempting,preempted");
	assert_reason_has("emu-user/proj/r1", "SIGTERM with no known cause");
	env_free(&env);
}

Test(watchdog, exit_0_after_sigterm_is_preempted_not_finished)
{
	struct env env = { 0 };
	struct proc p;
	char *code;

	env_add(&env, "WANDB_RUN_ID=r1");
	watchdog(&p, &env, NULL, UNTIL_TERM(0));
	wait_state("emu-user/proj/r1", "running", 5000);
	kill(p.pid, SIGTERM);
	cr_assert_eq(proc_wait(&p, 10000), 0);
	assert_states("emu-user/proj/r1", "running,preempting,preempted");
	assert_reason_has("emu-user/proj/r1", "exit code 0 after SIGTERM");
	code = summary("emu-user/proj/r1", "wbsched/exit_code");
	cr_assert_str_eq(code, "0");
	free(code);
	env_free(&env);
}

Test(watchdog, other_signals_are_forwarded_at_once)
{
	struct env env = { 0 };
	struct proc p;
	long sent;

	env_add(&env, "WANDB_RUN_ID=r1");
	watchdog(&p, &env, NULL, "trap 'kill $!; exit 7' USR1; sleep 20 & wait");
	wait_state("emu-user/proj/r1", "running", 5000);
	sent = now_ms();
	kill(p.pid, SIGUSR1);
	cr_assert_eq(proc_wait(&p, 10000), 7);
	cr_assert_lt(p.ended - sent, 1500, "USR1 took %ld ms", p.ended - sent);
	assert_states("emu-user/proj/r1", "running,failed");
	env_free(&env);
}

Test(watchdog, a_run_the_sdk_finished_is_left_alone)
{
	struct env env = { 0 };
	struct proc p;

	env_add(&env, "WANDB_RUN_ID=r1");
	/* the script's own wandb.finish(), then a failing exit */
	watchdog(&p, &env, NULL, "sleep 0.3; \"$WBS\" -q finish >/dev/null; exit 1");
	cr_assert_eq(proc_wait(&p, 10000), 1);
	assert_states("emu-user/proj/r1", "running,finished");
	cr_assert(stderr_has(&p, "already finished; left as is"));
	env_free(&env);
}

Test(watchdog, without_a_run_id_cmd_still_runs)
{
	struct proc p;

	watchdog(&p, NULL, NULL, "exit 4");
	cr_assert_eq(proc_wait(&p, 10000), 4);
	cr_assert(stderr_has(&p, "no run to follow"));
	cr_assert_eq(emu_request_count(&emu), 0);
}

Test(watchdog, a_command_that_cannot_run_exits_127)
{
	struct env env = { 0 };
	struct proc p;

	env_add(&env, "WANDB_RUN_ID=r1");
	spawn(&p, &env, ARGS("--project", PROJECT, "watchdog", "--", "/nonexistent/train"));
	cr_assert_eq(proc_wait(&p, 10000), 127);
	cr_assert(stderr_has(&p, "cannot run '/nonexistent/train'"));
	assert_states("emu-user/proj/r1", "running,failed");
	env_free(&env);
}

Test(watchdog, usage_errors_exit_64)
{
	struct proc p;

	spawn(&p, NULL, ARGS("watchdog", "--grace", "soon", "--", "true"));
	cr_assert_eq(proc_wait(&p, 5000), 64);
	cr_assert(stderr_has(&p, "invalid --grace 'soon'"));
	spawn(&p, NULL, ARGS("watchdog"));
	cr_assert_eq(proc_wait(&p, 5000), 64);
	cr_assert(stderr_has(&p, "no command given"));
	spawn(&p, NULL, ARGS("watchdog", "--cloud", "ibm", "--", "true"));
	cr_assert_eq(proc_wait(&p, 5000), 64);
	cr_assert(stderr_has(&p, "unknown cloud 'ibm'"));
}

Test(watchdog, run_id_from_the_job_uid_and_completion_index)
{
	struct env env = { 0 };
	struct proc p;

	env_add(&env, "JOB_UID=%s", JOB_UID);
	env_add(&env, "JOB_COMPLETION_INDEX=3");
	env_add(&env, "JOB_NAME=train");
	watchdog(&p, &env, ARGS("--no-kubernetes"), "test \"$WANDB_RUN_ID\" = " JOB_UID "-3");
	cr_assert_eq(proc_wait(&p, 10000), 0);
	assert_states(RUN_PATH "-3", "running,finished");

	struct json_object *run = emu_get(&emu, "/_emu/run?path=" RUN_PATH "-3");
	cr_assert_str_eq(wbs_json_path_string(run, "displayName"), "train-3");
	cr_assert_str_eq(wbs_json_path_string(run, "config.kubernetes.value.completion_index"),
			 "3");
	json_object_put(run);
	env_free(&env);
}

/* ---- W&B down ---------------------------------------------------------- */

Test(watchdog, wandb_down_never_delays_or_changes_cmd)
{
	struct env env = { 0 };
	struct proc p;
	char mark[128], *text;
	long sent;

	emu_fault(&emu, "{\"blackhole\":true,\"times\":-1}");
	snprintf(mark, sizeof(mark), "%s/started", tmp);
	env_add(&env, "WANDB_RUN_ID=r1");
	env_add(&env, "MARK=%s", mark);
	env_add(&env, "WBSCHED_BUDGET_MS=1000");
	watchdog(&p, &env, NULL, "echo up > \"$MARK\"; " UNTIL_TERM(143));
	sleep_ms(400);
	text = read_file(mark);
	cr_assert_str_eq(text, "up\n", "CMD had not started after 400 ms");
	free(text);
	sent = now_ms();
	kill(p.pid, SIGTERM);
	cr_assert_eq(proc_wait(&p, 15000), 143);
	/* SIGTERM went on at the 1 s grace; the rest is bounded by the budget */
	cr_assert(stderr_has(&p, "passing SIGTERM on"));
	cr_assert_lt(p.ended - sent, 6000, "the watchdog took %ld ms after SIGTERM",
		     p.ended - sent);
	env_free(&env);
}

/* ---- Kubernetes -------------------------------------------------------- */

static void start_k8s(bool kueue)
{
	cr_assert(k8s_start(&k8s, "127.0.0.1", POD, kueue), "k8s fake: '%s'", k8s.line);
}

static const char preempt_patch[] =
	"{\"metadata\":{\"deletionTimestamp\":\"2026-01-01T00:00:30Z\",\"deletionGracePeriodSeconds\":30},"
	"\"status\":{\"conditions\":[{\"type\":\"DisruptionTarget\",\"status\":\"True\","
	"\"reason\":\"PreemptionByScheduler\",\"message\":\"default-scheduler: preempting to accommodate a higher priority pod\","
	"\"lastProbeTime\":null,\"lastTransitionTime\":\"2026-01-01T00:00:00Z\"}]}}";

Test(watchdog, k8s_preemption_then_a_new_pod_resumes_the_run)
{
	struct env env = { 0 }, env2 = { 0 };
	struct proc p, p2;

	start_k8s(false);
	env_pod(&env, &k8s, "127.0.0.1", POD);
	watchdog(&p, &env, NULL, UNTIL_TERM(143));
	wait_watching(&k8s, 5000);
	wait_state(RUN_PATH, "running", 5000);
	post(&k8s, "/_fake/pod", preempt_patch);
	/* early notice: preempting before any SIGTERM */
	wait_state(RUN_PATH, "preempting", 5000);
	kill(p.pid, SIGTERM);
	cr_assert_eq(proc_wait(&p, 10000), 143);
	assert_states(RUN_PATH, "running,preempting,preempted");
	assert_reason_has(RUN_PATH, "preempted by the scheduler (PreemptionByScheduler)");

	/* the Job's replacement pod: same Job UID, same run */
	cr_assert(k8s_start(&k8s2, "127.0.0.1", "train-0-fghij", false));
	env_pod(&env2, &k8s2, "127.0.0.1", "train-0-fghij");
	watchdog(&p2, &env2, NULL, "test \"$WANDB_RUN_ID\" = " JOB_UID);
	cr_assert_eq(proc_wait(&p2, 10000), 0);
	assert_states(RUN_PATH, "running,preempting,preempted,running,finished");
	env_free(&env);
	env_free(&env2);
}

Test(watchdog, k8s_user_deletion_fails_without_preempting)
{
	struct env env = { 0 };
	struct proc p;

	start_k8s(false);
	env_pod(&env, &k8s, "127.0.0.1", POD);
	watchdog(&p, &env, NULL, UNTIL_TERM(143));
	wait_watching(&k8s, 5000);
	wait_state(RUN_PATH, "running", 5000);
	post(&k8s, "/_fake/pod",
	     "{\"metadata\":{\"deletionTimestamp\":\"2026-01-01T00:00:30Z\",\"deletionGracePeriodSeconds\":30}}");
	wait_stderr(&p, "the pod was deleted", 5000);
	kill(p.pid, SIGTERM);
	cr_assert_eq(proc_wait(&p, 10000), 143);
	assert_states(RUN_PATH, "running,failed");
	assert_reason_has(
		RUN_PATH,
		"the pod was deleted (no disruption condition, the Job is not suspended)");
	env_free(&env);
}

Test(watchdog, k8s_eviction_is_a_preemption)
{
	struct env env = { 0 };
	struct proc p;

	start_k8s(false);
	env_pod(&env, &k8s, "127.0.0.1", POD);
	watchdog(&p, &env, NULL, UNTIL_TERM(143));
	wait_watching(&k8s, 5000);
	wait_state(RUN_PATH, "running", 5000);
	post(&k8s, "/_fake/pod",
	     "{\"metadata\":{\"deletionTimestamp\":\"2026-01-01T00:00:30Z\"},"
	     "\"status\":{\"conditions\":[{\"type\":\"DisruptionTarget\",\"status\":\"True\","
	     "\"reason\":\"EvictionByEvictionAPI\",\"message\":\"Eviction API: evicting\"}]}}");
	wait_state(RUN_PATH, "preempting", 5000);
	kill(p.pid, SIGTERM);
	cr_assert_eq(proc_wait(&p, 10000), 143);
	assert_states(RUN_PATH, "running,preempting,preempted");
	assert_reason_has(RUN_PATH, "(EvictionByEvictionAPI): Eviction API: evicting");
	env_free(&env);
}

Test(watchdog, k8s_node_shutdown_is_a_preemption)
{
	struct env env = { 0 };
	struct proc p;

	start_k8s(false);
	env_pod(&env, &k8s, "127.0.0.1", POD);
	watchdog(&p, &env, NULL, UNTIL_TERM(143));
	wait_watching(&k8s, 5000);
	wait_state(RUN_PATH, "running", 5000);
	/* the kubelet: no deletionTimestamp, a condition and the status reason */
	post(&k8s, "/_fake/pod",
	     "{\"status\":{\"phase\":\"Failed\",\"reason\":\"Terminated\","
	     "\"message\":\"Pod was terminated in response to imminent node shutdown.\","
	     "\"conditions\":[{\"type\":\"DisruptionTarget\",\"status\":\"True\","
	     "\"reason\":\"TerminationByKubelet\",\"message\":\"Pod was terminated in response to imminent node shutdown.\"}]}}");
	wait_state(RUN_PATH, "preempting", 5000);
	kill(p.pid, SIGTERM);
	cr_assert_eq(proc_wait(&p, 10000), 143);
	assert_states(RUN_PATH, "running,preempting,preempted");
	assert_reason_has(RUN_PATH, "node shutdown (TerminationByKubelet)");
	env_free(&env);
}

Test(watchdog, k8s_kueue_eviction_is_a_preemption)
{
	struct env env = { 0 };
	struct proc p;

	start_k8s(true);
	env_pod(&env, &k8s, "127.0.0.1", POD);
	watchdog(&p, &env, NULL, UNTIL_TERM(143));
	wait_watching(&k8s, 5000);
	wait_state(RUN_PATH, "running", 5000);
	/* Kueue: the Workload is evicted, the Job suspended, its pods deleted (no pod condition) */
	post(&k8s, "/_fake/workload",
	     "{\"status\":{\"conditions\":["
	     "{\"type\":\"Evicted\",\"status\":\"True\",\"reason\":\"Preempted\",\"message\":\"Preempted to accommodate a higher priority Workload\"},"
	     "{\"type\":\"Preempted\",\"status\":\"True\",\"reason\":\"InClusterQueue\","
	     "\"message\":\"Preempted to accommodate a workload (UID: 77, JobUID: 88) due to prioritization in the ClusterQueue\"}]}}");
	post(&k8s, "/_fake/job", "{\"spec\":{\"suspend\":true}}");
	post(&k8s, "/_fake/pod", "{\"metadata\":{\"deletionTimestamp\":\"2026-01-01T00:00:30Z\"}}");
	wait_state(RUN_PATH, "preempting", 5000);
	kill(p.pid, SIGTERM);
	cr_assert_eq(proc_wait(&p, 10000), 143);
	assert_states(RUN_PATH, "running,preempting,preempted");
	assert_reason_has(RUN_PATH,
			  "preempted by Kueue (Preempted): Preempted to accommodate a workload");
	env_free(&env);
}

Test(watchdog, k8s_sigterm_first_then_the_kubelet_says_why)
{
	struct env env = { 0 };
	struct proc p;

	start_k8s(false);
	env_pod(&env, &k8s, "127.0.0.1", POD);
	/* CMD takes a moment to stop, as a checkpoint would */
	watchdog(&p, &env, NULL, "trap 'kill $!; sleep 0.8; exit 143' TERM; sleep 20 & wait");
	wait_watching(&k8s, 5000);
	wait_state(RUN_PATH, "running", 5000);
	kill(p.pid, SIGTERM);
	wait_state(RUN_PATH, "preempting", 3000);
	/* the kubelet's status arrives late (research §1.3) */
	post(&k8s, "/_fake/pod",
	     "{\"status\":{\"conditions\":[{\"type\":\"DisruptionTarget\",\"status\":\"True\","
	     "\"reason\":\"TerminationByKubelet\",\"message\":\"The node was low on resource: memory.\"}]}}");
	cr_assert_eq(proc_wait(&p, 10000), 143);
	assert_states(RUN_PATH, "running,preempting,preempted");
	assert_reason_has(RUN_PATH,
			  "terminated by the kubelet (node pressure) (TerminationByKubelet)");
	env_free(&env);
}

/* The fake's log: how many requests had this auth result ("ok", "bad"). */
static int count_auth(struct fake *f, const char *auth)
{
	struct json_object *st = emu_get(&f->ctl, "/_fake/state");
	struct json_object *reqs = wbs_json_path(st, "requests");
	int n = 0;

	for (size_t i = 0; reqs && i < json_object_array_length(reqs); i++)
		if (strcmp(wbs_json_path_string(json_object_array_get_idx(reqs, i), "auth"),
			   auth) == 0)
			n++;
	json_object_put(st);
	return n;
}

Test(watchdog, k8s_token_is_read_again_and_401_retried)
{
	struct env env = { 0 };
	struct proc p;
	char token[128];
	long deadline;

	start_k8s(false);
	snprintf(token, sizeof(token), "%s/token", tmp);
	env_pod(&env, &k8s, "127.0.0.1", POD);
	watchdog(&p, &env, NULL, UNTIL_TERM(143));
	wait_watching(&k8s, 5000);
	cr_assert_eq(count_auth(&k8s, "bad"), 0);
	/* the API server stops taking token-1 and ends the watch: 401 until the kubelet rotates */
	post(&k8s, "/_fake/tokens", "{\"tokens\":[\"token-2\"],\"close_watches\":true}");
	deadline = now_ms() + 5000;
	while (count_auth(&k8s, "bad") < 2 && now_ms() < deadline)
		sleep_ms(30);
	cr_assert_geq(count_auth(&k8s, "bad"), 2, "no 401 then retry");
	write_file(token, "token-2\n");
	wait_watching(&k8s, 8000);
	post(&k8s, "/_fake/pod", preempt_patch);
	wait_state(RUN_PATH, "preempting", 5000);
	kill(p.pid, SIGTERM);
	cr_assert_eq(proc_wait(&p, 10000), 143);
	assert_states(RUN_PATH, "running,preempting,preempted");
	env_free(&env);
}

Test(watchdog, k8s_watch_resumes_after_410_gone)
{
	struct env env = { 0 };
	struct proc p;

	start_k8s(false);
	env_pod(&env, &k8s, "127.0.0.1", POD);
	watchdog(&p, &env, NULL, UNTIL_TERM(143));
	wait_watching(&k8s, 5000);
	/* the history is gone: resuming from the old resourceVersion gets ERROR 410 */
	post(&k8s, "/_fake/expire", "{}");
	sleep_ms(300);
	wait_watching(&k8s, 5000);
	post(&k8s, "/_fake/pod", preempt_patch);
	wait_state(RUN_PATH, "preempting", 5000);
	kill(p.pid, SIGTERM);
	cr_assert_eq(proc_wait(&p, 10000), 143);
	assert_states(RUN_PATH, "running,preempting,preempted");
	env_free(&env);
}

Test(watchdog, k8s_ipv6_service_host_is_bracketed)
{
	struct env env = { 0 };
	struct proc p;

	if (!k8s_start(&k8s, "::1", POD, false))
		cr_skip_test("no IPv6 loopback here: %s", k8s.line);
	env_pod(&env, &k8s, "::1", POD);
	watchdog(&p, &env, NULL, UNTIL_TERM(143));
	wait_watching(&k8s, 5000);
	post(&k8s, "/_fake/pod", preempt_patch);
	wait_state(RUN_PATH, "preempting", 5000);
	kill(p.pid, SIGTERM);
	cr_assert_eq(proc_wait(&p, 10000), 143);
	assert_states(RUN_PATH, "running,preempting,preempted");
	env_free(&env);
}

/* ---- cloud notices ----------------------------------------------------- */

/* Until the fake has answered @n metadata requests. */
static void wait_imds_requests(int n)
{
	long deadline = now_ms() + 5000;

	while (now_ms() < deadline) {
		struct json_object *st = emu_get(&imds.ctl, "/_fake/state");
		int got = (int)json_object_array_length(wbs_json_path(st, "requests"));

		json_object_put(st);
		if (got >= n)
			return;
		sleep_ms(30);
	}
	cr_assert_fail("the watchdog never asked the metadata service");
}

static void spot_notice(const char *cloud, const char *var, const char *path, const char *json,
			const char *reason)
{
	struct env env = { 0 };
	struct proc p;

	imds_start();
	env_add(&env, "WANDB_RUN_ID=r1");
	env_add(&env, "%s=%s", var, imds.ctl.url);
	watchdog(&p, &env, ARGS("--cloud", cloud, "--cloud-interval", "0.2"), UNTIL_TERM(143));
	wait_state("emu-user/proj/r1", "running", 5000);
	wait_imds_requests(2);
	post(&imds, path, json);
	/* the notice alone marks the run, before any SIGTERM */
	wait_state("emu-user/proj/r1", "preempting", 5000);
	kill(p.pid, SIGTERM);
	cr_assert_eq(proc_wait(&p, 10000), 143);
	assert_states("emu-user/proj/r1", "running,preempting,preempted");
	assert_reason_has("emu-user/proj/r1", reason);
	env_free(&env);
}

Test(watchdog, aws_spot_notice_before_sigterm)
{
	spot_notice("aws", "WBSCHED_AWS_METADATA_URL", "/_fake/aws",
		    "{\"action\":\"terminate\",\"time\":\"2026-01-01T00:02:00Z\"}",
		    "AWS spot interruption notice: terminate at 2026-01-01T00:02:00Z");
}

Test(watchdog, gce_preemption_notice_before_sigterm)
{
	spot_notice("gce", "WBSCHED_GCE_METADATA_URL", "/_fake/gce", "{\"preempted\":true}",
		    "GCE preemption notice");
}

Test(watchdog, azure_preempt_event_before_sigterm)
{
	spot_notice("azure", "WBSCHED_AZURE_METADATA_URL", "/_fake/azure",
		    "{\"events\":[{\"EventId\":\"602d9444-d2cd-49c7-8624-8643e7171297\","
		    "\"EventType\":\"Preempt\",\"ResourceType\":\"VirtualMachine\","
		    "\"Resources\":[\"vm-spot-1\"],\"EventStatus\":\"Scheduled\","
		    "\"NotBefore\":\"Mon, 19 Sep 2016 18:29:47 GMT\",\"Description\":\"\","
		    "\"EventSource\":\"Platform\",\"DurationInSeconds\":-1}]}",
		    "Azure scheduled event Preempt (602d9444-d2cd-49c7-8624-8643e7171297)");
}

Test(watchdog, cmd_that_completes_after_a_notice_is_finished)
{
	struct env env = { 0 };
	struct proc p;
	char go[128];

	imds_start();
	snprintf(go, sizeof(go), "%s/go", tmp);
	env_add(&env, "WANDB_RUN_ID=r1");
	env_add(&env, "WBSCHED_AWS_METADATA_URL=%s", imds.ctl.url);
	env_add(&env, "GO=%s", go);
	/* CMD finishes its work on its own, with no SIGTERM */
	watchdog(&p, &env, ARGS("--cloud", "aws", "--cloud-interval", "0.2"),
		 "while ! test -e \"$GO\"; do sleep 0.05; done; exit 0");
	wait_state("emu-user/proj/r1", "running", 5000);
	post(&imds, "/_fake/aws", "{\"action\":\"stop\"}");
	wait_state("emu-user/proj/r1", "preempting", 5000);
	write_file(go, "");
	cr_assert_eq(proc_wait(&p, 10000), 0);
	assert_states("emu-user/proj/r1", "running,preempting,finished");
	env_free(&env);
}

/* ---- the hooks: preStop and a dependent Job ---------------------------- */

Test(watchdog, prestop_is_idempotent_and_never_moves_an_ended_run)
{
	struct cli_result r;

	CLI(&emu, &r, "--project", PROJECT, "start", "r1");
	cli_result_release(&r);
	for (int i = 0; i < 2; i++) {
		CLI(&emu, &r, "--project", PROJECT, "preempting", "r1");
		cr_assert_eq(r.status, 0, "%s", r.err);
		cli_result_release(&r);
	}
	assert_states("emu-user/proj/r1", "running,preempting");
	CLI(&emu, &r, "--project", PROJECT, "finish", "--exit-code", "1", "r1");
	cli_result_release(&r);
	CLI(&emu, &r, "--project", PROJECT, "preempting", "r1");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cli_result_release(&r);
	assert_states("emu-user/proj/r1", "running,preempting,preempted");
}

Test(watchdog, prestop_with_wandb_down_is_bounded)
{
	const char *const env[] = { "WBSCHED_BUDGET_MS=1500", NULL };
	struct cli_result r;
	char spool[128];

	CLI(&emu, &r, "--project", PROJECT, "start", "r1");
	cli_result_release(&r);
	emu_fault(&emu, "{\"blackhole\":true,\"times\":-1}");
	snprintf(spool, sizeof(spool), "--set=spool_dir=%s/spool", tmp);
	cli_run(&emu, env, ARGS("--project", PROJECT, spool, "preempting", "r1"), &r);
	/* 0: kept for later delivery; 69: W&B unavailable and not kept */
	cr_assert(r.status == 0 || r.status == 69, "exit %d: %s", r.status, r.err);
	cr_assert_lt(r.elapsed_ms, 1500 + 1500, "preStop took %ld ms", r.elapsed_ms);
	cli_result_release(&r);
}

/*
 * Needs the durable spool: the preStop's change, kept while W&B is down, is
 * delivered by `wbsched flush` once W&B is back.
 */
Test(watchdog, spool_prestop_with_wandb_down_loses_nothing)
{
	const char *const env[] = { "WBSCHED_BUDGET_MS=1500", NULL };
	struct cli_result r;
	char spool[128];

	snprintf(spool, sizeof(spool), "--set=spool_dir=%s/spool", tmp);
	CLI(&emu, &r, "--project", PROJECT, "start", "r1");
	cli_result_release(&r);
	emu_fault(&emu, "{\"blackhole\":true,\"times\":-1}");
	cli_run(&emu, env, ARGS("--project", PROJECT, spool, "preempting", "r1"), &r);
	cr_assert_eq(r.status, 0, "preempting with W&B down: exit %d: %s", r.status, r.err);
	cli_result_release(&r);
	clear_faults();
	cli_run(&emu, env, ARGS("--project", PROJECT, spool, "flush"), &r);
	cr_assert_eq(r.status, 0, "flush: exit %d: %s", r.status, r.err);
	cli_result_release(&r);
	assert_states("emu-user/proj/r1", "running,preempting");
}

static void dependent_job(const char *script, int want_status, int want_wait, const char *seen)
{
	struct env env = { 0 };
	struct proc job, waiter;

	/* the dependent Job's init container starts first and waits */
	spawn(&waiter, NULL,
	      ARGS("--project", PROJECT, "wait", "r1", "--interval", "0.2", "--timeout", "20"));
	sleep_ms(500);
	cr_assert_eq(waitpid(waiter.pid, NULL, WNOHANG), 0, "wait did not wait");
	env_add(&env, "WANDB_RUN_ID=r1");
	watchdog(&job, &env, NULL, script);
	cr_assert_eq(proc_wait(&job, 10000), want_status);
	cr_assert_eq(proc_wait(&waiter, 10000), want_wait);
	/* its progress: the run was not there, then it ended */
	cr_assert(stderr_has(&waiter, "emu-user/proj/r1: not-started"));
	cr_assert(stderr_has(&waiter, seen));
	env_free(&env);
}

Test(watchdog, dependent_job_waits_for_a_run_that_finishes)
{
	dependent_job("sleep 0.5; exit 0", 0, 0, "emu-user/proj/r1: finished");
	assert_states("emu-user/proj/r1", "running,finished");
}

Test(watchdog, dependent_job_fails_when_the_run_fails)
{
	dependent_job("sleep 0.5; exit 2", 2, 1, "emu-user/proj/r1: failed");
	assert_states("emu-user/proj/r1", "running,failed");
}
