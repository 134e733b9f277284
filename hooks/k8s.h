#ifndef WBS_HOOK_K8S_H
#define WBS_HOOK_K8S_H

#include <errno.h>
#include <stddef.h>

#include "watchdog.h"

struct json_object;
struct wbs_error;

/*
 * The pod reading itself from the Kubernetes API server: where the server
 * is, who the pod is (k8s.c, no network), why it is going away (pure
 * classification of pod, Job and Kueue Workload objects), and the requests
 * and the watch (k8s_watch.c).
 */

#define K8S_SERVICEACCOUNT_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

/* Strings owned by the struct. */
struct k8s_env {
	char *api_url;    /* "https://HOST:PORT", an IPv6 HOST in brackets */
	char *token_file; /* read again before every request (tokens rotate) */
	char *ca_file;    /* NULL: the system store */
	char *namespace;
	char *pod;
};

/*
 * Reads the environment: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT
 * (default 443); the token WBSCHED_K8S_TOKEN_FILE (default
 * K8S_SERVICEACCOUNT_DIR/token), which must be readable; the CA
 * WBSCHED_K8S_CA_FILE (default ca.crt beside the default token); the
 * namespace POD_NAMESPACE (else the file "namespace" beside the token); the
 * pod POD_NAME (else HOSTNAME).  -ENOENT with the reason when the process is
 * not in a pod that can read itself, -EINVAL for malformed values.
 */
int k8s_env_load(struct k8s_env *ret, struct wbs_error *err);
void k8s_env_release(struct k8s_env *env);

/* "https://HOST:PORT" with an IPv6 HOST bracketed; caller frees.  NULL on ENOMEM. */
char *k8s_api_url(const char *host, const char *port);

/*
 * The run id of this pod: WANDB_RUN_ID when set; else the Job's UID
 * (JOB_UID, from the label batch.kubernetes.io/controller-uid through the
 * Downward API), plus "-N" for JOB_COMPLETION_INDEX of an Indexed Job.
 * -ENOENT when none is set, -ENAMETOOLONG when @size is too small.
 */
int k8s_run_id(char *buf, size_t size);

struct k8s_verdict {
	enum wd_cause cause;
	char text[200]; /* for the run's wbsched/reason */
};

/*
 * Why the pod is going away, from the pod alone: a DisruptionTarget
 * condition (acted on once the pod is being deleted, or at once for the
 * kubelet's TerminationByKubelet), Kueue's TerminationTarget, Volcano's
 * Evict, a kubelet status reason (Evicted, Terminated), else DELETING when it
 * has a deletionTimestamp (look at its Job next), else NONE.
 */
void k8s_classify_pod(struct json_object *pod, struct k8s_verdict *ret);

/* How k8s_classify_deletion() got the owner Job. */
#define K8S_JOB_FOUND    0
#define K8S_JOB_GONE     (-ENOENT) /* 404: the Job was deleted */
#define K8S_JOB_NO_OWNER (-ENXIO)  /* the pod has no controlling Job */

/*
 * Tells a deletion's cause from the owner Job (@job_status one of the above,
 * or another negative code when the lookup failed) and the Kueue Workload
 * list (may be NULL): a Workload Evicted or a suspended Job is a preemption;
 * a Job being deleted, past its deadline, or nothing at all is a deletion.
 * A failed lookup leaves DELETING.
 */
void k8s_classify_deletion(struct json_object *job, int job_status, struct json_object *workloads,
			   struct k8s_verdict *ret);

/* The controlling Job of @pod: its name and UID (borrowed), or -ENXIO. */
int k8s_pod_owner_job(struct json_object *pod, const char **ret_name, const char **ret_uid);

/*
 * GETs @path (starting with '/') with the bearer token read just before; on
 * 401 reads the token again and retries once.  On 200 *ret holds the parsed
 * object (caller json_object_put()s it).  -ENOENT (404), -EACCES (401, 403),
 * -ESTALE (410), -EAGAIN (429, 5xx), -EREMOTEIO (another status), -EPROTO
 * (not JSON), or a transport code.  Replies are capped at 4 MiB.
 */
int k8s_get(const struct k8s_env *env, const char *path, long timeout_ms, struct json_object **ret,
	    struct wbs_error *err);

/*
 * Looks at the pod once (GET, then its Job and Workload when it is being
 * deleted), within about @timeout_ms per request.
 */
int k8s_check_pod(const struct k8s_env *env, long timeout_ms, struct k8s_verdict *ret,
		  struct wbs_error *err);

/*
 * The watching helper's body: reads the pod, watches it
 * (?watch=1&fieldSelector=metadata.name=POD, resumed from the last
 * resourceVersion, re-listed after 410 Gone), and writes a notice line
 * (wd_notice_format()) to @fd whenever the verdict changes.  Returns when
 * the pod is gone or @fd is closed; errors are retried with a backoff from
 * 0.5 s to 15 s.
 */
void k8s_watch_pod(const struct k8s_env *env, int fd);

#endif /* WBS_HOOK_K8S_H */
