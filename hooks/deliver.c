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
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "wbsched/clock.h"
#include "wbsched/cleanup.h"
#include "wbsched/client.h"
#include "wbsched/creds.h"
#include "wbsched/error.h"
#include "wbsched/log.h"
#include "wbsched/run.h"
#include "wbsched/spool.h"

#include "hook.h"

/*
 * Of a command's budget, what its clock does not see: the exec and the
 * loading of libcurl's ~35 libraries before main(), the spool's bookkeeping
 * after the request and the exit (about 5-15 ms together).
 */
#define EXIT_RESERVE_MS 20

/* How long a command waits for the spool's lock before using the inbox. */
#define LOCK_WAIT_MS 250

/* Sets the entity and project a change was made with, not today's defaults. */
static void use_place(struct hook_ctx *ctx, const struct wbs_spool_event *ev, char *saved_project)
{
	ctx->cfg.entity = (char *)ev->entity;
	ctx->cfg.project = ev->project ? (char *)ev->project : saved_project;
}

/* Replays one queued change; returns its exit code (ctx->replay_err says why). */
static int replay(struct hook_ctx *ctx, const struct wbs_spool_event *ev)
{
	char *saved_entity = ctx->cfg.entity, *saved_project = ctx->cfg.project;
	int ret;

	if (ev->argc == 0)
		return HOOK_EXIT_USAGE;
	use_place(ctx, ev, saved_project);
	ctx->replaying = true;
	wbs_error_clear(&ctx->replay_err);
	ret = hook_run_command(ctx, ev->argc, ev->argv);
	ctx->replaying = false;
	ctx->cfg.entity = saved_entity;
	ctx->cfg.project = saved_project;
	return ret;
}

/* A change queued for another W&B server is not delivered to this one. */
static bool for_this_server(struct hook_ctx *ctx, const struct wbs_spool_event *ev)
{
	return !ev->base_url || strcmp(ev->base_url, wbs_config_base_url(&ctx->cfg)) == 0;
}

/* Shows a queued change as its command line. */
static void describe(int argc, char **argv, char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 0; i < argc && used + 1 < size; i++) {
		int w = snprintf(buf + used, size - used, "%s%s", i ? " " : "", argv[i]);

		if (w < 0)
			break;
		used += (size_t)w;
	}
}

/*
 * A flush of the queue.  Each run's changes go in the order they were made;
 * between runs, order does not matter (each change concerns one run), so
 * the flush goes in waves: every run's oldest waiting change, those of a
 * kind sent together (creates and starts WBS_RUN_BATCH to a request, the
 * reads of finishes too), then the next wave.  A `create` of many runs is a
 * barrier: it goes alone, after everything before it, before everything
 * after it.
 */
enum {
	WAITING,
	GONE,
	ELSEWHERE,
};

/*
 * What was delivered is recorded after every request (a kill -9 loses
 * nothing) and fsync'd every DURABLE_EVERY changes and at the end: a power
 * cut may deliver the last few again, which changes nothing.
 */
#define DURABLE_EVERY 256

struct flush {
	struct hook_ctx *ctx;
	struct wbs_spool *spool;
	struct wbs_spool_event *ev;
	size_t n;
	enum hook_kind *kind;
	size_t *run; /* the run each change concerns, as a number */
	size_t n_runs;
	char *state;   /* WAITING, GONE (delivered or dropped), ELSEWHERE (another server's) */
	size_t first;  /* no change before it is WAITING */
	size_t prefix; /* the changes before it are all GONE, and recorded so */
	unsigned long long *gone; /* delivered out of turn, not yet recorded */
	size_t n_gone;
	size_t done, unsynced;
	long start, budget_ms;
};

/* "project/id" of a run key "entity/project/id": an entity set or not, one run. */
static const char *run_of(const char *key)
{
	const char *slash = strchr(key, '/');

	return slash ? slash + 1 : key;
}

/* "entity/project/" of a run key: changes of one place go in one request. */
static size_t place_len(const char *key)
{
	const char *slash = strrchr(key, '/');

	return slash ? (size_t)(slash - key) : 0;
}

static bool same_place(const char *a, const char *b)
{
	size_t la = place_len(a);

	return la == place_len(b) && strncmp(a, b, la) == 0;
}

struct keyed {
	const char *key;
	size_t i;
};

/* By key, then in queue order. */
static int cmp_keyed(const void *a, const void *b)
{
	const struct keyed *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	return c ? c : (x->i > y->i) - (x->i < y->i);
}

