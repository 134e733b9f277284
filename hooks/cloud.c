/*
 * Cloud preemption notices: GCE, AWS (IMDSv2) and Azure (Scheduled Events).
 * Endpoints and formats: shared/research/k8s-and-anchors.md §1.7.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "wbsched/clock.h"
#include "wbsched/cleanup.h"
#include "wbsched/error.h"
#include "wbsched/graphql.h"
#include "wbsched/log.h"

#include "cloud.h"
#include "http.h"
#include "watchdog.h"

#define DEFAULT_BASE    "http://169.254.169.254"
#define MAX_REPLY       (256u << 10)
#define REQUEST_MS      2000
#define GCE_WAIT_S      60
#define AWS_TOKEN_TTL_S 21600

static const struct {
	unsigned bit;
	const char *name;
	const char *env;
} clouds[] = {
	{ CLOUD_GCE, "gce", "WBSCHED_GCE_METADATA_URL" },
	{ CLOUD_AWS, "aws", "WBSCHED_AWS_METADATA_URL" },
	{ CLOUD_AZURE, "azure", "WBSCHED_AZURE_METADATA_URL" },
};

int cloud_parse_list(const char *s, unsigned *ret, struct wbs_error *err)
{
	_cleanup_free_ char *copy = strdup(s ? s : "");
	unsigned mask = 0;
	char *save = NULL;

	if (!copy)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	for (char *w = strtok_r(copy, ", ", &save); w; w = strtok_r(NULL, ", ", &save)) {
		size_t i;

		if (strcmp(w, "none") == 0)
			continue;
		for (i = 0; i < ELEMENTSOF(clouds); i++)
			if (strcmp(w, clouds[i].name) == 0)
				break;
		if (i == ELEMENTSOF(clouds))
			return wbs_error_set(err, -EINVAL,
					     "unknown cloud '%s': expected gce, aws or azure", w);
		mask |= clouds[i].bit;
	}
	*ret = mask;
	return 0;
}

const char *cloud_name(unsigned one)
{
	for (size_t i = 0; i < ELEMENTSOF(clouds); i++)
		if (clouds[i].bit == one)
			return clouds[i].name;
	return NULL;
}

const char *cloud_base_url(unsigned one)
{
	for (size_t i = 0; i < ELEMENTSOF(clouds); i++) {
		if (clouds[i].bit == one) {
			const char *v = getenv(clouds[i].env);

			return v && *v ? v : DEFAULT_BASE;
		}
	}
	return DEFAULT_BASE;
}

/* ---- parsers ----------------------------------------------------------- */

int cloud_gce_notice(const char *body, char *text, size_t size)
{
	size_t n = strcspn(body, " \r\n");

	if (n == 4 && strncmp(body, "TRUE", 4) == 0) {
		(void)snprintf(text, size, "GCE preemption notice (instance/preempted is TRUE)");
		return 1;
	}
	return n == 5 && strncmp(body, "FALSE", 5) == 0 ? 0 : -EPROTO;
}

int cloud_aws_notice(const char *body, char *text, size_t size)
{
	_cleanup_json_ struct json_object *o = json_tokener_parse(body);
	const char *action = wbs_json_path_string(o, "action");
	const char *when = wbs_json_path_string(o, "time");

	if (!action)
		return -EPROTO;
	(void)snprintf(text, size, "AWS spot interruption notice: %.20s at %.40s", action,
		       when ? when : "an unknown time");
	return 1;
}

static bool has_resource(struct json_object *event, const char *vm_name)
{
	struct json_object *res = wbs_json_path(event, "Resources");

	if (!vm_name)
		return true;
	for (size_t i = 0;
	     res && json_object_is_type(res, json_type_array) && i < json_object_array_length(res);
	     i++) {
		const char *r = json_object_get_string(json_object_array_get_idx(res, i));

		if (r && strcmp(r, vm_name) == 0)
			return true;
	}
	return false;
}

int cloud_azure_notice(const char *body, const char *vm_name, char *text, size_t size)
{
	_cleanup_json_ struct json_object *o = json_tokener_parse(body);
	struct json_object *events = wbs_json_path(o, "Events");

	if (!events || !json_object_is_type(events, json_type_array))
		return -EPROTO;
	for (size_t i = 0; i < json_object_array_length(events); i++) {
		struct json_object *e = json_object_array_get_idx(events, i);
		const char *type = wbs_json_path_string(e, "EventType");
		const char *id = wbs_json_path_string(e, "EventId");
		const char *not_before = wbs_json_path_string(e, "NotBefore");

		if (!type || strcmp(type, "Preempt") != 0 || !has_resource(e, vm_name))
			continue;
		(void)snprintf(text, size, "Azure scheduled event Preempt (%.60s)%s%.40s",
			       id ? id : "no EventId",
			       not_before && *not_before ? " not before " : "",
			       not_before ? not_before : "");
		return 1;
	}
	return 0;
}

