/*
 * wbsched against the W&B emulator over real HTTP: every run command moves or
 * reads a run exactly as W&B's state rules say, with the documented exit codes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <json-c/json.h>

#include "harness.h"

static struct emu emu;

static void setup(void)
{
	emu_start(&emu);
}

static void teardown(void)
{
	emu_stop(&emu);
}

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 60);

#define RUN "emu-user/proj/run1"

static void assert_states(const char *path, const char *expected)
{
	char *states = emu_run_states(&emu, path);

	cr_assert_str_eq(states, expected);
	free(states);
}

static void run_ok(const char *const *argv)
{
	struct cli_result r;

	cli_run(&emu, NULL, argv, &r);
	cr_assert_eq(r.status, 0, "wbsched %s exited %d: %s", argv[0], r.status, r.err);
	cli_result_release(&r);
}

#define OK(...) run_ok((const char *const[]){ __VA_ARGS__, NULL })

Test(cli, create_makes_a_pending_run_and_prints_its_path)
{
	struct cli_result r;

	CLI(&emu, &r, "--project", "proj", "create", "--id", "run1", "--name", "train",
	    "--group", "g", "--job-type", "train", "--tags", "a,b", "--notes", "hello",
	    "--config-json", "{\"lr\":0.1}");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.out, RUN "\n");
	assert_states(RUN, "pending");

	struct json_object *run = emu_get(&emu, "/_emu/run?path=" RUN), *v;
	cr_assert(json_object_object_get_ex(run, "displayName", &v));
	cr_assert_str_eq(json_object_get_string(v), "train");
	cr_assert(json_object_object_get_ex(run, "group", &v));
	cr_assert_str_eq(json_object_get_string(v), "g");
	cr_assert(json_object_object_get_ex(run, "tags", &v));
	cr_assert_eq(json_object_array_length(v), 2);
	cr_assert(json_object_object_get_ex(run, "config", &v));
	/* the SDK's wrapped form */
	cr_assert_str_eq(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN),
			 "{\"lr\":{\"value\":0.1,\"desc\":null}}");
	json_object_put(run);
	cli_result_release(&r);
}

Test(cli, create_is_idempotent_for_one_run_id)
{
	OK("--project", "proj", "create", "--id", "run1");
	OK("--project", "proj", "create", "--id", "run1");
	struct json_object *runs = emu_get(&emu, "/_emu/runs"), *list;
	cr_assert(json_object_object_get_ex(runs, "runs", &list));
	cr_assert_eq(json_object_array_length(list), 1);
	json_object_put(runs);
	assert_states(RUN, "pending");
}

Test(cli, create_takes_the_sites_tags_unless_given)
{
	struct json_object *run, *v;

	OK("--set", "tags=slurm,site", "--project", "proj", "create", "--id", "run1");
	OK("--set", "tags=slurm,site", "--project", "proj", "create", "--id", "run2", "--tags",
	   "mine");
	run = emu_get(&emu, "/_emu/run?path=" RUN);
	cr_assert(json_object_object_get_ex(run, "tags", &v));
	cr_assert_str_eq(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN),
			 "[\"slurm\",\"site\"]");
	json_object_put(run);
	run = emu_get(&emu, "/_emu/run?path=emu-user/proj/run2");
	cr_assert(json_object_object_get_ex(run, "tags", &v));
	cr_assert_str_eq(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN), "[\"mine\"]");
	json_object_put(run);
}

Test(cli, create_generates_an_8_character_id)
{
	struct cli_result r;

	CLI(&emu, &r, "--project", "proj", "create");
	cr_assert_eq(r.status, 0, "%s", r.err);
	const char *id = strrchr(r.out, '/') + 1;
	cr_assert_eq(strspn(id, "abcdefghijklmnopqrstuvwxyz0123456789"), 8);
	cr_assert_str_eq(id + 8, "\n");
	cli_result_release(&r);
}

Test(cli, create_export_prints_lines_for_eval)
{
	struct cli_result r;

	CLI(&emu, &r, "--project", "proj", "create", "--id", "run1", "--export", "--name",
	    "it's", "--group", "g", "--tags", "x,y");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.out, "export WANDB_RUN_ID='run1'\n"
				"export WANDB_RESUME='allow'\n"
				"export WANDB_PROJECT='proj'\n"
				"export WANDB_ENTITY='emu-user'\n"
				"export WANDB_RUN_GROUP='g'\n"
				"export WANDB_NAME='it'\\''s'\n"
				"export WANDB_TAGS='x,y'\n");
	cli_result_release(&r);
}

