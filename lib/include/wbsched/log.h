#ifndef WBS_LOG_H
#define WBS_LOG_H

/* Levels use syslog(3) numbers so a syslog sink needs no mapping. */
enum wbs_log_level {
	WBS_LOG_ERR = 3,
	WBS_LOG_WARNING = 4,
	WBS_LOG_NOTICE = 5,
	WBS_LOG_INFO = 6,
	WBS_LOG_DEBUG = 7,
};

/* A sink receives an already formatted message (no trailing newline). */
typedef void (*wbs_log_fn)(void *userdata, int level, const char *msg);

/* Installs the process-wide sink; NULL restores the default stderr sink. */
void wbs_log_set_sink(wbs_log_fn fn, void *userdata);

/* Starts every message with @prefix (at most 63 bytes; NULL or "": none). */
void wbs_log_set_prefix(const char *prefix);

/* Messages above @level are dropped before they are formatted. */
void wbs_log_set_level(int level);
int wbs_log_get_level(void);

/* Parses "err", "warning", "notice", "info" or "debug"; -EINVAL otherwise. */
int wbs_log_level_from_string(const char *s, int *ret_level);
const char *wbs_log_level_to_string(int level);

void wbs_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define wbs_err(...)	 wbs_log(WBS_LOG_ERR, __VA_ARGS__)
#define wbs_warning(...) wbs_log(WBS_LOG_WARNING, __VA_ARGS__)
#define wbs_info(...)	 wbs_log(WBS_LOG_INFO, __VA_ARGS__)
#define wbs_debug(...)	 wbs_log(WBS_LOG_DEBUG, __VA_ARGS__)

#endif /* WBS_LOG_H */
