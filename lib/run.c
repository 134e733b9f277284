/*
 * Run operations: the GraphQL documents of lib/graphql/ put to work.
 *
 * Every value travels in GraphQL variables; the only text generated here is
 * the operation header and the aliases (r0, r1, ...) of batched requests.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "wbsched/cleanup.h"
#include "wbsched/client.h"
#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/graphql.h"
#include "wbsched/log.h"
#include "wbsched/run.h"
#include "wbsched/runid.h"
#include "wbsched/state.h"

#include "graphql_docs.h"
#include "run_internal.h"

static int dup_or_null(const char *s, char **ret)
{
	*ret = NULL;
	if (!s)
		return 0;
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

/* ---- run references ---------------------------------------------------- */

void wbs_run_ref_release(struct wbs_run_ref *ref)
{
	if (!ref)
		return;
	free(ref->entity);
	free(ref->project);
	free(ref->id);
	*ref = (struct wbs_run_ref){ 0 };
}

int wbs_run_ref_set(struct wbs_run_ref *ref, const char *entity, const char *project,
		    const char *id, struct wbs_error *err)
{
	struct wbs_run_ref r = { 0 };
	int ret;

	if (entity) {
		ret = wbs_name_validate("entity", entity, err);
		if (ret < 0)
			return ret;
	}
	ret = wbs_name_validate("project", project, err);
	if (ret < 0)
		return ret;
	ret = wbs_run_id_validate(id, err);
	if (ret < 0)
		return ret;
	if (dup_or_null(entity, &r.entity) < 0 || dup_or_null(project, &r.project) < 0 ||
	    dup_or_null(id, &r.id) < 0) {
		wbs_run_ref_release(&r);
		return OOM(err);
	}
	wbs_run_ref_release(ref);
	*ref = r;
	return 0;
}

int wbs_run_ref_parse(const char *path, const struct wbs_config *cfg, struct wbs_run_ref *ret,
		      struct wbs_error *err)
{
	_cleanup_free_ char *copy = NULL;
	char *parts[3] = { NULL, NULL, NULL };
	size_t n = 0;
	char *p, *slash;

	if (!path || !*path) {
		path = getenv("WANDB_RUN_ID");
		if (!path || !*path)
			return wbs_error_set(err, -EINVAL,
					     "no run given: name one as ENTITY/PROJECT/RUN_ID or set WANDB_RUN_ID");
	}
	copy = strdup(path);
	if (!copy)
		return OOM(err);
	for (p = copy; n < 3; p = slash + 1) {
		parts[n++] = p;
		slash = strchr(p, '/');
		if (!slash)
			break;
		*slash = '\0';
	}
	if (slash)
		return wbs_error_set(err, -EINVAL,
				     "invalid run path '%s': expected ENTITY/PROJECT/RUN_ID", path);
	switch (n) {
	case 1:
		return wbs_run_ref_set(ret, cfg->entity, wbs_config_project(cfg), parts[0], err);
	case 2:
		return wbs_run_ref_set(ret, cfg->entity, parts[0], parts[1], err);
	default:
		return wbs_run_ref_set(ret, parts[0], parts[1], parts[2], err);
	}
}

char *wbs_run_path(const char *entity, const char *project, const char *id)
{
	char *s;

	if (asprintf(&s, "%s/%s/%s", entity ? entity : "-", project, id) < 0)
		return NULL;
	return s;
}

void wbs_run_info_release(struct wbs_run_info *info)
{
	if (!info)
		return;
	free(info->entity);
	free(info->project);
	free(info->id);
	free(info->storage_id);
	free(info->state);
	free(info->display_name);
	free(info->group);
	free(info->job_type);
	free(info->heartbeat_at);
	*info = (struct wbs_run_info){ 0 };
}

int wbs_run_resolve_entity(struct wbs_client *client, struct wbs_run_ref *ref,
			   struct wbs_error *err)
{
	_cleanup_json_ struct json_object *data = NULL;
	const char *entity;
	int r;

	if (ref->entity)
		return 0;
	r = wbs_client_graphql(client, "Viewer", wbs_doc_viewer, NULL, &data, err);
	if (r < 0)
		return r;
	entity = wbs_json_path_string(data, "viewer.entity");
	if (!entity)
		return wbs_error_set(err, -EPROTO,
				     "malformed reply from W&B: the viewer has no default entity");
	r = wbs_name_validate("entity", entity, err);
	if (r < 0)
		return r;
	ref->entity = strdup(entity);
	return ref->entity ? 0 : OOM(err);
}

/* ---- batched documents ------------------------------------------------- */

/*
 * "mutation UpsertRuns($i0: UpsertBucketInput!, ...) { r0: upsertBucket(input:
 * $i0) { ...UpsertedRun } ... }" followed by the fragment.
 */