static void flush_release(struct flush *f)
{
	free(f->kind);
	free(f->run);
	free(f->state);
	free(f->gone);
	wbs_spool_events_free(f->ev, f->n);
}

/* Sorts the changes: each one's kind and run. */
static int flush_prepare(struct flush *f)
{
	struct keyed *keys;
	size_t n = f->n;

	f->kind = calloc(n, sizeof(*f->kind));
	f->run = calloc(n, sizeof(*f->run));
	f->state = calloc(n, sizeof(*f->state));
	f->gone = calloc(n, sizeof(*f->gone));
	keys = calloc(n, sizeof(*keys));
	if (!f->kind || !f->run || !f->state || !f->gone || !keys) {
		free(keys);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		f->state[i] = for_this_server(f->ctx, &f->ev[i]) ? WAITING : ELSEWHERE;
		f->kind[i] = f->ev[i].argc ? hook_classify(f->ctx, f->ev[i].argc, f->ev[i].argv)
					   : HOOK_KIND_OTHER;
		keys[i] = (struct keyed){ run_of(f->ev[i].run), i };
	}
	/* runs numbered: sort by run, count the distinct ones */
	qsort(keys, n, sizeof(*keys), cmp_keyed);
	for (size_t k = 0; k < n; k++) {
		if (k > 0 && strcmp(keys[k].key, keys[k - 1].key) != 0)
			f->n_runs++;
		f->run[keys[k].i] = f->n_runs;
	}
	f->n_runs++;
	free(keys);
	return 0;
}

/* Records what was delivered: the "done" mark over the oldest, the rest as "gone". */
static int flush_save(struct flush *f, bool durable)
{
	struct wbs_error err = { 0 };
	unsigned long long done_seq;
	size_t k = 0, before = f->prefix;

	while (f->prefix < f->n && f->state[f->prefix] == GONE)
		f->prefix++;
	done_seq = f->prefix > 0 ? f->ev[f->prefix - 1].seq : 0;
	/* what the mark covers need not be listed */
	for (size_t i = 0; i < f->n_gone; i++)
		if (f->gone[i] > done_seq)
			f->gone[k++] = f->gone[i];
	durable = durable && f->unsynced > 0;
	if (f->prefix == before && k == 0 && !durable)
		return 0;
	if (wbs_spool_forget(f->spool, f->prefix > before || durable ? done_seq : 0, f->gone, k,
			     durable, &err) < 0) {
		wbs_err("%s", err.msg);
		return HOOK_EXIT_FAILED;
	}
	f->n_gone = 0;
	if (durable)
		f->unsynced = 0;
	return 0;
}

/*
 * What one change's attempt comes to: delivered, or refused for good (it
 * leaves the queue), or W&B unavailable (it stays; the flush stops).
 */
static int settle(struct flush *f, size_t i, int code, const char *why)
{
	char what[256];

	describe(f->ev[i].argc, f->ev[i].argv, what, sizeof(what));
	if (code == HOOK_EXIT_UNAVAILABLE || code == HOOK_EXIT_NOPERM) {
		wbs_debug("queued change '%s' not delivered: %s", what, why);
		if (code == HOOK_EXIT_UNAVAILABLE)
			(void)wbs_spool_breaker_trip(f->spool, f->ctx->cfg.breaker_cooldown_ms,
						     NULL);
		return code;
	}
	if (code != HOOK_EXIT_OK)
		/* W&B refused it: it never will take it, do not block the rest. */
		wbs_warning("dropping queued change '%s' for run '%s': %s", what, f->ev[i].run,
			    why);
	f->state[i] = GONE;
	f->gone[f->n_gone++] = f->ev[i].seq;
	f->done++;
	f->unsynced++;
	return 0;
}

/* Milliseconds left of the flush's budget (< 0: no budget), at least 1 while any. */
static long time_left(const struct flush *f)
{
	long left;

	if (f->budget_ms < 0)
		return -1;
	left = f->budget_ms - (wbs_now_ms() - f->start);
	return left > 0 ? left : 0;
}

/* Delivers changes one at a time; returns 0, the exit code that stopped it, or -1 (time). */
static int deliver_each(struct flush *f, const size_t *idx, size_t g)
{
	for (size_t k = 0; k < g; k++) {
		long left = time_left(f);
		int r;

		if (left == 0)
			return -1;
		if (f->ctx->client)
			wbs_client_begin_ms(f->ctx->client,
					    left < 0 ? f->ctx->cfg.budget_ms : left);
		r = settle(f, idx[k], replay(f->ctx, &f->ev[idx[k]]), f->ctx->replay_err.msg);
		if (r != 0)
			return r;
	}
	return 0;
}

