/* Run ids: generated as the SDK makes them, and checked when given. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "wbsched/error.h"
#include "wbsched/runid.h"

int wbs_run_id_generate(char ret[WBS_RUN_ID_LEN + 1], struct wbs_error *err)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char buf[32];
	size_t n = 0;

	/* Rejection sampling keeps every character equally likely (256 % 36 != 0). */
	while (n < WBS_RUN_ID_LEN) {
		ssize_t got = getrandom(buf, sizeof(buf), 0);

		if (got < 0) {
			if (errno == EINTR)
				continue;
			return wbs_error_set(err, -errno, "cannot generate a run id: %s",
					     strerror(errno));
		}
		for (ssize_t i = 0; i < got && n < WBS_RUN_ID_LEN; i++)
			if (buf[i] < 252)
				ret[n++] = alphabet[buf[i] % 36];
	}
	ret[n] = '\0';
	return 0;
}

int wbs_run_id_validate(const char *id, struct wbs_error *err)
{
	size_t len = id ? strlen(id) : 0;

	if (len == 0)
		return wbs_error_set(err, -EINVAL, "invalid run id '': must not be empty");
	if (len > WBS_RUN_ID_MAX_LEN)
		return wbs_error_set(err, -EINVAL, "invalid run id '%.70s...': longer than %d characters",
				     id, WBS_RUN_ID_MAX_LEN);
	for (const char *p = id; *p; p++) {
		unsigned char ch = (unsigned char)*p;

		if (ch <= ' ' || ch == 0x7f)
			return wbs_error_set(err, -EINVAL,
					     "invalid run id '%s': white space or control character",
					     id);
		if (strchr(":;,#?/'\\\"%", ch))
			return wbs_error_set(err, -EINVAL, "invalid run id '%s': '%c' is not allowed",
					     id, ch);
	}
	return 0;
}

int wbs_name_validate(const char *what, const char *name, struct wbs_error *err)
{
	size_t len = name ? strlen(name) : 0;

	if (len == 0)
		return wbs_error_set(err, -EINVAL, "invalid %s '': must not be empty", what);
	if (len > 128)
		return wbs_error_set(err, -EINVAL, "invalid %s: longer than 128 characters", what);
	for (const char *p = name; *p; p++) {
		unsigned char ch = (unsigned char)*p;

		if (ch <= ' ' || ch == 0x7f || ch == '/')
			return wbs_error_set(err, -EINVAL,
					     "invalid %s '%s': '/', white space and control characters are not allowed",
					     what, name);
	}
	return 0;
}
