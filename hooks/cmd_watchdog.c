/*
 * wbsched watchdog [--grace SECONDS] [...] -- CMD [ARGS...]
 *
 * The preemption watchdog: a container's entrypoint (or a line of a batch
 * script) that runs CMD and keeps its W&B run truthful.
 *
 * How signals and the network share the work.  They never share a process:
 *
 * - The watchdog process (often PID 1 of the container) only supervises.  It
 *   blocks the signals it forwards, reads them from a signalfd and sleeps in
 *   poll(), so a signal is seen at once whatever else is under way.  Every
 *   signal but SIGTERM is forwarded to CMD right away; it also reaps every
 *   child, as PID 1 must.
 * - Every W&B call runs in a short-lived child, an "op": start, heartbeat,
 *   preempting, end.  Each has the client's time budget and a hard deadline
 *   after which the watchdog SIGKILLs it.  The client (API key, a libcurl
 *   handle with no connection yet) is made before CMD starts and inherited by
 *   every op.  Ops that depend on each other run in order (start, then
 *   preempting, then end); a heartbeat may overlap them.
 * - Watching runs in long-lived helpers: one reads and watches the pod through
 *   the Kubernetes API (k8s_watch.c), one polls each enabled cloud metadata
 *   service (cloud.c).  They write one line per notice on a pipe that poll()
 *   reads; a notice of a disruption marks the run preempting at once.
 *
 * Hence: CMD starts before anything touches the network; W&B or the API
 * server down or slow cannot delay a signal; SIGTERM waits for the preempting
 * mark (one file_stream request) at most --grace; after CMD ends, the end op
 * holds the exit at most its deadline (3 budgets and a second, plus 3 s for a
 * last look at the pod); and the watchdog exits with CMD's status (128 + N
 * when a signal N killed it) whatever W&B did.
 * The end state follows wd_decide() (watchdog.h, README "The watchdog").
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "wbsched/clock.h"
#include "wbsched/cleanup.h"
#include "wbsched/client.h"
#include "wbsched/error.h"
#include "wbsched/log.h"
#include "wbsched/run.h"
#include "wbsched/runid.h"

#include "cloud.h"
#include "hook.h"
#include "k8s.h"
#include "watchdog.h"

#define OP_MARGIN_MS 1000 /* an op may overrun its budget this long before SIGKILL */
#define K8S_CHECK_MS 1000 /* the end's last look at the pod, per request */
#define NO_DEADLINE  LONG_MAX

enum op_kind {
	OP_START,
	OP_HEARTBEAT,
	OP_PREEMPTING,
	OP_END,
	OP_COUNT
};

static const char *const op_names[OP_COUNT] = { "start", "heartbeat", "preempting", "end" };

/* A W&B call under way in a child. */
struct op {
	pid_t pid; /* 0: none */
	int fd;    /* its result pipe: "CODE ENTITY\n" */
	long deadline_ms;
};

enum helper_kind {
	HELPER_K8S,
	HELPER_GCE,
	HELPER_AWS,
	HELPER_AZURE,
	HELPER_COUNT
};

/* A watching helper, writing notice lines. */
struct helper {
	pid_t pid;
	int fd;
	char buf[2 * WD_NOTICE_MAX];
	size_t len;
};

struct wd {
	struct hook_ctx *ctx;
	struct wbs_client *client; /* NULL: W&B is off, only supervise */
	struct wbs_run_ref run;
	char *path;               /* "entity/project/id" for messages */
	struct wbs_run_spec meta; /* what start records */
	struct json_object *config;
	char *display_name;
	struct k8s_env k8s;
	bool k8s_on;
	unsigned clouds;
	long grace_ms, heartbeat_ms, cloud_interval_ms;
	char **argv; /* CMD */
	sigset_t blocked, saved_mask;
	struct sigaction saved_pipe;
	int sfd;

	pid_t cmd;
	bool cmd_done;
	int cmd_status; /* waitpid() status */

	bool started; /* W&B has the run */
	long next_start_ms;
	bool preempting; /* W&B confirmed preempting */
	bool want_preempting;
	bool term_pending; /* SIGTERM held until the run is preempting */
	bool term_op_done;
	long term_deadline_ms, cause_wait_ms;
	bool term_forwarded;
	long next_heartbeat_ms;
	unsigned heartbeat_failures;
	bool end_done;

	enum wd_cause cause;
	char cause_text[WD_NOTICE_MAX];

	struct op ops[OP_COUNT];
	struct helper helpers[HELPER_COUNT];
};

