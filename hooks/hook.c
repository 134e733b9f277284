/*
 * The wbsched command: global options, the command table, exit codes.
 * The commands themselves live in cmd_*.c; the logic in lib/.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "wbsched/client.h"
#include "wbsched/clock.h"
#include "wbsched/config.h"
#include "wbsched/creds.h"
#include "wbsched/error.h"
#include "wbsched/log.h"
#include "wbsched/transport.h"

#include "hook.h"

#define SITE_CONFIG "/etc/wbsched/wbsched.yaml"

static const struct hook_cmd commands[] = {
	{ "create", cmd_create,
	  "[--state pending|running] [--id ID] [--name N] [--group G] [--job-type T]\n"
	  "         [--tags A,B] [--notes TEXT] [--config-json JSON] [--count N] [--export]\n"
	  "         [--indexes SPEC] [--keep-running]",
	  "create a run (pending by default) and print its path" },
	{ "status", cmd_status, "[RUN...]", "print the state of runs" },
	{ "start", cmd_start,
	  "[--name N] [--group G] [--job-type T] [--tags A,B] [--notes TEXT]\n"
	  "         [--config-json JSON] [RUN]",
	  "mark a run running (creating it if needed)" },
	{ "preempting", cmd_preempting, "[RUN]", "mark a run preempting" },
	{ "heartbeat", cmd_heartbeat, "[RUN]", "tell W&B the run is alive" },
	{ "requeue", cmd_requeue, "[--reason TEXT] [RUN]", "put a run back to pending" },
	{ "fail", cmd_fail, "[--reason TEXT] [--exit-code N] [RUN]", "mark a run failed" },
	{ "finish", cmd_finish, "[--exit-code N] [RUN]",
	  "end a run: finished on 0, failed (or preempted) otherwise" },
	{ "wait", cmd_wait, "RUN... [--timeout SECONDS] [--interval SECONDS]",
	  "wait until runs end" },
	{ "flush", cmd_flush, "[--status] [--all-users]",
	  "deliver the changes kept in the spool, or show them" },
	{ "watchdog", cmd_watchdog,
	  "[--grace SECONDS] [--run RUN] [--cloud gce,aws,azure] [--heartbeat SECONDS]\n"
	  "         [--cloud-interval SECONDS] [--no-kubernetes] -- CMD [ARGS...]",
	  "run CMD and keep its run in step: running, preempting, finished or failed" },
};

static void print_help(void)
{
	printf("usage: wbsched [--config FILE] [--set KEY=VALUE]... [--base-url URL] [--entity E]\n"
	       "               [--project P] [--json] [--strict] [--syslog] [-v|-q] COMMAND [ARGS]\n\n"
	       "Keeps Weights & Biases runs in step with what the scheduler does to jobs.\n\n"
	       "Commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		printf("  %-11s %s\n", commands[i].name, commands[i].help);
	printf("\nRUN is ENTITY/PROJECT/RUN_ID (or PROJECT/RUN_ID, or RUN_ID); without it the\n"
	       "command uses WANDB_ENTITY, WANDB_PROJECT and WANDB_RUN_ID.\n\n"
	       "Options:\n"
	       "  --config FILE      YAML settings (default $WBSCHED_CONFIG, else " SITE_CONFIG
	       " if present)\n"
	       "  --set KEY=VALUE    override one setting (repeatable)\n"
	       "  --base-url URL     W&B server (WANDB_BASE_URL)\n"
	       "  --entity E         W&B entity (WANDB_ENTITY)\n"
	       "  --project P        W&B project (WANDB_PROJECT)\n"
	       "  --json             print one JSON object per run\n"
	       "  --strict           fail (69) when W&B cannot take a change now, instead of\n"
	       "                     keeping it in the spool for later delivery\n"
	       "  --syslog           log to syslog instead of stderr\n"
	       "  -v, --verbose      debug messages\n"
	       "  -q, --quiet        errors only\n\n"
	       "Exit codes:\n"
	       "  0   ok\n"
	       "  1   a waited run ended failed, crashed, killed or preempted, or W&B refused\n"
	       "      the change (for example an invalid state transition)\n"
	       "  2   wait: the timeout passed\n"
	       "  64  usage error\n"
	       "  69  W&B unavailable and the change was not kept for later delivery (--strict,\n"
	       "      or the spool could not take it); a change kept in the spool exits 0\n"
	       "  77  no API key, W&B refused it, or W&B's TLS certificate failed verification\n"
	       "  78  bad configuration\n");
}

void hook_print_usage(const char *cmd)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, cmd) == 0)
			printf("usage: wbsched %s %s\n\n%s\n", cmd, commands[i].usage,
			       commands[i].help);
}

static bool usage_muted;

void hook_usage_mute(bool mute)
{
	usage_muted = mute;
}

int hook_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	if (usage_muted)
		return HOOK_EXIT_USAGE;
	fprintf(stderr, "wbsched: %s%s", cmd ? cmd : "", cmd ? ": " : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return HOOK_EXIT_USAGE;
}

int hook_exit_code(int code)
{
	if (code == 0)
		return HOOK_EXIT_OK;
	if (wbs_error_is_unavailable(code))
		return HOOK_EXIT_UNAVAILABLE;
	switch (code) {
	case -EACCES:
		return HOOK_EXIT_NOPERM;
	case -EINVAL:
		return HOOK_EXIT_USAGE;
	default:
		return HOOK_EXIT_FAILED;
	}
}

int hook_fail(const struct hook_ctx *ctx, int code, const struct wbs_error *err)
{
	const char *msg = err->msg[0] ? err->msg : strerror(-code);

	(void)ctx;
	wbs_err("%s", msg);
	return hook_exit_code(code);
}

int hook_client(struct hook_ctx *ctx, struct wbs_client **ret)
{
	struct wbs_transport transport = { 0 };
	struct wbs_error err = { 0 };
	char *key = NULL;
	int r;

	if (ctx->client) {
		*ret = ctx->client;
		return 0;
	}
	r = wbs_creds_load(&ctx->cfg, &key, &err);
	if (r < 0) {
		wbs_err("%s", err.msg);
		return r == -ENOMEM ? HOOK_EXIT_FAILED : HOOK_EXIT_NOPERM;
	}
	r = wbs_transport_curl_init(&transport, &ctx->cfg, &err);
	if (r == 0)
		r = wbs_client_new(&ctx->cfg, &transport, key, &ctx->client, &err);
	wbs_creds_free_key(key);
	if (r < 0) {
		wbs_err("%s", err.msg);
		return HOOK_EXIT_FAILED;
	}
	*ret = ctx->client;
	return 0;
}

enum {
	OPT_CONFIG = 0x100,
	OPT_SET,
	OPT_BASE_URL,
	OPT_ENTITY,
	OPT_PROJECT,
	OPT_JSON,
	OPT_STRICT,
	OPT_VERSION,
	OPT_SYSLOG,
};

static const struct option global_options[] = {
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "set", required_argument, NULL, OPT_SET },
	{ "base-url", required_argument, NULL, OPT_BASE_URL },
	{ "entity", required_argument, NULL, OPT_ENTITY },
	{ "project", required_argument, NULL, OPT_PROJECT },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "strict", no_argument, NULL, OPT_STRICT },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ "syslog", no_argument, NULL, OPT_SYSLOG },
	{ 0 },
};

/*
 * Builds the configuration: defaults < YAML file < environment < flags.  The
 * flags are collected as key=value words first, so that they are applied
 * last, through the same setter as every other source.
 */
