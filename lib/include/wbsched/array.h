#ifndef WBS_ARRAY_H
#define WBS_ARRAY_H

#include <stddef.h>
#include <stdint.h>

struct wbs_error;

#define WBS_ARRAY_MAX_TASKS 100000

/*
 * Expands a Slurm job array spec ("0-2", "1,3,5", "0-15:4", "1-7:2%2") into
 * task ids, in the order given, at most WBS_ARRAY_MAX_TASKS of them.  A
 * trailing "%N" (how many run at once) is ignored.  *ret_ids: caller frees
 * with free().  -EINVAL with a message naming the spec on bad input.
 */
int wbs_array_parse(const char *spec, uint32_t **ret_ids, size_t *ret_n, struct wbs_error *err);

#endif /* WBS_ARRAY_H */
