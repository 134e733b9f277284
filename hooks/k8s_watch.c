/*
 * The Kubernetes API as the pod sees it: GET with a bearer token read just
 * before each request (bound service-account tokens rotate, research §1.8),
 * and a watch on the pod itself that reports why it is going away.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "wbsched/clock.h"
#include "wbsched/cleanup.h"
#include "wbsched/client.h"
#include "wbsched/error.h"
#include "wbsched/graphql.h"
#include "wbsched/log.h"

#include "http.h"
#include "k8s.h"

#define MAX_REPLY        (4u << 20)
#define MAX_TOKEN        (64u << 10)
#define WATCH_SECONDS    300
#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS   15000

/* The bearer token, trailing white space removed; caller wipes and frees. */
static int read_token(const char *path, char **ret, struct wbs_error *err)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	char *buf;
	size_t n;

	if (!f) {
		int e = errno;

		return wbs_error_set(err, -e, "cannot read the service-account token '%s': %s",
				     path, strerror(e));
	}
	buf = malloc(MAX_TOKEN + 1);
	if (!buf)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	n = fread(buf, 1, MAX_TOKEN, f);
	buf[n] = '\0';
	while (n > 0 && strchr(" \t\r\n", buf[n - 1]))
		buf[--n] = '\0';
	if (n == 0 || n == MAX_TOKEN || strpbrk(buf, "\r\n")) {
		explicit_bzero(buf, MAX_TOKEN);
		free(buf);
		return wbs_error_set(err, -EINVAL, "the service-account token '%s' is malformed",
				     path);
	}
	*ret = buf;
	return 0;
}

static void wipe_free(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

/* One request; on 401 the token is read again and the request sent once more. */
static int request(const struct k8s_env *env, const char *path, long timeout_ms,
		   int (*on_line)(void *, char *, size_t), void *userdata, struct wd_http_resp *ret,
		   struct wbs_error *err)
{
	_cleanup_free_ char *url = NULL;

	if (asprintf(&url, "%s%s", env->api_url, path) < 0) {
		url = NULL;
		return wbs_error_set(err, -ENOMEM, "out of memory");
	}
	for (int attempt = 0;; attempt++) {
		struct wd_http_resp resp = { 0 };
		char *token = NULL, *auth = NULL;
		int r = read_token(env->token_file, &token, err);

		if (r < 0 || !token)
			return r < 0 ? r : -EINVAL;
		if (asprintf(&auth, "Authorization: Bearer %s", token) < 0) {
			wipe_free(token);
			return wbs_error_set(err, -ENOMEM, "out of memory");
		}
		wipe_free(token);
		const char *headers[] = { auth, "Accept: application/json", NULL };
		struct wd_http_req req = {
			.url = url,
			.headers = headers,
			.ca_file = env->ca_file,
			.connect_timeout_ms = timeout_ms < 2000 ? timeout_ms : 2000,
			.timeout_ms = timeout_ms,
			.max_reply = MAX_REPLY,
			.on_line = on_line,
			.userdata = userdata,
		};
		r = wd_http_do(&req, &resp, err);
		wipe_free(auth);
		if (r < 0)
			return r;
		if (resp.status == 401 && attempt == 0) {
			wbs_debug("kubernetes: 401 for '%s', reading the token again", path);
			wd_http_resp_release(&resp);
			continue;
		}
		*ret = resp;
		return 0;
	}
}

/* Maps a non-200 answer (a Status object) to a code and a message. */
static int status_error(const struct wd_http_resp *resp, const char *path, struct wbs_error *err)
{
	_cleanup_json_ struct json_object *st = json_tokener_parse(resp->body);
	const char *msg = wbs_json_path_string(st, "message");
	int code;

	switch (resp->status) {
	case 404:
		code = -ENOENT;
		break;
	case 401:
	case 403:
		code = -EACCES;
		break;
	case 410:
		code = -ESTALE;
		break;
	default:
		code = resp->status == 429 || resp->status >= 500 ? -EAGAIN : -EREMOTEIO;
	}
	wbs_error_set(err, code, "GET '%s': HTTP %ld%s%.160s", path, resp->status, msg ? ": " : "",
		      msg ? msg : "");
	if (err)
		err->http_status = resp->status;
	return code;
}

int k8s_get(const struct k8s_env *env, const char *path, long timeout_ms, struct json_object **ret,
	    struct wbs_error *err)
{
	struct wd_http_resp resp = { 0 };
	struct json_object *o;
	int r = request(env, path, timeout_ms, NULL, NULL, &resp, err);

	if (r < 0)
		return r;
	if (resp.status != 200) {
		r = status_error(&resp, path, err);
		wd_http_resp_release(&resp);
		return r;
	}
	o = json_tokener_parse(resp.body);
	wd_http_resp_release(&resp);
	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return wbs_error_set(err, -EPROTO, "GET '%s': the reply is not a JSON object",
				     path);
	}
	*ret = o;
	return 0;
}