static char *upsert_document(size_t n)
{
	char *doc = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&doc, &len);

	if (!f)
		return NULL;
	fputs("mutation UpsertRuns(", f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s$i%zu: UpsertBucketInput!", i ? ", " : "", i);
	fputs(") {\n", f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "  r%zu: upsertBucket(input: $i%zu) {\n    ...UpsertedRun\n  }\n", i, i);
	fputs("}\n", f);
	fputs(wbs_doc_upsert_runs, f);
	if (fclose(f) != 0) {
		free(doc);
		return NULL;
	}
	return doc;
}

/*
 * "query ReadRuns($e0: String, $p0: String!, $n0: String!, ...) { r0:
 * project(name: $p0, entityName: $e0) { run(name: $n0) { ...RunStatus } } ... }"
 */
static char *read_document(size_t n)
{
	char *doc = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&doc, &len);

	if (!f)
		return NULL;
	fputs("query ReadRuns(", f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s$e%zu: String, $p%zu: String!, $n%zu: String!", i ? ", " : "", i, i,
			i);
	fputs(") {\n", f);
	for (size_t i = 0; i < n; i++)
		fprintf(f,
			"  r%zu: project(name: $p%zu, entityName: $e%zu) {\n"
			"    run(name: $n%zu) {\n      ...RunStatus\n    }\n  }\n",
			i, i, i, i);
	fputs("}\n", f);
	fputs(wbs_doc_read_runs, f);
	if (fclose(f) != 0) {
		free(doc);
		return NULL;
	}
	return doc;
}

int run_json_add_string(struct json_object *obj, const char *key, const char *s)
{
	struct json_object *v = NULL;

	if (s) {
		v = json_object_new_string(s);
		if (!v)
			return -ENOMEM;
	}
	return json_object_object_add(obj, key, v) < 0 ? -ENOMEM : 0;
}

/* The SDK sends config as {"key": {"value": v, "desc": null}}. */
static struct json_object *wrap_config(struct json_object *config)
{
	struct json_object *out = json_object_new_object();

	if (!out)
		return NULL;
	json_object_object_foreach(config, key, val)
	{
		struct json_object *item = json_object_new_object();

		if (!item || json_object_object_add(item, "value", json_object_get(val)) < 0 ||
		    json_object_object_add(item, "desc", NULL) < 0 ||
		    json_object_object_add(out, key, item) < 0) {
			json_object_put(item);
			json_object_put(out);
			return NULL;
		}
	}
	return out;
}

static struct json_object *upsert_input(const char *entity, const char *project,
					const struct wbs_run_spec *spec)
{
	_cleanup_json_ struct json_object *in = json_object_new_object();

	if (!in || run_json_add_string(in, "name", spec->id) < 0 ||
	    run_json_add_string(in, "modelName", project) < 0 ||
	    run_json_add_string(in, "entityName", entity) < 0 || run_json_add_string(in, "state", spec->state) < 0)
		return NULL;
	if ((spec->display_name && run_json_add_string(in, "displayName", spec->display_name) < 0) ||
	    (spec->group && run_json_add_string(in, "groupName", spec->group) < 0) ||
	    (spec->job_type && run_json_add_string(in, "jobType", spec->job_type) < 0) ||
	    (spec->notes && run_json_add_string(in, "notes", spec->notes) < 0))
		return NULL;
	if (spec->n_tags > 0) {
		struct json_object *tags = json_object_new_array();

		if (!tags || json_object_object_add(in, "tags", tags) < 0)
			return NULL;
		for (size_t i = 0; i < spec->n_tags; i++)
			if (json_object_array_add(tags, json_object_new_string(spec->tags[i])) < 0)
				return NULL;
	}
	if (spec->config) {
		_cleanup_json_ struct json_object *wrapped = wrap_config(spec->config);

		if (!wrapped)
			return NULL;
		if (run_json_add_string(in, "config", json_object_to_json_string_ext(
						     wrapped, JSON_C_TO_STRING_PLAIN)) < 0)
			return NULL;
	}
	return TAKE_PTR(in);
}

