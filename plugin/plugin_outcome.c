/* From the job record slurmctld has at the epilog to the W&B state change. */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include <slurm/slurm.h>

#include "plugin_outcome.h"

static void set_step(struct plugin_outcome *o, int i, const char *a, const char *b,
		     const char *c, const char *d, const char *e)
{
	const char *words[] = { a, b, c, d, e, NULL };

	for (int k = 0; k < 6; k++)
		o->steps[i][k] = words[k];
	o->steps[i][6] = NULL;
}

/* The exit code a shell would report: N, or 128 + signal. */
static int shell_exit_code(uint32_t status)
{
	int s = (int)status;

	if (WIFSIGNALED(s))
		return 128 + WTERMSIG(s);
	return WEXITSTATUS(s);
}

int plugin_outcome(const struct plugin_job_end *end, struct plugin_outcome *o)
{
	uint32_t base = end->job_state & JOB_STATE_BASE;
	int code = shell_exit_code(end->exit_code);

	memset(o, 0, sizeof(*o));
	switch (base) {
	case JOB_COMPLETE:
		set_step(o, 0, "finish", "--exit-code", "0", NULL, NULL);
		return 1;
	case JOB_FAILED:
		if (code == 0)
			code = 1; /* FAILED with a zero status: a step or the launch failed */
		snprintf(o->exit_text, sizeof(o->exit_text), "%d", code);
		if (WIFSIGNALED((int)end->exit_code))
			snprintf(o->reason_text, sizeof(o->reason_text), "killed by signal %d",
				 WTERMSIG((int)end->exit_code));
		else
			snprintf(o->reason_text, sizeof(o->reason_text), "exit code %d", code);
		set_step(o, 0, "fail", "--reason", o->reason_text, "--exit-code", o->exit_text);
		return 1;
	case JOB_CANCELLED:
		set_step(o, 0, "fail", "--reason", "cancelled", NULL, NULL);
		return 1;
	case JOB_TIMEOUT:
		set_step(o, 0, "fail", "--reason", "time limit", NULL, NULL);
		return 1;
	case JOB_NODE_FAIL:
		set_step(o, 0, "fail", "--reason", "node failure", NULL, NULL);
		return 1;
	case JOB_BOOT_FAIL:
		set_step(o, 0, "fail", "--reason", "node boot failure", NULL, NULL);
		return 1;
	case JOB_DEADLINE:
		set_step(o, 0, "fail", "--reason", "deadline", NULL, NULL);
		return 1;
	case JOB_OOM:
		set_step(o, 0, "fail", "--reason", "out of memory", NULL, NULL);
		return 1;
	case JOB_PREEMPTED:
		/* W&B records a preempting run that ends non-zero as preempted. */
		snprintf(o->exit_text, sizeof(o->exit_text), "%d", code ? code : 1);
		set_step(o, 0, "preempting", NULL, NULL, NULL, NULL);
		set_step(o, 1, "finish", "--exit-code", o->exit_text, NULL, NULL);
		return 2;
	case JOB_PENDING:
		/* Requeued: the run waits for the next attempt under the same id. */
		if (end->preempt_time) {
			set_step(o, 0, "preempting", NULL, NULL, NULL, NULL);
			set_step(o, 1, "requeue", "--reason", "preempted", NULL, NULL);
			return 2;
		}
		set_step(o, 0, "requeue", "--reason", "requeued", NULL, NULL);
		return 1;
	default:
		return 0; /* RUNNING, SUSPENDED: not ended */
	}
}

const char *plugin_job_state_name(uint32_t job_state)
{
	static const char *const names[] = {
		[JOB_PENDING] = "PENDING",     [JOB_RUNNING] = "RUNNING",
		[JOB_SUSPENDED] = "SUSPENDED", [JOB_COMPLETE] = "COMPLETED",
		[JOB_CANCELLED] = "CANCELLED", [JOB_FAILED] = "FAILED",
		[JOB_TIMEOUT] = "TIMEOUT",     [JOB_NODE_FAIL] = "NODE_FAIL",
		[JOB_PREEMPTED] = "PREEMPTED", [JOB_BOOT_FAIL] = "BOOT_FAIL",
		[JOB_DEADLINE] = "DEADLINE",   [JOB_OOM] = "OUT_OF_MEMORY",
	};
	uint32_t base = job_state & JOB_STATE_BASE;

	return base < JOB_END ? names[base] : "UNKNOWN";
}
