#ifndef WBS_RUNID_H
#define WBS_RUNID_H

#include <stddef.h>

struct wbs_error;

#define WBS_RUN_ID_LEN	   8  /* generated ids, as the SDK makes them */
#define WBS_RUN_ID_MAX_LEN 64 /* W&B's limit on any run id */

/* Writes 8 characters of [a-z0-9] from getrandom() and a NUL into @ret. */
int wbs_run_id_generate(char ret[WBS_RUN_ID_LEN + 1], struct wbs_error *err);

/*
 * Checks a run id given by a user: 1 to 64 characters, no white space or
 * control characters, none of the characters W&B refuses (: ; , # ? / ' and
 * also \ " % so the id is safe in a URL path).  -EINVAL with the reason.
 */
int wbs_run_id_validate(const char *id, struct wbs_error *err);

/*
 * Checks an entity or project name: 1 to 128 characters, no '/', white space
 * or control characters.  @what names it in the message ("entity").
 */
int wbs_name_validate(const char *what, const char *name, struct wbs_error *err);

#endif /* WBS_RUNID_H */
