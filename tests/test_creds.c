#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "wbsched/cleanup.h"
#include "wbsched/config.h"
#include "wbsched/creds.h"
#include "wbsched/error.h"

/* Made-up keys, distinct per source so a test can tell which one was used. */
#define ENV_KEY   "env-key-for-tests-only-aaaaaaaaaaaaaaaaaaaaaaaaa"
#define FILE_KEY  "file-key-for-tests-only-bbbbbbbbbbbbbbbbbbbbbbbb"
#define NETRC_KEY "netrc-key-for-tests-only-cccccccccccccccccccccccc"

static struct wbs_config cfg;
static struct wbs_error err;
static char *key;
static char tmpdir[] = "/tmp/wbs-test-creds-XXXXXX";

static void setup(void)
{
	(void)unsetenv("WANDB_API_KEY");
	(void)unsetenv("NETRC");
	cr_assert_not_null(mkdtemp(tmpdir));
	/* ~/.netrc is the test's own directory, never the real one */
	cr_assert_eq(setenv("HOME", tmpdir, 1), 0);
	wbs_config_init(&cfg);
	err = (struct wbs_error){ 0 };
	key = NULL;
}

static void teardown(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *e;

	wbs_creds_free_key(key);
	wbs_config_release(&cfg);
	if (!d)
		return;
	while ((e = readdir(d))) {
		char path[512];

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		(void)snprintf(path, sizeof(path), "%s/%s", tmpdir, e->d_name);
		if (remove(path) < 0) /* a directory made by a test */
			(void)rmdir(path);
	}
	(void)closedir(d);
	(void)rmdir(tmpdir);
}

TestSuite(creds, .init = setup, .fini = teardown, .timeout = 10);

#define PATH_SIZE 512

/* Creates tmpdir/@name holding @text with @mode; the path goes to @path. */
static void write_file(char *path, const char *name, const char *text, mode_t mode)
{
	FILE *f;

	(void)snprintf(path, PATH_SIZE, "%s/%s", tmpdir, name);
	f = fopen(path, "we");
	cr_assert_not_null(f);
	cr_assert_eq(fputs(text, f) >= 0, true);
	cr_assert_eq(fclose(f), 0);
	cr_assert_eq(chmod(path, mode), 0);
}

static void use_key_file(const char *text, mode_t mode, char *path)
{
	write_file(path, "api-key", text, mode);
	cr_assert_eq(wbs_config_set(&cfg, "api_key_file", path, NULL, &err), 0, "%s", err.msg);
}

static void write_home_netrc(const char *text)
{
	char path[PATH_SIZE];

	write_file(path, ".netrc", text, 0600);
}

static void assert_key(int r, const char *want)
{
	cr_assert_eq(r, 0, "returned %d (%s)", r, err.msg);
	cr_assert_not_null(key);
	cr_assert_str_eq(key, want);
}

