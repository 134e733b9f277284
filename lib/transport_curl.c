/*
 * The libcurl transport: the only file that includes <curl/curl.h>.
 *
 * One easy handle per transport, so consecutive requests to W&B reuse the
 * connection.  The reply is read through a size-capped write callback; the
 * Authorization header is built here and never leaves this file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "wbsched/cleanup.h"
#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/log.h"
#include "wbsched/transport.h"

struct curl_ctx {
	CURL *easy;
	char errbuf[CURL_ERROR_SIZE];
};

struct reply {
	char *data;
	size_t len;
	size_t cap;
	size_t max;
	bool toobig;
	long retry_after_ms;
};

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct reply *r = userdata;
	size_t n = size * nmemb;

	if (r->len + n > r->max) {
		r->toobig = true;
		return 0; /* makes curl fail with CURLE_WRITE_ERROR */
	}
	if (r->len + n + 1 > r->cap) {
		size_t cap = r->cap ? r->cap : 4096;
		char *p;

		while (cap < r->len + n + 1)
			cap *= 2;
		p = realloc(r->data, cap);
		if (!p)
			return 0;
		r->data = p;
		r->cap = cap;
	}
	memcpy(r->data + r->len, ptr, n);
	r->len += n;
	r->data[r->len] = '\0';
	return n;
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct reply *r = userdata;
	size_t n = size * nitems;
	static const char name[] = "retry-after:";
	char value[128];
	size_t vlen;

	if (n <= sizeof(name) - 1 || strncasecmp(buf, name, sizeof(name) - 1) != 0)
		return n;
	vlen = n - (sizeof(name) - 1);
	if (vlen >= sizeof(value))
		return n;
	memcpy(value, buf + sizeof(name) - 1, vlen);
	value[vlen] = '\0';
	while (vlen > 0 && (value[vlen - 1] == '\r' || value[vlen - 1] == '\n' ||
			    value[vlen - 1] == ' '))
		value[--vlen] = '\0';
	r->retry_after_ms = wbs_http_parse_retry_after(value, (long)time(NULL));
	return n;
}

int wbs_curl_errno(int rc)
{
	switch ((CURLcode)rc) {
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return -ECONNRESET;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return -EINVAL;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CONNECT_ERROR:
		return -EACCES;
	default:
		return -EPROTO;
	}
}

static int curl_post(void *vctx, const struct wbs_http_request *req,
		     struct wbs_http_response *ret_resp, struct wbs_error *err)
{
	struct curl_ctx *cc = vctx;
	struct reply r = { .max = req->max_reply, .retry_after_ms = -1 };
	struct curl_slist *headers = NULL;
	long status = 0;
	CURLcode rc;
	int ret = 0;

	cc->errbuf[0] = '\0';
	headers = curl_slist_append(headers, "Content-Type: application/json");
	if (headers)
		headers = curl_slist_append(headers, "Accept: application/json");
	if (!headers)
		return wbs_error_set(err, -ENOMEM, "out of memory");

