#ifndef WBS_CLIENT_H
#define WBS_CLIENT_H

struct json_object;
struct wbs_config;
struct wbs_error;
struct wbs_transport;

/*
 * A connection to W&B: the transport, the API key and the time budget of the
 * operation under way.  Every request is retried on connection errors, 408,
 * 429 and 5xx with exponential backoff and jitter, honouring Retry-After, and
 * never past the operation's deadline; 400, 401, 403, 404 and 422 are final.
 */
struct wbs_client;

/*
 * @cfg is borrowed and must outlive the client.  Takes ownership of
 * @transport (also on failure; the struct is zeroed).  @api_key is copied.
 * The first operation's budget starts now.
 */
int wbs_client_new(const struct wbs_config *cfg, struct wbs_transport *transport,
		   const char *api_key, struct wbs_client **ret, struct wbs_error *err);

/* Wipes the key copy and frees everything; NULL is a no-op. */
void wbs_client_free(struct wbs_client *client);

/* Starts a new operation: its deadline is now + cfg->budget_ms. */
void wbs_client_begin(struct wbs_client *client);

/* Starts a new operation with a shorter budget: min(@budget_ms, cfg->budget_ms). */
void wbs_client_begin_ms(struct wbs_client *client, long budget_ms);

/* Milliseconds left in the current operation's budget (0 when spent). */
long wbs_client_remaining_ms(const struct wbs_client *client);

/*
 * Runs one GraphQL operation.  @variables is borrowed.  On success *ret_data
 * holds a new reference to the reply's "data" object (caller
 * json_object_put()s it).  Errors: -EACCES (401/403), -EREMOTEIO (GraphQL
 * errors or another final status), -EPROTO / -EMSGSIZE (bad reply),
 * -ETIMEDOUT (budget spent), -ECONNREFUSED and friends (W&B unreachable).
 */
int wbs_client_graphql(struct wbs_client *client, const char *operation_name, const char *query,
		       struct json_object *variables, struct json_object **ret_data,
		       struct wbs_error *err);

/*
 * POSTs @body (borrowed) to the run's file_stream endpoint
 * <base_url>/files/<entity>/<project>/<run_id>/file_stream.  -ENOENT on 404.
 */
int wbs_client_file_stream(struct wbs_client *client, const char *entity, const char *project,
			   const char *run_id, struct json_object *body, struct wbs_error *err);

/* HTTP attempts sent so far (for tests and benchmarks). */
unsigned long wbs_client_attempts(const struct wbs_client *client);

const struct wbs_config *wbs_client_config(const struct wbs_client *client);

/*
 * Percent-encodes @s for one URL path segment or query value: only RFC 3986
 * unreserved characters stay.  Caller frees; NULL when out of memory.
 */
char *wbs_url_escape(const char *s);

#endif /* WBS_CLIENT_H */
