#ifndef WBS_CREDS_H
#define WBS_CREDS_H

#include <stddef.h>

struct wbs_config;
struct wbs_error;

/*
 * Finds the W&B API key the way the SDK does, first match wins:
 *   1. the WANDB_API_KEY environment variable;
 *   2. cfg->api_key_file: refused (-EACCES) when it is not a regular file, is
 *      group- or world-readable, or is owned by neither the caller nor root;
 *   3. the netrc file ($NETRC, else ~/.netrc) entry whose machine is the base
 *      URL's host (with ":port" when the URL has one), password field.
 * On success *ret_key is a new string (caller frees with wbs_creds_free_key()).
 * -ENOENT when no source has a key; the message names the sources tried.  The
 * key itself never appears in err->msg.
 */
int wbs_creds_load(const struct wbs_config *cfg, char **ret_key, struct wbs_error *err);

/* Wipes and frees a key; NULL is a no-op. */
void wbs_creds_free_key(char *key);

/*
 * Pure netrc parser: finds the password of @machine (or of a "default" entry
 * when no machine matches) in @text.  Understands machine/default/login/
 * password/account/port tokens and skips macdef bodies.  *ret_password is a new
 * string (caller frees with wbs_creds_free_key()).  -ENOENT when absent,
 * -EINVAL (with a line number) on a token with no value.
 */
int wbs_netrc_find(const char *text, size_t len, const char *machine, char **ret_password,
		   struct wbs_error *err);

/*
 * The netrc machine name for a base URL: "host" or "host:port" when a port is
 * given ("https://api.wandb.ai" -> "api.wandb.ai").  Caller frees with free().
 */
int wbs_netrc_machine_for_url(const char *base_url, char **ret_machine, struct wbs_error *err);

#endif /* WBS_CREDS_H */