static char *pod_path(const struct k8s_env *env)
{
	char *p;

	if (asprintf(&p, "/api/v1/namespaces/%s/pods/%s", env->namespace, env->pod) < 0)
		return NULL;
	return p;
}

/* Reads the Job and the Kueue Workloads of a pod being deleted, and tells why. */
static void resolve_deletion(const struct k8s_env *env, struct json_object *pod, long timeout_ms,
			     struct k8s_verdict *ret)
{
	_cleanup_json_ struct json_object *job = NULL, *workloads = NULL;
	_cleanup_free_ char *path = NULL, *uid_q = NULL;
	const char *name = NULL, *uid = NULL;
	struct wbs_error err = { 0 };
	int status = k8s_pod_owner_job(pod, &name, &uid);

	if (!uid) {
		struct json_object *v = NULL;

		if (json_object_object_get_ex(wbs_json_path(pod, "metadata.labels"),
					      "batch.kubernetes.io/controller-uid", &v) &&
		    json_object_is_type(v, json_type_string))
			uid = json_object_get_string(v);
	}
	if (status == 0) {
		if (asprintf(&path, "/apis/batch/v1/namespaces/%s/jobs/%s", env->namespace, name) <
		    0)
			path = NULL;
		status = path ? k8s_get(env, path, timeout_ms, &job, &err) : -ENOMEM;
		if (status < 0 && status != K8S_JOB_GONE)
			wbs_debug("kubernetes: %s", err.msg);
	}
	uid_q = uid ? wbs_url_escape(uid) : NULL;
	/* Kueue serves v1beta2 on new installs, v1beta1 on older ones; absent: 404. */
	for (int v = 2; uid_q && v >= 1 && !workloads; v--) {
		int r;

		free(path);
		if (asprintf(&path,
			     "/apis/kueue.x-k8s.io/v1beta%d/namespaces/%s/workloads"
			     "?labelSelector=kueue.x-k8s.io%%2Fjob-uid%%3D%s",
			     v, env->namespace, uid_q) < 0) {
			path = NULL;
			break;
		}
		wbs_error_clear(&err);
		r = k8s_get(env, path, timeout_ms, &workloads, &err);
		if (r < 0 && r != -ENOENT)
			wbs_debug("kubernetes: %s", err.msg);
		if (r < 0 && r != -ENOENT)
			break;
	}
	k8s_classify_deletion(job, status, workloads, ret);
}

int k8s_check_pod(const struct k8s_env *env, long timeout_ms, struct k8s_verdict *ret,
		  struct wbs_error *err)
{
	_cleanup_json_ struct json_object *pod = NULL;
	_cleanup_free_ char *path = pod_path(env);
	int r;

	if (!path)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	r = k8s_get(env, path, timeout_ms, &pod, err);
	if (r < 0)
		return r;
	k8s_classify_pod(pod, ret);
	if (ret->cause == WD_CAUSE_DELETING)
		resolve_deletion(env, pod, timeout_ms, ret);
	return 0;
}

/* ---- the watch --------------------------------------------------------- */

struct watcher {
	const struct k8s_env *env;
	int fd;
	char rv[64];                 /* the last resourceVersion seen */
	struct k8s_verdict last;     /* the last one reported */
	struct k8s_verdict deletion; /* once the deletion's cause is known */
	bool deletion_known;
	struct json_object *pending; /* a pod being deleted, whose Job must be read */
	bool relist, gone, closed;
	unsigned events;
};

static void report(struct watcher *w, const struct k8s_verdict *v)
{
	char line[WD_NOTICE_MAX];
	int n;

	if (v->cause == WD_CAUSE_NONE ||
	    (v->cause == w->last.cause && strcmp(v->text, w->last.text) == 0))
		return;
	n = wd_notice_format(v->cause, v->text, line, sizeof(line));
	for (int off = 0; n > 0 && off < n;) {
		ssize_t k = write(w->fd, line + off, (size_t)(n - off));

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			w->closed = true; /* the watchdog is gone */
			return;
		}
		off += (int)k;
	}
	w->last = *v;
}

static void keep_rv(struct watcher *w, struct json_object *obj)
{
	const char *rv = wbs_json_path_string(obj, "metadata.resourceVersion");

	if (rv && strlen(rv) < sizeof(w->rv))
		strcpy(w->rv, rv);
}

/* Returns true when the pod is being deleted and its Job must be read first. */
static bool on_pod(struct watcher *w, struct json_object *pod)
{
	struct k8s_verdict v;

	keep_rv(w, pod);
	k8s_classify_pod(pod, &v);
	if (v.cause == WD_CAUSE_DELETING) {
		if (!w->deletion_known) {
			report(w, &v);
			return true;
		}
		v = w->deletion;
	}
	report(w, &v);
	return false;
}

static void resolve(struct watcher *w, struct json_object *pod)
{
	resolve_deletion(w->env, pod, 3000, &w->deletion);
	w->deletion_known = w->deletion.cause != WD_CAUSE_DELETING;
	report(w, &w->deletion);
}

