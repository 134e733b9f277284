/* The W&B side of a Slurm job: decided at submit, carried to the nodes. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/runid.h"

#include "plugin_job.h"

/* Each field: its option, the submitter's variable, the job control variable. */
static const struct field {
	const char *option;
	const char *wandb_var; /* read at submit, set in tasks; NULL: neither */
	const char *jc_var;
	size_t opt_offset;
	size_t job_offset;
} fields[] = {
#define F(opt, wv, jv, m) { opt, wv, jv, offsetof(struct plugin_opts, m), offsetof(struct plugin_job, m) }
	F("--wandb-run-id", NULL, "WBSCHED_RUN_ID", run_id),
	F("--wandb-entity", "WANDB_ENTITY", "WBSCHED_ENTITY", entity),
	F("--wandb-project", "WANDB_PROJECT", "WBSCHED_PROJECT", project),
	F("--wandb-name", "WANDB_NAME", "WBSCHED_NAME", name),
	F("--wandb-group", "WANDB_RUN_GROUP", "WBSCHED_GROUP", group),
	F("--wandb-tags", "WANDB_TAGS", "WBSCHED_TAGS", tags),
	F("--wandb-notes", "WANDB_NOTES", "WBSCHED_NOTES", notes),
	F("--wandb-job-type", "WANDB_JOB_TYPE", "WBSCHED_JOB_TYPE", job_type),
	F("--wandb-after", NULL, "WBSCHED_AFTER", after),
#undef F
};

#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))

static char *const *opt_member(const struct plugin_opts *o, const struct field *f)
{
	return (char *const *)((const char *)o + f->opt_offset);
}

static char **job_member(struct plugin_job *job, const struct field *f)
{
	return (char **)((char *)job + f->job_offset);
}

static const char *job_value(const struct plugin_job *job, const struct field *f)
{
	return *(char *const *)((const char *)job + f->job_offset);
}

void plugin_opts_release(struct plugin_opts *o)
{
	for (size_t i = 0; i < N_FIELDS; i++)
		free(*(char **)opt_member(o, &fields[i]));
	*o = (struct plugin_opts){ .wandb = -1 };
}

void plugin_job_release(struct plugin_job *job)
{
	for (size_t i = 0; i < N_FIELDS; i++)
		free(*job_member(job, &fields[i]));
	*job = (struct plugin_job){ 0 };
}

/* --wandb-after=RUN[,RUN...]: each an ENTITY/PROJECT/ID, PROJECT/ID or ID. */
static int check_after(const char *list, struct wbs_error *err)
{
	char *copy = strdup(list), *save = NULL;
	int r = 0;

	if (!copy)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	for (char *t = strtok_r(copy, ",", &save); t && r == 0; t = strtok_r(NULL, ",", &save)) {
		char *id = strrchr(t, '/');
		size_t slashes = 0;

		for (char *p = t; *p; p++)
			slashes += *p == '/';
		if (slashes > 2 || (id && id == t))
			r = wbs_error_set(err, -EINVAL,
					  "invalid --wandb-after run '%s': expected ENTITY/PROJECT/RUN_ID",
					  t);
		else if (wbs_run_id_validate(id ? id + 1 : t, err) < 0)
			r = -EINVAL;
	}
	free(copy);
	return r;
}

int plugin_job_at_submit(const struct plugin_opts *o, const struct wbs_config *cfg,
			 plugin_getenv_fn env, void *userdata, bool *ret_enabled,
			 struct plugin_job *ret, struct wbs_error *err)
{
	struct plugin_job job = { 0 };
	bool any_option = false;
	char id[WBS_RUN_ID_LEN + 1];
	int r = 0;

	for (size_t i = 0; i < N_FIELDS; i++) {
		const char *v = *opt_member(o, &fields[i]);

		if (v)
			any_option = true;
		if (!v && fields[i].wandb_var) {
			v = env(userdata, fields[i].wandb_var);
			if (v && !*v)
				v = NULL;
		}
		if (v && !(*job_member(&job, &fields[i]) = strdup(v)))
			r = -ENOMEM;
	}
	if (r == 0 && !job.entity && cfg->entity && !(job.entity = strdup(cfg->entity)))
		r = -ENOMEM;
	if (r == 0 && !job.project && !(job.project = strdup(wbs_config_project(cfg))))
		r = -ENOMEM;
	if (r == 0 && !job.tags && cfg->tags && !(job.tags = strdup(cfg->tags)))
		r = -ENOMEM;
	if (r < 0) {
		plugin_job_release(&job);
		return wbs_error_set(err, -ENOMEM, "out of memory");
	}

	if (o->wandb == 0)
		*ret_enabled = false;
	else
		*ret_enabled = o->wandb == 1 || any_option || cfg->enable == WBS_ENABLE_ALWAYS;
	if (!*ret_enabled) {
		plugin_job_release(&job);
		return 0;
	}

	if (job.run_id && wbs_run_id_validate(job.run_id, err) < 0)
		r = -EINVAL;
	else if (job.entity && wbs_name_validate("--wandb-entity", job.entity, err) < 0)
		r = -EINVAL;
	else if (wbs_name_validate("--wandb-project", job.project, err) < 0)
		r = -EINVAL;
	else if (job.after && check_after(job.after, err) < 0)
		r = -EINVAL;
	if (r == 0 && !job.run_id) {
		r = wbs_run_id_generate(id, err);
		if (r == 0 && !(job.run_id = strdup(id)))
			r = wbs_error_set(err, -ENOMEM, "out of memory");
	}
	if (r < 0) {
		plugin_job_release(&job);
		return r;
	}
	*ret = job;
	return 0;
}

