/* The watchdog's causes, notice lines and end-state rule (no I/O). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "wbsched/cleanup.h"

#include "watchdog.h"

static const char *const cause_names[] = {
	[WD_CAUSE_NONE] = "none",           [WD_CAUSE_DELETING] = "deleting",
	[WD_CAUSE_PREEMPTED] = "preempted", [WD_CAUSE_EVICTED] = "evicted",
	[WD_CAUSE_SHUTDOWN] = "shutdown",   [WD_CAUSE_SPOT] = "spot",
	[WD_CAUSE_DELETED] = "deleted",
};

const char *wd_cause_name(enum wd_cause cause)
{
	if ((size_t)cause >= ELEMENTSOF(cause_names))
		return NULL;
	return cause_names[cause];
}

int wd_cause_from_name(const char *name, enum wd_cause *ret)
{
	for (size_t i = 0; name && i < ELEMENTSOF(cause_names); i++) {
		if (strcmp(cause_names[i], name) == 0) {
			*ret = (enum wd_cause)i;
			return 0;
		}
	}
	return -EINVAL;
}

bool wd_cause_is_disruption(enum wd_cause cause)
{
	return cause == WD_CAUSE_PREEMPTED || cause == WD_CAUSE_EVICTED ||
	       cause == WD_CAUSE_SHUTDOWN || cause == WD_CAUSE_SPOT;
}

int wd_notice_format(enum wd_cause cause, const char *text, char *buf, size_t size)
{
	const char *name = wd_cause_name(cause);
	size_t n, cap;

	if (!name || size < strlen(name) + 3)
		return -EINVAL;
	n = (size_t)snprintf(buf, size, "%s ", name);
	cap = n + 200 < size - 2 ? n + 200 : size - 2;
	for (const char *t = text ? text : ""; *t && n < cap; t++)
		buf[n++] = (unsigned char)*t < 0x20 || *t == 0x7f ? ' ' : *t;
	buf[n++] = '\n';
	buf[n] = '\0';
	return (int)n;
}

int wd_notice_parse(char *line, enum wd_cause *ret_cause, const char **ret_text)
{
	char *space = strchr(line, ' ');
	enum wd_cause cause;

	if (!space)
		return -EINVAL;
	*space = '\0';
	if (wd_cause_from_name(line, &cause) < 0) {
		*space = ' ';
		return -EINVAL;
	}
	*ret_cause = cause;
	*ret_text = space + 1;
	return 0;
}

int wd_exit_status(bool signaled, int code)
{
	return signaled ? 128 + code : code;
}

static void describe_status(const struct wd_facts *f, char *buf, size_t size)
{
	if (f->signaled) {
		const char *abbrev = sigabbrev_np(f->code);

		(void)snprintf(buf, size, "killed by signal %d%s%s%s", f->code,
			       abbrev ? " (SIG" : "", abbrev ? abbrev : "", abbrev ? ")" : "");
	} else {
		(void)snprintf(buf, size, "exit code %d", f->code);
	}
}

void wd_decide(const struct wd_facts *f, struct wd_outcome *ret)
{
	const char *text = f->cause_text && *f->cause_text ? f->cause_text : NULL;
	bool zero = !f->signaled && f->code == 0;
	char status[64];

	*ret = (struct wd_outcome){ .exit_status = wd_exit_status(f->signaled, f->code) };
	describe_status(f, status, sizeof(status));

	if (zero && !f->term_forwarded) {
		ret->end = WD_END_FINISHED;
		return;
	}
	if (wd_cause_is_disruption(f->cause) ||
	    (f->term_forwarded && f->cause != WD_CAUSE_DELETED)) {
		ret->end = WD_END_PREEMPTED;
		if (!text)
			text = f->term_forwarded ? "SIGTERM with no known cause" : "preempted";
		(void)snprintf(ret->reason, sizeof(ret->reason), "%s%s", text,
			       zero ? "; exit code 0 after SIGTERM does not count as finished"
				    : "");
		return;
	}
	ret->end = WD_END_FAILED;
	if (f->cause == WD_CAUSE_DELETED && text)
		(void)snprintf(ret->reason, sizeof(ret->reason), "%s; %s%s", text, status,
			       zero ? " after SIGTERM" : "");
	else
		(void)snprintf(ret->reason, sizeof(ret->reason), "%s", status);
}
