/*
 * Run state changes: start, preempting, heartbeat, finish, fail, requeue.
 * Each reads the run first where W&B's rules depend on its state, and never
 * moves a run that has already ended (the SDK or an earlier call ended it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "wbsched/cleanup.h"
#include "wbsched/client.h"
#include "wbsched/error.h"
#include "wbsched/graphql.h"
#include "wbsched/log.h"
#include "wbsched/run.h"
#include "wbsched/state.h"

#include "graphql_docs.h"
#include "run_internal.h"

static int read_one(struct wbs_client *client, const struct wbs_run_ref *ref,
		    struct wbs_run_info *info, struct wbs_error *err)
{
	return wbs_run_read(client, ref, 1, info, err);
}

static int create_one(struct wbs_client *client, const struct wbs_run_ref *ref, const char *state,
		      struct wbs_run_info *info, struct wbs_error *err)
{
	struct wbs_run_spec spec = { .id = ref->id, .state = state };

	return wbs_run_create(client, ref->entity, ref->project, &spec, 1, info, err);
}

/* Adds wbsched/reason and wbsched/exit_code to the run's summary. */
static int set_reason(struct wbs_client *client, const struct wbs_run_info *info,
		      const char *reason, int exit_code, struct wbs_error *err)
{
	_cleanup_json_ struct json_object *vars = json_object_new_object(), *data = NULL,
					  *summary = NULL;
	const char *text;
	int r;

	if (!reason && exit_code < 0)
		return 0;
	if (!vars || run_json_add_string(vars, "entity", info->entity) < 0 ||
	    run_json_add_string(vars, "project", info->project) < 0 ||
	    run_json_add_string(vars, "name", info->id) < 0)
		return OOM(err);
	r = wbs_client_graphql(client, "RunSummary", wbs_doc_run_summary, vars, &data, err);
	if (r < 0)
		return r;
	text = wbs_json_path_string(data, "project.run.summaryMetrics");
	summary = json_tokener_parse(text ? text : "{}");
	if (!summary || !json_object_is_type(summary, json_type_object))
		return wbs_error_set(err, -EPROTO,
				     "malformed reply from W&B: the run's summary is not a JSON object");
	if ((reason && run_json_add_string(summary, "wbsched/reason", reason) < 0) ||
	    (exit_code >= 0 &&
	     json_object_object_add(summary, "wbsched/exit_code", json_object_new_int(exit_code)) < 0))
		return OOM(err);

	json_object_put(vars);
	vars = json_object_new_object();
	if (!vars || run_json_add_string(vars, "id", info->storage_id) < 0 ||
	    run_json_add_string(vars, "summaryMetrics",
		       json_object_to_json_string_ext(summary, JSON_C_TO_STRING_PLAIN)) < 0)
		return OOM(err);
	json_object_put(data);
	data = NULL;
	return wbs_client_graphql(client, "UpdateRunSummary", wbs_doc_update_summary, vars, &data,
				  err);
}

static bool server_has_feature(struct wbs_client *client, const char *feature)
{
	_cleanup_json_ struct json_object *data = NULL;
	struct json_object *features;

	if (wbs_client_graphql(client, "ServerFeatures", wbs_doc_server_features, NULL, &data,
			       NULL) < 0)
		return false;
	features = wbs_json_path(data, "serverInfo.features");
	if (!features || !json_object_is_type(features, json_type_array))
		return false;
	for (size_t i = 0; i < json_object_array_length(features); i++) {
		struct json_object *f = json_object_array_get_idx(features, i);
		const char *name = wbs_json_path_string(f, "name");

		if (name && strcmp(name, feature) == 0)
			return json_object_get_boolean(wbs_json_path(f, "isEnabled"));
	}
	return false;
}

/* True when W&B already shows the run in state @to. */
static bool already_in(struct wbs_client *client, const struct wbs_run_info *info, const char *to)
{
	struct wbs_run_ref ref = { .entity = info->entity, .project = info->project, .id = info->id };
	struct wbs_run_info now = { 0 };
	bool same;

	same = wbs_run_read(client, &ref, 1, &now, NULL) == 0 && now.state &&
	       strcmp(now.state, to) == 0;
	wbs_run_info_release(&now);
	return same;
}

/*
 * updateRunState, after checking the transition against the server's rules.
 * Servers without the UPDATE_RUN_STATE feature get upsertBucket(id, state).
 */
