#ifndef WBS_FUZZ_H
#define WBS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/*
 * The libFuzzer entry points.  replay_main.c calls the same functions, so
 * every harness also builds, without libFuzzer, into a program that replays
 * the corpus and the regression inputs (with gcc, in every build).
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Optional: once per process, before the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The input as a C string (cut at its first NUL); caller frees with free(). */
char *fuzz_strdup(const uint8_t *data, size_t size);

/*
 * A private directory for the process, in $WBS_FUZZ_TMPDIR when set, else on
 * /dev/shm when it can (fsync() is cheap there), else in $TMPDIR or /tmp;
 * removed at a normal exit (not after a crash).  Borrowed.
 */
const char *fuzz_tmpdir(void);

/* Removes @path and everything under it; a missing path is fine. */
void fuzz_rm_rf(const char *path);

/* Writes @data to @path (created 0600, truncated); 0 or a negative errno. */
int fuzz_write_file(const char *path, const uint8_t *data, size_t size);

/* Unsets every WANDB_* and WBSCHED_* variable, so the host cannot steer a run. */
void fuzz_clean_env(void);

/* Aborts (a crash libFuzzer records) when @cond is false: for checked contracts. */
#define FUZZ_CHECK(cond) fuzz_check((cond), #cond, __FILE__, __LINE__)
void fuzz_check(int cond, const char *what, const char *file, int line);

#endif /* WBS_FUZZ_H */
