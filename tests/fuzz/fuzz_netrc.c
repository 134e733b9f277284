/*
 * fuzz_netrc: the API key sources (lib/creds.c).
 *
 * The input's first line is a base URL, the rest a netrc file:
 *
 *   https://api.wandb.ai
 *   machine api.wandb.ai login user password 0123456789abcdef
 *
 * It drives wbs_netrc_machine_for_url() on the first line, wbs_netrc_find()
 * on the rest with that machine (and on the whole input with the default
 * one), then wbs_creds_load() twice: with the input as a $NETRC file (the
 * machine taken from the first line as base_url) and as an api_key_file
 * (mode 0600, first line).  A found key must pass the checks the header
 * promises: not empty, no white space or control characters.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wbsched/config.h"
#include "wbsched/creds.h"
#include "wbsched/error.h"
#include "wbsched/log.h"

#include "fuzz.h"

static char netrc_path[4096], key_path[4096];

static void quiet_sink(void *userdata, int level, const char *msg)
{
	(void)userdata;
	(void)level;
	(void)msg;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	wbs_log_set_sink(quiet_sink, NULL);
	fuzz_clean_env(); /* no WANDB_API_KEY: the file sources are read */
	(void)snprintf(netrc_path, sizeof(netrc_path), "%s/netrc", fuzz_tmpdir());
	(void)snprintf(key_path, sizeof(key_path), "%s/api_key", fuzz_tmpdir());
	if (setenv("NETRC", netrc_path, 1) < 0 || setenv("HOME", fuzz_tmpdir(), 1) < 0)
		abort();
	return 0;
}

/* A key the library hands out is usable in an HTTP header. */
static void check_key(const char *key)
{
	FUZZ_CHECK(key && *key);
	for (const char *p = key; *p; p++)
		FUZZ_CHECK(!isspace((unsigned char)*p) && !iscntrl((unsigned char)*p));
}

static void find(const char *text, size_t len, const char *machine)
{
	struct wbs_error err = { 0 };
	char *pw = NULL;
	int r = wbs_netrc_find(text, len, machine, &pw, &err);

	FUZZ_CHECK(r <= 0);
	FUZZ_CHECK((r == 0) == (pw != NULL));
	FUZZ_CHECK(r == 0 || err.code == r);
	wbs_creds_free_key(pw);
}

static void load(struct wbs_config *cfg)
{
	struct wbs_error err = { 0 };
	char *key = NULL;
	int r = wbs_creds_load(cfg, &key, &err);

	FUZZ_CHECK(r <= 0);
	if (r == 0)
		check_key(key);
	else
		FUZZ_CHECK(!key && err.code == r);
	wbs_creds_free_key(key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t url_len = nl ? (size_t)(nl - data) : size;
	char *url = fuzz_strdup(data, url_len);
	const char *rest = nl ? (const char *)nl + 1 : "";
	size_t rest_len = nl ? size - url_len - 1 : 0;
	struct wbs_error err = { 0 };
	struct wbs_config cfg;
	char *machine = NULL;
	int r;

	r = wbs_netrc_machine_for_url(url, &machine, &err);
	FUZZ_CHECK(r <= 0);
	FUZZ_CHECK((r == 0) == (machine != NULL));
	find(rest, rest_len, machine ? machine : "api.wandb.ai");
	find((const char *)data, size, "api.wandb.ai");
	free(machine);

	/* The same through the files a user has: $NETRC, then api_key_file. */
	FUZZ_CHECK(fuzz_write_file(netrc_path, data, size) == 0);
	FUZZ_CHECK(fuzz_write_file(key_path, data, size) == 0);
	wbs_config_init(&cfg);
	cfg.base_url = url; /* borrowed: any string a caller may pass */
	load(&cfg);
	cfg.base_url = NULL;
	cfg.api_key_file = key_path;
	load(&cfg);
	free(url);
	return 0;
}
