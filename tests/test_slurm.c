/*
 * spank_wbsched.so in a real Slurm 22.05 cluster (tests/slurm/up.sh), against
 * the W&B emulator: every way a job can go through Slurm, and what the W&B
 * run shows for it.
 *
 * Each test starts its own emulator and single-node cluster and stops both
 * in teardown, also when it fails.  Runs are named with --wandb-run-id so
 * that their path is emu-user/slurmtest/<id>.  The submit-time create is
 * detached from sbatch, so run histories are polled (bounded) until the
 * expected one appears, then compared exactly.
 *
 * Needs root (the daemons run as root); skipped otherwise.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <json-c/json.h>

#include "slurm_harness.h"

static struct emu emu;
static struct slurm cluster;
static char netrc_path[256]; /* the test user's ~/.netrc, written by a test */

static void up(const struct slurm_opts *o)
{
	if (geteuid() != 0)
		cr_skip_test("the Slurm tests start munged, slurmctld and slurmd: run them as root");
	emu_start(&emu);
	slurm_up(&cluster, &emu, o);
}

static void teardown(void)
{
	slurm_down(&cluster);
	emu_stop(&emu);
	if (netrc_path[0])
		unlink(netrc_path);
}

/* Generous: the time-limit test alone takes ~85 s. */
TestSuite(slurm, .fini = teardown, .timeout = 300);

/* ---- helpers --------------------------------------------------------------- */

static bool has_line(const char *text, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
			return true;
	return false;
}

#define assert_has_line(text, line) \
	cr_assert(has_line((text), (line)), "no line '%s' in:\n%s", (line), (text))

static void assert_job_ends(unsigned id, const char *want, int timeout_s)
{
	char *st = wait_job_state(&cluster, id,
				  "COMPLETED|FAILED|CANCELLED|TIMEOUT|PREEMPTED|NODE_FAIL|"
				  "OUT_OF_MEMORY|BOOT_FAIL|DEADLINE",
				  timeout_s);
	char *out = job_output(&cluster, id);

	cr_assert_str_eq(st, want, "job %u ended %s, wanted %s; output:\n%s", id, st, want, out);
	free(out);
	free(st);
}

static char *run_field(const char *path, const char *dotted)
{
	struct json_object *run = emu_run(&emu, path);
	char *v;

	cr_assert_not_null(run, "the emulator has no run %s", path);
	v = json_str_at(run, dotted);
	json_object_put(run);
	return v;
}

#define assert_run_field(path, dotted, want)                                             \
	do {                                                                             \
		char *v_ = run_field((path), (dotted));                                  \
		cr_assert_str_eq(v_, (want), "run %s: %s is '%s', wanted '%s'", (path),  \
				 (dotted), v_, (want));                                  \
		free(v_);                                                                \
	} while (0)

static void assert_run_job_id(const char *path, unsigned id)
{
	char want[16];

	snprintf(want, sizeof(want), "%u", id);
	assert_run_field(path, "config.slurm.value.job_id", want);
}

#define assert_runs(want)                                                                \
	do {                                                                             \
		char *names_ = emu_run_names(&emu);                                      \
		cr_assert_str_eq(names_, (want), "the emulator has runs '%s', wanted '%s'", \
				 names_, (want));                                        \
		free(names_);                                                            \
	} while (0)

/* wbsched against the emulator, as a user would run it; must succeed. */
static void wbsched_ok(const char *const *argv)
{
	struct cli_result r;

	cli_run(&emu, (const char *const[]){ cluster.spool_env, NULL }, argv, &r);
	cr_assert_eq(r.status, 0, "wbsched %s %s exited %d: %s", argv[2], argv[3], r.status,
		     r.err);
	cli_result_release(&r);
}

#define WBSCHED(...) wbsched_ok((const char *const[]){ "--project", SLURM_PROJECT, __VA_ARGS__, NULL })

/* A job script that blocks on its first run and exits 0 when rerun. */
static const char *rerun_script(const char *log_name)
{
	char body[1024];

	snprintf(body, sizeof(body),
		 "#!/bin/sh\n"
		 "echo \"run restart=${SLURM_RESTART_COUNT:-0} WANDB_RUN_ID=$WANDB_RUN_ID\" >>'%s/%s'\n"
		 "[ \"${SLURM_RESTART_COUNT:-0}\" -ge 1 ] && exit 0\n"
		 "sleep 300 &\n"
		 "wait\n",
		 cluster.jobs, log_name);
	return slurm_script(&cluster, "rerun.sh", body);
}

/*
 * A script for job steps: prints "wandb-state=<state>", what W&B shows for
 * the run while the step runs (read from the emulator's control API).
 */
static const char *state_script(const char *run_path)
{
	char body[1024];

	snprintf(body, sizeof(body),
		 "#!/bin/sh\n"
		 "s=$(curl -s '%s/_emu/run?path=%s' | grep -o '\"state\":\"[a-z]*\"' | head -n1)\n"
		 "s=${s#*:}\n"
		 "echo \"wandb-state=$(echo $s | tr -d '\"')\"\n",
		 emu.url, run_path);
	return slurm_script(&cluster, "wandb-state.sh", body);
}

/* ---- jobs that end on their own ------------------------------------------- */

/*
 * Slurm: the batch step exits 0, the epilog sees COMPLETED.  The tasks carry
 * the run's variables, and the prolog records the Slurm job on the run.
 */
