/* The run commands: create, status, start, preempting, heartbeat, requeue, fail, finish, wait. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "wbsched/array.h"
#include "wbsched/cleanup.h"
#include "wbsched/client.h"
#include "wbsched/clock.h"
#include "wbsched/error.h"
#include "wbsched/log.h"
#include "wbsched/run.h"
#include "wbsched/runid.h"
#include "wbsched/state.h"

#include "hook.h"

#define MAX_COUNT 100000

static int parse_long(const char *s, long min, long max, long *ret)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

/* Parses seconds with an optional fraction ("2", "0.5") into milliseconds. */
static int parse_seconds(const char *s, long *ret_ms)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0) || v > 31536000.0)
		return -EINVAL;
	*ret_ms = (long)(v * 1000.0 + 0.5);
	return 0;
}

/* Writes @s quoted for a POSIX shell: 'it'\''s'. */
static void print_shell_quoted(const char *s)
{
	putchar('\'');
	for (; *s; s++) {
		if (*s == '\'')
			fputs("'\\''", stdout);
		else
			putchar(*s);
	}
	putchar('\'');
}

static void print_export(const char *name, const char *value)
{
	if (!value)
		return;
	printf("export %s=", name);
	print_shell_quoted(value);
	putchar('\n');
}

static void print_info(const struct hook_ctx *ctx, const struct wbs_run_info *info)
{
	_cleanup_free_ char *path = wbs_run_path(info->entity, info->project, info->id);
	_cleanup_json_ struct json_object *o = NULL;

	if (ctx->no_output)
		return;
	if (!ctx->json) {
		printf("%s %s\n", path ? path : "?", info->exists ? info->state : "not-started");
		return;
	}
	o = json_object_new_object();
	if (!o)
		return;
#define ADD_STR(k, v) json_object_object_add(o, k, (v) ? json_object_new_string(v) : NULL)
	ADD_STR("path", path);
	ADD_STR("entity", info->entity);
	ADD_STR("project", info->project);
	ADD_STR("id", info->id);
	json_object_object_add(o, "exists", json_object_new_boolean(info->exists));
	ADD_STR("state", info->state);
	ADD_STR("storage_id", info->storage_id);
	ADD_STR("display_name", info->display_name);
	ADD_STR("group", info->group);
	ADD_STR("job_type", info->job_type);
	ADD_STR("heartbeat_at", info->heartbeat_at);
	json_object_object_add(o, "exitcode",
			       info->has_exitcode ? json_object_new_int64(info->exitcode) : NULL);
#undef ADD_STR
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
						       JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* Splits "a,b,,c" into words (empty ones dropped); the array borrows @s. */
static size_t split_tags(char *s, const char **ret, size_t max)
{
	size_t n = 0;

	for (char *save = NULL, *t = strtok_r(s, ",", &save); t && n < max;
	     t = strtok_r(NULL, ",", &save))
		if (*t)
			ret[n++] = t;
	return n;
}

/* ---- create ------------------------------------------------------------ */

/* The run metadata of create and start, as given on the command line. */
struct spec_opts {
	struct wbs_run_spec base;
	struct json_object *config;
	char *tags_copy; /* base.tags point into it */
	const char *tags[64];
	const char *tags_arg;
	bool export;
	bool keep_running;
	long count;
	uint32_t *indexes; /* --indexes, expanded */
	size_t n_indexes;
};

static void spec_opts_release(struct spec_opts *o)
{
	free(o->indexes);
	json_object_put(o->config);
	free(o->tags_copy);
}

static int set_tags(struct spec_opts *o, const char *arg)
{
	free(o->tags_copy);
	o->tags_arg = arg;
	o->tags_copy = strdup(arg);
	if (!o->tags_copy)
		return HOOK_EXIT_FAILED;
	o->base.tags = o->tags;
	o->base.n_tags = split_tags(o->tags_copy, o->tags, ELEMENTSOF(o->tags));
	return 0;
}

/*
 * Parses the metadata options; @create allows the options that only create
 * has (--state, --id, --count, --export, --keep-running).
 */
static int parse_spec_opts(struct hook_ctx *ctx, const char *cmd, bool create, int argc,
			   char **argv, struct spec_opts *o)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "group", required_argument, NULL, 'g' },
		{ "job-type", required_argument, NULL, 'j' },
		{ "tags", required_argument, NULL, 't' },
		{ "notes", required_argument, NULL, 'N' },
		{ "config-json", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "state", required_argument, NULL, 's' },
		{ "id", required_argument, NULL, 'i' },
		{ "count", required_argument, NULL, 'C' },
		{ "export", no_argument, NULL, 'e' },
		{ "keep-running", no_argument, NULL, 'k' },
		{ "indexes", required_argument, NULL, 'I' },
		{ 0 },
	};
	struct wbs_error err = { 0 };
	int opt;

	o->base.state = "pending";
	optind = 0;
	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		if (!create && strchr("siCekI", opt))
			return hook_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
		switch (opt) {
		case 's':
			if (strcmp(optarg, "pending") != 0 && strcmp(optarg, "running") != 0)
				return hook_usage_error(cmd,
							"invalid --state '%s': expected pending or running",
							optarg);
			o->base.state = optarg;
			break;
		case 'i':
			if (wbs_run_id_validate(optarg, &err) < 0)
				return hook_usage_error(cmd, "--id: %s", err.msg);
			o->base.id = optarg;
			break;
		case 'n':
			o->base.display_name = optarg;
			break;
		case 'g':
			o->base.group = optarg;
			break;
		case 'j':
			o->base.job_type = optarg;
			break;
		case 't':
			if (set_tags(o, optarg) != 0)
				return HOOK_EXIT_FAILED;
			break;
		case 'N':
			o->base.notes = optarg;
			break;
		case 'c':
			json_object_put(o->config);
			o->config = json_tokener_parse(optarg);
			if (!o->config || !json_object_is_type(o->config, json_type_object))
				return hook_usage_error(cmd,
							"invalid --config-json: expected a JSON object such as '{\"lr\": 0.1}'");
			o->base.config = o->config;
			break;
		case 'C':
			if (parse_long(optarg, 1, MAX_COUNT, &o->count) < 0)
				return hook_usage_error(cmd,
							"invalid --count '%s': expected a whole number from 1 to %d",
							optarg, MAX_COUNT);
			break;
		case 'e':
			o->export = true;
			break;
		case 'k':
			o->keep_running = true;
			break;
		case 'I':
			free(o->indexes);
			o->indexes = NULL;
			if (wbs_array_parse(optarg, &o->indexes, &o->n_indexes, &err) < 0)
				return hook_usage_error(cmd, "--indexes: %s", err.msg);
			break;
		case 'h':
			hook_print_usage(cmd);
			return -1;
		default:
			return hook_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
		}
	}
	/* a new run gets the site's tags when the command names none */
	if (create && !o->tags_arg && ctx->cfg.tags && set_tags(o, ctx->cfg.tags) != 0)
		return HOOK_EXIT_FAILED;
	return 0;
}

