/* The W&B run state vocabulary and the server's transition rules. */
#include <stddef.h>
#include <string.h>

#include "wbsched/state.h"

static bool is_one_of(const char *s, const char *const *list)
{
	if (!s)
		return false;
	for (; *list; list++)
		if (strcmp(s, *list) == 0)
			return true;
	return false;
}

bool wbs_run_state_is_known(const char *state)
{
	static const char *const all[] = { "pending", "running",  "preempting", "finished",
					   "failed",  "crashed",  "killed",	"preempted",
					   NULL };
	return is_one_of(state, all);
}

bool wbs_run_state_is_terminal(const char *state)
{
	static const char *const terminal[] = { "finished", "failed",	 "crashed",
						"killed",   "preempted", NULL };
	return is_one_of(state, terminal);
}

bool wbs_run_state_is_failure(const char *state)
{
	return wbs_run_state_is_terminal(state) && strcmp(state, "finished") != 0;
}

bool wbs_run_state_can_update(const char *from, const char *to)
{
	static const char *const to_pending[] = { "running", "failed", "crashed", "preempted",
						  NULL };
	static const char *const to_failed[] = { "pending", "running", NULL };

	if (!to)
		return false;
	if (strcmp(to, "pending") == 0)
		return is_one_of(from, to_pending);
	if (strcmp(to, "failed") == 0)
		return is_one_of(from, to_failed);
	return false;
}
