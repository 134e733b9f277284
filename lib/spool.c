/*
 * The durable spool (see spool.h for the layout).  Every function that
 * reads or changes the queue runs with the lock held; the files are small
 * and re-read each time, so that several processes on a node (the plugin's
 * children, the CLI, the watchdog, a flush timer) always agree.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "wbsched/cleanup.h"
#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/log.h"
#include "wbsched/spool.h"

struct wbs_spool {
	char *dir;
	int dirfd;
	int lockfd;
	long max_bytes;
	char breaker[32]; /* "breaker-<hash of base_url>": one per W&B server */
};

static long long now_epoch_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int errno_set(struct wbs_error *err, const char *what, const char *path)
{
	int e = errno;

	return wbs_error_set(err, -e, "%s '%s': %s", what, path, strerror(e));
}

int wbs_spool_open(const struct wbs_config *cfg, struct wbs_spool **ret, struct wbs_error *err)
{
	const char *base = wbs_config_spool_dir(cfg);
	uid_t uid = geteuid();
	struct wbs_spool *s;
	struct stat st;
	char *dir = NULL;
	int fd;

	/* The shared parent: sticky and world-writable when root makes it, like /var/tmp. */
	if (mkdir(base, uid == 0 ? 01777 : 0700) == 0) {
		if (uid == 0 && chmod(base, 01777) < 0)
			return errno_set(err, "cannot set the mode of spool", base);
	} else if (errno != EEXIST) {
		return errno_set(err, "cannot create spool", base);
	}
	if (asprintf(&dir, "%s/%u", base, (unsigned)uid) < 0)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		int r = errno_set(err, "cannot create spool", dir);

		free(dir);
		return r;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		int r = errno_set(err, "cannot open spool", dir);

		if (fd >= 0)
			(void)close(fd);
		free(dir);
		return r;
	}
	/* Someone else's directory, or one others can read, is not ours to trust. */
	if (st.st_uid != uid || (st.st_mode & 077) != 0) {
		(void)close(fd);
		(void)wbs_error_set(err, -EACCES,
				    "refusing spool '%s': it must be a directory of uid %u with mode 0700",
				    dir, (unsigned)uid);
		free(dir);
		return -EACCES;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		(void)close(fd);
		free(dir);
		return wbs_error_set(err, -ENOMEM, "out of memory");
	}
	s->dir = dir;
	s->dirfd = fd;
	s->lockfd = -1;
	s->max_bytes = cfg->spool_max_bytes;
	{
		/* FNV-1a: a W&B server that is down says nothing about another one */
		unsigned long long h = 14695981039346656037ULL;

		for (const char *p = wbs_config_base_url(cfg); *p; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211ULL;
		(void)snprintf(s->breaker, sizeof(s->breaker), "breaker-%016llx", h);
	}
	*ret = s;
	return 0;
}

void wbs_spool_close(struct wbs_spool *spool)
{
	if (!spool)
		return;
	wbs_spool_unlock(spool);
	(void)close(spool->dirfd);
	free(spool->dir);
	free(spool);
}

const char *wbs_spool_dir(const struct wbs_spool *spool)
{
	return spool->dir;
}

int wbs_spool_lock(struct wbs_spool *spool, long timeout_ms, struct wbs_error *err)
{
	long waited = 0;

	if (spool->lockfd >= 0)
		return 0;
	spool->lockfd = openat(spool->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
			       0600);
	if (spool->lockfd < 0)
		return errno_set(err, "cannot open the lock of spool", spool->dir);
	while (flock(spool->lockfd, LOCK_EX | LOCK_NB) < 0) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };

		if (errno != EWOULDBLOCK && errno != EINTR) {
			int r = errno_set(err, "cannot lock spool", spool->dir);

			wbs_spool_unlock(spool);
			return r;
		}
		if (waited >= timeout_ms) {
			wbs_spool_unlock(spool);
			return wbs_error_set(err, -ETIMEDOUT, "spool '%s' stayed locked for %ld ms",
					     spool->dir, timeout_ms);
		}
		(void)nanosleep(&ts, NULL);
		waited += 10;
	}
	return 0;
}

void wbs_spool_unlock(struct wbs_spool *spool)
{
	if (spool->lockfd >= 0) {
		(void)close(spool->lockfd); /* releases the flock */
		spool->lockfd = -1;
	}
}