Test(slurm, a_job_exiting_0_makes_a_finished_run_and_its_tasks_attach_to_it)
{
	unsigned id;
	char *out;

	up(NULL);
	id = slurm_sbatch(&cluster,
			  "--wandb --wandb-run-id=ok0 -J trainer --wrap 'env | grep ^WANDB_; %s; echo done'",
			  state_script(RUN_PATH("ok0")));
	assert_job_ends(id, "COMPLETED", 60);
	assert_run_history(&emu, RUN_PATH("ok0"), "pending,running,finished", 30);

	out = job_output(&cluster, id);
	assert_has_line(out, "WANDB_RUN_ID=ok0");
	assert_has_line(out, "WANDB_RESUME=allow");
	assert_has_line(out, "WANDB_PROJECT=" SLURM_PROJECT);
	/* the prolog marked it running before the script started */
	assert_has_line(out, "wandb-state=running");
	assert_has_line(out, "done");
	free(out);

	assert_run_job_id(RUN_PATH("ok0"), id);
	/* no --wandb-name: the run is named after the job */
	assert_run_field(RUN_PATH("ok0"), "displayName", "trainer");
	assert_runs("ok0");
	assert_node_idle(&cluster, 30);
}

/* The --wandb-* metadata options reach both the run and the tasks' environment. */
Test(slurm, the_wandb_metadata_options_name_group_tag_and_describe_the_run)
{
	unsigned id;
	char *out;

	up(NULL);
	id = slurm_sbatch(&cluster, "--wandb-run-id=meta -J ignored --wandb-name=resnet50 "
				    "--wandb-group=sweep7 --wandb-tags=vision,big "
				    "--wandb-notes='first try' --wandb-job-type=train "
				    "--wrap 'env | grep ^WANDB_'");
	assert_job_ends(id, "COMPLETED", 60);
	assert_run_history(&emu, RUN_PATH("meta"), "pending,running,finished", 30);

	out = job_output(&cluster, id);
	assert_has_line(out, "WANDB_RUN_ID=meta");
	assert_has_line(out, "WANDB_NAME=resnet50");
	assert_has_line(out, "WANDB_RUN_GROUP=sweep7");
	assert_has_line(out, "WANDB_TAGS=vision,big");
	assert_has_line(out, "WANDB_NOTES=first try");
	assert_has_line(out, "WANDB_JOB_TYPE=train");
	free(out);

	assert_run_field(RUN_PATH("meta"), "displayName", "resnet50");
	assert_run_field(RUN_PATH("meta"), "group", "sweep7");
	assert_run_field(RUN_PATH("meta"), "jobType", "train");
	assert_run_field(RUN_PATH("meta"), "notes", "first try");
	assert_run_field(RUN_PATH("meta"), "tags", "[ \"vision\", \"big\" ]");
}

/* Slurm: FAILED, NonZeroExitCode, exit_code 3:0 in the job record. */
Test(slurm, a_job_exiting_3_makes_a_failed_run_with_its_exit_code)
{
	unsigned id;

	up(NULL);
	id = slurm_sbatch(&cluster, "--wandb-run-id=ex3 --wrap 'exit 3'");
	assert_job_ends(id, "FAILED", 60);
	assert_run_history(&emu, RUN_PATH("ex3"), "pending,running,failed", 30);
	assert_run_field(RUN_PATH("ex3"), "summary.wbsched/reason", "exit code 3");
	assert_run_field(RUN_PATH("ex3"), "summary.wbsched/exit_code", "3");
	assert_node_idle(&cluster, 30);
}

/* ---- jobs Slurm ends ------------------------------------------------------- */

/* Slurm: SIGCONT+SIGTERM to the job, then CANCELLED in the record. */
Test(slurm, a_job_cancelled_while_running_makes_a_failed_run_saying_cancelled)
{
	unsigned id;

	up(NULL);
	id = slurm_sbatch(&cluster, "--wandb-run-id=cnl --wrap 'sleep 300'");
	free(wait_job_state(&cluster, id, "RUNNING", 30));
	assert_run_history(&emu, RUN_PATH("cnl"), "pending,running", 30);
	free(sh_ok("scancel %u", id));
	assert_job_ends(id, "CANCELLED", 60);
	assert_run_history(&emu, RUN_PATH("cnl"), "pending,running,failed", 30);
	assert_run_field(RUN_PATH("cnl"), "summary.wbsched/reason", "cancelled");
	assert_node_idle(&cluster, 30);
}

/*
 * Slurm: --time=1 is enforced on slurmctld's 30 s check, so the job is
 * killed 60-90 s after its start and ends TIMEOUT (reason TimeLimit).
 */
Test(slurm, a_job_past_its_time_limit_makes_a_failed_run_saying_time_limit, .timeout = 300)
{
	unsigned id;

	up(NULL);
	id = slurm_sbatch(&cluster, "--wandb-run-id=tlim --time=1 --wrap 'sleep 300'");
	free(wait_job_state(&cluster, id, "RUNNING", 30));
	assert_job_ends(id, "TIMEOUT", 180);
	assert_run_history(&emu, RUN_PATH("tlim"), "pending,running,failed", 30);
	assert_run_field(RUN_PATH("tlim"), "summary.wbsched/reason", "time limit");
	assert_node_idle(&cluster, 30);
}

/*
 * Slurm: `scontrol requeue` kills the running batch step; the epilog sees
 * PENDING with restart_cnt 1 and preempt_time 0; the job starts again about
 * cred_expire+1 s later with SLURM_RESTART_COUNT=1, same job id.
 */
