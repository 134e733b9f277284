/*
 * The real-cluster harness: a throw-away Slurm cluster per test with the
 * wbsched plugin in its plugstack, and helpers to drive jobs and read what
 * Slurm and the W&B emulator recorded.
 */
#include <errno.h>
#include <pwd.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <json-c/json.h>

#include "slurm_harness.h"

extern char **environ;

long slurm_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static char *vfmt(const char *fmt, va_list ap)
{
	char *s = NULL;

	cr_assert_geq(vasprintf(&s, fmt, ap), 0);
	return s;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
	va_list ap;
	char *s;

	va_start(ap, f);
	s = vfmt(f, ap);
	va_end(ap);
	return s;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "re");
	char *data = NULL;
	size_t len = 0, cap = 0, n;

	if (!f)
		return NULL;
	do {
		if (cap - len < 4096) {
			cap = cap ? cap * 2 : 8192;
			data = realloc(data, cap + 1);
			cr_assert_not_null(data);
		}
		n = fread(data + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	data[len] = '\0';
	return data;
}

/* The test runs slurm commands: nothing from a surrounding job or W&B setup. */
static void clean_environment(const char *conf)
{
	for (;;) {
		bool removed = false;

		for (char **e = environ; *e; e++) {
			static const char *const prefixes[] = { "SLURM_", "SBATCH_", "SALLOC_",
								"SRUN_",  "WANDB_",  "WBSCHED_" };

			for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
				if (strncmp(*e, prefixes[i], strlen(prefixes[i])) == 0) {
					char name[256];

					snprintf(name, sizeof(name), "%.*s",
						 (int)(strcspn(*e, "=")), *e);
					unsetenv(name);
					removed = true;
					break;
				}
			}
			if (removed)
				break;
		}
		if (!removed)
			break;
	}
	setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
	if (conf)
		setenv("SLURM_CONF", conf, 1);
}

/* ---- commands ------------------------------------------------------------ */

void sh_run(struct sh_result *r, int timeout_s, const char *f, ...)
{
	va_list ap;
	char *cmd;
	int out[2], status = 0;
	char *data = NULL;
	size_t len = 0;
	long start = slurm_now_ms(), deadline = start + timeout_s * 1000L, exited_at = 0;
	bool done = false, timed_out = false;
	pid_t pid;

	va_start(ap, f);
	cmd = vfmt(f, ap);
	va_end(ap);
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		setpgid(0, 0);
		dup2(null, STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		dup2(out[1], STDERR_FILENO);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	(void)fcntl(out[0], F_SETFL, O_NONBLOCK);
	for (;;) {
		struct pollfd p = { .fd = out[0], .events = POLLIN };
		long now = slurm_now_ms();

		if (!done && waitpid(pid, &status, WNOHANG) == pid) {
			done = true;
			exited_at = now;
		}
		/* After the exit, take what is buffered; do not wait for a detached child. */
		if (done && (now - exited_at > 300 || out[0] < 0))
			break;
		if (!done && now > deadline) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			done = true;
			timed_out = true;
			exited_at = slurm_now_ms();
			continue;
		}
		if (out[0] < 0) {
			sleep_ms(20);
			continue;
		}
		if (poll(&p, 1, 20) <= 0)
			continue;
		for (;;) {
			char chunk[4096];
			ssize_t n = read(out[0], chunk, sizeof(chunk));

			if (n > 0) {
				data = realloc(data, len + (size_t)n + 1);
				cr_assert_not_null(data);
				memcpy(data + len, chunk, (size_t)n);
				len += (size_t)n;
				data[len] = '\0';
				continue;
			}
			if (n == 0) {
				close(out[0]);
				out[0] = -1;
			}
			break;
		}
	}
	if (out[0] >= 0)
		close(out[0]);
	r->out = data ? data : strdup("");
	r->elapsed_ms = exited_at - start;
	if (timed_out)
		r->status = -1;
	else
		r->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	free(cmd);
}

void sh_release(struct sh_result *r)
{
	free(r->out);
	memset(r, 0, sizeof(*r));
}

char *sh_ok(const char *f, ...)
{
	struct sh_result r;
	va_list ap;
	char *cmd;

	va_start(ap, f);
	cmd = vfmt(f, ap);
	va_end(ap);
	sh_run(&r, 120, "%s", cmd);
	cr_assert_eq(r.status, 0, "'%s' exited %d: %s", cmd, r.status, r.out);
	free(cmd);
	return r.out;
}

