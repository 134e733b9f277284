#ifndef WBS_GRAPHQL_H
#define WBS_GRAPHQL_H

#include <stddef.h>

struct json_object;
struct wbs_error;

/*
 * Pure request/response handling, no I/O.
 *
 * Builds the body {"query":..., "variables":..., "operationName":...}.
 * @variables is borrowed (NULL: {}).  *ret_body: caller frees with free().
 */
int wbs_graphql_build_request(const char *operation_name, const char *query,
			      struct json_object *variables, char **ret_body,
			      struct wbs_error *err);

/*
 * Parses a GraphQL reply.  On success *ret_data holds a new reference to the
 * "data" object (caller json_object_put()s it).  A reply that is not a JSON
 * object, or has no "data" object, gives -EPROTO; a reply with "errors" gives
 * -EREMOTEIO with the messages joined by "; " in err->msg.
 */
int wbs_graphql_parse_response(const char *body, size_t len, struct json_object **ret_data,
			       struct wbs_error *err);

/*
 * Borrowed lookup of a nested member by a '.'-separated path
 * ("upsertBucket.bucket.id"); NULL when any step is missing or null.
 */
struct json_object *wbs_json_path(struct json_object *obj, const char *path);

/* The string at @path, or NULL (borrowed from @obj). */
const char *wbs_json_path_string(struct json_object *obj, const char *path);

#endif /* WBS_GRAPHQL_H */