/* Reads a small file whole; *ret is NUL-terminated.  A missing file is empty. */
static int read_file(struct wbs_spool *s, const char *name, size_t max, char **ret, size_t *ret_len,
		     struct wbs_error *err)
{
	_cleanup_close_ int fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	char *buf;
	size_t len = 0;
	struct stat st;

	if (fd < 0 && errno == ENOENT) {
		*ret = strdup("");
		*ret_len = 0;
		return *ret ? 0 : wbs_error_set(err, -ENOMEM, "out of memory");
	}
	if (fd < 0 || fstat(fd, &st) < 0)
		return errno_set(err, "cannot read spool file", name);
	if ((size_t)st.st_size > max)
		return wbs_error_set(err, -EFBIG, "spool file '%s/%s' is larger than %zu bytes",
				     s->dir, name, max);
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*ret = buf;
	*ret_len = len;
	return 0;
}

/*
 * Writes a small file atomically: temp file, rename; with @durable also
 * fsync()s both, so that it survives a power cut as well as a crash.
 */
static int write_file(struct wbs_spool *s, const char *name, const char *text, bool durable,
		      struct wbs_error *err)
{
	char tmp[64];
	size_t len = strlen(text);
	int fd;

	(void)snprintf(tmp, sizeof(tmp), "%s.%d.tmp", name, (int)getpid());
	fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return errno_set(err, "cannot write spool file", tmp);
	if (write(fd, text, len) != (ssize_t)len || (durable && fsync(fd) < 0)) {
		int r = errno_set(err, "cannot write spool file", tmp);

		(void)close(fd);
		(void)unlinkat(s->dirfd, tmp, 0);
		return r;
	}
	(void)close(fd);
	if (renameat(s->dirfd, tmp, s->dirfd, name) < 0) {
		int r = errno_set(err, "cannot rename spool file", tmp);

		(void)unlinkat(s->dirfd, tmp, 0);
		return r;
	}
	if (durable)
		(void)fsync(s->dirfd);
	return 0;
}

static unsigned long long read_done(struct wbs_spool *s)
{
	_cleanup_free_ char *text = NULL;
	size_t len;

	if (read_file(s, "done", 64, &text, &len, NULL) < 0)
		return 0;
	return strtoull(text, NULL, 10);
}

static int cmp_seq(const void *a, const void *b)
{
	unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;

	return x < y ? -1 : x > y;
}

/* The numbers in "gone": events delivered out of turn, sorted. */
static int read_gone(struct wbs_spool *s, unsigned long long **ret, size_t *ret_n,
		     struct wbs_error *err)
{
	_cleanup_free_ char *text = NULL;
	unsigned long long *seqs = NULL;
	size_t len, n = 0, cap = 0;
	char *p, *end;
	int r;

	*ret = NULL;
	*ret_n = 0;
	r = read_file(s, "gone", (size_t)s->max_bytes + 65536, &text, &len, err);
	if (r < 0)
		return r;
	for (p = text;; p = end) {
		unsigned long long seq;

		while (*p == '\n')
			p++;
		if (!*p)
			break;
		seq = strtoull(p, &end, 10);
		if (end == p) { /* damaged: skip the line */
			end = strchr(p, '\n');
			if (!end)
				break;
			continue;
		}
		if (n == cap) {
			unsigned long long *bigger;

			cap = cap ? cap * 2 : 64;
			bigger = realloc(seqs, cap * sizeof(*bigger));
			if (!bigger) {
				free(seqs);
				return wbs_error_set(err, -ENOMEM, "out of memory");
			}
			seqs = bigger;
		}
		seqs[n++] = seq;
	}
	if (n > 1)
		qsort(seqs, n, sizeof(*seqs), cmp_seq);
	*ret = seqs;
	*ret_n = n;
	return 0;
}

/* Records events delivered out of turn: appended, one number a line. */
static int append_gone(struct wbs_spool *s, const unsigned long long *seqs, size_t n, bool durable,
		       struct wbs_error *err)
{
	_cleanup_free_ char *buf = malloc(n * 24 + 1);
	bool existed = faccessat(s->dirfd, "gone", F_OK, AT_SYMLINK_NOFOLLOW) == 0;
	size_t len = 0;
	int fd, r = 0;

