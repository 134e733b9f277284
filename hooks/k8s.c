/*
 * Kubernetes without the network: the pod's environment, the run id of a
 * Job, and why a pod is going away, read from pod, Job and Workload objects
 * (shared/research/k8s-and-anchors.md §1.4, §1.8, §1.9, §2.3).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <json-c/json.h>

#include "wbsched/cleanup.h"
#include "wbsched/error.h"
#include "wbsched/graphql.h"

#include "k8s.h"

#define OOM(err) wbs_error_set(err, -ENOMEM, "out of memory")

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

/* A DNS-1123 name (pods, namespaces): [a-z0-9.-], 1 to 253 characters. */
static bool is_k8s_name(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= 253 && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789.-") == n;
}

char *k8s_api_url(const char *host, const char *port)
{
	bool v6 = strchr(host, ':') && host[0] != '[';
	char *url;

	if (asprintf(&url, "https://%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "", port) < 0)
		return NULL;
	return url;
}

/* Reads a small text file, trailing white space removed; caller frees. */
static int read_small_file(const char *path, char **ret)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	char buf[512];
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	while (n > 0 && strchr(" \t\r\n", buf[n - 1]))
		buf[--n] = '\0';
	*ret = strdup(buf);
	return *ret ? 0 : -ENOMEM;
}

void k8s_env_release(struct k8s_env *env)
{
	if (!env)
		return;
	free(env->api_url);
	free(env->token_file);
	free(env->ca_file);
	free(env->namespace);
	free(env->pod);
	*env = (struct k8s_env){ 0 };
}

int k8s_env_load(struct k8s_env *ret, struct wbs_error *err)
{
	const char *host = env_nonempty("KUBERNETES_SERVICE_HOST");
	const char *port = env_nonempty("KUBERNETES_SERVICE_PORT");
	const char *token = env_nonempty("WBSCHED_K8S_TOKEN_FILE");
	const char *ca = env_nonempty("WBSCHED_K8S_CA_FILE");
	const char *ns = env_nonempty("POD_NAMESPACE");
	const char *pod = env_nonempty("POD_NAME");
	struct k8s_env e = { 0 };
	_cleanup_free_ char *ns_file = NULL;
	const char *slash;
	int r;

	if (!host)
		return wbs_error_set(
			err, -ENOENT,
			"not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set)");
	if (!port)
		port = "443";
	if (strspn(port, "0123456789") != strlen(port) || strlen(port) > 5)
		return wbs_error_set(err, -EINVAL, "invalid KUBERNETES_SERVICE_PORT '%s'", port);
	if (strspn(host, "0123456789abcdefABCDEF.:-[]") != strlen(host) &&
	    strspn(host, "abcdefghijklmnopqrstuvwxyz0123456789.-") != strlen(host))
		return wbs_error_set(err, -EINVAL, "invalid KUBERNETES_SERVICE_HOST '%s'", host);
	if (!token)
		token = K8S_SERVICEACCOUNT_DIR "/token";
	if (access(token, R_OK) < 0)
		return wbs_error_set(
			err, -ENOENT,
			"no service-account token at '%s' (automountServiceAccountToken: false?)",
			token);
	if (!ca && access(K8S_SERVICEACCOUNT_DIR "/ca.crt", R_OK) == 0)
		ca = K8S_SERVICEACCOUNT_DIR "/ca.crt";
	if (!pod)
		pod = env_nonempty("HOSTNAME");
	if (!pod)
		return wbs_error_set(err, -ENOENT, "the pod's name is unknown: set POD_NAME");
	if (!is_k8s_name(pod))
		return wbs_error_set(err, -EINVAL, "invalid pod name '%s'", pod);
	if (!ns) {
		slash = strrchr(token, '/');
		if (asprintf(&ns_file, "%.*snamespace", slash ? (int)(slash - token + 1) : 0,
			     token) < 0) {
			ns_file = NULL;
			return OOM(err);
		}
	}

	e.api_url = k8s_api_url(host, port);
	e.token_file = strdup(token);
	e.ca_file = ca ? strdup(ca) : NULL;
	e.pod = strdup(pod);
	if (ns) {
		e.namespace = strdup(ns);
	} else {
		r = read_small_file(ns_file, &e.namespace);
		if (r < 0 && r != -ENOMEM) {
			k8s_env_release(&e);
			return wbs_error_set(
				err, -ENOENT,
				"the pod's namespace is unknown: set POD_NAMESPACE or mount '%s'",
				ns_file);
		}
	}
	if (!e.api_url || !e.token_file || (ca && !e.ca_file) || !e.pod || !e.namespace) {
		k8s_env_release(&e);
		return OOM(err);
	}
	if (!is_k8s_name(e.namespace)) {
		r = wbs_error_set(err, -EINVAL, "invalid namespace '%s'", e.namespace);
		k8s_env_release(&e);
		return r;
	}
	*ret = e;
	return 0;
}

int k8s_run_id(char *buf, size_t size)
{
	const char *id = env_nonempty("WANDB_RUN_ID");
	const char *uid = env_nonempty("JOB_UID");
	const char *index = env_nonempty("JOB_COMPLETION_INDEX");
	int n;

	if (id)
		n = snprintf(buf, size, "%s", id);
	else if (uid && index && strspn(index, "0123456789") == strlen(index))
		n = snprintf(buf, size, "%s-%s", uid, index);
	else if (uid)
		n = snprintf(buf, size, "%s", uid);
	else
		return -ENOENT;
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* ---- classification ---------------------------------------------------- */

/* The condition of @type in @obj's status.conditions whose status is "True". */
static struct json_object *true_condition(struct json_object *obj, const char *type)
{
	struct json_object *list = wbs_json_path(obj, "status.conditions");

	if (!list || !json_object_is_type(list, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(list); i++) {
		struct json_object *c = json_object_array_get_idx(list, i);
		const char *t = wbs_json_path_string(c, "type");
		const char *s = wbs_json_path_string(c, "status");

		if (t && s && strcmp(t, type) == 0 && strcmp(s, "True") == 0)
			return c;
	}
	return NULL;
}

static const char *str_or(const char *s, const char *fallback)
{
	return s && *s ? s : fallback;
}

static void verdict(struct k8s_verdict *v, enum wd_cause cause, const char *what,
		    const char *reason, const char *message)
{
	v->cause = cause;
	(void)snprintf(v->text, sizeof(v->text), "%s%s%s%s%s%s", what, reason ? " (" : "",
		       reason ? reason : "", reason ? ")" : "", message && *message ? ": " : "",
		       message && *message ? message : "");
}

static bool mentions_shutdown(const char *s)
{
	return s && strcasestr(s, "shutdown");
}

static const struct {
	const char *reason;
	enum wd_cause cause;
	const char *what;
} disruptions[] = {
	{ "PreemptionByScheduler", WD_CAUSE_PREEMPTED, "preempted by the scheduler" },
	{ "EvictionByEvictionAPI", WD_CAUSE_EVICTED, "evicted through the Eviction API (a drain)" },
	{ "DeletionByTaintManager", WD_CAUSE_EVICTED,
	  "deleted by the taint manager (node failing)" },
	{ "DeletionByDeviceTaintManager", WD_CAUSE_EVICTED,
	  "deleted by the device taint manager (device failing)" },
	{ "DeletionByPodGC", WD_CAUSE_EVICTED, "deleted by the pod garbage collector (node gone)" },
};

void k8s_classify_pod(struct json_object *pod, struct k8s_verdict *ret)
{
	bool deleting = wbs_json_path(pod, "metadata.deletionTimestamp") != NULL;
	const char *sreason = wbs_json_path_string(pod, "status.reason");
	const char *smessage = wbs_json_path_string(pod, "status.message");
	struct json_object *c = true_condition(pod, "DisruptionTarget");

	*ret = (struct k8s_verdict){ .cause = WD_CAUSE_NONE };
	if (c) {
		const char *reason = str_or(wbs_json_path_string(c, "reason"), "DisruptionTarget");
		const char *message = wbs_json_path_string(c, "message");

		/* The kubelet acts at once and sets no deletionTimestamp first. */
		if (strcmp(reason, "TerminationByKubelet") == 0) {
			if (mentions_shutdown(message) || mentions_shutdown(smessage) ||
			    (sreason && strcmp(sreason, "Terminated") == 0))
				verdict(ret, WD_CAUSE_SHUTDOWN, "node shutdown", reason, message);
			else
				verdict(ret, WD_CAUSE_EVICTED,
					"terminated by the kubelet (node pressure)", reason,
					message);
			return;
		}
		/* Others may still be called off (a PodDisruptionBudget): wait for the deletion. */
		if (!deleting)
			return;
		for (size_t i = 0; i < ELEMENTSOF(disruptions); i++) {
			if (strcmp(reason, disruptions[i].reason) == 0) {
				verdict(ret, disruptions[i].cause, disruptions[i].what, reason,
					message);
				return;
			}
		}
		verdict(ret, WD_CAUSE_EVICTED, "disrupted", reason, message);
		return;
	}
	if (deleting && (c = true_condition(pod, "TerminationTarget"))) {
		verdict(ret, WD_CAUSE_PREEMPTED, "stopped by Kueue",
			str_or(wbs_json_path_string(c, "reason"), "TerminationTarget"),
			wbs_json_path_string(c, "message"));
		return;
	}
	if (deleting) {
		struct json_object *list = wbs_json_path(pod, "status.conditions");

		for (size_t i = 0; list && json_object_is_type(list, json_type_array) &&
				   i < json_object_array_length(list);
		     i++) {
			struct json_object *r = json_object_array_get_idx(list, i);
			const char *reason = wbs_json_path_string(r, "reason");

			if (reason && strcmp(reason, "Evict") == 0) {
				verdict(ret, WD_CAUSE_PREEMPTED, "evicted by Volcano", reason,
					wbs_json_path_string(r, "message"));
				return;
			}
		}
	}
	if (sreason && strcmp(sreason, "Evicted") == 0) {
		verdict(ret, WD_CAUSE_EVICTED, "evicted by the kubelet (node pressure)", sreason,
			smessage);
		return;
	}
	if (sreason && (strcmp(sreason, "Terminated") == 0 || strcmp(sreason, "Shutdown") == 0 ||
			strcmp(sreason, "NodeShutdown") == 0)) {
		verdict(ret, WD_CAUSE_SHUTDOWN, "node shutdown", sreason, smessage);
		return;
	}
	if (deleting)
		verdict(ret, WD_CAUSE_DELETING, "the pod is being deleted", NULL, NULL);
}

void k8s_classify_deletion(struct json_object *job, int job_status, struct json_object *workloads,
			   struct k8s_verdict *ret)
{
	struct json_object *items = wbs_json_path(workloads, "items"), *c;

	for (size_t i = 0; items && json_object_is_type(items, json_type_array) &&
			   i < json_object_array_length(items);
	     i++) {
		struct json_object *w = json_object_array_get_idx(items, i);
		struct json_object *evicted = true_condition(w, "Evicted");
		struct json_object *preempted = true_condition(w, "Preempted");

		if (evicted) {
			verdict(ret, WD_CAUSE_PREEMPTED, "preempted by Kueue",
				str_or(wbs_json_path_string(evicted, "reason"), "Evicted"),
				wbs_json_path_string(preempted ? preempted : evicted, "message"));
			return;
		}
	}
	switch (job_status) {
	case K8S_JOB_FOUND:
		break;
	case K8S_JOB_GONE:
		verdict(ret, WD_CAUSE_DELETED, "the Job was deleted", NULL, NULL);
		return;
	case K8S_JOB_NO_OWNER:
		verdict(ret, WD_CAUSE_DELETED, "the pod was deleted (no disruption condition)",
			NULL, NULL);
		return;
	default:
		verdict(ret, WD_CAUSE_DELETING,
			"the pod is being deleted (its Job could not be read)", NULL, NULL);
		return;
	}
	if (wbs_json_path(job, "metadata.deletionTimestamp")) {
		verdict(ret, WD_CAUSE_DELETED, "the Job was deleted", NULL, NULL);
		return;
	}
	if (json_object_get_boolean(wbs_json_path(job, "spec.suspend"))) {
		c = true_condition(job, "Suspended");
		verdict(ret, WD_CAUSE_PREEMPTED, "the Job was suspended (a queue took it back)",
			c ? str_or(wbs_json_path_string(c, "reason"), NULL) : NULL,
			c ? wbs_json_path_string(c, "message") : NULL);
		return;
	}
	c = true_condition(job, "FailureTarget");
	if (!c)
		c = true_condition(job, "Failed");
	if (c) {
		verdict(ret, WD_CAUSE_DELETED, "the Job failed",
			str_or(wbs_json_path_string(c, "reason"), NULL),
			wbs_json_path_string(c, "message"));
		return;
	}
	verdict(ret, WD_CAUSE_DELETED,
		"the pod was deleted (no disruption condition, the Job is not suspended)", NULL,
		NULL);
}

int k8s_pod_owner_job(struct json_object *pod, const char **ret_name, const char **ret_uid)
{
	struct json_object *refs = wbs_json_path(pod, "metadata.ownerReferences");

	for (size_t i = 0; refs && json_object_is_type(refs, json_type_array) &&
			   i < json_object_array_length(refs);
	     i++) {
		struct json_object *o = json_object_array_get_idx(refs, i);
		const char *kind = wbs_json_path_string(o, "kind");
		const char *name = wbs_json_path_string(o, "name");

		if (kind && name && strcmp(kind, "Job") == 0 &&
		    json_object_get_boolean(wbs_json_path(o, "controller")) && is_k8s_name(name)) {
			*ret_name = name;
			*ret_uid = wbs_json_path_string(o, "uid");
			return 0;
		}
	}
	return -ENXIO;
}
