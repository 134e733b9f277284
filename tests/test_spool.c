/* The durable spool: order, coalescing, durability marks, caps, permissions. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <json-c/json.h>

#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/spool.h"

static struct wbs_config cfg;
static struct wbs_spool *spool;
static char base[64];

static void setup(void)
{
	snprintf(base, sizeof(base), "/tmp/wbs-spool-XXXXXX");
	cr_assert_not_null(mkdtemp(base));
	wbs_config_init(&cfg);
	cr_assert_eq(wbs_config_set(&cfg, "spool_dir", base, NULL, NULL), 0);
	cr_assert_eq(wbs_spool_open(&cfg, &spool, NULL), 0);
	cr_assert_eq(wbs_spool_lock(spool, 1000, NULL), 0);
}

static void teardown(void)
{
	char cmd[128];

	wbs_spool_close(spool);
	wbs_config_release(&cfg);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
	(void)!system(cmd);
}

TestSuite(spool, .init = setup, .fini = teardown, .timeout = 10);

static void add(const char *run, const char *cmd)
{
	char text[256];
	struct json_object *ev;

	snprintf(text, sizeof(text), "{\"run\":\"%s\",\"argv\":[\"%s\",\"%s\"]}", run, cmd, run);
	ev = json_tokener_parse(text);
	cr_assert_eq(wbs_spool_append(spool, ev, NULL, NULL), 0);
	json_object_put(ev);
}

static char *pending_joined(void)
{
	struct wbs_spool_event *ev;
	size_t n;
	char *out = calloc(1, 1024);

	cr_assert_eq(wbs_spool_pending(spool, &ev, &n, NULL), 0);
	for (size_t i = 0; i < n; i++)
		snprintf(out + strlen(out), 1024 - strlen(out), "%s%llu:%s", i ? "," : "",
			 ev[i].seq, ev[i].argc > 0 ? ev[i].argv[0] : "?");
	wbs_spool_events_free(ev, n);
	return out;
}

Test(spool, keeps_events_in_order_and_coalesces_repeats)
{
	char *p;

	add("e/p/a", "start");
	add("e/p/b", "start");
	add("e/p/a", "preempting");
	add("e/p/a", "preempting"); /* the same change again: one */
	add("e/p/a", "requeue");
	p = pending_joined();
	cr_assert_str_eq(p, "1:start,2:start,3:preempting,4:requeue");
	free(p);
	cr_assert(wbs_spool_has_run(spool, "e/p/b", 0));
	cr_assert_not(wbs_spool_has_run(spool, "e/p/c", 0));
	cr_assert(wbs_spool_has_run(spool, "e/p/a", 2));
	cr_assert_not(wbs_spool_has_run(spool, "e/p/b", 2));
}

Test(spool, delivered_events_are_not_read_again_and_numbers_go_on)
{
	char *p;

	add("e/p/a", "start");
	add("e/p/a", "finish");
	cr_assert_eq(wbs_spool_mark_done(spool, 1, true, NULL), 0);
	p = pending_joined();
	cr_assert_str_eq(p, "2:finish");
	free(p);
	cr_assert_eq(wbs_spool_mark_done(spool, 2, true, NULL), 0);
	cr_assert_eq(wbs_spool_compact(spool, NULL), 0);
	p = pending_joined();
	cr_assert_str_eq(p, "");
	free(p);
	add("e/p/a", "start");
	p = pending_joined();
	cr_assert_str_eq(p, "3:start");
	free(p);
}

Test(spool, one_event_can_be_taken_out_of_turn)
{
	unsigned long long seq = 0;
	struct json_object *ev = json_tokener_parse("{\"run\":\"e/p/c\",\"argv\":[\"finish\"]}");
	char *p;

	add("e/p/a", "start");
	cr_assert_eq(wbs_spool_append(spool, ev, &seq, NULL), 0);
	cr_assert_eq(seq, 2);
	add("e/p/b", "start");
	cr_assert_eq(wbs_spool_remove(spool, 2, NULL), 0);
	p = pending_joined();
	cr_assert_str_eq(p, "1:start,3:start");
	free(p);
	cr_assert_eq(wbs_spool_remove(spool, 1, NULL), 0);
	p = pending_joined();
	cr_assert_str_eq(p, "3:start");
	free(p);
	/* coalesced: the same change for the same run is already queued */
	add("e/p/c", "start");
	cr_assert_eq(wbs_spool_append(spool, ev, &seq, NULL), 0);
	cr_assert_neq(seq, 0);
	cr_assert_eq(wbs_spool_append(spool, ev, &seq, NULL), 0);
	cr_assert_eq(seq, 0);
	json_object_put(ev);
}

