/*
 * The plugin's logic without Slurm: what a job's options and environment
 * become, what each end state becomes in W&B, and the child runner.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <slurm/slurm.h>

#include "wbsched/config.h"
#include "wbsched/error.h"

#include "plugin_exec.h"
#include "plugin_job.h"
#include "plugin_outcome.h"

static struct wbs_config cfg;

static void setup(void)
{
	wbs_config_init(&cfg);
}

static void teardown(void)
{
	wbs_config_release(&cfg);
}

TestSuite(plugin, .init = setup, .fini = teardown, .timeout = 10);

/* A fake environment: NAME=value strings, NULL-terminated. */
static const char *table_env(void *userdata, const char *name)
{
	const char *const *env = userdata;
	size_t len = strlen(name);

	for (; env && *env; env++)
		if (strncmp(*env, name, len) == 0 && (*env)[len] == '=')
			return *env + len + 1;
	return NULL;
}

static const char *no_env[] = { NULL };

Test(plugin, opt_in_site_tracks_only_jobs_that_ask)
{
	struct plugin_opts o = { .wandb = -1 };
	struct plugin_job job = { 0 };
	bool enabled = true;

	cr_assert_eq(plugin_job_at_submit(&o, &cfg, table_env, no_env, &enabled, &job, NULL), 0);
	cr_assert_not(enabled);
	o.wandb = 1;
	cr_assert_eq(plugin_job_at_submit(&o, &cfg, table_env, no_env, &enabled, &job, NULL), 0);
	cr_assert(enabled);
	cr_assert_eq(strlen(job.run_id), 8);
	cr_assert_str_eq(job.project, "uncategorized");
	plugin_job_release(&job);
}

Test(plugin, any_wandb_option_implies_wandb_and_no_wandb_wins)
{
	struct plugin_opts o = { .wandb = -1, .project = (char *)"vision" };
	struct plugin_job job = { 0 };
	bool enabled = false;

	cr_assert_eq(plugin_job_at_submit(&o, &cfg, table_env, no_env, &enabled, &job, NULL), 0);
	cr_assert(enabled);
	cr_assert_str_eq(job.project, "vision");
	plugin_job_release(&job);
	o.wandb = 0;
	cr_assert_eq(plugin_job_at_submit(&o, &cfg, table_env, no_env, &enabled, &job, NULL), 0);
	cr_assert_not(enabled);
	cr_assert_null(job.run_id);
}

Test(plugin, always_site_tracks_every_job)
{
	struct plugin_opts o = { .wandb = -1 };
	struct plugin_job job = { 0 };
	bool enabled = false;

	cr_assert_eq(wbs_config_set(&cfg, "enable", "always", NULL, NULL), 0);
	cr_assert_eq(plugin_job_at_submit(&o, &cfg, table_env, no_env, &enabled, &job, NULL), 0);
	cr_assert(enabled);
	plugin_job_release(&job);
}

Test(plugin, options_win_over_the_submitters_wandb_variables_over_the_site)
{
	const char *env[] = { "WANDB_PROJECT=from-env", "WANDB_ENTITY=env-team",
			      "WANDB_RUN_GROUP=g", "WANDB_TAGS=a,b", "WANDB_RUN_ID=ignored",
			      NULL };
	struct plugin_opts o = { .wandb = 1, .project = (char *)"from-opt" };
	struct plugin_job job = { 0 };
	bool enabled;

	cr_assert_eq(wbs_config_set(&cfg, "project", "from-site", NULL, NULL), 0);
	cr_assert_eq(wbs_config_set(&cfg, "entity", "site-team", NULL, NULL), 0);
	cr_assert_eq(wbs_config_set(&cfg, "tags", "site", NULL, NULL), 0);
	cr_assert_eq(plugin_job_at_submit(&o, &cfg, table_env, env, &enabled, &job, NULL), 0);
	cr_assert_str_eq(job.project, "from-opt");
	cr_assert_str_eq(job.entity, "env-team");
	cr_assert_str_eq(job.group, "g");
	cr_assert_str_eq(job.tags, "a,b");
	/* WANDB_RUN_ID of the submitter's shell must not glue jobs into one run */
	cr_assert_str_neq(job.run_id, "ignored");
	plugin_job_release(&job);
	cr_assert_eq(plugin_job_at_submit(&o, &cfg, table_env, no_env, &enabled, &job, NULL), 0);
	cr_assert_str_eq(job.entity, "site-team");
	cr_assert_str_eq(job.tags, "site");
	plugin_job_release(&job);
}

struct bad_opt {
	struct plugin_opts o;
	const char *msg;
};