	if (!buf)
		return wbs_error_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(buf + len, 24, "%llu\n", seqs[i]);
	/* nothing new: only make what was written durable */
	fd = openat(s->dirfd, "gone",
		    O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW | (n ? O_CREAT : 0), 0600);
	if (fd < 0 && n == 0 && errno == ENOENT)
		return 0;
	if (fd < 0)
		return errno_set(err, "cannot write spool file", "gone");
	if (write(fd, buf, len) != (ssize_t)len || (durable && fdatasync(fd) < 0))
		r = errno_set(err, "cannot write spool file", "gone");
	(void)close(fd);
	if (r == 0 && durable && !existed)
		(void)fsync(s->dirfd);
	return r;
}

struct queue {
	struct wbs_spool_event *events; /* undelivered only */
	size_t n;
	unsigned long long last_seq; /* of any event in the file */
	size_t file_len;
	size_t good_len; /* up to the end of the last complete line */
};

static void queue_release(struct queue *q)
{
	wbs_spool_events_free(q->events, q->n);
	*q = (struct queue){ 0 };
}

static const char *member_string(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* Word @i of a command line as text ("" for a JSON null). */
static const char *word(struct json_object *argv, size_t i)
{
	const char *w = json_object_get_string(json_object_array_get_idx(argv, i));

	return w ? w : "";
}

/* Copies one string into the event's block; NULL stays NULL. */
static const char *put(char **at, const char *s)
{
	size_t len;
	char *out;

	if (!s)
		return NULL;
	len = strlen(s) + 1;
	out = memcpy(*at, s, len);
	*at += len;
	return out;
}

/* The fields of a queued record, in one block; -ENOMEM or 0. */
static int event_from(struct json_object *o, unsigned long long seq, struct wbs_spool_event *ev)
{
	const char *run = member_string(o, "run"), *entity = member_string(o, "entity"),
		   *project = member_string(o, "project"), *base_url = member_string(o, "base_url");
	struct json_object *jargv, *v;
	size_t argc = 0, size;
	char *at;

	if (json_object_object_get_ex(o, "argv", &jargv) &&
	    json_object_is_type(jargv, json_type_array))
		argc = json_object_array_length(jargv);
	size = (argc + 1) * sizeof(char *) + strlen(run ? run : "") + 1;
	size += entity ? strlen(entity) + 1 : 0;
	size += project ? strlen(project) + 1 : 0;
	size += base_url ? strlen(base_url) + 1 : 0;
	for (size_t i = 0; i < argc; i++)
		size += strlen(word(jargv, i)) + 1;
	*ev = (struct wbs_spool_event){ .seq = seq, .argc = (int)argc };
	ev->mem = malloc(size);
	if (!ev->mem)
		return -ENOMEM;
	ev->argv = ev->mem;
	at = (char *)(ev->argv + argc + 1);
	for (size_t i = 0; i < argc; i++)
		ev->argv[i] = (char *)put(&at, word(jargv, i));
	ev->argv[argc] = NULL;
	ev->run = put(&at, run ? run : "");
	ev->entity = put(&at, entity);
	ev->project = put(&at, project);
	ev->base_url = put(&at, base_url);
	ev->at_ms = json_object_object_get_ex(o, "at", &v) ? json_object_get_int64(v) : 0;
	return 0;
}

static int load_queue(struct wbs_spool *s, struct queue *q, struct wbs_error *err)
{
	unsigned long long done = read_done(s);
	_cleanup_free_ char *line = NULL;
	_cleanup_free_ unsigned long long *gone = NULL;
	size_t cap = 0, line_cap = 0, n_gone = 0, max = (size_t)s->max_bytes + 65536;
	_cleanup_fclose_ FILE *f = NULL;
	struct stat st;
	ssize_t len;
	int r, fd;

	*q = (struct queue){ 0 };
	q->last_seq = done;
	r = read_gone(s, &gone, &n_gone, err);
	if (r < 0)
		return r;
	/* read a line at a time: a big backlog is held once, as events */
	fd = openat(s->dirfd, "queue", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0 || fstat(fd, &st) < 0 || !(f = fdopen(fd, "r"))) {
		r = errno_set(err, "cannot read spool file", "queue");
		if (fd >= 0)
			(void)close(fd);
		return r;
	}
	if ((size_t)st.st_size > max)
		return wbs_error_set(err, -EFBIG, "spool file '%s/queue' is larger than %zu bytes",
				     s->dir, max);
	while ((len = getline(&line, &line_cap, f)) > 0) {
		struct json_object *o, *v;
		unsigned long long seq;

		q->file_len += (size_t)len;
		if (line[len - 1] != '\n')
			break; /* a torn last line: the next append overwrites it */
		line[len - 1] = '\0';
		q->good_len = q->file_len;
		o = json_tokener_parse(line);
		/* seq is a positive number below INT64_MAX (json-c clamps larger ones to it) */
		if (!o || !json_object_object_get_ex(o, "seq", &v) ||
		    !json_object_is_type(v, json_type_int) || json_object_get_int64(v) <= 0 ||
		    json_object_get_int64(v) == INT64_MAX) {
			wbs_log(WBS_LOG_WARNING, "spool '%s': skipping a damaged event", s->dir);
			json_object_put(o);
			continue;
		}
		seq = (unsigned long long)json_object_get_int64(v);
		if (seq > q->last_seq)
			q->last_seq = seq;
		if (seq <= done ||
		    (n_gone > 0 && bsearch(&seq, gone, n_gone, sizeof(*gone), cmp_seq))) {
			json_object_put(o);
			continue;
		}
		if (q->n == cap) {
			struct wbs_spool_event *bigger;

			cap = cap ? cap * 2 : 16;
			bigger = realloc(q->events, cap * sizeof(*bigger));
			if (!bigger) {
				json_object_put(o);
				queue_release(q);
				return wbs_error_set(err, -ENOMEM, "out of memory");
			}
			q->events = bigger;
		}
		r = event_from(o, seq, &q->events[q->n]);
		json_object_put(o);
		if (r < 0) {
			queue_release(q);
			return wbs_error_set(err, -ENOMEM, "out of memory");
		}
		q->n++;
	}
	return 0;
}

void wbs_spool_events_free(struct wbs_spool_event *events, size_t n)
{
	for (size_t i = 0; events && i < n; i++)
		free(events[i].mem);
	free(events);
}

int wbs_spool_pending(struct wbs_spool *spool, struct wbs_spool_event **ret_events, size_t *ret_n,
		      struct wbs_error *err)
{
	struct queue q;
	int r = load_queue(spool, &q, err);

	if (r < 0)
		return r;
	*ret_events = q.events;
	*ret_n = q.n;
	return 0;
}

bool wbs_spool_has_run(struct wbs_spool *spool, const char *run, unsigned long long before)
{
	struct queue q;
	bool found = false;

	if (load_queue(spool, &q, NULL) < 0)
		return true; /* unsure: keep the order by queueing */
	for (size_t i = 0; i < q.n && !found; i++)
		found = (before == 0 || q.events[i].seq < before) &&
			strcmp(q.events[i].run, run) == 0;
	queue_release(&q);
	return found;
}

/* True when the queued event has the command line of @event. */
static bool same_argv(const struct wbs_spool_event *queued, struct json_object *event)
{
	struct json_object *argv;

	if (!json_object_object_get_ex(event, "argv", &argv) ||
	    !json_object_is_type(argv, json_type_array) ||
	    json_object_array_length(argv) != (size_t)queued->argc)
		return false;
	for (int i = 0; i < queued->argc; i++)
		if (strcmp(queued->argv[i], word(argv, (size_t)i)) != 0)
			return false;
	return true;
}

int wbs_spool_append(struct wbs_spool *spool, struct json_object *event,
		     unsigned long long *ret_seq, struct wbs_error *err)
{
	_cleanup_json_ struct json_object *rec = NULL;
	struct json_object *run;
	const char *text;
	struct queue q;
	bool existed;
	size_t len;
	int fd, r;

	if (!json_object_object_get_ex(event, "run", &run))
		return wbs_error_set(err, -EINVAL, "spool event without a run");
	r = load_queue(spool, &q, err);
	if (r < 0)
		return r;
	/* Coalesce: the same change queued twice in a row for a run is one change. */
	for (size_t i = q.n; i-- > 0;) {
		if (strcmp(q.events[i].run, json_object_get_string(run)) != 0)
			continue;
		if (same_argv(&q.events[i], event)) {
			queue_release(&q);
			if (ret_seq)
				*ret_seq = 0;
			return 0;
		}
		break;
	}
	if (json_object_deep_copy(event, &rec, NULL) < 0 ||
	    json_object_object_add(rec, "seq", json_object_new_int64((int64_t)q.last_seq + 1)) < 0 ||
	    json_object_object_add(rec, "at", json_object_new_int64(now_epoch_ms())) < 0) {
		queue_release(&q);
		return wbs_error_set(err, -ENOMEM, "out of memory");
	}
	text = json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PLAIN);
	len = strlen(text);
	if ((long)(q.good_len + len + 1) > spool->max_bytes) {
		queue_release(&q);
		return wbs_error_set(err, -ENOSPC,
				     "spool '%s' is full (spool_max_bytes %ld): the change is lost",
				     spool->dir, spool->max_bytes);
	}
	existed = faccessat(spool->dirfd, "queue", F_OK, AT_SYMLINK_NOFOLLOW) == 0;
	fd = openat(spool->dirfd, "queue", O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		queue_release(&q);
		return errno_set(err, "cannot open the queue of spool", spool->dir);
	}
	{
		/* One write of the line at the end of the last whole line: a torn line goes. */
		_cleanup_free_ char *line = malloc(len + 2);

		if (!line) {
			(void)close(fd);
			queue_release(&q);
			return wbs_error_set(err, -ENOMEM, "out of memory");
		}
		memcpy(line, text, len);
		line[len] = '\n';
		if ((q.file_len != q.good_len && ftruncate(fd, (off_t)q.good_len) < 0) ||
		    pwrite(fd, line, len + 1, (off_t)q.good_len) != (ssize_t)(len + 1) ||
		    fdatasync(fd) < 0) {
			r = errno_set(err, "cannot write the queue of spool", spool->dir);
			(void)close(fd);
			queue_release(&q);
			return r;
		}
	}
	(void)close(fd);
	if (!existed)
		(void)fsync(spool->dirfd); /* a new file: make its name durable too */
	if (ret_seq)
		*ret_seq = q.last_seq + 1;
	queue_release(&q);
	return 0;
}