/* Delivers changes of one kind and place together; as deliver_each(). */
static int deliver_group(struct flush *f, const size_t *idx, size_t g)
{
	struct hook_ctx *ctx = f->ctx;
	char *saved_entity = ctx->cfg.entity, *saved_project = ctx->cfg.project;
	enum hook_kind kind = f->kind[idx[0]];
	char ***argvs = NULL;
	int *argcs = NULL, *codes = NULL, code = HOOK_EXIT_FAILED, ret = 0;
	struct wbs_error *errs = NULL;
	long left = time_left(f);

	if (g == 1 || (kind != HOOK_KIND_CREATE && kind != HOOK_KIND_START &&
		       kind != HOOK_KIND_FINISH))
		return deliver_each(f, idx, g);
	if (left == 0)
		return -1;
	argvs = calloc(g, sizeof(*argvs));
	argcs = calloc(g, sizeof(*argcs));
	codes = calloc(g, sizeof(*codes));
	errs = calloc(g, sizeof(*errs));
	if (!argvs || !argcs || !codes || !errs) {
		ret = HOOK_EXIT_FAILED;
		goto out;
	}
	for (size_t k = 0; k < g; k++) {
		argvs[k] = f->ev[idx[k]].argv;
		argcs[k] = f->ev[idx[k]].argc;
	}
	use_place(ctx, &f->ev[idx[0]], saved_project);
	wbs_error_clear(&ctx->replay_err);
	if (kind == HOOK_KIND_FINISH) {
		int r = hook_finish_many(ctx, (int)g, argvs, argcs,
					 left < 0 ? 0 : wbs_now_ms() + left, codes, errs);

		code = hook_exit_code(r);
		ctx->replay_err = errs[0];
	} else {
		if (ctx->client)
			wbs_client_begin_ms(ctx->client, left < 0 ? ctx->cfg.budget_ms : left);
		code = hook_exit_code(hook_upsert_many(ctx, kind, (int)g, argvs, argcs,
						       &ctx->replay_err));
	}
	ctx->cfg.entity = saved_entity;
	ctx->cfg.project = saved_project;
	if (code == HOOK_EXIT_UNAVAILABLE || code == HOOK_EXIT_NOPERM) {
		ret = settle(f, idx[0], code, ctx->replay_err.msg);
		goto out;
	}
	if (code != HOOK_EXIT_OK) {
		/* refused as a whole: one at a time, so only the bad ones are dropped */
		wbs_debug("%zu queued changes not taken together (%s); one at a time", g,
			  ctx->replay_err.msg);
		ret = deliver_each(f, idx, g);
		goto out;
	}
	for (size_t k = 0; k < g && ret == 0; k++) {
		if (kind == HOOK_KIND_FINISH && codes[k] == -ECANCELED) {
			ret = -1; /* out of time */
			break;
		}
		if (kind == HOOK_KIND_FINISH && codes[k] < 0)
			ctx->replay_err = errs[k];
		ret = settle(f, idx[k], kind == HOOK_KIND_FINISH ? hook_exit_code(codes[k]) : 0,
			     kind == HOOK_KIND_FINISH ? errs[k].msg : "");
	}
	if (ret == 0)
		wbs_debug("delivered %zu queued changes together", g);
out:
	free(argvs);
	free(argcs);
	free(codes);
	free(errs);
	return ret;
}

/* Every run's oldest waiting change, up to a barrier or @stop_seq; how many. */
static size_t next_wave(struct flush *f, unsigned long long stop_seq, size_t *wave, bool *seen)
{
	size_t m = 0;

	memset(seen, 0, f->n_runs * sizeof(*seen));
	while (f->first < f->n && f->state[f->first] != WAITING)
		f->first++;
	for (size_t i = f->first; i < f->n; i++) {
		if (stop_seq && f->ev[i].seq >= stop_seq)
			break;
		if (f->state[i] != WAITING)
			continue;
		if (f->kind[i] == HOOK_KIND_BARRIER) {
			if (m == 0)
				wave[m++] = i;
			break;
		}
		if (seen[f->run[i]])
			continue;
		seen[f->run[i]] = true;
		wave[m++] = i;
	}
	return m;
}

