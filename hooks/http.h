#ifndef WBS_HOOK_HTTP_H
#define WBS_HOOK_HTTP_H

#include <stddef.h>

struct wbs_error;

/*
 * A small blocking HTTP client for what the watchdog reads that is not W&B:
 * the Kubernetes API server and the cloud metadata services (http.c, the
 * second libcurl user; W&B goes through lib/transport_curl.c).  One easy
 * handle per request, no proxy (these endpoints are in-cluster or
 * link-local), no redirects, TLS always verified.
 */
struct wd_http_req {
	const char *method;         /* "GET" (NULL) or "PUT" */
	const char *url;            /* http:// or https:// */
	const char *const *headers; /* "Name: value", NULL-terminated; may be NULL */
	const char *ca_file;        /* PEM bundle; NULL: the system store */
	long connect_timeout_ms;    /* 0: 1000 */
	long timeout_ms;            /* the whole request; must be > 0 */
	size_t max_reply;           /* a longer body (or, streaming, line) fails with -EMSGSIZE */
	/*
	 * Streaming: when set and the status is 200, the body is handed over one
	 * '\n'-terminated line at a time (without the '\n', NUL-terminated,
	 * writable); a non-zero return stops the transfer, and wd_http_do()
	 * returns 0.  Other statuses are read into the reply body as usual.
	 */
	int (*on_line)(void *userdata, char *line, size_t len);
	void *userdata;
};

struct wd_http_resp {
	long status;
	char *body; /* NUL-terminated (empty when streamed); owned */
	size_t len;
	char etag[128]; /* the ETag header, without quotes; "" when absent */
};

/*
 * Performs one request.  0 when an HTTP answer came, whatever its status
 * (*ret filled; release it with wd_http_resp_release()); otherwise a
 * negative code: -ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH, -ECONNRESET,
 * -EACCES (TLS verification), -EMSGSIZE, -EINVAL, -ENOMEM, -EPROTO.
 */
int wd_http_do(const struct wd_http_req *req, struct wd_http_resp *ret, struct wbs_error *err);
void wd_http_resp_release(struct wd_http_resp *resp);

#endif /* WBS_HOOK_HTTP_H */
