/*
 * The W&B client: one operation at a time, each under a time budget.
 *
 * client.c owns the retry policy and the mapping from HTTP statuses to error
 * codes; the transport (transport_curl.c, or a fake in tests) only moves
 * bytes.  The policy follows wandb-core's RetryMostFailures: connection
 * errors, 408, 429 and 5xx other than 501 are retried with exponential
 * backoff and jitter, Retry-After wins when present, and nothing waits past
 * the operation's deadline.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <json-c/json.h>

#include "wbsched/clock.h"
#include "wbsched/cleanup.h"
#include "wbsched/client.h"
#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/graphql.h"
#include "wbsched/log.h"
#include "wbsched/transport.h"

#define MAX_REPLY_BYTES	 (4L << 20) /* a batch of 100 runs is far below this */
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS	 5000

struct wbs_client {
	const struct wbs_config *cfg;
	struct wbs_transport transport;
	char *api_key;
	char *graphql_url;
	long deadline_ms; /* CLOCK_MONOTONIC */
	unsigned long attempts;
};

int wbs_client_new(const struct wbs_config *cfg, struct wbs_transport *transport,
		   const char *api_key, struct wbs_client **ret, struct wbs_error *err)
{
	struct wbs_client *c = calloc(1, sizeof(*c));
	int r;

	if (!c) {
		wbs_transport_release(transport);
		return wbs_error_set(err, -ENOMEM, "out of memory");
	}
	c->cfg = cfg;
	c->transport = *transport;
	*transport = (struct wbs_transport){ 0 };
	c->api_key = api_key ? strdup(api_key) : NULL;
	r = asprintf(&c->graphql_url, "%s/graphql", wbs_config_base_url(cfg));
	if (r < 0)
		c->graphql_url = NULL;
	if ((api_key && !c->api_key) || !c->graphql_url) {
		wbs_client_free(c);
		return wbs_error_set(err, -ENOMEM, "out of memory");
	}
	wbs_client_begin(c);
	*ret = c;
	return 0;
}

void wbs_client_free(struct wbs_client *client)
{
	if (!client)
		return;
	wbs_transport_release(&client->transport);
	if (client->api_key) {
		explicit_bzero(client->api_key, strlen(client->api_key));
		free(client->api_key);
	}
	free(client->graphql_url);
	free(client);
}

void wbs_client_begin(struct wbs_client *client)
{
	client->deadline_ms = wbs_now_ms() + client->cfg->budget_ms;
}

void wbs_client_begin_ms(struct wbs_client *client, long budget_ms)
{
	if (budget_ms > client->cfg->budget_ms)
		budget_ms = client->cfg->budget_ms;
	client->deadline_ms = wbs_now_ms() + budget_ms;
}

long wbs_client_remaining_ms(const struct wbs_client *client)
{
	long left = client->deadline_ms - wbs_now_ms();

	return left > 0 ? left : 0;
}

unsigned long wbs_client_attempts(const struct wbs_client *client)
{
	return client->attempts;
}

const struct wbs_config *wbs_client_config(const struct wbs_client *client)
{
	return client->cfg;
}

/* The wait before retry number @attempt (0-based): 100 ms doubling, +0-25 % jitter. */
static long backoff_ms(unsigned attempt)
{
	long base = BACKOFF_FIRST_MS;
	unsigned short jitter = 0;

	for (unsigned i = 0; i < attempt && base < BACKOFF_MAX_MS; i++)
		base *= 2;
	if (base > BACKOFF_MAX_MS)
		base = BACKOFF_MAX_MS;
	if (getrandom(&jitter, sizeof(jitter), GRND_NONBLOCK) != sizeof(jitter))
		jitter = (unsigned short)wbs_now_ms();
	return base + base * (jitter % 1000) / 4000;
}

static bool status_is_retryable(long status)
{
	return status == 408 || status == 429 || (status >= 500 && status != 501);
}

static bool code_is_retryable(int code)
{
	switch (code) {
	case -ECONNREFUSED:
	case -ECONNRESET:
	case -ETIMEDOUT:
	case -EHOSTUNREACH:
	case -EPROTO:
	case -EAGAIN:
		return true;
	default:
		return false;
	}
}

/*
 * Turns a non-2xx answer into a code and a message.  GraphQL servers explain
 * a 400 in an "errors" array; quote it when there is one.
 */
static int status_to_error(const struct wbs_http_request *req, const struct wbs_http_response *resp,
			   struct wbs_error *err)
{
	_cleanup_json_ struct json_object *data = NULL;
	struct wbs_error detail = { 0 };
	int code;

	if (resp->status == 401 || resp->status == 403)
		code = -EACCES;
	else if (resp->status == 404)
		code = -ENOENT;
	else if (status_is_retryable(resp->status))
		code = -EAGAIN;
	else
		code = -EREMOTEIO;

	if (code == -EACCES)
		wbs_error_set(err, code, "W&B refused the API key (HTTP %ld from '%s')", resp->status,
			      req->url);
	else if (code != -EAGAIN && resp->body_len > 0 &&
		 wbs_graphql_parse_response(resp->body, resp->body_len, &data, &detail) ==
			 -EREMOTEIO)
		wbs_error_set(err, code, "HTTP %ld from '%s': %s", resp->status, req->url,
			      detail.msg);
	else
		wbs_error_set(err, code, "HTTP %ld from '%s'", resp->status, req->url);
	if (err)
		err->http_status = resp->status;
	return code;
}

