/*
 * fuzz_config: the YAML configuration loader (lib/config.c).
 *
 * The input is the content of a wbsched.yaml.  It is written to a memfd and
 * loaded by path (/proc/self/fd/N) two ways:
 *   - wbs_config_load_file() into a configuration that already holds every
 *     kind of value, checking the documented contract: on failure the
 *     configuration is left exactly as it was (all or nothing);
 *   - wbs_config_load_args() with "config=FILE" and an override after it.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/log.h"

#include "fuzz.h"

static char path[4096];
static int fd = -1;

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
	fd = memfd_create("wbsched.yaml", MFD_CLOEXEC);
	if (fd >= 0) {
		(void)snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		if (access(path, R_OK) == 0)
			return 0;
		(void)close(fd);
		fd = -1;
	}
	/* no memfd or no /proc: a plain file */
	(void)snprintf(path, sizeof(path), "%s/wbsched.yaml", fuzz_tmpdir());
	return 0;
}

static bool same_string(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_config(const struct wbs_config *a, const struct wbs_config *b)
{
	return same_string(a->base_url, b->base_url) && same_string(a->entity, b->entity) &&
	       same_string(a->project, b->project) &&
	       same_string(a->api_key_file, b->api_key_file) &&
	       same_string(a->spool_dir, b->spool_dir) && same_string(a->ca_file, b->ca_file) &&
	       a->connect_timeout_ms == b->connect_timeout_ms &&
	       a->request_timeout_ms == b->request_timeout_ms && a->budget_ms == b->budget_ms &&
	       a->max_retries == b->max_retries && a->log_level == b->log_level &&
	       a->spool_max_bytes == b->spool_max_bytes &&
	       a->breaker_cooldown_ms == b->breaker_cooldown_ms &&
	       a->flush_budget_ms == b->flush_budget_ms && a->enable == b->enable &&
	       same_string(a->tags, b->tags) && same_string(a->wbsched_path, b->wbsched_path) &&
	       a->after_timeout_ms == b->after_timeout_ms;
}

/* A configuration with every string set and every number off its default. */
static void filled_config(struct wbs_config *cfg)
{
	static const char *const words[] = {
		"base_url=https://wandb.example.com:8443/api",
		"entity=team",
		"project=proj",
		"api_key_file=/run/secrets/wandb",
		"spool_dir=/var/spool/wbsched-test",
		"ca_file=/etc/ssl/ca.pem",
		"connect_timeout_ms=1234",
		"request_timeout_ms=2345",
		"budget_ms=3456",
		"max_retries=7",
		"log_level=debug",
		"spool_max_bytes=65536",
		"breaker_cooldown_ms=0",
		"flush_budget_ms=99",
		"enable=always",
		"tags=a,b",
		"wbsched_path=/opt/wbsched/bin/wbsched",
		"after_timeout_ms=60000",
	};
	struct wbs_error err = { 0 };

	wbs_config_init(cfg);
	FUZZ_CHECK(wbs_config_load_args(cfg, (int)(sizeof(words) / sizeof(words[0])),
					(char *const *)words, &err) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wbs_config cfg, before;
	struct wbs_error err = { 0 };
	char config_word[sizeof(path) + 8];
	char *args[2];
	int r;

	if (fd >= 0) {
		FUZZ_CHECK(ftruncate(fd, 0) == 0);
		FUZZ_CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);
	} else {
		FUZZ_CHECK(fuzz_write_file(path, data, size) == 0);
	}

	/* All or nothing: a failed load leaves the configuration untouched. */
	filled_config(&cfg);
	filled_config(&before);
	r = wbs_config_load_file(&cfg, path, &err);
	FUZZ_CHECK(r <= 0);
	if (r < 0)
		FUZZ_CHECK(err.code == r && same_config(&cfg, &before));
	(void)wbs_config_base_url(&cfg);
	(void)wbs_config_project(&cfg);
	(void)wbs_config_spool_dir(&cfg);
	(void)wbs_config_wbsched_path(&cfg);
	wbs_config_release(&cfg);
	wbs_config_release(&before);

	/* config=FILE is applied first, wherever it stands; the words override it. */
	(void)snprintf(config_word, sizeof(config_word), "config=%s", path);
	args[0] = (char *)"project=override";
	args[1] = config_word;
	wbs_config_init(&cfg);
	wbs_error_clear(&err);
	r = wbs_config_load_args(&cfg, 2, args, &err);
	if (r == 0)
		FUZZ_CHECK(strcmp(cfg.project, "override") == 0);
	wbs_config_release(&cfg);
	return 0;
}
