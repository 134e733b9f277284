/*
 * Delivering state changes: now, or later from the spool.
 *
 *   hook_deliver()   the path every state-changing command takes:
 *                    lock the spool, deliver what is queued (small budget),
 *                    then send this change, or queue it behind the others
 *   cmd_flush()      `wbsched flush`: deliver everything queued, in order;
 *                    --status shows what waits
 *
 * A queued change is the command line that made it, replayed through the
 * same command with ctx->replaying set.  Every change is idempotent against
 * W&B's state (a run that already ended is left alone, a pending run stays
 * pending), so a change delivered twice after a crash has the effect of one.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "wbsched/clock.h"
#include "wbsched/cleanup.h"
#include "wbsched/client.h"
#include "wbsched/error.h"
#include "wbsched/log.h"
#include "wbsched/run.h"
#include "wbsched/spool.h"

#include "hook.h"

/* How long a command waits for the spool's lock before using the inbox. */
#define LOCK_WAIT_MS 250

/* How many delivered changes share one fsync'd "done" mark during a flush. */
#define DONE_EVERY 256

/* Replays one queued change; returns its exit code (ctx->replay_err says why). */
static int replay(struct hook_ctx *ctx, struct json_object *event)
{
	struct json_object *jargv, *v;
	char **argv = NULL;
	size_t n;
	char *saved_entity = ctx->cfg.entity, *saved_project = ctx->cfg.project;
	int ret;

	if (!json_object_object_get_ex(event, "argv", &jargv) ||
	    !json_object_is_type(jargv, json_type_array) ||
	    (n = json_object_array_length(jargv)) == 0)
		return HOOK_EXIT_USAGE;
	argv = calloc(n + 1, sizeof(*argv));
	if (!argv)
		return HOOK_EXIT_FAILED;
	for (size_t i = 0; i < n; i++)
		argv[i] = (char *)json_object_get_string(json_object_array_get_idx(jargv, i));

	/* The entity and project the change was made with, not today's defaults. */
	ctx->cfg.entity = json_object_object_get_ex(event, "entity", &v) &&
					  json_object_is_type(v, json_type_string)
				  ? (char *)json_object_get_string(v)
				  : NULL;
	ctx->cfg.project = json_object_object_get_ex(event, "project", &v) &&
					   json_object_is_type(v, json_type_string)
				   ? (char *)json_object_get_string(v)
				   : saved_project;
	ctx->replaying = true;
	wbs_error_clear(&ctx->replay_err);
	ret = hook_run_command(ctx, (int)n, argv);
	ctx->replaying = false;
	ctx->cfg.entity = saved_entity;
	ctx->cfg.project = saved_project;
	free(argv);
	return ret;
}

/* A change queued for another W&B server is not delivered to this one. */
static bool for_this_server(struct hook_ctx *ctx, struct json_object *event)
{
	struct json_object *v;

	if (!json_object_object_get_ex(event, "base_url", &v) ||
	    !json_object_is_type(v, json_type_string))
		return true;
	return strcmp(json_object_get_string(v), wbs_config_base_url(&ctx->cfg)) == 0;
}

/* Shows a queued change as its command line. */
static void describe(struct json_object *event, char *buf, size_t size)
{
	struct json_object *jargv;
	size_t used = 0;

	buf[0] = '\0';
	if (!json_object_object_get_ex(event, "argv", &jargv))
		return;
	for (size_t i = 0; i < json_object_array_length(jargv) && used + 1 < size; i++) {
		int w = snprintf(buf + used, size - used, "%s%s", i ? " " : "",
				 json_object_get_string(json_object_array_get_idx(jargv, i)));

		if (w < 0)
			break;
		used += (size_t)w;
	}
}