/* Delivers a wave: changes of one kind and place together, in the order of the first. */
static int deliver_wave(struct flush *f, size_t *wave, size_t m, size_t *group)
{
	int ret = 0;

	for (size_t w = 0; w < m && ret == 0; w++) {
		size_t i = wave[w], g = 0;
		bool batch;

		if (i == SIZE_MAX)
			continue; /* went with an earlier group */
		batch = f->kind[i] == HOOK_KIND_CREATE || f->kind[i] == HOOK_KIND_START ||
			f->kind[i] == HOOK_KIND_FINISH;
		group[g++] = i;
		for (size_t x = w + 1; batch && x < m && g < WBS_RUN_BATCH; x++) {
			if (wave[x] == SIZE_MAX || f->kind[wave[x]] != f->kind[i] ||
			    !same_place(f->ev[i].run, f->ev[wave[x]].run))
				continue;
			group[g++] = wave[x];
			wave[x] = SIZE_MAX;
		}
		ret = deliver_group(f, group, g);
		if (f->done > 0) {
			int r = flush_save(f, f->unsynced >= DURABLE_EVERY);

			ret = ret == 0 ? r : ret;
		}
	}
	return ret;
}

/*
 * Delivers queued changes until one cannot go (W&B unavailable), the queue
 * is empty, @stop_seq (0: none) is reached, or @budget_ms (< 0: none) is
 * spent.  Lock held.  Returns 0, or the exit code that stopped it;
 * *ret_left counts what stays, *ret_done what left the queue.
 */
static int flush_locked(struct hook_ctx *ctx, struct wbs_spool *spool, long budget_ms,
			unsigned long long stop_seq, size_t *ret_left, size_t *ret_done)
{
	struct flush f = { .ctx = ctx, .spool = spool, .start = wbs_now_ms(),
			   .budget_ms = budget_ms };
	struct wbs_error err = { 0 };
	size_t *wave = NULL, *group = NULL, m;
	bool *seen = NULL;
	int ret = 0, r;

	*ret_left = 0;
	*ret_done = 0;
	if (wbs_spool_merge_incoming(spool, NULL, &err) < 0 ||
	    wbs_spool_pending(spool, &f.ev, &f.n, &err) < 0) {
		wbs_err("%s", err.msg);
		return HOOK_EXIT_FAILED;
	}
	if (f.n == 0)
		return 0;
	if (flush_prepare(&f) < 0 || !(wave = calloc(f.n, sizeof(*wave))) ||
	    !(group = calloc(WBS_RUN_BATCH, sizeof(*group))) ||
	    !(seen = calloc(f.n_runs, sizeof(*seen)))) {
		wbs_err("out of memory");
		ret = HOOK_EXIT_FAILED;
		goto out;
	}
	while (ret == 0 && (m = next_wave(&f, stop_seq, wave, seen)) > 0)
		ret = deliver_wave(&f, wave, m, group);
	r = flush_save(&f, true);
	ret = ret == 0 || ret == -1 ? r : ret; /* out of time: the rest waits for the next */
	if (f.done > 0)
		(void)wbs_spool_compact(spool, NULL);
	*ret_done = f.done;
	*ret_left = f.n - f.done;
	if (ret == 0 && f.done > 0)
		wbs_spool_breaker_reset(spool);
out:
	free(wave);
	free(group);
	free(seen);
	flush_release(&f);
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
	long cooldown = 0, t0 = ctx->start_ms ? ctx->start_ms : wbs_now_ms(), left_ms;
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
	/*
	 * The whole command keeps to the budget: its start and the spool's work
	 * count too, and EXIT_RESERVE_MS of it is kept for what the clock does
	 * not see.
	 */
	left_ms = ctx->cfg.budget_ms - (wbs_now_ms() - t0) - EXIT_RESERVE_MS;
	wbs_client_begin_ms(client, left_ms > 1 ? left_ms : 1);
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
	struct keyed *keys;
	long cooldown = 0;
	size_t n = 0, shown, *count;

	if (wbs_spool_pending(spool, &events, &n, &err) < 0) {
		wbs_err("%s", err.msg);
		return;
	}
	printf("spool %s: %zu change%s queued", wbs_spool_dir(spool), n, n == 1 ? "" : "s");
	if (wbs_spool_breaker_is_open(spool, &cooldown))
		printf(", W&B marked unavailable for %ld s more", (cooldown + 999) / 1000);
	putchar('\n');
	/* per run, in the order of its oldest change: the count and that change's age */
	keys = calloc(n ? n : 1, sizeof(*keys));
	count = calloc(n ? n : 1, sizeof(*count));
	shown = keys && count ? n : 0;
	if (shown < n)
		wbs_err("out of memory");
	for (size_t i = 0; i < shown; i++)
		keys[i] = (struct keyed){ events[i].run, i };
	if (shown > 1)
		qsort(keys, shown, sizeof(*keys), cmp_keyed);
	for (size_t a = 0, b; a < shown; a = b) {
		for (b = a + 1; b < shown && strcmp(keys[b].key, keys[a].key) == 0; b++)
			;
		count[keys[a].i] = b - a;
	}
	for (size_t i = 0; i < shown; i++)
		if (count[i] > 0)
			printf("%s\t%zu\t%llds\n", events[i].run, count[i],
			       (now - events[i].at_ms) / 1000 > 0 ? (now - events[i].at_ms) / 1000
								  : 0);
	free(keys);
	free(count);
	wbs_spool_events_free(events, n);
}