Test(cli, create_count_makes_array_runs_in_batched_requests)
{
	struct cli_result r;
	int before = emu_request_count(&emu);

	CLI(&emu, &r, "--project", "proj", "create", "--id", "arr", "--count", "250");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "emu-user/proj/arr-0\n") == r.out);
	cr_assert_not_null(strstr(r.out, "emu-user/proj/arr-249\n"));
	/* 250 runs, 100 per request */
	cr_assert_eq(emu_request_count(&emu) - before, 3);
	assert_states("emu-user/proj/arr-249", "pending");
	struct json_object *run = emu_get(&emu, "/_emu/run?path=emu-user/proj/arr-7"), *v;
	cr_assert(json_object_object_get_ex(run, "group", &v));
	cr_assert_str_eq(json_object_get_string(v), "arr");
	json_object_put(run);
	cli_result_release(&r);
}

Test(cli, create_indexes_makes_the_runs_of_a_slurm_array)
{
	struct cli_result r;

	CLI(&emu, &r, "--project", "proj", "create", "--id", "arr", "--indexes", "1-7:3,10");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.out, "emu-user/proj/arr-1\nemu-user/proj/arr-4\nemu-user/proj/arr-7\n"
				"emu-user/proj/arr-10\n");
	assert_states("emu-user/proj/arr-10", "pending");
	cli_result_release(&r);
	CLI(&emu, &r, "create", "--indexes", "3-1");
	cr_assert_eq(r.status, 64);
	cr_assert_str_eq(r.err, "wbsched: create: --indexes: invalid array spec '3-1': expected ids and ranges such as 0-15:4,20%2\n");
	cli_result_release(&r);
}

Test(cli, start_moves_pending_to_running)
{
	OK("--project", "proj", "create", "--id", "run1");
	OK("--project", "proj", "start", "run1");
	assert_states(RUN, "pending,running");
}

Test(cli, start_records_metadata_on_the_run)
{
	struct json_object *run, *v;

	OK("--project", "proj", "create", "--id", "run1", "--name", "first");
	OK("--project", "proj", "start", "--group", "arr", "--config-json",
	   "{\"slurm_job_id\":42}", "run1");
	assert_states(RUN, "pending,running");
	run = emu_get(&emu, "/_emu/run?path=" RUN);
	cr_assert(json_object_object_get_ex(run, "group", &v));
	cr_assert_str_eq(json_object_get_string(v), "arr");
	cr_assert(json_object_object_get_ex(run, "displayName", &v));
	cr_assert_str_eq(json_object_get_string(v), "first"); /* not sent, so kept */
	cr_assert(json_object_object_get_ex(run, "config", &v));
	cr_assert_str_eq(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN),
			 "{\"slurm_job_id\":{\"value\":42,\"desc\":null}}");
	json_object_put(run);
}

Test(cli, create_keep_running_does_not_undo_a_start)
{
	struct cli_result r;

	OK("--project", "proj", "start", "run1");
	CLI(&emu, &r, "--project", "proj", "create", "--keep-running", "--id", "run1");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.err, "wbsched: run 'emu-user/proj/run1' is already running; left as is\n");
	assert_states(RUN, "running");
	cli_result_release(&r);
	/* a run that is not alive is made pending as usual */
	OK("--project", "proj", "finish", "run1");
	OK("--project", "proj", "create", "--keep-running", "--id", "run1");
	assert_states(RUN, "running,finished,pending");
}

Test(cli, start_takes_the_run_from_the_environment)
{
	struct cli_result r;
	const char *env[] = { "WANDB_RUN_ID=run1", "WANDB_PROJECT=proj", "WANDB_ENTITY=emu-user",
			      NULL };

	cli_run(&emu, env, (const char *const[]){ "start", NULL }, &r);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.out, RUN " running\n");
	assert_states(RUN, "running");
	cli_result_release(&r);
}

Test(cli, preempting_then_finish_non_zero_is_preempted)
{
	OK("--project", "proj", "create", "--id", "run1");
	OK("--project", "proj", "start", "run1");
	OK("--project", "proj", "preempting", "run1");
	OK("--project", "proj", "finish", "--exit-code", "143", "run1");
	assert_states(RUN, "pending,running,preempting,preempted");
}

Test(cli, finish_zero_is_finished_and_non_zero_is_failed)
{
	OK("--project", "proj", "create", "--id", "run1", "--state", "running");
	OK("--project", "proj", "finish", "run1");
	assert_states(RUN, "running,finished");
	OK("--project", "proj", "create", "--id", "run2", "--state", "running");
	OK("--project", "proj", "finish", "--exit-code", "3", "run2");
	assert_states("emu-user/proj/run2", "running,failed");
}

