#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "wbsched/log.h"

static void stderr_sink(void *userdata, int level, const char *msg);

static wbs_log_fn sink = stderr_sink;
static void *sink_data;
static int max_level = WBS_LOG_INFO;
static char prefix[64];

static const struct {
	const char *name;
	int level;
} level_names[] = {
	{ "err", WBS_LOG_ERR },	    { "error", WBS_LOG_ERR }, { "warning", WBS_LOG_WARNING },
	{ "notice", WBS_LOG_NOTICE }, { "info", WBS_LOG_INFO }, { "debug", WBS_LOG_DEBUG },
};

static void stderr_sink(void *userdata, int level, const char *msg)
{
	(void)userdata;
	(void)level;
	(void)fprintf(stderr, "wbsched: %s\n", msg);
}

void wbs_log_set_sink(wbs_log_fn fn, void *userdata)
{
	sink = fn ? fn : stderr_sink;
	sink_data = fn ? userdata : NULL;
}

void wbs_log_set_prefix(const char *p)
{
	(void)snprintf(prefix, sizeof(prefix), "%s", p ? p : "");
}

void wbs_log_set_level(int level)
{
	max_level = level;
}

int wbs_log_get_level(void)
{
	return max_level;
}

int wbs_log_level_from_string(const char *s, int *ret_level)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i].name) == 0) {
			*ret_level = level_names[i].level;
			return 0;
		}
	}
	return -EINVAL;
}

const char *wbs_log_level_to_string(int level)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (level_names[i].level == level)
			return level_names[i].name;
	return "unknown";
}

void wbs_log(int level, const char *fmt, ...)
{
	char buf[1024];
	size_t used;
	va_list ap;

	if (level > max_level)
		return;
	used = (size_t)snprintf(buf, sizeof(buf), "%s", prefix);
	va_start(ap, fmt);
	(void)vsnprintf(buf + used, sizeof(buf) - used, fmt, ap);
	va_end(ap);
	sink(sink_data, level, buf);
}
