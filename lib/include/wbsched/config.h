#ifndef WBS_CONFIG_H
#define WBS_CONFIG_H

#include <stdbool.h>

struct wbs_error;

#define WBS_DEFAULT_BASE_URL  "https://api.wandb.ai"
#define WBS_DEFAULT_SPOOL_DIR "/var/spool/wbsched"

/* Whether the Slurm plugin follows a job without --wandb. */
enum wbs_enable {
	WBS_ENABLE_OPT_IN = 0, /* only jobs submitted with --wandb */
	WBS_ENABLE_ALWAYS = 1, /* every job, unless --no-wandb */
};

/*
 * Everything wbsched can be told.  Filled, lowest precedence first, from the
 * built-in defaults, the YAML file, the environment and key=value arguments;
 * every source goes through wbs_config_set(), the one place a key is checked.
 * String members are owned by the struct (NULL: not set).
 */
struct wbs_config {
	char *base_url;	    /* no trailing '/'; NULL: WBS_DEFAULT_BASE_URL */
	char *entity;	    /* NULL: the key's default entity */
	char *project;	    /* NULL: "uncategorized", as the SDK */
	char *api_key_file; /* a file holding only the key, mode 0600 or stricter */
	char *spool_dir;    /* NULL: WBS_DEFAULT_SPOOL_DIR */
	char *ca_file;	    /* PEM bundle for TLS verification; NULL: system store */
	long connect_timeout_ms;
	long request_timeout_ms; /* one HTTP attempt */
	long budget_ms;		 /* one operation, retries and backoff included */
	long max_retries;	 /* attempts after the first */
	int log_level;		 /* enum wbs_log_level */
	long spool_max_bytes;	 /* the queue file's cap */
	long breaker_cooldown_ms; /* after a failure, skip the network this long; 0: never */
	long flush_budget_ms;	 /* delivering queued events before a new one */

	/* The Slurm plugin's settings. */
	int enable;		/* enum wbs_enable */
	char *tags;		/* comma-separated tags every run gets */
	char *wbsched_path;	/* the wbsched binary; NULL: the installed one */
	long after_timeout_ms;	/* --wandb-after gives up after this; 0: never */
};

/* Fills the built-in defaults; allocates nothing, so release is optional. */
void wbs_config_init(struct wbs_config *cfg);

/* Frees the strings and resets @cfg to the state wbs_config_init() leaves. */
void wbs_config_release(struct wbs_config *cfg);

/*
 * Sets one key from its text form, checking type and range.  @where names the
 * source for the message ("wbsched.yaml:3", "--set", "WBSCHED_BUDGET_MS") and
 * may be NULL.  Unknown keys and bad values give -EINVAL with a message such as
 * "wbsched.yaml:3: unknown setting 'endpont'"; @cfg is unchanged on failure.
 */
int wbs_config_set(struct wbs_config *cfg, const char *key, const char *value, const char *where,
		   struct wbs_error *err);

/*
 * Applies a YAML file: one flat mapping of key: scalar.  All or nothing: on any
 * error (-ENOENT, -EACCES, -EINVAL with "FILE:LINE: ..." in err) @cfg is left
 * exactly as it was.  Files larger than 1 MiB are refused.
 */
int wbs_config_load_file(struct wbs_config *cfg, const char *path, struct wbs_error *err);

/*
 * Applies the environment: WANDB_BASE_URL, WANDB_ENTITY, WANDB_PROJECT, then
 * WBSCHED_<KEY> (upper case) for every key, which wins over WANDB_*.  All or
 * nothing, like wbs_config_load_file().
 */
int wbs_config_load_env(struct wbs_config *cfg, struct wbs_error *err);

/*
 * Applies "key=value" words (a plugstack.conf line, repeated --set).  A
 * "config=FILE" word is loaded first, wherever it stands, and the other words
 * override it.  All or nothing.
 */
int wbs_config_load_args(struct wbs_config *cfg, int argc, char *const *argv,
			 struct wbs_error *err);

/* Accessors that resolve the NULL defaults. */
const char *wbs_config_base_url(const struct wbs_config *cfg);
const char *wbs_config_project(const struct wbs_config *cfg);
const char *wbs_config_spool_dir(const struct wbs_config *cfg);
const char *wbs_config_wbsched_path(const struct wbs_config *cfg);

/* The names of all keys, NULL-terminated (for --help and the example file test). */
extern const char *const wbs_config_keys[];

#endif /* WBS_CONFIG_H */