Test(cli, finish_leaves_a_run_the_sdk_finished_alone)
{
	struct cli_result r;

	OK("--project", "proj", "create", "--id", "run1", "--state", "running");
	json_object_put(emu_post(&emu, "/_emu/set", "{\"path\":\"" RUN "\",\"state\":\"finished\"}"));
	CLI(&emu, &r, "--project", "proj", "finish", "--exit-code", "1", "run1");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_not_null(strstr(r.err, "already finished"), "%s", r.err);
	assert_states(RUN, "running,finished");
	cli_result_release(&r);
	CLI(&emu, &r, "--project", "proj", "fail", "run1");
	cr_assert_eq(r.status, 0, "%s", r.err);
	assert_states(RUN, "running,finished");
	cli_result_release(&r);
}

Test(cli, fail_marks_running_failed_with_the_reason_in_the_summary)
{
	OK("--project", "proj", "create", "--id", "run1", "--state", "running");
	OK("--project", "proj", "fail", "--reason", "time limit", "--exit-code", "15", "run1");
	assert_states(RUN, "running,failed");
	struct json_object *run = emu_get(&emu, "/_emu/run?path=" RUN), *summary, *v;
	cr_assert(json_object_object_get_ex(run, "summary", &summary));
	cr_assert(json_object_object_get_ex(summary, "wbsched/reason", &v));
	cr_assert_str_eq(json_object_get_string(v), "time limit");
	cr_assert(json_object_object_get_ex(summary, "wbsched/exit_code", &v));
	cr_assert_eq(json_object_get_int(v), 15);
	json_object_put(run);
}

Test(cli, fail_of_a_missing_run_creates_it_failed)
{
	OK("--project", "proj", "fail", "--reason", "cancelled", "run1");
	assert_states(RUN, "failed");
}

Test(cli, requeue_keeps_one_run_across_restarts)
{
	OK("--project", "proj", "create", "--id", "run1");
	OK("--project", "proj", "start", "run1");
	OK("--project", "proj", "preempting", "run1");
	OK("--project", "proj", "requeue", "--reason", "preempted", "run1");
	OK("--project", "proj", "start", "run1");
	OK("--project", "proj", "finish", "run1");
	assert_states(RUN, "pending,running,preempting,preempted,pending,running,finished");
}

Test(cli, requeue_of_a_finished_run_is_refused_plainly)
{
	struct cli_result r;

	OK("--project", "proj", "create", "--id", "run1", "--state", "running");
	OK("--project", "proj", "finish", "run1");
	CLI(&emu, &r, "--project", "proj", "requeue", "run1");
	cr_assert_eq(r.status, 1);
	cr_assert_not_null(strstr(r.err, "cannot move run 'emu-user/proj/run1' from finished to pending"),
			   "%s", r.err);
	assert_states(RUN, "running,finished");
	cli_result_release(&r);
}

Test(cli, a_refused_transition_from_the_server_is_shown_as_is)
{
	struct cli_result r;

	/* Our check passes (running -> pending), then the server has moved on. */
	OK("--project", "proj", "create", "--id", "run1", "--state", "running");
	emu_fault(&emu, "{\"operation\":\"UpdateRunState\",\"graphql_error\":\"invalid state transition from finished to pending\"}");
	CLI(&emu, &r, "--project", "proj", "requeue", "run1");
	cr_assert_eq(r.status, 1);
	cr_assert_not_null(strstr(r.err, "invalid state transition from finished to pending"),
			   "%s", r.err);
	cli_result_release(&r);
}

Test(cli, requeue_falls_back_when_the_server_lacks_update_run_state)
{
	OK("--project", "proj", "create", "--id", "run1", "--state", "running");
	json_object_put(emu_post(&emu, "/_emu/config", "{\"features\":{\"UPDATE_RUN_STATE\":false}}"));
	OK("--project", "proj", "requeue", "run1");
	assert_states(RUN, "running,pending");
}

Test(cli, heartbeat_moves_pending_to_running)
{
	OK("--project", "proj", "create", "--id", "run1");
	OK("--project", "proj", "heartbeat", "run1");
	assert_states(RUN, "pending,running");
}

Test(cli, preempting_a_missing_run_says_so)
{
	struct cli_result r;

	CLI(&emu, &r, "--project", "proj", "preempting", "nope");
	cr_assert_eq(r.status, 1);
	cr_assert_str_eq(r.err, "wbsched: W&B has no run 'emu-user/proj/nope'\n");
	cli_result_release(&r);
}

Test(cli, status_reads_many_runs_in_one_request)
{
	struct cli_result r;
	int before;

	OK("--project", "proj", "create", "--id", "a");
	OK("--project", "proj", "create", "--id", "b", "--state", "running");
	before = emu_request_count(&emu);
	CLI(&emu, &r, "status", "emu-user/proj/a", "proj/b", "emu-user/other/c");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.out, "emu-user/proj/a pending\n"
				"emu-user/proj/b running\n"
				"emu-user/other/c not-started\n");
	cr_assert_eq(emu_request_count(&emu) - before, 1);
	cli_result_release(&r);
}

