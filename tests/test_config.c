#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "wbsched/cleanup.h"
#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/log.h"

#define EXAMPLE_CONFIG TEST_DATA_DIR "/../../config/wbsched.yaml"

static struct wbs_config cfg;
static struct wbs_error err;
static char tmpdir[] = "/tmp/wbs-test-config-XXXXXX";

static void clear_env(void)
{
	(void)unsetenv("WANDB_BASE_URL");
	(void)unsetenv("WANDB_ENTITY");
	(void)unsetenv("WANDB_PROJECT");
	for (const char *const *k = wbs_config_keys; *k; k++) {
		char var[64];

		(void)snprintf(var, sizeof(var), "WBSCHED_%s", *k);
		for (char *p = var; *p; p++)
			*p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
		(void)unsetenv(var);
	}
}

static void setup(void)
{
	clear_env();
	cr_assert_not_null(mkdtemp(tmpdir));
	wbs_config_init(&cfg);
	err = (struct wbs_error){ 0 };
}

static void teardown(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *e;

	wbs_config_release(&cfg);
	if (!d)
		return;
	while ((e = readdir(d))) {
		char path[512];

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		(void)snprintf(path, sizeof(path), "%s/%s", tmpdir, e->d_name);
		(void)remove(path);
	}
	(void)closedir(d);
	(void)rmdir(tmpdir);
}

TestSuite(config, .init = setup, .fini = teardown, .timeout = 10);

/* Fixture path under tests/data/config (static buffer: one at a time). */
static const char *fixture(const char *name)
{
	static char path[512];

	(void)snprintf(path, sizeof(path), "%s/config/%s", TEST_DATA_DIR, name);
	return path;
}

/* Writes @len bytes to a file in the test's temporary directory. */
static const char *write_tmp(const char *name, const char *data, size_t len)
{
	static char path[512];
	FILE *f;

	(void)snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "we");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(data, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
	return path;
}