Test(slurm, a_requeued_job_keeps_its_run_which_goes_back_to_pending_and_finishes)
{
	const char *script;
	unsigned id;
	char *runs;

	up(NULL);
	script = rerun_script("runs-rq");
	id = slurm_sbatch(&cluster, "--wandb-run-id=rq --requeue %s", script);
	free(wait_job_state(&cluster, id, "RUNNING", 30));
	wait_file_contains(&cluster, "runs-rq", "restart=0", 30);
	assert_run_history(&emu, RUN_PATH("rq"), "pending,running", 30);

	free(sh_ok("scontrol requeue %u", id));
	assert_run_history(&emu, RUN_PATH("rq"), "pending,running,pending", 30);
	assert_run_field(RUN_PATH("rq"), "summary.wbsched/reason", "requeued");

	assert_job_ends(id, "COMPLETED", 120);
	assert_run_history(&emu, RUN_PATH("rq"), "pending,running,pending,running,finished", 30);
	assert_run_field(RUN_PATH("rq"), "config.slurm.value.restart_count", "1");
	assert_run_job_id(RUN_PATH("rq"), id);
	assert_runs("rq");
	runs = slurm_read(&cluster, "runs-rq");
	assert_has_line(runs, "run restart=0 WANDB_RUN_ID=rq");
	assert_has_line(runs, "run restart=1 WANDB_RUN_ID=rq");
	free(runs);
}

/*
 * Slurm, PreemptMode=REQUEUE: an exclusive job in partition `high` makes
 * slurmctld requeue the running `debug` job at once (epilog: PENDING,
 * preempt_time set); it reruns after the high job, same job id.
 */
Test(slurm, a_job_preempted_in_requeue_mode_shows_preempted_then_runs_again_to_finished)
{
	const char *script;
	unsigned low, high;

	up(&(struct slurm_opts){ .preempt = "requeue" });
	script = rerun_script("runs-low");
	low = slurm_sbatch(&cluster, "--wandb-run-id=low -p debug --exclusive --requeue %s", script);
	free(wait_job_state(&cluster, low, "RUNNING", 30));
	wait_file_contains(&cluster, "runs-low", "restart=0", 30);
	assert_run_history(&emu, RUN_PATH("low"), "pending,running", 30);

	high = slurm_sbatch(&cluster, "-p high --exclusive --wrap 'sleep 1'");
	assert_run_history(&emu, RUN_PATH("low"), "pending,running,preempting,preempted,pending",
			   30);
	assert_run_field(RUN_PATH("low"), "summary.wbsched/reason", "preempted");
	assert_job_ends(high, "COMPLETED", 60);
	assert_job_ends(low, "COMPLETED", 120);
	assert_run_history(&emu, RUN_PATH("low"),
			   "pending,running,preempting,preempted,pending,running,finished", 30);
	assert_run_field(RUN_PATH("low"), "config.slurm.value.restart_count", "1");
	/* the high job did not ask for W&B */
	assert_runs("low");
}

/*
 * Slurm, PreemptMode=CANCEL (GraceTime 2 s here): the low job is signalled
 * on a later scheduler pass and ends PREEMPTED; it does not come back.
 */
Test(slurm, a_job_preempted_in_cancel_mode_ends_preempted)
{
	unsigned low, high;

	up(&(struct slurm_opts){ .preempt = "cancel", .up_env = "WBS_SLURM_GRACETIME=2" });
	low = slurm_sbatch(&cluster, "--wandb-run-id=gone -p debug --exclusive --wrap 'sleep 300'");
	free(wait_job_state(&cluster, low, "RUNNING", 30));
	assert_run_history(&emu, RUN_PATH("gone"), "pending,running", 30);

	high = slurm_sbatch(&cluster, "-p high --exclusive --wrap 'sleep 1'");
	assert_job_ends(low, "PREEMPTED", 90);
	assert_run_history(&emu, RUN_PATH("gone"), "pending,running,preempting,preempted", 30);
	assert_job_ends(high, "COMPLETED", 60);
	assert_node_idle(&cluster, 30);
}

/* ---- steps, srun, salloc, arrays ------------------------------------------ */

/*
 * Slurm: each srun inside the batch script is a new step (its own
 * slurmstepd, user_init per step); srun's local init_post_opt runs with
 * SLURM_JOB_ID set.  One job, one run, one id everywhere.
 */
Test(slurm, srun_steps_inside_a_batch_job_share_the_jobs_run)
{
	const char *script;
	unsigned id;
	char *out;

	up(NULL);
	script = slurm_script(&cluster, "steps.sh",
			      "#!/bin/sh\n"
			      "echo \"batch WANDB_RUN_ID=$WANDB_RUN_ID\"\n"
			      "srun -n1 sh -c 'echo \"step0 task$SLURM_PROCID WANDB_RUN_ID=$WANDB_RUN_ID\"'\n"
			      "srun -n2 sh -c 'echo \"step1 task$SLURM_PROCID WANDB_RUN_ID=$WANDB_RUN_ID\"'\n");
	id = slurm_sbatch(&cluster, "-n2 --wandb-run-id=steps %s", script);
	assert_job_ends(id, "COMPLETED", 60);
	assert_run_history(&emu, RUN_PATH("steps"), "pending,running,finished", 30);
	assert_runs("steps");

	out = job_output(&cluster, id);
	assert_has_line(out, "batch WANDB_RUN_ID=steps");
	assert_has_line(out, "step0 task0 WANDB_RUN_ID=steps");
	assert_has_line(out, "step1 task0 WANDB_RUN_ID=steps");
	assert_has_line(out, "step1 task1 WANDB_RUN_ID=steps");
	free(out);
}

