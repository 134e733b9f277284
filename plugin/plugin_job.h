#ifndef WBS_PLUGIN_JOB_H
#define WBS_PLUGIN_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wbs_config;
struct wbs_error;

/* What the user asked for with the --wandb-* options (NULL: not given). */
struct plugin_opts {
	int wandb; /* -1: not said, 0: --no-wandb, 1: --wandb */
	char *project;
	char *entity;
	char *name;
	char *group;
	char *tags;
	char *notes;
	char *job_type;
	char *run_id;
	char *after;
};

/*
 * The W&B side of a job, decided at submit and carried to the nodes in the
 * job control environment (WBSCHED_RUN_ID, WBSCHED_PROJECT, ...).
 */
struct plugin_job {
	char *run_id; /* the job's run; an array task's is "<run_id>-<task id>" */
	char *entity; /* NULL: the key's default entity */
	char *project;
	char *name;
	char *group;
	char *tags;
	char *notes;
	char *job_type;
	char *after; /* comma-separated run paths to wait for */
};

/* Looks a variable up: getenv(), spank_getenv(), a test table. */
typedef const char *(*plugin_getenv_fn)(void *userdata, const char *name);

void plugin_opts_release(struct plugin_opts *o);
void plugin_job_release(struct plugin_job *job);

/*
 * Decides at submit whether the job gets a run and with what: an option
 * wins over the submitter's WANDB_PROJECT, WANDB_ENTITY, WANDB_NAME,
 * WANDB_RUN_GROUP, WANDB_TAGS, WANDB_NOTES and WANDB_JOB_TYPE, which win over
 * the site's settings.  --no-wandb turns it off; --wandb or any other
 * --wandb-* option turns it on; otherwise the site's "enable" decides.  A
 * run id is generated unless --wandb-run-id names one.  -EINVAL with a
 * message naming the option on a bad value.
 */
int plugin_job_at_submit(const struct plugin_opts *o, const struct wbs_config *cfg,
			 plugin_getenv_fn env, void *userdata, bool *ret_enabled,
			 struct plugin_job *ret, struct wbs_error *err);

/*
 * Reads the job back from the job control variables, each named @prefix +
 * "WBSCHED_..." ("SPANK_" in the prolog and epilog, "SLURM_SPANK_" in the
 * job's environment).  -ENOENT when the job has no run.
 */
int plugin_job_from_env(plugin_getenv_fn env, void *userdata, const char *prefix,
			struct plugin_job *ret);

/* A name=value pair for spank_job_control_setenv() or spank_setenv(). */
struct plugin_var {
	const char *name;
	const char *value;
};

#define PLUGIN_MAX_VARS 12

/* The job control variables that carry @job to the nodes; returns how many. */
size_t plugin_job_control_vars(const struct plugin_job *job, struct plugin_var *ret);

#define PLUGIN_NO_ARRAY_TASK UINT32_MAX

/*
 * The run id of an attempt: the job's, or "<id>-<task>" for an array task.
 * Writes into @buf (at least 80 bytes).
 */
const char *plugin_job_run_id(const struct plugin_job *job, uint32_t array_task, char *buf,
			      size_t size);

/*
 * The variables every task gets so that wandb.init() attaches to the run:
 * WANDB_RUN_ID, WANDB_RESUME=allow, WANDB_PROJECT, WANDB_ENTITY and, when set,
 * WANDB_RUN_GROUP (an array task's group is the array's run id), WANDB_NAME,
 * WANDB_TAGS, WANDB_NOTES, WANDB_JOB_TYPE.  @idbuf holds the run id.
 */
size_t plugin_job_task_env(const struct plugin_job *job, uint32_t array_task, char *idbuf,
			   size_t size, struct plugin_var *ret);

/* A growing NULL-terminated argv. */
struct plugin_argv {
	char **v;
	size_t n;
	size_t cap;
	bool oom;
};

void plugin_argv_add(struct plugin_argv *a, const char *word);
void plugin_argv_addf(struct plugin_argv *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void plugin_argv_release(struct plugin_argv *a);

/*
 * The start of every wbsched command line: the binary, the plugstack
 * arguments ("config=FILE" as --config, the others as --set), the job's
 * entity and project.
 */
void plugin_argv_base(struct plugin_argv *a, const struct wbs_config *cfg, int ac, char **av,
		      const struct plugin_job *job);

/*
 * The run's metadata options (--name, --group, --tags, --notes, --job-type):
 * @array_task other than PLUGIN_NO_ARRAY_TASK groups the task's run under
 * the array's run id unless the user named a group.
 */
void plugin_argv_meta(struct plugin_argv *a, const struct plugin_job *job, uint32_t array_task,
		      const char *default_name);

#endif
