#ifndef WBS_PLUGIN_OUTCOME_H
#define WBS_PLUGIN_OUTCOME_H

#include <stdint.h>
#include <time.h>

/* What slurmctld says of a job when its epilog runs (slurm_load_job()). */
struct plugin_job_end {
	uint32_t job_state;  /* enum job_states, flags included */
	uint32_t exit_code;  /* wait(2) status of the batch script */
	time_t preempt_time; /* non-zero when preemption ended this attempt */
};

/* At most two wbsched commands end a job's attempt, each up to 6 words. */
struct plugin_outcome {
	const char *steps[2][7]; /* NULL-terminated argv tails; unused steps start NULL */
	char exit_text[16];	 /* storage for the numbers the steps quote */
	char reason_text[48];
};

/*
 * Maps the end of a job's attempt to what W&B must be told:
 *   COMPLETED -> finish 0          FAILED    -> fail "exit code N"
 *   CANCELLED -> fail "cancelled"  TIMEOUT   -> fail "time limit"
 *   NODE_FAIL -> fail "node failure"          OOM -> fail "out of memory"
 *   PREEMPTED -> preempting, finish N (W&B: preempted)
 *   PENDING (requeued) -> requeue "requeued", or preempting + requeue
 *                         "preempted" when preempt_time is set
 * Returns the number of steps (0 when the job has not ended).
 */
int plugin_outcome(const struct plugin_job_end *end, struct plugin_outcome *ret);



/* "COMPLETED", "PENDING", ... as scontrol prints the base state. */
const char *plugin_job_state_name(uint32_t job_state);
#endif
