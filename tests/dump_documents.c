/*
 * Prints every GraphQL document the library can send, one JSON line each
 * ({"name": ..., "query": ...}), for tests/emulator/validate.js.
 */
#include <stdio.h>

#include <json-c/json.h>

#include "wbsched/error.h"
#include "wbsched/run.h"

int main(void)
{
	struct wbs_graphql_doc *docs;
	struct wbs_error err = { 0 };
	size_t n;

	if (wbs_run_documents(&docs, &n, &err) < 0) {
		fprintf(stderr, "dump_documents: %s\n", err.msg);
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "name", json_object_new_string(docs[i].name));
		json_object_object_add(o, "query", json_object_new_string(docs[i].query));
		puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
	}
	wbs_run_documents_free(docs, n);
	return 0;
}
