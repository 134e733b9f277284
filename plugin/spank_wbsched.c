/*
 * spank_wbsched: keeps a W&B run in step with a Slurm job.
 *
 *   sbatch/salloc/srun  init_post_opt   decide, pick the run id, create the run
 *                                       pending (detached: submit never waits)
 *   slurmstepd prolog   job_prolog      mark the run running
 *   slurmstepd          user_init       WANDB_RUN_ID & co. into every task
 *   task process        task_init_priv  --wandb-after: wait for other runs
 *   slurmstepd epilog   job_epilog      finished / failed / preempted / pending
 *
 * Every W&B call is a child wbsched with a hard deadline; every callback
 * returns 0 whatever W&B does (the plugin must be "optional" in
 * plugstack.conf and must never fail or delay a job for W&B's sake).
 * The logic lives in plugin_job.c, plugin_outcome.c and plugin_exec.c.
 */
#include <errno.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>
#include <slurm/slurm.h>
#include <slurm/spank.h>

#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/log.h"

#include "plugin_exec.h"
#include "plugin_job.h"
#include "plugin_outcome.h"
#include "plugin_sbatch.h"

SPANK_PLUGIN(wbsched, 1);

/* Time a child may take beyond the operation budget (exec, TLS set-up). */
#define EXEC_SLACK_MS 1000

extern char **environ;

static struct plugin_opts opts = { .wandb = -1 };

enum opt_val {
	OPT_WANDB,
	OPT_NO_WANDB,
	OPT_PROJECT,
	OPT_ENTITY,
	OPT_NAME,
	OPT_GROUP,
	OPT_TAGS,
	OPT_NOTES,
	OPT_JOB_TYPE,
	OPT_RUN_ID,
	OPT_AFTER,
};

/* Where the value of each --wandb-* option that takes one goes. */
static const size_t opt_slots[] = {
	[OPT_PROJECT] = offsetof(struct plugin_opts, project),
	[OPT_ENTITY] = offsetof(struct plugin_opts, entity),
	[OPT_NAME] = offsetof(struct plugin_opts, name),
	[OPT_GROUP] = offsetof(struct plugin_opts, group),
	[OPT_TAGS] = offsetof(struct plugin_opts, tags),
	[OPT_NOTES] = offsetof(struct plugin_opts, notes),
	[OPT_JOB_TYPE] = offsetof(struct plugin_opts, job_type),
	[OPT_RUN_ID] = offsetof(struct plugin_opts, run_id),
	[OPT_AFTER] = offsetof(struct plugin_opts, after),
};

/* Idempotent: Slurm may call it in several processes and more than once. */
static int opt_cb(int val, const char *optarg, int remote)
{
	char **slot;

	(void)remote;
	if (val == OPT_WANDB || val == OPT_NO_WANDB) {
		opts.wandb = val == OPT_WANDB;
		return 0;
	}
	if (val < OPT_PROJECT || val > OPT_AFTER)
		return -1;
	slot = (char **)((char *)&opts + opt_slots[val]);
	free(*slot);
	*slot = optarg ? strdup(optarg) : NULL;
	return 0;
}

/* spank.h declares the strings char *; -Wwrite-strings makes literals const. */
#define OPT(name, arg, usage, has_arg, val) \
	{ (char *)(name), (char *)(arg), (char *)(usage), has_arg, val, opt_cb }

static struct spank_option options[] = {
	OPT("wandb", NULL, "Track this job as a W&B run", 0, OPT_WANDB),
	OPT("no-wandb", NULL, "Do not track this job in W&B", 0, OPT_NO_WANDB),
	OPT("wandb-project", "PROJECT", "W&B project of the job's run", 1, OPT_PROJECT),
	OPT("wandb-entity", "ENTITY", "W&B entity (team or user) of the run", 1, OPT_ENTITY),
	OPT("wandb-name", "NAME", "W&B run name (default: the job name)", 1, OPT_NAME),
	OPT("wandb-group", "GROUP", "W&B run group", 1, OPT_GROUP),
	OPT("wandb-tags", "A,B", "W&B run tags", 1, OPT_TAGS),
	OPT("wandb-notes", "TEXT", "W&B run notes", 1, OPT_NOTES),
	OPT("wandb-job-type", "TYPE", "W&B run job type", 1, OPT_JOB_TYPE),
	OPT("wandb-run-id", "ID", "Use this W&B run instead of creating one", 1, OPT_RUN_ID),
	OPT("wandb-after", "RUN[,RUN...]", "Start the job's tasks only after these W&B runs finish",
	    1, OPT_AFTER),
	SPANK_OPTIONS_TABLE_END
};

