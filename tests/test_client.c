/*
 * The client's retry policy and error mapping, with a scripted transport;
 * and the same against the emulator's injected faults over real HTTP.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <json-c/json.h>

#include "wbsched/client.h"
#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/transport.h"

#include "fakes/fake_transport.h"
#include "harness.h"

static struct wbs_config cfg;
static struct fake_transport fake;
static struct wbs_client *fc;

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void setup(void)
{
	struct wbs_transport t;

	wbs_config_init(&cfg);
	cr_assert_eq(wbs_config_set(&cfg, "base_url", "http://w.example", NULL, NULL), 0);
	fake_transport_init(&fake, &t);
	cr_assert_eq(wbs_client_new(&cfg, &t, "secret-key-0123456789", &fc, NULL), 0);
}

static void teardown(void)
{
	wbs_client_free(fc);
	fake_transport_release(&fake);
	wbs_config_release(&cfg);
}

TestSuite(client, .init = setup, .fini = teardown, .timeout = 20);

static int query(struct json_object **data, struct wbs_error *err)
{
	wbs_client_begin(fc);
	return wbs_client_graphql(fc, "Viewer", "query Viewer { viewer { id } }", NULL, data,
				  err);
}

Test(client, sends_the_operation_to_the_graphql_endpoint_with_the_key)
{
	struct json_object *data = NULL;

	fake_transport_add(&fake, 200, "{\"data\":{\"viewer\":{\"id\":\"u1\"}}}");
	cr_assert_eq(query(&data, NULL), 0);
	cr_assert_str_eq(fake.urls[0], "http://w.example/graphql");
	cr_assert_str_eq(fake.keys[0], "secret-key-0123456789");
	cr_assert_str_eq(fake.bodies[0], "{\"query\":\"query Viewer { viewer { id } }\","
					 "\"variables\":{},\"operationName\":\"Viewer\"}");
	cr_assert_str_eq(json_object_to_json_string(data), "{ \"viewer\": { \"id\": \"u1\" } }");
	json_object_put(data);
}

Test(client, retries_503_and_connection_errors_then_succeeds)
{
	struct json_object *data = NULL;

	fake_transport_add(&fake, 503, "");
	fake_transport_add_error(&fake, -ECONNREFUSED);
	fake_transport_add(&fake, 200, "{\"data\":{}}");
	cr_assert_eq(query(&data, NULL), 0);
	cr_assert_eq(fake.calls, 3);
	json_object_put(data);
}

Test(client, retries_408_and_429)
{
	struct json_object *data = NULL;

	fake_transport_add(&fake, 408, "");
	fake_transport_add(&fake, 429, "");
	fake_transport_add(&fake, 200, "{\"data\":{}}");
	cr_assert_eq(query(&data, NULL), 0);
	cr_assert_eq(fake.calls, 3);
	json_object_put(data);
}

struct final_case {
	long status;
	int code;
	const char *msg;
};

static struct final_case final_cases[] = {
	{ 400, -EREMOTEIO, "HTTP 400 from 'http://w.example/graphql': W&B refused the request: bad doc" },
	{ 401, -EACCES, "W&B refused the API key (HTTP 401 from 'http://w.example/graphql')" },
	{ 403, -EACCES, "W&B refused the API key (HTTP 403 from 'http://w.example/graphql')" },
	{ 404, -ENOENT, "HTTP 404 from 'http://w.example/graphql'" },
	{ 422, -EREMOTEIO, "HTTP 422 from 'http://w.example/graphql'" },
	{ 501, -EREMOTEIO, "HTTP 501 from 'http://w.example/graphql'" },
};

ParameterizedTestParameters(client, final_statuses_are_not_retried)
{
	return cr_make_param_array(struct final_case, final_cases,
				   sizeof(final_cases) / sizeof(final_cases[0]));
}

ParameterizedTest(struct final_case *c, client, final_statuses_are_not_retried)
{
	struct json_object *data = NULL;
	struct wbs_error err = { 0 };

	fake_transport_add(&fake, c->status,
			   c->status == 400 ? "{\"errors\":[{\"message\":\"bad doc\"}]}" : "");
	fake_transport_add(&fake, 200, "{\"data\":{}}");
	cr_assert_eq(query(&data, &err), c->code);
	cr_assert_eq(fake.calls, 1);
	cr_assert_str_eq(err.msg, c->msg);
	cr_assert_eq(err.http_status, c->status);
	cr_assert_null(strstr(err.msg, "secret-key"));
}

Test(client, graphql_errors_in_a_200_are_final_and_quoted)
{
	struct json_object *data = NULL;
	struct wbs_error err = { 0 };

	fake_transport_add(&fake, 200,
			   "{\"data\":null,\"errors\":[{\"message\":\"a\"},{\"message\":\"b\"}]}");
	cr_assert_eq(query(&data, &err), -EREMOTEIO);
	cr_assert_str_eq(err.msg, "W&B refused the request: a; b");
	cr_assert_eq(fake.calls, 1);
}

Test(client, gives_up_after_max_retries_with_the_last_error)
{
	struct json_object *data = NULL;
	struct wbs_error err = { 0 };

	cr_assert_eq(wbs_config_set(&cfg, "max_retries", "2", NULL, NULL), 0);
	for (int i = 0; i < 5; i++)
		fake_transport_add(&fake, 502, "");
	cr_assert_eq(query(&data, &err), -EAGAIN);
	cr_assert_eq(fake.calls, 3);
	cr_assert_str_eq(err.msg, "W&B unavailable: HTTP 502 from 'http://w.example/graphql'");
}

Test(client, honours_retry_after)
{
	struct json_object *data = NULL;
	long start;

	cr_assert_eq(wbs_config_set(&cfg, "budget_ms", "3000", NULL, NULL), 0);
	fake.steps[fake.n_steps++] = (struct fake_step){ .status = 429, .body = "",
							 .retry_after_ms = 1000 };
	fake_transport_add(&fake, 200, "{\"data\":{}}");
	start = now_ms();
	cr_assert_eq(query(&data, NULL), 0);
	cr_assert_geq(now_ms() - start, 1000);
	cr_assert_eq(fake.calls, 2);
	json_object_put(data);
}

Test(client, never_waits_past_the_budget_for_retry_after)
{
	struct json_object *data = NULL;
	struct wbs_error err = { 0 };
	long start;

	cr_assert_eq(wbs_config_set(&cfg, "budget_ms", "500", NULL, NULL), 0);
	fake.steps[fake.n_steps++] = (struct fake_step){ .status = 503, .body = "",
							 .retry_after_ms = 30000 };
	fake_transport_add(&fake, 200, "{\"data\":{}}");
	start = now_ms();
	cr_assert_eq(query(&data, &err), -EAGAIN);
	cr_assert_lt(now_ms() - start, 200);
	cr_assert_eq(fake.calls, 1);
}

Test(client, each_attempt_gets_at_most_the_budget_left)
{
	struct json_object *data = NULL;

	cr_assert_eq(wbs_config_set(&cfg, "budget_ms", "800", NULL, NULL), 0);
	cr_assert_eq(wbs_config_set(&cfg, "request_timeout_ms", "5000", NULL, NULL), 0);
	fake_transport_add(&fake, 200, "{\"data\":{}}");
	cr_assert_eq(query(&data, NULL), 0);
	cr_assert_leq(fake.timeouts[0], 800);
	cr_assert_gt(fake.timeouts[0], 700);
	json_object_put(data);
}

Test(client, a_spent_budget_sends_nothing)
{
	struct json_object *data = NULL;
	struct wbs_error err = { 0 };

	cr_assert_eq(wbs_config_set(&cfg, "budget_ms", "1", NULL, NULL), 0);
	wbs_client_begin(fc);
	struct timespec ts = { 0, 5000000 };
	nanosleep(&ts, NULL);
	cr_assert_eq(wbs_client_graphql(fc, "Viewer", "query Viewer { viewer { id } }", NULL,
					&data, &err),
		     -ETIMEDOUT);
	cr_assert_eq(fake.calls, 0);
}

Test(client, file_stream_posts_to_the_run_path)
{
	struct json_object *body = json_tokener_parse("{\"preempting\":true}");
	struct wbs_error err = { 0 };

	fake_transport_add(&fake, 200, "{\"stopped\":false}");
	fake_transport_add(&fake, 404, "{\"error\":\"run not found\"}");
	cr_assert_eq(wbs_client_file_stream(fc, "ent", "my proj", "r1", body, &err), 0);
	cr_assert_str_eq(fake.urls[0], "http://w.example/files/ent/my%20proj/r1/file_stream");
	cr_assert_str_eq(fake.bodies[0], "{\"preempting\":true}");
	cr_assert_eq(wbs_client_file_stream(fc, "ent", "p", "r2", body, &err), -ENOENT);
	cr_assert_str_eq(err.msg, "W&B has no run 'ent/p/r2'");
	json_object_put(body);
}

/* ---- the same over real HTTP, against the emulator's faults ----------- */

