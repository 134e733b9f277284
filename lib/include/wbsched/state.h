#ifndef WBS_STATE_H
#define WBS_STATE_H

#include <stdbool.h>

/*
 * W&B run states are plain strings: pending, running, preempting (alive) and
 * finished, failed, crashed, killed, preempted (terminal).
 */
bool wbs_run_state_is_known(const char *state);
bool wbs_run_state_is_terminal(const char *state);

/* Terminal and not "finished": failed, crashed, killed or preempted. */
bool wbs_run_state_is_failure(const char *state);

/*
 * The server's rule for updateRunState (Run.update_state in the SDK): to
 * "pending" from running, failed, crashed or preempted; to "failed" from
 * pending or running.
 */
bool wbs_run_state_can_update(const char *from, const char *to);

#endif /* WBS_STATE_H */
