#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "wbsched/error.h"

int wbs_error_set(struct wbs_error *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (!err || err->code != 0)
		return code;
	err->code = code;
	va_start(ap, fmt);
	(void)vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

void wbs_error_clear(struct wbs_error *err)
{
	if (err)
		*err = (struct wbs_error){ 0 };
}

bool wbs_error_is_unavailable(int code)
{
	switch (code) {
	case -ETIMEDOUT:
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
	case -ECONNRESET:
	case -EAGAIN:
	case -EPROTO:
	case -EMSGSIZE:
		return true;
	default:
		return false;
	}
}
