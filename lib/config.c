#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <yaml.h>

#include "wbsched/cleanup.h"
#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/log.h"

#define MAX_FILE_SIZE (1024 * 1024)
#define MAX_VALUE_LEN 4096 /* PATH_MAX; nothing legitimate is longer */
#define MAX_NAME_LEN  128

enum key_kind {
	KIND_URL,
	KIND_NAME, /* W&B entity or project name */
	KIND_PATH,
	KIND_NUMBER,
	KIND_LOG_LEVEL,
	KIND_ENABLE,
	KIND_TEXT, /* free text on one line (tags) */
};

struct key_def {
	const char *name;
	enum key_kind kind;
	size_t offset; /* of the member in struct wbs_config */
	long min, max; /* KIND_NUMBER only */
};

#define MEMBER(m) offsetof(struct wbs_config, m)

static const struct key_def key_defs[] = {
	{ "base_url", KIND_URL, MEMBER(base_url), 0, 0 },
	{ "entity", KIND_NAME, MEMBER(entity), 0, 0 },
	{ "project", KIND_NAME, MEMBER(project), 0, 0 },
	{ "api_key_file", KIND_PATH, MEMBER(api_key_file), 0, 0 },
	{ "spool_dir", KIND_PATH, MEMBER(spool_dir), 0, 0 },
	{ "ca_file", KIND_PATH, MEMBER(ca_file), 0, 0 },
	{ "connect_timeout_ms", KIND_NUMBER, MEMBER(connect_timeout_ms), 1, 600000 },
	{ "request_timeout_ms", KIND_NUMBER, MEMBER(request_timeout_ms), 1, 600000 },
	{ "budget_ms", KIND_NUMBER, MEMBER(budget_ms), 1, 3600000 },
	{ "max_retries", KIND_NUMBER, MEMBER(max_retries), 0, 100 },
	{ "log_level", KIND_LOG_LEVEL, MEMBER(log_level), 0, 0 },
	{ "spool_max_bytes", KIND_NUMBER, MEMBER(spool_max_bytes), 4096, 1073741824L },
	{ "breaker_cooldown_ms", KIND_NUMBER, MEMBER(breaker_cooldown_ms), 0, 3600000 },
	{ "flush_budget_ms", KIND_NUMBER, MEMBER(flush_budget_ms), 0, 3600000 },
	{ "enable", KIND_ENABLE, MEMBER(enable), 0, 0 },
	{ "tags", KIND_TEXT, MEMBER(tags), 0, 0 },
	{ "wbsched_path", KIND_PATH, MEMBER(wbsched_path), 0, 0 },
	{ "after_timeout_ms", KIND_NUMBER, MEMBER(after_timeout_ms), 0, 2592000000L },
};

const char *const wbs_config_keys[] = {
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
	NULL,
};

_Static_assert(ELEMENTSOF(wbs_config_keys) == ELEMENTSOF(key_defs) + 1,
	       "wbs_config_keys and key_defs must list the same keys");

static const struct key_def *find_key(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(key_defs); i++)
		if (strcmp(key_defs[i].name, name) == 0)
			return &key_defs[i];
	return NULL;
}

static bool is_string(const struct key_def *def)
{
	return def->kind == KIND_URL || def->kind == KIND_NAME || def->kind == KIND_PATH ||
	       def->kind == KIND_TEXT;
}

static char **string_member(struct wbs_config *cfg, const struct key_def *def)
{
	return (char **)((char *)cfg + def->offset);
}

static const char *string_value(const struct wbs_config *cfg, const struct key_def *def)
{
	return *(char *const *)((const char *)cfg + def->offset);
}

static long *long_member(struct wbs_config *cfg, const struct key_def *def)
{
	return (long *)((char *)cfg + def->offset);
}