	(void)curl_easy_setopt(cc->easy, CURLOPT_URL, req->url);
	(void)curl_easy_setopt(cc->easy, CURLOPT_HTTPHEADER, headers);
	(void)curl_easy_setopt(cc->easy, CURLOPT_POSTFIELDS, req->body);
	(void)curl_easy_setopt(cc->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
	(void)curl_easy_setopt(cc->easy, CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 1L);
	(void)curl_easy_setopt(cc->easy, CURLOPT_WRITEFUNCTION, write_cb);
	(void)curl_easy_setopt(cc->easy, CURLOPT_WRITEDATA, &r);
	(void)curl_easy_setopt(cc->easy, CURLOPT_HEADERFUNCTION, header_cb);
	(void)curl_easy_setopt(cc->easy, CURLOPT_HEADERDATA, &r);
	if (req->api_key) {
		(void)curl_easy_setopt(cc->easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		(void)curl_easy_setopt(cc->easy, CURLOPT_USERNAME, "api");
		(void)curl_easy_setopt(cc->easy, CURLOPT_PASSWORD, req->api_key);
	}

	rc = curl_easy_perform(cc->easy);
	/* Forget the key and the borrowed body at once. */
	(void)curl_easy_setopt(cc->easy, CURLOPT_PASSWORD, NULL);
	(void)curl_easy_setopt(cc->easy, CURLOPT_POSTFIELDS, NULL);
	(void)curl_easy_setopt(cc->easy, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(headers);

	if (r.toobig) {
		ret = wbs_error_set(err, -EMSGSIZE, "reply from '%s' is larger than %zu bytes",
				    req->url, req->max_reply);
		goto out;
	}
	if (rc != CURLE_OK) {
		ret = wbs_error_set(err, wbs_curl_errno(rc), "POST '%s' failed: %s", req->url,
				    cc->errbuf[0] ? cc->errbuf : curl_easy_strerror(rc));
		goto out;
	}
	(void)curl_easy_getinfo(cc->easy, CURLINFO_RESPONSE_CODE, &status);
	*ret_resp = (struct wbs_http_response){
		.status = status,
		.body = r.data ? TAKE_PTR(r.data) : strdup(""),
		.body_len = r.len,
		.retry_after_ms = r.retry_after_ms,
	};
	if (!ret_resp->body)
		ret = wbs_error_set(err, -ENOMEM, "out of memory");
out:
	free(r.data);
	return ret;
}

static void curl_ctx_free(void *vctx)
{
	struct curl_ctx *cc = vctx;

	if (!cc)
		return;
	curl_easy_cleanup(cc->easy);
	free(cc);
}

static const struct wbs_transport_ops curl_ops = {
	.post = curl_post,
	.free = curl_ctx_free,
};

int wbs_transport_curl_init(struct wbs_transport *ret, const struct wbs_config *cfg,
			    struct wbs_error *err)
{
	static bool global_done;
	struct curl_ctx *cc;

	if (!global_done) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return wbs_error_set(err, -ENOMEM, "cannot initialise libcurl");
		global_done = true;
	}
	cc = calloc(1, sizeof(*cc));
	if (!cc)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	cc->easy = curl_easy_init();
	if (!cc->easy) {
		free(cc);
		return wbs_error_set(err, -ENOMEM, "cannot create a libcurl handle");
	}
	(void)curl_easy_setopt(cc->easy, CURLOPT_NOSIGNAL, 1L);
	(void)curl_easy_setopt(cc->easy, CURLOPT_ERRORBUFFER, cc->errbuf);
	(void)curl_easy_setopt(cc->easy, CURLOPT_USERAGENT, "wbsched/" WBS_VERSION);
	(void)curl_easy_setopt(cc->easy, CURLOPT_CONNECTTIMEOUT_MS, cfg->connect_timeout_ms);
	(void)curl_easy_setopt(cc->easy, CURLOPT_SSL_VERIFYPEER, 1L);
	(void)curl_easy_setopt(cc->easy, CURLOPT_SSL_VERIFYHOST, 2L);
	(void)curl_easy_setopt(cc->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	(void)curl_easy_setopt(cc->easy, CURLOPT_FOLLOWLOCATION, 0L);
	(void)curl_easy_setopt(cc->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	if (cfg->ca_file)
		(void)curl_easy_setopt(cc->easy, CURLOPT_CAINFO, cfg->ca_file);
	/* Proxies: libcurl reads http_proxy, https_proxy and no_proxy itself. */
	*ret = (struct wbs_transport){ .ops = &curl_ops, .ctx = cc };
	return 0;
}

void wbs_transport_release(struct wbs_transport *t)
{
	if (!t)
		return;
	if (t->ops && t->ops->free)
		t->ops->free(t->ctx);
	*t = (struct wbs_transport){ 0 };
}

void wbs_http_response_release(struct wbs_http_response *resp)
{
	if (!resp)
		return;
	free(resp->body);
	*resp = (struct wbs_http_response){ .retry_after_ms = -1 };
}

long wbs_http_parse_retry_after(const char *value, long now_epoch_s)
{
	const char *p = value;
	char *end;
	long secs;
	time_t when;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p >= '0' && *p <= '9') {
		errno = 0;
		secs = strtol(p, &end, 10);
		while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
			end++;
		if (errno || *end || secs < 0 || secs > 86400)
			return -1;
		return secs * 1000;
	}
	when = curl_getdate(p, NULL);
	if (when < 0)
		return -1;
	if (when <= now_epoch_s)
		return 0;
	/* a date years away: as good as "not within any budget" (and no overflow) */
	return (long)when - now_epoch_s > 86400 ? 86400L * 1000 : ((long)when - now_epoch_s) * 1000;
}
