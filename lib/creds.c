#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wbsched/cleanup.h"
#include "wbsched/config.h"
#include "wbsched/creds.h"
#include "wbsched/error.h"
#include "wbsched/log.h"

#define MAX_KEY_FILE_SIZE (64 * 1024)
#define MAX_NETRC_SIZE    (1024 * 1024)

/*
 * Any buffer that may hold a key is wiped before it is freed, and is never
 * grown with realloc() (which could leave an unwiped copy behind).
 */
static void wipe_free(char *buf, size_t len)
{
	if (!buf)
		return;
	explicit_bzero(buf, len);
	free(buf);
}

void wbs_creds_free_key(char *key)
{
	if (key)
		wipe_free(key, strlen(key));
}

/* Reads all of @fd into a NUL-terminated buffer; -EFBIG past @cap bytes. */
static int read_all(int fd, size_t cap, char **ret_buf, size_t *ret_len)
{
	char *buf = malloc(cap + 1);
	size_t len = 0;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n = read(fd, buf + len, cap + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;

			wipe_free(buf, len);
			return r;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > cap) {
			wipe_free(buf, len);
			return -EFBIG;
		}
	}
	buf[len] = '\0';
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

/* The key ends up in an HTTP header: refuse anything that could split or pad it. */
static int check_key(const char *key, size_t len, const char *source, struct wbs_error *err)
{
	if (len == 0)
		return wbs_error_set(err, -EINVAL, "the API key from %s is empty", source);
	for (size_t i = 0; i < len; i++)
		if (isspace((unsigned char)key[i]) || iscntrl((unsigned char)key[i]))
			return wbs_error_set(
				err, -EINVAL,
				"the API key from %s contains whitespace or control characters",
				source);
	return 0;
}

static int dup_key(const char *key, size_t len, char **ret_key, struct wbs_error *err)
{
	char *copy = malloc(len + 1);

	if (!copy)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	memcpy(copy, key, len);
	copy[len] = '\0';
	*ret_key = copy;
	return 0;
}

/*
 * The key is the first line of @path, without surrounding whitespace.  Symbolic
 * links are followed (Kubernetes Secret volumes are made of them); the checks
 * are on the file actually opened.
 */