/* slurm_error() reaches the user's sbatch/srun; slurm_info() only the log. */
static void slurm_sink(void *userdata, int level, const char *msg)
{
	(void)userdata;
	if (level <= WBS_LOG_WARNING)
		slurm_error("wbsched: %s", msg);
	else if (level <= WBS_LOG_INFO)
		slurm_info("wbsched: %s", msg);
	else
		slurm_debug("wbsched: %s", msg);
}

static const char *env_getenv(void *userdata, const char *name)
{
	(void)userdata;
	return getenv(name);
}

/* spank_getenv() into a small rotating set of buffers. */
static const char *spank_env(void *userdata, const char *name)
{
	static char bufs[12][1024];
	static unsigned next;
	char *buf = bufs[next++ % 12];

	if (spank_getenv(userdata, name, buf, (int)sizeof(bufs[0])) != ESPANK_SUCCESS)
		return NULL;
	return buf;
}

/*
 * The plugstack arguments, parsed in every callback: the prolog and epilog
 * processes never run slurm_spank_init (research/slurm.md §6.2).
 */
static int load_config(struct wbs_config *cfg, int ac, char **av)
{
	struct wbs_error err = { 0 };

	wbs_log_set_sink(slurm_sink, NULL);
	wbs_log_set_level(WBS_LOG_DEBUG);
	wbs_config_init(cfg);
	if (wbs_config_load_args(cfg, ac, av, &err) < 0) {
		wbs_log(WBS_LOG_ERR, "plugstack.conf: %s; W&B tracking is off", err.msg);
		return -1;
	}
	return 0;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	struct wbs_config cfg;

	switch (spank_context()) {
	case S_CTX_SLURMD:
		/* Say at daemon start when the site configuration is wrong. */
		if (load_config(&cfg, ac, av) == 0)
			wbs_config_release(&cfg);
		return 0;
	case S_CTX_ALLOCATOR:
	case S_CTX_LOCAL:
	case S_CTX_REMOTE:
		for (struct spank_option *o = options; o->name; o++)
			(void)spank_option_register(sp, o);
		return 0;
	default:
		return 0;
	}
}

/* Runs a wbsched command line and waits, under the budget. */
static int run_wbsched(const struct wbs_config *cfg, struct plugin_argv *a, bool detach,
		       bool drop, uid_t uid, gid_t gid, char *const *envp)
{
	struct plugin_exec x = {
		.path = wbs_config_wbsched_path(cfg),
		.argv = a->v,
		.envp = envp,
		.drop = drop,
		.uid = uid,
		.gid = gid,
		.deadline_ms = cfg->budget_ms + EXEC_SLACK_MS,
		.detach = detach,
		.keep_stderr = detach,
	};
	struct wbs_error err = { 0 };
	int status;

	if (a->oom) {
		wbs_log(WBS_LOG_ERR, "out of memory");
		return -1;
	}
	if (plugin_exec(&x, &status, &err) < 0) {
		wbs_log(WBS_LOG_ERR, "%s", err.msg);
		return -1;
	}
	return status;
}

/* ---- submit: sbatch, salloc, and srun outside an allocation ------------- */