/* Slurm: a standalone srun allocates a job; its first step triggers the prolog. */
Test(slurm, a_job_made_by_srun_alone_gets_a_finished_run_and_its_task_the_id)
{
	char prefix[1024];
	struct sh_result r;
	unsigned id = 0;
	const char *p;

	up(NULL);
	slurm_submit_prefix(&cluster, &(struct submit){ 0 }, prefix, sizeof(prefix));
	sh_run(&r, 60, "%ssrun --wandb --wandb-run-id=sr1 -J srunjob sh -c 'env; %s'", prefix,
	       state_script(RUN_PATH("sr1")));
	cr_assert_eq(r.status, 0, "srun failed (%d): %s", r.status, r.out);
	p = strstr(r.out, "SLURM_JOB_ID=");
	cr_assert_not_null(p, "no SLURM_JOB_ID in the task's environment: %s", r.out);
	id = (unsigned)strtoul(p + strlen("SLURM_JOB_ID="), NULL, 10);
	assert_job_ends(id, "COMPLETED", 30);
	{
		/*
		 * srun's allocation starts at once: the detached submit-time create
		 * may come after the prolog's start, and then leaves the running
		 * run alone (create --keep-running) rather than undo the start.
		 */
		char *got = wait_run_history(&emu, RUN_PATH("sr1"), "pending,running,finished", 30);

		cr_assert(strcmp(got, "pending,running,finished") == 0 ||
				  strcmp(got, "running,finished") == 0,
			  "run sr1: state history '%s'", got);
		free(got);
	}
	assert_run_job_id(RUN_PATH("sr1"), id);
	assert_has_line(r.out, "wandb-state=running");
	assert_has_line(r.out, "WANDB_RUN_ID=sr1");
	assert_has_line(r.out, "WANDB_RESUME=allow");
	assert_has_line(r.out, "WANDB_PROJECT=" SLURM_PROJECT);
	sh_release(&r);
}

/* Slurm: salloc's allocation gets its prolog at the first srun inside it. */
Test(slurm, an_salloc_allocation_gets_a_finished_run_and_its_steps_the_id)
{
	char prefix[1024];
	struct sh_result r;
	unsigned id = 0;
	const char *p;

	up(NULL);
	slurm_submit_prefix(&cluster, &(struct submit){ 0 }, prefix, sizeof(prefix));
	sh_run(&r, 60, "%ssalloc --wandb --wandb-run-id=sal -n1 srun sh -c 'env; %s'", prefix,
	       state_script(RUN_PATH("sal")));
	cr_assert_eq(r.status, 0, "salloc failed (%d): %s", r.status, r.out);
	p = strstr(r.out, "Granted job allocation ");
	cr_assert_not_null(p, "no job id in salloc's output: %s", r.out);
	id = (unsigned)strtoul(p + strlen("Granted job allocation "), NULL, 10);
	assert_job_ends(id, "COMPLETED", 30);
	assert_run_history(&emu, RUN_PATH("sal"), "pending,running,finished", 30);
	/* the prolog (at the first srun) marked it running and recorded the job */
	assert_has_line(r.out, "wandb-state=running");
	assert_run_job_id(RUN_PATH("sal"), id);
	assert_has_line(r.out, "WANDB_RUN_ID=sal");
	assert_has_line(r.out, "WANDB_RESUME=allow");
	sh_release(&r);
}

/* Slurm: one job per task (JobId=N+i, ArrayJobId=N, ArrayTaskId=i), each its own prolog/epilog. */
Test(slurm, each_array_task_gets_its_own_run_grouped_under_the_arrays_id)
{
	unsigned id;

	up(NULL);
	id = slurm_sbatch(&cluster, "--array=0-2 --wandb-run-id=arr -o '%s/arr-%%a.out' "
				    "--wrap 'env | grep ^WANDB_'",
			  cluster.jobs);
	for (int i = 0; i < 3; i++) {
		char spec[32], path[64], file[32], line[64];
		char *st, *out;

		snprintf(spec, sizeof(spec), "%u_%d", id, i);
		st = wait_spec_state(&cluster, spec, "COMPLETED|FAILED|CANCELLED", 60);
		cr_assert_str_eq(st, "COMPLETED", "array task %s ended %s", spec, st);
		free(st);

		snprintf(path, sizeof(path), RUN_PATH("arr-%d"), i);
		assert_run_history(&emu, path, "pending,running,finished", 30);
		assert_run_field(path, "group", "arr");
		snprintf(line, sizeof(line), "%u", id);
		assert_run_field(path, "config.slurm.value.array_job_id", line);

		snprintf(file, sizeof(file), "arr-%d.out", i);
		out = slurm_read(&cluster, file);
		cr_assert_not_null(out, "no output %s", file);
		snprintf(line, sizeof(line), "WANDB_RUN_ID=arr-%d", i);
		assert_has_line(out, line);
		assert_has_line(out, "WANDB_RUN_GROUP=arr");
		free(out);
	}
	/* no run for the array as a whole */
	assert_runs("arr-0,arr-1,arr-2");
}

/*
 * The array is known at submit (sbatch's --array): the three task runs are
 * created pending there, and no run is made for the array id itself.
 */
Test(slurm, an_array_submit_creates_only_the_task_runs_pending)
{
	unsigned id;

	up(NULL);
	/* held: nothing starts, so what W&B shows comes from the submit alone */
	id = slurm_sbatch(&cluster, "-H --array=0-2 --wandb-run-id=arrh --wrap true");
	for (int i = 0; i < 3; i++) {
		char path[64];

		snprintf(path, sizeof(path), RUN_PATH("arrh-%d"), i);
		assert_run_history(&emu, path, "pending", 30);
	}
	assert_runs("arrh-0,arrh-1,arrh-2");
	free(sh_ok("scontrol release %u", id));
	for (int i = 0; i < 3; i++) {
		char path[64];

		snprintf(path, sizeof(path), RUN_PATH("arrh-%d"), i);
		assert_run_history(&emu, path, "pending,running,finished", 60);
	}
	assert_runs("arrh-0,arrh-1,arrh-2");
}

