#ifndef WBS_FAKE_TRANSPORT_H
#define WBS_FAKE_TRANSPORT_H

#include <stddef.h>

#include "wbsched/transport.h"

/*
 * A scripted transport: each post() consumes the next step.  A step answers
 * with an HTTP status and body (and a Retry-After in ms, -1 for none), or
 * fails with a transport error code.  Every request body and URL is recorded.
 */
struct fake_step {
	int code; /* < 0: the post fails with this code */
	long status;
	const char *body;
	long retry_after_ms;
};

#define FAKE_MAX_STEPS 16

struct fake_transport {
	struct fake_step steps[FAKE_MAX_STEPS];
	size_t n_steps;
	size_t calls;
	char *urls[FAKE_MAX_STEPS];
	char *bodies[FAKE_MAX_STEPS];
	char *keys[FAKE_MAX_STEPS];
	long timeouts[FAKE_MAX_STEPS];
};

/* @fake is borrowed and must outlive the transport; release frees the records. */
void fake_transport_init(struct fake_transport *fake, struct wbs_transport *ret);
void fake_transport_add(struct fake_transport *fake, long status, const char *body);
void fake_transport_add_error(struct fake_transport *fake, int code);
void fake_transport_release(struct fake_transport *fake);

#endif