static void assert_error(int r, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The code and the whole message, since the message is what the admin reads. */
static void assert_error(int r, int code, const char *fmt, ...)
{
	char want[sizeof(err.msg)];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(want, sizeof(want), fmt, ap);
	va_end(ap);
	cr_assert_eq(r, code, "returned %d, want %d (%s)", r, code, err.msg);
	cr_assert_eq(err.code, code);
	cr_assert_str_eq(err.msg, want);
}

static void assert_defaults(const struct wbs_config *c)
{
	cr_assert_null(c->base_url);
	cr_assert_null(c->entity);
	cr_assert_null(c->project);
	cr_assert_null(c->api_key_file);
	cr_assert_null(c->spool_dir);
	cr_assert_null(c->ca_file);
	cr_assert_eq(c->connect_timeout_ms, 1000);
	cr_assert_eq(c->request_timeout_ms, 2000);
	cr_assert_eq(c->budget_ms, 2000);
	cr_assert_eq(c->max_retries, 3);
	cr_assert_eq(c->log_level, WBS_LOG_INFO);
}

/* The stored value of @key as text, for table-driven checks. */
static const char *stored(const struct wbs_config *c, const char *key)
{
	static char num[32];
	long v;

	if (strcmp(key, "base_url") == 0)
		return c->base_url;
	if (strcmp(key, "entity") == 0)
		return c->entity;
	if (strcmp(key, "project") == 0)
		return c->project;
	if (strcmp(key, "api_key_file") == 0)
		return c->api_key_file;
	if (strcmp(key, "spool_dir") == 0)
		return c->spool_dir;
	if (strcmp(key, "ca_file") == 0)
		return c->ca_file;
	if (strcmp(key, "log_level") == 0)
		return wbs_log_level_to_string(c->log_level);
	if (strcmp(key, "tags") == 0)
		return c->tags;
	if (strcmp(key, "wbsched_path") == 0)
		return c->wbsched_path;
	if (strcmp(key, "enable") == 0)
		return c->enable == WBS_ENABLE_ALWAYS ? "always" : "opt-in";
	if (strcmp(key, "connect_timeout_ms") == 0)
		v = c->connect_timeout_ms;
	else if (strcmp(key, "request_timeout_ms") == 0)
		v = c->request_timeout_ms;
	else if (strcmp(key, "budget_ms") == 0)
		v = c->budget_ms;
	else if (strcmp(key, "after_timeout_ms") == 0)
		v = c->after_timeout_ms;
	else if (strcmp(key, "spool_max_bytes") == 0)
		v = c->spool_max_bytes;
	else if (strcmp(key, "breaker_cooldown_ms") == 0)
		v = c->breaker_cooldown_ms;
	else if (strcmp(key, "flush_budget_ms") == 0)
		v = c->flush_budget_ms;
	else if (strcmp(key, "max_retries") == 0)
		v = c->max_retries;
	else
		cr_assert_fail("no such key '%s'", key);
	(void)snprintf(num, sizeof(num), "%ld", v);
	return num;
}

Test(config, init_fills_the_builtin_defaults)
{
	struct wbs_config c;

	memset(&c, 0xa5, sizeof(c));
	wbs_config_init(&c);
	assert_defaults(&c);
}

Test(config, accessors_resolve_unset_strings_to_defaults)
{
	cr_assert_str_eq(wbs_config_base_url(&cfg), WBS_DEFAULT_BASE_URL);
	cr_assert_str_eq(wbs_config_project(&cfg), "uncategorized");
	cr_assert_str_eq(wbs_config_spool_dir(&cfg), WBS_DEFAULT_SPOOL_DIR);
}

Test(config, accessors_return_set_values)
{
	cr_assert_eq(wbs_config_set(&cfg, "base_url", "http://localhost:8080", NULL, &err), 0);
	cr_assert_eq(wbs_config_set(&cfg, "project", "demo", NULL, &err), 0);
	cr_assert_eq(wbs_config_set(&cfg, "spool_dir", "/tmp/spool", NULL, &err), 0);
	cr_assert_str_eq(wbs_config_base_url(&cfg), "http://localhost:8080");
	cr_assert_str_eq(wbs_config_project(&cfg), "demo");
	cr_assert_str_eq(wbs_config_spool_dir(&cfg), "/tmp/spool");
}

Test(config, release_frees_strings_and_restores_defaults)
{
	cr_assert_eq(wbs_config_set(&cfg, "entity", "ml-team", NULL, &err), 0);
	cr_assert_eq(wbs_config_set(&cfg, "budget_ms", "5", NULL, &err), 0);
	wbs_config_release(&cfg);
	assert_defaults(&cfg);
	wbs_config_release(NULL);
}

Test(config, keys_list_every_setting_once)
{
	static const char *const want[] = {
		"base_url",
		"entity",
		"project",
		"api_key_file",
		"spool_dir",
		"ca_file",
		"connect_timeout_ms",
		"request_timeout_ms",
		"budget_ms",
		"max_retries",
		"log_level",
		"spool_max_bytes",
		"breaker_cooldown_ms",
		"flush_budget_ms",
		"enable",
		"tags",
		"wbsched_path",
		"after_timeout_ms",
	};
	size_t n = 0;

	while (wbs_config_keys[n])
		n++;
	cr_assert_eq(n, ELEMENTSOF(want));
	for (size_t i = 0; i < n; i++)
		cr_assert_str_eq(wbs_config_keys[i], want[i]);
}

struct good_case {
	const char *key;
	const char *value;
	const char *want; /* as stored */
};

ParameterizedTestParameters(config, set_accepts_valid_values)
{
	static struct good_case cases[] = {
		{ "base_url", "https://wandb.example.com/", "https://wandb.example.com" },
		{ "base_url", "http://localhost:8080", "http://localhost:8080" },
		{ "base_url", "https://wandb.example.com/site//",
		  "https://wandb.example.com/site" },
		{ "base_url", "http://[::1]:8080/", "http://[::1]:8080" },
		{ "base_url", "HTTPS://Wandb.Example.com", "HTTPS://Wandb.Example.com" },
		{ "entity", "ml-team", "ml-team" },
		{ "project", "resnet_50.v2", "resnet_50.v2" },
		{ "api_key_file", "/run/secrets/wandb/api-key", "/run/secrets/wandb/api-key" },
		{ "spool_dir", "relative/spool", "relative/spool" },
		{ "ca_file", "/etc/ssl/site ca.pem", "/etc/ssl/site ca.pem" },
		{ "connect_timeout_ms", "1", "1" },
		{ "connect_timeout_ms", "600000", "600000" },
		{ "request_timeout_ms", "2500", "2500" },
		{ "budget_ms", "3600000", "3600000" },
		{ "budget_ms", "007", "7" },
		{ "max_retries", "0", "0" },
		{ "max_retries", "100", "100" },
		{ "log_level", "err", "err" },
		{ "log_level", "warning", "warning" },
		{ "log_level", "notice", "notice" },
		{ "log_level", "info", "info" },
		{ "log_level", "debug", "debug" },
		{ "enable", "always", "always" },
		{ "enable", "opt-in", "opt-in" },
		{ "tags", "slurm,cluster a", "slurm,cluster a" },
		{ "wbsched_path", "/opt/wbsched/bin/wbsched", "/opt/wbsched/bin/wbsched" },
		{ "after_timeout_ms", "0", "0" },
		{ "spool_max_bytes", "4096", "4096" },
		{ "breaker_cooldown_ms", "0", "0" },
		{ "flush_budget_ms", "250", "250" },
		{ "after_timeout_ms", "2592000000", "2592000000" },
	};

	return cr_make_param_array(struct good_case, cases, ELEMENTSOF(cases));
}

ParameterizedTest(struct good_case *c, config, set_accepts_valid_values)
{
	cr_assert_eq(wbs_config_set(&cfg, c->key, c->value, "test", &err), 0, "%s", err.msg);
	cr_assert_eq(err.code, 0);
	cr_assert_str_eq(stored(&cfg, c->key), c->want);
}

struct bad_case {
	const char *key;
	const char *value;
	const char *msg; /* after "wbsched.yaml:4: " */
};

#define NUMBER_1_3600000 "expected a whole number from 1 to 3600000"
#define URL_EXPECTED     "expected an http:// or https:// URL with a host"
#define NAME_EXPECTED    "expected a name of 1 to 128 characters without '/' or whitespace"

ParameterizedTestParameters(config, set_rejects_invalid_values)
{
	static struct bad_case cases[] = {
		{ "budget_ms", "abc", "invalid value 'abc' for 'budget_ms': " NUMBER_1_3600000 },
		{ "budget_ms", "", "invalid value '' for 'budget_ms': " NUMBER_1_3600000 },
		{ "budget_ms", "0", "invalid value '0' for 'budget_ms': " NUMBER_1_3600000 },
		{ "budget_ms", "3600001",
		  "invalid value '3600001' for 'budget_ms': " NUMBER_1_3600000 },
		{ "budget_ms", "-5", "invalid value '-5' for 'budget_ms': " NUMBER_1_3600000 },
		{ "budget_ms", "+5", "invalid value '+5' for 'budget_ms': " NUMBER_1_3600000 },
		{ "budget_ms", " 5", "invalid value ' 5' for 'budget_ms': " NUMBER_1_3600000 },
		{ "budget_ms", "5 ", "invalid value '5 ' for 'budget_ms': " NUMBER_1_3600000 },
		{ "budget_ms", "0x10", "invalid value '0x10' for 'budget_ms': " NUMBER_1_3600000 },
		{ "budget_ms", "1.5", "invalid value '1.5' for 'budget_ms': " NUMBER_1_3600000 },
		{ "budget_ms", "1e3", "invalid value '1e3' for 'budget_ms': " NUMBER_1_3600000 },
		{ "budget_ms", "99999999999999999999",
		  "invalid value '99999999999999999999' for 'budget_ms': " NUMBER_1_3600000 },
		{ "connect_timeout_ms", "600001",
		  "invalid value '600001' for 'connect_timeout_ms': expected a whole number from 1 to 600000" },
		{ "request_timeout_ms", "0",
		  "invalid value '0' for 'request_timeout_ms': expected a whole number from 1 to 600000" },
		{ "max_retries", "101",
		  "invalid value '101' for 'max_retries': expected a whole number from 0 to 100" },
		{ "max_retries", "-1",
		  "invalid value '-1' for 'max_retries': expected a whole number from 0 to 100" },
		{ "enable", "yes", "invalid value 'yes' for 'enable': expected always or opt-in" },
		{ "after_timeout_ms", "2592000001",
		  "invalid value '2592000001' for 'after_timeout_ms': expected a whole number from 0 to 2592000000" },
		{ "base_url", "ftp://wandb.example.com",
		  "invalid value 'ftp://wandb.example.com' for 'base_url': " URL_EXPECTED },
		{ "base_url", "wandb.example.com",
		  "invalid value 'wandb.example.com' for 'base_url': " URL_EXPECTED },
		{ "base_url", "https://",
		  "invalid value 'https://' for 'base_url': " URL_EXPECTED },
		{ "base_url", "https:///graphql",
		  "invalid value 'https:///graphql' for 'base_url': " URL_EXPECTED },
		{ "base_url", "https://:8080",
		  "invalid value 'https://:8080' for 'base_url': " URL_EXPECTED },
		{ "base_url",
		  "https://host:", "invalid value 'https://host:' for 'base_url': " URL_EXPECTED },
		{ "base_url", "https://host:0",
		  "invalid value 'https://host:0' for 'base_url': " URL_EXPECTED },
		{ "base_url", "https://host:65536",
		  "invalid value 'https://host:65536' for 'base_url': " URL_EXPECTED },
		{ "base_url", "https://host:http",
		  "invalid value 'https://host:http' for 'base_url': " URL_EXPECTED },
		{ "base_url", "https://host/a b",
		  "invalid value 'https://host/a b' for 'base_url': " URL_EXPECTED },
		{ "base_url", "https://host/?x=1",
		  "invalid value 'https://host/?x=1' for 'base_url': " URL_EXPECTED },
		{ "base_url", "http://[::1",
		  "invalid value 'http://[::1' for 'base_url': " URL_EXPECTED },
		{ "base_url", "http://[]:80",
		  "invalid value 'http://[]:80' for 'base_url': " URL_EXPECTED },
		{ "base_url", "https://user:hunter2@wandb.example.com",
		  "invalid value for 'base_url': credentials do not belong in the URL (use api_key_file or netrc)" },
		{ "entity", "", "invalid value '' for 'entity': " NAME_EXPECTED },
		{ "entity", "ml team", "invalid value 'ml team' for 'entity': " NAME_EXPECTED },
		{ "project", "team/project",
		  "invalid value 'team/project' for 'project': " NAME_EXPECTED },
		{ "project", "a\tb", "invalid value for 'project': contains control characters" },
		{ "api_key_file", "", "invalid value '' for 'api_key_file': expected a path" },
		{ "spool_dir", "", "invalid value '' for 'spool_dir': expected a path" },
		{ "ca_file", "", "invalid value '' for 'ca_file': expected a path" },
		{ "ca_file", "/etc/ssl/ca.pem\n",
		  "invalid value for 'ca_file': contains control characters" },
		{ "log_level", "loud",
		  "invalid value 'loud' for 'log_level': expected err, warning, notice, info or debug" },
		{ "log_level", "INFO",
		  "invalid value 'INFO' for 'log_level': expected err, warning, notice, info or debug" },
		{ "endpont", "https://wandb.example.com", "unknown setting 'endpont'" },
		{ "config", "/etc/wbsched/wbsched.yaml", "unknown setting 'config'" },
		{ "budget_ms", NULL, "no value for 'budget_ms'" },
	};

	return cr_make_param_array(struct bad_case, cases, ELEMENTSOF(cases));
}

ParameterizedTest(struct bad_case *c, config, set_rejects_invalid_values)
{
	int r = wbs_config_set(&cfg, c->key, c->value, "wbsched.yaml:4", &err);

	assert_error(r, -EINVAL, "wbsched.yaml:4: %s", c->msg);
	assert_defaults(&cfg);
}

Test(config, failed_set_keeps_the_previous_value)
{
	cr_assert_eq(wbs_config_set(&cfg, "base_url", "https://wandb.example.com", NULL, &err), 0);
	cr_assert_eq(wbs_config_set(&cfg, "budget_ms", "5000", NULL, &err), 0);
	cr_assert_eq(wbs_config_set(&cfg, "base_url", "wandb.example.com", NULL, &err), -EINVAL);
	cr_assert_eq(wbs_config_set(&cfg, "budget_ms", "0", NULL, &err), -EINVAL);
	cr_assert_str_eq(cfg.base_url, "https://wandb.example.com");
	cr_assert_eq(cfg.budget_ms, 5000);
}

Test(config, set_without_a_source_has_no_prefix)
{
	assert_error(wbs_config_set(&cfg, "endpont", "x", NULL, &err), -EINVAL,
		     "unknown setting 'endpont'");
}

Test(config, names_are_limited_to_128_characters)
{
	char name[130];

	memset(name, 'x', 128);
	name[128] = '\0';
	cr_assert_eq(wbs_config_set(&cfg, "project", name, NULL, &err), 0);
	name[128] = 'x';
	name[129] = '\0';
	cr_assert_eq(wbs_config_set(&cfg, "project", name, NULL, &err), -EINVAL);
	cr_assert(strncmp(err.msg, "invalid value 'xxx", 18) == 0, "%s", err.msg);
	cr_assert_eq(strlen(cfg.project), 128);
}

Test(config, overlong_values_are_refused_without_echo)
{
	char path[5000];

	memset(path, 'a', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	assert_error(wbs_config_set(&cfg, "spool_dir", path, "--set", &err), -EINVAL,
		     "--set: value for 'spool_dir' is too long (at most 4096 bytes)");
	cr_assert_null(cfg.spool_dir);
}

Test(config, load_file_applies_every_setting)
{
	cr_assert_eq(wbs_config_load_file(&cfg, fixture("good.yaml"), &err), 0, "%s", err.msg);
	cr_assert_str_eq(cfg.base_url, "https://wandb.example.com");
	cr_assert_str_eq(cfg.entity, "ml-team");
	cr_assert_str_eq(cfg.project, "resnet-sweeps");
	cr_assert_str_eq(cfg.api_key_file, "/etc/wbsched/api-key");
	cr_assert_str_eq(cfg.spool_dir, "/var/tmp/wbsched-spool");
	cr_assert_str_eq(cfg.ca_file, "/etc/ssl/site-ca.pem");
	cr_assert_eq(cfg.connect_timeout_ms, 500);
	cr_assert_eq(cfg.request_timeout_ms, 1500);
	cr_assert_eq(cfg.budget_ms, 60000);
	cr_assert_eq(cfg.max_retries, 0);
	cr_assert_eq(cfg.log_level, WBS_LOG_DEBUG);
}

Test(config, load_file_replaces_earlier_values)
{
	cr_assert_eq(wbs_config_set(&cfg, "entity", "old-team", NULL, &err), 0);
	cr_assert_eq(wbs_config_load_file(&cfg, fixture("good.yaml"), &err), 0, "%s", err.msg);
	cr_assert_str_eq(cfg.entity, "ml-team");
}

Test(config, empty_file_sets_nothing)
{
	cr_assert_eq(wbs_config_load_file(&cfg, fixture("empty.yaml"), &err), 0, "%s", err.msg);
	assert_defaults(&cfg);
}

Test(config, file_of_only_comments_sets_nothing)
{
	cr_assert_eq(wbs_config_load_file(&cfg, fixture("comments_only.yaml"), &err), 0, "%s",
		     err.msg);
	assert_defaults(&cfg);
}

Test(config, unknown_key_is_reported_with_file_and_line)
{
	const char *path = fixture("unknown_key.yaml");

	assert_error(wbs_config_load_file(&cfg, path, &err), -EINVAL,
		     "%s:2: unknown setting 'endpont'", path);
}

Test(config, bad_number_is_reported_with_file_line_and_value)
{
	const char *path = fixture("bad_number.yaml");

	assert_error(wbs_config_load_file(&cfg, path, &err), -EINVAL,
		     "%s:4: invalid value 'abc' for 'budget_ms': " NUMBER_1_3600000, path);
}

Test(config, yaml_syntax_error_is_reported_with_its_line)
{
	const char *path = fixture("syntax_error.yaml");

	assert_error(wbs_config_load_file(&cfg, path, &err), -EINVAL,
		     "%s:4: could not find expected ':'", path);
	assert_defaults(&cfg);
}

Test(config, invalid_utf8_is_reported_with_its_line)
{
	static const char text[] = "entity: ml-team\nproject: \xff\xfe\n";
	const char *path = write_tmp("bad-utf8.yaml", text, sizeof(text) - 1);

	assert_error(wbs_config_load_file(&cfg, path, &err), -EINVAL,
		     "%s:2: invalid leading UTF-8 octet", path);
}

Test(config, list_value_is_refused_naming_the_key)
{
	const char *path = fixture("list_value.yaml");

	assert_error(wbs_config_load_file(&cfg, path, &err), -EINVAL,
		     "%s:2: invalid value for 'project': expected a single value, not a list",
		     path);
	assert_defaults(&cfg);
}

Test(config, mapping_value_is_refused_naming_the_key)
{
	const char *path = fixture("mapping_value.yaml");

	assert_error(wbs_config_load_file(&cfg, path, &err), -EINVAL,
		     "%s:1: invalid value for 'base_url': expected a single value, not a mapping",
		     path);
}

Test(config, duplicate_key_is_refused)
{
	const char *path = fixture("duplicate_key.yaml");

	assert_error(wbs_config_load_file(&cfg, path, &err), -EINVAL,
		     "%s:3: 'budget_ms' is set twice (first on line 1)", path);
	assert_defaults(&cfg);
}

Test(config, empty_value_is_refused_as_no_value)
{
	const char *path = fixture("null_value.yaml");

	assert_error(wbs_config_load_file(&cfg, path, &err), -EINVAL, "%s:2: no value for 'entity'",
		     path);
	assert_defaults(&cfg);
}

Test(config, tilde_value_is_refused_as_no_value)
{
	const char *path = fixture("tilde_value.yaml");

	assert_error(wbs_config_load_file(&cfg, path, &err), -EINVAL,
		     "%s:1: no value for 'project'", path);
}

Test(config, quoted_empty_string_is_a_value_not_a_null)
{
	static const char text[] = "entity: ''\n";
	const char *path = write_tmp("quoted.yaml", text, sizeof(text) - 1);

	assert_error(wbs_config_load_file(&cfg, path, &err), -EINVAL,
		     "%s:1: invalid value '' for 'entity': " NAME_EXPECTED, path);
}

Test(config, root_that_is_not_a_mapping_is_refused)
{
	const char *path = fixture("not_mapping.yaml");

	assert_error(wbs_config_load_file(&cfg, path, &err), -EINVAL,
		     "%s:1: expected 'setting: value' lines, not a list", path);
}

Test(config, second_document_is_refused)
{
	const char *path = fixture("two_documents.yaml");

	assert_error(wbs_config_load_file(&cfg, path, &err), -EINVAL,
		     "%s:2: expected one YAML document, found another", path);
	assert_defaults(&cfg);
}

Test(config, nothing_is_applied_when_a_later_key_is_bad)
{
	const char *path = fixture("good_then_bad.yaml");

	cr_assert_eq(wbs_config_set(&cfg, "project", "kept", NULL, &err), 0);
	assert_error(
		wbs_config_load_file(&cfg, path, &err), -EINVAL,
		"%s:3: invalid value '101' for 'max_retries': expected a whole number from 0 to 100",
		path);
	cr_assert_null(cfg.entity);
	cr_assert_eq(cfg.budget_ms, 2000);
	cr_assert_str_eq(cfg.project, "kept");
}

Test(config, missing_file_gives_enoent)
{
	char path[600];

	(void)snprintf(path, sizeof(path), "%s/absent.yaml", tmpdir);
	assert_error(wbs_config_load_file(&cfg, path, &err), -ENOENT,
		     "cannot open '%s': No such file or directory", path);
}

Test(config, directory_is_refused)
{
	assert_error(wbs_config_load_file(&cfg, tmpdir, &err), -EINVAL,
		     "'%s' is not a regular file", tmpdir);
}

/* @size bytes of YAML comments. */
static char *comment_text(size_t size)
{
	char *text = malloc(size);

	cr_assert_not_null(text);
	memset(text, '#', size);
	for (size_t i = 63; i < size; i += 64)
		text[i] = '\n';
	return text;
}

Test(config, file_of_exactly_1_MiB_is_accepted)
{
	_cleanup_free_ char *text = comment_text(1024 * 1024);
	const char *path = write_tmp("big.yaml", text, 1024 * 1024);

	cr_assert_eq(wbs_config_load_file(&cfg, path, &err), 0, "%s", err.msg);
}

Test(config, file_over_1_MiB_is_refused)
{
	_cleanup_free_ char *text = comment_text(1024 * 1024 + 1);
	const char *path = write_tmp("big.yaml", text, 1024 * 1024 + 1);

	assert_error(wbs_config_load_file(&cfg, path, &err), -EINVAL, "'%s' is larger than 1 MiB",
		     path);
}

Test(config, example_file_loads_and_equals_the_defaults)
{
	cr_assert_eq(wbs_config_load_file(&cfg, EXAMPLE_CONFIG, &err), 0, "%s", err.msg);
	assert_defaults(&cfg);
}

/*
 * Uncomments every "# key: value" line of the example file: each key must be
 * there exactly once, and the values shown must be the real defaults.
 */
Test(config, example_file_shows_every_key_with_its_default)
{
	_cleanup_fclose_ FILE *in = fopen(EXAMPLE_CONFIG, "re");
	size_t nkeys = 0, seen[32] = { 0 };
	char line[512], out[8192] = "";
	const char *path;

	cr_assert_not_null(in);
	while (wbs_config_keys[nkeys])
		nkeys++;
	cr_assert_lt(nkeys, ELEMENTSOF(seen));
	while (fgets(line, sizeof(line), in)) {
		for (size_t i = 0; i < nkeys; i++) {
			size_t n = strlen(wbs_config_keys[i]);

			if (strncmp(line, "# ", 2) == 0 &&
			    strncmp(line + 2, wbs_config_keys[i], n) == 0 && line[2 + n] == ':') {
				seen[i]++;
				cr_assert_lt(strlen(out) + strlen(line), sizeof(out));
				strcat(out, line + 2);
			}
		}
	}
	for (size_t i = 0; i < nkeys; i++)
		cr_assert_eq(seen[i], 1, "'%s' appears %zu times", wbs_config_keys[i], seen[i]);

	path = write_tmp("uncommented.yaml", out, strlen(out));
	cr_assert_eq(wbs_config_load_file(&cfg, path, &err), 0, "%s", err.msg);
	cr_assert_str_eq(cfg.base_url, WBS_DEFAULT_BASE_URL);
	cr_assert_str_eq(cfg.project, "uncategorized");
	cr_assert_str_eq(cfg.spool_dir, WBS_DEFAULT_SPOOL_DIR);
	cr_assert_eq(cfg.connect_timeout_ms, 1000);
	cr_assert_eq(cfg.request_timeout_ms, 2000);
	cr_assert_eq(cfg.budget_ms, 2000);
	cr_assert_eq(cfg.max_retries, 3);
	cr_assert_eq(cfg.log_level, WBS_LOG_INFO);
}

Test(config, env_wandb_variables_set_url_entity_and_project)
{
	cr_assert_eq(setenv("WANDB_BASE_URL", "http://localhost:8080/", 1), 0);
	cr_assert_eq(setenv("WANDB_ENTITY", "ml-team", 1), 0);
	cr_assert_eq(setenv("WANDB_PROJECT", "demo", 1), 0);
	cr_assert_eq(wbs_config_load_env(&cfg, &err), 0, "%s", err.msg);
	cr_assert_str_eq(cfg.base_url, "http://localhost:8080");
	cr_assert_str_eq(cfg.entity, "ml-team");
	cr_assert_str_eq(cfg.project, "demo");
}

Test(config, env_has_a_wbsched_variable_for_every_key)
{
	cr_assert_eq(setenv("WBSCHED_BASE_URL", "https://wandb.example.com", 1), 0);
	cr_assert_eq(setenv("WBSCHED_ENTITY", "ml-team", 1), 0);
	cr_assert_eq(setenv("WBSCHED_PROJECT", "demo", 1), 0);
	cr_assert_eq(setenv("WBSCHED_API_KEY_FILE", "/run/secrets/key", 1), 0);
	cr_assert_eq(setenv("WBSCHED_SPOOL_DIR", "/tmp/spool", 1), 0);
	cr_assert_eq(setenv("WBSCHED_CA_FILE", "/etc/ca.pem", 1), 0);
	cr_assert_eq(setenv("WBSCHED_CONNECT_TIMEOUT_MS", "11", 1), 0);
	cr_assert_eq(setenv("WBSCHED_REQUEST_TIMEOUT_MS", "12", 1), 0);
	cr_assert_eq(setenv("WBSCHED_BUDGET_MS", "13", 1), 0);
	cr_assert_eq(setenv("WBSCHED_MAX_RETRIES", "14", 1), 0);
	cr_assert_eq(setenv("WBSCHED_LOG_LEVEL", "warning", 1), 0);
	cr_assert_eq(wbs_config_load_env(&cfg, &err), 0, "%s", err.msg);
	cr_assert_str_eq(cfg.base_url, "https://wandb.example.com");
	cr_assert_str_eq(cfg.entity, "ml-team");
	cr_assert_str_eq(cfg.project, "demo");
	cr_assert_str_eq(cfg.api_key_file, "/run/secrets/key");
	cr_assert_str_eq(cfg.spool_dir, "/tmp/spool");
	cr_assert_str_eq(cfg.ca_file, "/etc/ca.pem");
	cr_assert_eq(cfg.connect_timeout_ms, 11);
	cr_assert_eq(cfg.request_timeout_ms, 12);
	cr_assert_eq(cfg.budget_ms, 13);
	cr_assert_eq(cfg.max_retries, 14);
	cr_assert_eq(cfg.log_level, WBS_LOG_WARNING);
}

Test(config, env_wbsched_variables_beat_wandb_ones)
{
	cr_assert_eq(setenv("WANDB_ENTITY", "sdk-team", 1), 0);
	cr_assert_eq(setenv("WBSCHED_ENTITY", "site-team", 1), 0);
	cr_assert_eq(setenv("WANDB_PROJECT", "sdk-project", 1), 0);
	cr_assert_eq(wbs_config_load_env(&cfg, &err), 0, "%s", err.msg);
	cr_assert_str_eq(cfg.entity, "site-team");
	cr_assert_str_eq(cfg.project, "sdk-project");
}

Test(config, env_empty_values_are_ignored)
{
	cr_assert_eq(wbs_config_set(&cfg, "entity", "file-team", NULL, &err), 0);
	cr_assert_eq(setenv("WANDB_ENTITY", "", 1), 0);
	cr_assert_eq(setenv("WBSCHED_ENTITY", "", 1), 0);
	cr_assert_eq(setenv("WBSCHED_BUDGET_MS", "", 1), 0);
	cr_assert_eq(wbs_config_load_env(&cfg, &err), 0, "%s", err.msg);
	cr_assert_str_eq(cfg.entity, "file-team");
	cr_assert_eq(cfg.budget_ms, 2000);
}

Test(config, env_bad_value_names_the_variable_and_applies_nothing)
{
	cr_assert_eq(setenv("WANDB_ENTITY", "ml-team", 1), 0);
	cr_assert_eq(setenv("WBSCHED_BUDGET_MS", "soon", 1), 0);
	assert_error(wbs_config_load_env(&cfg, &err), -EINVAL,
		     "WBSCHED_BUDGET_MS: invalid value 'soon' for 'budget_ms': " NUMBER_1_3600000);
	assert_defaults(&cfg);
}

Test(config, env_bad_wandb_value_names_the_variable)
{
	cr_assert_eq(setenv("WANDB_BASE_URL", "api.wandb.ai", 1), 0);
	assert_error(wbs_config_load_env(&cfg, &err), -EINVAL,
		     "WANDB_BASE_URL: invalid value 'api.wandb.ai' for 'base_url': " URL_EXPECTED);
}

Test(config, args_set_keys)
{
	char a0[] = "entity=ml-team", a1[] = "budget_ms=5000", a2[] = "base_url=http://h:1/";
	char *argv[] = { a0, a1, a2 };

	cr_assert_eq(wbs_config_load_args(&cfg, 3, argv, &err), 0, "%s", err.msg);
	cr_assert_str_eq(cfg.entity, "ml-team");
	cr_assert_eq(cfg.budget_ms, 5000);
	cr_assert_str_eq(cfg.base_url, "http://h:1");
}

Test(config, args_with_no_words_change_nothing)
{
	cr_assert_eq(wbs_config_load_args(&cfg, 0, NULL, &err), 0, "%s", err.msg);
	assert_defaults(&cfg);
}

Test(config, args_word_without_equals_is_refused)
{
	char a0[] = "entity=ml-team", a1[] = "verbose";
	char *argv[] = { a0, a1 };

	assert_error(wbs_config_load_args(&cfg, 2, argv, &err), -EINVAL,
		     "invalid argument 'verbose': expected key=value");
	assert_defaults(&cfg);
}

Test(config, args_config_is_loaded_first_wherever_it_stands)
{
	char a0[] = "budget_ms=7", a1[600];
	char *argv[] = { a0, a1 };

	(void)snprintf(a1, sizeof(a1), "config=%s", fixture("good.yaml"));
	cr_assert_eq(wbs_config_load_args(&cfg, 2, argv, &err), 0, "%s", err.msg);
	cr_assert_eq(cfg.budget_ms, 7);          /* the argument overrides the file */
	cr_assert_str_eq(cfg.entity, "ml-team"); /* the rest comes from the file */
}

Test(config, args_config_given_twice_is_refused)
{
	char a0[] = "config=/a.yaml", a1[] = "config=/b.yaml";
	char *argv[] = { a0, a1 };

	assert_error(wbs_config_load_args(&cfg, 2, argv, &err), -EINVAL,
		     "argument 2: 'config' is given twice");
}

Test(config, args_bad_value_names_the_argument_and_applies_nothing)
{
	char a0[600], a1[] = "entity=ml team";
	char *argv[] = { a0, a1 };

	(void)snprintf(a0, sizeof(a0), "config=%s", fixture("good.yaml"));
	assert_error(wbs_config_load_args(&cfg, 2, argv, &err), -EINVAL,
		     "argument 2: invalid value 'ml team' for 'entity': " NAME_EXPECTED);
	assert_defaults(&cfg);
}

Test(config, args_bad_config_file_is_reported_as_the_file)
{
	char a0[] = "entity=ml-team", a1[600];
	char *argv[] = { a0, a1 };
	const char *path = fixture("unknown_key.yaml");

	(void)snprintf(a1, sizeof(a1), "config=%s", path);
	assert_error(wbs_config_load_args(&cfg, 2, argv, &err), -EINVAL,
		     "%s:2: unknown setting 'endpont'", path);
	assert_defaults(&cfg);
}

/* The hook's order: file, then environment, then --set words. */
Test(config, args_beat_env_which_beats_the_file)
{
	char a0[] = "budget_ms=300";
	char *argv[] = { a0 };

	cr_assert_eq(wbs_config_load_file(&cfg, fixture("good.yaml"), &err), 0, "%s", err.msg);
	cr_assert_eq(setenv("WBSCHED_BUDGET_MS", "200", 1), 0);
	cr_assert_eq(setenv("WANDB_ENTITY", "env-team", 1), 0);
	cr_assert_eq(wbs_config_load_env(&cfg, &err), 0, "%s", err.msg);
	cr_assert_eq(wbs_config_load_args(&cfg, 1, argv, &err), 0, "%s", err.msg);
	cr_assert_eq(cfg.budget_ms, 300);
	cr_assert_str_eq(cfg.entity, "env-team");
	cr_assert_str_eq(cfg.project, "resnet-sweeps");
}
