#ifndef WBS_HOOK_CLOUD_H
#define WBS_HOOK_CLOUD_H

#include <stddef.h>

struct wbs_error;

/*
 * Cloud preemption notices from the instance metadata services
 * (research §1.7): GCE instance/preempted (long-poll with wait_for_change),
 * AWS IMDSv2 spot/instance-action (404 while there is none), Azure
 * scheduledevents (an event of type Preempt).  Off unless asked for; every
 * request has a short timeout, and each cloud is polled in its own helper
 * process, so nothing here can hold up the watchdog.
 */
enum cloud {
	CLOUD_GCE = 1u << 0,
	CLOUD_AWS = 1u << 1,
	CLOUD_AZURE = 1u << 2,
};

/* Parses "gce,aws,azure" (any subset; "" or "none": none).  -EINVAL naming the bad word. */
int cloud_parse_list(const char *s, unsigned *ret, struct wbs_error *err);

/* "gce", "aws" or "azure" for one bit; NULL otherwise. */
const char *cloud_name(unsigned one);

/*
 * The metadata service's base URL: WBSCHED_GCE_METADATA_URL,
 * WBSCHED_AWS_METADATA_URL or WBSCHED_AZURE_METADATA_URL when set (tests),
 * else http://169.254.169.254.  Borrowed.
 */
const char *cloud_base_url(unsigned one);

/*
 * The pure parts.  Each returns 1 and fills @text when the reply is a
 * preemption notice, 0 when it is not, -EPROTO when it is malformed.
 * GCE: the body of instance/preempted ("TRUE" or "FALSE").  AWS: the JSON of
 * spot/instance-action.  Azure: the scheduledevents document; @vm_name (may
 * be NULL: any) must be among an event's Resources.
 */
int cloud_gce_notice(const char *body, char *text, size_t size);
int cloud_aws_notice(const char *body, char *text, size_t size);
int cloud_azure_notice(const char *body, const char *vm_name, char *text, size_t size);

/*
 * A helper process's body: polls cloud @one every @interval_ms (GCE
 * long-polls instead) until a notice comes, writes it to @fd as a "spot"
 * notice line and returns.  Errors are logged once and retried.
 */
void cloud_watch(unsigned one, long interval_ms, int fd);

#endif /* WBS_HOOK_CLOUD_H */