/*
 * Reads a 2xx reply; -EPROTO (a malformed reply, retried like a dropped
 * connection) or another code.  @userdata receives the result.
 */
typedef int (*reply_fn)(const struct wbs_http_response *resp, void *userdata,
			struct wbs_error *err);

/*
 * POSTs @body until @reply accepts a 2xx answer, a final error comes, or the
 * budget is spent.
 */
static int post_with_retries(struct wbs_client *c, const char *url, const char *body,
			     reply_fn reply, void *userdata, struct wbs_error *err)
{
	struct wbs_http_request req = {
		.url = url,
		.body = body,
		.body_len = strlen(body),
		.api_key = c->api_key,
		.max_reply = MAX_REPLY_BYTES,
	};
	struct wbs_error last = { 0 };
	int r = -ETIMEDOUT;

	for (unsigned attempt = 0;; attempt++) {
		struct wbs_http_response resp = { .retry_after_ms = -1 };
		long left = wbs_client_remaining_ms(c), wait;

		if (left <= 0) {
			if (attempt == 0)
				return wbs_error_set(err, -ETIMEDOUT,
						     "no time left in the %ld ms budget for '%s'",
						     c->cfg->budget_ms, url);
			break;
		}
		req.timeout_ms = left < c->cfg->request_timeout_ms ? left
								    : c->cfg->request_timeout_ms;
		wbs_error_clear(&last);
		c->attempts++;
		r = c->transport.ops->post(c->transport.ctx, &req, &resp, &last);
		if (r == 0 && resp.status >= 200 && resp.status < 300) {
			r = reply(&resp, userdata, &last);
			if (r == 0) {
				wbs_http_response_release(&resp);
				return 0;
			}
		} else if (r == 0) {
			r = status_to_error(&req, &resp, &last);
		}
		wait = resp.retry_after_ms;
		wbs_http_response_release(&resp);
		wbs_debug("attempt %u: %s", attempt + 1, last.msg);

		if (!code_is_retryable(r) || attempt >= (unsigned)c->cfg->max_retries)
			break;
		if (wait < 0)
			wait = backoff_ms(attempt);
		if (wait >= wbs_client_remaining_ms(c)) {
			wbs_debug("a retry in %ld ms would pass the budget", wait);
			break;
		}
		wbs_sleep_ms(wait);
	}
	if (err && err->code == 0) {
		*err = last;
		if (wbs_error_is_unavailable(r) && last.msg[0])
			(void)snprintf(err->msg, sizeof(err->msg), "W&B unavailable: %.230s",
				       last.msg);
	}
	return r;
}

static int graphql_reply(const struct wbs_http_response *resp, void *userdata,
			 struct wbs_error *err)
{
	return wbs_graphql_parse_response(resp->body, resp->body_len, userdata, err);
}

int wbs_client_graphql(struct wbs_client *client, const char *operation_name, const char *query,
		       struct json_object *variables, struct json_object **ret_data,
		       struct wbs_error *err)
{
	_cleanup_free_ char *body = NULL;
	int r;

	r = wbs_graphql_build_request(operation_name, query, variables, &body, err);
	if (r < 0)
		return r;
	wbs_debug("%s: POST %s", operation_name, client->graphql_url);
	return post_with_retries(client, client->graphql_url, body, graphql_reply, ret_data, err);
}

char *wbs_url_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(strlen(s) * 3 + 1), *o = out;

	if (!out)
		return NULL;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || strchr("-._~", ch)) {
			*o++ = (char)ch;
		} else {
			*o++ = '%';
			*o++ = hex[ch >> 4];
			*o++ = hex[ch & 15];
		}
	}
	*o = '\0';
	return out;
}

/* file_stream answers a JSON object ({"stopped": false, ...}). */
static int file_stream_reply(const struct wbs_http_response *resp, void *userdata,
			     struct wbs_error *err)
{
	_cleanup_json_ struct json_object *reply = json_tokener_parse(resp->body);

	(void)userdata;
	if (!reply || !json_object_is_type(reply, json_type_object))
		return wbs_error_set(err, -EPROTO,
				     "malformed reply from W&B file_stream: not a JSON object");
	return 0;
}

int wbs_client_file_stream(struct wbs_client *client, const char *entity, const char *project,
			   const char *run_id, struct json_object *body, struct wbs_error *err)
{
	_cleanup_free_ char *e = wbs_url_escape(entity), *p = wbs_url_escape(project),
			    *n = wbs_url_escape(run_id), *url = NULL;
	const char *text;
	int r;

	if (!e || !p || !n ||
	    asprintf(&url, "%s/files/%s/%s/%s/file_stream", wbs_config_base_url(client->cfg), e, p,
		     n) < 0) {
		url = NULL;
		return wbs_error_set(err, -ENOMEM, "out of memory");
	}
	text = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
	wbs_debug("file_stream %s: %s", url, text);
	r = post_with_retries(client, url, text, file_stream_reply, NULL, err);
	if (r == -ENOENT && err && err->http_status == 404) {
		wbs_error_clear(err);
		r = wbs_error_set(err, -ENOENT, "W&B has no run '%s/%s/%s'", entity, project,
				  run_id);
	}
	return r;
}
