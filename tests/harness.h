#ifndef WBS_TEST_HARNESS_H
#define WBS_TEST_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

struct json_object;

/*
 * The W&B emulator (tests/emulator/server.js) as a child process on a free
 * loopback port, and the wbsched binary run against it.  Everything here
 * asserts with Criterion on failure, so tests stay short.
 */
struct emu {
	pid_t pid;
	int port;
	char url[64];	 /* http://127.0.0.1:PORT */
	char key[48];	 /* the API key the emulator accepts */
	char home[64];	 /* an empty HOME for wbsched (no ~/.netrc) */
};

void emu_start(struct emu *e);
void emu_stop(struct emu *e);

/* GET or POST on the emulator's control API; returns the parsed reply (caller puts it). */
struct json_object *emu_get(struct emu *e, const char *path);
struct json_object *emu_post(struct emu *e, const char *path, const char *json);

/* The run's state, or NULL when absent (caller frees). */
char *emu_run_state(struct emu *e, const char *run_path);

/* The run's state history joined by ',' ("pending,running,finished"); caller frees. */
char *emu_run_states(struct emu *e, const char *run_path);

/* Number of logged requests (GraphQL and file_stream) so far. */
int emu_request_count(struct emu *e);

/* Queues one fault: a JSON object as in tests/emulator/README.md. */
void emu_fault(struct emu *e, const char *fault_json);

/* Clears the fault queue: W&B is back. */
void emu_clear_faults(struct emu *e);

struct cli_result {
	int status; /* exit code, or 128 + signal */
	char *out;
	char *err;
	long elapsed_ms;
};

/*
 * Runs wbsched with @argv (NULL-terminated, without argv[0]) against the
 * emulator: a clean environment with WANDB_BASE_URL, WANDB_API_KEY and HOME
 * set, plus @env ("NAME=value" strings, NULL-terminated, may be NULL; a
 * "NAME=" entry removes NAME).
 */
void cli_run(struct emu *e, const char *const *env, const char *const *argv,
	     struct cli_result *ret);
void cli_result_release(struct cli_result *r);

/* Convenience: cli_run with the arguments given inline, no extra environment. */
#define CLI(e, res, ...) cli_run((e), NULL, (const char *const[]){ __VA_ARGS__, NULL }, (res))

#endif