static int load_config(struct hook_ctx *ctx, const char *file, int n_sets, char **sets)
{
	struct wbs_error err = { 0 };
	int r = 0;

	if (!file) {
		file = getenv("WBSCHED_CONFIG");
		if ((!file || !*file) && access(SITE_CONFIG, F_OK) == 0)
			file = SITE_CONFIG;
	}
	if (file && *file)
		r = wbs_config_load_file(&ctx->cfg, file, &err);
	if (r == 0)
		r = wbs_config_load_env(&ctx->cfg, &err);
	for (int i = 0; r == 0 && i < n_sets; i++) {
		char *eq = strchr(sets[i], '=');

		if (!eq) {
			r = wbs_error_set(&err, -EINVAL, "--set: invalid '%s': expected KEY=VALUE",
					  sets[i]);
			break;
		}
		*eq = '\0';
		r = wbs_config_set(&ctx->cfg, sets[i], eq + 1, "--set", &err);
		*eq = '=';
	}
	if (r < 0) {
		wbs_err("%s", err.msg);
		return r == -EACCES ? HOOK_EXIT_NOPERM : HOOK_EXIT_CONFIG;
	}
	return 0;
}

static char *key_value(const char *key, const char *value)
{
	char *s;

	if (asprintf(&s, "%s=%s", key, value) < 0)
		return NULL;
	return s;
}

