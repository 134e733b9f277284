/*
 * fuzz_array: the small string parsers and validators, one C string each.
 *
 * The input (cut at its first NUL) goes to:
 *   - wbs_array_parse()            Slurm array specs ("0-15:4,20%2");
 *   - wbs_run_id_validate(), wbs_name_validate(), wbs_run_ref_parse()
 *                                   run ids, names and ENTITY/PROJECT/ID paths;
 *   - wbs_config_set()             every key with the input as its value (the
 *                                   URL, name, path, number, level and enable
 *                                   checks of lib/config.c);
 *   - wbs_http_parse_retry_after() and wbs_log_level_from_string();
 *   - the run state predicates.
 * It checks what the headers promise: at most WBS_ARRAY_MAX_TASKS task ids,
 * each at most 4000000, a validated run id parses back, and a failed
 * wbs_config_set() leaves the configuration as it was.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wbsched/array.h"
#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/log.h"
#include "wbsched/run.h"
#include "wbsched/runid.h"
#include "wbsched/state.h"
#include "wbsched/transport.h"

#include "fuzz.h"

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
	fuzz_clean_env(); /* no WANDB_RUN_ID behind an empty run path */
	return 0;
}

static void array(const char *s)
{
	struct wbs_error err = { 0 };
	uint32_t *ids = NULL;
	size_t n = 0;
	int r = wbs_array_parse(s, &ids, &n, &err);

	FUZZ_CHECK(r <= 0);
	if (r == 0) {
		FUZZ_CHECK(n > 0 && n <= WBS_ARRAY_MAX_TASKS && ids);
		for (size_t i = 0; i < n; i++)
			FUZZ_CHECK(ids[i] <= 4000000);
	} else {
		FUZZ_CHECK(err.code == r && err.msg[0]);
	}
	free(ids);
}

static void run_ref(const char *s, const struct wbs_config *cfg)
{
	struct wbs_error err = { 0 };
	struct wbs_run_ref ref = { 0 };
	int r = wbs_run_ref_parse(s, cfg, &ref, &err);

	FUZZ_CHECK(r <= 0);
	if (r == 0) {
		char *path = wbs_run_path(ref.entity, ref.project, ref.id);

		FUZZ_CHECK(path != NULL);
		FUZZ_CHECK(wbs_run_id_validate(ref.id, NULL) == 0);
		FUZZ_CHECK(wbs_name_validate("project", ref.project, NULL) == 0);
		free(path);
	}
	wbs_run_ref_release(&ref);
}

static void config_values(const char *s)
{
	for (const char *const *key = wbs_config_keys; *key; key++) {
		struct wbs_config cfg;
		struct wbs_error err = { 0 };
		int r;

		wbs_config_init(&cfg);
		r = wbs_config_set(&cfg, *key, s, "fuzz", &err);
		FUZZ_CHECK(r <= 0);
		FUZZ_CHECK(r == 0 || (err.code == r && strncmp(err.msg, "fuzz: ", 6) == 0));
		if (r == 0 && strcmp(*key, "base_url") == 0) {
			size_t len = strlen(cfg.base_url);

			FUZZ_CHECK(len > 0 && cfg.base_url[len - 1] != '/');
		}
		wbs_config_release(&cfg);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_strdup(data, size);
	struct wbs_config cfg;
	int level;

	array(s);

	if (wbs_run_id_validate(s, NULL) == 0)
		FUZZ_CHECK(strlen(s) <= WBS_RUN_ID_MAX_LEN && !strchr(s, '/'));
	(void)wbs_name_validate("entity", s, NULL);
	wbs_config_init(&cfg);
	run_ref(s, &cfg);
	cfg.entity = (char *)"team";
	cfg.project = (char *)"proj";
	run_ref(s, &cfg);

	config_values(s);
	(void)wbs_http_parse_retry_after(s, 1700000000L);
	if (wbs_log_level_from_string(s, &level) == 0)
		(void)wbs_log_level_to_string(level);
	(void)wbs_run_state_is_known(s);
	(void)wbs_run_state_is_failure(s);
	(void)wbs_run_state_can_update(s, "pending");
	(void)wbs_run_state_can_update("running", s);
	free(s);
	return 0;
}