/*
 * Delivers (or, with @status, shows) the caller's own queue.  @who (NULL: a
 * plain flush) names the user when root goes through everyone's queues: an
 * empty queue then says nothing, and a user without a key of their own is
 * told about, not failed.
 */
static int flush_own(struct hook_ctx *ctx, bool status, const char *who)
{
	struct wbs_spool *spool = NULL;
	struct wbs_client *client;
	struct wbs_error err = { 0 };
	size_t left = 0, done = 0, n = 0, total = 0, more = 0;
	struct wbs_spool_event *events = NULL;
	const char *prefix = who ? who : "", *colon = who ? ": " : "";
	int ret;

	if (wbs_spool_open(&ctx->cfg, &spool, &err) < 0 ||
	    wbs_spool_lock(spool, status ? ctx->cfg.budget_ms : 60000, &err) < 0) {
		wbs_err("%s", err.msg);
		wbs_spool_close(spool);
		return HOOK_EXIT_FAILED;
	}
	(void)wbs_spool_merge_incoming(spool, NULL, NULL);
	if (wbs_spool_pending(spool, &events, &n, &err) < 0) {
		wbs_err("%s", err.msg);
		wbs_spool_close(spool);
		return HOOK_EXIT_FAILED;
	}
	wbs_spool_events_free(events, n);
	if (status) {
		if (!who || n > 0)
			print_status(spool);
		wbs_spool_close(spool);
		return HOOK_EXIT_OK;
	}
	if (n == 0) {
		/* Nothing queued: nothing to say to W&B, no key needed (the timer runs this). */
		if (!ctx->quiet && !who)
			printf("delivered 0 changes, 0 queued\n");
		wbs_spool_close(spool);
		return HOOK_EXIT_OK;
	}
	if (who && geteuid() != 0) {
		char *key = NULL;
		int r = wbs_creds_load(&ctx->cfg, &key, &err);

		wbs_creds_free_key(key);
		if (r == -ENOENT) {
			/* e.g. a key only in the environment of their jobs: not root's to find */
			if (!ctx->quiet)
				printf("%s: no W&B API key of theirs; %zu change%s wait for their next wbsched\n",
				       who, n, n == 1 ? "" : "s");
			wbs_spool_close(spool);
			return HOOK_EXIT_OK;
		}
	}
	ret = hook_client(ctx, &client);
	if (ret != 0) {
		wbs_spool_close(spool);
		return ret;
	}
	/*
	 * An explicit flush tries now, whatever the breaker says, and goes on
	 * while others keep changes in the inbox meanwhile.
	 */
	do {
		more = 0;
		ret = flush_locked(ctx, spool, -1, 0, &left, &done);
		total += done;
	} while (ret == 0 && wbs_spool_merge_incoming(spool, &more, NULL) == 0 && more > 0);
	if (ret == HOOK_EXIT_UNAVAILABLE || ret == HOOK_EXIT_NOPERM)
		wbs_err("%s; %zu change%s still queued", ctx->replay_err.msg, left,
			left == 1 ? "" : "s");
	else if (!ctx->quiet)
		printf("%s%sdelivered %zu change%s, %zu queued\n", prefix, colon, total,
		       total == 1 ? "" : "s", left);
	wbs_spool_close(spool);
	return ret;
}

/* Becomes @pw for good: its groups, its gid, its uid, its home; root's key left behind. */
static int become(struct hook_ctx *ctx, const struct passwd *pw)
{
	if (pw->pw_uid != 0 &&
	    (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
	     setuid(pw->pw_uid) < 0 || setuid(0) == 0))
		return -1;
	if (pw->pw_uid != 0) {
		/* the user's own key: their ~/.netrc, read as them */
		ctx->cfg.api_key_file = NULL;
		if (unsetenv("WANDB_API_KEY") < 0 || unsetenv("NETRC") < 0 ||
		    setenv("HOME", pw->pw_dir, 1) < 0)
			return -1;
	}
	return 0;
}