static struct emu emu;
static struct wbs_client *http;

static void http_setup(void)
{
	struct wbs_transport t;

	emu_start(&emu);
	wbs_config_init(&cfg);
	cr_assert_eq(wbs_config_set(&cfg, "base_url", emu.url, NULL, NULL), 0);
	cr_assert_eq(wbs_config_set(&cfg, "budget_ms", "3000", NULL, NULL), 0);
	cr_assert_eq(wbs_transport_curl_init(&t, &cfg, NULL), 0);
	cr_assert_eq(wbs_client_new(&cfg, &t, emu.key, &http, NULL), 0);
}

static void http_teardown(void)
{
	wbs_client_free(http);
	wbs_config_release(&cfg);
	emu_stop(&emu);
}

TestSuite(http, .init = http_setup, .fini = http_teardown, .timeout = 30);

static int viewer(struct wbs_error *err, long *ret_ms)
{
	struct json_object *data = NULL;
	long start = now_ms();
	int r;

	wbs_client_begin(http);
	r = wbs_client_graphql(http, "Viewer", "query Viewer { viewer { entity } }", NULL, &data,
			       err);
	*ret_ms = now_ms() - start;
	json_object_put(data);
	return r;
}

Test(http, a_503_with_retry_after_is_retried_after_that_time)
{
	struct wbs_error err = { 0 };
	long ms;

	emu_fault(&emu, "{\"status\":503,\"retry_after\":\"1\"}");
	cr_assert_eq(viewer(&err, &ms), 0, "%s", err.msg);
	cr_assert_geq(ms, 1000);
	cr_assert_eq(wbs_client_attempts(http), 2);
}

