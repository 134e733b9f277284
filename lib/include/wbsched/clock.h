#ifndef WBS_CLOCK_H
#define WBS_CLOCK_H

/* Milliseconds on CLOCK_MONOTONIC: for deadlines and budgets, not dates. */
long wbs_now_ms(void);

/* Sleeps @ms milliseconds on CLOCK_MONOTONIC, resuming after signals. */
void wbs_sleep_ms(long ms);

#endif /* WBS_CLOCK_H */