static struct bad_opt bad_opts[] = {
	{ { .wandb = -1, .run_id = (char *)"a/b" }, "invalid run id 'a/b': '/' is not allowed" },
	{ { .wandb = -1, .project = (char *)"a b" },
	  "invalid --wandb-project 'a b': '/', white space and control characters are not allowed" },
	{ { .wandb = -1, .entity = (char *)"x/y" },
	  "invalid --wandb-entity 'x/y': '/', white space and control characters are not allowed" },
	{ { .wandb = -1, .after = (char *)"e/p/r/x" },
	  "invalid --wandb-after run 'e/p/r/x': expected ENTITY/PROJECT/RUN_ID" },
	{ { .wandb = -1, .after = (char *)"ok1,bad id" },
	  "invalid run id 'bad id': white space or control character" },
};

ParameterizedTestParameters(plugin, bad_option_values_are_named)
{
	return cr_make_param_array(struct bad_opt, bad_opts, sizeof(bad_opts) / sizeof(bad_opts[0]));
}

ParameterizedTest(struct bad_opt *c, plugin, bad_option_values_are_named)
{
	struct plugin_job job = { 0 };
	struct wbs_error err = { 0 };
	bool enabled;

	wbs_config_init(&cfg);
	cr_assert_eq(plugin_job_at_submit(&c->o, &cfg, table_env, no_env, &enabled, &job, &err),
		     -EINVAL);
	cr_assert_str_eq(err.msg, c->msg);
	cr_assert_null(job.run_id);
}

Test(plugin, the_job_travels_in_job_control_variables)
{
	struct plugin_opts o = { .wandb = 1, .run_id = (char *)"r1", .name = (char *)"n",
				 .after = (char *)"p/up" };
	struct plugin_job job = { 0 }, back = { 0 };
	struct plugin_var vars[PLUGIN_MAX_VARS];
	char env_storage[PLUGIN_MAX_VARS][128];
	const char *env[PLUGIN_MAX_VARS + 1] = { 0 };
	bool enabled;
	size_t n;

	cr_assert_eq(plugin_job_at_submit(&o, &cfg, table_env, no_env, &enabled, &job, NULL), 0);
	n = plugin_job_control_vars(&job, vars);
	for (size_t i = 0; i < n; i++) {
		snprintf(env_storage[i], sizeof(env_storage[i]), "SPANK_%s=%s", vars[i].name,
			 vars[i].value);
		env[i] = env_storage[i];
	}
	cr_assert_eq(plugin_job_from_env(table_env, env, "SPANK_", &back), 0);
	cr_assert_str_eq(back.run_id, "r1");
	cr_assert_str_eq(back.project, "uncategorized");
	cr_assert_str_eq(back.name, "n");
	cr_assert_str_eq(back.after, "p/up");
	cr_assert_null(back.entity);
	cr_assert_eq(plugin_job_from_env(table_env, env, "SLURM_SPANK_", &back), -ENOENT);
	plugin_job_release(&job);
	plugin_job_release(&back);
}

Test(plugin, tasks_get_the_variables_wandb_init_reads)
{
	struct plugin_job job = { .run_id = (char *)"r1", .project = (char *)"p",
				  .entity = (char *)"e", .tags = (char *)"a,b" };
	struct plugin_var v[PLUGIN_MAX_VARS];
	char id[96];
	size_t n = plugin_job_task_env(&job, PLUGIN_NO_ARRAY_TASK, id, sizeof(id), v);

	cr_assert_eq(n, 5);
	cr_assert_str_eq(v[0].name, "WANDB_RUN_ID");
	cr_assert_str_eq(v[0].value, "r1");
	cr_assert_str_eq(v[1].name, "WANDB_RESUME");
	cr_assert_str_eq(v[1].value, "allow");
	cr_assert_str_eq(v[2].value, "p");
	cr_assert_str_eq(v[3].name, "WANDB_ENTITY");
	cr_assert_str_eq(v[4].name, "WANDB_TAGS");

	/* an array task: its own run, grouped under the array's */
	n = plugin_job_task_env(&job, 7, id, sizeof(id), v);
	cr_assert_str_eq(v[0].value, "r1-7");
	cr_assert_str_eq(v[4].name, "WANDB_RUN_GROUP");
	cr_assert_str_eq(v[4].value, "r1");
}

Test(plugin, wbsched_command_lines_carry_the_plugstack_arguments)
{
	char a0[] = "config=/etc/wbsched/wbsched.yaml", a1[] = "budget_ms=500";
	char *av[] = { a0, a1 };
	struct plugin_job job = { .run_id = (char *)"r1", .project = (char *)"p",
				  .group = NULL, .tags = (char *)"t" };
	struct plugin_argv a = { 0 };
	char joined[512] = "";

	cr_assert_eq(wbs_config_set(&cfg, "wbsched_path", "/opt/wbsched", NULL, NULL), 0);
	plugin_argv_base(&a, &cfg, 2, av, &job);
	plugin_argv_add(&a, "start");
	plugin_argv_meta(&a, &job, 3, "jobname");
	for (size_t i = 0; i < a.n; i++)
		snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), "%s%s",
			 i ? " " : "", a.v[i]);
	cr_assert_str_eq(joined, "/opt/wbsched --config /etc/wbsched/wbsched.yaml --set budget_ms=500 "
				 "--project p start --name jobname --group r1 --tags t");
	cr_assert_null(a.v[a.n]);
	plugin_argv_release(&a);
}

