#ifndef WBS_ERROR_H
#define WBS_ERROR_H

#include <stdbool.h>

/*
 * Every fallible function returns 0 on success or a negative errno-style code.
 * When the caller passes a non-NULL @err, the *first* failure also leaves a
 * one-line human-readable explanation there (first error wins, as with curl's
 * CURLOPT_ERRORBUFFER).  Callers branch on the code, humans read err->msg.
 *
 * Codes the library uses, and what a caller should do with them:
 *   -EINVAL        bad configuration, argument or run path: fix the input
 *   -ENOENT        a file, key or run that does not exist
 *   -EACCES        W&B refused the credentials (HTTP 401/403), or a key file is unsafe
 *   -ETIMEDOUT     the operation's time budget ran out
 *   -ECONNREFUSED, -EHOSTUNREACH, -ECONNRESET  W&B cannot be reached
 *   -EAGAIN        W&B answered 408, 429 or 5xx every time it was asked
 *   -EPROTO        W&B's reply was malformed (not JSON, truncated, wrong shape)
 *   -EMSGSIZE      W&B's reply was larger than the reply size cap
 *   -EREMOTEIO     W&B answered and refused the request (GraphQL errors, 4xx)
 *   -EPERM         the run's current state does not allow the change
 *   -ENOMEM        out of memory
 */
struct wbs_error {
	int code;	  /* negative errno, 0 while unset */
	long http_status; /* 0 unless the failure came with an HTTP status */
	char msg[256];	  /* no trailing newline, never contains secrets */
};

/*
 * Records the error (if @err is non-NULL and still empty) and returns @code,
 * so callers can write: return wbs_error_set(err, -EINVAL, "bad '%s'", k);
 */
int wbs_error_set(struct wbs_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Forgets a recorded error, so the next wbs_error_set() is recorded again. */
void wbs_error_clear(struct wbs_error *err);

/* True when @code means W&B could not be reached or did not answer usably. */
bool wbs_error_is_unavailable(int code);

#endif /* WBS_ERROR_H */
