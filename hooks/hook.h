#ifndef WBS_HOOK_H
#define WBS_HOOK_H

#include <stdbool.h>

#include "wbsched/config.h"
#include "wbsched/error.h"

struct wbs_client;
struct wbs_error;

/*
 * Exit codes are an interface (README, --help): scripts, init containers and
 * the Slurm plugin act on them.  The values above 63 are sysexits.h's.
 */
enum hook_exit {
	HOOK_EXIT_OK = 0,
	HOOK_EXIT_FAILED = 1,	    /* a waited run ended badly, or W&B refused the change */
	HOOK_EXIT_TIMEOUT = 2,	    /* wait: --timeout passed */
	HOOK_EXIT_USAGE = 64,	    /* bad command line */
	HOOK_EXIT_UNAVAILABLE = 69, /* W&B unavailable, the change was not kept */
	HOOK_EXIT_NOPERM = 77,	    /* no API key, or W&B refused it */
	HOOK_EXIT_CONFIG = 78,	    /* bad configuration */
};

/* What every command gets: the merged configuration and the global flags. */
struct hook_ctx {
	struct wbs_config cfg;
	bool json;
	bool strict;
	bool quiet;
	struct wbs_client *client; /* made on first use by hook_client() */
	bool replaying;		   /* delivering a spooled change: no spool, no output */
	bool no_output;		   /* print nothing on stdout (the watchdog's is CMD's) */
	bool config_failed;	   /* watchdog: the settings are bad, run CMD without W&B */
	struct wbs_error replay_err; /* why a replayed change failed */
	long start_ms;		     /* wbs_now_ms() when the command began */
};

struct hook_cmd {
	const char *name;
	int (*fn)(struct hook_ctx *ctx, int argc, char **argv);
	const char *usage; /* the arguments, for --help */
	const char *help;  /* one line */
};

int hook_main(int argc, char **argv);

/* The client, made on first use (reads the API key); exit code on failure. */
int hook_client(struct hook_ctx *ctx, struct wbs_client **ret);

/* Prints the error of a failed library call and returns the exit code for it. */
int hook_fail(const struct hook_ctx *ctx, int code, const struct wbs_error *err);

/* The exit code for a library error code (no message). */
int hook_exit_code(int code);

/* Sends one state change to W&B; returns 0 or a negative code with @err set. */
typedef int (*hook_send_fn)(struct hook_ctx *ctx, struct wbs_client *client, void *data,
			    struct wbs_error *err);

/*
 * Delivers a state change now, or keeps it in the spool for later (deliver.c):
 * queued changes go first, in order; a change for a run that still has
 * queued ones is queued behind them; a change W&B cannot take now is queued
 * and the circuit breaker opens, so that the next calls on this node queue
 * at once instead of paying the timeout again.  @run_key is
 * "entity/project/id" ("-" for an unknown entity); @argv is the command to
 * replay (argv[0] its name, the run as a full path).  Returns the exit code;
 * *ret_queued tells that @send did not deliver it now.
 */
int hook_deliver(struct hook_ctx *ctx, const char *run_key, int argc, char **argv,
		 hook_send_fn send, void *data, bool *ret_queued);

/* "wbsched: COMMAND: message" on stderr, returns HOOK_EXIT_USAGE. */
int hook_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints the command's usage line on stdout (for --help). */
void hook_print_usage(const char *cmd);

/* The run commands (cmd_run.c). */
int cmd_create(struct hook_ctx *ctx, int argc, char **argv);
int cmd_status(struct hook_ctx *ctx, int argc, char **argv);
int cmd_start(struct hook_ctx *ctx, int argc, char **argv);
int cmd_preempting(struct hook_ctx *ctx, int argc, char **argv);
int cmd_heartbeat(struct hook_ctx *ctx, int argc, char **argv);
int cmd_requeue(struct hook_ctx *ctx, int argc, char **argv);
int cmd_fail(struct hook_ctx *ctx, int argc, char **argv);
int cmd_finish(struct hook_ctx *ctx, int argc, char **argv);
int cmd_wait(struct hook_ctx *ctx, int argc, char **argv);
int cmd_watchdog(struct hook_ctx *ctx, int argc, char **argv); /* cmd_watchdog.c */
int cmd_flush(struct hook_ctx *ctx, int argc, char **argv);

/* What a flush does with a queued change (its command line). */
enum hook_kind {
	HOOK_KIND_OTHER,   /* replayed on its own */
	HOOK_KIND_CREATE,  /* `create` of one run: many to a request */
	HOOK_KIND_START,   /* many to a request */
	HOOK_KIND_FINISH,  /* one read for many, then a request each */
	HOOK_KIND_BARRIER, /* `create` of many runs (or unreadable): nothing passes it */
};

enum hook_kind hook_classify(struct hook_ctx *ctx, int argc, char **argv);

/*
 * Delivers @n queued creates or starts (argvs[i], argcs[i] words each) in
 * one request per WBS_RUN_BATCH.  Creates take the entity and project of
 * ctx->cfg; starts must all name runs of one entity and project.  Returns 0
 * or a negative code with @err set (-EINVAL: one of them cannot go with the
 * others).
 */
int hook_upsert_many(struct hook_ctx *ctx, enum hook_kind kind, int n, char ***argvs, int *argcs,
		     struct wbs_error *err);

/*
 * Delivers @n queued finishes: their runs read together, then one request
 * per run that has not ended, each with what is left before @deadline_ms
 * (wbs_now_ms(); 0: the configured budget each).  ret_codes[i] is 0 or a
 * negative code with errs[i] set; -ECANCELED: not tried (an earlier one
 * found W&B unavailable, or the time ran out).  Returns non-zero, with
 * errs[0] set, only when the runs could not be read.
 */
int hook_finish_many(struct hook_ctx *ctx, int n, char ***argvs, int *argcs, long deadline_ms,
		     int *ret_codes, struct wbs_error *errs);

/* While muted, hook_usage_error() prints nothing (a flush sorting its queue). */
void hook_usage_mute(bool mute);

/* Runs a command of the table by name (the spool's replay). */
int hook_run_command(struct hook_ctx *ctx, int argc, char **argv);

#endif /* WBS_HOOK_H */