/* Fills @info from a Run object of a reply; @ref names it when the reply does not. */
static int info_from_run(struct json_object *run, const char *entity, const char *project,
			 const char *id, struct wbs_run_info *info, struct wbs_error *err)
{
	struct json_object *exitcode;
	const char *e = wbs_json_path_string(run, "project.entity.name");
	const char *p = wbs_json_path_string(run, "project.name");
	const char *n = wbs_json_path_string(run, "name");

	wbs_run_info_release(info);
	if (dup_or_null(e ? e : entity, &info->entity) < 0 ||
	    dup_or_null(p ? p : project, &info->project) < 0 ||
	    dup_or_null(n ? n : id, &info->id) < 0)
		return OOM(err);
	if (!run)
		return 0;
	info->exists = true;
	if (!wbs_json_path_string(run, "id"))
		return wbs_error_set(err, -EPROTO, "malformed reply from W&B: run '%s' has no id",
				     id);
	if (dup_or_null(wbs_json_path_string(run, "id"), &info->storage_id) < 0 ||
	    dup_or_null(wbs_json_path_string(run, "state"), &info->state) < 0 ||
	    dup_or_null(wbs_json_path_string(run, "displayName"), &info->display_name) < 0 ||
	    dup_or_null(wbs_json_path_string(run, "group"), &info->group) < 0 ||
	    dup_or_null(wbs_json_path_string(run, "jobType"), &info->job_type) < 0 ||
	    dup_or_null(wbs_json_path_string(run, "heartbeatAt"), &info->heartbeat_at) < 0)
		return OOM(err);
	exitcode = wbs_json_path(run, "exitcode");
	if (exitcode && (json_object_is_type(exitcode, json_type_int) ||
			 json_object_is_type(exitcode, json_type_double))) {
		double d = json_object_get_double(exitcode);

		/* an exit code is small; anything else is not one (and would not fit a long) */
		if (d >= -1e9 && d <= 1e9) {
			info->has_exitcode = true;
			info->exitcode = (long)d;
		}
	}
	return 0;
}

static int create_batch(struct wbs_client *client, const char *entity, const char *project,
			const struct wbs_run_spec *specs, size_t n, struct wbs_run_info *ret_infos,
			struct wbs_error *err)
{
	_cleanup_json_ struct json_object *vars = json_object_new_object(), *data = NULL;
	_cleanup_free_ char *doc = upsert_document(n);
	int r;

	if (!vars || !doc)
		return OOM(err);
	for (size_t i = 0; i < n; i++) {
		char name[32];
		struct json_object *in;

		r = wbs_run_id_validate(specs[i].id, err);
		if (r < 0)
			return r;
		in = upsert_input(entity, project, &specs[i]);
		(void)snprintf(name, sizeof(name), "i%zu", i);
		if (!in || json_object_object_add(vars, name, in) < 0)
			return OOM(err);
	}
	r = wbs_client_graphql(client, "UpsertRuns", doc, vars, &data, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		char path[48];
		struct json_object *bucket;

		(void)snprintf(path, sizeof(path), "r%zu.bucket", i);
		bucket = wbs_json_path(data, path);
		if (!bucket || !json_object_is_type(bucket, json_type_object))
			return wbs_error_set(err, -EPROTO,
					     "malformed reply from W&B: no run in answer %zu", i);
		r = info_from_run(bucket, entity, project, specs[i].id, &ret_infos[i], err);
		if (r < 0)
			return r;
		(void)snprintf(path, sizeof(path), "r%zu.inserted", i);
		ret_infos[i].inserted = json_object_get_boolean(wbs_json_path(data, path));
	}
	return 0;
}

int wbs_run_create(struct wbs_client *client, const char *entity, const char *project,
		   const struct wbs_run_spec *specs, size_t n, struct wbs_run_info *ret_infos,
		   struct wbs_error *err)
{
	for (size_t done = 0; done < n; done += WBS_RUN_BATCH) {
		size_t chunk = n - done < WBS_RUN_BATCH ? n - done : WBS_RUN_BATCH;
		int r = create_batch(client, entity, project, specs + done, chunk,
				     ret_infos + done, err);

		if (r < 0)
			return r;
	}
	return 0;
}

int wbs_run_create_unless_alive(struct wbs_client *client, const char *entity, const char *project,
				const struct wbs_run_spec *specs, size_t n,
				struct wbs_run_info *ret_infos, struct wbs_error *err)
{
	struct wbs_run_ref *refs = calloc(n ? n : 1, sizeof(*refs));
	struct wbs_run_spec *todo = calloc(n ? n : 1, sizeof(*todo));
	struct wbs_run_info *made = calloc(n ? n : 1, sizeof(*made));
	size_t *index = calloc(n ? n : 1, sizeof(*index));
	size_t m = 0;
	int r = 0;

	if (!refs || !todo || !made || !index) {
		r = OOM(err);
		goto out;
	}
	for (size_t i = 0; i < n && r == 0; i++)
		r = wbs_run_ref_set(&refs[i], entity, project, specs[i].id, err);
	if (r == 0)
		r = wbs_run_read(client, refs, n, ret_infos, err);
	for (size_t i = 0; i < n && r == 0; i++) {
		const char *state = ret_infos[i].state;

		if (state && (strcmp(state, "running") == 0 || strcmp(state, "preempting") == 0)) {
			ret_infos[i].left_alone = true;
			continue;
		}
		todo[m] = specs[i];
		index[m++] = i;
	}
	if (r == 0 && m > 0)
		r = wbs_run_create(client, entity, project, todo, m, made, err);
	for (size_t k = 0; k < m; k++) {
		if (r == 0) {
			wbs_run_info_release(&ret_infos[index[k]]);
			ret_infos[index[k]] = made[k];
		} else {
			wbs_run_info_release(&made[k]);
		}
	}
out:
	for (size_t i = 0; refs && i < n; i++)
		wbs_run_ref_release(&refs[i]);
	free(refs);
	free(todo);
	free(made);
	free(index);
	return r;
}

