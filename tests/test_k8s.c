/*
 * The watchdog's pure parts, in-process: the end-state rule (watchdog.c),
 * the pod, Job and Workload classification and the run id (k8s.c), the
 * cloud metadata parsers (cloud.c).  The lifecycles through real processes
 * are in test_watchdog.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <json-c/json.h>

#include "wbsched/cleanup.h"

#include "cloud.h"
#include "k8s.h"
#include "watchdog.h"

TestSuite(k8s, .timeout = 5);

struct decide_case {
	bool signaled;
	int code;
	bool term;
	enum wd_cause cause;
	const char *text;
	enum wd_end end;
	int status;
	const char *reason;
};

static struct decide_case decide_cases[] = {
	{ false, 0, false, WD_CAUSE_NONE, NULL, WD_END_FINISHED, 0, "" },
	{ false, 3, false, WD_CAUSE_NONE, NULL, WD_END_FAILED, 3, "exit code 3" },
	{ true, 9, false, WD_CAUSE_NONE, NULL, WD_END_FAILED, 137, "killed by signal 9 (SIGKILL)" },
	{ false, 143, true, WD_CAUSE_NONE, NULL, WD_END_PREEMPTED, 143,
	  "SIGTERM with no known cause" },
	{ false, 0, true, WD_CAUSE_NONE, NULL, WD_END_PREEMPTED, 0,
	  "SIGTERM with no known cause; exit code 0 after SIGTERM does not count as finished" },
	{ true, 15, true, WD_CAUSE_PREEMPTED, "preempted by X", WD_END_PREEMPTED, 143,
	  "preempted by X" },
	{ false, 0, false, WD_CAUSE_SPOT, "spot", WD_END_FINISHED, 0, "" },
	{ false, 1, false, WD_CAUSE_SPOT, "spot", WD_END_PREEMPTED, 1, "spot" },
	{ false, 143, true, WD_CAUSE_DELETING, "deleting", WD_END_PREEMPTED, 143, "deleting" },
	{ false, 143, true, WD_CAUSE_DELETED, "the pod was deleted", WD_END_FAILED, 143,
	  "the pod was deleted; exit code 143" },
	{ false, 0, true, WD_CAUSE_DELETED, "the pod was deleted", WD_END_FAILED, 0,
	  "the pod was deleted; exit code 0 after SIGTERM" },
	{ false, 0, false, WD_CAUSE_DELETED, "the pod was deleted", WD_END_FINISHED, 0, "" },
	{ false, 2, false, WD_CAUSE_DELETED, "the pod was deleted", WD_END_FAILED, 2,
	  "the pod was deleted; exit code 2" },
};

ParameterizedTestParameters(k8s, decide)
{
	return cr_make_param_array(struct decide_case, decide_cases, ELEMENTSOF(decide_cases));
}

ParameterizedTest(struct decide_case *c, k8s, decide)
{
	struct wd_facts f = { c->signaled, c->code, c->term, c->cause, c->text };
	struct wd_outcome out;

	wd_decide(&f, &out);
	cr_assert_eq(out.end, c->end, "case %d/%d/%s", c->code, c->term, wd_cause_name(c->cause));
	cr_assert_eq(out.exit_status, c->status);
	cr_assert_str_eq(out.reason, c->reason);
}

struct pod_case {
	const char *pod;
	enum wd_cause cause;
	const char *text;
};

#define DT(reason, msg)                                                                 \
	"{\"type\":\"DisruptionTarget\",\"status\":\"True\",\"reason\":\"" reason "\"," \
	"\"message\":\"" msg "\"}"
#define DEL "\"metadata\":{\"deletionTimestamp\":\"2026-01-01T00:00:00Z\"}"

static struct pod_case pod_cases[] = {
	{ "{\"status\":{\"phase\":\"Running\"}}", WD_CAUSE_NONE, "" },
	{ "{" DEL "}", WD_CAUSE_DELETING, "the pod is being deleted" },
	{ "{" DEL ",\"status\":{\"conditions\":[" DT("PreemptionByScheduler", "m") "]}}",
	  WD_CAUSE_PREEMPTED, "preempted by the scheduler (PreemptionByScheduler): m" },
	/* not yet deleted: a PodDisruptionBudget may still call it off */
	{ "{\"status\":{\"conditions\":[" DT("EvictionByEvictionAPI", "m") "]}}", WD_CAUSE_NONE,
	  "" },
	{ "{" DEL ",\"status\":{\"conditions\":[" DT("DeletionByTaintManager", "t") "]}}",
	  WD_CAUSE_EVICTED,
	  "deleted by the taint manager (node failing) (DeletionByTaintManager): t" },
	{ "{" DEL ",\"status\":{\"conditions\":[" DT("DeletionByPodGC", "") "]}}", WD_CAUSE_EVICTED,
	  "deleted by the pod garbage collector (node gone) (DeletionByPodGC)" },
	{ "{\"status\":{\"conditions\":[" DT("TerminationByKubelet",
					     "The node was low on resource: memory.") "]}}",
	  WD_CAUSE_EVICTED,
	  "terminated by the kubelet (node pressure) (TerminationByKubelet): The node was low on resource: memory." },
	{ "{\"status\":{\"reason\":\"Terminated\",\"conditions\":[" DT("TerminationByKubelet",
								       "x") "]}}",
	  WD_CAUSE_SHUTDOWN, "node shutdown (TerminationByKubelet): x" },
	{ "{\"status\":{\"phase\":\"Failed\",\"reason\":\"Evicted\",\"message\":\"low on memory\"}}",
	  WD_CAUSE_EVICTED, "evicted by the kubelet (node pressure) (Evicted): low on memory" },
	{ "{" DEL
	  ",\"status\":{\"conditions\":[{\"type\":\"TerminationTarget\",\"status\":\"True\","
	  "\"reason\":\"WorkloadEvicted\",\"message\":\"Preempted\"}]}}",
	  WD_CAUSE_PREEMPTED, "stopped by Kueue (WorkloadEvicted): Preempted" },
	{ "{" DEL ",\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\","
	  "\"reason\":\"Evict\",\"message\":\"Pod is evicted, because of preempt\"}]}}",
	  WD_CAUSE_PREEMPTED, "evicted by Volcano (Evict): Pod is evicted, because of preempt" },
};