/* What create sends, for hook_deliver(). */
struct create_job {
	const struct spec_opts *o;
	const struct wbs_run_spec *specs;
	struct wbs_run_info *infos;
	size_t n;
};

static int send_create(struct hook_ctx *ctx, struct wbs_client *client, void *data,
		       struct wbs_error *err)
{
	struct create_job *j = data;

	if (j->o->keep_running)
		return wbs_run_create_unless_alive(client, ctx->cfg.entity,
						   wbs_config_project(&ctx->cfg), j->specs, j->n,
						   j->infos, err);
	return wbs_run_create(client, ctx->cfg.entity, wbs_config_project(&ctx->cfg), j->specs,
			      j->n, j->infos, err);
}

int cmd_create(struct hook_ctx *ctx, int argc, char **argv)
{
	struct spec_opts o = { 0 };
	bool queued = false;
	_cleanup_free_ struct wbs_run_spec *specs = NULL;
	_cleanup_free_ struct wbs_run_info *infos = NULL;
	_cleanup_free_ char *ids = NULL;
	char generated[WBS_RUN_ID_LEN + 1];
	struct wbs_error err = { 0 };
	size_t n = 0;
	int ret;

	ret = parse_spec_opts(ctx, "create", true, argc, argv, &o);
	if (ret != 0) {
		ret = ret < 0 ? HOOK_EXIT_OK : ret;
		goto out;
	}
	if (optind < argc) {
		ret = hook_usage_error("create", "unexpected argument '%s'", argv[optind]);
		goto out;
	}
	if (o.export && (o.count > 0 || o.indexes)) {
		ret = hook_usage_error("create",
				       "--export names one run and cannot go with --count or --indexes");
		goto out;
	}
	if (o.count > 0 && o.indexes) {
		ret = hook_usage_error("create", "--count and --indexes cannot go together");
		goto out;
	}
	if (!o.base.id) {
		if (wbs_run_id_generate(generated, &err) < 0) {
			ret = hook_fail(ctx, err.code, &err);
			goto out;
		}
		o.base.id = generated;
	}

	/*
	 * --count N: runs ID-0 ... ID-(N-1); --indexes SPEC: ID-<i> for each task
	 * id of a Slurm array spec; both grouped under ID unless --group says
	 * otherwise.
	 */
	n = o.indexes ? o.n_indexes : o.count ? (size_t)o.count : 1;
	specs = calloc(n, sizeof(*specs));
	infos = calloc(n, sizeof(*infos));
	ids = calloc(n, WBS_RUN_ID_MAX_LEN + 16);
	if (!specs || !infos || !ids) {
		ret = HOOK_EXIT_FAILED;
		goto out;
	}
	if (o.count == 0 && !o.indexes) {
		specs[0] = o.base;
	} else {
		if (strlen(o.base.id) + 7 > WBS_RUN_ID_MAX_LEN) {
			ret = hook_usage_error("create", "--id '%s' is too long for --count ids",
					       o.base.id);
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			char *id = ids + i * (WBS_RUN_ID_MAX_LEN + 16);

			(void)snprintf(id, WBS_RUN_ID_MAX_LEN + 16, "%s-%zu", o.base.id,
				       o.indexes ? (size_t)o.indexes[i] : i);
			specs[i] = o.base;
			specs[i].id = id;
			if (!o.base.group)
				specs[i].group = o.base.id;
		}
	}

	{
		struct create_job job = { &o, specs, infos, n };
		_cleanup_free_ char *key = NULL;
		_cleanup_free_ char **rargv = calloc((size_t)argc + 3, sizeof(*rargv));
		int rargc = argc;

		if (!rargv) {
			ret = HOOK_EXIT_FAILED;
			goto out;
		}
		/* replayed as given, with the id it got now */
		memcpy(rargv, argv, (size_t)argc * sizeof(*rargv));
		if (o.base.id == generated) {
			rargv[rargc++] = (char *)"--id";
			rargv[rargc++] = generated;
		}
		key = wbs_run_path(ctx->cfg.entity, wbs_config_project(&ctx->cfg), o.base.id);
		if (!key) {
			ret = HOOK_EXIT_FAILED;
			goto out;
		}
		ret = hook_deliver(ctx, key, rargc, rargv, send_create, &job, &queued);
	}
	if (ret != HOOK_EXIT_OK || ctx->replaying)
		goto out;
	if (o.export) {
		const char *entity = queued ? ctx->cfg.entity : infos[0].entity;

		print_export("WANDB_RUN_ID", specs[0].id);
		print_export("WANDB_RESUME", "allow");
		print_export("WANDB_PROJECT", wbs_config_project(&ctx->cfg));
		print_export("WANDB_ENTITY", entity);
		print_export("WANDB_RUN_GROUP", o.base.group);
		print_export("WANDB_NAME", o.base.display_name);
		print_export("WANDB_JOB_TYPE", o.base.job_type);
		print_export("WANDB_NOTES", o.base.notes);
		print_export("WANDB_TAGS", o.base.n_tags ? o.tags_arg : NULL);
	} else if (queued) {
		/* not created yet: the paths it will have */
		for (size_t i = 0; i < n; i++) {
			_cleanup_free_ char *path = wbs_run_path(
				ctx->cfg.entity, wbs_config_project(&ctx->cfg), specs[i].id);

			puts(path ? path : "?");
		}
	} else {
		for (size_t i = 0; i < n; i++) {
			_cleanup_free_ char *path =
				wbs_run_path(infos[i].entity, infos[i].project, infos[i].id);

			if (infos[i].left_alone)
				wbs_log(WBS_LOG_NOTICE, "run '%s' is already %s; left as is",
					path ? path : "?", infos[i].state);
			if (ctx->json)
				print_info(ctx, &infos[i]);
			else
				puts(path ? path : "?");
		}
	}
out:
	for (size_t i = 0; infos && i < n; i++)
		wbs_run_info_release(&infos[i]);
	spec_opts_release(&o);
	return ret;
}