static int submit(spank_t sp, int ac, char **av)
{
	struct plugin_var vars[PLUGIN_MAX_VARS];
	struct plugin_sbatch sb = { 0 };
	struct plugin_job job = { 0 };
	struct plugin_argv a = { 0 };
	struct wbs_config cfg;
	struct wbs_error err = { 0 };
	bool enabled = false;
	char *meta = NULL;
	size_t n;
	int ret = 0;

	if (load_config(&cfg, ac, av) < 0)
		return 0;
	if (plugin_job_at_submit(&opts, &cfg, env_getenv, NULL, &enabled, &job, &err) < 0) {
		/* A bad option is the user's to fix: say which, refuse the submission. */
		wbs_log(WBS_LOG_ERR, "%s", err.msg);
		ret = -1;
		goto out;
	}
	if (!enabled)
		goto out;

	n = plugin_job_control_vars(&job, vars);
	for (size_t i = 0; i < n; i++) {
		char name[64];

		if (spank_job_control_setenv(sp, vars[i].name, vars[i].value, 1) != ESPANK_SUCCESS)
			wbs_log(WBS_LOG_WARNING, "cannot pass %s to the job", vars[i].name);
		/*
		 * srun's job control variables reach the prolog but not its own
		 * step (research §4.4): srun hands its environment to the tasks,
		 * so put them there under the name they have in a batch job.
		 */
		(void)snprintf(name, sizeof(name), "SLURM_SPANK_%s", vars[i].name);
		if (spank_context() == S_CTX_LOCAL)
			(void)setenv(name, vars[i].value, 1);
	}

	/*
	 * Pending at once; detached, so that sbatch never waits for W&B.  An
	 * array gets one run per task, "<id>-<task>", grouped under the id.
	 */
	plugin_sbatch_read(&sb);
	meta = plugin_sbatch_config_json(&sb);
	plugin_argv_base(&a, &cfg, ac, av, &job);
	plugin_argv_add(&a, "-q");
	plugin_argv_add(&a, "create");
	plugin_argv_add(&a, "--keep-running");
	plugin_argv_add(&a, "--id");
	plugin_argv_add(&a, job.run_id);
	if (sb.array) {
		plugin_argv_add(&a, "--indexes");
		plugin_argv_add(&a, sb.array);
	}
	plugin_argv_meta(&a, &job, PLUGIN_NO_ARRAY_TASK, sb.job_name);
	if (meta) {
		plugin_argv_add(&a, "--config-json");
		plugin_argv_add(&a, meta);
	}
	(void)run_wbsched(&cfg, &a, true, false, 0, 0, environ);
out:
	free(meta);
	plugin_sbatch_release(&sb);
	plugin_argv_release(&a);
	plugin_job_release(&job);
	wbs_config_release(&cfg);
	return ret;
}

/* The job's SLURM_SPANK_WBSCHED_* variables, as job control variables again. */
static void reexport(spank_t sp)
{
	struct plugin_var vars[PLUGIN_MAX_VARS];
	struct plugin_job job = { 0 };
	size_t n;

	if (plugin_job_from_env(env_getenv, NULL, "SLURM_SPANK_", &job) < 0)
		return;
	n = plugin_job_control_vars(&job, vars);
	for (size_t i = 0; i < n; i++)
		(void)spank_job_control_setenv(sp, vars[i].name, vars[i].value, 1);
	plugin_job_release(&job);
}

int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	switch (spank_context()) {
	case S_CTX_ALLOCATOR:
		return submit(sp, ac, av);
	case S_CTX_LOCAL:
		/*
		 * srun inside an allocation: the job already has its run.  Under
		 * salloc the prolog runs at the first srun and sees that srun's
		 * job control variables, so pass the job's on again.
		 */
		if (getenv("SLURM_JOB_ID")) {
			reexport(sp);
			return 0;
		}
		return submit(sp, ac, av);
	default:
		return 0;
	}
}

/* ---- on the compute node: prolog, tasks, epilog ------------------------- */

/* What the prolog and epilog need from slurmctld's job record. */
struct job_record {
	job_info_msg_t *msg;
	slurm_job_info_t *info; /* borrowed from msg */
};