/* ---- the cluster ----------------------------------------------------------- */

/* Runs down.sh and stops the emulator if the test process dies without slurm_down(). */
static void guard_start(struct slurm *s)
{
	int p[2];
	pid_t emu_pid = s->emu ? s->emu->pid : 0;
	char *cleanup = fmt("echo 'test process gone: stopping the cluster'; '%s/down.sh' '%s'",
			    WBS_SLURM_SCRIPTS, s->dir);

	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	s->guard_pid = fork();
	cr_assert_geq(s->guard_pid, 0);
	if (s->guard_pid == 0) {
		int null = open("/dev/null", O_RDWR);
		char *log_path = fmt("%s/guard.log", s->base);
		int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
		sigset_t none;
		char c;
		ssize_t n;

		/* nothing inherited from the test process may stop the clean-up */
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		for (int sig = 1; sig < NSIG; sig++)
			signal(sig, SIG_DFL);
		setsid();
		dup2(null, STDIN_FILENO);
		dup2(log >= 0 ? log : null, STDOUT_FILENO);
		dup2(log >= 0 ? log : null, STDERR_FILENO);
		dup2(p[0], 3);
		close_range(4, ~0U, 0);
		while ((n = read(3, &c, 1)) < 0 && errno == EINTR)
			;
		if (n == 1)
			_exit(0); /* slurm_down() did it */
		if (emu_pid > 0)
			kill(emu_pid, SIGTERM);
		if (!getenv("WBS_SLURM_KEEP")) {
			char *full = fmt("%s; rm -rf '%s'", cleanup, s->base);

			execl("/bin/sh", "sh", "-c", full, (char *)NULL);
		}
		execl("/bin/sh", "sh", "-c", cleanup, (char *)NULL);
		_exit(127);
	}
	close(p[0]);
	s->guard_fd = p[1];
	free(cleanup);
}

static void write_text(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	cr_assert_geq(fd, 0, "cannot create %s: %s", path, strerror(errno));
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	cr_assert_eq(fchmod(fd, mode), 0);
	close(fd);
}

/*
 * The plugin and the wbsched it runs: the build tree's, or other files named
 * by WBS_TEST_PLUGIN and WBS_TEST_WBSCHED (scripts/package-test.sh points
 * them at the installed package).
 */
const char *slurm_test_plugin(void)
{
	const char *v = getenv("WBS_TEST_PLUGIN");

	return v && *v ? v : WBS_PLUGIN;
}

const char *slurm_test_wbsched(void)
{
	const char *v = getenv("WBS_TEST_WBSCHED");

	return v && *v ? v : WBS_WBSCHED;
}