/* ---- polling ----------------------------------------------------------- */

static int get(const char *method, const char *url, const char *const *headers, long timeout_ms,
	       struct wd_http_resp *ret, struct wbs_error *err)
{
	struct wd_http_req req = {
		.method = method,
		.url = url,
		.headers = headers,
		.connect_timeout_ms = 1000,
		.timeout_ms = timeout_ms,
		.max_reply = MAX_REPLY,
	};

	return wd_http_do(&req, ret, err);
}

struct poller {
	unsigned cloud;
	const char *base;
	int fd;
	bool warned;
	/* GCE */
	char etag[128];
	/* AWS */
	char *token;
	time_t token_at;
	/* Azure */
	char *vm_name;
	bool vm_asked;
};

/* Logs the first failure of a streak as a warning, the others at debug level. */
static void trouble(struct poller *p, const char *what)
{
	wbs_log(p->warned ? WBS_LOG_DEBUG : WBS_LOG_WARNING, "%s metadata: %s",
		cloud_name(p->cloud), what);
	p->warned = true;
}

/* 1: notice in @text, 0: none, <0: could not tell (logged). */
static int poll_gce(struct poller *p, char *text, size_t size)
{
	static const char *const headers[] = { "Metadata-Flavor: Google", NULL };
	struct wd_http_resp resp = { 0 };
	struct wbs_error err = { 0 };
	_cleanup_free_ char *url = NULL;
	int r;

	if (p->etag[0])
		r = asprintf(&url,
			     "%s/computeMetadata/v1/instance/preempted?wait_for_change=true"
			     "&last_etag=%s&timeout_sec=%d",
			     p->base, p->etag, GCE_WAIT_S);
	else
		r = asprintf(&url, "%s/computeMetadata/v1/instance/preempted", p->base);
	if (r < 0) {
		url = NULL;
		return -ENOMEM;
	}
	r = get(NULL, url, headers, p->etag[0] ? (GCE_WAIT_S + 5) * 1000L : REQUEST_MS, &resp,
		&err);
	if (r < 0) {
		trouble(p, err.msg);
		p->etag[0] = '\0';
		return r;
	}
	if (resp.status != 200) {
		trouble(p, "instance/preempted did not answer 200 (is this GCE?)");
		wd_http_resp_release(&resp);
		p->etag[0] = '\0';
		return -EREMOTEIO;
	}
	r = cloud_gce_notice(resp.body, text, size);
	/* Without an ETag a long poll could not say "changed since": poll plainly. */
	memcpy(p->etag, resp.etag, sizeof(p->etag));
	if (strspn(p->etag, "0123456789abcdefABCDEF-_") != strlen(p->etag))
		p->etag[0] = '\0';
	wd_http_resp_release(&resp);
	if (r < 0)
		trouble(p, "instance/preempted is neither TRUE nor FALSE");
	return r;
}

static void aws_token(struct poller *p)
{
	static const char *const headers[] = { "X-aws-ec2-metadata-token-ttl-seconds: 21600",
					       NULL };
	struct wd_http_resp resp = { 0 };
	struct wbs_error err = { 0 };
	_cleanup_free_ char *url = NULL;

	if (p->token && time(NULL) - p->token_at < AWS_TOKEN_TTL_S - 60)
		return;
	free(p->token);
	p->token = NULL;
	if (asprintf(&url, "%s/latest/api/token", p->base) < 0) {
		url = NULL;
		return;
	}
	/* A failure here is common (hop limit 1 on EKS): IMDSv1 is tried next. */
	if (get("PUT", url, headers, REQUEST_MS, &resp, &err) < 0 || resp.status != 200 ||
	    resp.len == 0 || resp.len > 1024 || strpbrk(resp.body, "\r\n")) {
		wbs_debug("aws metadata: no IMDSv2 token (%s)", err.msg[0] ? err.msg : "refused");
	} else {
		p->token = TAKE_PTR(resp.body);
		p->token_at = time(NULL);
	}
	wd_http_resp_release(&resp);
}