ParameterizedTestParameters(k8s, classify_pod)
{
	return cr_make_param_array(struct pod_case, pod_cases, ELEMENTSOF(pod_cases));
}

ParameterizedTest(struct pod_case *c, k8s, classify_pod)
{
	struct json_object *pod = json_tokener_parse(c->pod);
	struct k8s_verdict v;

	cr_assert_not_null(pod, "%s", c->pod);
	k8s_classify_pod(pod, &v);
	cr_assert_eq(v.cause, c->cause, "%s: got %s", c->pod, wd_cause_name(v.cause));
	cr_assert_str_eq(v.text, c->text);
	json_object_put(pod);
}

Test(k8s, classify_deletion_reads_job_and_workload)
{
	struct json_object *job = json_tokener_parse("{\"spec\":{\"suspend\":false}}");
	struct json_object *suspended = json_tokener_parse(
		"{\"spec\":{\"suspend\":true},\"status\":{\"conditions\":[{\"type\":\"Suspended\","
		"\"status\":\"True\",\"reason\":\"JobSuspended\",\"message\":\"Job suspended\"}]}}");
	struct json_object *wl = json_tokener_parse(
		"{\"items\":[{\"status\":{\"conditions\":[{\"type\":\"Evicted\",\"status\":\"True\","
		"\"reason\":\"Preempted\",\"message\":\"short\"}]}}]}");
	struct json_object *failed = json_tokener_parse(
		"{\"spec\":{},\"status\":{\"conditions\":[{\"type\":\"Failed\",\"status\":\"True\","
		"\"reason\":\"DeadlineExceeded\",\"message\":\"Job was active longer than specified deadline\"}]}}");
	struct k8s_verdict v;

	k8s_classify_deletion(job, K8S_JOB_FOUND, NULL, &v);
	cr_assert_eq(v.cause, WD_CAUSE_DELETED);
	k8s_classify_deletion(suspended, K8S_JOB_FOUND, NULL, &v);
	cr_assert_eq(v.cause, WD_CAUSE_PREEMPTED);
	cr_assert_str_eq(
		v.text,
		"the Job was suspended (a queue took it back) (JobSuspended): Job suspended");
	k8s_classify_deletion(job, K8S_JOB_FOUND, wl, &v);
	cr_assert_str_eq(v.text, "preempted by Kueue (Preempted): short");
	k8s_classify_deletion(failed, K8S_JOB_FOUND, NULL, &v);
	cr_assert_eq(v.cause, WD_CAUSE_DELETED);
	cr_assert_str_eq(
		v.text,
		"the Job failed (DeadlineExceeded): Job was active longer than specified deadline");
	k8s_classify_deletion(NULL, K8S_JOB_GONE, NULL, &v);
	cr_assert_str_eq(v.text, "the Job was deleted");
	k8s_classify_deletion(NULL, K8S_JOB_NO_OWNER, NULL, &v);
	cr_assert_eq(v.cause, WD_CAUSE_DELETED);
	k8s_classify_deletion(NULL, -EACCES, NULL, &v);
	cr_assert_eq(v.cause, WD_CAUSE_DELETING);
	json_object_put(job);
	json_object_put(suspended);
	json_object_put(wl);
	json_object_put(failed);
}