int wbs_spool_remove(struct wbs_spool *spool, unsigned long long seq, struct wbs_error *err)
{
	struct queue q;
	bool oldest;
	int r;

	r = load_queue(spool, &q, err);
	if (r < 0)
		return r;
	oldest = q.n > 0 && q.events[0].seq == seq;
	queue_release(&q);
	if (oldest) {
		/*
		 * The "done" mark covers it.  Not fsync'd: if a power cut loses
		 * it, the change is delivered again, which changes nothing.
		 */
		r = wbs_spool_mark_done(spool, seq, false, err);
		return r < 0 ? r : wbs_spool_compact(spool, err);
	}
	return append_gone(spool, &seq, 1, true, err);
}

int wbs_spool_forget(struct wbs_spool *spool, unsigned long long done_seq,
		     const unsigned long long *seqs, size_t n, bool durable, struct wbs_error *err)
{
	int r = 0;

	if (n > 0 || durable)
		r = append_gone(spool, seqs, n, durable, err);
	if (r == 0 && done_seq > 0)
		r = wbs_spool_mark_done(spool, done_seq, durable, err);
	return r;
}

int wbs_spool_mark_done(struct wbs_spool *spool, unsigned long long seq, bool durable,
			struct wbs_error *err)
{
	char text[32];