void slurm_up(struct slurm *s, struct emu *emu, const struct slurm_opts *o)
{
	static const struct slurm_opts none = { 0 };
	struct sh_result r;
	char *line;
	long t0;

	memset(s, 0, sizeof(*s));
	s->guard_fd = -1;
	if (!o)
		o = &none;
	if (geteuid() != 0)
		cr_skip_test("the Slurm tests start munged, slurmctld and slurmd: run them as root");
	if (access("/usr/sbin/slurmd", X_OK) != 0 || access("/usr/sbin/slurmctld", X_OK) != 0 ||
	    access("/usr/sbin/munged", X_OK) != 0 || access("/usr/bin/sbatch", X_OK) != 0)
		cr_skip_test("Slurm is not installed (apt-get install munge slurmctld slurmd "
			     "slurm-client)");
	s->emu = emu;
	clean_environment(NULL);

	snprintf(s->base, sizeof(s->base), "/tmp/wbs-slurmtest-XXXXXX");
	cr_assert_not_null(mkdtemp(s->base));
	/* The test user must traverse it to reach the cluster. */
	cr_assert_eq(chmod(s->base, 0755), 0);
	snprintf(s->dir, sizeof(s->dir), "%s/c", s->base);
	snprintf(s->conf, sizeof(s->conf), "%s/etc/slurm.conf", s->dir);
	snprintf(s->jobs, sizeof(s->jobs), "%s/jobs", s->dir);
	snprintf(s->key_file, sizeof(s->key_file), "%s/key", s->base);
	snprintf(s->plugstack, sizeof(s->plugstack), "%s/plugstack.conf", s->base);

	line = fmt("%s\n", emu->key);
	write_text(s->key_file, line, 0600);
	free(line);
	/*
	 * A spool of the test's own: the default one is shared by every wbsched
	 * on the machine, and so is its circuit breaker.  01777 as a site makes
	 * it, so that each user can keep a queue in it.
	 */
	snprintf(s->spool_dir, sizeof(s->spool_dir), "%s/spool", s->base);
	cr_assert_eq(mkdir(s->spool_dir, 0755), 0);
	cr_assert_eq(chmod(s->spool_dir, 01777), 0);
	snprintf(s->spool_env, sizeof(s->spool_env), "WBSCHED_SPOOL_DIR=%s", s->spool_dir);
	snprintf(s->args, sizeof(s->args), "base_url=%s project=%s wbsched_path=%s spool_dir=%s%s%s%s%s",
		 o->base_url ? o->base_url : emu->url, SLURM_PROJECT, slurm_test_wbsched(),
		 s->spool_dir,
		 o->no_key_file ? "" : " api_key_file=", o->no_key_file ? "" : s->key_file,
		 o->plugin_args ? " " : "", o->plugin_args ? o->plugin_args : "");
	cr_assert_eq(access(slurm_test_plugin(), R_OK), 0, "no plugin %s", slurm_test_plugin());
	cr_assert_eq(access(slurm_test_wbsched(), X_OK), 0, "no wbsched %s", slurm_test_wbsched());
	line = fmt("optional %s %s\n", slurm_test_plugin(), s->args);
	write_text(s->plugstack, line, 0644);
	free(line);

	t0 = slurm_now_ms();
	sh_run(&r, 120, "env WBS_SLURM_PLUGSTACK='%s' %s%s %s%s '%s/up.sh' '%s'", s->plugstack,
	       o->preempt ? "WBS_SLURM_PREEMPT=" : "", o->preempt ? o->preempt : "",
	       o->up_env ? o->up_env : "", o->up_env ? " " : "", WBS_SLURM_SCRIPTS, s->dir);
	cr_assert_eq(r.status, 0, "up.sh failed (%d): %s", r.status, r.out);
	sh_release(&r);
	s->up = true;
	clean_environment(s->conf);
	guard_start(s);
	cr_log_info("cluster %s up in %ld ms (plugin %s, wbsched %s)", s->dir,
		    slurm_now_ms() - t0, slurm_test_plugin(), slurm_test_wbsched());

	if (o->test_user) {
		/* useradd and the chmods: one test at a time */
		sh_run(&r, 60, "flock /tmp/wbs-slurm-user.lock '%s/ensure-user.sh' '%s'",
		       WBS_SLURM_SCRIPTS, s->dir);
		cr_assert_eq(r.status, 0, "ensure-user.sh failed: %s", r.out);
		sh_release(&r);
	}
}

void slurm_down(struct slurm *s)
{
	struct sh_result r;

	if (s->up) {
		s->up = false;
		sh_run(&r, 120, "'%s/down.sh' '%s'", WBS_SLURM_SCRIPTS, s->dir);
		if (r.status != 0)
			cr_log_warn("down.sh exited %d: %s", r.status, r.out);
		sh_release(&r);
	}
	if (s->base[0] && !getenv("WBS_SLURM_KEEP")) {
		sh_run(&r, 60, "rm -rf '%s'", s->base);
		sh_release(&r);
	} else if (s->base[0]) {
		cr_log_info("kept %s (WBS_SLURM_KEEP)", s->base);
	}
	s->base[0] = '\0';
	if (s->guard_fd >= 0) {
		(void)!write(s->guard_fd, "x", 1);
		close(s->guard_fd);
		s->guard_fd = -1;
		waitpid(s->guard_pid, NULL, 0);
	}
}

/* ---- jobs ------------------------------------------------------------------ */

void slurm_submit_prefix(struct slurm *s, const struct submit *how, char *buf, size_t size)
{
	char key[96] = "";

	if (!how->no_key)
		snprintf(key, sizeof(key), " WANDB_API_KEY=%s", s->emu->key);
	if (how->user) {
		struct passwd *pw = getpwnam(how->user);

		cr_assert_not_null(pw, "no user %s", how->user);
		snprintf(buf, size,
			 "cd '%s' && runuser -u %s -- env -i PATH=/usr/bin:/bin HOME='%s' "
			 "USER=%s LOGNAME=%s SLURM_CONF='%s'%s %s ",
			 s->jobs, how->user, pw->pw_dir, how->user, how->user, s->conf, key,
			 how->env ? how->env : "");
	}
	else
		snprintf(buf, size, "cd '%s' && env%s %s ", s->jobs, key, how->env ? how->env : "");
}