Test(cli, status_json_prints_one_object_per_run)
{
	struct cli_result r;

	OK("--project", "proj", "create", "--id", "run1");
	CLI(&emu, &r, "--json", "status", RUN);
	cr_assert_eq(r.status, 0, "%s", r.err);
	struct json_object *o = json_tokener_parse(r.out), *v;
	cr_assert_not_null(o, "%s", r.out);
	cr_assert(json_object_object_get_ex(o, "state", &v));
	cr_assert_str_eq(json_object_get_string(v), "pending");
	cr_assert(json_object_object_get_ex(o, "path", &v));
	cr_assert_str_eq(json_object_get_string(v), RUN);
	json_object_put(o);
	cli_result_release(&r);
}

Test(cli, wait_returns_0_when_all_runs_finish)
{
	struct cli_result r;

	OK("--project", "proj", "create", "--id", "a", "--state", "running");
	OK("--project", "proj", "finish", "a");
	OK("--project", "proj", "create", "--id", "b", "--state", "running");
	OK("--project", "proj", "finish", "b");
	CLI(&emu, &r, "wait", "emu-user/proj/a", "emu-user/proj/b", "--interval", "0.2");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_not_null(strstr(r.err, "wbsched: emu-user/proj/a: finished\n"), "%s", r.err);
	cli_result_release(&r);
}

Test(cli, wait_returns_1_naming_the_run_that_was_preempted)
{
	struct cli_result r;

	OK("--project", "proj", "create", "--id", "a", "--state", "running");
	OK("--project", "proj", "create", "--id", "b", "--state", "running");
	OK("--project", "proj", "preempting", "b");
	OK("--project", "proj", "finish", "--exit-code", "143", "b");
	CLI(&emu, &r, "wait", "proj/a", "proj/b", "--interval", "0.2", "--timeout", "10");
	cr_assert_eq(r.status, 1, "%s", r.err);
	cr_assert_not_null(strstr(r.err, "run 'emu-user/proj/b' ended preempted"), "%s", r.err);
	cli_result_release(&r);
}

Test(cli, wait_times_out_with_2_on_a_run_that_never_starts)
{
	struct cli_result r;

	CLI(&emu, &r, "wait", "proj/never", "--interval", "0.2", "--timeout", "1");
	cr_assert_eq(r.status, 2, "%s", r.err);
	cr_assert_not_null(strstr(r.err, "emu-user/proj/never: not-started"), "%s", r.err);
	cr_assert_geq(r.elapsed_ms, 900);
	cr_assert_lt(r.elapsed_ms, 5000);
	cli_result_release(&r);
}

Test(cli, usage_errors_exit_64)
{
	struct cli_result r;

	CLI(&emu, &r, "frobnicate");
	cr_assert_eq(r.status, 64);
	cr_assert_str_eq(r.err, "wbsched: unknown command 'frobnicate' (see wbsched --help)\n");
	cli_result_release(&r);
	CLI(&emu, &r, "create", "--state", "finished");
	cr_assert_eq(r.status, 64);
	cr_assert_str_eq(r.err, "wbsched: create: invalid --state 'finished': expected pending or running\n");
	cli_result_release(&r);
	CLI(&emu, &r, "status", "a/b/c/d");
	cr_assert_eq(r.status, 64);
	cr_assert_str_eq(r.err, "wbsched: status: invalid run path 'a/b/c/d': expected ENTITY/PROJECT/RUN_ID\n");
	cli_result_release(&r);
	CLI(&emu, &r, "finish", "--exit-code", "300", "x");
	cr_assert_eq(r.status, 64);
	cli_result_release(&r);
}

Test(cli, a_wrong_key_exits_77_without_showing_it)
{
	struct cli_result r;
	const char *env[] = { "WANDB_API_KEY=wrongwrongwrongwrongwrongwrongwrongwrong42", NULL };

	cli_run(&emu, env, (const char *const[]){ "--project", "proj", "create", NULL }, &r);
	cr_assert_eq(r.status, 77, "%s", r.err);
	cr_assert_not_null(strstr(r.err, "W&B refused the API key (HTTP 401"), "%s", r.err);
	cr_assert_null(strstr(r.err, "wrongwrong"));
	cli_result_release(&r);
}

Test(cli, no_key_anywhere_exits_77_naming_the_sources)
{
	struct cli_result r;
	const char *env[] = { "WANDB_API_KEY=", NULL };

	cli_run(&emu, env, (const char *const[]){ "create", NULL }, &r);
	cr_assert_eq(r.status, 77, "%s", r.err);
	cr_assert_not_null(strstr(r.err, "no W&B API key"), "%s", r.err);
	cli_result_release(&r);
}