	(void)snprintf(text, sizeof(text), "%llu\n", seq);
	return write_file(spool, "done", text, durable, err);
}

int wbs_spool_compact(struct wbs_spool *spool, struct wbs_error *err)
{
	struct queue q;
	int r = load_queue(spool, &q, err);

	if (r < 0)
		return r;
	if (q.n == 0 && q.file_len > 0) {
		/* everything delivered: start the file afresh (seq goes on from "done") */
		int fd;

		/* "done" first covers what "gone" held, so a number is never used twice */
		if (q.last_seq > read_done(spool) &&
		    wbs_spool_mark_done(spool, q.last_seq, true, err) < 0) {
			queue_release(&q);
			return err ? err->code : -EIO;
		}
		if (unlinkat(spool->dirfd, "gone", 0) < 0 && errno != ENOENT)
			wbs_debug("cannot remove the list of delivered events of spool %s",
				  spool->dir);
		fd = openat(spool->dirfd, "queue", O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd >= 0) {
			if (ftruncate(fd, 0) < 0)
				wbs_debug("cannot empty the queue of spool %s", spool->dir);
			(void)close(fd);
		}
	}
	queue_release(&q);
	return 0;
}

bool wbs_spool_breaker_is_open(struct wbs_spool *spool, long *ret_remaining_ms)
{
	_cleanup_free_ char *text = NULL;
	long long until, now = now_epoch_ms();
	size_t len;

	if (read_file(spool, spool->breaker, 64, &text, &len, NULL) < 0 || len == 0)
		return false;
	until = strtoll(text, NULL, 10);
	if (until <= now)
		return false;
	if (ret_remaining_ms)
		*ret_remaining_ms = (long)(until - now);
	return true;
}