void wbs_config_init(struct wbs_config *cfg)
{
	*cfg = (struct wbs_config){
		.connect_timeout_ms = 1000,
		.request_timeout_ms = 2000,
		.budget_ms = 2000,
		.max_retries = 3,
		.log_level = WBS_LOG_INFO,
		.spool_max_bytes = 16L << 20,
		.breaker_cooldown_ms = 30000,
		.flush_budget_ms = 500,
	};
}

void wbs_config_release(struct wbs_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < ELEMENTSOF(key_defs); i++)
		if (is_string(&key_defs[i]))
			free(*string_member(cfg, &key_defs[i]));
	wbs_config_init(cfg);
}

/* A deep copy, so that a loader can work on it and swap it in only on success. */
static int config_dup(const struct wbs_config *src, struct wbs_config *ret, struct wbs_error *err)
{
	struct wbs_config copy = *src;

	/* First drop the borrowed pointers, so a failure below frees only copies. */
	for (size_t i = 0; i < ELEMENTSOF(key_defs); i++)
		if (is_string(&key_defs[i]))
			*string_member(&copy, &key_defs[i]) = NULL;
	for (size_t i = 0; i < ELEMENTSOF(key_defs); i++) {
		const char *s = is_string(&key_defs[i]) ? string_value(src, &key_defs[i]) : NULL;
		char **member = string_member(&copy, &key_defs[i]);

		if (!s)
			continue;
		*member = strdup(s);
		if (!*member) {
			wbs_config_release(&copy);
			return wbs_error_set(err, -ENOMEM, "out of memory");
		}
	}
	*ret = copy;
	return 0;
}

/* Replaces *cfg with *loaded, taking its strings; *loaded is left empty. */
static void config_swap_in(struct wbs_config *cfg, struct wbs_config *loaded)
{
	wbs_config_release(cfg);
	*cfg = *loaded;
	wbs_config_init(loaded);
}

/* Digits only: no sign, no spaces, no hex, no trailing junk. */
static int parse_long(const char *s, long min, long max, long *ret)
{
	char *end;
	long v;

	if (!*s)
		return -EINVAL;
	for (const char *p = s; *p; p++)
		if (*p < '0' || *p > '9')
			return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end || v < min || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

static bool is_valid_name(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > MAX_NAME_LEN)
		return false;
	for (; *s; s++)
		if (*s == '/' || isspace((unsigned char)*s))
			return false;
	return true;
}

enum url_check {
	URL_OK,
	URL_BAD,
	URL_USERINFO, /* user:password@ must not be echoed back */
};

/*
 * http(s)://host[:port][/path] with a non-empty host, a port from 1 to 65535
 * and no query or fragment (the client appends "/graphql").
 */
static enum url_check check_url(const char *s)
{
	const char *host, *end, *p;
	char port[8] = { 0 };
	long unused;

	if (strncasecmp(s, "http://", 7) == 0)
		host = s + 7;
	else if (strncasecmp(s, "https://", 8) == 0)
		host = s + 8;
	else
		return URL_BAD;
	for (p = s; *p; p++)
		if (isspace((unsigned char)*p) || *p == '?' || *p == '#')
			return URL_BAD;
	end = host + strcspn(host, "/");
	if (memchr(host, '@', (size_t)(end - host)))
		return URL_USERINFO;

	if (*host == '[') { /* IPv6 literal */
		p = memchr(host, ']', (size_t)(end - host));
		if (!p || p == host + 1)
			return URL_BAD;
		p++;
	} else {
		p = host + strcspn(host, ":/");
		if (p == host || memchr(host, '[', (size_t)(p - host)) ||
		    memchr(host, ']', (size_t)(p - host)))
			return URL_BAD;
	}
	if (p == end)
		return URL_OK;
	if (*p != ':' || end - p < 2 || end - p > 6)
		return URL_BAD;
	memcpy(port, p + 1, (size_t)(end - p - 1));
	return parse_long(port, 1, 65535, &unused) == 0 ? URL_OK : URL_BAD;
}