/* Seconds with an optional fraction ("2", "0.5") into milliseconds, within [min, max]. */
static int parse_seconds(const char *s, long min_ms, long max_ms, long *ret_ms)
{
	char *end;
	double v;
	long ms;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0) || v > 86400.0)
		return -EINVAL;
	ms = (long)(v * 1000.0 + 0.5);
	if (ms < min_ms || ms > max_ms)
		return -EINVAL;
	*ret_ms = ms;
	return 0;
}

/* ---- signals ----------------------------------------------------------- */

/*
 * Forwarded: every standard signal but those the kernel sends to a faulting
 * thread (SEGV, BUS, ILL, FPE, ABRT, TRAP, SYS), the terminal's TTIN/TTOU,
 * CHLD (ours) and PIPE (ignored, so that writing to a dead helper's pipe
 * cannot raise one); KILL and STOP cannot be caught.  As tini does.
 */
static bool is_forwarded(int sig)
{
	switch (sig) {
	case SIGKILL:
	case SIGSTOP:
	case SIGCHLD:
	case SIGPIPE:
	case SIGSEGV:
	case SIGBUS:
	case SIGILL:
	case SIGFPE:
	case SIGABRT:
	case SIGTRAP:
	case SIGSYS:
	case SIGTTIN:
	case SIGTTOU:
		return false;
	default:
		return true;
	}
}

static int signals_setup(struct wd *wd)
{
	struct sigaction ign = { .sa_handler = SIG_IGN };

	sigemptyset(&wd->blocked);
	for (int sig = 1; sig < 32; sig++)
		if (is_forwarded(sig))
			sigaddset(&wd->blocked, sig);
	sigaddset(&wd->blocked, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &wd->blocked, &wd->saved_mask) < 0)
		return -errno;
	(void)sigaction(SIGPIPE, &ign, &wd->saved_pipe);
	wd->sfd = signalfd(-1, &wd->blocked, SFD_CLOEXEC | SFD_NONBLOCK);
	return wd->sfd < 0 ? -errno : 0;
}

/* ---- CMD --------------------------------------------------------------- */

static void set_default_env(const char *name, const char *value)
{
	if (value && !getenv(name))
		(void)setenv(name, value, 0);
}

static int spawn_cmd(struct wd *wd)
{
	pid_t pid;

	(void)fflush(stdout);
	(void)fflush(stderr);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		wd->cmd = pid;
		return 0;
	}
	/* CMD gets the signal state the watchdog was started with. */
	(void)sigaction(SIGPIPE, &wd->saved_pipe, NULL);
	(void)sigprocmask(SIG_SETMASK, &wd->saved_mask, NULL);
	if (wd->run.id) {
		(void)setenv("WANDB_RUN_ID", wd->run.id, 1);
		set_default_env("WANDB_RESUME", "allow");
		set_default_env("WANDB_PROJECT", wd->run.project);
		set_default_env("WANDB_ENTITY", wd->run.entity);
	}
	execvp(wd->argv[0], wd->argv);
	fprintf(stderr, "wbsched: watchdog: cannot run '%s': %s\n", wd->argv[0], strerror(errno));
	_exit(errno == ENOENT ? 127 : 126);
}

static void forward(struct wd *wd, int sig)
{
	if (wd->cmd_done)
		return;
	if (kill(wd->cmd, sig) < 0)
		wbs_debug("watchdog: cannot forward signal %d: %s", sig, strerror(errno));
	if (sig == SIGTERM) {
		wd->term_forwarded = true;
		wd->term_pending = false;
	}
}

/* ---- the ops ----------------------------------------------------------- */

static int file_stream_preempting(struct wd *wd, struct wbs_error *err)
{
	_cleanup_json_ struct json_object *body = json_object_new_object();

	if (!body || json_object_object_add(body, "preempting", json_object_new_boolean(1)) < 0)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	return wbs_client_file_stream(wd->client, wd->run.entity, wd->run.project, wd->run.id, body,
				      err);
}

/* One round trip when start told the entity; else wbs_run_preempting() reads first. */
static int mark_preempting(struct wd *wd, struct wbs_error *err)
{
	struct wbs_run_info info = { 0 };
	int r;

	if (wd->run.entity && wd->started) {
		r = file_stream_preempting(wd, err);
	} else {
		r = wbs_run_preempting(wd->client, &wd->run, &info, err);
		if (r == 0 && info.left_alone)
			wbs_log(WBS_LOG_NOTICE, "watchdog: run '%s' is already %s; left as is",
				wd->path, info.state);
	}
	if (r == 0 && !info.left_alone)
		wbs_log(WBS_LOG_NOTICE, "watchdog: run '%s' is preempting%s%s", wd->path,
			wd->cause_text[0] ? ": " : "", wd->cause_text);
	wbs_run_info_release(&info);
	return r;
}