Test(cli, bad_configuration_exits_78_naming_the_cause)
{
	struct cli_result r;
	const char *env[] = { "WBSCHED_BUDGET_MS=soon", NULL };

	CLI(&emu, &r, "--set", "endpont=x", "status", "a/b/c");
	cr_assert_eq(r.status, 78);
	cr_assert_str_eq(r.err, "wbsched: --set: unknown setting 'endpont'\n");
	cli_result_release(&r);
	CLI(&emu, &r, "--config", "/nonexistent/wbsched.yaml", "status", "a/b/c");
	cr_assert_eq(r.status, 78);
	cr_assert_not_null(strstr(r.err, "/nonexistent/wbsched.yaml"), "%s", r.err);
	cli_result_release(&r);
	cli_run(&emu, env, (const char *const[]){ "status", "a/b/c", NULL }, &r);
	cr_assert_eq(r.status, 78);
	cr_assert_not_null(strstr(r.err, "WBSCHED_BUDGET_MS"), "%s", r.err);
	cli_result_release(&r);
}

Test(cli, an_unreachable_server_keeps_the_change_within_the_budget)
{
	struct cli_result r;
	const char *env[] = { "WANDB_BASE_URL=http://127.0.0.1:1", NULL };

	cli_run(&emu, env,
		(const char *const[]){ "--set", "budget_ms=500", "--project", "p", "start", "x",
				       NULL },
		&r);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_not_null(strstr(r.err, "W&B unavailable"), "%s", r.err);
	cr_assert_not_null(strstr(r.err, "'start' for run '-/p/x' is kept in spool"), "%s", r.err);
	cr_assert_lt(r.elapsed_ms, 1500);
	cli_result_release(&r);
	/* kept for that server: a wbsched set up for another one leaves it alone */
	CLI(&emu, &r, "flush");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.out, "delivered 0 changes, 1 queued\n");
	cli_result_release(&r);
	assert_states("emu-user/p/x", "");
}

Test(cli, strict_exits_69_and_keeps_nothing)
{
	struct cli_result r;
	const char *env[] = { "WANDB_BASE_URL=http://127.0.0.1:1", NULL };

	cli_run(&emu, env,
		(const char *const[]){ "--strict", "--set", "budget_ms=500", "--project", "p",
				       "start", "x", NULL },
		&r);
	cr_assert_eq(r.status, 69, "%s", r.err);
	cr_assert_not_null(strstr(r.err, "the change was not kept for later delivery"), "%s",
			   r.err);
	cli_result_release(&r);
	CLI(&emu, &r, "flush", "--status");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, ": 0 changes queued") != NULL, "%s", r.out);
	cli_result_release(&r);
}

Test(cli, a_queued_change_is_delivered_by_flush_in_order)
{
	struct cli_result r;

	OK("--project", "proj", "create", "--id", "run1");
	OK("--project", "proj", "start", "run1");
	emu_fault(&emu, "{\"drop\":true,\"times\":-1}");
	CLI(&emu, &r, "--set", "budget_ms=300", "--project", "proj", "preempting", "run1");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cli_result_release(&r);
	/* the breaker is open: the next change queues at once, without a timeout */
	CLI(&emu, &r, "--project", "proj", "requeue", "--reason", "preempted", "run1");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_not_null(strstr(r.err, "W&B was unavailable moments ago"), "%s", r.err);
	cr_assert_lt(r.elapsed_ms, 300);
	cli_result_release(&r);
	CLI(&emu, &r, "flush", "--status");
	cr_assert_not_null(strstr(r.out, "2 changes queued, W&B marked unavailable"), "%s", r.out);
	cr_assert_not_null(strstr(r.out, "-/proj/run1\t2\t"), "%s", r.out);
	cli_result_release(&r);

	emu_clear_faults(&emu);
	CLI(&emu, &r, "flush");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.out, "delivered 2 changes, 0 queued\n");
	cli_result_release(&r);
	assert_states(RUN, "pending,running,preempting,preempted,pending");
	struct json_object *run = emu_get(&emu, "/_emu/run?path=" RUN), *summary, *v;
	cr_assert(json_object_object_get_ex(run, "summary", &summary));
	cr_assert(json_object_object_get_ex(summary, "wbsched/reason", &v));
	cr_assert_str_eq(json_object_get_string(v), "preempted");
	json_object_put(run);
}

