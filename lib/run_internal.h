#ifndef WBS_RUN_INTERNAL_H
#define WBS_RUN_INTERNAL_H

/* Shared by run.c and transition.c; not part of the library's interface. */

struct json_object;

#define OOM(err) wbs_error_set(err, -ENOMEM, "out of memory")

/* Adds @key: @s to @obj, or null when @s is NULL; -ENOMEM on failure. */
int run_json_add_string(struct json_object *obj, const char *key, const char *s);

#endif