int plugin_job_from_env(plugin_getenv_fn env, void *userdata, const char *prefix,
			struct plugin_job *ret)
{
	struct plugin_job job = { 0 };

	for (size_t i = 0; i < N_FIELDS; i++) {
		char name[64];
		const char *v;

		(void)snprintf(name, sizeof(name), "%s%s", prefix, fields[i].jc_var);
		v = env(userdata, name);
		if (v && *v && !(*job_member(&job, &fields[i]) = strdup(v))) {
			plugin_job_release(&job);
			return -ENOMEM;
		}
	}
	if (!job.run_id || wbs_run_id_validate(job.run_id, NULL) < 0 || !job.project) {
		plugin_job_release(&job);
		return -ENOENT;
	}
	*ret = job;
	return 0;
}

size_t plugin_job_control_vars(const struct plugin_job *job, struct plugin_var *ret)
{
	size_t n = 0;

	for (size_t i = 0; i < N_FIELDS; i++) {
		const char *v = job_value(job, &fields[i]);

		if (v)
			ret[n++] = (struct plugin_var){ fields[i].jc_var, v };
	}
	return n;
}

const char *plugin_job_run_id(const struct plugin_job *job, uint32_t array_task, char *buf,
			      size_t size)
{
	if (array_task == PLUGIN_NO_ARRAY_TASK)
		(void)snprintf(buf, size, "%s", job->run_id);
	else
		(void)snprintf(buf, size, "%s-%u", job->run_id, array_task);
	return buf;
}

size_t plugin_job_task_env(const struct plugin_job *job, uint32_t array_task, char *idbuf,
			   size_t size, struct plugin_var *ret)
{
	const char *group = job->group;
	size_t n = 0;

	if (!group && array_task != PLUGIN_NO_ARRAY_TASK)
		group = job->run_id;
	ret[n++] = (struct plugin_var){ "WANDB_RUN_ID",
					plugin_job_run_id(job, array_task, idbuf, size) };
	ret[n++] = (struct plugin_var){ "WANDB_RESUME", "allow" };
	ret[n++] = (struct plugin_var){ "WANDB_PROJECT", job->project };
	if (job->entity)
		ret[n++] = (struct plugin_var){ "WANDB_ENTITY", job->entity };
	if (group)
		ret[n++] = (struct plugin_var){ "WANDB_RUN_GROUP", group };
	if (job->name)
		ret[n++] = (struct plugin_var){ "WANDB_NAME", job->name };
	if (job->tags)
		ret[n++] = (struct plugin_var){ "WANDB_TAGS", job->tags };
	if (job->notes)
		ret[n++] = (struct plugin_var){ "WANDB_NOTES", job->notes };
	if (job->job_type)
		ret[n++] = (struct plugin_var){ "WANDB_JOB_TYPE", job->job_type };
	return n;
}

void plugin_argv_add(struct plugin_argv *a, const char *word)
{
	char *copy;

	if (a->oom)
		return;
	if (a->n + 2 > a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 16;
		char **v = realloc(a->v, cap * sizeof(*v));

		if (!v) {
			a->oom = true;
			return;
		}
		a->v = v;
		a->cap = cap;
	}
	copy = strdup(word);
	if (!copy) {
		a->oom = true;
		return;
	}
	a->v[a->n++] = copy;
	a->v[a->n] = NULL;
}

void plugin_argv_addf(struct plugin_argv *a, const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0) {
		a->oom = true;
		return;
	}
	plugin_argv_add(a, s);
	free(s);
}

void plugin_argv_release(struct plugin_argv *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	*a = (struct plugin_argv){ 0 };
}

void plugin_argv_base(struct plugin_argv *a, const struct wbs_config *cfg, int ac, char **av,
		      const struct plugin_job *job)
{
	plugin_argv_add(a, wbs_config_wbsched_path(cfg));
	for (int i = 0; i < ac; i++) {
		if (strncmp(av[i], "config=", 7) == 0) {
			plugin_argv_add(a, "--config");
			plugin_argv_add(a, av[i] + 7);
		} else {
			plugin_argv_add(a, "--set");
			plugin_argv_add(a, av[i]);
		}
	}
	if (job->entity) {
		plugin_argv_add(a, "--entity");
		plugin_argv_add(a, job->entity);
	}
	plugin_argv_add(a, "--project");
	plugin_argv_add(a, job->project);
}

void plugin_argv_meta(struct plugin_argv *a, const struct plugin_job *job, uint32_t array_task,
		      const char *default_name)
{
	const char *group = job->group;
	const char *name = job->name ? job->name : default_name;

	if (!group && array_task != PLUGIN_NO_ARRAY_TASK)
		group = job->run_id;
	if (name && *name) {
		plugin_argv_add(a, "--name");
		plugin_argv_add(a, name);
	}
	if (group) {
		plugin_argv_add(a, "--group");
		plugin_argv_add(a, group);
	}
	if (job->tags) {
		plugin_argv_add(a, "--tags");
		plugin_argv_add(a, job->tags);
	}
	if (job->notes) {
		plugin_argv_add(a, "--notes");
		plugin_argv_add(a, job->notes);
	}
	if (job->job_type) {
		plugin_argv_add(a, "--job-type");
		plugin_argv_add(a, job->job_type);
	}
}