static bool has_control_chars(const char *s)
{
	for (; *s; s++)
		if (iscntrl((unsigned char)*s))
			return true;
	return false;
}

static int set_string(char **member, const char *value, size_t len, struct wbs_error *err)
{
	char *copy = strndup(value, len);

	if (!copy)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	free(*member);
	*member = copy;
	return 0;
}

int wbs_config_set(struct wbs_config *cfg, const char *key, const char *value, const char *where,
		   struct wbs_error *err)
{
	const char *sep = where ? ": " : "";
	const struct key_def *def;
	enum url_check url;
	size_t len;
	long number;
	int level;

	if (!where)
		where = "";
	if (!cfg || !key)
		return wbs_error_set(err, -EINVAL, "%s%sno setting given", where, sep);
	def = find_key(key);
	if (!def)
		return wbs_error_set(err, -EINVAL, "%s%sunknown setting '%s'", where, sep, key);
	if (!value)
		return wbs_error_set(err, -EINVAL, "%s%sno value for '%s'", where, sep, key);
	if (strlen(value) > MAX_VALUE_LEN)
		return wbs_error_set(err, -EINVAL,
				     "%s%svalue for '%s' is too long (at most %d bytes)", where,
				     sep, key, MAX_VALUE_LEN);
	/* The value is quoted in messages below; keep them one line. */
	if (has_control_chars(value))
		return wbs_error_set(err, -EINVAL,
				     "%s%sinvalid value for '%s': contains control characters",
				     where, sep, key);

	switch (def->kind) {
	case KIND_URL:
		url = check_url(value);
		if (url == URL_USERINFO)
			return wbs_error_set(
				err, -EINVAL,
				"%s%sinvalid value for '%s': credentials do not belong in the URL (use api_key_file or netrc)",
				where, sep, key);
		if (url == URL_BAD)
			return wbs_error_set(
				err, -EINVAL,
				"%s%sinvalid value '%s' for '%s': expected an http:// or https:// URL with a host",
				where, sep, value, key);
		/* check_url() guarantees a host, so this stops before "//" */
		len = strlen(value);
		while (value[len - 1] == '/')
			len--;
		return set_string(string_member(cfg, def), value, len, err);
	case KIND_NAME:
		if (!is_valid_name(value))
			return wbs_error_set(
				err, -EINVAL,
				"%s%sinvalid value '%s' for '%s': expected a name of 1 to %d characters without '/' or whitespace",
				where, sep, value, key, MAX_NAME_LEN);
		return set_string(string_member(cfg, def), value, strlen(value), err);
	case KIND_PATH:
		if (!*value)
			return wbs_error_set(err, -EINVAL,
					     "%s%sinvalid value '' for '%s': expected a path",
					     where, sep, key);
		return set_string(string_member(cfg, def), value, strlen(value), err);
	case KIND_NUMBER:
		if (parse_long(value, def->min, def->max, &number) < 0)
			return wbs_error_set(
				err, -EINVAL,
				"%s%sinvalid value '%s' for '%s': expected a whole number from %ld to %ld",
				where, sep, value, key, def->min, def->max);
		*long_member(cfg, def) = number;
		return 0;
	case KIND_LOG_LEVEL:
		if (wbs_log_level_from_string(value, &level) < 0)
			return wbs_error_set(
				err, -EINVAL,
				"%s%sinvalid value '%s' for '%s': expected err, warning, notice, info or debug",
				where, sep, value, key);
		cfg->log_level = level;
		return 0;
	case KIND_ENABLE:
		if (strcmp(value, "always") == 0)
			cfg->enable = WBS_ENABLE_ALWAYS;
		else if (strcmp(value, "opt-in") == 0)
			cfg->enable = WBS_ENABLE_OPT_IN;
		else
			return wbs_error_set(
				err, -EINVAL,
				"%s%sinvalid value '%s' for '%s': expected always or opt-in", where,
				sep, value, key);
		return 0;
	case KIND_TEXT:
		return set_string(string_member(cfg, def), value, strlen(value), err);
	}
	return wbs_error_set(err, -EINVAL, "%s%sunknown setting '%s'", where, sep, key);
}