Test(cli, queued_starts_go_together_in_one_request)
{
	struct cli_result r;
	int before;

	emu_fault(&emu, "{\"drop\":true,\"times\":-1}");
	CLI(&emu, &r, "--set", "budget_ms=300", "--project", "proj", "start", "a");
	cli_result_release(&r);
	OK("--project", "proj", "start", "--name", "bee", "b");
	OK("--project", "proj", "start", "c");
	OK("--project", "proj", "finish", "c"); /* not a start: its own request(s) */
	OK("--project", "proj", "start", "d");
	emu_clear_faults(&emu);
	before = emu_request_count(&emu);
	OK("flush");
	/*
	 * a, b, c and d in one request (d's start passes c's finish: another
	 * run); then c's finish reads and completes
	 */
	cr_assert_eq(emu_request_count(&emu) - before, 3);
	assert_states("emu-user/proj/a", "running");
	assert_states("emu-user/proj/c", "running,finished");
	assert_states("emu-user/proj/d", "running");
	struct json_object *run = emu_get(&emu, "/_emu/run?path=emu-user/proj/b"), *v;
	cr_assert(json_object_object_get_ex(run, "displayName", &v));
	cr_assert_str_eq(json_object_get_string(v), "bee");
	json_object_put(run);
}

/*
 * A queue as an outage leaves it: each run's create, start and finish
 * interleaved with other runs'.  The flush sends every run's oldest change,
 * those of a kind together, then the next: fewer requests, each run's
 * changes still in the order they were made.
 */
Test(cli, a_mixed_queue_goes_in_waves_and_keeps_each_runs_order)
{
	struct cli_result r;
	int before;

	emu_fault(&emu, "{\"drop\":true,\"times\":-1}");
	CLI(&emu, &r, "--set", "budget_ms=300", "--project", "proj", "start", "a");
	cli_result_release(&r);
	/* the breaker is open: these queue at once */
	OK("--project", "proj", "create", "--id", "b");
	OK("--project", "proj", "start", "b");
	OK("--project", "proj", "create", "--id", "c", "--name", "sea");
	OK("--project", "proj", "start", "c");
	OK("--project", "proj", "finish", "--exit-code", "0", "b");
	OK("--project", "proj", "finish", "--exit-code", "3", "c");
	OK("--project", "proj", "finish", "a");
	/* per run, in the order of its oldest change */
	CLI(&emu, &r, "flush", "--status");
	cr_assert_not_null(strstr(r.out, ": 8 changes queued"), "%s", r.out);
	{
		const char *a = strstr(r.out, "\n-/proj/a\t2\t"), *b = strstr(r.out, "\n-/proj/b\t3\t"),
			   *c = strstr(r.out, "\n-/proj/c\t3\t");

		cr_assert(a && b && c && a < b && b < c, "%s", r.out);
	}
	cli_result_release(&r);
	emu_clear_faults(&emu);
	before = emu_request_count(&emu);
	OK("flush");
	/*
	 * start a, creates b+c | starts b+c, a's finish (read, complete) |
	 * finishes b+c (one read, two completes): 8 requests, not 11
	 */
	cr_assert_eq(emu_request_count(&emu) - before, 8);
	assert_states("emu-user/proj/a", "running,finished");
	assert_states("emu-user/proj/b", "pending,running,finished");
	assert_states("emu-user/proj/c", "pending,running,failed");
	struct json_object *run = emu_get(&emu, "/_emu/run?path=emu-user/proj/c"), *v;
	cr_assert(json_object_object_get_ex(run, "displayName", &v));
	cr_assert_str_eq(json_object_get_string(v), "sea");
	json_object_put(run);
	CLI(&emu, &r, "flush", "--status");
	cr_assert_not_null(strstr(r.out, ": 0 changes queued"), "%s", r.out);
	cli_result_release(&r);
}

/* A queued create of many runs goes after what was queued before it, before what came after. */
Test(cli, a_queued_create_of_many_runs_keeps_its_place)
{
	struct cli_result r;

	emu_fault(&emu, "{\"drop\":true,\"times\":-1}");
	CLI(&emu, &r, "--set", "budget_ms=300", "--project", "proj", "start", "a");
	cli_result_release(&r);
	OK("--project", "proj", "create", "--id", "x", "--count", "2");
	OK("--project", "proj", "start", "x-1");
	emu_clear_faults(&emu);
	OK("flush");
	/* x-1's start must not pass the create that makes x-1 pending */
	assert_states("emu-user/proj/a", "running");
	assert_states("emu-user/proj/x-0", "pending");
	assert_states("emu-user/proj/x-1", "pending,running");
}

