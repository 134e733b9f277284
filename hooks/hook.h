#ifndef WBS_HOOK_H
#define WBS_HOOK_H

#include <stdbool.h>

#include "wbsched/config.h"

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

#endif /* WBS_HOOK_H */