static int load_job(spank_t sp, uint32_t *ret_job_id, struct job_record *rec)
{
	uint32_t job_id = 0;

	if (spank_get_item(sp, S_JOB_ID, &job_id) != ESPANK_SUCCESS) {
		wbs_log(WBS_LOG_ERR, "cannot get the job id");
		return -1;
	}
	*ret_job_id = job_id;
	if (slurm_load_job(&rec->msg, job_id, SHOW_ALL) != 0 || !rec->msg ||
	    rec->msg->record_count < 1) {
		wbs_log(WBS_LOG_ERR, "cannot load job %u from slurmctld", job_id);
		return -1;
	}
	/* The first task of an array shares the array's id: its load returns them all. */
	for (uint32_t i = 0; i < rec->msg->record_count; i++)
		if (rec->msg->job_array[i].job_id == job_id)
			rec->info = &rec->msg->job_array[i];
	if (!rec->info) {
		wbs_log(WBS_LOG_ERR, "slurmctld has no record of job %u", job_id);
		return -1;
	}
	return 0;
}

static uint32_t array_task_of(const slurm_job_info_t *info)
{
	if (info->array_task_id == NO_VAL || info->array_job_id == 0)
		return PLUGIN_NO_ARRAY_TASK;
	return info->array_task_id;
}

/*
 * The child's credentials and environment on a compute node: as root when
 * the site keeps a root-only api_key_file, otherwise as the job's user, so
 * that the user's own ~/.netrc is read without root privileges.
 */
struct node_child {
	bool drop;
	uid_t uid;
	gid_t gid;
	char *envp[16];
	char home[4200];
};

static int node_child_init(spank_t sp, const struct wbs_config *cfg, struct node_child *c)
{
	static const char *const passed[] = { "http_proxy", "https_proxy", "no_proxy",
					      "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY" };
	uid_t uid = 0;
	size_t n = 0;
	struct passwd pw, *res = NULL;
	char pwbuf[4096];

	memset(c, 0, sizeof(*c));
	if (spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS) {
		wbs_log(WBS_LOG_ERR, "cannot get the job's user");
		return -1;
	}
	if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &res) != 0 || !res) {
		wbs_log(WBS_LOG_ERR, "cannot look up uid %u", (unsigned)uid);
		return -1;
	}
	c->drop = !cfg->api_key_file && uid != 0;
	c->uid = uid;
	c->gid = pw.pw_gid;
	(void)snprintf(c->home, sizeof(c->home), "HOME=%s", c->drop ? pw.pw_dir : "/root");
	c->envp[n++] = c->home;
	c->envp[n++] = (char *)"PATH=/usr/local/bin:/usr/bin:/bin";
	for (size_t i = 0; i < sizeof(passed) / sizeof(passed[0]); i++) {
		char *v = getenv(passed[i]);

		/* environ entries are "NAME=value": hand the whole string on */
		if (v)
			c->envp[n++] = v - strlen(passed[i]) - 1;
	}
	c->envp[n] = NULL;
	return 0;
}

/* {"slurm": {...}}: what Slurm knows of this attempt, recorded on the run. */
static char *slurm_config_json(uint32_t job_id, const slurm_job_info_t *info)
{
	struct json_object *root = json_object_new_object(), *s = json_object_new_object();
	char *text = NULL;

	if (!root || !s) {
		json_object_put(root);
		json_object_put(s);
		return NULL;
	}
	json_object_object_add(root, "slurm", s);
	json_object_object_add(s, "job_id", json_object_new_int64(job_id));
	if (array_task_of(info) != PLUGIN_NO_ARRAY_TASK) {
		json_object_object_add(s, "array_job_id", json_object_new_int64(info->array_job_id));
		json_object_object_add(s, "array_task_id",
				       json_object_new_int64(info->array_task_id));
	}
	if (info->cluster)
		json_object_object_add(s, "cluster", json_object_new_string(info->cluster));
	if (info->partition)
		json_object_object_add(s, "partition", json_object_new_string(info->partition));
	if (info->account)
		json_object_object_add(s, "account", json_object_new_string(info->account));
	if (info->nodes)
		json_object_object_add(s, "nodes", json_object_new_string(info->nodes));
	json_object_object_add(s, "num_nodes", json_object_new_int64(info->num_nodes));
	json_object_object_add(s, "num_tasks", json_object_new_int64(info->num_tasks));
	if (info->time_limit != INFINITE && info->time_limit != NO_VAL)
		json_object_object_add(s, "time_limit_minutes",
				       json_object_new_int64(info->time_limit));
	json_object_object_add(s, "restart_count", json_object_new_int(info->restart_cnt));
	text = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
	json_object_put(root);
	return text;
}

