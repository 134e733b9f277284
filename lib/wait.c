/*
 * Waiting for runs to end (Run.wait_until_finished of the SDK, for many runs
 * and with the states the SDK forgets: killed and preempted end a wait too).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wbsched/clock.h"
#include "wbsched/client.h"
#include "wbsched/error.h"
#include "wbsched/log.h"
#include "wbsched/run.h"
#include "wbsched/state.h"

static bool same_state(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/*
 * Reads the runs that are not terminal yet, WBS_RUN_BATCH per request, and
 * updates @infos; sets *ret_changed when a state moved.
 */
static int poll_once(struct wbs_client *client, const struct wbs_run_ref *refs, size_t n,
		     struct wbs_run_info *infos, bool *ret_changed, struct wbs_error *err)
{
	struct wbs_run_ref *todo = calloc(n, sizeof(*todo));
	size_t *index = calloc(n, sizeof(*index));
	struct wbs_run_info *fresh = NULL;
	size_t m = 0;
	int r = 0;

	if (!todo || !index) {
		r = wbs_error_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (wbs_run_state_is_terminal(infos[i].state))
			continue;
		todo[m] = refs[i]; /* shallow: borrowed strings */
		index[m++] = i;
	}
	fresh = calloc(m ? m : 1, sizeof(*fresh));
	if (!fresh) {
		r = wbs_error_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	wbs_client_begin(client);
	r = wbs_run_read(client, todo, m, fresh, err);
	if (r < 0)
		goto out;
	for (size_t k = 0; k < m; k++) {
		struct wbs_run_info *old = &infos[index[k]];

		if (!same_state(old->state, fresh[k].state))
			*ret_changed = true;
		wbs_run_info_release(old);
		*old = fresh[k];
		fresh[k] = (struct wbs_run_info){ 0 };
	}
out:
	if (fresh)
		for (size_t k = 0; k < m; k++)
			wbs_run_info_release(&fresh[k]);
	free(fresh);
	free(todo);
	free(index);
	return r;
}

int wbs_run_wait(struct wbs_client *client, const struct wbs_run_ref *refs, size_t n,
		 const struct wbs_wait_opts *opts, wbs_wait_progress_fn progress, void *userdata,
		 struct wbs_run_info *ret_infos, struct wbs_error *err)
{
	long start = wbs_now_ms();
	long interval = opts->interval_ms > 0 ? opts->interval_ms : 2000;
	long cap = opts->max_interval_ms > interval ? opts->max_interval_ms : interval;
	bool first = true;

	for (size_t i = 0; i < n; i++) {
		if (!ret_infos[i].id) {
			ret_infos[i].entity = refs[i].entity ? strdup(refs[i].entity) : NULL;
			ret_infos[i].project = strdup(refs[i].project);
			ret_infos[i].id = strdup(refs[i].id);
		}
	}
	for (;;) {
		struct wbs_error poll_err = { 0 };
		bool changed = first, all_done = true, failed = false;
		long elapsed, sleep_for;
		int r;

		r = poll_once(client, refs, n, ret_infos, &changed, &poll_err);
		if (r == -EACCES || r == -EINVAL || r == -ENOMEM) {
			if (err && !err->code)
				*err = poll_err;
			return r;
		}
		if (r < 0)
			wbs_log(WBS_LOG_WARNING, "cannot read the runs, will try again: %s",
				poll_err.msg);
		first = false;
		for (size_t i = 0; i < n; i++) {
			if (!wbs_run_state_is_terminal(ret_infos[i].state))
				all_done = false;
			else if (wbs_run_state_is_failure(ret_infos[i].state))
				failed = true;
		}
		if (r == 0 && progress)
			progress(userdata, ret_infos, n, changed);
		if (failed || all_done)
			return 0;

		elapsed = wbs_now_ms() - start;
		if (opts->timeout_ms >= 0 && elapsed >= opts->timeout_ms)
			return wbs_error_set(err, -ETIMEDOUT,
					     "gave up waiting after %ld s", opts->timeout_ms / 1000);
		/* Quiet polls stretch the interval; any movement resets it. */
		if (changed)
			interval = opts->interval_ms > 0 ? opts->interval_ms : 2000;
		sleep_for = interval;
		if (opts->timeout_ms >= 0 && elapsed + sleep_for > opts->timeout_ms)
			sleep_for = opts->timeout_ms - elapsed;
		wbs_sleep_ms(sleep_for);
		if (!changed)
			interval = interval * 3 / 2 < cap ? interval * 3 / 2 : cap;
	}
}