static void assert_error(int r, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void assert_error(int r, int code, const char *fmt, ...)
{
	char want[sizeof(err.msg)];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(want, sizeof(want), fmt, ap);
	va_end(ap);
	cr_assert_eq(r, code, "returned %d, want %d (%s)", r, code, err.msg);
	cr_assert_str_eq(err.msg, want);
	cr_assert_null(key, "*ret_key must not be set on failure");
}

Test(creds, env_key_wins_over_file_and_netrc)
{
	char path[PATH_SIZE];

	use_key_file(FILE_KEY "\n", 0600, path);
	write_home_netrc("machine api.wandb.ai password " NETRC_KEY "\n");
	cr_assert_eq(setenv("WANDB_API_KEY", ENV_KEY, 1), 0);
	assert_key(wbs_creds_load(&cfg, &key, &err), ENV_KEY);
}

Test(creds, empty_env_key_counts_as_unset)
{
	char path[PATH_SIZE];

	use_key_file(FILE_KEY "\n", 0600, path);
	cr_assert_eq(setenv("WANDB_API_KEY", "", 1), 0);
	assert_key(wbs_creds_load(&cfg, &key, &err), FILE_KEY);
}

Test(creds, key_file_wins_over_netrc)
{
	char path[PATH_SIZE];

	use_key_file(FILE_KEY "\n", 0600, path);
	write_home_netrc("machine api.wandb.ai password " NETRC_KEY "\n");
	assert_key(wbs_creds_load(&cfg, &key, &err), FILE_KEY);
}

Test(creds, home_netrc_is_used_when_nothing_else_is_set)
{
	write_home_netrc("machine api.wandb.ai login user password " NETRC_KEY "\n");
	assert_key(wbs_creds_load(&cfg, &key, &err), NETRC_KEY);
}

Test(creds, creds_work_without_a_config)
{
	write_home_netrc("machine api.wandb.ai password " NETRC_KEY "\n");
	assert_key(wbs_creds_load(NULL, &key, &err), NETRC_KEY);
}

Test(creds, NETRC_variable_names_the_netrc_file)
{
	char path[PATH_SIZE];

	write_home_netrc("machine api.wandb.ai password not-this-one\n");
	write_file(path, "other-netrc", "machine api.wandb.ai password " NETRC_KEY "\n", 0600);
	cr_assert_eq(setenv("NETRC", path, 1), 0);
	assert_key(wbs_creds_load(&cfg, &key, &err), NETRC_KEY);
}

Test(creds, netrc_machine_is_the_base_url_host_and_port)
{
	write_home_netrc("machine localhost password wrong-port\n"
			 "machine localhost:8080 password " NETRC_KEY "\n");
	cr_assert_eq(wbs_config_set(&cfg, "base_url", "http://localhost:8080/", NULL, &err), 0);
	assert_key(wbs_creds_load(&cfg, &key, &err), NETRC_KEY);
}

Test(creds, no_key_anywhere_names_the_sources_and_the_machine)
{
	cr_assert_eq(wbs_config_set(&cfg, "base_url", "http://localhost:8080", NULL, &err), 0);
	assert_error(
		wbs_creds_load(&cfg, &key, &err), -ENOENT,
		"no W&B API key: set WANDB_API_KEY, api_key_file, or add 'machine localhost:8080' to ~/.netrc");
}

Test(creds, netrc_without_our_machine_gives_enoent)
{
	write_home_netrc("machine other.example.com password " NETRC_KEY "\n");
	assert_error(
		wbs_creds_load(&cfg, &key, &err), -ENOENT,
		"no W&B API key: set WANDB_API_KEY, api_key_file, or add 'machine api.wandb.ai' to ~/.netrc");
}

Test(creds, missing_NETRC_file_is_named_in_the_message)
{
	char path[PATH_SIZE];

	(void)snprintf(path, sizeof(path), "%s/absent", tmpdir);
	cr_assert_eq(setenv("NETRC", path, 1), 0);
	assert_error(
		wbs_creds_load(&cfg, &key, &err), -ENOENT,
		"no W&B API key: set WANDB_API_KEY, api_key_file, or add 'machine api.wandb.ai' to %s",
		path);
}

Test(creds, truncated_netrc_is_an_error_with_its_line)
{
	char path[PATH_SIZE];

	write_file(path, ".netrc", "machine api.wandb.ai\n  login user\n  password", 0600);
	assert_error(wbs_creds_load(&cfg, &key, &err), -EINVAL,
		     "%s: line 3: no value after 'password'", path);
}

Test(creds, key_file_readable_by_others_is_refused)
{
	char path[PATH_SIZE];

	use_key_file(FILE_KEY "\n", 0644, path);
	assert_error(wbs_creds_load(&cfg, &key, &err), -EACCES,
		     "refusing '%s': readable by group or others (chmod 600 it)", path);
}

Test(creds, key_file_readable_by_group_is_refused)
{
	char path[PATH_SIZE];

	use_key_file(FILE_KEY "\n", 0640, path);
	assert_error(wbs_creds_load(&cfg, &key, &err), -EACCES,
		     "refusing '%s': readable by group or others (chmod 600 it)", path);
}

Test(creds, key_file_mode_0600_is_accepted)
{
	char path[PATH_SIZE];

	use_key_file(FILE_KEY "\n", 0600, path);
	assert_key(wbs_creds_load(&cfg, &key, &err), FILE_KEY);
}

Test(creds, key_file_mode_0400_is_accepted)
{
	char path[PATH_SIZE];

	use_key_file(FILE_KEY, 0400, path);
	assert_key(wbs_creds_load(&cfg, &key, &err), FILE_KEY);
}

Test(creds, key_file_owned_by_another_user_is_refused)
{
	char path[PATH_SIZE];

	if (geteuid() != 0)
		cr_skip_test("needs root to give the file away");
	use_key_file(FILE_KEY "\n", 0600, path);
	cr_assert_eq(chown(path, 65534, 65534), 0);
	assert_error(wbs_creds_load(&cfg, &key, &err), -EACCES,
		     "refusing '%s': owned by uid 65534, not by you or root", path);
}

Test(creds, key_file_through_a_symlink_is_accepted)
{
	char path[PATH_SIZE], link[PATH_SIZE];

	write_file(path, "real-key", FILE_KEY "\n", 0600);
	(void)snprintf(link, sizeof(link), "%s/linked-key", tmpdir);
	cr_assert_eq(symlink(path, link), 0);
	cr_assert_eq(wbs_config_set(&cfg, "api_key_file", link, NULL, &err), 0);
	assert_key(wbs_creds_load(&cfg, &key, &err), FILE_KEY);
}

Test(creds, key_file_key_is_the_trimmed_first_line)
{
	char path[PATH_SIZE];

	use_key_file("  \t" FILE_KEY " \r\nsecond line\n", 0600, path);
	assert_key(wbs_creds_load(&cfg, &key, &err), FILE_KEY);
}

Test(creds, empty_key_file_is_refused)
{
	char path[PATH_SIZE];

	use_key_file("", 0600, path);
	assert_error(wbs_creds_load(&cfg, &key, &err), -EINVAL, "the API key from '%s' is empty",
		     path);
}

Test(creds, key_file_with_a_blank_first_line_is_refused)
{
	char path[PATH_SIZE];

	use_key_file(" \n" FILE_KEY "\n", 0600, path);
	assert_error(wbs_creds_load(&cfg, &key, &err), -EINVAL, "the API key from '%s' is empty",
		     path);
}

Test(creds, missing_key_file_gives_enoent)
{
	char path[PATH_SIZE];

	(void)snprintf(path, sizeof(path), "%s/absent", tmpdir);
	cr_assert_eq(wbs_config_set(&cfg, "api_key_file", path, NULL, &err), 0);
	write_home_netrc("machine api.wandb.ai password " NETRC_KEY "\n");
	assert_error(wbs_creds_load(&cfg, &key, &err), -ENOENT,
		     "cannot open '%s': No such file or directory", path);
}

Test(creds, key_file_that_is_a_directory_is_refused)
{
	char path[PATH_SIZE];

	(void)snprintf(path, sizeof(path), "%s/dir", tmpdir);
	cr_assert_eq(mkdir(path, 0700), 0);
	cr_assert_eq(wbs_config_set(&cfg, "api_key_file", path, NULL, &err), 0);
	assert_error(wbs_creds_load(&cfg, &key, &err), -EACCES, "refusing '%s': not a regular file",
		     path);
}

Test(creds, key_file_over_64_KiB_is_refused)
{
	_cleanup_free_ char *text = malloc(64 * 1024 + 2);
	char path[PATH_SIZE];

	cr_assert_not_null(text);
	memset(text, 'k', 64 * 1024 + 1);
	text[64 * 1024 + 1] = '\0';
	use_key_file(text, 0600, path);
	assert_error(wbs_creds_load(&cfg, &key, &err), -EINVAL, "refusing '%s': larger than 64 KiB",
		     path);
}

Test(creds, key_with_inner_whitespace_is_refused)
{
	cr_assert_eq(setenv("WANDB_API_KEY", "two words", 1), 0);
	assert_error(wbs_creds_load(&cfg, &key, &err), -EINVAL,
		     "the API key from WANDB_API_KEY contains whitespace or control characters");
}

Test(creds, netrc_password_is_checked_like_any_key)
{
	char path[PATH_SIZE];

	write_file(path, ".netrc", "machine api.wandb.ai password \"a\tb\"\n", 0600);
	assert_error(wbs_creds_load(&cfg, &key, &err), -EINVAL,
		     "the API key from '%s' contains whitespace or control characters", path);
}

Test(creds, free_key_accepts_null)
{
	char *k = strdup("k");

	cr_assert_not_null(k);
	wbs_creds_free_key(k);
	wbs_creds_free_key(NULL);
}

/* Each failure below has a secret at hand; none may put it in err->msg. */
#define SECRET "s3cr3t-do-not-print"

struct leak_case {
	const char *env_key;
	const char *key_file; /* contents; NULL: no api_key_file */
	mode_t key_file_mode;
	const char *netrc;
	int code;
};

ParameterizedTestParameters(creds, key_never_appears_in_the_message)
{
	static struct leak_case cases[] = {
		{ .env_key = SECRET " x", .code = -EINVAL },
		{ .env_key = SECRET "\x01", .code = -EINVAL },
		{ .key_file = SECRET "\n", .key_file_mode = 0644, .code = -EACCES },
		{ .key_file = SECRET " inner\n", .key_file_mode = 0600, .code = -EINVAL },
		{ .key_file = SECRET "\x7f\n", .key_file_mode = 0600, .code = -EINVAL },
		{ .netrc = "machine api.wandb.ai password \"" SECRET " x\"", .code = -EINVAL },
		{ .netrc = "machine api.wandb.ai password \"" SECRET, .code = -EINVAL },
		{ .netrc = "default password " SECRET " login", .code = -EINVAL },
		{ .netrc = "machine " SECRET, .code = -ENOENT },
	};

	return cr_make_param_array(struct leak_case, cases, ELEMENTSOF(cases));
}

ParameterizedTest(struct leak_case *c, creds, key_never_appears_in_the_message)
{
	char path[PATH_SIZE];

	if (c->env_key)
		cr_assert_eq(setenv("WANDB_API_KEY", c->env_key, 1), 0);
	if (c->key_file)
		use_key_file(c->key_file, c->key_file_mode, path);
	if (c->netrc)
		write_home_netrc(c->netrc);
	cr_assert_eq(wbs_creds_load(&cfg, &key, &err), c->code, "%s", err.msg);
	cr_assert_neq(err.msg[0], '\0');
	cr_assert_null(strstr(err.msg, "s3cr3t"), "%s", err.msg);
	cr_assert_null(key);
}

struct netrc_case {
	const char *text;
	size_t len; /* 0: strlen(text) */
	const char *machine;
	int code;
	const char *want; /* the password, or the message when code < 0 */
};

ParameterizedTestParameters(creds, netrc_find)
{
	static struct netrc_case cases[] = {
		/* found */
		{ "machine api.wandb.ai login user password KEY1\n", 0, "api.wandb.ai", 0, "KEY1" },
		{ "machine api.wandb.ai\n  login user\n  password KEY1\n", 0, "api.wandb.ai", 0,
		  "KEY1" },
		{ "machine api.wandb.ai\r\npassword KEY1\r\n", 0, "api.wandb.ai", 0, "KEY1" },
		{ "machine other password X\nmachine api.wandb.ai password KEY1", 0, "api.wandb.ai",
		  0, "KEY1" },
		{ "machine API.WandB.ai password KEY1", 0, "api.wandb.ai", 0, "KEY1" },
		{ "machine api.wandb.ai port 443 account acct password KEY1", 0, "api.wandb.ai", 0,
		  "KEY1" },
		{ "machine localhost password A\nmachine localhost:8080 password B\n", 0,
		  "localhost:8080", 0, "B" },
		{ "machine \"api.wandb.ai\" password \"a \\\"quoted\\\" key\\\\\"", 0,
		  "api.wandb.ai", 0, "a \"quoted\" key\\" },
		{ "machine api.wandb.ai password ab\\ cd", 0, "api.wandb.ai", 0, "ab cd" },
		{ "machine api.wandb.ai password #hash", 0, "api.wandb.ai", 0, "#hash" },
		{ "# machine api.wandb.ai password COMMENTED\nmachine api.wandb.ai password KEY1 # note\n",
		  0, "api.wandb.ai", 0, "KEY1" },
		/* the first entry for the machine decides, over later ones and over default */
		{ "machine api.wandb.ai password FIRST\nmachine api.wandb.ai password SECOND", 0,
		  "api.wandb.ai", 0, "FIRST" },
		{ "default password DEF\nmachine api.wandb.ai password KEY1\n", 0, "api.wandb.ai",
		  0, "KEY1" },
		{ "machine other password X\ndefault login anonymous password DEF\n", 0,
		  "api.wandb.ai", 0, "DEF" },
		{ "default password D1\ndefault password D2\n", 0, "api.wandb.ai", 0, "D1" },
		{ "machine api.wandb.ai password ONE password TWO", 0, "api.wandb.ai", 0, "ONE" },
		{ "machine api.wandb.ai password KEY1\nmachine", 0, "api.wandb.ai", 0, "KEY1" },
		/* macdef bodies are skipped, up to an empty line */
		{ "macdef init\nmachine api.wandb.ai password EVIL\n\nmachine api.wandb.ai password GOOD\n",
		  0, "api.wandb.ai", 0, "GOOD" },
		{ "macdef init\r\ncd /\r\n\r\nmachine api.wandb.ai password GOOD\r\n", 0,
		  "api.wandb.ai", 0, "GOOD" },
		/* not found */
		{ "machine other password X", 0, "api.wandb.ai", -ENOENT,
		  "no netrc entry for 'api.wandb.ai'" },
		{ "", 0, "api.wandb.ai", -ENOENT, "no netrc entry for 'api.wandb.ai'" },
		{ "machine api.wandb.ai login u\ndefault password DEF\n", 0, "api.wandb.ai",
		  -ENOENT, "no netrc entry for 'api.wandb.ai'" },
		{ "default password DEF\nmachine api.wandb.ai login u\n", 0, "api.wandb.ai",
		  -ENOENT, "no netrc entry for 'api.wandb.ai'" },
		{ "machine api.wandb.ai login u\nmachine api.wandb.ai password LATER", 0,
		  "api.wandb.ai", -ENOENT, "no netrc entry for 'api.wandb.ai'" },
		{ "machine other password x\nmacdef m\nmachine api.wandb.ai password IN-MACRO", 0,
		  "api.wandb.ai", -ENOENT, "no netrc entry for 'api.wandb.ai'" },
		/* malformed */
		{ "machine api.wandb.ai\nlogin user\npassword", 0, "api.wandb.ai", -EINVAL,
		  "line 3: no value after 'password'" },
		{ "machine other password x\n\nmachine", 0, "api.wandb.ai", -EINVAL,
		  "line 3: no value after 'machine'" },
		{ "machine other login", 0, "api.wandb.ai", -EINVAL,
		  "line 1: no value after 'login'" },
		{ "macdef", 0, "api.wandb.ai", -EINVAL, "line 1: no value after 'macdef'" },
		{ "machine api.wandb.ai\npassword \"abc\n\n", 0, "api.wandb.ai", -EINVAL,
		  "line 2: unterminated quoted string" },
		{ "machine x\n\0password y", 21, "api.wandb.ai", -EINVAL,
		  "line 2: unexpected NUL byte" },
	};

	return cr_make_param_array(struct netrc_case, cases, ELEMENTSOF(cases));
}

ParameterizedTest(struct netrc_case *c, creds, netrc_find)
{
	size_t len = c->len ? c->len : strlen(c->text);
	int r = wbs_netrc_find(c->text, len, c->machine, &key, &err);

	if (c->code == 0) {
		assert_key(r, c->want);
		return;
	}
	cr_assert_eq(r, c->code, "returned %d (%s)", r, err.msg);
	cr_assert_str_eq(err.msg, c->want);
	cr_assert_null(key);
}

struct url_case {
	const char *url;
	int code;
	const char *want; /* the machine, or the message when code < 0 */
};

ParameterizedTestParameters(creds, machine_for_url)
{
	static struct url_case cases[] = {
		{ "https://api.wandb.ai", 0, "api.wandb.ai" },
		{ "https://api.wandb.ai/", 0, "api.wandb.ai" },
		{ "http://localhost:8080", 0, "localhost:8080" },
		{ "http://localhost:8080/graphql?x=1", 0, "localhost:8080" },
		{ "https://wandb.example.com?x#y", 0, "wandb.example.com" },
		{ "https://user:pw@wandb.example.com/", 0, "wandb.example.com" },
		{ "http://[::1]:8080/x", 0, "[::1]:8080" },
		{ "http://[::1]", 0, "[::1]" },
		{ "api.wandb.ai", -EINVAL, "invalid base URL: expected scheme://host" },
		{ "://api.wandb.ai", -EINVAL, "invalid base URL: expected scheme://host" },
		{ "https://", -EINVAL, "invalid base URL: no host" },
		{ "https://:8080", -EINVAL, "invalid base URL: no host" },
		{ "http://[]:80", -EINVAL, "invalid base URL: no host" },
		{ "http://[::1", -EINVAL, "invalid base URL: no host" },
		{ "https://host:", -EINVAL, "invalid base URL: bad port" },
		{ "https://host:abc", -EINVAL, "invalid base URL: bad port" },
		{ "http://[::1]x", -EINVAL, "invalid base URL: bad port" },
	};

	return cr_make_param_array(struct url_case, cases, ELEMENTSOF(cases));
}

ParameterizedTest(struct url_case *c, creds, machine_for_url)
{
	char *machine = NULL;
	int r = wbs_netrc_machine_for_url(c->url, &machine, &err);

	if (c->code == 0) {
		cr_assert_eq(r, 0, "%s", err.msg);
		cr_assert_str_eq(machine, c->want);
		free(machine);
		return;
	}
	cr_assert_eq(r, c->code);
	cr_assert_str_eq(err.msg, c->want);
	cr_assert_null(machine);
}