int slurm_spank_job_prolog(spank_t sp, int ac, char **av)
{
	struct job_record rec = { 0 };
	struct plugin_job job = { 0 };
	struct plugin_argv a = { 0 };
	struct node_child child;
	struct wbs_config cfg;
	uint32_t job_id, task;
	char id[96], *meta = NULL;

	/* NB: spank_job_control_getenv() would crash here (research §6.1): getenv(). */
	if (plugin_job_from_env(env_getenv, NULL, "SPANK_", &job) < 0)
		return 0;
	if (load_config(&cfg, ac, av) < 0)
		goto out_job;
	if (load_job(sp, &job_id, &rec) < 0 || node_child_init(sp, &cfg, &child) < 0)
		goto out;
	task = array_task_of(rec.info);
	meta = slurm_config_json(job_id, rec.info);

	plugin_argv_base(&a, &cfg, ac, av, &job);
	plugin_argv_add(&a, "start");
	plugin_argv_meta(&a, &job, task, rec.info->name);
	if (meta) {
		plugin_argv_add(&a, "--config-json");
		plugin_argv_add(&a, meta);
	}
	plugin_argv_add(&a, plugin_job_run_id(&job, task, id, sizeof(id)));
	(void)run_wbsched(&cfg, &a, false, child.drop, child.uid, child.gid, child.envp);
out:
	free(meta);
	plugin_argv_release(&a);
	if (rec.msg)
		slurm_free_job_info_msg(rec.msg);
	wbs_config_release(&cfg);
out_job:
	plugin_job_release(&job);
	return 0;
}

/* Every task of every step gets the variables wandb.init() reads. */
int slurm_spank_user_init(spank_t sp, int ac, char **av)
{
	struct plugin_var vars[PLUGIN_MAX_VARS];
	struct plugin_job job = { 0 };
	uint32_t array_id = 0, task = PLUGIN_NO_ARRAY_TASK;
	char id[96];
	size_t n;

	(void)ac;
	(void)av;
	wbs_log_set_sink(slurm_sink, NULL);
	/* The job control variables arrive as SLURM_SPANK_*, even with --export=NONE. */
	if (plugin_job_from_env(spank_env, sp, "SLURM_SPANK_", &job) < 0)
		return 0;
	/* srun steps of a plain job report an array id with task NO_VAL: not an array */
	if (spank_get_item(sp, S_JOB_ARRAY_ID, &array_id) != ESPANK_SUCCESS || array_id == 0 ||
	    spank_get_item(sp, S_JOB_ARRAY_TASK_ID, &task) != ESPANK_SUCCESS || task == NO_VAL)
		task = PLUGIN_NO_ARRAY_TASK;
	n = plugin_job_task_env(&job, task, id, sizeof(id), vars);
	for (size_t i = 0; i < n; i++)
		if (spank_setenv(sp, vars[i].name, vars[i].value, 1) != ESPANK_SUCCESS)
			wbs_log(WBS_LOG_WARNING, "cannot set %s for the tasks", vars[i].name);
	plugin_job_release(&job);
	return 0;
}

/*
 * --wandb-after: in each task process, before the user's program runs, wait
 * for the runs.  This is the forked task, not slurmstepd, so ending it with
 * _exit() fails the task (and the job) with the reason on its stderr, which
 * is what the user asked for; W&B being down only makes it wait longer.
 */