/* A batch W&B refuses as a whole goes again one at a time: only a bad change is dropped. */
Test(cli, a_refused_batch_goes_one_at_a_time)
{
	struct cli_result r;
	int before;

	emu_fault(&emu, "{\"drop\":true,\"times\":-1}");
	CLI(&emu, &r, "--set", "budget_ms=300", "--project", "proj", "start", "a");
	cli_result_release(&r);
	OK("--project", "proj", "start", "b");
	OK("--project", "proj", "start", "c");
	emu_clear_faults(&emu);
	emu_fault(&emu, "{\"operation\":\"UpsertRuns\",\"status\":400,\"times\":1}");
	before = emu_request_count(&emu);
	CLI(&emu, &r, "flush");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.out, "delivered 3 changes, 0 queued\n");
	cli_result_release(&r);
	cr_assert_eq(emu_request_count(&emu) - before, 4);
	assert_states("emu-user/proj/a", "running");
	assert_states("emu-user/proj/b", "running");
	assert_states("emu-user/proj/c", "running");
}

Test(cli, the_next_command_delivers_what_is_queued_first)
{
	struct cli_result r;

	OK("--project", "proj", "create", "--id", "run1", "--state", "running");
	emu_fault(&emu, "{\"drop\":true,\"times\":-1}");
	CLI(&emu, &r, "--set", "budget_ms=300", "--set", "breaker_cooldown_ms=0", "--project",
	    "proj", "preempting", "run1");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cli_result_release(&r);
	emu_clear_faults(&emu);
	/* finish must land after the queued preempting: preempted, not failed */
	OK("--project", "proj", "finish", "--exit-code", "143", "run1");
	assert_states(RUN, "running,preempting,preempted");
}

Test(cli, a_change_for_a_run_with_queued_changes_waits_behind_them)
{
	struct cli_result r;

	OK("--project", "proj", "create", "--id", "run1", "--state", "running");
	emu_fault(&emu, "{\"drop\":true,\"times\":-1}");
	CLI(&emu, &r, "--set", "budget_ms=300", "--set", "breaker_cooldown_ms=0", "--project",
	    "proj", "preempting", "run1");
	cli_result_release(&r);
	emu_clear_faults(&emu);
	/* W&B is back but slow to take the queued change: the new one queues behind it */
	emu_fault(&emu, "{\"target\":\"file_stream\",\"blackhole\":true}");
	CLI(&emu, &r, "--set", "flush_budget_ms=200", "--set", "budget_ms=1000", "--project",
	    "proj", "finish", "--exit-code", "1", "run1");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_not_null(strstr(r.err, "kept in spool"), "%s", r.err);
	cli_result_release(&r);
	emu_clear_faults(&emu);
	OK("flush");
	assert_states(RUN, "running,preempting,preempted");
}

Test(cli, delivering_a_change_twice_has_the_effect_of_once)
{
	/* as after a flush killed between delivering and recording it */
	OK("--project", "proj", "create", "--id", "run1", "--state", "running");
	OK("--project", "proj", "preempting", "run1");
	OK("--project", "proj", "requeue", "--reason", "preempted", "run1");
	OK("--project", "proj", "requeue", "--reason", "preempted", "run1");
	OK("--project", "proj", "start", "run1");
	OK("--project", "proj", "finish", "run1");
	OK("--project", "proj", "finish", "run1");
	assert_states(RUN, "running,preempting,preempted,pending,running,finished");
}

Test(cli, a_queued_create_still_exports_the_run)
{
	struct cli_result r;

	emu_fault(&emu, "{\"drop\":true,\"times\":-1}");
	CLI(&emu, &r, "--set", "budget_ms=300", "--entity", "emu-user", "--project", "proj",
	    "create", "--id", "run1", "--export");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_not_null(strstr(r.out, "export WANDB_RUN_ID='run1'\n"), "%s", r.out);
	cr_assert_not_null(strstr(r.out, "export WANDB_ENTITY='emu-user'\n"), "%s", r.out);
	cli_result_release(&r);
	emu_clear_faults(&emu);
	OK("flush");
	assert_states(RUN, "pending");
}

Test(cli, flushing_an_empty_spool_needs_no_key)
{
	struct cli_result r;
	const char *env[] = { "WANDB_API_KEY=", NULL };

	cli_run(&emu, env, (const char *const[]){ "flush", NULL }, &r);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.out, "delivered 0 changes, 0 queued\n");
	cli_result_release(&r);
}

Test(cli, the_spool_never_holds_the_key)
{
	struct cli_result r;
	char cmd[256];

	emu_fault(&emu, "{\"drop\":true,\"times\":-1}");
	CLI(&emu, &r, "--set", "budget_ms=300", "--project", "proj", "fail", "--reason", "x",
	    "run1");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cli_result_release(&r);
	snprintf(cmd, sizeof(cmd), "grep -rq '%s' '%s/spool'", emu.key, emu.home);
	cr_assert_neq(system(cmd), 0, "the key is in the spool");
	snprintf(cmd, sizeof(cmd), "test \"$(stat -c %%a '%s/spool/0')\" = 700", emu.home);
	cr_assert_eq(system(cmd), 0, "the spool is not 0700");
}

