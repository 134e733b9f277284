/* GraphQL request building and reply parsing: pure functions, no I/O. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "wbsched/cleanup.h"
#include "wbsched/error.h"
#include "wbsched/graphql.h"

int wbs_graphql_build_request(const char *operation_name, const char *query,
			      struct json_object *variables, char **ret_body,
			      struct wbs_error *err)
{
	_cleanup_json_ struct json_object *root = json_object_new_object();
	const char *text;
	char *body;

	if (!root)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	if (json_object_object_add(root, "query", json_object_new_string(query)) < 0 ||
	    json_object_object_add(root, "variables",
				   variables ? json_object_get(variables)
					     : json_object_new_object()) < 0 ||
	    json_object_object_add(root, "operationName",
				   json_object_new_string(operation_name)) < 0)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
							    JSON_C_TO_STRING_NOSLASHESCAPE);
	body = text ? strdup(text) : NULL;
	if (!body)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	*ret_body = body;
	return 0;
}

/* Joins the "message" members of the errors array into @buf. */
static void join_error_messages(struct json_object *errors, char *buf, size_t size)
{
	size_t n = json_object_array_length(errors);
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && used + 1 < size; i++) {
		struct json_object *e = json_object_array_get_idx(errors, i);
		struct json_object *m;
		const char *msg = "(no message)";
		int w;

		if (json_object_object_get_ex(e, "message", &m) &&
		    json_object_is_type(m, json_type_string))
			msg = json_object_get_string(m);
		w = snprintf(buf + used, size - used, "%s%s", i ? "; " : "", msg);
		if (w < 0)
			break;
		used += (size_t)w;
	}
}

int wbs_graphql_parse_response(const char *body, size_t len, struct json_object **ret_data,
			       struct wbs_error *err)
{
	_cleanup_json_ struct json_object *root = NULL;
	struct json_tokener *tok;
	struct json_object *errors, *data; /* borrowed from root */
	enum json_tokener_error jerr;

	tok = json_tokener_new_ex(64);
	if (!tok)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	root = json_tokener_parse_ex(tok, body, (int)len);
	jerr = json_tokener_get_error(tok);
	if (root && jerr == json_tokener_success && tok->char_offset != (int)len) {
		/* trailing garbage after the object: only white space is fine */
		for (size_t i = (size_t)tok->char_offset; i < len; i++) {
			if (!strchr(" \t\r\n", body[i])) {
				jerr = json_tokener_error_parse_unexpected;
				break;
			}
		}
	}
	json_tokener_free(tok);
	if (!root || jerr != json_tokener_success)
		return wbs_error_set(err, -EPROTO, "malformed reply from W&B: %s",
				     jerr == json_tokener_continue ? "truncated JSON"
								   : json_tokener_error_desc(jerr));
	if (!json_object_is_type(root, json_type_object))
		return wbs_error_set(err, -EPROTO, "malformed reply from W&B: not a JSON object");

	if (json_object_object_get_ex(root, "errors", &errors) &&
	    json_object_is_type(errors, json_type_array) &&
	    json_object_array_length(errors) > 0) {
		char msg[200];

		join_error_messages(errors, msg, sizeof(msg));
		return wbs_error_set(err, -EREMOTEIO, "W&B refused the request: %s", msg);
	}
	if (!json_object_object_get_ex(root, "data", &data) ||
	    !json_object_is_type(data, json_type_object))
		return wbs_error_set(err, -EPROTO, "malformed reply from W&B: no \"data\" object");
	*ret_data = json_object_get(data);
	return 0;
}

struct json_object *wbs_json_path(struct json_object *obj, const char *path)
{
	const char *p = path;

	while (obj && *p) {
		char key[64];
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);

		if (n >= sizeof(key) || !json_object_is_type(obj, json_type_object))
			return NULL;
		memcpy(key, p, n);
		key[n] = '\0';
		if (!json_object_object_get_ex(obj, key, &obj))
			return NULL;
		p += n + (dot ? 1 : 0);
	}
	return json_object_is_type(obj, json_type_null) ? NULL : obj;
}

const char *wbs_json_path_string(struct json_object *obj, const char *path)
{
	struct json_object *o = wbs_json_path(obj, path);

	return o && json_object_is_type(o, json_type_string) ? json_object_get_string(o) : NULL;
}