static int read_batch(struct wbs_client *client, const struct wbs_run_ref *refs, size_t n,
		      struct wbs_run_info *ret_infos, struct wbs_error *err)
{
	_cleanup_json_ struct json_object *vars = json_object_new_object(), *data = NULL;
	_cleanup_free_ char *doc = read_document(n);
	int r;

	if (!vars || !doc)
		return OOM(err);
	for (size_t i = 0; i < n; i++) {
		char e[24], p[24], id[24];

		(void)snprintf(e, sizeof(e), "e%zu", i);
		(void)snprintf(p, sizeof(p), "p%zu", i);
		(void)snprintf(id, sizeof(id), "n%zu", i);
		if (run_json_add_string(vars, e, refs[i].entity) < 0 ||
		    run_json_add_string(vars, p, refs[i].project) < 0 ||
		    run_json_add_string(vars, id, refs[i].id) < 0)
			return OOM(err);
	}
	r = wbs_client_graphql(client, "ReadRuns", doc, vars, &data, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		char path[32];

		(void)snprintf(path, sizeof(path), "r%zu.run", i);
		r = info_from_run(wbs_json_path(data, path), refs[i].entity, refs[i].project,
				  refs[i].id, &ret_infos[i], err);
		if (r < 0)
			return r;
	}
	return 0;
}

int wbs_run_read(struct wbs_client *client, const struct wbs_run_ref *refs, size_t n,
		 struct wbs_run_info *ret_infos, struct wbs_error *err)
{
	struct wbs_run_ref viewer = { 0 };
	int r = 0;

	for (size_t done = 0; done < n; done += WBS_RUN_BATCH) {
		size_t chunk = n - done < WBS_RUN_BATCH ? n - done : WBS_RUN_BATCH;

		r = read_batch(client, refs + done, chunk, ret_infos + done, err);
		if (r < 0)
			return r;
	}
	/*
	 * A missing run addressed without an entity lives in the key's default
	 * entity: name it, so the path printed is the one W&B would use.
	 */
	for (size_t i = 0; i < n && r == 0; i++) {
		if (ret_infos[i].entity)
			continue;
		r = wbs_run_resolve_entity(client, &viewer, err);
		if (r == 0)
			ret_infos[i].entity = strdup(viewer.entity);
		if (r == 0 && !ret_infos[i].entity)
			r = OOM(err);
	}
	wbs_run_ref_release(&viewer);
	return r;
}

/* ---- documents, for the schema test ------------------------------------ */

int wbs_run_documents(struct wbs_graphql_doc **ret_docs, size_t *ret_n, struct wbs_error *err)
{
	static const struct {
		const char *name;
		const char *text;
	} fixed[] = {
		{ "RunSummary", wbs_doc_run_summary },
		{ "UpdateRunSummary", wbs_doc_update_summary },
		{ "UpdateRunState", wbs_doc_update_run_state },
		{ "SetRunState", wbs_doc_set_run_state },
		{ "ServerFeatures", wbs_doc_server_features },
		{ "Viewer", wbs_doc_viewer },
	};
	static const size_t sizes[] = { 1, 3, WBS_RUN_BATCH };
	size_t n = ELEMENTSOF(fixed) + 2 * ELEMENTSOF(sizes), k = 0;
	struct wbs_graphql_doc *docs = calloc(n, sizeof(*docs));

	if (!docs)
		return OOM(err);
	for (size_t i = 0; i < ELEMENTSOF(fixed); i++, k++) {
		docs[k].name = fixed[i].name;
		docs[k].query = strdup(fixed[i].text);
	}
	for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
		docs[k].name = "UpsertRuns";
		docs[k++].query = upsert_document(sizes[i]);
		docs[k].name = "ReadRuns";
		docs[k++].query = read_document(sizes[i]);
	}
	for (size_t i = 0; i < n; i++) {
		if (!docs[i].query) {
			wbs_run_documents_free(docs, n);
			return OOM(err);
		}
	}
	*ret_docs = docs;
	*ret_n = n;
	return 0;
}

void wbs_run_documents_free(struct wbs_graphql_doc *docs, size_t n)
{
	if (!docs)
		return;
	for (size_t i = 0; i < n; i++)
		free(docs[i].query);
	free(docs);
}
