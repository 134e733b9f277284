#ifndef WBS_TRANSPORT_H
#define WBS_TRANSPORT_H

#include <stddef.h>

struct wbs_config;
struct wbs_error;

/* One HTTP POST.  Everything is borrowed for the duration of the call. */
struct wbs_http_request {
	const char *url;
	const char *body; /* JSON */
	size_t body_len;
	const char *api_key; /* sent as Basic api:<key>; never logged */
	long timeout_ms;     /* the whole attempt, connect included */
	size_t max_reply;    /* a longer reply body fails with -EMSGSIZE */
};

struct wbs_http_response {
	long status;
	char *body; /* NUL-terminated; owned, released by wbs_http_response_release() */
	size_t body_len;
	long retry_after_ms; /* from Retry-After, -1 when absent */
};

/*
 * A transport performs one attempt and maps transport failures to negative
 * codes (-ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH, -ECONNRESET, -EPROTO,
 * -EMSGSIZE).  An HTTP answer of any status is success at this level.
 */
struct wbs_transport_ops {
	int (*post)(void *ctx, const struct wbs_http_request *req,
		    struct wbs_http_response *ret_resp, struct wbs_error *err);
	void (*free)(void *ctx);
};

struct wbs_transport {
	const struct wbs_transport_ops *ops;
	void *ctx;
};

/*
 * The libcurl transport: one reused handle (keep-alive), TLS verification on
 * (cfg->ca_file when set), proxy environment honoured, User-Agent
 * "wbsched/<version>", connect timeout cfg->connect_timeout_ms, no signals.
 */
int wbs_transport_curl_init(struct wbs_transport *ret, const struct wbs_config *cfg,
			    struct wbs_error *err);

/*
 * The negative code for a libcurl result (a CURLcode), as the transport maps
 * it; -EPROTO for anything it does not name.  For the other libcurl user,
 * the watchdog's client of the Kubernetes API and cloud metadata.
 */
int wbs_curl_errno(int curl_code);

/* Frees the transport's context and zeroes @t; harmless on a zeroed struct. */
void wbs_transport_release(struct wbs_transport *t);

void wbs_http_response_release(struct wbs_http_response *resp);

/* Parses a Retry-After value (seconds or an HTTP date); -1 when unusable. */
long wbs_http_parse_retry_after(const char *value, long now_epoch_s);

#endif /* WBS_TRANSPORT_H */