static int spool_end(struct wd *wd, const struct wd_outcome *out, struct wbs_error *err);

static int end_run(struct wd *wd, struct wbs_error *err)
{
	struct wd_facts f = {
		.signaled = WIFSIGNALED(wd->cmd_status),
		.code = WIFSIGNALED(wd->cmd_status) ? WTERMSIG(wd->cmd_status)
						    : WEXITSTATUS(wd->cmd_status),
		.term_forwarded = wd->term_forwarded,
		.cause = wd->cause,
		.cause_text = wd->cause_text,
	};
	struct k8s_verdict v;
	struct wd_outcome out;

	/* SIGTERM with no cause known yet: the pod may tell by now. */
	if (wd->k8s_on && wd->term_forwarded &&
	    (wd->cause == WD_CAUSE_NONE || wd->cause == WD_CAUSE_DELETING) &&
	    k8s_check_pod(&wd->k8s, K8S_CHECK_MS, &v, NULL) == 0 && v.cause != WD_CAUSE_NONE &&
	    v.cause != WD_CAUSE_DELETING) {
		f.cause = v.cause;
		f.cause_text = v.text;
		snprintf(wd->cause_text, sizeof(wd->cause_text), "%s", v.text);
	}
	wd_decide(&f, &out);
	return spool_end(wd, &out, err);
}

/* Runs one wbsched command through the spool: delivered now or kept for later. */
static int run_spooled(struct wd *wd, int argc, const char **argv, struct wbs_error *err)
{
	int code = hook_run_command(wd->ctx, argc, (char **)argv);

	if (code == HOOK_EXIT_OK)
		return 0;
	return wbs_error_set(err, code == HOOK_EXIT_UNAVAILABLE ? -EAGAIN : -EREMOTEIO,
			     "'%s' for run '%s' was not delivered nor kept (exit code %d)",
			     argv[0], wd->path, code);
}

/*
 * The end of the run goes through the same path as the wbsched commands:
 * written to the spool first, so that W&B being down when CMD ends loses
 * nothing (the next wbsched or flush on the node delivers it).
 */
static int spool_end(struct wd *wd, const struct wd_outcome *out, struct wbs_error *err)
{
	char code[16];
	const char *config = wd->config ? json_object_to_json_string_ext(wd->config,
									   JSON_C_TO_STRING_PLAIN)
					: NULL;
	_cleanup_free_ char *path = NULL;
	int r = 0;

	if (wd->run.entity)
		path = wbs_run_path(wd->run.entity, wd->run.project, wd->run.id);
	else if (asprintf(&path, "%s/%s", wd->run.project, wd->run.id) < 0)
		path = NULL;
	if (!path)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	wd->ctx->no_output = true; /* stdout is CMD's */
	if (!wd->started) {
		const char *argv[8];
		int n = 0;

		argv[n++] = "start";
		if (wd->display_name) {
			argv[n++] = "--name";
			argv[n++] = wd->display_name;
		}
		if (config) {
			argv[n++] = "--config-json";
			argv[n++] = config;
		}
		argv[n++] = path;
		r = run_spooled(wd, n, argv, err);
	}
	(void)snprintf(code, sizeof(code), "%d", out->exit_status);
	if (r == 0 && out->end == WD_END_FINISHED) {
		const char *argv[] = { "finish", "--exit-code", "0", path };

		r = run_spooled(wd, 4, argv, err);
	} else if (r == 0) {
		if (out->end == WD_END_PREEMPTED && !wd->preempting) {
			const char *argv[] = { "preempting", path };

			r = run_spooled(wd, 2, argv, err);
		}
		if (r == 0) {
			const char *argv[] = { "fail", "--reason", out->reason, "--exit-code", code,
					       path };

			r = run_spooled(wd, 6, argv, err);
		}
	}
	if (r == 0)
		wbs_info("watchdog: run '%s' ends %s%s%s", wd->path,
			 out->end == WD_END_FINISHED	? "finished"
			 : out->end == WD_END_PREEMPTED ? "preempted"
							: "failed",
			 out->reason[0] ? ": " : "", out->reason);
	return r;
}