/* ---- status ------------------------------------------------------------ */

/* Parses RUN arguments (or the WANDB_* run when there are none). */
static int parse_runs(struct hook_ctx *ctx, const char *cmd, int argc, char **argv,
		      struct wbs_run_ref **ret_refs, size_t *ret_n)
{
	size_t n = argc > 0 ? (size_t)argc : 1;
	struct wbs_run_ref *refs = calloc(n, sizeof(*refs));
	struct wbs_error err = { 0 };

	if (!refs)
		return HOOK_EXIT_FAILED;
	for (size_t i = 0; i < n; i++) {
		if (wbs_run_ref_parse(argc > 0 ? argv[i] : NULL, &ctx->cfg, &refs[i], &err) < 0) {
			for (size_t k = 0; k < n; k++)
				wbs_run_ref_release(&refs[k]);
			free(refs);
			return hook_usage_error(cmd, "%s", err.msg);
		}
	}
	*ret_refs = refs;
	*ret_n = n;
	return 0;
}

static void free_runs(struct wbs_run_ref *refs, struct wbs_run_info *infos, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (refs)
			wbs_run_ref_release(&refs[i]);
		if (infos)
			wbs_run_info_release(&infos[i]);
	}
	free(refs);
	free(infos);
}

/* Options of commands that take only --help (and maybe a few more). */
struct run_opts {
	const char *reason;
	long exit_code;
	bool has_exit_code;
};