static int load_key_file(const char *path, char **ret_key, struct wbs_error *err)
{
	char *buf = NULL, source[300];
	size_t len = 0, start = 0, end;
	const char *nl;
	struct stat st;
	int fd, r;

	/* O_NONBLOCK: a FIFO must not hang us; it is refused below anyway. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return wbs_error_set(err, -errno, "cannot open '%s': %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		r = wbs_error_set(err, -errno, "cannot stat '%s': %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = wbs_error_set(err, -EACCES, "refusing '%s': not a regular file", path);
		goto out;
	}
	if (st.st_mode & 077) {
		r = wbs_error_set(err, -EACCES,
				  "refusing '%s': readable by group or others (chmod 600 it)",
				  path);
		goto out;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		r = wbs_error_set(err, -EACCES,
				  "refusing '%s': owned by uid %u, not by you or root", path,
				  (unsigned)st.st_uid);
		goto out;
	}

	r = read_all(fd, MAX_KEY_FILE_SIZE, &buf, &len);
	if (r == -EFBIG) {
		r = wbs_error_set(err, -EINVAL, "refusing '%s': larger than 64 KiB", path);
		goto out;
	}
	if (r < 0) {
		r = wbs_error_set(err, r, "cannot read '%s': %s", path, strerror(-r));
		goto out;
	}

	nl = memchr(buf, '\n', len);
	end = nl ? (size_t)(nl - buf) : len;
	while (start < end && isspace((unsigned char)buf[start]))
		start++;
	while (end > start && isspace((unsigned char)buf[end - 1]))
		end--;
	(void)snprintf(source, sizeof(source), "'%s'", path);
	r = check_key(buf + start, end - start, source, err);
	if (r < 0)
		goto out;
	r = dup_key(buf + start, end - start, ret_key, err);
out:
	(void)close(fd);
	wipe_free(buf, len);
	return r;
}

/* netrc tokenizer: whitespace-separated words, "quoted" words, \ escapes in both. */
struct lexer {
	const char *p, *end;
	size_t line;     /* of lexer->p */
	char *tok;       /* the last token, unescaped; room for the whole text */
	size_t tok_line; /* where the last token started */
	bool tok_quoted;
};

static void skip_rest_of_line(struct lexer *lx)
{
	while (lx->p < lx->end && *lx->p != '\n')
		lx->p++;
}

/* 1: lx->tok holds the next token, 0: end of text, -EINVAL: unterminated quote. */
static int next_token(struct lexer *lx, struct wbs_error *err)
{
	size_t len = 0;

	while (lx->p < lx->end && isspace((unsigned char)*lx->p)) {
		if (*lx->p == '\n')
			lx->line++;
		lx->p++;
	}
	if (lx->p == lx->end)
		return 0;

	lx->tok_line = lx->line;
	lx->tok_quoted = *lx->p == '"';
	if (lx->tok_quoted)
		lx->p++;
	for (;;) {
		char c;

		if (lx->p == lx->end) {
			if (lx->tok_quoted)
				return wbs_error_set(err, -EINVAL,
						     "line %zu: unterminated quoted string",
						     lx->tok_line);
			break;
		}
		c = *lx->p;
		if (lx->tok_quoted ? c == '"' : isspace((unsigned char)c) != 0)
			break;
		lx->p++;
		if (c == '\\' && lx->p < lx->end)
			c = *lx->p++;
		if (c == '\n')
			lx->line++;
		lx->tok[len++] = c;
	}
	if (lx->tok_quoted)
		lx->p++; /* the closing quote */
	lx->tok[len] = '\0';
	return 1;
}

/* Reads the value that must follow @keyword. */
static int need_value(struct lexer *lx, const char *keyword, struct wbs_error *err)
{
	size_t line = lx->tok_line;
	int r = next_token(lx, err);

	if (r == 0)
		return wbs_error_set(err, -EINVAL, "line %zu: no value after '%s'", line, keyword);
	return r < 0 ? r : 0;
}

/* A macdef body runs from the next line up to an empty line (or the end). */
static void skip_macdef_body(struct lexer *lx)
{
	skip_rest_of_line(lx);
	while (lx->p < lx->end) {
		const char *start = ++lx->p; /* past the '\n' */
		size_t n;

		lx->line++;
		skip_rest_of_line(lx);
		n = (size_t)(lx->p - start);
		if (n == 0 || (n == 1 && *start == '\r'))
			break;
	}
}

enum keyword {
	KW_NONE, /* not a keyword: ignored, as curl does */
	KW_MACHINE,
	KW_DEFAULT,
	KW_LOGIN,
	KW_PASSWORD,
	KW_ACCOUNT,
	KW_PORT,
	KW_MACDEF,
};

static const char *const keywords[] = {
	[KW_MACHINE] = "machine",   [KW_DEFAULT] = "default", [KW_LOGIN] = "login",
	[KW_PASSWORD] = "password", [KW_ACCOUNT] = "account", [KW_PORT] = "port",
	[KW_MACDEF] = "macdef",
};

static enum keyword keyword(const char *tok)
{
	for (size_t i = KW_MACHINE; i < ELEMENTSOF(keywords); i++)
		if (strcmp(tok, keywords[i]) == 0)
			return (enum keyword)i;
	return KW_NONE;
}

enum entry {
	ENTRY_NONE,
	ENTRY_OTHER, /* a machine that is not ours, or a second default */
	ENTRY_MATCH,
	ENTRY_DEFAULT,
};

int wbs_netrc_find(const char *text, size_t len, const char *machine, char **ret_password,
		   struct wbs_error *err)
{
	struct lexer lx = { 0 };
	char *match_pw = NULL, *default_pw = NULL, **found;
	enum entry entry = ENTRY_NONE;
	bool matched = false, have_default = false;
	const char *nul;
	int r;

	if ((!text && len > 0) || !machine || !ret_password)
		return wbs_error_set(err, -EINVAL, "no netrc text or machine given");
	/* Tokens are C strings: a NUL byte would silently cut one short. */
	nul = len ? memchr(text, '\0', len) : NULL;
	if (nul) {
		size_t line = 1;

		for (const char *p = text; p < nul; p++)
			line += *p == '\n';
		return wbs_error_set(err, -EINVAL, "line %zu: unexpected NUL byte", line);
	}
	lx = (struct lexer){ .p = text, .end = text + len, .line = 1, .tok = malloc(len + 1) };
	if (!lx.tok)
		return wbs_error_set(err, -ENOMEM, "out of memory");

	for (;;) {
		enum keyword kw;
		char **slot;

		r = next_token(&lx, err);
		if (r <= 0)
			break;
		/* A '#' word where a keyword is expected starts a comment. */
		if (!lx.tok_quoted && lx.tok[0] == '#') {
			skip_rest_of_line(&lx);
			continue;
		}
		kw = keyword(lx.tok);
		/* The first entry for our machine decides: stop at its end. */
		if (entry == ENTRY_MATCH &&
		    (kw == KW_MACHINE || kw == KW_DEFAULT || kw == KW_MACDEF))
			break;
		if (kw == KW_DEFAULT) {
			entry = have_default ? ENTRY_OTHER : ENTRY_DEFAULT;
			have_default = true;
			continue;
		}
		if (kw == KW_NONE)
			continue;

		/* Every other keyword takes a value. */
		r = need_value(&lx, keywords[kw], err);
		if (r < 0)
			break;
		switch (kw) {
		case KW_MACHINE:
			matched = strcasecmp(lx.tok, machine) == 0;
			entry = matched ? ENTRY_MATCH : ENTRY_OTHER;
			break;
		case KW_MACDEF:
			skip_macdef_body(&lx);
			entry = ENTRY_NONE;
			break;
		case KW_PASSWORD:
			slot = entry == ENTRY_MATCH     ? &match_pw
			       : entry == ENTRY_DEFAULT ? &default_pw
							: NULL;
			if (!slot || *slot)
				break;
			*slot = strdup(lx.tok);
			if (!*slot)
				r = wbs_error_set(err, -ENOMEM, "out of memory");
			break;
		default:
			break;
		}
		if (r < 0)
			break;
	}

	if (r >= 0) {
		/* A matching machine without a password does not fall back to default. */
		found = matched ? &match_pw : &default_pw;
		if (*found) {
			*ret_password = TAKE_PTR(*found);
			r = 0;
		} else {
			r = wbs_error_set(err, -ENOENT, "no netrc entry for '%s'", machine);
		}
	}
	wbs_creds_free_key(match_pw);
	wbs_creds_free_key(default_pw);
	wipe_free(lx.tok, len + 1);
	return r;
}

int wbs_netrc_machine_for_url(const char *base_url, char **ret_machine, struct wbs_error *err)
{
	const char *sep, *host, *end, *host_end;
	char *machine;

	if (!base_url || !ret_machine)
		return wbs_error_set(err, -EINVAL, "no base URL given");
	/* The URL is not quoted back: it could carry user:password@. */
	sep = strstr(base_url, "://");
	if (!sep || sep == base_url)
		return wbs_error_set(err, -EINVAL, "invalid base URL: expected scheme://host");
	host = sep + 3;
	end = host + strcspn(host, "/?#");
	/* Like Python's urlparse().netloc, without any user:password@ part. */
	for (const char *p = end; p > host; p--) {
		if (p[-1] == '@') {
			host = p;
			break;
		}
	}

	if (*host == '[') { /* "[::1]:8080" keeps its brackets, as netloc does */
		host_end = memchr(host, ']', (size_t)(end - host));
		if (!host_end || host_end == host + 1)
			return wbs_error_set(err, -EINVAL, "invalid base URL: no host");
		host_end++;
	} else {
		host_end = memchr(host, ':', (size_t)(end - host));
		if (!host_end)
			host_end = end;
		if (host_end == host)
			return wbs_error_set(err, -EINVAL, "invalid base URL: no host");
	}
	if (host_end < end) {
		if (*host_end != ':' || host_end + 1 == end)
			return wbs_error_set(err, -EINVAL, "invalid base URL: bad port");
		for (const char *p = host_end + 1; p < end; p++)
			if (*p < '0' || *p > '9')
				return wbs_error_set(err, -EINVAL, "invalid base URL: bad port");
	}

	machine = strndup(host, (size_t)(end - host));
	if (!machine)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	*ret_machine = machine;
	return 0;
}

/* $HOME/.netrc, or the password database's home when HOME is unset; NULL if neither. */
static char *home_netrc_path(void)
{
	const char *home = getenv("HOME");
	struct passwd pw, *found = NULL;
	char buf[4096], *path;
	size_t size;

	if (!home || !*home) {
		if (getpwuid_r(geteuid(), &pw, buf, sizeof(buf), &found) != 0 || !found ||
		    !found->pw_dir || !*found->pw_dir)
			return NULL;
		home = found->pw_dir;
	}
	size = strlen(home) + sizeof("/.netrc");
	path = malloc(size);
	if (path)
		(void)snprintf(path, size, "%s/.netrc", home);
	return path;
}

/* -ENOENT, with nothing in @err, when the file or the entry does not exist. */
static int read_netrc_password(const char *path, const char *machine, char **ret_key,
			       struct wbs_error *err)
{
	struct wbs_error find_err = { 0 };
	char *buf = NULL, *pw = NULL, source[300];
	size_t len = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 && errno == ENOENT)
		return -ENOENT;
	if (fd < 0)
		return wbs_error_set(err, -errno, "cannot open '%s': %s", path, strerror(errno));
	r = read_all(fd, MAX_NETRC_SIZE, &buf, &len);
	(void)close(fd);
	if (r == -EFBIG)
		return wbs_error_set(err, -EINVAL, "refusing '%s': larger than 1 MiB", path);
	if (r < 0)
		return wbs_error_set(err, r, "cannot read '%s': %s", path, strerror(-r));

	r = wbs_netrc_find(buf, len, machine, &pw, &find_err);
	wipe_free(buf, len);
	if (r == -ENOENT)
		return r;
	if (r < 0)
		return wbs_error_set(err, r, "%s: %s", path, find_err.msg);

	(void)snprintf(source, sizeof(source), "'%s'", path);
	r = check_key(pw, strlen(pw), source, err);
	if (r < 0) {
		wbs_creds_free_key(pw);
		return r;
	}
	*ret_key = pw;
	return 0;
}

