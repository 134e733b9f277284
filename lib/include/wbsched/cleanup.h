#ifndef WBS_CLEANUP_H
#define WBS_CLEANUP_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <json-c/json.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void freep(void *p)
{
	free(*(void **)p);
	*(void **)p = NULL;
}
#define _cleanup_free_ _cleanup_(freep)

static inline void json_object_putp(struct json_object **o)
{
	if (*o)
		(void)json_object_put(*o);
	*o = NULL;
}
#define _cleanup_json_ _cleanup_(json_object_putp)

static inline void fclosep(FILE **f)
{
	if (*f)
		(void)fclose(*f);
	*f = NULL;
}
#define _cleanup_fclose_ _cleanup_(fclosep)

static inline void closep(int *fd)
{
	if (*fd >= 0)
		(void)close(*fd);
	*fd = -1;
}
#define _cleanup_close_ _cleanup_(closep)

#define TAKE_PTR(p)                         \
	({                                  \
		__typeof__(p) _take_ = (p); \
		(p) = NULL;                 \
		_take_;                     \
	})

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

#endif /* WBS_CLEANUP_H */
