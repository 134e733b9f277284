#ifndef WBS_WATCHDOG_H
#define WBS_WATCHDOG_H

#include <stdbool.h>
#include <stddef.h>

/*
 * The watchdog's vocabulary (watchdog.c, pure): why the pod or machine is
 * going away, the line the watching helpers send about it, and the rule that
 * turns how CMD ended into a W&B run state.
 */

/* Why the pod (or the machine) is going away, as far as the watchdog knows. */
enum wd_cause {
	WD_CAUSE_NONE = 0,  /* nothing seen */
	WD_CAUSE_DELETING,  /* the pod is being deleted; its cause is being looked up */
	WD_CAUSE_PREEMPTED, /* the scheduler or a queue (Kueue, Volcano) took the resources back */
	WD_CAUSE_EVICTED,   /* eviction API (drain), taint manager, pod GC, node pressure */
	WD_CAUSE_SHUTDOWN,  /* graceful node shutdown */
	WD_CAUSE_SPOT,      /* a cloud notice: the VM is being reclaimed */
	WD_CAUSE_DELETED,   /* deleted with no sign of a disruption: a user, the Job's end */
};

/* "none", "deleting", "preempted", ...; NULL for a bad value. */
const char *wd_cause_name(enum wd_cause cause);

/* The inverse; -EINVAL for an unknown name. */
int wd_cause_from_name(const char *name, enum wd_cause *ret);

/* True for the causes that make a run preempting: preempted, evicted, shutdown, spot. */
bool wd_cause_is_disruption(enum wd_cause cause);

/*
 * What the watching helpers write on their pipe, one notice per line:
 * "<cause name> <text>\n".  @text is cut at 200 bytes and control characters
 * become spaces.  Returns the length written (always < @size), or -EINVAL.
 */
#define WD_NOTICE_MAX 256
int wd_notice_format(enum wd_cause cause, const char *text, char *buf, size_t size);

/* Parses one line (without its '\n'); @ret_text borrows from @line.  -EINVAL. */
int wd_notice_parse(char *line, enum wd_cause *ret_cause, const char **ret_text);

/* How CMD ended, and what the watchdog saw before. */
struct wd_facts {
	bool signaled;       /* CMD died by a signal */
	int code;            /* its exit code, or the signal number */
	bool term_forwarded; /* the watchdog forwarded SIGTERM to CMD before it ended */
	enum wd_cause cause;
	const char *cause_text; /* may be NULL */
};

enum wd_end {
	WD_END_FINISHED,  /* wbs_run_finish(0) */
	WD_END_FAILED,    /* wbs_run_fail(reason, exit code) */
	WD_END_PREEMPTED, /* preempting first if needed, then ended non-zero */
};

struct wd_outcome {
	enum wd_end end;
	int exit_status; /* CMD's status as a shell reports it: the code, or 128 + signal */
	char reason[256];
};

/*
 * The rule (README "The watchdog"):
 * - CMD exits 0 and the watchdog has not forwarded SIGTERM to it: finished.
 * - A disruption is known (preemption, eviction, node shutdown, a cloud
 *   notice), or SIGTERM was forwarded with no known cause: preempted, whatever
 *   the status, 0 included: a program that catches SIGTERM, checkpoints and
 *   exits 0 has not completed its work.
 * - Otherwise failed: a deleted pod (its cause as reason), a non-zero exit
 *   ("exit code N") or a signal ("killed by signal N (SIGNAME)"), and also an
 *   exit 0 after SIGTERM when the pod was deleted by a user.
 */
void wd_decide(const struct wd_facts *facts, struct wd_outcome *ret);

/* The status the watchdog exits with: @code, or 128 + the signal number. */
int wd_exit_status(bool signaled, int code);

#endif /* WBS_WATCHDOG_H */