/* The body of an op child; writes "CODE ENTITY\n" and never returns. */
static void op_child(struct wd *wd, enum op_kind kind, long budget_ms, int fd)
{
	struct wbs_error err = { 0 };
	struct wbs_run_info info = { 0 };
	char line[192];
	int r, n;

	wd->ctx->cfg.budget_ms = budget_ms; /* this process's copy */
	wd->ctx->start_ms = wbs_now_ms();   /* its command begins now, not the watchdog */
	wbs_client_begin(wd->client);
	switch (kind) {
	case OP_START:
		r = wbs_run_start(wd->client, &wd->run, &wd->meta, &info, &err);
		if (r == 0)
			wbs_info("watchdog: run '%s/%s/%s' is running",
				 info.entity ? info.entity : "-", wd->run.project, wd->run.id);
		break;
	case OP_HEARTBEAT:
		r = wbs_run_heartbeat(wd->client, &wd->run, &err);
		break;
	case OP_PREEMPTING:
		r = mark_preempting(wd, &err);
		break;
	default:
		r = end_run(wd, &err);
		break;
	}
	if (r < 0)
		wbs_log(kind == OP_HEARTBEAT && wd->heartbeat_failures > 0 ? WBS_LOG_DEBUG
									   : WBS_LOG_WARNING,
			"watchdog: %s of run '%s' failed: %s", op_names[kind], wd->path,
			err.msg[0] ? err.msg : strerror(-r));
	n = snprintf(line, sizeof(line), "%d %s\n", r,
		     info.entity && strlen(info.entity) < 128 ? info.entity : "-");
	if (write(fd, line, (size_t)n) < 0)
		r = -errno;
	wbs_run_info_release(&info);
	_exit(r == 0 ? 0 : 1);
}

/* Dies with the watchdog: a helper or op must not outlive it. */
static void die_with_parent(pid_t parent)
{
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
}

static void op_launch(struct wd *wd, enum op_kind kind, long budget_ms, long deadline_ms)
{
	pid_t parent = getpid(), pid;
	int p[2];

	if (budget_ms > wd->ctx->cfg.budget_ms)
		budget_ms = wd->ctx->cfg.budget_ms;
	if (budget_ms < 1)
		budget_ms = 1;
	if (pipe2(p, O_CLOEXEC) < 0) {
		wbs_warning("watchdog: cannot start %s: %s", op_names[kind], strerror(errno));
		return;
	}
	(void)fflush(stdout);
	(void)fflush(stderr);
	pid = fork();
	if (pid < 0) {
		wbs_warning("watchdog: cannot start %s: %s", op_names[kind], strerror(errno));
		close(p[0]);
		close(p[1]);
		return;
	}
	if (pid == 0) {
		close(p[0]);
		die_with_parent(parent);
		op_child(wd, kind, budget_ms, p[1]);
	}
	close(p[1]);
	wd->ops[kind] = (struct op){
		.pid = pid,
		.fd = p[0],
		.deadline_ms = deadline_ms > 0 ? deadline_ms : wbs_now_ms() + budget_ms + OP_MARGIN_MS,
	};
	wbs_debug("watchdog: %s (pid %d, budget %ld ms)", op_names[kind], (int)pid, budget_ms);
}

/* An op ended (or was killed): read its line and act on it. */
static void op_done(struct wd *wd, enum op_kind kind)
{
	struct op *op = &wd->ops[kind];
	char line[192] = "", entity[160] = "";
	ssize_t n = read(op->fd, line, sizeof(line) - 1);
	int r = -ETIMEDOUT;

	if (n > 0) {
		line[n] = '\0';
		if (sscanf(line, "%d %159s", &r, entity) < 1)
			r = -EPROTO;
	}
	close(op->fd);
	*op = (struct op){ .fd = -1 };

	switch (kind) {
	case OP_START:
		if (r == 0) {
			wd->started = true;
			wd->next_heartbeat_ms = wbs_now_ms() + wd->heartbeat_ms;
			if (!wd->run.entity && strcmp(entity, "-") != 0 &&
			    wbs_name_validate("entity", entity, NULL) == 0) {
				wd->run.entity = strdup(entity);
				free(wd->path);
				wd->path =
					wbs_run_path(wd->run.entity, wd->run.project, wd->run.id);
			}
		} else {
			wd->next_start_ms = wbs_now_ms() + wd->heartbeat_ms;
		}
		break;
	case OP_HEARTBEAT:
		wd->heartbeat_failures = r == 0 ? 0 : wd->heartbeat_failures + 1;
		break;
	case OP_PREEMPTING:
		if (r == 0)
			wd->preempting = true;
		wd->term_op_done = true;
		if (wd->term_pending) {
			if (r < 0)
				wbs_warning(
					"watchdog: passing SIGTERM on without the preempting mark");
			forward(wd, SIGTERM);
		}
		break;
	default:
		wd->end_done = true;
		break;
	}
}

static bool op_busy(const struct wd *wd, enum op_kind kind)
{
	return wd->ops[kind].pid != 0;
}

/* ---- helpers ----------------------------------------------------------- */

