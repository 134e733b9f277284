/*
 * Reading sbatch's options from inside the plugin.
 *
 * Slurm 22.05's sbatch exports its option struct ("opt", and "sbopt" for the
 * sbatch-only part) and libslurmfull has slurm_option_isset() and
 * slurm_option_get(), which return the effective value of any option,
 * whether it came from the command line, an #SBATCH line or SBATCH_*
 * variables.  They are not a public API, so every symbol is looked up with
 * dlsym() and anything missing means "unknown", never an error.
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "plugin_sbatch.h"

typedef char *(*option_get_fn)(void *opt, const char *name);
typedef bool (*option_isset_fn)(void *opt, const char *name);
/* 22.05 takes (void **, file, line, func); extra arguments are harmless on newer ones. */
typedef void (*xfree_fn)(void **item, const char *file, int line, const char *func);

static char *get(void *opt, option_get_fn get_fn, option_isset_fn isset_fn, xfree_fn xfree,
		 const char *name)
{
	char *v, *copy;

	if (!isset_fn(opt, name))
		return NULL;
	v = get_fn(opt, name);
	if (!v)
		return NULL;
	copy = *v ? strdup(v) : NULL;
	xfree((void **)&v, __FILE__, __LINE__, __func__);
	return copy;
}

void plugin_sbatch_read(struct plugin_sbatch *ret)
{
	void *opt = dlsym(RTLD_DEFAULT, "opt");
	option_get_fn get_fn = (option_get_fn)dlsym(RTLD_DEFAULT, "slurm_option_get");
	option_isset_fn isset_fn = (option_isset_fn)dlsym(RTLD_DEFAULT, "slurm_option_isset");
	xfree_fn xfree = (xfree_fn)dlsym(RTLD_DEFAULT, "slurm_xfree");

	memset(ret, 0, sizeof(*ret));
	/* "sbopt" exists only in sbatch: salloc and srun have "opt" too, but no arrays. */
	if (!dlsym(RTLD_DEFAULT, "sbopt") || !opt || !get_fn || !isset_fn || !xfree)
		return;
	ret->array = get(opt, get_fn, isset_fn, xfree, "array");
	ret->job_name = get(opt, get_fn, isset_fn, xfree, "job-name");
	ret->partition = get(opt, get_fn, isset_fn, xfree, "partition");
	ret->account = get(opt, get_fn, isset_fn, xfree, "account");
	ret->nodes = get(opt, get_fn, isset_fn, xfree, "nodes");
	ret->ntasks = get(opt, get_fn, isset_fn, xfree, "ntasks");
	ret->time_limit = get(opt, get_fn, isset_fn, xfree, "time");
}

void plugin_sbatch_release(struct plugin_sbatch *s)
{
	free(s->array);
	free(s->job_name);
	free(s->partition);
	free(s->account);
	free(s->nodes);
	free(s->ntasks);
	free(s->time_limit);
	memset(s, 0, sizeof(*s));
}

char *plugin_sbatch_config_json(const struct plugin_sbatch *s)
{
	static const struct {
		const char *key;
		size_t offset;
	} fields[] = {
		{ "array", offsetof(struct plugin_sbatch, array) },
		{ "partition", offsetof(struct plugin_sbatch, partition) },
		{ "account", offsetof(struct plugin_sbatch, account) },
		{ "nodes", offsetof(struct plugin_sbatch, nodes) },
		{ "ntasks", offsetof(struct plugin_sbatch, ntasks) },
		{ "time_limit", offsetof(struct plugin_sbatch, time_limit) },
	};
	struct json_object *root, *slurm;
	char *text = NULL;
	bool any = false;

	root = json_object_new_object();
	slurm = json_object_new_object();
	if (!root || !slurm) {
		json_object_put(root);
		json_object_put(slurm);
		return NULL;
	}
	json_object_object_add(root, "slurm", slurm);
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const char *v = *(char *const *)((const char *)s + fields[i].offset);

		if (v) {
			json_object_object_add(slurm, fields[i].key, json_object_new_string(v));
			any = true;
		}
	}
	if (any)
		text = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
	json_object_put(root);
	return text;
}