/* Reads at most MAX_FILE_SIZE bytes; the size check is on what is read, not on st_size. */
static int read_config_file(const char *path, char **ret_buf, size_t *ret_len,
			    struct wbs_error *err)
{
	_cleanup_fclose_ FILE *f = NULL;
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	size_t len;

	/* O_NONBLOCK: a FIFO named as the config must not hang (slurmd!); S_ISREG below */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 || !(f = fdopen(fd, "r"))) {
		int e = errno;

		if (fd >= 0)
			(void)close(fd);
		return wbs_error_set(err, -e, "cannot open '%s': %s", path, strerror(e));
	}
	if (fstat(fileno(f), &st) < 0)
		return wbs_error_set(err, -errno, "cannot stat '%s': %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return wbs_error_set(err, -EINVAL, "'%s' is not a regular file", path);

	buf = malloc(MAX_FILE_SIZE + 1);
	if (!buf)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	len = fread(buf, 1, MAX_FILE_SIZE + 1, f);
	if (ferror(f))
		return wbs_error_set(err, -EIO, "cannot read '%s'", path);
	if (len > MAX_FILE_SIZE)
		return wbs_error_set(err, -EINVAL, "'%s' is larger than 1 MiB", path);
	buf[len] = '\0';
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

static size_t line_at_offset(const char *buf, size_t len, size_t offset)
{
	size_t line = 1;

	for (size_t i = 0; i < offset && i < len; i++)
		if (buf[i] == '\n')
			line++;
	return line;
}

static int yaml_problem(const yaml_parser_t *parser, const char *path, const char *buf, size_t len,
			struct wbs_error *err)
{
	size_t line;

	if (parser->error == YAML_MEMORY_ERROR)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	/* Reader errors (bad UTF-8, ...) carry an offset instead of a mark. */
	if (parser->error == YAML_READER_ERROR)
		line = line_at_offset(buf, len, parser->problem_offset);
	else
		line = parser->problem_mark.line + 1;
	return wbs_error_set(err, -EINVAL, "%s:%zu: %s", path, line,
			     parser->problem ? parser->problem : "invalid YAML");
}

static const char *node_kind(const yaml_node_t *node)
{
	return node->type == YAML_SEQUENCE_NODE ? "a list" : "a mapping";
}

/* "key:", "key: ~" and "key: null" are YAML nulls; "key: ''" is an empty string. */
static bool is_null_scalar(const yaml_node_t *node)
{
	const char *v = (const char *)node->data.scalar.value;

	if (node->tag && strcmp((const char *)node->tag, YAML_NULL_TAG) == 0)
		return true;
	if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
	       strcmp(v, "NULL") == 0;
}

/* Applies the root mapping of @doc to @cfg. */
static int apply_document(struct wbs_config *cfg, yaml_document_t *doc, const char *path,
			  struct wbs_error *err)
{
	yaml_node_t *root = yaml_document_get_root_node(doc);
	yaml_node_pair_t *pair;

	if (!root)
		return 0; /* empty, or only comments */
	if (root->type != YAML_MAPPING_NODE)
		return wbs_error_set(
			err, -EINVAL, "%s:%zu: expected 'setting: value' lines, not %s", path,
			root->start_mark.line + 1,
			root->type == YAML_SCALAR_NODE ? "a single value" : node_kind(root));

	for (pair = root->data.mapping.pairs.start; pair < root->data.mapping.pairs.top; pair++) {
		yaml_node_t *k = yaml_document_get_node(doc, pair->key);
		yaml_node_t *v = yaml_document_get_node(doc, pair->value);
		size_t line = k->start_mark.line + 1;
		const char *key;
		char where[4200];
		int r;

		if (k->type != YAML_SCALAR_NODE)
			return wbs_error_set(err, -EINVAL,
					     "%s:%zu: expected a setting name, not %s", path, line,
					     node_kind(k));
		key = (const char *)k->data.scalar.value;
		if (strlen(key) != k->data.scalar.length)
			return wbs_error_set(err, -EINVAL,
					     "%s:%zu: setting name contains a NUL byte", path,
					     line);
		/*
		 * Every earlier key passed wbs_config_set(), so they are known and
		 * distinct: this loop runs at most ELEMENTSOF(key_defs) times.
		 */
		for (yaml_node_pair_t *prev = root->data.mapping.pairs.start; prev < pair; prev++) {
			yaml_node_t *pk = yaml_document_get_node(doc, prev->key);

			if (strcmp((const char *)pk->data.scalar.value, key) == 0)
				return wbs_error_set(
					err, -EINVAL,
					"%s:%zu: '%s' is set twice (first on line %zu)", path, line,
					key, pk->start_mark.line + 1);
		}
		(void)snprintf(where, sizeof(where), "%s:%zu", path, line);
		/* An unknown key is reported as such, whatever its value. */
		if (!find_key(key))
			return wbs_config_set(cfg, key, NULL, where, err);
		if (v->type != YAML_SCALAR_NODE)
			return wbs_error_set(
				err, -EINVAL,
				"%s:%zu: invalid value for '%s': expected a single value, not %s",
				path, line, key, node_kind(v));
		if (strlen((const char *)v->data.scalar.value) != v->data.scalar.length)
			return wbs_error_set(err, -EINVAL,
					     "%s:%zu: invalid value for '%s': contains a NUL byte",
					     path, line, key);
		r = wbs_config_set(cfg, key,
				   is_null_scalar(v) ? NULL : (const char *)v->data.scalar.value,
				   where, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Parses @buf and applies its one document to @cfg; messages start with "PATH:LINE". */
static int apply_yaml(struct wbs_config *cfg, const char *path, const char *buf, size_t len,
		      struct wbs_error *err)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	int r;

	if (!yaml_parser_initialize(&parser))
		return wbs_error_set(err, -ENOMEM, "out of memory");
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);

	if (!yaml_parser_load(&parser, &doc)) {
		r = yaml_problem(&parser, path, buf, len, err);
		goto out;
	}
	r = apply_document(cfg, &doc, path, err);
	yaml_document_delete(&doc);
	if (r < 0)
		goto out;

	/* A second document would be silently ignored: refuse it. */
	if (!yaml_parser_load(&parser, &doc)) {
		r = yaml_problem(&parser, path, buf, len, err);
		goto out;
	}
	if (yaml_document_get_root_node(&doc))
		r = wbs_error_set(err, -EINVAL, "%s:%zu: expected one YAML document, found another",
				  path, doc.start_mark.line + 1);
	yaml_document_delete(&doc);
out:
	yaml_parser_delete(&parser);
	return r;
}

int wbs_config_load_file(struct wbs_config *cfg, const char *path, struct wbs_error *err)
{
	_cleanup_free_ char *buf = NULL;
	struct wbs_config tmp;
	size_t len = 0;
	int r;

	if (!cfg || !path)
		return wbs_error_set(err, -EINVAL, "no configuration file given");
	r = read_config_file(path, &buf, &len, err);
	if (r < 0)
		return r;
	r = config_dup(cfg, &tmp, err);
	if (r < 0)
		return r;
	r = apply_yaml(&tmp, path, buf, len, err);
	if (r < 0) {
		wbs_config_release(&tmp);
		return r;
	}
	config_swap_in(cfg, &tmp);
	wbs_debug("loaded configuration from '%s'", path);
	return 0;
}

static const struct {
	const char *var;
	const char *key;
} wandb_env[] = {
	{ "WANDB_BASE_URL", "base_url" },
	{ "WANDB_ENTITY", "entity" },
	{ "WANDB_PROJECT", "project" },
};

/* WBSCHED_ + the key in upper case, e.g. WBSCHED_BUDGET_MS. */
static void env_name(const char *key, char *buf, size_t size)
{
	size_t n = (size_t)snprintf(buf, size, "WBSCHED_%s", key);

	for (size_t i = 0; i < n && i < size; i++)
		buf[i] = (char)toupper((unsigned char)buf[i]);
}

int wbs_config_load_env(struct wbs_config *cfg, struct wbs_error *err)
{
	struct wbs_config tmp;
	int r;

	if (!cfg)
		return wbs_error_set(err, -EINVAL, "no configuration given");
	r = config_dup(cfg, &tmp, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ELEMENTSOF(wandb_env); i++) {
		const char *v = getenv(wandb_env[i].var);

		if (v && *v) {
			r = wbs_config_set(&tmp, wandb_env[i].key, v, wandb_env[i].var, err);
			if (r < 0)
				goto out;
		}
	}
	/* Applied second, so WBSCHED_* wins over the SDK's variables. */
	for (size_t i = 0; i < ELEMENTSOF(key_defs); i++) {
		char var[64];
		const char *v;

		env_name(key_defs[i].name, var, sizeof(var));
		v = getenv(var);
		if (v && *v) {
			r = wbs_config_set(&tmp, key_defs[i].name, v, var, err);
			if (r < 0)
				goto out;
		}
	}
	config_swap_in(cfg, &tmp);
out:
	wbs_config_release(&tmp);
	return r;
}

int wbs_config_load_args(struct wbs_config *cfg, int argc, char *const *argv, struct wbs_error *err)
{
	struct wbs_config tmp;
	const char *file = NULL;
	char where[32];
	int r;

	if (!cfg || argc < 0 || (argc > 0 && !argv))
		return wbs_error_set(err, -EINVAL, "no configuration given");

	/* First pass: check the shape of every word and find config=FILE. */
	for (int i = 0; i < argc; i++) {
		if (!strchr(argv[i], '='))
			return wbs_error_set(err, -EINVAL,
					     "invalid argument '%s': expected key=value", argv[i]);
		if (strncmp(argv[i], "config=", 7) != 0)
			continue;
		if (file)
			return wbs_error_set(err, -EINVAL, "argument %d: 'config' is given twice",
					     i + 1);
		file = argv[i] + 7;
	}

	r = config_dup(cfg, &tmp, err);
	if (r < 0)
		return r;
	if (file) {
		r = wbs_config_load_file(&tmp, file, err);
		if (r < 0)
			goto out;
	}
	for (int i = 0; i < argc; i++) {
		const char *eq = strchr(argv[i], '=');
		char *key;

		if (strncmp(argv[i], "config=", 7) == 0)
			continue;
		key = strndup(argv[i], (size_t)(eq - argv[i]));
		if (!key) {
			r = wbs_error_set(err, -ENOMEM, "out of memory");
			goto out;
		}
		(void)snprintf(where, sizeof(where), "argument %d", i + 1);
		r = wbs_config_set(&tmp, key, eq + 1, where, err);
		free(key);
		if (r < 0)
			goto out;
	}
	config_swap_in(cfg, &tmp);
out:
	wbs_config_release(&tmp);
	return r;
}

const char *wbs_config_base_url(const struct wbs_config *cfg)
{
	return cfg && cfg->base_url ? cfg->base_url : WBS_DEFAULT_BASE_URL;
}

const char *wbs_config_project(const struct wbs_config *cfg)
{
	return cfg && cfg->project ? cfg->project : "uncategorized";
}

const char *wbs_config_spool_dir(const struct wbs_config *cfg)
{
	return cfg && cfg->spool_dir ? cfg->spool_dir : WBS_DEFAULT_SPOOL_DIR;
}

const char *wbs_config_wbsched_path(const struct wbs_config *cfg)
{
	return cfg && cfg->wbsched_path ? cfg->wbsched_path : WBS_DEFAULT_WBSCHED_PATH;
}
