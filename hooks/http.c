/*
 * The watchdog's HTTP GET/PUT for the Kubernetes API and cloud metadata
 * (see http.h).  The reply goes through a size-capped write callback, which
 * also splits a watch stream into lines.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "wbsched/error.h"
#include "wbsched/transport.h"

#include "http.h"

struct sink {
	const struct wd_http_req *req;
	CURL *easy;
	char *data;
	size_t len, cap;
	bool toobig;
	bool stopped;  /* on_line asked to stop */
	int streaming; /* -1 undecided, 0 no, 1 yes */
	char etag[128];
};

static int grow(struct sink *s, size_t more)
{
	size_t cap = s->cap ? s->cap : 4096;
	char *p;

	if (s->len + more + 1 <= s->cap)
		return 0;
	while (cap < s->len + more + 1)
		cap *= 2;
	p = realloc(s->data, cap);
	if (!p)
		return -ENOMEM;
	s->data = p;
	s->cap = cap;
	return 0;
}

/* Hands complete lines to on_line; keeps the rest for the next chunk. */
static bool flush_lines(struct sink *s)
{
	char *start = s->data, *nl;

	while (s->len > 0 && (nl = memchr(start, '\n', s->len - (size_t)(start - s->data)))) {
		size_t n = (size_t)(nl - start);

		*nl = '\0';
		if (n > 0 && start[n - 1] == '\r')
			start[--n] = '\0';
		if (s->req->on_line(s->req->userdata, start, n) != 0) {
			s->stopped = true;
			return false;
		}
		start = nl + 1;
	}
	s->len -= (size_t)(start - s->data);
	memmove(s->data, start, s->len);
	s->data[s->len] = '\0';
	return true;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct sink *s = userdata;
	size_t n = size * nmemb;

	if (s->streaming < 0) {
		long status = 0;

		(void)curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
		s->streaming = s->req->on_line && status == 200;
	}
	if (s->len + n > s->req->max_reply) {
		s->toobig = true;
		return 0;
	}
	if (grow(s, n) < 0)
		return 0;
	memcpy(s->data + s->len, ptr, n);
	s->len += n;
	s->data[s->len] = '\0';
	if (s->streaming == 1 && !flush_lines(s))
		return 0;
	return n;
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct sink *s = userdata;
	size_t n = size * nitems, vlen;
	static const char name[] = "etag:";
	const char *v;

	if (n <= sizeof(name) - 1 || strncasecmp(buf, name, sizeof(name) - 1) != 0)
		return n;
	v = buf + sizeof(name) - 1;
	vlen = n - (sizeof(name) - 1);
	while (vlen > 0 && (*v == ' ' || *v == '"')) {
		v++;
		vlen--;
	}
	while (vlen > 0 && strchr("\r\n \"", v[vlen - 1]))
		vlen--;
	if (vlen < sizeof(s->etag)) {
		memcpy(s->etag, v, vlen);
		s->etag[vlen] = '\0';
	}
	return n;
}

int wd_http_do(const struct wd_http_req *req, struct wd_http_resp *ret, struct wbs_error *err)
{
	struct sink s = { .req = req, .streaming = -1 };
	struct curl_slist *headers = NULL;
	char errbuf[CURL_ERROR_SIZE] = "";
	long status = 0;
	CURLcode rc;
	int r = 0;

	if (!req->url || req->timeout_ms <= 0)
		return wbs_error_set(err, -EINVAL, "bad request");
	s.easy = curl_easy_init();
	if (!s.easy)
		return wbs_error_set(err, -ENOMEM, "cannot create a libcurl handle");
	for (const char *const *h = req->headers; h && *h; h++) {
		struct curl_slist *n = curl_slist_append(headers, *h);

		if (!n) {
			r = wbs_error_set(err, -ENOMEM, "out of memory");
			goto out;
		}
		headers = n;
	}
	(void)curl_easy_setopt(s.easy, CURLOPT_URL, req->url);
	(void)curl_easy_setopt(s.easy, CURLOPT_NOSIGNAL, 1L);
	(void)curl_easy_setopt(s.easy, CURLOPT_ERRORBUFFER, errbuf);
	(void)curl_easy_setopt(s.easy, CURLOPT_NOPROXY, "*");
	(void)curl_easy_setopt(s.easy, CURLOPT_PROTOCOLS_STR, "http,https");
	(void)curl_easy_setopt(s.easy, CURLOPT_FOLLOWLOCATION, 0L);
	(void)curl_easy_setopt(s.easy, CURLOPT_SSL_VERIFYPEER, 1L);
	(void)curl_easy_setopt(s.easy, CURLOPT_SSL_VERIFYHOST, 2L);
	(void)curl_easy_setopt(s.easy, CURLOPT_USERAGENT, "wbsched/" WBS_VERSION);
	if (req->ca_file)
		(void)curl_easy_setopt(s.easy, CURLOPT_CAINFO, req->ca_file);
	(void)curl_easy_setopt(s.easy, CURLOPT_CONNECTTIMEOUT_MS,
			       req->connect_timeout_ms > 0 ? req->connect_timeout_ms : 1000L);
	(void)curl_easy_setopt(s.easy, CURLOPT_TIMEOUT_MS, req->timeout_ms);
	(void)curl_easy_setopt(s.easy, CURLOPT_HTTPHEADER, headers);
	(void)curl_easy_setopt(s.easy, CURLOPT_WRITEFUNCTION, write_cb);
	(void)curl_easy_setopt(s.easy, CURLOPT_WRITEDATA, &s);
	(void)curl_easy_setopt(s.easy, CURLOPT_HEADERFUNCTION, header_cb);
	(void)curl_easy_setopt(s.easy, CURLOPT_HEADERDATA, &s);
	if (req->method && strcmp(req->method, "PUT") == 0) {
		(void)curl_easy_setopt(s.easy, CURLOPT_CUSTOMREQUEST, "PUT");
		(void)curl_easy_setopt(s.easy, CURLOPT_POSTFIELDS, "");
		(void)curl_easy_setopt(s.easy, CURLOPT_POSTFIELDSIZE, 0L);
	}

	rc = curl_easy_perform(s.easy);
	if (s.toobig) {
		r = wbs_error_set(err, -EMSGSIZE, "reply from '%s' is larger than %zu bytes",
				  req->url, req->max_reply);
		goto out;
	}
	if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && s.stopped)) {
		r = wbs_error_set(err, wbs_curl_errno(rc), "%s '%s' failed: %s",
				  req->method ? req->method : "GET", req->url,
				  errbuf[0] ? errbuf : curl_easy_strerror(rc));
		goto out;
	}
	(void)curl_easy_getinfo(s.easy, CURLINFO_RESPONSE_CODE, &status);
	*ret = (struct wd_http_resp){ .status = status, .len = s.streaming == 1 ? 0 : s.len };
	ret->body = s.streaming != 1 && s.data ? s.data : strdup("");
	if (ret->body == s.data)
		s.data = NULL;
	memcpy(ret->etag, s.etag, sizeof(ret->etag));
	if (!ret->body)
		r = wbs_error_set(err, -ENOMEM, "out of memory");
out:
	curl_easy_cleanup(s.easy);
	/* The headers may hold a bearer token: wipe them before they are freed. */
	for (struct curl_slist *h = headers; h; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(headers);
	free(s.data);
	return r;
}

void wd_http_resp_release(struct wd_http_resp *resp)
{
	if (!resp)
		return;
	free(resp->body);
	*resp = (struct wd_http_resp){ 0 };
}
