#ifndef WBS_PLUGIN_EXEC_H
#define WBS_PLUGIN_EXEC_H

#include <stdbool.h>
#include <sys/types.h>

struct wbs_error;

/*
 * Running the wbsched binary from inside Slurm: the plugin never talks to
 * W&B itself (no libcurl in slurmd or slurmstepd), it runs a child with a
 * hard deadline.  The API key never passes through here: the child reads it
 * (site api_key_file as root, or the user's own key after dropping to the
 * user) and never sees it in argv.
 */
struct plugin_exec {
	const char *path;   /* the wbsched binary */
	char *const *argv;  /* argv[0] included, NULL-terminated */
	char *const *envp;  /* the child's whole environment */
	bool drop;	    /* run as @uid/@gid (the plugin runs as root) */
	uid_t uid;
	gid_t gid;
	long deadline_ms;   /* SIGKILL after this long */
	bool detach;	    /* do not wait: the child outlives the caller (sbatch) */
	bool keep_stderr;   /* the child writes to our stderr instead of the log */
};

/*
 * Runs the child.  Waits (unless detached) until it exits or the deadline
 * passes, then kills it; its stderr lines go to the log, at warning level
 * when it fails.  *ret_status: its exit code, 128 + signal when killed,
 * -1 when unknown (detached).  Fails only when the child cannot be started.
 */
int plugin_exec(const struct plugin_exec *x, int *ret_status, struct wbs_error *err);

#endif