/* --syslog: messages go to syslog(3) instead of stderr. */
static void syslog_sink(void *userdata, int level, const char *msg)
{
	(void)userdata;
	syslog(level, "%s", msg);
}

int hook_run_command(struct hook_ctx *ctx, int argc, char **argv)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (argc > 0 && strcmp(commands[i].name, argv[0]) == 0)
			return commands[i].fn(ctx, argc, argv);
	return hook_usage_error(NULL, "unknown command '%s'", argc > 0 ? argv[0] : "");
}

int hook_main(int argc, char **argv)
{
	struct hook_ctx ctx = { 0 };
	const struct hook_cmd *cmd = NULL;
	const char *file = NULL;
	char **sets = calloc((size_t)argc + 1, sizeof(*sets));
	int n_sets = 0, verbosity = 0, opt, ret;

	ctx.start_ms = wbs_now_ms();
	if (!sets)
		return HOOK_EXIT_FAILED;
	wbs_config_init(&ctx.cfg);
	wbs_log_set_sink(NULL, NULL);
	opterr = 0;
	optind = 0; /* 0 makes glibc reinitialise, for in-process tests */
	while ((opt = getopt_long(argc, argv, "+vqh", global_options, NULL)) != -1) {
		switch (opt) {
		case OPT_CONFIG:
			file = optarg;
			break;
		case OPT_SET:
			sets[n_sets++] = strdup(optarg);
			break;
		case OPT_BASE_URL:
			sets[n_sets++] = key_value("base_url", optarg);
			break;
		case OPT_ENTITY:
			sets[n_sets++] = key_value("entity", optarg);
			break;
		case OPT_PROJECT:
			sets[n_sets++] = key_value("project", optarg);
			break;
		case OPT_JSON:
			ctx.json = true;
			break;
		case OPT_STRICT:
			ctx.strict = true;
			break;
		case OPT_SYSLOG:
			openlog("wbsched", LOG_PID, LOG_DAEMON);
			wbs_log_set_sink(syslog_sink, NULL);
			break;
		case 'v':
			verbosity++;
			break;
		case 'q':
			verbosity--;
			break;
		case 'h':
			print_help();
			ret = HOOK_EXIT_OK;
			goto out;
		case OPT_VERSION:
			printf("wbsched %s\n", WBS_VERSION);
			ret = HOOK_EXIT_OK;
			goto out;
		default:
			ret = hook_usage_error(NULL, "unknown option '%s' (see wbsched --help)",
					       argv[optind - 1]);
			goto out;
		}
		if (n_sets > 0 && !sets[n_sets - 1]) {
			ret = HOOK_EXIT_FAILED;
			goto out;
		}
	}
	if (optind >= argc) {
		ret = hook_usage_error(NULL, "no command given (see wbsched --help)");
		goto out;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, argv[optind]) == 0)
			cmd = &commands[i];
	if (!cmd) {
		ret = hook_usage_error(NULL, "unknown command '%s' (see wbsched --help)",
				       argv[optind]);
		goto out;
	}

	ret = load_config(&ctx, file, n_sets, sets);
	if (ret != 0 && strcmp(cmd->name, "watchdog") == 0) {
		/* Never keep the job's command from running over a bad setting. */
		wbs_config_release(&ctx.cfg);
		ctx.config_failed = true;
		ret = 0;
	}
	if (ret != 0)
		goto out;
	if (verbosity > 0)
		wbs_log_set_level(WBS_LOG_DEBUG);
	else if (verbosity < 0)
		wbs_log_set_level(WBS_LOG_ERR);
	else
		wbs_log_set_level(ctx.cfg.log_level);
	ctx.quiet = verbosity < 0;
	ret = cmd->fn(&ctx, argc - optind, argv + optind);
out:
	wbs_client_free(ctx.client);
	wbs_config_release(&ctx.cfg);
	for (int i = 0; i < n_sets; i++)
		free(sets[i]);
	free(sets);
	return ret;
}
