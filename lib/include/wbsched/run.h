#ifndef WBS_RUN_H
#define WBS_RUN_H

#include <stdbool.h>
#include <stddef.h>

struct json_object;
struct wbs_client;
struct wbs_config;
struct wbs_error;

/* Runs created or read in one request at most (GraphQL aliases). */
#define WBS_RUN_BATCH 100

/* Where a run lives: entity/project/id.  Strings owned by the struct. */
struct wbs_run_ref {
	char *entity;
	char *project;
	char *id;
};

/*
 * Parses "entity/project/id", "project/id" or "id"; the missing parts come
 * from cfg->entity and wbs_config_project().  A NULL or empty @path takes the
 * id from WANDB_RUN_ID.  The entity may stay NULL (the key's default entity);
 * see wbs_run_resolve_entity().  -EINVAL with a message on bad input.
 */
int wbs_run_ref_parse(const char *path, const struct wbs_config *cfg, struct wbs_run_ref *ret,
		      struct wbs_error *err);
int wbs_run_ref_set(struct wbs_run_ref *ref, const char *entity, const char *project,
		    const char *id, struct wbs_error *err);
void wbs_run_ref_release(struct wbs_run_ref *ref);

/* Asks W&B for the key's default entity when ref->entity is NULL. */
int wbs_run_resolve_entity(struct wbs_client *client, struct wbs_run_ref *ref,
			   struct wbs_error *err);

/* What "create" sends.  Everything borrowed; NULL members are not sent. */
struct wbs_run_spec {
	const char *id;
	const char *state; /* "pending" or "running" */
	const char *display_name;
	const char *group;
	const char *job_type;
	const char *notes;
	const char *const *tags;
	size_t n_tags;
	struct json_object *config; /* plain {"key": value}; sent wrapped as the SDK does */
};

/* What W&B knows of a run.  Strings owned by the struct. */
struct wbs_run_info {
	char *entity;
	char *project;
	char *id;
	bool exists;	  /* false: W&B has no such run (not started) */
	bool inserted;	  /* create: this request made the run */
	bool left_alone;  /* a change was not made: the run had already ended */
	char *storage_id; /* GraphQL node id, for mutations */
	char *state;
	char *display_name;
	char *group;
	char *job_type;
	char *heartbeat_at;
	bool has_exitcode;
	long exitcode;
};
void wbs_run_info_release(struct wbs_run_info *info);

/* Path "entity/project/id" of a run; caller frees with free(). */
char *wbs_run_path(const char *entity, const char *project, const char *id);

/*
 * Creates (or, for the same id, updates: idempotent) @n runs in @project of
 * @entity (NULL: the key's default), WBS_RUN_BATCH per request.  @ret_infos
 * has room for @n entries and is filled in order.
 */
int wbs_run_create(struct wbs_client *client, const char *entity, const char *project,
		   const struct wbs_run_spec *specs, size_t n, struct wbs_run_info *ret_infos,
		   struct wbs_error *err);

/*
 * As wbs_run_create(), but a run that W&B already shows running or
 * preempting is left as it is (left_alone in its info): a pending run made at
 * submit time must not undo the start of a job that began in the meantime.
 * Costs one read per WBS_RUN_BATCH runs more.
 */
int wbs_run_create_unless_alive(struct wbs_client *client, const char *entity, const char *project,
				const struct wbs_run_spec *specs, size_t n,
				struct wbs_run_info *ret_infos, struct wbs_error *err);

/* Reads @n runs, WBS_RUN_BATCH per request; a missing run has exists=false. */
int wbs_run_read(struct wbs_client *client, const struct wbs_run_ref *refs, size_t n,
		 struct wbs_run_info *ret_infos, struct wbs_error *err);