/*
 * Slurm: --export=NONE starts the job with a clean environment and no remote
 * option callback; the job control variables still arrive (SLURM_SPANK_*).
 */
Test(slurm, a_job_submitted_with_export_none_still_gets_the_runs_variables)
{
	unsigned id;
	char *out;

	up(NULL);
	id = slurm_sbatch(&cluster, "--export=NONE --wandb-run-id=expn "
				    "--wrap '/usr/bin/env | /bin/grep ^WANDB_'");
	assert_job_ends(id, "COMPLETED", 60);
	assert_run_history(&emu, RUN_PATH("expn"), "pending,running,finished", 30);
	out = job_output(&cluster, id);
	assert_has_line(out, "WANDB_RUN_ID=expn");
	assert_has_line(out, "WANDB_RESUME=allow");
	assert_has_line(out, "WANDB_PROJECT=" SLURM_PROJECT);
	/* the submitter's environment did not travel: */
	cr_assert_null(strstr(out, "WANDB_API_KEY"), "%s", out);
	free(out);
}

/* ---- opting in and out ----------------------------------------------------- */

/* enable=always in plugstack.conf: sbatch's init_post_opt decides; --no-wandb wins. */
Test(slurm, no_wandb_turns_tracking_off_even_when_the_site_enables_it_always)
{
	unsigned id;
	char *out;

	up(&(struct slurm_opts){ .plugin_args = "enable=always" });
	id = slurm_sbatch(&cluster, "--no-wandb --wrap 'env | grep ^WANDB_RUN_ID= ; echo ran'");
	assert_job_ends(id, "COMPLETED", 60);
	/* submit, prolog and epilog are all over: nothing ever reached W&B */
	cr_assert_eq(emu_request_count(&emu), 0, "W&B got requests for a --no-wandb job");
	assert_runs("");
	out = job_output(&cluster, id);
	cr_assert_str_eq(out, "ran\n");
	free(out);
}

/* enable=always and no option: a generated run id, the job name as the run's name. */
Test(slurm, a_site_that_enables_it_always_tracks_a_job_without_options)
{
	struct json_object *runs, *list;
	unsigned id;
	char path[128];
	char *out, *p;

	up(&(struct slurm_opts){ .plugin_args = "enable=always" });
	id = slurm_sbatch(&cluster, "-J plain --wrap 'env | grep ^WANDB_RUN_ID='");
	assert_job_ends(id, "COMPLETED", 60);

	runs = emu_get(&emu, "/_emu/runs");
	cr_assert(json_object_object_get_ex(runs, "runs", &list));
	cr_assert_eq(json_object_array_length(list), 1, "%s",
		     json_object_to_json_string(runs));
	snprintf(path, sizeof(path), RUN_PATH("%s"),
		 json_object_get_string(json_at(json_object_array_get_idx(list, 0), "name")));
	json_object_put(runs);
	assert_run_history(&emu, path, "pending,running,finished", 30);
	assert_run_job_id(path, id);
	assert_run_field(path, "displayName", "plain");

	/* the task got that generated id */
	out = job_output(&cluster, id);
	p = strrchr(path, '/') + 1;
	cr_assert(strncmp(out, "WANDB_RUN_ID=", 13) == 0 && strncmp(out + 13, p, strlen(p)) == 0,
		  "task env '%s', run %s", out, path);
	free(out);
}

/* ---- existing runs and dependencies ----------------------------------------- */

/* --wandb-run-id of a run that already ended: the job's attempt is appended to it. */
Test(slurm, a_job_naming_an_existing_finished_run_resumes_it)
{
	unsigned id;

	up(NULL);
	WBSCHED("create", "--id", "old", "--state", "running");
	WBSCHED("finish", "old");
	assert_run_history(&emu, RUN_PATH("old"), "running,finished", 5);

	id = slurm_sbatch(&cluster, "--wandb-run-id=old --wrap true");
	assert_job_ends(id, "COMPLETED", 60);
	assert_run_history(&emu, RUN_PATH("old"), "running,finished,pending,running,finished", 30);
	assert_runs("old");
}

/* --wandb-after: the batch task waits in task_init_privileged, before exec. */
Test(slurm, a_job_after_a_finished_run_runs_at_once)
{
	unsigned id;
	char *out;

	up(NULL);
	WBSCHED("create", "--id", "up1", "--state", "running");
	WBSCHED("finish", "up1");
	id = slurm_sbatch(&cluster, "--wandb-after=up1 --wandb-run-id=dn1 --wrap 'echo ran after'");
	assert_job_ends(id, "COMPLETED", 60);
	out = job_output(&cluster, id);
	assert_has_line(out, "ran after");
	free(out);
	assert_run_history(&emu, RUN_PATH("dn1"), "pending,running,finished", 30);
}

