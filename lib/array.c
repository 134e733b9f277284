/* Slurm job array specs, for creating an array's runs in one go. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "wbsched/array.h"
#include "wbsched/error.h"

/* Reads a task id (0 to 4000000, Slurm's own MaxArraySize cap) at *p. */
static bool read_id(const char **p, uint32_t *ret)
{
	unsigned long v = 0;
	const char *s = *p;

	if (*s < '0' || *s > '9')
		return false;
	for (; *s >= '0' && *s <= '9'; s++) {
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > 4000000)
			return false;
	}
	*p = s;
	*ret = (uint32_t)v;
	return true;
}

int wbs_array_parse(const char *spec, uint32_t **ret_ids, size_t *ret_n, struct wbs_error *err)
{
	uint32_t *ids = NULL;
	size_t n = 0, cap = 0;
	const char *p = spec;

	if (!spec || !*spec)
		return wbs_error_set(err, -EINVAL, "invalid array spec '': expected e.g. 0-9");
	for (;;) {
		uint32_t first, last, step = 1;

		if (!read_id(&p, &first))
			goto bad;
		last = first;
		if (*p == '-') {
			p++;
			if (!read_id(&p, &last) || last < first)
				goto bad;
			if (*p == ':') {
				p++;
				if (!read_id(&p, &step) || step == 0)
					goto bad;
			}
		}
		for (uint64_t i = first; i <= last; i += step) {
			if (n == WBS_ARRAY_MAX_TASKS) {
				free(ids);
				return wbs_error_set(err, -EINVAL,
						     "array spec '%s' names more than %d tasks", spec,
						     WBS_ARRAY_MAX_TASKS);
			}
			if (n == cap) {
				uint32_t *bigger;

				cap = cap ? cap * 2 : 64;
				bigger = realloc(ids, cap * sizeof(*ids));
				if (!bigger) {
					free(ids);
					return wbs_error_set(err, -ENOMEM, "out of memory");
				}
				ids = bigger;
			}
			ids[n++] = (uint32_t)i;
		}
		if (*p == ',') {
			p++;
			continue;
		}
		if (*p == '%') {
			uint32_t limit;

			p++;
			if (!read_id(&p, &limit))
				goto bad;
		}
		if (*p)
			goto bad;
		break;
	}
	*ret_ids = ids;
	*ret_n = n;
	return 0;
bad:
	free(ids);
	return wbs_error_set(err, -EINVAL,
			     "invalid array spec '%s': expected ids and ranges such as 0-15:4,20%%2",
			     spec);
}