/* A string member of an event, or NULL. */
static const char *event_string(struct json_object *event, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(event, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static bool same_string(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool is_start(struct json_object *event)
{
	struct json_object *argv;

	return json_object_object_get_ex(event, "argv", &argv) &&
	       json_object_is_type(argv, json_type_array) &&
	       json_object_array_length(argv) >= 2 &&
	       strcmp(json_object_get_string(json_object_array_get_idx(argv, 0)), "start") == 0;
}

/*
 * How many events from @i on are queued starts that can go in one request:
 * this server's, the same entity and project, each run once, at most
 * WBS_RUN_BATCH, none at or past @stop_seq.
 */
static size_t start_group(struct hook_ctx *ctx, struct wbs_spool_event *events, size_t n,
			  size_t i, unsigned long long stop_seq)
{
	const char *entity = event_string(events[i].obj, "entity");
	const char *project = event_string(events[i].obj, "project");
	size_t k = i;

	for (; k < n && k - i < WBS_RUN_BATCH; k++) {
		if ((stop_seq && events[k].seq >= stop_seq) || !is_start(events[k].obj) ||
		    !for_this_server(ctx, events[k].obj) ||
		    !same_string(entity, event_string(events[k].obj, "entity")) ||
		    !same_string(project, event_string(events[k].obj, "project")))
			break;
		for (size_t m = i; m < k; m++)
			if (strcmp(events[m].run, events[k].run) == 0)
				return k - i;
	}
	return k - i;
}

/* Delivers a group of queued starts in one request; returns an exit code. */
static int replay_starts(struct hook_ctx *ctx, struct wbs_spool_event *events, size_t n)
{
	char ***argvs = calloc(n, sizeof(*argvs));
	int *argcs = calloc(n, sizeof(*argcs));
	char *saved_entity = ctx->cfg.entity, *saved_project = ctx->cfg.project;
	int ret = HOOK_EXIT_FAILED, r;

	if (!argvs || !argcs)
		goto out;
	for (size_t i = 0; i < n; i++) {
		struct json_object *jargv;
		size_t words;

		json_object_object_get_ex(events[i].obj, "argv", &jargv);
		words = json_object_array_length(jargv);
		argvs[i] = calloc(words + 1, sizeof(**argvs));
		if (!argvs[i])
			goto out;
		for (size_t w = 0; w < words; w++)
			argvs[i][w] = (char *)json_object_get_string(
				json_object_array_get_idx(jargv, w));
		argcs[i] = (int)words;
	}
	ctx->cfg.entity = (char *)event_string(events[0].obj, "entity");
	ctx->cfg.project = event_string(events[0].obj, "project")
				   ? (char *)event_string(events[0].obj, "project")
				   : saved_project;
	wbs_error_clear(&ctx->replay_err);
	r = hook_start_many(ctx, (int)n, argvs, argcs, &ctx->replay_err);
	ctx->cfg.entity = saved_entity;
	ctx->cfg.project = saved_project;
	ret = hook_exit_code(r);
out:
	for (size_t i = 0; argvs && i < n; i++)
		free(argvs[i]);
	free(argvs);
	free(argcs);
	return ret;
}

/*
 * Delivers queued changes in order until one cannot go (W&B unavailable),
 * the queue is empty, @stop_seq (0: none) is reached, or @budget_ms (< 0:
 * none) is spent.  Consecutive queued starts go WBS_RUN_BATCH to a request.
 * Lock held.  Returns 0, or the exit code that stopped it; *ret_left counts
 * what stays.
 */
static int flush_locked(struct hook_ctx *ctx, struct wbs_spool *spool, long budget_ms,
			unsigned long long stop_seq, size_t *ret_left, size_t *ret_done)
{
	struct wbs_spool_event *events = NULL;
	struct wbs_error err = { 0 };
	long start = wbs_now_ms();
	size_t n = 0, i, skipped = 0, unmarked = 0;
	unsigned long long done_seq = 0;
	int ret = 0;

	*ret_left = 0;
	*ret_done = 0;
	if (wbs_spool_merge_incoming(spool, NULL, &err) < 0 ||
	    wbs_spool_pending(spool, &events, &n, &err) < 0) {
		wbs_err("%s", err.msg);
		return HOOK_EXIT_FAILED;
	}
	for (i = 0; i < n;) {
		char what[256];
		long left = budget_ms < 0 ? -1 : budget_ms - (wbs_now_ms() - start);
		size_t group = 1;
		int code = HOOK_EXIT_FAILED;

		if ((budget_ms >= 0 && left <= 0) || (stop_seq && events[i].seq >= stop_seq))
			break;
		if (!for_this_server(ctx, events[i].obj)) {
			skipped++; /* another W&B server's: it waits for a wbsched set up for it */
			i++;
			continue;
		}
		if (ctx->client)
			wbs_client_begin_ms(ctx->client, left < 0 ? ctx->cfg.budget_ms : left);
		if (is_start(events[i].obj) && (group = start_group(ctx, events, n, i, stop_seq)) > 1)
			code = replay_starts(ctx, events + i, group);
		/* one at a time, also when a group's request was refused as a whole */
		if (group == 1 || (code != HOOK_EXIT_OK && code != HOOK_EXIT_UNAVAILABLE &&
				   code != HOOK_EXIT_NOPERM)) {
			group = 1;
			code = replay(ctx, events[i].obj);
		}
		describe(events[i].obj, what, sizeof(what));
		if (code == HOOK_EXIT_UNAVAILABLE || code == HOOK_EXIT_NOPERM) {
			wbs_debug("queued change '%s' not delivered: %s", what, ctx->replay_err.msg);
			if (code == HOOK_EXIT_UNAVAILABLE)
				(void)wbs_spool_breaker_trip(spool, ctx->cfg.breaker_cooldown_ms,
							     NULL);
			ret = code;
			break;
		}
		if (code != HOOK_EXIT_OK)
			/* W&B refused it: it never will take it, do not block the rest. */
			wbs_warning("dropping queued change '%s' for run '%s': %s", what,
				    events[i].run, ctx->replay_err.msg);
		else
			wbs_debug("delivered %zu queued change%s from '%s'", group,
				  group == 1 ? "" : "s", what);
		for (size_t g = 0; g < group && ret == 0; g++, i++) {
			(*ret_done)++;
			if (skipped > 0) {
				/* behind another server's change: take it out of the middle */
				if (wbs_spool_remove(spool, events[i].seq, &err) < 0) {
					wbs_err("%s", err.msg);
					ret = HOOK_EXIT_FAILED;
				}
				continue;
			}
			/*
			 * The "done" mark moves over each change delivered (a rename:
			 * a kill -9 loses nothing), fsync'd only every DONE_EVERY
			 * changes and at the end, for speed: a power cut may replay
			 * the last few.
			 */
			done_seq = events[i].seq;
			if (++unmarked >= DONE_EVERY)
				unmarked = 0;
			if (wbs_spool_mark_done(spool, done_seq, unmarked == 0, &err) < 0) {
				wbs_err("%s", err.msg);
				ret = HOOK_EXIT_FAILED;
			}
		}
		if (ret != 0)
			break;
	}
	if (unmarked > 0 && wbs_spool_mark_done(spool, done_seq, true, &err) < 0) {
		wbs_err("%s", err.msg);
		ret = HOOK_EXIT_FAILED;
	}
	if (*ret_done > 0)
		(void)wbs_spool_compact(spool, NULL);
	*ret_left = n - *ret_done;
	if (ret == 0 && *ret_done > 0)
		wbs_spool_breaker_reset(spool);
	wbs_spool_events_free(events, n);
	return ret;
}

/* The change as the spool keeps it; caller json_object_put()s it. */
static struct json_object *make_event(struct hook_ctx *ctx, const char *run_key, int argc,
				      char **argv)
{
	struct json_object *ev = json_object_new_object(), *jargv = json_object_new_array();

	if (!ev || !jargv) {
		json_object_put(ev);
		json_object_put(jargv);
		return NULL;
	}
	for (int i = 0; i < argc; i++)
		json_object_array_add(jargv, json_object_new_string(argv[i]));
	json_object_object_add(ev, "run", json_object_new_string(run_key));
	json_object_object_add(ev, "base_url",
			       json_object_new_string(wbs_config_base_url(&ctx->cfg)));
	json_object_object_add(ev, "entity",
			       ctx->cfg.entity ? json_object_new_string(ctx->cfg.entity) : NULL);
	json_object_object_add(ev, "project",
			       json_object_new_string(wbs_config_project(&ctx->cfg)));
	json_object_object_add(ev, "argv", jargv);
	return ev;
}

/* Writes the change to the spool (before it is sent: a kill -9 loses nothing). */
static int write_ahead(struct hook_ctx *ctx, struct wbs_spool *spool, const char *run_key,
		       int argc, char **argv, unsigned long long *ret_seq, struct wbs_error *err)
{
	_cleanup_json_ struct json_object *ev = make_event(ctx, run_key, argc, argv);

	if (!ev)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	/* what others kept while the lock was taken goes first */
	if (wbs_spool_merge_incoming(spool, NULL, err) < 0)
		return err ? err->code : -EIO;
	return wbs_spool_append(spool, ev, ret_seq, err);
}

/* The change stays queued: say so; --strict takes it back and fails. */
static int keep_queued(struct hook_ctx *ctx, struct wbs_spool *spool, unsigned long long seq,
		       const char *run_key, const char *cmd, const char *why)
{
	if (ctx->strict) {
		if (seq)
			(void)wbs_spool_remove(spool, seq, NULL);
		wbs_err("%s; the change was not kept for later delivery", why);
		return HOOK_EXIT_UNAVAILABLE;
	}
	wbs_warning("%s; '%s' for run '%s' is kept in spool '%s' for later delivery", why, cmd,
		    run_key, wbs_spool_dir(spool));
	return HOOK_EXIT_OK;
}

int hook_deliver(struct hook_ctx *ctx, const char *run_key, int argc, char **argv,
		 hook_send_fn send, void *data, bool *ret_queued)
{
	struct wbs_client *client;
	struct wbs_spool *spool = NULL;
	struct wbs_error err = { 0 };
	unsigned long long seq = 0;
	size_t left = 0, done = 0;
	long cooldown = 0, t0 = wbs_now_ms();
	int ret, r;

	*ret_queued = false;
	ret = hook_client(ctx, &client);
	if (ret != 0)
		return ret;
	if (ctx->replaying) {
		r = send(ctx, client, data, &ctx->replay_err);
		return hook_exit_code(r);
	}

	if (wbs_spool_open(&ctx->cfg, &spool, &err) < 0)
		goto no_spool;
	if (wbs_spool_lock(spool, LOCK_WAIT_MS, &err) == -ETIMEDOUT && !ctx->strict) {
		/*
		 * Another wbsched holds the spool for long (a flush delivering a
		 * backlog): keep the change in the inbox; that flush, or the next
		 * wbsched, delivers it after what was queued before.
		 */
		_cleanup_json_ struct json_object *ev = make_event(ctx, run_key, argc, argv);

		wbs_error_clear(&err);
		if (ev && wbs_spool_append_unlocked(spool, ev, &err) == 0) {
			*ret_queued = true;
			wbs_warning("another wbsched is delivering the spool; '%s' for run '%s' is kept in spool '%s' for later delivery",
				    argv[0], run_key, wbs_spool_dir(spool));
			wbs_spool_close(spool);
			return HOOK_EXIT_OK;
		}
		goto no_spool;
	}
	if (err.code || write_ahead(ctx, spool, run_key, argc, argv, &seq, &err) < 0) {
no_spool:
		/* No spool: deliver now or say plainly that the change is lost. */
		wbs_err("%s", err.msg);
		wbs_spool_close(spool);
		wbs_error_clear(&err);
		wbs_client_begin(client);
		r = send(ctx, client, data, &err);
		if (r < 0 && wbs_error_is_unavailable(r)) {
			wbs_err("%s; the change was not kept for later delivery", err.msg);
			return HOOK_EXIT_UNAVAILABLE;
		}
		return r < 0 ? hook_fail(ctx, r, &err) : HOOK_EXIT_OK;
	}
	*ret_queued = true;
	if (seq == 0) {
		/* the very same change already waits for this run */
		ret = keep_queued(ctx, spool, 0, run_key, argv[0],
				  "the same change is already waiting");
		goto out;
	}

	/* An outage costs one timeout per node: while the breaker is open, queue at once. */
	if (wbs_spool_breaker_is_open(spool, &cooldown)) {
		char why[96];

		(void)snprintf(why, sizeof(why), "W&B was unavailable moments ago (retrying in %ld s)",
			       (cooldown + 999) / 1000);
		ret = keep_queued(ctx, spool, seq, run_key, argv[0], why);
		goto out;
	}
	/* What was queued before goes first. */
	(void)flush_locked(ctx, spool, ctx->cfg.flush_budget_ms, seq, &left, &done);
	if (wbs_spool_has_run(spool, run_key, seq)) {
		ret = keep_queued(ctx, spool, seq, run_key, argv[0],
				  "earlier changes to this run are still waiting");
		goto out;
	}
	/* The whole command keeps to the budget: the spool's work counts too. */
	wbs_client_begin_ms(client, ctx->cfg.budget_ms - (wbs_now_ms() - t0) > 1
					    ? ctx->cfg.budget_ms - (wbs_now_ms() - t0)
					    : 1);
	r = send(ctx, client, data, &err);
	if (r == 0 || !wbs_error_is_unavailable(r)) {
		/* delivered, or refused for good: either way it leaves the queue */
		if (wbs_spool_remove(spool, seq, &err) < 0)
			wbs_warning("%s", err.msg);
		*ret_queued = false;
		if (r == 0)
			wbs_spool_breaker_reset(spool);
		ret = r == 0 ? HOOK_EXIT_OK : hook_fail(ctx, r, &err);
	} else {
		(void)wbs_spool_breaker_trip(spool, ctx->cfg.breaker_cooldown_ms, NULL);
		ret = keep_queued(ctx, spool, seq, run_key, argv[0], err.msg);
	}
out:
	wbs_spool_close(spool);
	return ret;
}

static void print_status(struct wbs_spool *spool)
{
	struct wbs_spool_event *events = NULL;
	struct wbs_error err = { 0 };
	long long now = (long long)time(NULL) * 1000;
	long cooldown = 0;
	size_t n = 0;

	if (wbs_spool_pending(spool, &events, &n, &err) < 0) {
		wbs_err("%s", err.msg);
		return;
	}
	printf("spool %s: %zu change%s queued", wbs_spool_dir(spool), n, n == 1 ? "" : "s");
	if (wbs_spool_breaker_is_open(spool, &cooldown))
		printf(", W&B marked unavailable for %ld s more", (cooldown + 999) / 1000);
	putchar('\n');
	/* per run: count and the age of its oldest change */
	for (size_t i = 0; i < n; i++) {
		size_t count = 0;
		bool seen = false;

		for (size_t k = 0; k < i && !seen; k++)
			seen = strcmp(events[k].run, events[i].run) == 0;
		if (seen)
			continue;
		for (size_t k = i; k < n; k++)
			count += strcmp(events[k].run, events[i].run) == 0;
		printf("%s\t%zu\t%llds\n", events[i].run, count,
		       (now - events[i].at_ms) / 1000 > 0 ? (now - events[i].at_ms) / 1000 : 0);
	}
	wbs_spool_events_free(events, n);
}

int cmd_flush(struct hook_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "status", no_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct wbs_spool *spool = NULL;
	struct wbs_client *client;
	struct wbs_error err = { 0 };
	bool status = false;
	size_t left = 0, done = 0;
	int opt, ret;

	optind = 0;
	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		if (opt == 's') {
			status = true;
		} else if (opt == 'h') {
			hook_print_usage("flush");
			return HOOK_EXIT_OK;
		} else {
			return hook_usage_error("flush", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return hook_usage_error("flush", "unexpected argument '%s'", argv[optind]);
	if (wbs_spool_open(&ctx->cfg, &spool, &err) < 0 ||
	    wbs_spool_lock(spool, status ? ctx->cfg.budget_ms : 60000, &err) < 0) {
		wbs_err("%s", err.msg);
		wbs_spool_close(spool);
		return HOOK_EXIT_FAILED;
	}
	if (status) {
		print_status(spool);
		wbs_spool_close(spool);
		return HOOK_EXIT_OK;
	}
	{
		/* Nothing queued: nothing to say to W&B, no key needed (the timer runs this). */
		struct wbs_spool_event *events = NULL;
		size_t n = 0;

		if (wbs_spool_pending(spool, &events, &n, NULL) == 0 && n == 0) {
			if (!ctx->quiet)
				printf("delivered 0 changes, 0 queued\n");
			wbs_spool_close(spool);
			return HOOK_EXIT_OK;
		}
		wbs_spool_events_free(events, n);
	}
	ret = hook_client(ctx, &client);
	if (ret == 0) {
		/*
		 * An explicit flush tries now, whatever the breaker says, and goes
		 * on while others keep changes in the inbox meanwhile.
		 */
		size_t total = 0, more = 0;

		do {
			more = 0;
			ret = flush_locked(ctx, spool, -1, 0, &left, &done);
			total += done;
		} while (ret == 0 && wbs_spool_merge_incoming(spool, &more, NULL) == 0 &&
			 more > 0);
		done = total;
		if (ret == HOOK_EXIT_UNAVAILABLE)
			wbs_err("%s; %zu change%s still queued", ctx->replay_err.msg, left,
				left == 1 ? "" : "s");
		else if (ret == HOOK_EXIT_NOPERM)
			wbs_err("%s; %zu change%s still queued", ctx->replay_err.msg, left,
				left == 1 ? "" : "s");
		else if (!ctx->quiet)
			printf("delivered %zu change%s, %zu queued\n", done, done == 1 ? "" : "s",
			       left);
	}
	wbs_spool_close(spool);
	return ret;
}