static int cmp_uid(const void *a, const void *b)
{
	uid_t x = *(const uid_t *)a, y = *(const uid_t *)b;

	return x < y ? -1 : x > y;
}

/* The uids that have a queue under spool_dir: directories named by, and owned by, a uid. */
static int queue_owners(const char *base, uid_t **ret, size_t *ret_n)
{
	DIR *d = opendir(base);
	struct dirent *e;
	uid_t *uids = NULL;
	size_t n = 0, cap = 0;

	*ret = NULL;
	*ret_n = 0;
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d))) {
		struct stat st;
		char *end;
		unsigned long uid;

		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		errno = 0;
		uid = strtoul(e->d_name, &end, 10);
		if (errno || *end || uid > UINT32_MAX - 1 ||
		    fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode) || st.st_uid != (uid_t)uid)
			continue;
		if (n == cap) {
			uid_t *bigger = realloc(uids, (cap = cap ? cap * 2 : 16) * sizeof(*uids));

			if (!bigger) {
				free(uids);
				(void)closedir(d);
				return -ENOMEM;
			}
			uids = bigger;
		}
		uids[n++] = (uid_t)uid;
	}
	(void)closedir(d);
	if (n > 1)
		qsort(uids, n, sizeof(*uids), cmp_uid);
	*ret = uids;
	*ret_n = n;
	return 0;
}

/*
 * Root goes through every user's queue, each in a child that has become the
 * user and reads the user's own key, as the plugin does on the nodes: a
 * user's changes are delivered even if they never run wbsched on this node
 * again.  Stops at the first W&B outage (the rest wait for the next flush).
 */
static int flush_all_users(struct hook_ctx *ctx, bool status)
{
	const char *base = wbs_config_spool_dir(&ctx->cfg);
	uid_t *uids = NULL;
	size_t n = 0;
	int r, ret = HOOK_EXIT_OK;

	if (geteuid() != 0)
		return hook_usage_error("flush",
					"--all-users needs root: each queue is delivered as its user");
	r = queue_owners(base, &uids, &n);
	if (r < 0) {
		wbs_err("cannot list spool '%s': %s", base, strerror(-r));
		return HOOK_EXIT_FAILED;
	}
	(void)fflush(NULL);
	for (size_t i = 0; i < n && ret != HOOK_EXIT_UNAVAILABLE; i++) {
		struct passwd *pw = getpwuid(uids[i]);
		int wstatus = 0, code;
		pid_t pid;

		if (!pw) {
			wbs_warning("spool '%s/%u': no such user; left as it is", base,
				    (unsigned)uids[i]);
			continue;
		}
		pid = fork();
		if (pid < 0) {
			wbs_err("cannot fork: %s", strerror(errno));
			ret = HOOK_EXIT_FAILED;
			break;
		}
		if (pid == 0) {
			char who[64];

			(void)snprintf(who, sizeof(who), "%s: ", pw->pw_name);
			wbs_log_set_prefix(who);
			if (become(ctx, pw) < 0) {
				wbs_err("cannot become the user: %s", strerror(errno));
				_exit(HOOK_EXIT_FAILED);
			}
			code = flush_own(ctx, status, pw->pw_name);
			(void)fflush(NULL);
			_exit(code);
		}
		while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
			;
		code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : HOOK_EXIT_FAILED;
		if (code != HOOK_EXIT_OK && ret != HOOK_EXIT_FAILED)
			ret = code;
	}
	if (ret == HOOK_EXIT_UNAVAILABLE && !ctx->quiet)
		wbs_warning("W&B unavailable: the other users' queues wait for the next flush");
	free(uids);
	return ret;
}

int cmd_flush(struct hook_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "status", no_argument, NULL, 's' },
		{ "all-users", no_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	bool status = false, all = false;
	int opt;

	optind = 0;
	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		if (opt == 's') {
			status = true;
		} else if (opt == 'a') {
			all = true;
		} else if (opt == 'h') {
			hook_print_usage("flush");
			return HOOK_EXIT_OK;
		} else {
			return hook_usage_error("flush", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return hook_usage_error("flush", "unexpected argument '%s'", argv[optind]);
	return all ? flush_all_users(ctx, status) : flush_own(ctx, status, NULL);
}