/*
 * The state changes.  Each one first reads the run where the rules depend on
 * its state, and leaves a terminal run alone (*ret_info tells what was found;
 * it may be NULL).  -EPERM when the run's state does not allow the change,
 * -ENOENT when the change needs a run that does not exist.
 *
 * start:      marks the run running (creates it when missing), one request;
 *             @meta (may be NULL) adds the metadata of a create (its id and
 *             state are ignored).
 * preempting: file_stream {"preempting":true}.
 * heartbeat:  file_stream {}, one request, no read.
 * finish:     file_stream {"complete":true,"exitcode":N}.
 * fail:       updateRunState failed (a missing run is created failed; a
 *             preempting one is completed, which W&B records as preempted).
 * requeue:    updateRunState pending, so the next start resumes the same run
 *             (a preempting run is completed first, a missing one created).
 * @reason, when not NULL, is stored in the run's summary as "wbsched/reason"
 * (and the exit code as "wbsched/exit_code" when @exit_code >= 0).
 */
int wbs_run_start(struct wbs_client *client, const struct wbs_run_ref *ref,
		  const struct wbs_run_spec *meta, struct wbs_run_info *ret_info,
		  struct wbs_error *err);
int wbs_run_preempting(struct wbs_client *client, const struct wbs_run_ref *ref,
		       struct wbs_run_info *ret_info, struct wbs_error *err);
int wbs_run_heartbeat(struct wbs_client *client, const struct wbs_run_ref *ref,
		      struct wbs_error *err);
int wbs_run_finish(struct wbs_client *client, const struct wbs_run_ref *ref, int exit_code,
		   struct wbs_run_info *ret_info, struct wbs_error *err);
/*
 * finish, for a run already read with wbs_run_read() (a flush reads many
 * runs in one request): only the file_stream request, when still needed.
 * @info is updated to the state the run ends in.
 */
int wbs_run_finish_read(struct wbs_client *client, struct wbs_run_info *info, int exit_code,
			struct wbs_error *err);
int wbs_run_fail(struct wbs_client *client, const struct wbs_run_ref *ref, const char *reason,
		 int exit_code, struct wbs_run_info *ret_info, struct wbs_error *err);
int wbs_run_requeue(struct wbs_client *client, const struct wbs_run_ref *ref, const char *reason,
		    struct wbs_run_info *ret_info, struct wbs_error *err);

/* Options of wbs_run_wait(). */
struct wbs_wait_opts {
	long timeout_ms;      /* < 0: wait forever */
	long interval_ms;     /* first poll interval */
	long max_interval_ms; /* the interval grows 1.5x per quiet poll up to this */
};

/*
 * Called after every poll with the latest view of all runs; @changed is true
 * when some run's state differs from the previous poll.
 */
typedef void (*wbs_wait_progress_fn)(void *userdata, const struct wbs_run_info *infos, size_t n,
				     bool changed);

/*
 * Polls the runs (only those not yet terminal, WBS_RUN_BATCH per request)
 * until every run is terminal or one ends in failure (then it returns at
 * once).  Each poll is one operation with its own budget; a poll that fails
 * because W&B is unavailable is reported through the log and retried at the
 * next interval.  Returns 0 (inspect @ret_infos), -ETIMEDOUT when
 * opts->timeout_ms passed, -EACCES or -EINVAL at once.  @ret_infos has room
 * for @n entries and is filled even on -ETIMEDOUT.
 */
int wbs_run_wait(struct wbs_client *client, const struct wbs_run_ref *refs, size_t n,
		 const struct wbs_wait_opts *opts, wbs_wait_progress_fn progress, void *userdata,
		 struct wbs_run_info *ret_infos, struct wbs_error *err);

/* Every GraphQL document the library can send, for the schema test. */
struct wbs_graphql_doc {
	const char *name;
	char *query; /* owned */
};
int wbs_run_documents(struct wbs_graphql_doc **ret_docs, size_t *ret_n, struct wbs_error *err);
void wbs_run_documents_free(struct wbs_graphql_doc *docs, size_t n);

#endif /* WBS_RUN_H */
