#ifndef WBS_SPOOL_H
#define WBS_SPOOL_H

#include <stdbool.h>
#include <stddef.h>

struct json_object;
struct wbs_config;
struct wbs_error;

/*
 * The durable spool: state changes that could not reach W&B within their
 * budget, kept on the node and delivered later, in order.
 *
 * Layout: <spool_dir>/<uid>/ (mode 0700, owned by the user; spool_dir itself
 * is created 01777 by root, like /var/tmp, so that every user keeps a queue
 * of their own, delivered with their own key):
 *   queue     one JSON object per line, appended with fsync
 *   done      the sequence number of the last delivered event (atomic rename)
 *   gone      sequence numbers of events delivered out of turn, one a line
 *             (appended; removed with the queue's contents once all is delivered)
 *   breaker-* the time until which calls to one W&B server skip the network
 *             (the circuit breaker; one file per base_url)
 *   lock      flock()ed by whoever reads or writes the three above
 * No file ever holds the API key.
 */
struct wbs_spool;

/* Opens (creating as needed) the caller's spool directory; does not lock. */
int wbs_spool_open(const struct wbs_config *cfg, struct wbs_spool **ret, struct wbs_error *err);

/* Unlocks and frees; NULL is a no-op. */
void wbs_spool_close(struct wbs_spool *spool);

/* The directory in use (borrowed). */
const char *wbs_spool_dir(const struct wbs_spool *spool);

/*
 * Takes the spool's lock, waiting at most @timeout_ms (another wbsched on the
 * node may be delivering).  -ETIMEDOUT when it stays taken.
 */
int wbs_spool_lock(struct wbs_spool *spool, long timeout_ms, struct wbs_error *err);
void wbs_spool_unlock(struct wbs_spool *spool);

/*
 * One queued event, as read back: its fields, not the JSON record (a flush
 * of a big backlog holds every event at once).  The strings are owned by
 * the array.
 */
struct wbs_spool_event {
	unsigned long long seq;
	long long at_ms;      /* when it was queued (epoch ms) */
	const char *run;      /* "entity/project/id" ("-" for an unknown entity); "" if none */
	const char *entity;   /* what it was made with; NULL when unknown */
	const char *project;  /* NULL when not recorded */
	const char *base_url; /* the W&B server it is for; NULL when not recorded */
	char **argv;	      /* the command line, NULL-terminated */
	int argc;
	void *mem;	      /* holds all of the above */
};

/*
 * Appends an event (lock held): @event is borrowed and must have "run" (a
 * string) and "argv" (an array of strings); "seq" and "at" are added.  An
 * event equal to the last one queued for the same run is coalesced (not
 * written again; *ret_seq is 0 then).  Written with one write() and
 * fsync()ed.  *ret_seq (may be NULL) is the event's sequence number.
 * -ENOSPC when the spool would pass spool_max_bytes.
 */
int wbs_spool_append(struct wbs_spool *spool, struct json_object *event,
		     unsigned long long *ret_seq, struct wbs_error *err);

/*
 * The undelivered events in order (lock held).  *ret_events: free with
 * wbs_spool_events_free().  A torn last line (a writer killed mid-write) is
 * ignored.
 */
int wbs_spool_pending(struct wbs_spool *spool, struct wbs_spool_event **ret_events, size_t *ret_n,
		      struct wbs_error *err);
void wbs_spool_events_free(struct wbs_spool_event *events, size_t n);

/*
 * True when an undelivered event numbered below @before (0: any) concerns
 * @run (lock held).
 */
bool wbs_spool_has_run(struct wbs_spool *spool, const char *run, unsigned long long before);

/*
 * Forgets one undelivered event (lock held): delivered out of turn, or taken
 * back.  Durable, like wbs_spool_mark_done().
 */
int wbs_spool_remove(struct wbs_spool *spool, unsigned long long seq, struct wbs_error *err);

/*
 * Records what a flush delivered (lock held): every event up to @done_seq
 * (0: none), and the @n events @seqs further on, delivered out of turn
 * (appended to "gone").  @durable also fsync()s.  The queue file is emptied
 * by wbs_spool_compact() once nothing in it waits.
 */
int wbs_spool_forget(struct wbs_spool *spool, unsigned long long done_seq,
		     const unsigned long long *seqs, size_t n, bool durable, struct wbs_error *err);

/*
 * Records that every event up to @seq is delivered (lock held); @durable
 * also fsync()s the mark.  A lost mark only means changes delivered again.
 */
int wbs_spool_mark_done(struct wbs_spool *spool, unsigned long long seq, bool durable,
			struct wbs_error *err);

/* Empties the queue file once every event in it is delivered (lock held). */
int wbs_spool_compact(struct wbs_spool *spool, struct wbs_error *err);

/*
 * Keeps a change without the lock, when another process holds it for long
 * (a flush delivering a backlog): the change waits in incoming/ until the
 * next holder of the lock merges it, in the order changes were made.
 */
int wbs_spool_append_unlocked(struct wbs_spool *spool, struct json_object *event,
			      struct wbs_error *err);

/* Moves what waits in incoming/ into the queue (lock held); *ret_n: how many. */
int wbs_spool_merge_incoming(struct wbs_spool *spool, size_t *ret_n, struct wbs_error *err);

/* The circuit breaker: open while a recent failure's cool-down lasts. */
bool wbs_spool_breaker_is_open(struct wbs_spool *spool, long *ret_remaining_ms);
int wbs_spool_breaker_trip(struct wbs_spool *spool, long cooldown_ms, struct wbs_error *err);
void wbs_spool_breaker_reset(struct wbs_spool *spool);

#endif /* WBS_SPOOL_H */