static void helper_launch(struct wd *wd, enum helper_kind kind)
{
	static const unsigned bits[HELPER_COUNT] = { 0, CLOUD_GCE, CLOUD_AWS, CLOUD_AZURE };
	pid_t parent = getpid(), pid;
	int p[2];

	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
		return;
	(void)fflush(stdout);
	(void)fflush(stderr);
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return;
	}
	if (pid == 0) {
		close(p[0]);
		die_with_parent(parent);
		/* blocking writes: a notice line is small and the watchdog reads it soon */
		(void)fcntl(p[1], F_SETFL, 0);
		if (kind == HELPER_K8S)
			k8s_watch_pod(&wd->k8s, p[1]);
		else
			cloud_watch(bits[kind], wd->cloud_interval_ms, p[1]);
		_exit(0);
	}
	close(p[1]);
	wd->helpers[kind] = (struct helper){ .pid = pid, .fd = p[0] };
}

static void on_notice(struct wd *wd, enum wd_cause cause, const char *text)
{
	/* "being deleted" never hides a cause already known */
	if (cause == WD_CAUSE_NONE || (cause == WD_CAUSE_DELETING && wd->cause != WD_CAUSE_NONE &&
				       wd->cause != WD_CAUSE_DELETING))
		return;
	if (cause == wd->cause && strcmp(text, wd->cause_text) == 0)
		return;
	wd->cause = cause;
	(void)snprintf(wd->cause_text, sizeof(wd->cause_text), "%s", text);
	wbs_log(WBS_LOG_NOTICE, "watchdog: %s: %s", cause == WD_CAUSE_SPOT ? "cloud" : "pod", text);
	if (wd_cause_is_disruption(cause) && !wd->preempting && !wd->cmd_done)
		wd->want_preempting = true;
}

static void helper_read(struct wd *wd, struct helper *h)
{
	for (;;) {
		ssize_t n = read(h->fd, h->buf + h->len, sizeof(h->buf) - 1 - h->len);
		char *start, *nl;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			close(h->fd);
			h->fd = -1;
			return;
		}
		h->len += (size_t)n;
		h->buf[h->len] = '\0';
		start = h->buf;
		while ((nl = strchr(start, '\n'))) {
			enum wd_cause cause;
			const char *text;

			*nl = '\0';
			if (wd_notice_parse(start, &cause, &text) == 0)
				on_notice(wd, cause, text);
			start = nl + 1;
		}
		h->len -= (size_t)(start - h->buf);
		memmove(h->buf, start, h->len);
		if (h->len == sizeof(h->buf) - 1)
			h->len = 0; /* a line longer than any notice: drop it */
	}
}

/* ---- the loop ---------------------------------------------------------- */

static void reap(struct wd *wd)
{
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if (pid == wd->cmd && !wd->cmd_done) {
			wd->cmd_done = true;
			wd->cmd_status = st;
			wd->term_pending = false;
			wbs_debug("watchdog: CMD ended with status %d",
				  wd_exit_status(WIFSIGNALED(st),
						 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st)));
			continue;
		}
		for (int k = 0; k < OP_COUNT; k++)
			if (wd->ops[k].pid == pid)
				op_done(wd, (enum op_kind)k);
		for (int k = 0; k < HELPER_COUNT; k++)
			if (wd->helpers[k].pid == pid)
				wd->helpers[k].pid = 0;
		/* anything else: an orphan of CMD, reaped as PID 1 must */
	}
}

static void on_signal(struct wd *wd, int sig)
{
	long now = wbs_now_ms();

	if (sig == SIGCHLD) {
		reap(wd);
		return;
	}
	if (wd->cmd_done)
		return;
	if (sig != SIGTERM) {
		forward(wd, sig);
		return;
	}
	/* a second SIGTERM, or no W&B: at once */
	if (wd->term_pending || wd->term_forwarded || !wd->client) {
		forward(wd, SIGTERM);
		return;
	}
	wd->term_pending = true;
	wd->term_op_done = false;
	wd->term_deadline_ms = now + wd->grace_ms;
	wd->cause_wait_ms = now + wd->grace_ms / 2;
	wbs_debug("watchdog: SIGTERM: marking the run preempting first (at most %ld ms)",
		  wd->grace_ms);
}

