/*
 * Integration test harness: starts the W&B emulator, runs the real wbsched
 * binary against it over loopback HTTP, and reads the emulator's control API.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
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

#include "harness.h"

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void emu_start(struct emu *e)
{
	int out[2];
	char line[256];
	size_t len = 0;
	long deadline = now_ms() + 20000;

	memset(e, 0, sizeof(*e));
	/* A fixed-looking but per-process key: 40+ characters, as W&B's. */
	snprintf(e->key, sizeof(e->key), "test%036d", (int)getpid());
	snprintf(e->home, sizeof(e->home), "/tmp/wbs-home-XXXXXX");
	cr_assert_not_null(mkdtemp(e->home));
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	e->pid = fork();
	cr_assert_geq(e->pid, 0);
	if (e->pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		execl(WBS_NODE, "node", WBS_EMULATOR, "--api-key", e->key, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	/* The first line is "wbsched-emulator listening on http://127.0.0.1:PORT". */
	while (len < sizeof(line) - 1 && now_ms() < deadline) {
		struct pollfd p = { .fd = out[0], .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 200) <= 0)
			continue;
		n = read(out[0], line + len, 1);
		if (n <= 0)
			break;
		if (line[len] == '\n')
			break;
		len++;
	}
	line[len] = '\0';
	close(out[0]);
	cr_assert_eq(sscanf(line, "wbsched-emulator listening on http://127.0.0.1:%d", &e->port),
		     1, "emulator did not start: '%s'", line);
	snprintf(e->url, sizeof(e->url), "http://127.0.0.1:%d", e->port);
}

void emu_stop(struct emu *e)
{
	char cmd[128];

	if (e->pid > 0) {
		kill(e->pid, SIGTERM);
		waitpid(e->pid, NULL, 0);
		e->pid = 0;
	}
	if (e->home[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->home);
		(void)!system(cmd);
		e->home[0] = '\0';
	}
}

struct buf {
	char *data;
	size_t len;
};

static size_t buf_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct buf *b = userdata;
	size_t n = size * nmemb;
	char *p = realloc(b->data, b->len + n + 1);

	if (!p)
		return 0;
	b->data = p;
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

static struct json_object *control(struct emu *e, const char *path, const char *post)
{
	CURL *c = curl_easy_init();
	struct buf b = { 0 };
	char url[512];
	struct json_object *o;
	CURLcode rc;

	cr_assert_not_null(c);
	snprintf(url, sizeof(url), "%s%s", e->url, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, buf_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
	if (post)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
	rc = curl_easy_perform(c);
	curl_easy_cleanup(c);
	cr_assert_eq(rc, CURLE_OK, "control request %s failed: %s", path, curl_easy_strerror(rc));
	o = json_tokener_parse(b.data ? b.data : "null");
	free(b.data);
	return o;
}

struct json_object *emu_get(struct emu *e, const char *path)
{
	return control(e, path, NULL);
}

struct json_object *emu_post(struct emu *e, const char *path, const char *json)
{
	return control(e, path, json ? json : "{}");
}

static struct json_object *get_run(struct emu *e, const char *run_path)
{
	char path[512];

	snprintf(path, sizeof(path), "/_emu/run?path=%s", run_path);
	return emu_get(e, path);
}

char *emu_run_state(struct emu *e, const char *run_path)
{
	struct json_object *run = get_run(e, run_path), *state;
	char *s = NULL;

	if (run && json_object_object_get_ex(run, "state", &state))
		s = strdup(json_object_get_string(state));
	json_object_put(run);
	return s;
}

char *emu_run_states(struct emu *e, const char *run_path)
{
	struct json_object *run = get_run(e, run_path), *states;
	char *s = calloc(1, 1024);
	size_t used = 0;

	cr_assert_not_null(s);
	if (run && json_object_object_get_ex(run, "states", &states)) {
		for (size_t i = 0; i < json_object_array_length(states); i++) {
			struct json_object *st, *item = json_object_array_get_idx(states, i);

			json_object_object_get_ex(item, "state", &st);
			used += (size_t)snprintf(s + used, 1024 - used, "%s%s", i ? "," : "",
						 json_object_get_string(st));
		}
	}
	json_object_put(run);
	return s;
}

int emu_request_count(struct emu *e)
{
	struct json_object *o = emu_get(e, "/_emu/requests"), *reqs;
	int n = -1;

	if (o && json_object_object_get_ex(o, "requests", &reqs))
		n = (int)json_object_array_length(reqs);
	json_object_put(o);
	return n;
}

void emu_fault(struct emu *e, const char *fault_json)
{
	char body[1024];

	snprintf(body, sizeof(body), "{\"faults\":[%s]}", fault_json);
	json_object_put(emu_post(e, "/_emu/faults", body));
}

void emu_clear_faults(struct emu *e)
{
	CURL *c = curl_easy_init();
	char url[256];

	cr_assert_not_null(c);
	snprintf(url, sizeof(url), "%s/_emu/faults", e->url);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, buf_write);
	{
		struct buf b = { 0 };

		curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
		cr_assert_eq(curl_easy_perform(c), CURLE_OK);
		free(b.data);
	}
	curl_easy_cleanup(c);
}