static unsigned vsbatch(struct slurm *s, const struct submit *how, const char *f, va_list ap)
{
	char prefix[1024];
	char *args = vfmt(f, ap);
	struct sh_result r;
	unsigned id = 0;

	slurm_submit_prefix(s, how, prefix, sizeof(prefix));
	sh_run(&r, 60, "%ssbatch --parsable -o '%s/job-%%j.out' %s", prefix, s->jobs, args);
	cr_assert_eq(r.status, 0, "sbatch %s failed (%d): %s", args, r.status, r.out);
	/* --parsable prints "ID" or "ID;cluster" on a line of its own. */
	for (const char *line = r.out; *line; line += strcspn(line, "\n") + (line[strcspn(line, "\n")] != 0)) {
		size_t digits = strspn(line, "0123456789");

		if (digits > 0 && (line[digits] == '\n' || line[digits] == ';' || !line[digits])) {
			id = (unsigned)strtoul(line, NULL, 10);
			break;
		}
	}
	cr_assert_gt(id, 0u, "no job id from sbatch %s: %s", args, r.out);
	if (how->elapsed_ms)
		*how->elapsed_ms = r.elapsed_ms;
	sh_release(&r);
	free(args);
	return id;
}

unsigned slurm_sbatch(struct slurm *s, const char *f, ...)
{
	static const struct submit root = { 0 };
	va_list ap;
	unsigned id;

	va_start(ap, f);
	id = vsbatch(s, &root, f, ap);
	va_end(ap);
	return id;
}

unsigned slurm_sbatch_ex(struct slurm *s, const struct submit *how, const char *f, ...)
{
	va_list ap;
	unsigned id;

	va_start(ap, f);
	id = vsbatch(s, how, f, ap);
	va_end(ap);
	return id;
}

const char *slurm_script(struct slurm *s, const char *name, const char *body)
{
	static char paths[8][256];
	static unsigned next;
	char *path = paths[next++ % 8];

	snprintf(path, sizeof(paths[0]), "%s/%s", s->jobs, name);
	write_text(path, body, 0755);
	return path;
}

char *slurm_read(struct slurm *s, const char *name)
{
	char *path = fmt("%s/%s", s->jobs, name);
	char *text = read_file(path);

	free(path);
	return text;
}

char *job_output(struct slurm *s, unsigned job_id)
{
	char name[64];
	char *text;

	snprintf(name, sizeof(name), "job-%u.out", job_id);
	text = slurm_read(s, name);
	return text ? text : strdup("");
}

char *job_field(struct slurm *s, const char *job, const char *field)
{
	struct sh_result r;
	char *v = NULL, *p, *eol;
	size_t flen = strlen(field);

	(void)s;
	sh_run(&r, 30, "scontrol -o show job %s 2>/dev/null | head -n1", job);
	eol = strchr(r.out, '\n');
	if (eol)
		*eol = '\0';
	for (p = r.out; p && *p; p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL) {
		if (strncmp(p, field, flen) == 0 && p[flen] == '=') {
			v = strndup(p + flen + 1, strcspn(p + flen + 1, " "));
			break;
		}
	}
	sh_release(&r);
	return v;
}

static char *job_line(const char *spec)
{
	struct sh_result r;

	sh_run(&r, 30, "scontrol -o show job %s 2>&1", spec);
	return r.out;
}

static bool one_of(const char *value, const char *alternatives)
{
	size_t n = strlen(value);

	for (const char *p = alternatives; p && *p;) {
		size_t len = strcspn(p, "|");

		if (len == n && strncmp(p, value, n) == 0)
			return true;
		p += len;
		if (*p == '|')
			p++;
	}
	return false;
}

char *wait_spec_state(struct slurm *s, const char *spec, const char *states, int timeout_s)
{
	long deadline = slurm_now_ms() + timeout_s * 1000L;

	for (;;) {
		char *st = job_field(s, spec, "JobState");

		if (st && one_of(st, states))
			return st;
		if (slurm_now_ms() > deadline) {
			char *line = job_line(spec);

			cr_assert_fail("job %s: state %s after %d s, wanted %s: %s", spec,
				       st ? st : "(none)", timeout_s, states, line);
		}
		free(st);
		sleep_ms(200);
	}
}