/* One event of the watch stream: {"type": ..., "object": {...}}. */
static int on_line(void *userdata, char *line, size_t len)
{
	struct watcher *w = userdata;
	_cleanup_json_ struct json_object *ev = NULL;
	struct json_object *obj;
	const char *type;

	if (len == 0)
		return 0;
	ev = json_tokener_parse(line);
	type = wbs_json_path_string(ev, "type");
	obj = wbs_json_path(ev, "object");
	w->events++;
	if (!type || !obj || strcmp(type, "ERROR") == 0) {
		/* 410 Gone (resourceVersion too old) or garbage: list again */
		w->relist = true;
		return 1;
	}
	if (strcmp(type, "BOOKMARK") == 0) {
		keep_rv(w, obj);
		return 0;
	}
	if (strcmp(type, "DELETED") == 0) {
		(void)on_pod(w, obj);
		w->gone = true;
		return 1;
	}
	if (on_pod(w, obj)) {
		w->pending = json_object_get(obj);
		return 1; /* read the Job outside libcurl's callback */
	}
	return w->closed;
}

static int watch_once(struct watcher *w, struct wbs_error *err)
{
	struct wd_http_resp resp = { 0 };
	_cleanup_free_ char *path = NULL;
	int r;

	if (asprintf(&path,
		     "/api/v1/namespaces/%s/pods?watch=1&fieldSelector=metadata.name%%3D%s"
		     "&resourceVersion=%s&allowWatchBookmarks=true&timeoutSeconds=%d",
		     w->env->namespace, w->env->pod, w->rv, WATCH_SECONDS) < 0) {
		path = NULL;
		return wbs_error_set(err, -ENOMEM, "out of memory");
	}
	r = request(w->env, path, (WATCH_SECONDS + 30) * 1000L, on_line, w, &resp, err);
	if (r < 0)
		return r;
	if (resp.status == 410)
		w->relist = true;
	else if (resp.status != 200)
		r = status_error(&resp, path, err);
	wd_http_resp_release(&resp);
	return r;
}

void k8s_watch_pod(const struct k8s_env *env, int fd)
{
	struct watcher w = { .env = env, .fd = fd, .relist = true };
	_cleanup_free_ char *list_path = NULL;
	long backoff = BACKOFF_FIRST_MS;
	bool seen = false, warned = false;

	if (asprintf(&list_path, "/api/v1/namespaces/%s/pods?fieldSelector=metadata.name%%3D%s",
		     env->namespace, env->pod) < 0) {
		list_path = NULL;
		return;
	}
	wbs_debug("kubernetes: watching pod '%s/%s' at %s", env->namespace, env->pod, env->api_url);
	while (!w.closed && !w.gone) {
		struct wbs_error err = { 0 };
		long started = wbs_now_ms();
		unsigned events = w.events;
		int r = 0;

		if (w.pending) {
			resolve(&w, w.pending);
			json_object_put(TAKE_PTR(w.pending));
			continue;
		}
		if (w.relist) {
			/*
			 * A list, not a GET: the list's resourceVersion is the
			 * current one, while the pod's own may be too old to watch
			 * from (410 Gone again and again).
			 */
			_cleanup_json_ struct json_object *list = NULL;
			struct json_object *items, *pod;
			const char *rv;

			r = k8s_get(env, list_path, 5000, &list, &err);
			items = r == 0 ? wbs_json_path(list, "items") : NULL;
			if (r == 0 && (!items || !json_object_is_type(items, json_type_array))) {
				r = wbs_error_set(&err, -EPROTO,
						  "kubernetes: the pod list has no items");
			} else if (r == 0 && json_object_array_length(items) == 0) {
				if (!seen)
					wbs_warning(
						"kubernetes: pod '%s/%s' not found; not watching it",
						env->namespace, env->pod);
				break;
			} else if (r == 0) {
				pod = json_object_array_get_idx(items, 0);
				seen = true;
				w.relist = false;
				if (on_pod(&w, pod))
					resolve(&w, pod);
				rv = wbs_json_path_string(list, "metadata.resourceVersion");
				if (rv && strlen(rv) < sizeof(w.rv))
					strcpy(w.rv, rv);
			}
		}
		if (r == 0 && !w.relist && !w.closed)
			r = watch_once(&w, &err);
		if (r < 0) {
			wbs_log(warned ? WBS_LOG_DEBUG : WBS_LOG_WARNING, "kubernetes: %s",
				err.msg);
			warned = true;
			wbs_sleep_ms(backoff);
			backoff = backoff * 2 < BACKOFF_MAX_MS ? backoff * 2 : BACKOFF_MAX_MS;
			w.relist = true;
			continue;
		}
		if (warned)
			wbs_info("kubernetes: reading pod '%s/%s' again", env->namespace, env->pod);
		warned = false;
		backoff = BACKOFF_FIRST_MS;
		/* A watch that ends at once with nothing in it must not spin. */
		if (w.events == events && wbs_now_ms() - started < 200)
			wbs_sleep_ms(200);
	}
	json_object_put(w.pending);
}
