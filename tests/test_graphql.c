/* GraphQL request building and reply parsing: pure functions, plain strings. */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <json-c/json.h>

#include "wbsched/error.h"
#include "wbsched/graphql.h"

TestSuite(graphql, .timeout = 5);

Test(graphql, builds_query_variables_and_operation_name)
{
	struct json_object *vars = json_tokener_parse("{\"name\":\"a/b\\\"c\"}");
	char *body = NULL;

	cr_assert_eq(wbs_graphql_build_request("Op", "query Op($name: String!) { x }", vars, &body,
					       NULL),
		     0);
	cr_assert_str_eq(body, "{\"query\":\"query Op($name: String!) { x }\","
			       "\"variables\":{\"name\":\"a/b\\\"c\"},\"operationName\":\"Op\"}");
	free(body);
	json_object_put(vars);
}

Test(graphql, returns_the_data_object)
{
	const char *reply = "{\"data\":{\"viewer\":{\"entity\":\"me\"}}}";
	struct json_object *data = NULL;

	cr_assert_eq(wbs_graphql_parse_response(reply, strlen(reply), &data, NULL), 0);
	cr_assert_str_eq(wbs_json_path_string(data, "viewer.entity"), "me");
	cr_assert_null(wbs_json_path(data, "viewer.nothing"));
	json_object_put(data);
}

struct bad_reply {
	const char *body;
	int code;
	const char *msg;
};

static struct bad_reply bad_replies[] = {
	{ "", -EPROTO, "malformed reply from W&B: truncated JSON" },
	{ "{\"data\":{\"a\":1", -EPROTO, "malformed reply from W&B: truncated JSON" },
	{ "<html>502</html>", -EPROTO, "malformed reply from W&B: unexpected character" },
	{ "[1,2]", -EPROTO, "malformed reply from W&B: not a JSON object" },
	{ "{\"data\":null}", -EPROTO, "malformed reply from W&B: no \"data\" object" },
	{ "{\"data\":{}} trailing", -EPROTO, "malformed reply from W&B: unexpected character" },
	{ "{\"errors\":[{\"message\":\"invalid state transition from finished to pending\"}]}",
	  -EREMOTEIO, "W&B refused the request: invalid state transition from finished to pending" },
	{ "{\"errors\":[{\"message\":\"a\"},{\"nomessage\":1}],\"data\":null}", -EREMOTEIO,
	  "W&B refused the request: a; (no message)" },
};

ParameterizedTestParameters(graphql, refuses_bad_replies_with_a_clear_message)
{
	return cr_make_param_array(struct bad_reply, bad_replies,
				   sizeof(bad_replies) / sizeof(bad_replies[0]));
}

ParameterizedTest(struct bad_reply *c, graphql, refuses_bad_replies_with_a_clear_message)
{
	struct json_object *data = NULL;
	struct wbs_error err = { 0 };

	cr_assert_eq(wbs_graphql_parse_response(c->body, strlen(c->body), &data, &err), c->code,
		     "%s", c->body);
	cr_assert(strncmp(err.msg, c->msg, strlen(c->msg)) == 0, "got '%s'", err.msg);
	cr_assert_null(data);
}

Test(graphql, the_first_error_wins)
{
	struct json_object *data = NULL;
	struct wbs_error err = { 0 };

	wbs_error_set(&err, -EINVAL, "first");
	cr_assert_eq(wbs_graphql_parse_response("x", 1, &data, &err), -EPROTO);
	cr_assert_str_eq(err.msg, "first");
	cr_assert_eq(err.code, -EINVAL);
}