/* A failed upstream run: the task exits before the script, the job ends FAILED. */
Test(slurm, a_job_after_a_failed_run_fails_without_running_its_script_and_says_why)
{
	unsigned id;
	char *out, *marker;

	up(NULL);
	WBSCHED("create", "--id", "up2", "--state", "running");
	WBSCHED("fail", "up2");
	id = slurm_sbatch(&cluster,
			  "--wandb-after=up2 --wandb-run-id=dn2 --wrap 'echo SCRIPT-RAN; touch %s/marker'",
			  cluster.jobs);
	assert_job_ends(id, "FAILED", 60);
	marker = slurm_read(&cluster, "marker");
	cr_assert_null(marker, "the script ran: %s/marker exists", cluster.jobs);
	out = job_output(&cluster, id);
	cr_assert_null(strstr(out, "SCRIPT-RAN"), "the script ran:\n%s", out);
	/* it names the run and why */
	cr_assert_not_null(strstr(out, "emu-user/" SLURM_PROJECT "/up2"), "%s", out);
	cr_assert_not_null(strstr(out, "failed"), "%s", out);
	assert_run_history(&emu, RUN_PATH("dn2"), "pending,running,failed", 30);
	assert_node_idle(&cluster, 30);
	/* the plugin's own line names the option's value */
	cr_assert_not_null(strstr(out, "--wandb-after=up2:"),
			   "the plugin's message does not name the runs waited for:\n%s", out);
	free(out);
}

/* A running upstream run: the job's task waits until it finishes, then runs. */
Test(slurm, a_job_after_a_running_run_waits_until_it_finishes)
{
	unsigned id;
	char *out;

	up(NULL);
	WBSCHED("create", "--id", "up3", "--state", "running");
	id = slurm_sbatch(&cluster, "--wandb-after=up3 --wandb-run-id=dn3 --wrap 'echo ran after'");
	free(wait_job_state(&cluster, id, "RUNNING", 30));
	assert_run_history(&emu, RUN_PATH("dn3"), "pending,running", 30);
	/* a few seconds of waiting, on purpose: the job must not start its script */
	sleep(3);
	out = job_output(&cluster, id);
	cr_assert_null(strstr(out, "ran after"), "the script did not wait:\n%s", out);
	free(out);
	json_object_put(emu_post(&emu, "/_emu/set",
				 "{\"path\":\"" RUN_PATH("up3") "\",\"state\":\"finished\",\"exitcode\":0}"));
	assert_job_ends(id, "COMPLETED", 90);
	out = job_output(&cluster, id);
	assert_has_line(out, "ran after");
	free(out);
	assert_run_history(&emu, RUN_PATH("dn3"), "pending,running,finished", 30);
}

/* ---- W&B down: the job never suffers ---------------------------------------- */

#define BUDGET_MS 1000
/* A wbsched child may take budget + EXEC_SLACK_MS (1 s) in the prolog and in the epilog. */
#define PHASE_MAX_MS (BUDGET_MS + 1000)

/* A loopback port nobody listens on. */
static int closed_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* Submit → COMPLETED, in ms; sbatch's own time in *sbatch_ms. */
static long timed_job(const char *args, long *sbatch_ms, unsigned *ret_id)
{
	long t0 = slurm_now_ms();
	unsigned id = slurm_sbatch_ex(&cluster, &(struct submit){ .elapsed_ms = sbatch_ms }, "%s",
				      args);

	assert_job_ends(id, "COMPLETED", 60);
	*ret_id = id;
	return slurm_now_ms() - t0;
}

/*
 * The same job tracked while W&B cannot answer, then untracked (--no-wandb):
 * sbatch returns at once, the job completes with its output, the node stays
 * idle, and the job takes at most one budget (+ slack) longer per blocking
 * phase (prolog, epilog).  The tracked job goes first, so it also bears the
 * cost of being the cluster's first job.
 */
static void assert_job_unaffected(const char *fault)
{
	long base, slow, sbatch_ms = 0, base_sbatch_ms = 0;
	unsigned id, base_id;
	char *out;

	if (fault)
		emu_fault(&emu, fault);
	slow = timed_job("--wandb-run-id=outage --wrap 'echo normal output'", &sbatch_ms, &id);
	base = timed_job("--no-wandb --wrap 'echo normal output'", &base_sbatch_ms, &base_id);
	cr_assert_lt(sbatch_ms, 1000, "sbatch took %ld ms while W&B was down", sbatch_ms);
	out = job_output(&cluster, id);
	cr_assert_str_eq(out, "normal output\n");
	free(out);
	assert_node_idle(&cluster, 30);
	cr_assert_leq(slow, base + 2 * PHASE_MAX_MS + 1000,
		      "the job took %ld ms with W&B down, %ld ms without (budget %d ms)", slow,
		      base, BUDGET_MS);
	/* W&B was asked, and did not answer (a closed port logs nothing) */
	if (fault)
		cr_assert_gt(emu_request_count(&emu), 0, "the plugin never tried to reach W&B");
	cr_log_info("W&B down (%s): job %ld ms, without W&B %ld ms, sbatch %ld ms",
		    fault ? fault : "closed port", slow, base, sbatch_ms);
}