char *wait_job_state(struct slurm *s, unsigned job_id, const char *states, int timeout_s)
{
	char id[16];

	snprintf(id, sizeof(id), "%u", job_id);
	return wait_spec_state(s, id, states, timeout_s);
}

void wait_job_field(struct slurm *s, unsigned job_id, const char *field, const char *value,
		    int timeout_s)
{
	long deadline = slurm_now_ms() + timeout_s * 1000L;
	char id[16];

	snprintf(id, sizeof(id), "%u", job_id);
	for (;;) {
		char *v = job_field(s, id, field);
		bool ok = v && strcmp(v, value) == 0;

		free(v);
		if (ok)
			return;
		if (slurm_now_ms() > deadline)
			cr_assert_fail("job %u: %s is not %s after %d s: %s", job_id, field, value,
				       timeout_s, job_line(id));
		sleep_ms(200);
	}
}

void assert_node_idle(struct slurm *s, int timeout_s)
{
	long deadline = slurm_now_ms() + timeout_s * 1000L;

	(void)s;
	for (;;) {
		char *st = sh_ok("sinfo -h -N -o '%%T %%E' | head -n1");

		st[strcspn(st, "\n")] = '\0';
		cr_assert_null(strstr(st, "drain"), "the node is drained: %s", st);
		cr_assert_null(strstr(st, "down"), "the node is down: %s", st);
		if (strncmp(st, "idle ", 5) == 0) {
			free(st);
			return;
		}
		if (slurm_now_ms() > deadline)
			cr_assert_fail("the node is not idle after %d s: %s", timeout_s, st);
		free(st);
		sleep_ms(200);
	}
}

void wait_file_contains(struct slurm *s, const char *name, const char *needle, int timeout_s)
{
	long deadline = slurm_now_ms() + timeout_s * 1000L;

	for (;;) {
		char *text = slurm_read(s, name);
		bool ok = text && strstr(text, needle);

		if (ok) {
			free(text);
			return;
		}
		if (slurm_now_ms() > deadline)
			cr_assert_fail("%s/%s has no '%s' after %d s: %s", s->jobs, name, needle,
				       timeout_s, text ? text : "(no file)");
		free(text);
		sleep_ms(200);
	}
}

/* ---- the W&B side ---------------------------------------------------------- */

char *wait_run_history(struct emu *e, const char *path, const char *expected, int timeout_s)
{
	long deadline = slurm_now_ms() + timeout_s * 1000L;

	for (;;) {
		char *got = emu_run_states(e, path);

		if (strcmp(got, expected) == 0 || slurm_now_ms() > deadline)
			return got;
		free(got);
		sleep_ms(200);
	}
}

struct json_object *emu_run(struct emu *e, const char *path)
{
	char q[512];
	struct json_object *run, *state;

	snprintf(q, sizeof(q), "/_emu/run?path=%s", path);
	run = emu_get(e, q);
	if (!run || !json_object_object_get_ex(run, "state", &state)) {
		json_object_put(run);
		return NULL;
	}
	return run;
}

char *emu_run_names(struct emu *e)
{
	struct json_object *o = emu_get(e, "/_emu/runs"), *runs, *name;
	char *s = calloc(1, 4096);
	size_t used = 0;

	cr_assert_not_null(s);
	if (o && json_object_object_get_ex(o, "runs", &runs))
		for (size_t i = 0; i < json_object_array_length(runs); i++)
			if (json_object_object_get_ex(json_object_array_get_idx(runs, i), "name",
						      &name) &&
			    used < 4000)
				used += (size_t)snprintf(s + used, 4096 - used, "%s%s", used ? "," : "",
							 json_object_get_string(name));
	json_object_put(o);
	return s;
}

struct json_object *json_at(struct json_object *o, const char *dotted)
{
	char *copy = strdup(dotted), *save = NULL;

	cr_assert_not_null(copy);
	for (char *k = strtok_r(copy, ".", &save); k && o; k = strtok_r(NULL, ".", &save))
		if (!json_object_object_get_ex(o, k, &o))
			o = NULL;
	free(copy);
	return o;
}

char *json_str_at(struct json_object *o, const char *dotted)
{
	struct json_object *v = json_at(o, dotted);

	return strdup(v ? json_object_get_string(v) : "");
}
