#ifndef WBS_TEST_SLURM_HARNESS_H
#define WBS_TEST_SLURM_HARNESS_H

/*
 * A real single-node Slurm cluster (tests/slurm/up.sh) with spank_wbsched.so
 * in its plugstack, pointed at a W&B emulator (harness.h), for one test.
 * Everything asserts with Criterion on failure.
 *
 * Clean-up is guaranteed: slurm_up() forks a guardian that runs down.sh and
 * stops the emulator if the test process dies without calling slurm_down()
 * (crash, Criterion timeout).  WBS_SLURM_KEEP=1 keeps the test's directory
 * (cluster logs in DIR/c/log, job output in DIR/c/jobs).
 */
#include <stdbool.h>
#include <sys/types.h>

#include "harness.h"

struct json_object;

/* The W&B project every test's plugstack line names. */
#define SLURM_PROJECT "slurmtest"
/* The run path of a run id in that project (the emulator's default entity). */
#define RUN_PATH(id) "emu-user/" SLURM_PROJECT "/" id

/* The non-root submitter made by tests/slurm/ensure-user.sh. */
#define TEST_USER "wbstest"

struct slurm_opts {
	const char *preempt;	 /* NULL, "requeue" or "cancel" (WBS_SLURM_PREEMPT) */
	const char *plugin_args; /* more key=value words for the plugstack line */
	const char *base_url;	 /* instead of the emulator's URL */
	bool no_key_file;	 /* no api_key_file= in the plugstack line */
	const char *up_env;	 /* "NAME=value ..." for up.sh (WBS_SLURM_* knobs) */
	bool test_user;		 /* make TEST_USER usable on this cluster */
};

struct slurm {
	struct emu *emu;
	char base[64];	     /* the test's temporary directory */
	char dir[96];	     /* the cluster directory (base/c) */
	char conf[128];	     /* its slurm.conf (SLURM_CONF) */
	char jobs[128];	     /* job scripts and output; mode 1777 */
	char key_file[96];   /* the emulator's key, root 0600 */
	char plugstack[128]; /* the plugstack.conf given to up.sh */
	char args[1024];     /* the plugstack words after the .so path */
	char spool_dir[96];  /* the plugin's spool_dir (wbsched's default is machine-wide) */
	char spool_env[128]; /* "WBSCHED_SPOOL_DIR=<spool_dir>", for wbsched run by a test */
	bool up;
	int guard_fd;
	pid_t guard_pid;
};

/*
 * The spank_wbsched.so and the wbsched binary under test: the build tree's,
 * unless WBS_TEST_PLUGIN / WBS_TEST_WBSCHED name others (installed files).
 */
const char *slurm_test_plugin(void);
const char *slurm_test_wbsched(void);

/*
 * Skips the test (cr_skip_test) unless it runs as root with the Slurm
 * daemons installed; then starts the cluster against @emu (already started).
 */
void slurm_up(struct slurm *s, struct emu *emu, const struct slurm_opts *o);
/* Stops the cluster (down.sh) and removes the directory.  Idempotent. */
void slurm_down(struct slurm *s);

/* ---- commands ------------------------------------------------------------ */

struct sh_result {
	int status; /* exit code, 128 + signal, or -1 on timeout */
	char *out;  /* stdout and stderr, merged */
	long elapsed_ms;
};

/*
 * /bin/sh -c COMMAND in the cluster's environment (SLURM_CONF, no SLURM_* or
 * WANDB_* from outside), killed after @timeout_s.  Returns when the shell
 * exits (not when every descendant has closed the output), so the time of a
 * command that leaves a detached child behind is the command's own.
 */
void sh_run(struct sh_result *r, int timeout_s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void sh_release(struct sh_result *r);
/* sh_run that must exit 0; returns its output (caller frees). */
char *sh_ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* How a job is submitted. */
struct submit {
	const char *user;   /* NULL: root; else runuser -u USER with a clean environment */
	bool no_key;	    /* no WANDB_API_KEY in the submitter's environment */
	const char *env;    /* more "NAME=value ..." words for the submitter's environment */
	long *elapsed_ms;   /* if set: how long sbatch took */
};

/*
 * sbatch --parsable -o JOBS/job-%j.out ARGS, in JOBS, as root with
 * WANDB_API_KEY=<the emulator's key> exported.  Returns the job id.
 */
unsigned slurm_sbatch(struct slurm *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
unsigned slurm_sbatch_ex(struct slurm *s, const struct submit *how, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The command line prefix slurm_sbatch uses for srun/salloc: "cd JOBS && env ... " */
void slurm_submit_prefix(struct slurm *s, const struct submit *how, char *buf, size_t size);

/* Writes an executable script JOBS/@name; returns its path (one of 8 rotating static buffers). */
const char *slurm_script(struct slurm *s, const char *name, const char *body);
/* The text of JOBS/@name, or NULL when it does not exist (caller frees). */
char *slurm_read(struct slurm *s, const char *name);
/* The output of a job submitted with the default -o (caller frees; "" if none). */
char *job_output(struct slurm *s, unsigned job_id);

/* A field of `scontrol -o show job ID` (first record), or NULL (caller frees). */
char *job_field(struct slurm *s, const char *job, const char *field);
/*
 * Waits until JobState is one of @states ("COMPLETED|FAILED") and returns it
 * (caller frees); fails the test with the job record after @timeout_s.
 */
char *wait_job_state(struct slurm *s, unsigned job_id, const char *states, int timeout_s);
/* The same for any job spec scontrol takes ("12_1" for an array task). */
char *wait_spec_state(struct slurm *s, const char *spec, const char *states, int timeout_s);
/* Waits until `field` of the job equals @value. */
void wait_job_field(struct slurm *s, unsigned job_id, const char *field, const char *value,
		    int timeout_s);
/* Waits until the node is idle (not completing), fails if it is drained or down. */
void assert_node_idle(struct slurm *s, int timeout_s);
/* Waits until the file JOBS/@name contains @needle. */
void wait_file_contains(struct slurm *s, const char *name, const char *needle, int timeout_s);

/* ---- the W&B side -------------------------------------------------------- */

/*
 * Polls the run's state history until it is exactly @expected
 * ("pending,running,finished"), up to @timeout_s; returns the last history
 * seen (caller frees), so that the caller asserts on it.
 */
char *wait_run_history(struct emu *e, const char *path, const char *expected, int timeout_s);
#define assert_run_history(e, path, expected, timeout_s)                                    \
	do {                                                                                \
		char *got_ = wait_run_history((e), (path), (expected), (timeout_s));       \
		cr_assert_str_eq(got_, (expected), "run %s: state history '%s', wanted '%s'", \
				 (path), got_, (expected));                                 \
		free(got_);                                                                 \
	} while (0)

/* The emulator's run object, or NULL when it has no such run (caller puts). */
struct json_object *emu_run(struct emu *e, const char *path);
/* All runs' names, comma-separated in creation order (caller frees). */
char *emu_run_names(struct emu *e);
/* A member by dotted path ("config.slurm.value.job_id"), or NULL. Borrowed. */
struct json_object *json_at(struct json_object *o, const char *dotted);
/* The member as a string ("" when absent or null); caller frees. */
char *json_str_at(struct json_object *o, const char *dotted);

/* Elapsed time helpers. */
long slurm_now_ms(void);

#endif
