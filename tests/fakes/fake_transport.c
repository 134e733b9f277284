#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wbsched/error.h"

#include "fakes/fake_transport.h"

static int fake_post(void *ctx, const struct wbs_http_request *req,
		     struct wbs_http_response *ret_resp, struct wbs_error *err)
{
	struct fake_transport *fake = ctx;
	size_t i = fake->calls++;
	const struct fake_step *step;

	if (i < FAKE_MAX_STEPS) {
		fake->urls[i] = strdup(req->url);
		fake->bodies[i] = strndup(req->body, req->body_len);
		fake->keys[i] = req->api_key ? strdup(req->api_key) : NULL;
		fake->timeouts[i] = req->timeout_ms;
	}
	if (i >= fake->n_steps)
		return wbs_error_set(err, -ECONNREFUSED, "fake transport: no step %zu scripted", i);
	step = &fake->steps[i];
	if (step->code < 0)
		return wbs_error_set(err, step->code, "fake transport error %d", step->code);
	*ret_resp = (struct wbs_http_response){
		.status = step->status,
		.body = strdup(step->body ? step->body : ""),
		.body_len = step->body ? strlen(step->body) : 0,
		.retry_after_ms = step->retry_after_ms,
	};
	return 0;
}

static void fake_free(void *ctx)
{
	(void)ctx; /* the fake is owned by the test */
}

static const struct wbs_transport_ops fake_ops = {
	.post = fake_post,
	.free = fake_free,
};

void fake_transport_init(struct fake_transport *fake, struct wbs_transport *ret)
{
	*fake = (struct fake_transport){ 0 };
	*ret = (struct wbs_transport){ .ops = &fake_ops, .ctx = fake };
}

void fake_transport_add(struct fake_transport *fake, long status, const char *body)
{
	if (fake->n_steps < FAKE_MAX_STEPS)
		fake->steps[fake->n_steps++] =
			(struct fake_step){ .status = status, .body = body, .retry_after_ms = -1 };
}

void fake_transport_add_error(struct fake_transport *fake, int code)
{
	if (fake->n_steps < FAKE_MAX_STEPS)
		fake->steps[fake->n_steps++] = (struct fake_step){ .code = code, .retry_after_ms = -1 };
}

void fake_transport_release(struct fake_transport *fake)
{
	for (size_t i = 0; i < FAKE_MAX_STEPS; i++) {
		free(fake->urls[i]);
		free(fake->bodies[i]);
		free(fake->keys[i]);
	}
	*fake = (struct fake_transport){ 0 };
}