static int parse_run_opts(const char *cmd, int argc, char **argv, bool reason, bool exit_code,
			  struct run_opts *ret)
{
	static const struct option opts[] = {
		{ "reason", required_argument, NULL, 'r' },
		{ "exit-code", required_argument, NULL, 'x' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int opt;

	*ret = (struct run_opts){ .exit_code = -1 };
	optind = 0;
	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		if (opt == 'r' && reason) {
			ret->reason = optarg;
		} else if (opt == 'x' && exit_code) {
			if (parse_long(optarg, 0, 255, &ret->exit_code) < 0)
				return hook_usage_error(cmd,
							"invalid --exit-code '%s': expected a whole number from 0 to 255",
							optarg);
			ret->has_exit_code = true;
		} else if (opt == 'h') {
			hook_print_usage(cmd);
			return -1;
		} else {
			return hook_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
		}
	}
	return 0;
}

int cmd_status(struct hook_ctx *ctx, int argc, char **argv)
{
	struct wbs_run_ref *refs = NULL;
	struct wbs_run_info *infos = NULL;
	struct wbs_error err = { 0 };
	struct wbs_client *client;
	struct run_opts o;
	size_t n = 0;
	int ret;

	ret = parse_run_opts("status", argc, argv, false, false, &o);
	if (ret != 0)
		return ret < 0 ? HOOK_EXIT_OK : ret;
	ret = parse_runs(ctx, "status", argc - optind, argv + optind, &refs, &n);
	if (ret != 0)
		return ret;
	infos = calloc(n, sizeof(*infos));
	ret = infos ? hook_client(ctx, &client) : HOOK_EXIT_FAILED;
	if (ret == 0) {
		ret = wbs_run_read(client, refs, n, infos, &err);
		if (ret == 0)
			for (size_t i = 0; i < n; i++)
				print_info(ctx, &infos[i]);
		ret = ret == 0 ? HOOK_EXIT_OK : hook_fail(ctx, ret, &err);
	}
	free_runs(refs, infos, n);
	return ret;
}

/* ---- state changes ----------------------------------------------------- */

enum change {
	CHANGE_START,
	CHANGE_PREEMPTING,
	CHANGE_HEARTBEAT,
	CHANGE_REQUEUE,
	CHANGE_FAIL,
	CHANGE_FINISH,
};

static const struct {
	const char *cmd;
	bool reason;
	bool exit_code;
} changes[] = {
	[CHANGE_START] = { "start", false, false },
	[CHANGE_PREEMPTING] = { "preempting", false, false },
	[CHANGE_HEARTBEAT] = { "heartbeat", false, false },
	[CHANGE_REQUEUE] = { "requeue", true, false },
	[CHANGE_FAIL] = { "fail", true, true },
	[CHANGE_FINISH] = { "finish", false, true },
};

/* One state change of one run, as parsed, for hook_deliver(). */
struct state_change {
	enum change what;
	struct wbs_run_ref *ref;
	struct run_opts opts;
	struct spec_opts spec; /* start only */
	struct wbs_run_info info;
};

static int send_change(struct hook_ctx *ctx, struct wbs_client *client, void *data,
		       struct wbs_error *err)
{
	struct state_change *c = data;