/* A flush delivers each run's oldest change first, so not always in queue order. */
Test(spool, events_delivered_out_of_turn_are_not_read_again)
{
	const unsigned long long later[] = { 4, 2 };
	char path[128], *p;
	struct stat st;

	add("e/p/a", "create");
	add("e/p/b", "create");
	add("e/p/a", "start");
	add("e/p/b", "start");
	add("e/p/a", "finish");
	/* 1 and 2 in a row (the mark moves), 4 further on (listed as gone) */
	cr_assert_eq(wbs_spool_forget(spool, 1, later, 2, false, NULL), 0);
	p = pending_joined();
	cr_assert_str_eq(p, "3:start,5:finish");
	free(p);
	/* a second process sees the same: it is on disk */
	wbs_spool_close(spool);
	cr_assert_eq(wbs_spool_open(&cfg, &spool, NULL), 0);
	cr_assert_eq(wbs_spool_lock(spool, 1000, NULL), 0);
	p = pending_joined();
	cr_assert_str_eq(p, "3:start,5:finish");
	free(p);
	/* nothing is emptied while something waits */
	cr_assert_eq(wbs_spool_compact(spool, NULL), 0);
	add("e/p/c", "start");
	p = pending_joined();
	cr_assert_str_eq(p, "3:start,5:finish,6:start");
	free(p);

	/* all delivered, the last out of turn: emptied, and numbers are never used twice */
	cr_assert_eq(wbs_spool_forget(spool, 3, (const unsigned long long[]){ 6, 5 }, 2, true,
				      NULL),
		     0);
	cr_assert_eq(wbs_spool_compact(spool, NULL), 0);
	snprintf(path, sizeof(path), "%s/%u/queue", base, (unsigned)geteuid());
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_size, 0);
	snprintf(path, sizeof(path), "%s/%u/gone", base, (unsigned)geteuid());
	cr_assert_eq(stat(path, &st), -1, "'gone' should go with the queue's contents");
	add("e/p/d", "start");
	p = pending_joined();
	cr_assert_str_eq(p, "7:start");
	free(p);
}

Test(spool, a_damaged_line_of_the_delivered_list_is_skipped)
{
	char path[128], *p;
	FILE *f;

	add("e/p/a", "start");
	add("e/p/b", "start");
	add("e/p/c", "start");
	snprintf(path, sizeof(path), "%s/%u/gone", base, (unsigned)geteuid());
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("x7y\n\n2\n", f);
	fclose(f);
	p = pending_joined();
	cr_assert_str_eq(p, "1:start,3:start");
	free(p);
}

Test(spool, a_torn_last_line_is_ignored_and_overwritten)
{
	char path[128], *p;
	int fd;

	add("e/p/a", "start");
	snprintf(path, sizeof(path), "%s/queue", wbs_spool_dir(spool));
	fd = open(path, O_WRONLY | O_APPEND);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "{\"seq\":2,\"run\":\"e/p", 19), 19); /* killed mid-write */
	close(fd);
	p = pending_joined();
	cr_assert_str_eq(p, "1:start");
	free(p);
	add("e/p/a", "finish");
	p = pending_joined();
	cr_assert_str_eq(p, "1:start,2:finish");
	free(p);
}

/* A NUL inside a line damages that line only: the events after it are still read. */
Test(spool, a_nul_inside_a_line_skips_that_line_only)
{
	static const char damaged[] = "{\"seq\":2,\"run\":\"e/p/b\",\0\"argv\":[\"x\"]}\n"
				      "{\"seq\":3,\"run\":\"e/p/c\",\"argv\":[\"finish\"]}\n";
	char path[128], *p;
	int fd;

	add("e/p/a", "start");
	snprintf(path, sizeof(path), "%s/queue", wbs_spool_dir(spool));
	fd = open(path, O_WRONLY | O_APPEND);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, damaged, sizeof(damaged) - 1), (ssize_t)sizeof(damaged) - 1);
	close(fd);
	p = pending_joined();
	cr_assert_str_eq(p, "1:start,3:finish");
	free(p);
}