Test(http, a_dropped_connection_is_retried)
{
	struct wbs_error err = { 0 };
	long ms;

	emu_fault(&emu, "{\"drop\":true,\"times\":2}");
	cr_assert_eq(viewer(&err, &ms), 0, "%s", err.msg);
	cr_assert_eq(wbs_client_attempts(http), 3);
}

Test(http, a_blackhole_costs_no_more_than_the_budget)
{
	struct wbs_error err = { 0 };
	long ms;

	cr_assert_eq(wbs_config_set(&cfg, "budget_ms", "700", NULL, NULL), 0);
	emu_fault(&emu, "{\"blackhole\":true,\"times\":-1}");
	cr_assert_eq(viewer(&err, &ms), -ETIMEDOUT);
	cr_assert_geq(ms, 650);
	cr_assert_lt(ms, 1000);
	cr_assert_not_null(strstr(err.msg, "W&B unavailable"), "%s", err.msg);
}

Test(http, an_oversized_reply_is_refused)
{
	struct wbs_error err = { 0 };
	long ms;

	emu_fault(&emu, "{\"oversize_bytes\":104857600}");
	cr_assert_eq(viewer(&err, &ms), -EMSGSIZE);
	cr_assert_not_null(strstr(err.msg, "is larger than 4194304 bytes"), "%s", err.msg);
	cr_assert_lt(ms, 3000);
}

Test(http, a_malformed_reply_is_retried_then_reported)
{
	struct wbs_error err = { 0 };
	long ms;

	emu_fault(&emu, "{\"malformed\":true,\"times\":-1}");
	cr_assert_eq(viewer(&err, &ms), -EPROTO);
	cr_assert_not_null(strstr(err.msg, "malformed reply from W&B"), "%s", err.msg);
	cr_assert_eq(wbs_client_attempts(http), 4); /* 1 + max_retries */
}

Test(http, a_truncated_reply_is_retried)
{
	struct wbs_error err = { 0 };
	long ms;

	emu_fault(&emu, "{\"truncate\":true}");
	cr_assert_eq(viewer(&err, &ms), 0, "%s", err.msg);
	cr_assert_eq(wbs_client_attempts(http), 2);
}

Test(http, a_slow_drip_is_cut_at_the_budget)
{
	struct wbs_error err = { 0 };
	long ms;

	cr_assert_eq(wbs_config_set(&cfg, "budget_ms", "800", NULL, NULL), 0);
	emu_fault(&emu, "{\"drip_ms\":200,\"times\":-1}");
	cr_assert_eq(viewer(&err, &ms), -ETIMEDOUT);
	cr_assert_lt(ms, 1200);
}

Test(http, the_user_agent_and_basic_auth_are_sent)
{
	struct wbs_error err = { 0 };
	struct json_object *log, *reqs, *req, *v;
	long ms;

	cr_assert_eq(viewer(&err, &ms), 0, "%s", err.msg);
	log = emu_get(&emu, "/_emu/requests");
	cr_assert(json_object_object_get_ex(log, "requests", &reqs));
	req = json_object_array_get_idx(reqs, 0);
	cr_assert(json_object_object_get_ex(req, "authorization_ok", &v));
	cr_assert(json_object_get_boolean(v));
	cr_assert(json_object_object_get_ex(req, "user_agent", &v));
	cr_assert_str_eq(json_object_get_string(v), "wbsched/" WBS_TEST_VERSION);
	json_object_put(log);
}