	(void)ctx;
	switch (c->what) {
	case CHANGE_START:
		return wbs_run_start(client, c->ref, &c->spec.base, &c->info, err);
	case CHANGE_PREEMPTING:
		return wbs_run_preempting(client, c->ref, &c->info, err);
	case CHANGE_HEARTBEAT:
		return wbs_run_heartbeat(client, c->ref, err);
	case CHANGE_REQUEUE:
		return wbs_run_requeue(client, c->ref, c->opts.reason, &c->info, err);
	case CHANGE_FAIL:
		return wbs_run_fail(client, c->ref, c->opts.reason, (int)c->opts.exit_code,
				    &c->info, err);
	case CHANGE_FINISH:
		return wbs_run_finish(client, c->ref,
				      c->opts.has_exit_code ? (int)c->opts.exit_code : 0, &c->info,
				      err);
	}
	return -EINVAL;
}

/*
 * The command as the spool replays it: the options as given, then the run
 * as a full path (so that a later default entity or project cannot move it).
 */
static char **replay_argv(char **argv, int n_opts, const struct wbs_run_ref *ref, char **ret_key)
{
	char **out = calloc((size_t)n_opts + 2, sizeof(*out));
	char *path;

	if (!out)
		return NULL;
	if (ref->entity)
		path = wbs_run_path(ref->entity, ref->project, ref->id);
	else if (asprintf(&path, "%s/%s", ref->project, ref->id) < 0)
		path = NULL;
	*ret_key = wbs_run_path(ref->entity, ref->project, ref->id);
	if (!path || !*ret_key) {
		free(path);
		free(*ret_key);
		free(out);
		return NULL;
	}
	for (int i = 0; i < n_opts; i++)
		out[i] = argv[i];
	out[n_opts] = path;
	return out;
}

static int change_state(struct hook_ctx *ctx, enum change what, int argc, char **argv)
{
	const char *cmd = changes[what].cmd;
	struct state_change c = { .what = what };
	_cleanup_free_ char *key = NULL;
	char **rargv = NULL;
	struct wbs_client *client;
	struct wbs_error err = { 0 };
	bool queued = false;
	size_t n = 0;
	int ret, n_opts = 0;

	if (what == CHANGE_START)
		ret = parse_spec_opts(ctx, cmd, false, argc, argv, &c.spec);
	else
		ret = parse_run_opts(cmd, argc, argv, changes[what].reason, changes[what].exit_code,
				     &c.opts);
	if (ret != 0) {
		ret = ret < 0 ? HOOK_EXIT_OK : ret; /* --help */
		goto out;
	}
	if (argc - optind > 1) {
		ret = hook_usage_error(cmd, "takes one run, got %d", argc - optind);
		goto out;
	}
	ret = parse_runs(ctx, cmd, argc - optind, argv + optind, &c.ref, &n);
	if (ret != 0)
		goto out;

	if (what == CHANGE_HEARTBEAT) {
		/* A heartbeat that cannot go now means nothing later: never queued. */
		ret = hook_client(ctx, &client);
		if (ret == 0 && (ret = send_change(ctx, client, &c, &err)) < 0) {
			if (ctx->replaying)
				ctx->replay_err = err;
			else if (wbs_error_is_unavailable(ret) && !ctx->strict)
				wbs_warning("%s; heartbeat skipped", err.msg);
			else
				(void)hook_fail(ctx, ret, &err);
			ret = wbs_error_is_unavailable(ret) && !ctx->strict && !ctx->replaying
				      ? HOOK_EXIT_OK
				      : hook_exit_code(ret);
		}
		goto out;
	}

	n_opts = optind; /* hook_deliver() may replay other commands: optind moves */
	rargv = replay_argv(argv, n_opts, c.ref, &key);
	if (!rargv) {
		ret = HOOK_EXIT_FAILED;
		goto out;
	}
	ret = hook_deliver(ctx, key, n_opts + 1, rargv, send_change, &c, &queued);
	if (ret != HOOK_EXIT_OK || queued || ctx->replaying)
		goto out;
	if (c.info.left_alone) {
		_cleanup_free_ char *path = wbs_run_path(c.info.entity, c.info.project, c.info.id);

		wbs_log(WBS_LOG_NOTICE, "run '%s' is already %s; left as is", path ? path : "?",
			c.info.state);
	}
	print_info(ctx, &c.info);
out:
	if (rargv)
		free(rargv[n_opts]);
	free(rargv);
	wbs_run_info_release(&c.info);
	free_runs(c.ref, NULL, n);
	spec_opts_release(&c.spec);
	return ret;
}

int cmd_start(struct hook_ctx *ctx, int argc, char **argv)
{
	return change_state(ctx, CHANGE_START, argc, argv);
}

int cmd_preempting(struct hook_ctx *ctx, int argc, char **argv)
{
	return change_state(ctx, CHANGE_PREEMPTING, argc, argv);
}

int cmd_heartbeat(struct hook_ctx *ctx, int argc, char **argv)
{
	return change_state(ctx, CHANGE_HEARTBEAT, argc, argv);
}

int cmd_requeue(struct hook_ctx *ctx, int argc, char **argv)
{
	return change_state(ctx, CHANGE_REQUEUE, argc, argv);
}

int cmd_fail(struct hook_ctx *ctx, int argc, char **argv)
{
	return change_state(ctx, CHANGE_FAIL, argc, argv);
}

int cmd_finish(struct hook_ctx *ctx, int argc, char **argv)
{
	return change_state(ctx, CHANGE_FINISH, argc, argv);
}

/* ---- wait -------------------------------------------------------------- */

struct progress {
	bool tty;
	char **last; /* the state last reported per run */
};

static void show_progress(void *userdata, const struct wbs_run_info *infos, size_t n,
			  bool changed)
{
	struct progress *p = userdata;
	size_t counts[3] = { 0 }; /* not started or alive, finished, failed */

	for (size_t i = 0; i < n; i++) {
		const char *state = infos[i].exists ? infos[i].state : "not-started";

		if (!wbs_run_state_is_terminal(state))
			counts[0]++;
		else if (wbs_run_state_is_failure(state))
			counts[2]++;
		else
			counts[1]++;
		if (!p->tty && (!p->last[i] || strcmp(p->last[i], state) != 0)) {
			_cleanup_free_ char *path =
				wbs_run_path(infos[i].entity, infos[i].project, infos[i].id);
			fprintf(stderr, "wbsched: %s: %s\n", path ? path : "?", state);
		}
		free(p->last[i]);
		p->last[i] = strdup(state);
	}
	if (p->tty)
		fprintf(stderr, "\r\033[Kwbsched: waiting for %zu run%s: %zu to go, %zu finished, %zu failed",
			n, n == 1 ? "" : "s", counts[0], counts[1], counts[2]);
	(void)changed;
}

int cmd_wait(struct hook_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ "interval", required_argument, NULL, 'i' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct wbs_wait_opts wo = { .timeout_ms = -1, .interval_ms = 2000, .max_interval_ms = 30000 };
	struct progress prog = { .tty = isatty(STDERR_FILENO) == 1 };
	struct wbs_run_ref *refs = NULL;
	struct wbs_run_info *infos = NULL;
	struct wbs_error err = { 0 };
	struct wbs_client *client;
	size_t n = 0;
	int opt, ret;

	/* Options may come after the runs: "wait RUN... --timeout 60". */
	optind = 0;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 't':
			if (parse_seconds(optarg, &wo.timeout_ms) < 0)
				return hook_usage_error("wait",
							"invalid --timeout '%s': expected seconds", optarg);
			break;
		case 'i':
			if (parse_seconds(optarg, &wo.interval_ms) < 0 || wo.interval_ms < 100)
				return hook_usage_error("wait",
							"invalid --interval '%s': expected seconds, at least 0.1",
							optarg);
			if (wo.interval_ms > wo.max_interval_ms)
				wo.max_interval_ms = wo.interval_ms;
			break;
		case 'h':
			hook_print_usage("wait");
			return HOOK_EXIT_OK;
		default:
			return hook_usage_error("wait", "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return hook_usage_error("wait", "no run given");
	ret = parse_runs(ctx, "wait", argc - optind, argv + optind, &refs, &n);
	if (ret != 0)
		return ret;
	infos = calloc(n, sizeof(*infos));
	prog.last = calloc(n, sizeof(*prog.last));
	ret = infos && prog.last ? hook_client(ctx, &client) : HOOK_EXIT_FAILED;
	if (ret != 0)
		goto out;

	ret = wbs_run_wait(client, refs, n, &wo, ctx->quiet ? NULL : show_progress, &prog, infos,
			   &err);
	if (prog.tty && !ctx->quiet)
		fputc('\n', stderr);
	if (ret == -ETIMEDOUT) {
		wbs_err("wait: %s", err.msg);
		ret = HOOK_EXIT_TIMEOUT;
	} else if (ret < 0) {
		ret = hook_fail(ctx, ret, &err);
	} else {
		ret = HOOK_EXIT_OK;
		for (size_t i = 0; i < n; i++) {
			if (wbs_run_state_is_failure(infos[i].state)) {
				_cleanup_free_ char *path =
					wbs_run_path(infos[i].entity, infos[i].project, infos[i].id);
				wbs_err("run '%s' ended %s", path ? path : "?", infos[i].state);
				ret = HOOK_EXIT_FAILED;
			}
		}
	}
	if (ctx->json)
		for (size_t i = 0; i < n; i++)
			print_info(ctx, &infos[i]);
out:
	if (prog.last)
		for (size_t i = 0; i < n; i++)
			free(prog.last[i]);
	free(prog.last);
	free_runs(refs, infos, n);
	return ret;
}

/* ---- many queued changes at once (flush) ------------------------------ */

enum hook_kind hook_classify(struct hook_ctx *ctx, int argc, char **argv)
{
	enum hook_kind kind = HOOK_KIND_OTHER;
	struct spec_opts o = { 0 };
	struct run_opts ro;
	int saved_opterr = opterr;

	if (argc < 1)
		return HOOK_KIND_OTHER;
	/* quietly: a change that does not parse is replayed alone, and says so then */
	hook_usage_mute(true);
	opterr = 0;
	if (strcmp(argv[0], "create") == 0) {
		/* one that makes many runs, or that cannot be read, keeps its place */
		kind = HOOK_KIND_BARRIER;
		if (parse_spec_opts(ctx, "create", true, argc, argv, &o) == 0 && optind == argc &&
		    o.count == 0 && !o.indexes)
			kind = o.base.id && !o.keep_running && !o.export ? HOOK_KIND_CREATE
									 : HOOK_KIND_OTHER;
	} else if (strcmp(argv[0], "start") == 0) {
		if (parse_spec_opts(ctx, "start", false, argc, argv, &o) == 0 &&
		    optind == argc - 1)
			kind = HOOK_KIND_START;
	} else if (strcmp(argv[0], "finish") == 0) {
		if (parse_run_opts("finish", argc, argv, false, true, &ro) == 0 &&
		    optind == argc - 1)
			kind = HOOK_KIND_FINISH;
	}
	spec_opts_release(&o);
	opterr = saved_opterr;
	hook_usage_mute(false);
	return kind;
}

static bool same_place(const struct wbs_run_ref *a, const struct wbs_run_ref *b)
{
	return ((!a->entity && !b->entity) ||
		(a->entity && b->entity && strcmp(a->entity, b->entity) == 0)) &&
	       strcmp(a->project, b->project) == 0;
}

int hook_upsert_many(struct hook_ctx *ctx, enum hook_kind kind, int n, char ***argvs, int *argcs,
		     struct wbs_error *err)
{
	bool create = kind == HOOK_KIND_CREATE;
	struct spec_opts *opts = calloc((size_t)n, sizeof(*opts));
	struct wbs_run_spec *specs = calloc((size_t)n, sizeof(*specs));
	struct wbs_run_info *infos = calloc((size_t)n, sizeof(*infos));
	struct wbs_run_ref *refs = calloc((size_t)n, sizeof(*refs));
	const char *entity = ctx->cfg.entity, *project = wbs_config_project(&ctx->cfg);
	struct wbs_client *client;
	int ret = 0, parsed = 0;

	if (!opts || !specs || !infos || !refs) {
		ret = wbs_error_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (kind != HOOK_KIND_CREATE && kind != HOOK_KIND_START) {
		ret = wbs_error_set(err, -EINVAL, "only creates and starts go many to a request");
		goto out;
	}
	hook_usage_mute(true);
	for (; parsed < n; parsed++) {
		int argc = argcs[parsed];
		char **argv = argvs[parsed];
		bool ok = parse_spec_opts(ctx, create ? "create" : "start", create, argc, argv,
					  &opts[parsed]) == 0;

		if (create)
			ok = ok && optind == argc && opts[parsed].base.id && !opts[parsed].count &&
			     !opts[parsed].indexes && !opts[parsed].keep_running;
		else
			ok = ok && optind == argc - 1 &&
			     wbs_run_ref_parse(argv[argc - 1], &ctx->cfg, &refs[parsed], NULL) == 0;
		specs[parsed] = opts[parsed].base;
		if (ok && !create) {
			/* starts name their run: one request takes one entity and project */
			ok = same_place(&refs[0], &refs[parsed]);
			specs[parsed].id = refs[parsed].id;
			specs[parsed].state = "running";
		}
		if (!ok) {
			hook_usage_mute(false);
			ret = wbs_error_set(err, -EINVAL, "cannot read a queued %s with the others",
					    create ? "create" : "start");
			parsed++;
			goto out;
		}
	}
	hook_usage_mute(false);
	if (hook_client(ctx, &client) != 0) {
		ret = wbs_error_set(err, -EACCES, "no W&B client");
		goto out;
	}
	if (!create) {
		entity = refs[0].entity;
		project = refs[0].project;
	}
	ret = wbs_run_create(client, entity, project, specs, (size_t)n, infos, err);
out:
	for (int i = 0; i < parsed; i++) {
		spec_opts_release(&opts[i]);
		wbs_run_ref_release(&refs[i]);
		wbs_run_info_release(&infos[i]);
	}
	free(opts);
	free(specs);
	free(infos);
	free(refs);
	return ret;
}

int hook_finish_many(struct hook_ctx *ctx, int n, char ***argvs, int *argcs, long deadline_ms,
		     int *ret_codes, struct wbs_error *errs)
{
	struct wbs_run_ref *refs = calloc((size_t)n, sizeof(*refs));
	struct wbs_run_info *infos = calloc((size_t)n, sizeof(*infos));
	int *exit_codes = calloc((size_t)n, sizeof(*exit_codes));
	int *which = calloc((size_t)n, sizeof(*which));
	struct wbs_client *client;
	int ret = 0, m = 0;

	for (int i = 0; i < n; i++) {
		ret_codes[i] = -ECANCELED;
		wbs_error_clear(&errs[i]);
	}
	if (!refs || !infos || !exit_codes || !which) {
		ret = wbs_error_set(&errs[0], -ENOMEM, "out of memory");
		goto out;
	}
	if (hook_client(ctx, &client) != 0) {
		ret = wbs_error_set(&errs[0], -EACCES, "no W&B client");
		goto out;
	}
	/* what cannot be read is refused on its own; the rest are read together */
	hook_usage_mute(true);
	for (int i = 0; i < n; i++) {
		struct run_opts o;

		if (parse_run_opts("finish", argcs[i], argvs[i], false, true, &o) != 0 ||
		    optind != argcs[i] - 1) {
			ret_codes[i] =
				wbs_error_set(&errs[i], -EINVAL, "cannot read the queued finish");
			continue;
		}
		if (wbs_run_ref_parse(argvs[i][argcs[i] - 1], &ctx->cfg, &refs[m], &errs[i]) < 0) {
			ret_codes[i] = errs[i].code ? errs[i].code : -EINVAL;
			continue;
		}
		exit_codes[m] = o.has_exit_code ? (int)o.exit_code : 0;
		which[m++] = i;
	}
	hook_usage_mute(false);
	wbs_client_begin_ms(client, deadline_ms ? deadline_ms - wbs_now_ms() : ctx->cfg.budget_ms);
	ret = wbs_run_read(client, refs, (size_t)m, infos, &errs[0]);
	if (ret < 0)
		goto out;
	/* one file_stream request per run that has not ended: W&B has no batch of them */
	for (int k = 0; k < m; k++) {
		int i = which[k];

		if (deadline_ms && deadline_ms - wbs_now_ms() <= 0)
			break;
		wbs_client_begin_ms(client,
				    deadline_ms ? deadline_ms - wbs_now_ms() : ctx->cfg.budget_ms);
		ret_codes[i] = wbs_run_finish_read(client, &infos[k], exit_codes[k], &errs[i]);
		if (ret_codes[i] < 0 &&
		    (wbs_error_is_unavailable(ret_codes[i]) || ret_codes[i] == -EACCES))
			break;
	}
out:
	for (int k = 0; refs && infos && k < n; k++) {
		wbs_run_ref_release(&refs[k]);
		wbs_run_info_release(&infos[k]);
	}
	free(refs);
	free(infos);
	free(exit_codes);
	free(which);
	return ret;
}