static int load_netrc_key(const char *base_url, char **ret_key, struct wbs_error *err)
{
	_cleanup_free_ char *machine = NULL, *home_netrc = NULL;
	const char *path = getenv("NETRC");
	const char *shown = path; /* in the message when there is no key */
	int r;

	r = wbs_netrc_machine_for_url(base_url, &machine, err);
	if (r < 0)
		return r;
	if (!path || !*path) {
		home_netrc = home_netrc_path();
		path = home_netrc;
		shown = "~/.netrc";
	}
	if (path) {
		r = read_netrc_password(path, machine, ret_key, err);
		if (r == 0)
			wbs_debug("using the API key for '%s' from '%s'", machine, path);
		if (r != -ENOENT)
			return r;
	}
	return wbs_error_set(
		err, -ENOENT,
		"no W&B API key: set WANDB_API_KEY, api_key_file, or add 'machine %s' to %s",
		machine, shown);
}

int wbs_creds_load(const struct wbs_config *cfg, char **ret_key, struct wbs_error *err)
{
	const char *env = getenv("WANDB_API_KEY");
	int r;

	if (!ret_key)
		return wbs_error_set(err, -EINVAL, "nowhere to store the API key");

	if (env && *env) {
		r = check_key(env, strlen(env), "WANDB_API_KEY", err);
		if (r < 0)
			return r;
		wbs_debug("using the API key from WANDB_API_KEY");
		return dup_key(env, strlen(env), ret_key, err);
	}
	if (cfg && cfg->api_key_file) {
		r = load_key_file(cfg->api_key_file, ret_key, err);
		if (r == 0)
			wbs_debug("using the API key from '%s'", cfg->api_key_file);
		return r;
	}
	return load_netrc_key(wbs_config_base_url(cfg), ret_key, err);
}