static int poll_aws(struct poller *p, char *text, size_t size)
{
	struct wd_http_resp resp = { 0 };
	struct wbs_error err = { 0 };
	_cleanup_free_ char *url = NULL, *auth = NULL;
	int r;

	aws_token(p);
	if (asprintf(&url, "%s/latest/meta-data/spot/instance-action", p->base) < 0) {
		url = NULL;
		return -ENOMEM;
	}
	if (p->token && asprintf(&auth, "X-aws-ec2-metadata-token: %s", p->token) < 0) {
		auth = NULL;
		return -ENOMEM;
	}
	const char *headers[] = { auth, NULL };
	r = get(NULL, url, headers, REQUEST_MS, &resp, &err);
	if (r < 0) {
		trouble(p, err.msg);
		return r;
	}
	if (resp.status == 404) {
		r = 0; /* no notice */
	} else if (resp.status == 200) {
		r = cloud_aws_notice(resp.body, text, size);
		if (r < 0)
			trouble(p, "spot/instance-action is not the expected JSON");
	} else {
		if (resp.status == 401) {
			free(p->token); /* expired or refused: ask for a new one */
			p->token = NULL;
		}
		trouble(p, resp.status == 401
				   ? "spot/instance-action answered 401 (IMDSv2 token refused)"
				   : "spot/instance-action did not answer 200 or 404");
		r = -EREMOTEIO;
	}
	wd_http_resp_release(&resp);
	return r;
}

static int poll_azure(struct poller *p, char *text, size_t size)
{
	static const char *const headers[] = { "Metadata: true", NULL };
	struct wd_http_resp resp = { 0 };
	struct wbs_error err = { 0 };
	_cleanup_free_ char *url = NULL;
	int r;

	if (!p->vm_asked) {
		p->vm_asked = true;
		if (asprintf(&url,
			     "%s/metadata/instance/compute/name?api-version=2021-05-01&format=text",
			     p->base) < 0)
			return -ENOMEM;
		if (get(NULL, url, headers, REQUEST_MS, &resp, &err) == 0 && resp.status == 200 &&
		    resp.len > 0 && resp.len < 256 && !strpbrk(resp.body, "\r\n"))
			p->vm_name = TAKE_PTR(resp.body);
		wd_http_resp_release(&resp);
		free(TAKE_PTR(url));
	}
	if (asprintf(&url, "%s/metadata/scheduledevents?api-version=2020-07-01", p->base) < 0) {
		url = NULL;
		return -ENOMEM;
	}
	r = get(NULL, url, headers, REQUEST_MS, &resp, &err);
	if (r < 0) {
		trouble(p, err.msg);
		return r;
	}
	if (resp.status == 200) {
		r = cloud_azure_notice(resp.body, p->vm_name, text, size);
		if (r < 0)
			trouble(p, "scheduledevents is not the expected JSON");
	} else {
		trouble(p, "scheduledevents did not answer 200 (is this Azure?)");
		r = -EREMOTEIO;
	}
	wd_http_resp_release(&resp);
	return r;
}

void cloud_watch(unsigned one, long interval_ms, int fd)
{
	struct poller p = { .cloud = one, .base = cloud_base_url(one), .fd = fd };

	wbs_debug("%s metadata: watching %s for a preemption notice", cloud_name(one), p.base);
	for (;;) {
		char text[160], line[WD_NOTICE_MAX];
		long started = (long)time(NULL);
		int r, n;

		if (one == CLOUD_GCE)
			r = poll_gce(&p, text, sizeof(text));
		else if (one == CLOUD_AWS)
			r = poll_aws(&p, text, sizeof(text));
		else
			r = poll_azure(&p, text, sizeof(text));
		if (r > 0) {
			n = wd_notice_format(WD_CAUSE_SPOT, text, line, sizeof(line));
			if (n > 0 && write(fd, line, (size_t)n) < 0)
				wbs_debug("%s metadata: the watchdog is gone", cloud_name(one));
			break;
		}
		if (r == 0 && p.warned) {
			wbs_info("%s metadata: answering again", cloud_name(one));
			p.warned = false;
		}
		/* GCE's long poll is its own wait, unless it failed or ended at once. */
		if (one != CLOUD_GCE || r < 0 || !p.etag[0] || (long)time(NULL) == started)
			wbs_sleep_ms(interval_ms);
	}
	free(p.token);
	free(p.vm_name);
}