int slurm_spank_task_init_privileged(spank_t sp, int ac, char **av)
{
	struct plugin_job job = { 0 };
	struct plugin_argv a = { 0 };
	struct node_child child;
	struct wbs_config cfg;
	struct plugin_exec x;
	struct wbs_error err = { 0 };
	char *after = NULL;
	int status = 0;

	if (plugin_job_from_env(spank_env, sp, "SLURM_SPANK_", &job) < 0 || !job.after) {
		plugin_job_release(&job);
		return 0;
	}
	if (load_config(&cfg, ac, av) < 0 || node_child_init(sp, &cfg, &child) < 0)
		goto out;
	plugin_argv_base(&a, &cfg, ac, av, &job);
	plugin_argv_add(&a, "wait");
	if (cfg.after_timeout_ms > 0) {
		plugin_argv_add(&a, "--timeout");
		plugin_argv_addf(&a, "%.3f", (double)cfg.after_timeout_ms / 1000.0);
	}
	after = strdup(job.after);
	for (char *save = NULL, *t = strtok_r(job.after, ",", &save); t;
	     t = strtok_r(NULL, ",", &save))
		plugin_argv_add(&a, t);
	x = (struct plugin_exec){
		.path = wbs_config_wbsched_path(&cfg),
		.argv = a.v,
		.envp = child.envp,
		.drop = child.drop,
		.uid = child.uid,
		.gid = child.gid,
		/* bounded by after_timeout_ms, else by the job's own time limit */
		.deadline_ms = cfg.after_timeout_ms > 0 ? cfg.after_timeout_ms + EXEC_SLACK_MS
							: 365L * 24 * 3600 * 1000,
		.keep_stderr = true,
	};
	if (a.oom || plugin_exec(&x, &status, &err) < 0) {
		wbs_log(WBS_LOG_ERR, "--wandb-after: %s", a.oom ? "out of memory" : err.msg);
		goto out;
	}
	if (status != 0) {
		dprintf(STDERR_FILENO,
			"wbsched: --wandb-after=%s: %s; the job's tasks do not start\n",
			after ? after : "",
			status == 2 ? "the wait timed out" : "a run it waits for did not finish");
		_exit(status == 2 ? 2 : 1);
	}
out:
	free(after);
	plugin_argv_release(&a);
	wbs_config_release(&cfg);
	plugin_job_release(&job);
	return 0;
}

int slurm_spank_job_epilog(spank_t sp, int ac, char **av)
{
	struct job_record rec = { 0 };
	struct plugin_job job = { 0 };
	struct plugin_outcome outcome;
	struct node_child child;
	struct wbs_config cfg;
	struct plugin_job_end end;
	uint32_t job_id, task;
	char id[96];
	int steps;

	if (plugin_job_from_env(env_getenv, NULL, "SPANK_", &job) < 0)
		return 0;
	if (load_config(&cfg, ac, av) < 0)
		goto out_job;
	if (load_job(sp, &job_id, &rec) < 0 || node_child_init(sp, &cfg, &child) < 0)
		goto out;
	task = array_task_of(rec.info);
	end = (struct plugin_job_end){
		.job_state = rec.info->job_state,
		.exit_code = rec.info->exit_code,
		.preempt_time = rec.info->preempt_time,
	};
	steps = plugin_outcome(&end, &outcome);
	wbs_log(WBS_LOG_INFO, "job %u ended %s: %d W&B update(s) for run %s", job_id,
		plugin_job_state_name(end.job_state), steps,
		plugin_job_run_id(&job, task, id, sizeof(id)));
	for (int i = 0; i < steps; i++) {
		struct plugin_argv a = { 0 };

		plugin_argv_base(&a, &cfg, ac, av, &job);
		for (int k = 0; outcome.steps[i][k]; k++)
			plugin_argv_add(&a, outcome.steps[i][k]);
		plugin_argv_add(&a, id);
		(void)run_wbsched(&cfg, &a, false, child.drop, child.uid, child.gid, child.envp);
		plugin_argv_release(&a);
	}
out:
	if (rec.msg)
		slurm_free_job_info_msg(rec.msg);
	wbs_config_release(&cfg);
out_job:
	plugin_job_release(&job);
	return 0;
}

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	(void)sp;
	(void)ac;
	(void)av;
	plugin_opts_release(&opts);
	return 0;
}