static void read_signals(struct wd *wd)
{
	struct signalfd_siginfo si;

	while (read(wd->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		on_signal(wd, (int)si.ssi_signo);
}

/* Starts what is due and enforces the deadlines. */
static void step(struct wd *wd, long now)
{
	for (int k = 0; k < OP_COUNT; k++) {
		struct op *op = &wd->ops[k];

		if (op->pid && now >= op->deadline_ms) {
			wbs_warning("watchdog: W&B %s took too long; stopped it", op_names[k]);
			(void)kill(op->pid, SIGKILL);
			op->deadline_ms = NO_DEADLINE; /* reaped soon */
		}
	}
	if (!wd->client) {
		if (wd->term_pending)
			forward(wd, SIGTERM);
		return;
	}
	if (wd->cmd_done) {
		if (!wd->end_done && !op_busy(wd, OP_END) && !op_busy(wd, OP_START) &&
		    !op_busy(wd, OP_PREEMPTING)) {
			long budget = wd->ctx->cfg.budget_ms;
			long extra = wd->k8s_on ? 3 * K8S_CHECK_MS : 0;

			op_launch(wd, OP_END, budget, now + 3 * budget + extra + OP_MARGIN_MS);
			if (!op_busy(wd, OP_END))
				wd->end_done = true;
		}
		return;
	}
	if (!wd->started && !op_busy(wd, OP_START) && now >= wd->next_start_ms)
		op_launch(wd, OP_START, wd->ctx->cfg.budget_ms, 0);

	if (wd->term_pending) {
		if (wd->preempting || wd->cause == WD_CAUSE_DELETED || wd->term_op_done ||
		    now >= wd->term_deadline_ms) {
			if (!wd->preempting && wd->cause != WD_CAUSE_DELETED && !wd->term_op_done)
				wbs_warning(
					"watchdog: W&B did not confirm preempting within %ld ms; passing SIGTERM on",
					wd->grace_ms);
			forward(wd, SIGTERM);
		} else if (!op_busy(wd, OP_PREEMPTING) && !op_busy(wd, OP_START) &&
			   (wd->cause != WD_CAUSE_DELETING || now >= wd->cause_wait_ms)) {
			/*
			 * The full budget: SIGTERM goes on at the grace deadline
			 * anyway, and a mark that lands later still counts.
			 */
			op_launch(wd, OP_PREEMPTING, wd->ctx->cfg.budget_ms, 0);
			if (!op_busy(wd, OP_PREEMPTING))
				forward(wd, SIGTERM);
		}
	} else if (wd->want_preempting && wd->started && !wd->preempting &&
		   !op_busy(wd, OP_PREEMPTING) && !op_busy(wd, OP_START)) {
		wd->want_preempting = false;
		op_launch(wd, OP_PREEMPTING, wd->ctx->cfg.budget_ms, 0);
	}

	if (wd->started && now >= wd->next_heartbeat_ms) {
		wd->next_heartbeat_ms = now + wd->heartbeat_ms;
		if (!op_busy(wd, OP_HEARTBEAT))
			op_launch(wd, OP_HEARTBEAT, wd->ctx->cfg.budget_ms, 0);
	}
}

static long next_wakeup(const struct wd *wd, long now)
{
	long t = NO_DEADLINE;

	for (int k = 0; k < OP_COUNT; k++)
		if (wd->ops[k].pid && wd->ops[k].deadline_ms < t)
			t = wd->ops[k].deadline_ms;
	if (wd->client && !wd->cmd_done) {
		/* only what step() can act on: a busy op wakes us with SIGCHLD */
		if (wd->term_pending) {
			if (wd->term_deadline_ms < t)
				t = wd->term_deadline_ms;
			if (wd->cause == WD_CAUSE_DELETING && now < wd->cause_wait_ms &&
			    wd->cause_wait_ms < t)
				t = wd->cause_wait_ms;
		}
		if (wd->started && wd->next_heartbeat_ms < t)
			t = wd->next_heartbeat_ms;
		if (!wd->started && !op_busy(wd, OP_START) && wd->next_start_ms < t)
			t = wd->next_start_ms;
	}
	if (t == NO_DEADLINE)
		return -1;
	return t <= now ? 0 : t - now > INT_MAX ? INT_MAX : t - now;
}

static bool all_done(const struct wd *wd)
{
	if (!wd->cmd_done)
		return false;
	if (!wd->client)
		return true;
	return wd->end_done && !op_busy(wd, OP_END);
}

static int run_loop(struct wd *wd)
{
	for (;;) {
		struct pollfd pfd[1 + HELPER_COUNT];
		int idx[1 + HELPER_COUNT], n = 0;
		long now = wbs_now_ms();

		step(wd, now);
		if (all_done(wd))
			break;
		pfd[n++] = (struct pollfd){ .fd = wd->sfd, .events = POLLIN };
		for (int k = 0; k < HELPER_COUNT; k++) {
			if (wd->helpers[k].fd < 0)
				continue;
			idx[n] = k;
			pfd[n++] = (struct pollfd){ .fd = wd->helpers[k].fd, .events = POLLIN };
		}
		if (poll(pfd, (nfds_t)n, (int)next_wakeup(wd, now)) < 0 && errno != EINTR)
			return -errno;
		if (pfd[0].revents)
			read_signals(wd);
		for (int i = 1; i < n; i++)
			if (pfd[i].revents)
				helper_read(wd, &wd->helpers[idx[i]]);
	}
	return 0;
}

/* Stops what is left (heartbeats, helpers) and reaps it. */
static void stop_children(struct wd *wd)
{
	for (int k = 0; k < OP_COUNT; k++) {
		if (wd->ops[k].pid) {
			(void)kill(wd->ops[k].pid, SIGKILL);
			(void)waitpid(wd->ops[k].pid, NULL, 0);
		}
		if (wd->ops[k].fd >= 0)
			close(wd->ops[k].fd);
		wd->ops[k] = (struct op){ .fd = -1 };
	}
	for (int k = 0; k < HELPER_COUNT; k++) {
		if (wd->helpers[k].pid) {
			(void)kill(wd->helpers[k].pid, SIGKILL);
			(void)waitpid(wd->helpers[k].pid, NULL, 0);
		}
		if (wd->helpers[k].fd >= 0)
			close(wd->helpers[k].fd);
		wd->helpers[k] = (struct helper){ .fd = -1 };
	}
}

/* ---- setup ------------------------------------------------------------- */

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

/* What start records: the Job's name and {"kubernetes": {...}} from the Downward API. */
static void build_meta(struct wd *wd)
{
	static const struct {
		const char *var, *key;
	} fields[] = {
		{ "POD_NAMESPACE", "namespace" }, { "POD_NAME", "pod" },
		{ "NODE_NAME", "node" },          { "JOB_NAME", "job_name" },
		{ "JOB_UID", "job_uid" },         { "JOB_COMPLETION_INDEX", "completion_index" },
	};
	struct json_object *k8s = json_object_new_object();
	const char *name = env_nonempty("WANDB_NAME"), *job = env_nonempty("JOB_NAME");
	const char *index = env_nonempty("JOB_COMPLETION_INDEX");
	bool any = false;

	for (size_t i = 0; k8s && i < ELEMENTSOF(fields); i++) {
		const char *v = env_nonempty(fields[i].var);

		if (v && json_object_object_add(k8s, fields[i].key, json_object_new_string(v)) == 0)
			any = true;
	}
	wd->config = json_object_new_object();
	if (any && wd->config && json_object_object_add(wd->config, "kubernetes", k8s) == 0)
		k8s = NULL;
	json_object_put(k8s);
	if (!any) {
		json_object_put(wd->config);
		wd->config = NULL;
	}
	if (name)
		wd->display_name = strdup(name);
	else if (job && index && asprintf(&wd->display_name, "%s-%s", job, index) < 0)
		wd->display_name = NULL;
	else if (job && !index)
		wd->display_name = strdup(job);
	wd->meta = (struct wbs_run_spec){ .display_name = wd->display_name, .config = wd->config };
}

/* The run, the client and the pod; anything missing turns W&B off, never CMD. */
static int setup_wandb(struct wd *wd, const char *run_arg)
{
	struct wbs_error err = { 0 };
	char id[WBS_RUN_ID_MAX_LEN + 1];
	int r;

	if (run_arg) {
		r = wbs_run_ref_parse(run_arg, &wd->ctx->cfg, &wd->run, &err);
		if (r < 0)
			return hook_usage_error("watchdog", "--run: %s", err.msg);
	} else {
		r = k8s_run_id(id, sizeof(id));
		if (r == -ENOENT) {
			wbs_warning(
				"watchdog: no run to follow (set WANDB_RUN_ID, JOB_UID or --run); "
				"running the command without W&B");
			return 0;
		}
		if (r == 0)
			r = wbs_run_ref_parse(id, &wd->ctx->cfg, &wd->run, &err);
		if (r < 0) {
			wbs_warning("watchdog: %s; running the command without W&B",
				    r == -ENAMETOOLONG ? "the run id is too long" : err.msg);
			wbs_run_ref_release(&wd->run);
			return 0;
		}
	}
	wd->path = wbs_run_path(wd->run.entity, wd->run.project, wd->run.id);
	if (!wd->path)
		return HOOK_EXIT_FAILED;
	if (wd->ctx->config_failed || hook_client(wd->ctx, &wd->client) != 0) {
		wbs_warning("watchdog: running the command without W&B");
		wd->client = NULL;
		return 0;
	}
	build_meta(wd);
	return 0;
}

static void setup_k8s(struct wd *wd)
{
	struct wbs_error err = { 0 };
	int r = k8s_env_load(&wd->k8s, &err);

	if (r == 0) {
		wd->k8s_on = true;
		return;
	}
	/* Outside Kubernetes this is normal; inside, say why the pod is not watched. */
	wbs_log(getenv("KUBERNETES_SERVICE_HOST") ? WBS_LOG_WARNING : WBS_LOG_DEBUG,
		"watchdog: not watching the pod: %s", err.msg);
}

static void wd_release(struct wd *wd)
{
	if (wd->sfd >= 0)
		close(wd->sfd);
	wbs_run_ref_release(&wd->run);
	free(wd->path);
	free(wd->display_name);
	json_object_put(wd->config);
	k8s_env_release(&wd->k8s);
}

int cmd_watchdog(struct hook_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "grace", required_argument, NULL, 'g' },
		{ "run", required_argument, NULL, 'r' },
		{ "cloud", required_argument, NULL, 'c' },
		{ "heartbeat", required_argument, NULL, 'b' },
		{ "cloud-interval", required_argument, NULL, 'i' },
		{ "no-kubernetes", no_argument, NULL, 'K' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct wd wd = {
		.ctx = ctx,
		.sfd = -1,
		.grace_ms = 2000,
		.heartbeat_ms = 30000,
		.cloud_interval_ms = 5000,
	};
	struct wbs_error err = { 0 };
	const char *run_arg = NULL;
	bool no_k8s = false;
	int opt, ret;

	for (int k = 0; k < OP_COUNT; k++)
		wd.ops[k].fd = -1;
	for (int k = 0; k < HELPER_COUNT; k++)
		wd.helpers[k].fd = -1;
	optind = 0;
	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (opt) {
		case 'g':
			if (parse_seconds(optarg, 100, 600000, &wd.grace_ms) < 0)
				return hook_usage_error(
					"watchdog",
					"invalid --grace '%s': expected seconds from 0.1 to 600",
					optarg);
			break;
		case 'b':
			if (parse_seconds(optarg, 100, 3600000, &wd.heartbeat_ms) < 0)
				return hook_usage_error(
					"watchdog",
					"invalid --heartbeat '%s': expected seconds from 0.1 to 3600",
					optarg);
			break;
		case 'i':
			if (parse_seconds(optarg, 100, 3600000, &wd.cloud_interval_ms) < 0)
				return hook_usage_error(
					"watchdog",
					"invalid --cloud-interval '%s': expected seconds from 0.1 to 3600",
					optarg);
			break;
		case 'c':
			if (cloud_parse_list(optarg, &wd.clouds, &err) < 0)
				return hook_usage_error("watchdog", "--cloud: %s", err.msg);
			break;
		case 'r':
			run_arg = optarg;
			break;
		case 'K':
			no_k8s = true;
			break;
		case 'h':
			hook_print_usage("watchdog");
			return HOOK_EXIT_OK;
		default:
			return hook_usage_error("watchdog", "unknown option '%s'",
						argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return hook_usage_error("watchdog",
					"no command given: wbsched watchdog -- CMD [ARGS...]");
	wd.argv = argv + optind;

	ret = setup_wandb(&wd, run_arg);
	if (ret != 0)
		goto out;
	if (wd.client && !no_k8s)
		setup_k8s(&wd);
	ret = signals_setup(&wd);
	if (ret == 0)
		ret = spawn_cmd(&wd);
	if (ret < 0) {
		wbs_err("watchdog: cannot start '%s': %s", wd.argv[0], strerror(-ret));
		ret = HOOK_EXIT_FAILED;
		goto out;
	}
	if (wd.k8s_on)
		helper_launch(&wd, HELPER_K8S);
	for (int k = HELPER_GCE; wd.client && k <= HELPER_AZURE; k++)
		if (wd.clouds & (CLOUD_GCE << (k - HELPER_GCE)))
			helper_launch(&wd, (enum helper_kind)k);

	ret = run_loop(&wd);
	if (ret < 0) {
		/* poll() failed: never leave CMD behind unwaited */
		wbs_err("watchdog: %s; waiting for the command", strerror(-ret));
		while (!wd.cmd_done && waitpid(wd.cmd, &wd.cmd_status, 0) == wd.cmd)
			wd.cmd_done = true;
	}
	stop_children(&wd);
	ret = wd_exit_status(WIFSIGNALED(wd.cmd_status), WIFSIGNALED(wd.cmd_status)
								 ? WTERMSIG(wd.cmd_status)
								 : WEXITSTATUS(wd.cmd_status));
out:
	wd_release(&wd);
	return ret;
}