static int update_state(struct wbs_client *client, struct wbs_run_info *info, const char *to,
			struct wbs_error *err)
{
	_cleanup_json_ struct json_object *vars = json_object_new_object(), *data = NULL;
	struct json_object *input = json_object_new_object();
	struct wbs_error first = { 0 };
	_cleanup_free_ char *path = wbs_run_path(info->entity, info->project, info->id);
	int r;

	if (!vars || !input || !path || json_object_object_add(vars, "input", input) < 0) {
		json_object_put(input);
		return OOM(err);
	}
	if (!wbs_run_state_can_update(info->state, to))
		return wbs_error_set(err, -EPERM,
				     "cannot move run '%s' from %s to %s: W&B allows pending only from running, failed, crashed or preempted, and failed only from pending or running",
				     path, info->state, to);
	if (run_json_add_string(input, "id", info->storage_id) < 0 || run_json_add_string(input, "state", to) < 0)
		return OOM(err);

	r = wbs_client_graphql(client, "UpdateRunState", wbs_doc_update_run_state, vars, &data,
			       &first);
	if (r == -EREMOTEIO && !strstr(first.msg, "invalid state transition") &&
	    !server_has_feature(client, "UPDATE_RUN_STATE")) {
		wbs_debug("server lacks UPDATE_RUN_STATE, setting the state with upsertBucket");
		json_object_put(vars);
		vars = json_object_new_object();
		if (!vars || run_json_add_string(vars, "id", info->storage_id) < 0 ||
		    run_json_add_string(vars, "state", to) < 0)
			return OOM(err);
		r = wbs_client_graphql(client, "SetRunState", wbs_doc_set_run_state, vars, &data,
				       err);
	} else if (r == -EREMOTEIO && strstr(first.msg, "invalid state transition") &&
		   already_in(client, info, to)) {
		/*
		 * A retry after W&B applied the first attempt but its answer was
		 * lost (a 502, a cut connection): the run is where we wanted it.
		 */
		r = 0;
	} else if (r < 0) {
		if (err && !err->code)
			*err = first;
		return r;
	} else if (!json_object_get_boolean(wbs_json_path(data, "updateRunState.success"))) {
		return wbs_error_set(err, -EREMOTEIO, "W&B did not confirm moving run '%s' to %s",
				     path, to);
	}
	if (r < 0)
		return r;
	free(info->state);
	info->state = strdup(to);
	return info->state ? 0 : OOM(err);
}

static int file_stream(struct wbs_client *client, const struct wbs_run_info *info,
		       struct json_object *body, struct wbs_error *err)
{
	return wbs_client_file_stream(client, info->entity, info->project, info->id, body, err);
}

static int complete(struct wbs_client *client, struct wbs_run_info *info, int exit_code,
		    struct wbs_error *err)
{
	_cleanup_json_ struct json_object *body = json_object_new_object();
	const char *next = exit_code == 0 ? "finished"
			   : strcmp(info->state ? info->state : "", "preempting") == 0 ? "preempted"
										  : "failed";
	char *copy;
	int r;

	if (!body || json_object_object_add(body, "complete", json_object_new_boolean(1)) < 0 ||
	    json_object_object_add(body, "exitcode", json_object_new_int(exit_code)) < 0)
		return OOM(err);
	r = file_stream(client, info, body, err);
	if (r < 0)
		return r;
	copy = strdup(next);
	if (!copy)
		return OOM(err);
	free(info->state);
	info->state = copy;
	return 0;
}

static int no_such_run(const struct wbs_run_info *info, struct wbs_error *err)
{
	return wbs_error_set(err, -ENOENT, "W&B has no run '%s/%s/%s'", info->entity,
			     info->project, info->id);
}

/* Lets the caller keep what was found, or frees it. */
static void hand_over(struct wbs_run_info *info, struct wbs_run_info *ret_info)
{
	if (ret_info) {
		wbs_run_info_release(ret_info);
		*ret_info = *info;
	} else {
		wbs_run_info_release(info);
	}
	*info = (struct wbs_run_info){ 0 };
}

int wbs_run_start(struct wbs_client *client, const struct wbs_run_ref *ref,
		  const struct wbs_run_spec *meta, struct wbs_run_info *ret_info,
		  struct wbs_error *err)
{
	struct wbs_run_spec spec = { 0 };
	struct wbs_run_info info = { 0 };
	int r;