Test(slurm, a_job_is_unaffected_when_wandb_refuses_connections)
{
	char url[64], args[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
	snprintf(args, sizeof(args), "budget_ms=%d", BUDGET_MS);
	up(&(struct slurm_opts){ .base_url = url, .plugin_args = args });
	assert_job_unaffected(NULL);
	cr_assert_eq(emu_request_count(&emu), 0);
}

Test(slurm, a_job_is_unaffected_when_wandb_never_answers)
{
	char args[128];

	snprintf(args, sizeof(args), "budget_ms=%d", BUDGET_MS);
	up(&(struct slurm_opts){ .plugin_args = args });
	assert_job_unaffected("{\"blackhole\":true,\"times\":-1}");
	assert_runs("");
}

Test(slurm, a_job_is_unaffected_when_wandb_answers_503)
{
	char args[128];

	snprintf(args, sizeof(args), "budget_ms=%d", BUDGET_MS);
	up(&(struct slurm_opts){ .plugin_args = args });
	assert_job_unaffected("{\"status\":503,\"retry_after\":\"1\",\"times\":-1}");
	assert_runs("");
}

/*
 * The durable spool: what W&B could not take during an outage must reach it
 * once it is back, here by `wbsched flush`.  These fail until the spool
 * lands (without it: "unknown command 'flush'").
 */
static void flush_ok(void)
{
	const char *argv[] = { "--project", SLURM_PROJECT, "flush", NULL };
	struct cli_result r;

	cli_run(&emu, (const char *const[]){ cluster.spool_env, NULL }, argv, &r);
	cr_assert_eq(r.status, 0, "wbsched flush exited %d: %s", r.status, r.err);
	cli_result_release(&r);
}

Test(slurm, spool_pending_a_job_run_during_a_whole_outage_reaches_finished_after_flush)
{
	char args[128];
	unsigned id;

	snprintf(args, sizeof(args), "budget_ms=%d", BUDGET_MS);
	up(&(struct slurm_opts){ .plugin_args = args });
	emu_fault(&emu, "{\"blackhole\":true,\"times\":-1}");
	id = slurm_sbatch(&cluster, "--wandb-run-id=spl1 --wrap 'echo normal output'");
	assert_job_ends(id, "COMPLETED", 60);
	assert_runs(""); /* nothing got through */
	emu_clear_faults(&emu);
	flush_ok();
	assert_run_history(&emu, RUN_PATH("spl1"), "pending,running,finished", 30);
}

Test(slurm, spool_pending_a_job_ending_during_an_outage_reaches_finished_after_flush)
{
	char args[128], body[512];
	const char *script;
	unsigned id;

	snprintf(args, sizeof(args), "budget_ms=%d", BUDGET_MS);
	up(&(struct slurm_opts){ .plugin_args = args });
	/* the job ends when the test says so */
	snprintf(body, sizeof(body),
		 "#!/bin/sh\nfor i in $(seq 600); do [ -e '%s/go' ] && exit 0; sleep 0.1; done\nexit 9\n",
		 cluster.jobs);
	script = slurm_script(&cluster, "wait-go.sh", body);
	id = slurm_sbatch(&cluster, "--wandb-run-id=spl2 %s", script);
	assert_run_history(&emu, RUN_PATH("spl2"), "pending,running", 30);
	emu_fault(&emu, "{\"blackhole\":true,\"times\":-1}");
	slurm_script(&cluster, "go", "");
	assert_job_ends(id, "COMPLETED", 60);
	assert_run_history(&emu, RUN_PATH("spl2"), "pending,running", 0); /* the end did not get through */
	emu_clear_faults(&emu);
	flush_ok();
	assert_run_history(&emu, RUN_PATH("spl2"), "pending,running,finished", 30);
}

/* ---- users and the API key -------------------------------------------------- */

/* The test user's ~/.netrc holding the emulator's key; one test at a time owns it. */
static void write_user_netrc(void)
{
	struct passwd *pw = getpwnam(TEST_USER);
	char text[256];
	int lock, fd;

	cr_assert_not_null(pw);
	lock = open("/tmp/wbs-slurm-netrc.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(lock, 0);
	cr_assert_eq(flock(lock, LOCK_EX), 0); /* released when the test process exits */
	snprintf(netrc_path, sizeof(netrc_path), "%s/.netrc", pw->pw_dir);
	snprintf(text, sizeof(text), "machine 127.0.0.1:%d\n  login api\n  password %s\n",
		 emu.port, emu.key);
	fd = open(netrc_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	cr_assert_eq(fchown(fd, pw->pw_uid, pw->pw_gid), 0);
	cr_assert_eq(fchmod(fd, 0600), 0);
	close(fd);
}

/* Slurm: the job runs as the submitter; the prolog and epilog still run as root. */
Test(slurm, a_job_submitted_by_a_user_runs_as_that_user_and_finishes_its_run)
{
	char user_id[64], spec[16];
	unsigned id;
	char *out, *uid;

	up(&(struct slurm_opts){ .test_user = true });
	id = slurm_sbatch_ex(&cluster, &(struct submit){ .user = TEST_USER },
			     "--wandb --wandb-run-id=usr --wrap 'id -un'");
	assert_job_ends(id, "COMPLETED", 60);
	assert_run_history(&emu, RUN_PATH("usr"), "pending,running,finished", 30);
	out = job_output(&cluster, id);
	cr_assert_str_eq(out, TEST_USER "\n");
	free(out);
	snprintf(user_id, sizeof(user_id), "%s(%u)", TEST_USER, getpwnam(TEST_USER)->pw_uid);
	snprintf(spec, sizeof(spec), "%u", id);
	uid = job_field(&cluster, spec, "UserId");
	cr_assert_str_eq(uid, user_id);
	free(uid);
}

/*
 * No api_key_file: the submit-time create runs as the submitter and the
 * compute-side calls as the job's user, each reading the user's ~/.netrc.
 * Only that file holds the key (for this emulator's port), so a run that
 * reaches running and finished shows that the prolog's and epilog's calls
 * ran as the user.
 */
Test(slurm, a_users_key_in_their_netrc_is_enough_without_a_site_key_file)
{
	unsigned id;
	char *out;

	up(&(struct slurm_opts){ .test_user = true, .no_key_file = true });
	write_user_netrc();
	id = slurm_sbatch_ex(&cluster, &(struct submit){ .user = TEST_USER, .no_key = true },
			     "--wandb-run-id=unet --wrap 'id -un'");
	assert_job_ends(id, "COMPLETED", 60);
	assert_run_history(&emu, RUN_PATH("unet"), "pending,running,finished", 30);
	out = job_output(&cluster, id);
	cr_assert_str_eq(out, TEST_USER "\n");
	free(out);
}

/*
 * No site key, and W&B down for the whole job: the submit's create and the
 * node's start and finish wait in the user's own queue.  The user never runs
 * wbsched again; root's flush timer (`flush --all-users`) delivers them as
 * the user, with the user's key: root's own key here is a wrong one.
 */
Test(slurm, a_users_queue_is_delivered_by_roots_flush_as_that_user)
{
	char args[128];
	struct cli_result r;
	unsigned id;

	snprintf(args, sizeof(args), "budget_ms=%d", BUDGET_MS);
	up(&(struct slurm_opts){ .test_user = true, .no_key_file = true, .plugin_args = args });
	write_user_netrc();
	emu_fault(&emu, "{\"blackhole\":true,\"times\":-1}");
	id = slurm_sbatch_ex(&cluster, &(struct submit){ .user = TEST_USER, .no_key = true },
			     "--wandb-run-id=uq --wrap true");
	assert_job_ends(id, "COMPLETED", 60);
	assert_runs(""); /* nothing got through */
	emu_clear_faults(&emu);

	/* the user has no key the timer can read (theirs was only for the submit): told, kept */
	{
		char off[300];

		snprintf(off, sizeof(off), "%s.off", netrc_path);
		cr_assert_eq(rename(netrc_path, off), 0);
		cli_run(&emu, (const char *const[]){ cluster.spool_env, NULL },
			(const char *const[]){ "flush", "--all-users", NULL }, &r);
		cr_assert_eq(rename(off, netrc_path), 0);
		cr_assert_eq(r.status, 0, "flush --all-users exited %d: %s", r.status, r.err);
		cr_assert_not_null(strstr(r.out, TEST_USER ": no W&B API key of theirs; 3 changes "
							  "wait for their next wbsched"),
				   "%s", r.out);
		cli_result_release(&r);
		assert_runs("");
	}

	/* W&B still down: the round stops with 69, the user's messages named */
	emu_fault(&emu, "{\"blackhole\":true,\"times\":-1}");
	cli_run(&emu, (const char *const[]){ cluster.spool_env, NULL },
		(const char *const[]){ "--set", "budget_ms=300", "flush", "--all-users", NULL }, &r);
	emu_clear_faults(&emu);
	cr_assert_eq(r.status, 69, "flush --all-users exited %d: %s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "wbsched: " TEST_USER ": W&B unavailable"), "%s", r.err);
	cr_assert_not_null(strstr(r.err, "3 changes still queued"), "%s", r.err);
	cli_result_release(&r);

	/* as the timer runs it: root, whose key W&B refuses */
	cli_run(&emu,
		(const char *const[]){ cluster.spool_env, "WANDB_API_KEY=not-the-emulators-key",
				       NULL },
		(const char *const[]){ "flush", "--all-users", NULL }, &r);
	cr_assert_eq(r.status, 0, "flush --all-users exited %d: %s", r.status, r.err);
	cr_assert_not_null(strstr(r.out, TEST_USER ": delivered 3 changes, 0 queued"), "%s",
			   r.out);
	cli_result_release(&r);
	assert_run_history(&emu, RUN_PATH("uq"), "pending,running,finished", 30);

	/* not for users: their own queue only */
	{
		struct passwd *pw = getpwnam(TEST_USER);
		pid_t pid;
		int status;

		cr_assert_not_null(pw);
		pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0) {
			int null = open("/dev/null", O_WRONLY);

			dup2(null, STDERR_FILENO);
			if (setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
				_exit(99);
			execl(slurm_test_wbsched(), "wbsched", "flush", "--all-users", (char *)NULL);
			_exit(98);
		}
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 64, "exit %d",
			  WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
}

/*
 * The key read from ~/.netrc never ends up in the job's environment, in the
 * job's output or in the Slurm daemons' logs (at debug2).
 */
Test(slurm, the_api_key_never_reaches_the_job_or_the_slurm_logs)
{
	const char *script;
	struct sh_result r;
	unsigned id;
	char *out;

	up(&(struct slurm_opts){ .test_user = true, .no_key_file = true,
				 .up_env = "WBS_SLURM_DEBUG=debug2" });
	write_user_netrc();
	script = slurm_script(&cluster, "env.sh",
			      "#!/bin/sh\nenv\necho ===\nsrun -n1 env\nexit 3\n");
	id = slurm_sbatch_ex(&cluster, &(struct submit){ .user = TEST_USER, .no_key = true },
			     "--wandb-run-id=nokey %s", script);
	assert_job_ends(id, "FAILED", 60);
	assert_run_history(&emu, RUN_PATH("nokey"), "pending,running,failed", 30);

	out = job_output(&cluster, id);
	assert_has_line(out, "WANDB_RUN_ID=nokey"); /* the environment was printed */
	cr_assert_null(strstr(out, "WANDB_API_KEY"), "the job has WANDB_API_KEY:\n%s", out);
	cr_assert_null(strstr(out, emu.key), "the key is in the job's environment:\n%s", out);
	free(out);

	/* anywhere in the cluster (logs, job output, Slurm's state) or the wbsched spool */
	sh_run(&r, 30, "grep -r -l -F -e '%s' '%s' '%s'", emu.key, cluster.dir, cluster.spool_dir);
	cr_assert_eq(r.status, 1, "the key is in: %s", r.out);
	sh_release(&r);
}