Test(k8s, notice_lines_round_trip_without_control_characters)
{
	char line[WD_NOTICE_MAX], copy[WD_NOTICE_MAX];
	enum wd_cause cause;
	const char *text;
	int n = wd_notice_format(WD_CAUSE_EVICTED, "a\nb\tc", line, sizeof(line));

	cr_assert_eq(n, (int)strlen("evicted a b c\n"));
	cr_assert_str_eq(line, "evicted a b c\n");
	snprintf(copy, sizeof(copy), "%.*s", n - 1, line);
	cr_assert_eq(wd_notice_parse(copy, &cause, &text), 0);
	cr_assert_eq(cause, WD_CAUSE_EVICTED);
	cr_assert_str_eq(text, "a b c");
	snprintf(copy, sizeof(copy), "bogus text");
	cr_assert_eq(wd_notice_parse(copy, &cause, &text), -EINVAL);
}

Test(k8s, api_url_brackets_ipv6_hosts)
{
	char *u = k8s_api_url("10.96.0.1", "443");

	cr_assert_str_eq(u, "https://10.96.0.1:443");
	free(u);
	u = k8s_api_url("fd00:10:96::1", "443");
	cr_assert_str_eq(u, "https://[fd00:10:96::1]:443");
	free(u);
}

Test(k8s, run_id_prefers_wandb_run_id)
{
	char id[80];

	unsetenv("WANDB_RUN_ID");
	unsetenv("JOB_UID");
	unsetenv("JOB_COMPLETION_INDEX");
	cr_assert_eq(k8s_run_id(id, sizeof(id)), -ENOENT);
	setenv("JOB_UID", "u-1", 1);
	cr_assert_eq(k8s_run_id(id, sizeof(id)), 0);
	cr_assert_str_eq(id, "u-1");
	setenv("JOB_COMPLETION_INDEX", "4", 1);
	cr_assert_eq(k8s_run_id(id, sizeof(id)), 0);
	cr_assert_str_eq(id, "u-1-4");
	setenv("WANDB_RUN_ID", "mine", 1);
	cr_assert_eq(k8s_run_id(id, sizeof(id)), 0);
	cr_assert_str_eq(id, "mine");
	cr_assert_eq(k8s_run_id(id, 3), -ENAMETOOLONG);
}

Test(k8s, cloud_replies_are_parsed)
{
	char text[160];
	unsigned mask;

	cr_assert_eq(cloud_gce_notice("FALSE", text, sizeof(text)), 0);
	cr_assert_eq(cloud_gce_notice("TRUE", text, sizeof(text)), 1);
	cr_assert_eq(cloud_gce_notice("<html>", text, sizeof(text)), -EPROTO);
	cr_assert_eq(
		cloud_aws_notice("{\"action\":\"hibernate\",\"time\":\"T\"}", text, sizeof(text)),
		1);
	cr_assert_str_eq(text, "AWS spot interruption notice: hibernate at T");
	cr_assert_eq(cloud_aws_notice("nope", text, sizeof(text)), -EPROTO);
	cr_assert_eq(cloud_azure_notice("{\"DocumentIncarnation\":1,\"Events\":[]}", NULL, text,
					sizeof(text)),
		     0);
	cr_assert_eq(cloud_azure_notice("{\"Events\":[{\"EventType\":\"Preempt\",\"EventId\":\"e\","
					"\"Resources\":[\"other\"]}]}",
					"mine", text, sizeof(text)),
		     0);
	cr_assert_eq(cloud_azure_notice(
			     "{\"Events\":[{\"EventType\":\"Reboot\"},{\"EventType\":\"Preempt\","
			     "\"EventId\":\"e\",\"Resources\":[\"mine\"]}]}",
			     "mine", text, sizeof(text)),
		     1);
	cr_assert_str_eq(text, "Azure scheduled event Preempt (e)");
	cr_assert_eq(cloud_parse_list("gce, azure", &mask, NULL), 0);
	cr_assert_eq(mask, CLOUD_GCE | CLOUD_AZURE);
	cr_assert_eq(cloud_parse_list("none", &mask, NULL), 0);
	cr_assert_eq(mask, 0u);
	cr_assert_eq(cloud_parse_list("gce,ibm", &mask, NULL), -EINVAL);
}