Test(cli, a_bad_setting_never_keeps_the_watchdogs_command_from_running)
{
	struct cli_result r;

	CLI(&emu, &r, "--set", "budget_ms=x", "watchdog", "--no-kubernetes", "--run", "proj/run1",
	    "--", "sh", "-c", "echo ran; exit 3");
	cr_assert_eq(r.status, 3, "%s", r.err);
	cr_assert_str_eq(r.out, "ran\n");
	cr_assert_not_null(strstr(r.err, "invalid value 'x' for 'budget_ms'"), "%s", r.err);
	cr_assert_not_null(strstr(r.err, "running the command without W&B"), "%s", r.err);
	cli_result_release(&r);
}

Test(cli, values_travel_as_variables_never_inside_the_document)
{
	struct json_object *log, *reqs, *run, *v;
	const char *evil = "x\") { id } } mutation M { deleteRun(input: {id: \"1\"}) { clientMutationId";

	OK("--project", "proj", "create", "--id", "run1", "--name", evil, "--notes", evil, "--tags",
	   evil);
	run = emu_get(&emu, "/_emu/run?path=" RUN);
	cr_assert(json_object_object_get_ex(run, "displayName", &v));
	cr_assert_str_eq(json_object_get_string(v), evil);
	json_object_put(run);
	log = emu_get(&emu, "/_emu/requests");
	cr_assert(json_object_object_get_ex(log, "requests", &reqs));
	for (size_t i = 0; i < json_object_array_length(reqs); i++) {
		struct json_object *q;

		if (json_object_object_get_ex(json_object_array_get_idx(reqs, i), "query", &q) &&
		    json_object_get_string(q))
			cr_assert_null(strstr(json_object_get_string(q), "deleteRun"),
				       "a value reached the document: %s", json_object_get_string(q));
	}
	json_object_put(log);
}

Test(cli, tls_certificates_are_verified)
{
	struct cli_result r;
	char cmd[512], url[64], env_url[96];
	int port = 0;
	FILE *f;

	/* a self-signed server on loopback: wbsched must refuse to talk to it */
	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && openssl req -x509 -newkey rsa:2048 -nodes -keyout k.pem -out c.pem "
		 "-days 1 -subj /CN=127.0.0.1 >/dev/null 2>&1 && "
		 "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); "
		 "print(s.getsockname()[1])'",
		 emu.home);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	cr_assert_eq(fscanf(f, "%d", &port), 1);
	pclose(f);
	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && (openssl s_server -quiet -accept %d -cert c.pem -key k.pem "
		 "-www >/dev/null 2>&1 & echo $! > server.pid) && sleep 0.5",
		 emu.home, port);
	cr_assert_eq(system(cmd), 0);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d", port);
	snprintf(env_url, sizeof(env_url), "WANDB_BASE_URL=%s", url);
	{
		const char *env[] = { env_url, NULL };

		cli_run(&emu, env,
			(const char *const[]){ "--strict", "--project", "proj", "status", "run1",
					       NULL },
			&r);
	}
	snprintf(cmd, sizeof(cmd), "kill $(cat '%s/server.pid') 2>/dev/null", emu.home);
	(void)!system(cmd);
	cr_assert_eq(r.status, 77, "%s", r.err);
	cr_assert_not_null(strstr(r.err, "certificate"), "%s", r.err);
	cli_result_release(&r);
}

Test(cli, every_request_validates_against_the_schema)
{
	struct json_object *log, *reqs, *v;

	OK("--project", "proj", "create", "--id", "run1", "--tags", "a", "--config-json", "{}");
	OK("--project", "proj", "start", "run1");
	OK("--project", "proj", "preempting", "run1");
	OK("--project", "proj", "requeue", "--reason", "r", "run1");
	OK("--project", "proj", "fail", "--reason", "r", "run1");
	OK("status", "proj/run1", "proj/zzz");
	log = emu_get(&emu, "/_emu/requests");
	cr_assert(json_object_object_get_ex(log, "requests", &reqs));
	cr_assert_gt(json_object_array_length(reqs), 8);
	for (size_t i = 0; i < json_object_array_length(reqs); i++) {
		struct json_object *req = json_object_array_get_idx(reqs, i);

		cr_assert(json_object_object_get_ex(req, "status", &v));
		cr_assert_eq(json_object_get_int(v), 200, "request %zu: %s", i,
			     json_object_to_json_string(req));
		cr_assert(json_object_object_get_ex(req, "user_agent", &v));
		cr_assert(strncmp(json_object_get_string(v), "wbsched/", 8) == 0);
	}
	json_object_put(log);
}
