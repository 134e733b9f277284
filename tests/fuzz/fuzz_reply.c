/*
 * fuzz_reply: what W&B sends back, and what the spool reads back.
 *
 * The input is one HTTP reply body.  It goes to:
 *   - wbs_graphql_parse_response() directly;
 *   - a client whose transport answers every request with the input (200; and
 *     once 400, for the "errors" quoted from a failed status), so that the
 *     JSON shape handling of lib/run.c and lib/transition.c runs on it:
 *     read, create, create_unless_alive, start, preempting, heartbeat
 *     (default entity), finish, fail (summary merge, updateRunState, the
 *     server feature fallback), requeue and one poll of wait;
 *   - the spool (lib/spool.c), as the content of its queue file:
 *     wbs_spool_pending(), wbs_spool_has_run(), wbs_spool_append() (coalescing,
 *     torn last line; a coalesced change writes nothing, a written one is
 *     pending), wbs_spool_remove() (of the new event, and of one in
 *     the middle: the queue is rewritten), wbs_spool_mark_done() and
 *     wbs_spool_compact().
 * Nothing touches the network; files live in a private temporary directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "wbsched/client.h"
#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/graphql.h"
#include "wbsched/log.h"
#include "wbsched/run.h"
#include "wbsched/spool.h"
#include "wbsched/transport.h"

#include "fuzz.h"

#define MAX_POSTS 32 /* per operation; then the transport fails for good */

/* The transport: every request gets the input as its answer. */
static struct {
	const uint8_t *body;
	size_t len;
	long status;
	unsigned posts;
} answer;

static int answer_post(void *ctx, const struct wbs_http_request *req,
		       struct wbs_http_response *ret_resp, struct wbs_error *err)
{
	char *body;

	(void)ctx;
	FUZZ_CHECK(req->url && req->body && req->body_len == strlen(req->body));
	if (answer.posts++ >= MAX_POSTS)
		return wbs_error_set(err, -EACCES, "fuzz transport: too many requests");
	/* As from libcurl: NUL-terminated, but the length is what counts. */
	body = fuzz_strdup(answer.body, answer.len);
	*ret_resp = (struct wbs_http_response){
		.status = answer.status,
		.body = body,
		.body_len = answer.len,
		.retry_after_ms = -1,
	};
	return 0;
}

static void answer_free(void *ctx)
{
	(void)ctx;
}

static const struct wbs_transport_ops answer_ops = {
	.post = answer_post,
	.free = answer_free,
};

static struct wbs_config cfg;
static struct wbs_client *client;
static struct wbs_run_ref refs[2]; /* team/proj/run-1, (default entity)/proj/run-2 */
static struct wbs_spool *spool;
static int spool_dirfd = -1;