Test(spool, a_full_spool_refuses_loudly)
{
	struct wbs_error err = { 0 };
	struct json_object *ev = json_tokener_parse("{\"run\":\"e/p/x\",\"argv\":[\"start\"]}");
	char run[32];

	wbs_spool_close(spool);
	cr_assert_eq(wbs_config_set(&cfg, "spool_max_bytes", "4096", NULL, NULL), 0);
	cr_assert_eq(wbs_spool_open(&cfg, &spool, NULL), 0);
	cr_assert_eq(wbs_spool_lock(spool, 1000, NULL), 0);
	for (int i = 0; i < 200; i++) {
		snprintf(run, sizeof(run), "e/p/run%d", i);
		json_object_object_add(ev, "run", json_object_new_string(run));
		if (wbs_spool_append(spool, ev, NULL, &err) < 0)
			break;
	}
	cr_assert_eq(err.code, -ENOSPC);
	cr_assert_not_null(strstr(err.msg, "is full (spool_max_bytes 4096): the change is lost"));
	json_object_put(ev);
}

Test(spool, the_directory_is_private_and_a_shared_one_is_refused)
{
	struct wbs_spool *other = NULL;
	struct wbs_error err = { 0 };
	struct stat st;

	cr_assert_eq(stat(wbs_spool_dir(spool), &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0700);
	cr_assert_eq(chmod(wbs_spool_dir(spool), 0755), 0);
	cr_assert_eq(wbs_spool_open(&cfg, &other, &err), -EACCES);
	cr_assert_not_null(strstr(err.msg, "with mode 0700"), "%s", err.msg);
}

Test(spool, a_second_process_waits_for_the_lock_then_gives_up)
{
	struct wbs_spool *other = NULL;
	struct wbs_error err = { 0 };

	cr_assert_eq(wbs_spool_open(&cfg, &other, NULL), 0);
	cr_assert_eq(wbs_spool_lock(other, 100, &err), -ETIMEDOUT);
	wbs_spool_unlock(spool);
	cr_assert_eq(wbs_spool_lock(other, 100, NULL), 0);
	wbs_spool_close(other);
}

Test(spool, the_breaker_opens_for_the_cooldown)
{
	long left = 0;

	cr_assert_not(wbs_spool_breaker_is_open(spool, &left));
	cr_assert_eq(wbs_spool_breaker_trip(spool, 5000, NULL), 0);
	cr_assert(wbs_spool_breaker_is_open(spool, &left));
	cr_assert_gt(left, 4000);
	wbs_spool_breaker_reset(spool);
	cr_assert_not(wbs_spool_breaker_is_open(spool, NULL));
	cr_assert_eq(wbs_spool_breaker_trip(spool, 0, NULL), 0); /* 0: never opens */
	cr_assert_not(wbs_spool_breaker_is_open(spool, NULL));
}

Test(spool, one_servers_outage_does_not_open_the_breaker_of_another)
{
	struct wbs_spool *other = NULL;

	cr_assert_eq(wbs_spool_breaker_trip(spool, 5000, NULL), 0);
	cr_assert_eq(wbs_config_set(&cfg, "base_url", "https://other.example", NULL, NULL), 0);
	cr_assert_eq(wbs_spool_open(&cfg, &other, NULL), 0);
	cr_assert_not(wbs_spool_breaker_is_open(other, NULL));
	wbs_spool_close(other);
}

Test(spool, changes_kept_while_the_lock_is_held_merge_in_order)
{
	struct wbs_spool *other = NULL;
	struct json_object *a = json_tokener_parse("{\"run\":\"e/p/x\",\"argv\":[\"start\",\"e/p/x\"]}");
	struct json_object *b = json_tokener_parse("{\"run\":\"e/p/x\",\"argv\":[\"finish\",\"e/p/x\"]}");
	size_t merged = 0;
	char *p;

	add("e/p/w", "start");
	/* another process, while this one holds the lock */
	cr_assert_eq(wbs_spool_open(&cfg, &other, NULL), 0);
	cr_assert_eq(wbs_spool_append_unlocked(other, a, NULL), 0);
	cr_assert_eq(wbs_spool_append_unlocked(other, b, NULL), 0);
	wbs_spool_close(other);
	cr_assert_eq(wbs_spool_merge_incoming(spool, &merged, NULL), 0);
	cr_assert_eq(merged, 2);
	p = pending_joined();
	cr_assert_str_eq(p, "1:start,2:start,3:finish");
	free(p);
	cr_assert_eq(wbs_spool_merge_incoming(spool, &merged, NULL), 0);
	cr_assert_eq(merged, 0);
	json_object_put(a);
	json_object_put(b);
}