int wbs_spool_breaker_trip(struct wbs_spool *spool, long cooldown_ms, struct wbs_error *err)
{
	char text[32];

	if (cooldown_ms <= 0)
		return 0;
	(void)snprintf(text, sizeof(text), "%lld\n", now_epoch_ms() + cooldown_ms);
	return write_file(spool, spool->breaker, text, false, err);
}

void wbs_spool_breaker_reset(struct wbs_spool *spool)
{
	(void)unlinkat(spool->dirfd, spool->breaker, 0);
}

/*
 * The inbox: a change made while another process holds the lock for long
 * (a flush delivering a backlog) is written as its own file in incoming/,
 * named by time so that the merge keeps the order the changes were made in.
 */
int wbs_spool_append_unlocked(struct wbs_spool *spool, struct json_object *event,
			      struct wbs_error *err)
{
	char name[96], tmp[112];
	struct timespec ts;
	const char *text = json_object_to_json_string_ext(event, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(text);
	int dfd, fd;

	if (mkdirat(spool->dirfd, "incoming", 0700) < 0 && errno != EEXIST)
		return errno_set(err, "cannot create the inbox of spool", spool->dir);
	dfd = openat(spool->dirfd, "incoming", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return errno_set(err, "cannot open the inbox of spool", spool->dir);
	(void)clock_gettime(CLOCK_REALTIME, &ts);
	(void)snprintf(name, sizeof(name), "%020lld.%09ld.%d", (long long)ts.tv_sec, ts.tv_nsec,
		       (int)getpid());
	(void)snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len || fdatasync(fd) < 0 ||
	    renameat(dfd, tmp, dfd, name) < 0) {
		int r = errno_set(err, "cannot write to the inbox of spool", spool->dir);

		if (fd >= 0)
			(void)close(fd);
		(void)unlinkat(dfd, tmp, 0);
		(void)close(dfd);
		return r;
	}
	(void)close(fd);
	(void)fsync(dfd);
	(void)close(dfd);
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int wbs_spool_merge_incoming(struct wbs_spool *spool, size_t *ret_n, struct wbs_error *err)
{
	char **names = NULL;
	size_t n = 0, cap = 0, merged = 0;
	struct dirent *de;
	DIR *d;
	int dfd, r = 0;

	if (ret_n)
		*ret_n = 0;
	dfd = openat(spool->dirfd, "incoming", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return errno == ENOENT ? 0 : errno_set(err, "cannot open the inbox of spool", spool->dir);
	d = fdopendir(dfd);
	if (!d) {
		(void)close(dfd);
		return errno_set(err, "cannot read the inbox of spool", spool->dir);
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue; /* ., .. and writes in progress */
		if (n == cap) {
			char **bigger = realloc(names, (cap = cap ? cap * 2 : 16) * sizeof(*names));

			if (!bigger) {
				r = wbs_error_set(err, -ENOMEM, "out of memory");
				goto out;
			}
			names = bigger;
		}
		names[n] = strdup(de->d_name);
		if (!names[n]) {
			r = wbs_error_set(err, -ENOMEM, "out of memory");
			goto out;
		}
		n++;
	}
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n && r == 0; i++) {
		_cleanup_free_ char *text = NULL;
		char path[160];
		size_t len;
		struct json_object *ev;

		(void)snprintf(path, sizeof(path), "incoming/%s", names[i]);
		r = read_file(spool, path, 1 << 20, &text, &len, err);
		if (r < 0)
			break;
		ev = json_tokener_parse(text);
		if (ev)
			r = wbs_spool_append(spool, ev, NULL, err);
		else
			wbs_log(WBS_LOG_WARNING, "spool '%s': skipping a damaged change", spool->dir);
		json_object_put(ev);
		if (r == 0) {
			(void)unlinkat(dirfd(d), names[i], 0);
			merged++;
		}
	}
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	(void)closedir(d);
	if (ret_n)
		*ret_n = merged;
	return r;
}