static void quiet_sink(void *userdata, int level, const char *msg)
{
	(void)userdata;
	(void)level;
	(void)msg;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct wbs_transport t = { .ops = &answer_ops, .ctx = NULL };
	struct wbs_error err = { 0 };
	char dir[4200];

	(void)argc;
	(void)argv;
	wbs_log_set_sink(quiet_sink, NULL);
	wbs_config_init(&cfg);
	(void)snprintf(dir, sizeof(dir), "%s/spool", fuzz_tmpdir());
	if (wbs_config_set(&cfg, "base_url", "http://127.0.0.1:1", NULL, &err) < 0 ||
	    wbs_config_set(&cfg, "spool_dir", dir, NULL, &err) < 0 ||
	    wbs_config_set(&cfg, "budget_ms", "3600000", NULL, &err) < 0 ||
	    wbs_config_set(&cfg, "max_retries", "0", NULL, &err) < 0 || /* no backoff sleeps */
	    wbs_client_new(&cfg, &t, "fuzz-api-key", &client, &err) < 0 ||
	    wbs_run_ref_set(&refs[0], "team", "proj", "run-1", &err) < 0 ||
	    wbs_run_ref_set(&refs[1], NULL, "proj", "run-2", &err) < 0 ||
	    wbs_spool_open(&cfg, &spool, &err) < 0) {
		fprintf(stderr, "fuzz_reply: %s\n", err.msg);
		abort();
	}
	spool_dirfd = open(wbs_spool_dir(spool), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (spool_dirfd < 0)
		abort();
	return 0;
}

static void release_infos(struct wbs_run_info *infos, size_t n)
{
	for (size_t i = 0; i < n; i++)
		wbs_run_info_release(&infos[i]);
}

/* Before each operation: a fresh budget and request count. */
static void begin(long status)
{
	answer.status = status;
	answer.posts = 0;
	wbs_client_begin(client);
}

static void check_result(int r, const struct wbs_error *err)
{
	FUZZ_CHECK(r <= 0);
	FUZZ_CHECK(r == 0 || err->code != 0);
}

static void parse_only(const uint8_t *data, size_t size)
{
	struct json_object *obj = NULL;
	struct wbs_error err = { 0 };
	int r = wbs_graphql_parse_response((const char *)data, size, &obj, &err);

	check_result(r, &err);
	if (r == 0) {
		FUZZ_CHECK(json_object_is_type(obj, json_type_object));
		(void)wbs_json_path_string(obj, "r0.run.project.entity.name");
		(void)wbs_json_path(obj, "r0.bucket.exitcode");
		json_object_put(obj);
	} else {
		FUZZ_CHECK(obj == NULL);
	}
}

static void run_operations(void)
{
	static const char *const tags[] = { "a", "b" };
	struct json_object *config = json_object_new_object();
	struct wbs_run_spec specs[2] = {
		{ .id = "run-1",
		  .state = "pending",
		  .display_name = "job 1",
		  .group = "g",
		  .job_type = "train",
		  .notes = "n",
		  .tags = tags,
		  .n_tags = 2,
		  .config = config },
		{ .id = "run-2", .state = "running" },
	};
	struct wbs_wait_opts wait_opts = { .timeout_ms = 0,
					   .interval_ms = 100,
					   .max_interval_ms = 100 };
	struct wbs_run_info infos[2] = { 0 };
	struct json_object *data = NULL;
	struct wbs_error err = { 0 };
	int r;

	json_object_object_add(config, "lr", json_object_new_double(0.1));

	begin(200);
	r = wbs_run_read(client, refs, 2, infos, &err);
	check_result(r, &err);
	if (r == 0)
		FUZZ_CHECK(infos[0].id && infos[1].id && infos[1].entity);
	release_infos(infos, 2);

	begin(200);
	wbs_error_clear(&err);
	r = wbs_run_create(client, "team", "proj", specs, 2, infos, &err);
	check_result(r, &err);
	release_infos(infos, 2);

	begin(200);
	wbs_error_clear(&err);
	check_result(wbs_run_create_unless_alive(client, "team", "proj", specs, 2, infos, &err),
		     &err);
	release_infos(infos, 2);

	begin(200);
	wbs_error_clear(&err);
	check_result(wbs_run_start(client, &refs[0], &specs[0], &infos[0], &err), &err);
	begin(200);
	wbs_error_clear(&err);
	check_result(wbs_run_preempting(client, &refs[0], &infos[0], &err), &err);
	begin(200);
	wbs_error_clear(&err);
	check_result(wbs_run_heartbeat(client, &refs[1], &err), &err);
	begin(200);
	wbs_error_clear(&err);
	check_result(wbs_run_finish(client, &refs[0], 3, &infos[0], &err), &err);
	begin(200);
	wbs_error_clear(&err);
	check_result(wbs_run_fail(client, &refs[0], "node failure", 1, &infos[0], &err), &err);
	begin(200);
	wbs_error_clear(&err);
	check_result(wbs_run_requeue(client, &refs[1], "preempted", NULL, &err), &err);
	release_infos(infos, 1);

	begin(200);
	wbs_error_clear(&err);
	r = wbs_run_wait(client, refs, 2, &wait_opts, NULL, NULL, infos, &err);
	FUZZ_CHECK(r <= 0);
	release_infos(infos, 2);

	/* A failed status quotes the "errors" of its body. */
	begin(400);
	wbs_error_clear(&err);
	r = wbs_client_graphql(client, "Viewer", "query Viewer { viewer { entity } }", NULL, &data,
			       &err);
	FUZZ_CHECK(r < 0 && !data && err.http_status == 400);
	json_object_put(config);
}

static off_t queue_size(void)
{
	struct stat st;

	return fstatat(spool_dirfd, "queue", &st, 0) == 0 ? st.st_size : -1;
}

static bool is_pending(unsigned long long seq)
{
	struct wbs_spool_event *events = NULL;
	bool found = false;
	size_t n = 0;

	FUZZ_CHECK(wbs_spool_pending(spool, &events, &n, NULL) == 0);
	for (size_t i = 0; i < n && !found; i++)
		found = events[i].seq == seq;
	wbs_spool_events_free(events, n);
	return found;
}

static void spool_queue(const uint8_t *data, size_t size)
{
	struct wbs_spool_event *events = NULL;
	struct json_object *ev, *argv;
	struct wbs_error err = { 0 };
	unsigned long long seq = 0;
	size_t n = 0;
	off_t before;
	int fd, r;

	fd = openat(spool_dirfd, "queue", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(write(fd, data, size) == (ssize_t)size);
	(void)close(fd);
	(void)unlinkat(spool_dirfd, "done", 0);
	(void)unlinkat(spool_dirfd, "gone", 0);

	FUZZ_CHECK(wbs_spool_lock(spool, 0, &err) == 0);
	r = wbs_spool_pending(spool, &events, &n, &err);
	check_result(r, &err);
	for (size_t i = 0; r == 0 && i < n; i++)
		FUZZ_CHECK(events[i].run && events[i].argv && !events[i].argv[events[i].argc]);
	(void)wbs_spool_has_run(spool, "team/proj/run-1", 0);

	/* The same change as the last one for its run is coalesced, others appended. */
	ev = json_object_new_object();
	argv = json_object_new_array();
	json_object_array_add(argv, json_object_new_string("finish"));
	json_object_array_add(argv, json_object_new_string("team/proj/run-1"));
	json_object_object_add(ev, "run", json_object_new_string("team/proj/run-1"));
	json_object_object_add(ev, "argv", argv);
	wbs_error_clear(&err);
	before = queue_size();
	r = wbs_spool_append(spool, ev, &seq, &err);
	check_result(r, &err);
	json_object_put(ev);
	/* The header's promise: coalesced (0) writes nothing; a written change will be delivered.
	 */
	if (r == 0 && seq == 0)
		FUZZ_CHECK(queue_size() == before);
	if (r == 0 && seq > 0)
		FUZZ_CHECK(is_pending(seq));
	if (r == 0 && seq > 0) {
		(void)wbs_spool_has_run(spool, "team/proj/run-1", seq);
		wbs_error_clear(&err);
		check_result(wbs_spool_remove(spool, seq, &err), &err);
	}

	if (n > 1) {
		wbs_error_clear(&err);
		check_result(wbs_spool_remove(spool, events[n / 2].seq, &err), &err);
	}
	if (n > 0) {
		wbs_error_clear(&err);
		check_result(wbs_spool_mark_done(spool, events[n - 1].seq, false, &err), &err);
		wbs_error_clear(&err);
		check_result(wbs_spool_compact(spool, &err), &err);
	}
	wbs_spool_events_free(events, n);
	wbs_spool_unlock(spool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	answer.body = data;
	answer.len = size;
	parse_only(data, size);
	run_operations();
	spool_queue(data, size);
	return 0;
}