/* ---- outcomes ----------------------------------------------------------- */

struct outcome_case {
	uint32_t state;
	uint32_t exit_code;
	time_t preempt_time;
	const char *want; /* steps joined by " | " */
};

static struct outcome_case outcomes[] = {
	{ JOB_COMPLETE | JOB_COMPLETING, 0, 0, "finish --exit-code 0" },
	{ JOB_FAILED | JOB_COMPLETING, 3 << 8, 0, "fail --reason exit code 3 --exit-code 3" },
	{ JOB_FAILED, 9, 0, "fail --reason killed by signal 9 --exit-code 137" },
	{ JOB_CANCELLED | JOB_COMPLETING, 0xf, 0, "fail --reason cancelled" },
	{ JOB_TIMEOUT, 0, 0, "fail --reason time limit" },
	{ JOB_NODE_FAIL, 0, 0, "fail --reason node failure" },
	{ JOB_OOM, 0, 0, "fail --reason out of memory" },
	{ JOB_PREEMPTED, 9, 1700000000, "preempting | finish --exit-code 137" },
	{ JOB_PENDING | JOB_COMPLETING, 0, 1700000000, "preempting | requeue --reason preempted" },
	{ JOB_PENDING | JOB_COMPLETING, 0, 0, "requeue --reason requeued" },
	{ JOB_RUNNING, 0, 0, "" },
};

ParameterizedTestParameters(plugin, each_slurm_outcome_becomes_the_right_w_and_b_change)
{
	return cr_make_param_array(struct outcome_case, outcomes,
				   sizeof(outcomes) / sizeof(outcomes[0]));
}

ParameterizedTest(struct outcome_case *c, plugin, each_slurm_outcome_becomes_the_right_w_and_b_change)
{
	struct plugin_job_end end = { c->state, c->exit_code, c->preempt_time };
	struct plugin_outcome o;
	char joined[256] = "";
	int steps = plugin_outcome(&end, &o);

	for (int i = 0; i < steps; i++)
		for (int k = 0; o.steps[i][k]; k++)
			snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), "%s%s",
				 k ? " " : i ? " | " : "", o.steps[i][k]);
	cr_assert_str_eq(joined, c->want, "state %s", plugin_job_state_name(c->state));
}

/* ---- the child runner --------------------------------------------------- */

static char *const sh_env[] = { (char *)"PATH=/usr/bin:/bin", NULL };

static int run_sh(const char *script, long deadline_ms, bool detach, long *ret_ms)
{
	char *argv[] = { (char *)"sh", (char *)"-c", (char *)script, NULL };
	struct plugin_exec x = { .path = "/bin/sh", .argv = argv, .envp = sh_env,
				 .deadline_ms = deadline_ms, .detach = detach };
	struct timespec a, b;
	int status = -2;

	clock_gettime(CLOCK_MONOTONIC, &a);
	cr_assert_eq(plugin_exec(&x, &status, NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &b);
	*ret_ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	return status;
}

Test(plugin, the_child_exit_code_comes_back)
{
	long ms;

	cr_assert_eq(run_sh("exit 3", 5000, false, &ms), 3);
	cr_assert_eq(run_sh("exit 0", 5000, false, &ms), 0);
}

Test(plugin, a_child_past_its_deadline_is_killed_in_time)
{
	long ms;

	cr_assert_eq(run_sh("sleep 30", 300, false, &ms), 128 + 9);
	cr_assert_lt(ms, 1500);
}

Test(plugin, a_child_that_keeps_stderr_open_is_still_bounded)
{
	long ms;

	cr_assert_eq(run_sh("sleep 30 & exec sleep 30", 300, false, &ms), 128 + 9);
	cr_assert_lt(ms, 1500);
}

Test(plugin, a_detached_child_does_not_make_the_caller_wait)
{
	long ms;
	char marker[] = "/tmp/wbs-detach-XXXXXX", script[128];
	int fd = mkstemp(marker);

	close(fd);
	unlink(marker);
	snprintf(script, sizeof(script), "sleep 0.5; touch %s", marker);
	cr_assert_eq(run_sh(script, 5000, true, &ms), -1);
	cr_assert_lt(ms, 300);
	cr_assert_neq(access(marker, F_OK), 0);
	for (int i = 0; i < 50 && access(marker, F_OK) != 0; i++)
		usleep(100000);
	cr_assert_eq(access(marker, F_OK), 0, "the detached child did not run");
	unlink(marker);
}

Test(plugin, the_child_gets_only_the_environment_given_and_no_descriptors)
{
	long ms;

	setenv("WANDB_API_KEY", "must-not-leak", 1);
	cr_assert_eq(run_sh("test -z \"$WANDB_API_KEY\" && test \"$PATH\" = /usr/bin:/bin && "
			    "test $(ls /proc/self/fd | wc -l) -le 4",
			    5000, false, &ms),
		     0);
}
