/*
 * fork + exec of wbsched, with a hard deadline.  Runs inside sbatch, srun
 * and the slurmstepd prolog/epilog/task processes, so: no exit() in the
 * parent, no unbounded wait, no descriptor leaked into the child, and the
 * child's signal state reset (slurmstepd blocks signals).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "wbsched/clock.h"
#include "wbsched/error.h"
#include "wbsched/log.h"

#include "plugin_exec.h"

#define STDERR_MAX 4096

/* In the child: never returns. */
static void child(const struct plugin_exec *x, int err_fd)
{
	sigset_t all;
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);

	(void)sigemptyset(&all);
	(void)sigprocmask(SIG_SETMASK, &all, NULL);
	for (int sig = 1; sig < NSIG; sig++)
		(void)signal(sig, SIG_DFL);
	(void)setpgid(0, 0);
	if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0)
		_exit(126);
	if (!x->keep_stderr && dup2(err_fd >= 0 ? err_fd : null, STDERR_FILENO) < 0)
		_exit(126);
	(void)close_range(3, ~0U, 0);
	if (x->drop) {
		if (setgroups(1, &x->gid) < 0 || setgid(x->gid) < 0 || setuid(x->uid) < 0 ||
		    getuid() != x->uid || geteuid() != x->uid) {
			(void)!write(STDERR_FILENO, "wbsched: cannot drop privileges\n", 32);
			_exit(126);
		}
	}
	if (chdir("/") < 0)
		_exit(126);
	/* A hard cap the child cannot outlive, also when nobody waits for it. */
	if (x->deadline_ms > 0)
		(void)alarm((unsigned)((x->deadline_ms + 999) / 1000));
	execve(x->path, x->argv, x->envp);
	dprintf(STDERR_FILENO, "wbsched: cannot run '%s': %s\n", x->path, strerror(errno));
	_exit(127);
}

/* Logs the child's stderr, one message per line. */
static void log_lines(char *buf, size_t len, int level)
{
	char *line = buf, *nl;

	buf[len] = '\0';
	while (*line) {
		nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		if (*line)
			wbs_log(level, "%s", strncmp(line, "wbsched: ", 9) == 0 ? line + 9 : line);
		if (!nl)
			break;
		line = nl + 1;
	}
}

int plugin_exec(const struct plugin_exec *x, int *ret_status, struct wbs_error *err)
{
	char buf[STDERR_MAX + 1];
	size_t len = 0;
	long deadline = wbs_now_ms() + x->deadline_ms;
	int pipefd[2] = { -1, -1 };
	int status = 0, wstatus;
	pid_t pid, got;

	*ret_status = -1;
	if (x->detach) {
		/* Double fork: the grandchild is adopted by init, nobody waits. */
		pid = fork();
		if (pid < 0)
			return wbs_error_set(err, -errno, "cannot fork: %s", strerror(errno));
		if (pid == 0) {
			(void)setsid();
			if (fork() == 0)
				child(x, -1);
			_exit(0);
		}
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		return 0;
	}

	if (!x->keep_stderr && pipe2(pipefd, O_CLOEXEC) < 0)
		return wbs_error_set(err, -errno, "cannot make a pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0) {
		int e = errno;

		if (pipefd[0] >= 0) {
			(void)close(pipefd[0]);
			(void)close(pipefd[1]);
		}
		return wbs_error_set(err, -e, "cannot fork: %s", strerror(e));
	}
	if (pid == 0)
		child(x, pipefd[1]);
	if (pipefd[1] >= 0)
		(void)close(pipefd[1]);

	/* Read its stderr until it closes it or the deadline passes. */
	while (pipefd[0] >= 0) {
		struct pollfd p = { .fd = pipefd[0], .events = POLLIN };
		long left = deadline - wbs_now_ms();
		ssize_t n;

		if (left <= 0)
			break;
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		n = read(pipefd[0], buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf) - 1)
			break; /* enough said: stop reading, the deadline still holds */
	}
	if (pipefd[0] >= 0)
		(void)close(pipefd[0]);

	/* Wait for the exit, up to the deadline; then kill its process group. */
	for (;;) {
		got = waitpid(pid, &wstatus, WNOHANG);
		if (got == pid || (got < 0 && errno != EINTR))
			break;
		if (wbs_now_ms() >= deadline) {
			wbs_log(WBS_LOG_WARNING, "'%s' passed its %ld ms deadline, killed", x->path,
				x->deadline_ms);
			(void)kill(-pid, SIGKILL);
			(void)kill(pid, SIGKILL);
			while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
				;
			got = pid;
			break;
		}
		{
			struct timespec ts = { 0, 5 * 1000 * 1000 };

			(void)nanosleep(&ts, NULL);
		}
	}
	if (got == pid)
		status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
	else
		status = -1; /* SIGCHLD ignored by the host: the status is gone */
	log_lines(buf, len, status == 0 ? WBS_LOG_INFO : WBS_LOG_WARNING);
	*ret_status = status;
	return 0;
}