/* Reads both pipes until the child closes them (or 60 s pass). */
static void drain(int out, int err, struct buf *bo, struct buf *be, pid_t pid)
{
	struct pollfd p[2] = { { .fd = out, .events = POLLIN }, { .fd = err, .events = POLLIN } };
	long deadline = now_ms() + 60000;
	int open_fds = 2;

	while (open_fds > 0) {
		if (now_ms() > deadline) {
			kill(pid, SIGKILL);
			break;
		}
		if (poll(p, 2, 500) <= 0)
			continue;
		for (int i = 0; i < 2; i++) {
			char chunk[4096];
			ssize_t n;

			if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP)))
				continue;
			n = read(p[i].fd, chunk, sizeof(chunk));
			if (n <= 0) {
				p[i].fd = -1;
				open_fds--;
				continue;
			}
			buf_write(chunk, 1, (size_t)n, i == 0 ? bo : be);
		}
	}
}

void cli_run(struct emu *e, const char *const *env, const char *const *argv,
	     struct cli_result *ret)
{
	int out[2], err[2], status;
	struct buf bo = { 0 }, be = { 0 };
	long start = now_ms();
	pid_t pid;

	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(err, O_CLOEXEC), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		const char *args[64] = { "wbsched" };
		size_t n = 1;
		char base_url[96], key[80], home[96], spool[128];

		dup2(out[1], STDOUT_FILENO);
		dup2(err[1], STDERR_FILENO);
		clearenv();
		snprintf(base_url, sizeof(base_url), "WANDB_BASE_URL=%s", e->url);
		snprintf(key, sizeof(key), "WANDB_API_KEY=%s", e->key);
		snprintf(home, sizeof(home), "HOME=%s", e->home);
		putenv(base_url);
		putenv(key);
		putenv(home);
		/* each test its own spool, so tests never replay each other's changes */
		snprintf(spool, sizeof(spool), "WBSCHED_SPOOL_DIR=%s/spool", e->home);
		putenv(spool);
		putenv((char *)"PATH=/usr/bin:/bin");
		for (; env && *env; env++) {
			const char *eq = strchr(*env, '=');

			if (eq && eq[1] == '\0') {
				char name[128];

				snprintf(name, sizeof(name), "%.*s", (int)(eq - *env), *env);
				unsetenv(name);
			} else {
				putenv((char *)*env);
			}
		}
		for (; *argv && n < 63; argv++)
			args[n++] = *argv;
		args[n] = NULL;
		execv(WBS_BINARY, (char *const *)args);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	drain(out[0], err[0], &bo, &be, pid);
	close(out[0]);
	close(err[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	ret->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	ret->out = bo.data ? bo.data : strdup("");
	ret->err = be.data ? be.data : strdup("");
	ret->elapsed_ms = now_ms() - start;
	/* A sanitizer build of wbsched reports into the stderr we captured. */
	cr_assert_null(strstr(ret->err, "Sanitizer"), "wbsched: %s", ret->err);
	cr_assert_null(strstr(ret->err, "runtime error:"), "wbsched: %s", ret->err);
}

void cli_result_release(struct cli_result *r)
{
	free(r->out);
	free(r->err);
	memset(r, 0, sizeof(*r));
}