	if (meta)
		spec = *meta;
	spec.id = ref->id;
	spec.state = "running";
	r = wbs_run_create(client, ref->entity, ref->project, &spec, 1, &info, err);

	hand_over(&info, ret_info);
	return r;
}

int wbs_run_preempting(struct wbs_client *client, const struct wbs_run_ref *ref,
		       struct wbs_run_info *ret_info, struct wbs_error *err)
{
	_cleanup_json_ struct json_object *body = json_object_new_object();
	struct wbs_run_info info = { 0 };
	int r;

	if (!body || json_object_object_add(body, "preempting", json_object_new_boolean(1)) < 0)
		return OOM(err);
	r = read_one(client, ref, &info, err);
	if (r == 0 && !info.exists)
		r = no_such_run(&info, err);
	info.left_alone = r == 0 && wbs_run_state_is_terminal(info.state);
	if (r == 0 && !info.left_alone) {
		r = file_stream(client, &info, body, err);
		if (r == 0) {
			free(info.state);
			info.state = strdup("preempting");
		}
	}
	hand_over(&info, ret_info);
	return r;
}

int wbs_run_heartbeat(struct wbs_client *client, const struct wbs_run_ref *ref,
		      struct wbs_error *err)
{
	_cleanup_json_ struct json_object *body = json_object_new_object();
	struct wbs_run_ref resolved = { 0 };
	int r;

	if (!body)
		return OOM(err);
	r = wbs_run_ref_set(&resolved, ref->entity, ref->project, ref->id, err);
	if (r == 0)
		r = wbs_run_resolve_entity(client, &resolved, err);
	if (r == 0)
		r = wbs_client_file_stream(client, resolved.entity, resolved.project, resolved.id,
					   body, err);
	wbs_run_ref_release(&resolved);
	return r;
}

int wbs_run_finish_read(struct wbs_client *client, struct wbs_run_info *info, int exit_code,
			struct wbs_error *err)
{
	if (!info->exists)
		return no_such_run(info, err);
	info->left_alone = wbs_run_state_is_terminal(info->state);
	return info->left_alone ? 0 : complete(client, info, exit_code, err);
}

int wbs_run_finish(struct wbs_client *client, const struct wbs_run_ref *ref, int exit_code,
		   struct wbs_run_info *ret_info, struct wbs_error *err)
{
	struct wbs_run_info info = { 0 };
	int r = read_one(client, ref, &info, err);

	if (r == 0)
		r = wbs_run_finish_read(client, &info, exit_code, err);
	hand_over(&info, ret_info);
	return r;
}

int wbs_run_fail(struct wbs_client *client, const struct wbs_run_ref *ref, const char *reason,
		 int exit_code, struct wbs_run_info *ret_info, struct wbs_error *err)
{
	struct wbs_run_info info = { 0 };
	int r = read_one(client, ref, &info, err);

	info.left_alone = r == 0 && wbs_run_state_is_terminal(info.state);
	if (r < 0 || info.left_alone)
		goto out;
	if (!info.exists) {
		r = create_one(client, ref, "failed", &info, err);
	} else if (strcmp(info.state ? info.state : "", "preempting") == 0) {
		/* W&B records a preempting run that ends non-zero as preempted. */
		r = complete(client, &info, exit_code > 0 ? exit_code : 1, err);
	} else {
		r = set_reason(client, &info, reason, exit_code, err);
		if (r == 0)
			r = update_state(client, &info, "failed", err);
		goto out;
	}
	if (r == 0)
		r = set_reason(client, &info, reason, exit_code, err);
out:
	hand_over(&info, ret_info);
	return r;
}

int wbs_run_requeue(struct wbs_client *client, const struct wbs_run_ref *ref, const char *reason,
		    struct wbs_run_info *ret_info, struct wbs_error *err)
{
	struct wbs_run_info info = { 0 };
	int r = read_one(client, ref, &info, err);

	if (r < 0)
		goto out;
	if (!info.exists) {
		r = create_one(client, ref, "pending", &info, err);
	} else if (strcmp(info.state ? info.state : "", "pending") != 0) {
		if (strcmp(info.state ? info.state : "", "preempting") == 0)
			r = complete(client, &info, 1, err);
		if (r == 0)
			r = update_state(client, &info, "pending", err);
	}
	if (r == 0)
		r = set_reason(client, &info, reason, -1, err);
out:
	hand_over(&info, ret_info);
	return r;
}

