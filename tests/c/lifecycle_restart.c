/*
 * Drives a TidegateLifecycle through the C header the way a packet tunnel provider would, over a
 * stop and a restart in a new process, on virtual time.
 *
 * Session 1: the tunnel runs, ten housekeeping tasks of 100 ms each are queued, then the system
 * stops the tunnel. The host tears down (30 ms), runs tasks until the 250 ms deadline, writes and
 * persists the journal and completes the stop. Checked: the stop completes within teardown plus
 * the deadline; the tasks not finished are in the journal; a too-small buffer is refused with the
 * size required; a start while stopping is refused.
 *
 * The process is then killed (the handle freed); only the persisted journal survives.
 *
 * Session 2: a new handle refuses a corrupted and a truncated journal and changes nothing, then
 * starts with the real one. The carried-over tasks run, in their original order, once the tunnel
 * is up; a stale report from session 1 and a duplicate report are refused; the journal is
 * discarded once every carried task ended. Finally a cancel with an error tears down and ends
 * with CANCEL_WITH_ERROR.
 *
 * Then the deadlines: a start that never comes up is cancelled (START_TIMED_OUT) and a teardown
 * never reported gives way, so the stop completes without the host.
 *
 * Exits 0 on success; prints the failed check and exits 1 otherwise.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tidegate.h"

enum { TASKS = 10, TASK_US = 100000, TEARDOWN_US = 30000, MAX_JOURNAL = 1024 };

/* The host's persistent storage. */
static uint8_t disk[MAX_JOURNAL];
static size_t disk_len = 0;

static void task_payload(int index, uint8_t *out, size_t *len) {
    char text[16];
    int n = snprintf(text, sizeof text, "task-%02d", index);
    CHECK(n > 0 && (size_t)n < sizeof text);
    memcpy(out, text, (size_t)n);
    *len = (size_t)n;
}

static int payload_index(const TidegateLifecycleEffect *effect) {
    char text[TIDEGATE_TASK_PAYLOAD_MAX + 1];
    CHECK(effect->payload_len <= TIDEGATE_TASK_PAYLOAD_MAX);
    memcpy(text, effect->payload, effect->payload_len);
    text[effect->payload_len] = '\0';
    int index = -1;
    CHECK(sscanf(text, "task-%d", &index) == 1);
    return index;
}

static TidegateLifecycleEffect poll(TidegateLifecycle *lc, uint64_t now) {
    TidegateLifecycleEffect effect;
    CHECK_OK(tidegate_lifecycle_poll_effect(lc, now, &effect));
    return effect;
}

static TidegateLifecycleState state_of(const TidegateLifecycle *lc, uint64_t *generation) {
    TidegateLifecycleState state;
    uint64_t ignored;
    CHECK_OK(tidegate_lifecycle_state(lc, &state, generation ? generation : &ignored));
    return state;
}

static void bad_input(void) {
    TidegateLifecycleConfig config = tidegate_lifecycle_config_default();
    TidegateLifecycle *lc = NULL;
    size_t bytes = 0, align = 0;
    CHECK(config.housekeeping_deadline_us == 250000);
    CHECK(tidegate_lifecycle_new(NULL, &lc) == TIDEGATE_STATUS_NULL_ARGUMENT);
    CHECK(tidegate_lifecycle_new(&config, NULL) == TIDEGATE_STATUS_NULL_ARGUMENT);
    config.task_capacity = TIDEGATE_LIFECYCLE_TASK_CAPACITY_MAX + 1u;
    CHECK(tidegate_lifecycle_new(&config, &lc) ==
          TIDEGATE_STATUS_CONFIG_TASK_CAPACITY_TOO_LARGE);
    CHECK(tidegate_lifecycle_footprint(&config, &bytes, &align) ==
          TIDEGATE_STATUS_CONFIG_TASK_CAPACITY_TOO_LARGE);
    CHECK(lc == NULL && bytes == 0); /* out-params are written only on success */
    CHECK(tidegate_lifecycle_poll_effect(NULL, 0, NULL) == TIDEGATE_STATUS_NULL_ARGUMENT);
    tidegate_lifecycle_free(NULL);
    CHECK(strcmp(tidegate_status_str(TIDEGATE_STATUS_JOURNAL_CHECKSUM_MISMATCH),
                 "journal corrupted: checksum mismatch") == 0);
}

/* Session 1: run, queue housekeeping, stop with a deadline, persist the journal. */
static uint64_t first_session(void) {
    TidegateLifecycleConfig config = tidegate_lifecycle_config_default();
    config.task_capacity = 16;
    TidegateLifecycle *lc = NULL;
    CHECK_OK(tidegate_lifecycle_new(&config, &lc));

    uint64_t now = 1000000, generation = 0;
    CHECK_OK(tidegate_lifecycle_on_start(lc, now, NULL, 0, &generation));
    CHECK(generation == 1);
    TidegateLifecycleEffect effect = poll(lc, now);
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_START_TUNNEL);
    CHECK(effect.generation == generation && effect.carried_over_tasks == 0);
    CHECK(poll(lc, now).kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_NONE);
    CHECK_OK(tidegate_lifecycle_on_tunnel_started(lc, now, generation));
    CHECK(state_of(lc, NULL) == TIDEGATE_LIFECYCLE_STATE_RUNNING);

    for (int i = 0; i < TASKS; i++) {
        uint8_t payload[TIDEGATE_TASK_PAYLOAD_MAX];
        size_t len;
        uint64_t id;
        task_payload(i, payload, &len);
        CHECK_OK(tidegate_lifecycle_register_task(lc, now, 7, payload, len, &id));
        CHECK(id == (uint64_t)i + 1);
    }
    /* Registered housekeeping waits for the stop. */
    CHECK(poll(lc, now).kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_NONE);

    now += 10000000;
    uint64_t stop_requested = now;
    TidegateStopOutcome outcome;
    CHECK_OK(tidegate_lifecycle_on_stop(lc, now, &outcome));
    CHECK(outcome == TIDEGATE_STOP_OUTCOME_STOPPING);
    CHECK(tidegate_lifecycle_on_stop(lc, now, &outcome) ==
          TIDEGATE_STATUS_LIFECYCLE_ALREADY_STOPPING);
    effect = poll(lc, now);
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_TEAR_DOWN);
    uint64_t ignored;
    CHECK(tidegate_lifecycle_on_start(lc, now, NULL, 0, &ignored) ==
          TIDEGATE_STATUS_LIFECYCLE_STOP_IN_PROGRESS);

    now += TEARDOWN_US;
    CHECK_OK(tidegate_lifecycle_on_torn_down(lc, now, generation));
    CHECK(state_of(lc, NULL) == TIDEGATE_LIFECYCLE_STATE_STOPPING_HOUSEKEEPING);

    /* Housekeeping on virtual time: one task at a time, each taking TASK_US. */
    uint64_t running_id = 0, finish_at = UINT64_MAX;
    int completed = 0, done_in_session = 0;
    while (!completed) {
        effect = poll(lc, now);
        switch (effect.kind) {
        case TIDEGATE_LIFECYCLE_EFFECT_KIND_NONE: {
            uint64_t deadline;
            CHECK_OK(tidegate_lifecycle_poll_timeout(lc, &deadline));
            uint64_t next = finish_at < deadline ? finish_at : deadline;
            CHECK(next != UINT64_MAX); /* something must be pending */
            now = next;
            CHECK_OK(tidegate_lifecycle_handle_timeout(lc, now));
            if (running_id != 0 && finish_at <= now) {
                TidegateStatus status = tidegate_lifecycle_on_task_done(lc, now, generation,
                                                                        running_id);
                if (status == TIDEGATE_STATUS_OK) done_in_session++;
                else CHECK(status == TIDEGATE_STATUS_REPORT_TASK_CARRIED_OVER);
                running_id = 0;
                finish_at = UINT64_MAX;
            }
            break;
        }
        case TIDEGATE_LIFECYCLE_EFFECT_KIND_RUN_TASK:
            CHECK(running_id == 0);
            CHECK(effect.generation == generation && effect.task_kind == 7);
            CHECK(payload_index(&effect) == (int)effect.task_id - 1);
            running_id = effect.task_id;
            finish_at = now + TASK_US;
            break;
        case TIDEGATE_LIFECYCLE_EFFECT_KIND_PERSIST_JOURNAL: {
            uint8_t small[8];
            size_t len = 0, required = 0;
            CHECK(tidegate_lifecycle_write_journal(lc, small, sizeof small, &len) ==
                  TIDEGATE_STATUS_BUFFER_TOO_SMALL);
            CHECK(len == effect.journal_len); /* the size required */
            CHECK_OK(tidegate_lifecycle_journal_len(lc, &required));
            CHECK(required == effect.journal_len && required <= MAX_JOURNAL);
            CHECK_OK(tidegate_lifecycle_write_journal(lc, disk, sizeof disk, &disk_len));
            CHECK(disk_len == effect.journal_len);
            /* A late report of the task running at the deadline leaves it in the journal. */
            if (running_id != 0) {
                CHECK(tidegate_lifecycle_on_task_done(lc, now, generation, running_id) ==
                      TIDEGATE_STATUS_REPORT_TASK_CARRIED_OVER);
                running_id = 0;
                finish_at = UINT64_MAX;
            }
            CHECK_OK(tidegate_lifecycle_on_journal_persisted(lc, now, generation));
            break;
        }
        case TIDEGATE_LIFECYCLE_EFFECT_KIND_COMPLETE_STOP:
            CHECK(effect.generation == generation);
            completed = 1;
            break;
        default:
            fprintf(stderr, "unexpected effect kind %u\n", (unsigned)effect.kind);
            exit(1);
        }
    }
    CHECK(state_of(lc, NULL) == TIDEGATE_LIFECYCLE_STATE_STOPPED);
    TidegateLifecycleStats stats;
    CHECK_OK(tidegate_lifecycle_stats(lc, &stats));
    CHECK(stats.last_stop_latency_us == now - stop_requested);
    CHECK(stats.last_stop_latency_us <= TEARDOWN_US + config.housekeeping_deadline_us);
    CHECK(stats.tasks_done == 2 && done_in_session == 2);
    CHECK(stats.tasks_carried_over == TASKS - 2);
    CHECK(stats.journals_written == 1);
    printf("stop: %llu us, %d tasks done, %llu carried over in a %zu-byte journal\n",
           (unsigned long long)stats.last_stop_latency_us, done_in_session,
           (unsigned long long)stats.tasks_carried_over, disk_len);

    /* The process is killed right after the completion. */
    tidegate_lifecycle_free(lc);
    return generation;
}

/* Session 2, in a new process: resume the carried-over tasks from the persisted journal. */
static void second_session(uint64_t old_generation) {
    TidegateLifecycleConfig config = tidegate_lifecycle_config_default();
    config.task_capacity = 16;
    TidegateLifecycle *lc = NULL;
    CHECK_OK(tidegate_lifecycle_new(&config, &lc));
    uint64_t now = 50000000, generation = 0;

    uint8_t corrupted[MAX_JOURNAL];
    memcpy(corrupted, disk, disk_len);
    corrupted[disk_len / 2] ^= 0x04;
    CHECK(tidegate_lifecycle_on_start(lc, now, corrupted, disk_len, &generation) ==
          TIDEGATE_STATUS_JOURNAL_CHECKSUM_MISMATCH);
    CHECK(tidegate_lifecycle_on_start(lc, now, disk, disk_len - 1, &generation) ==
          TIDEGATE_STATUS_JOURNAL_TRUNCATED);
    CHECK(generation == 0);
    uint64_t current = 99;
    CHECK(state_of(lc, &current) == TIDEGATE_LIFECYCLE_STATE_IDLE && current == 0);

    CHECK_OK(tidegate_lifecycle_on_start(lc, now, disk, disk_len, &generation));
    CHECK(generation == old_generation + 1);
    TidegateLifecycleEffect effect = poll(lc, now);
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_START_TUNNEL);
    CHECK(effect.carried_over_tasks == TASKS - 2);
    /* Nothing runs until the tunnel is up. */
    CHECK(poll(lc, now).kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_NONE);
    CHECK_OK(tidegate_lifecycle_on_tunnel_started(lc, now, generation));
    CHECK(tidegate_lifecycle_on_tunnel_started(lc, now, generation) ==
          TIDEGATE_STATUS_REPORT_UNEXPECTED);

    int next_index = 2, discarded = 0;
    for (;;) {
        effect = poll(lc, now);
        if (effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_NONE) break;
        if (effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_DISCARD_JOURNAL) {
            CHECK(next_index == TASKS);
            disk_len = 0;
            discarded = 1;
            continue;
        }
        CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_RUN_TASK);
        CHECK(effect.generation == generation);
        CHECK(payload_index(&effect) == next_index);
        next_index++;
        now += TASK_US;
        CHECK(tidegate_lifecycle_on_task_done(lc, now, old_generation, effect.task_id) ==
              TIDEGATE_STATUS_REPORT_STALE_GENERATION);
        CHECK_OK(tidegate_lifecycle_on_task_done(lc, now, generation, effect.task_id));
        CHECK(tidegate_lifecycle_on_task_done(lc, now, generation, effect.task_id) ==
              TIDEGATE_STATUS_REPORT_TASK_ALREADY_ENDED);
    }
    CHECK(next_index == TASKS && discarded);

    TidegateLifecycleStats stats;
    CHECK_OK(tidegate_lifecycle_stats(lc, &stats));
    CHECK(stats.tasks_resumed == TASKS - 2 && stats.tasks_done == TASKS - 2);
    CHECK(stats.stale_reports == TASKS - 2);
    CHECK(stats.journals_rejected == 2);

    /* The provider hits an error: tear down, (no) housekeeping, then cancel with the error. */
    CHECK_OK(tidegate_lifecycle_on_cancel(lc, now, 5));
    CHECK(tidegate_lifecycle_on_cancel(lc, now, 6) == TIDEGATE_STATUS_LIFECYCLE_ALREADY_STOPPING);
    CHECK(poll(lc, now).kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_TEAR_DOWN);
    CHECK_OK(tidegate_lifecycle_on_torn_down(lc, now + TEARDOWN_US, generation));
    effect = poll(lc, now + TEARDOWN_US);
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_CANCEL_WITH_ERROR);
    CHECK(effect.error_code == 5 && effect.generation == generation);
    CHECK(poll(lc, now + TEARDOWN_US).kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_NONE);
    CHECK(state_of(lc, NULL) == TIDEGATE_LIFECYCLE_STATE_STOPPED);
    printf("restart: %d carried-over tasks resumed in order, journal discarded\n", TASKS - 2);
    tidegate_lifecycle_free(lc);
}

/* Deadlines: a start that never comes up is cancelled at start_deadline_us, and a teardown that
 * is never reported gives way at teardown_deadline_us, so the stop ends without the host. */
static void hung_phases(void) {
    TidegateLifecycleConfig config = tidegate_lifecycle_config_default();
    config.start_deadline_us = 1000000;
    config.teardown_deadline_us = 500000;
    TidegateLifecycle *lc = NULL;
    CHECK_OK(tidegate_lifecycle_new(&config, &lc));
    uint64_t generation = 0;
    CHECK_OK(tidegate_lifecycle_on_start(lc, 0, NULL, 0, &generation));
    CHECK(poll(lc, 0).kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_START_TUNNEL);
    uint64_t deadline = 0;
    CHECK_OK(tidegate_lifecycle_poll_timeout(lc, &deadline));
    CHECK(deadline == 1000000);
    /* The tunnel never comes up: at the deadline the session is cancelled. */
    CHECK_OK(tidegate_lifecycle_handle_timeout(lc, deadline));
    CHECK(poll(lc, deadline).kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_TEAR_DOWN);
    CHECK_STATUS(tidegate_lifecycle_on_tunnel_started(lc, deadline, generation),
                 TIDEGATE_STATUS_REPORT_UNEXPECTED);
    /* The teardown is never reported either: it gives way half a second later. */
    CHECK_OK(tidegate_lifecycle_poll_timeout(lc, &deadline));
    CHECK(deadline == 1500000);
    CHECK_OK(tidegate_lifecycle_handle_timeout(lc, deadline));
    TidegateLifecycleEffect effect = poll(lc, deadline);
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_CANCEL_WITH_ERROR);
    CHECK(effect.cancel_cause == TIDEGATE_CANCEL_CAUSE_START_TIMED_OUT && effect.error_code == 0);
    CHECK(state_of(lc, NULL) == TIDEGATE_LIFECYCLE_STATE_STOPPED);
    TidegateLifecycleStats stats;
    CHECK_OK(tidegate_lifecycle_stats(lc, &stats));
    CHECK(stats.start_timeouts == 1 && stats.teardown_timeouts == 1);
    CHECK(stats.last_stop_latency_us == 500000);
    config.persist_deadline_us = 0;
    TidegateLifecycle *refused = NULL;
    CHECK_STATUS(tidegate_lifecycle_new(&config, &refused), TIDEGATE_STATUS_CONFIG_ZERO_DURATION);
    tidegate_lifecycle_free(lc);
}

/* A host's path monitor during a Wi-Fi to cellular hand-over, written from the header: a burst
 * of path reports restarts the tunnel once, on the path that holds; an attempt for a path gone
 * is abandoned and its late report refused; failed attempts back off and finally cancel. */
static void path_changes(void) {
    TidegateLifecycleConfig config = tidegate_lifecycle_config_default();
    config.restart_attempts_max = 2;
    TidegateLifecycle *lc = NULL;
    CHECK_OK(tidegate_lifecycle_new(&config, &lc));
    uint64_t generation = 0;
    bool scheduled = true;
    const uint64_t wifi = 0x1111, cellular = 0x2222, hotel = 0x3333;
    CHECK_OK(tidegate_lifecycle_on_path_change(lc, 0, wifi, &scheduled));
    CHECK(!scheduled);
    CHECK_OK(tidegate_lifecycle_on_start(lc, 0, NULL, 0, &generation));
    CHECK(poll(lc, 0).kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_START_TUNNEL);
    CHECK_OK(tidegate_lifecycle_on_tunnel_started(lc, 1000, generation));
    /* The same path again restarts nothing. */
    CHECK_OK(tidegate_lifecycle_on_path_change(lc, 2000, wifi, &scheduled));
    CHECK(!scheduled);
    /* Three reports within 400 ms, ending on cellular: one restart, a debounce after the last. */
    uint64_t now = 10000;
    const uint64_t burst[3] = {cellular, wifi, cellular};
    for (int i = 0; i < 3; i++, now += 200000) {
        CHECK_OK(tidegate_lifecycle_on_path_change(lc, now, burst[i], &scheduled));
        CHECK(scheduled);
        CHECK(poll(lc, now).kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_NONE);
    }
    uint64_t deadline = 0;
    CHECK_OK(tidegate_lifecycle_poll_timeout(lc, &deadline));
    CHECK(deadline == 410000 + config.path_debounce_us);
    CHECK_OK(tidegate_lifecycle_handle_timeout(lc, deadline));
    CHECK(state_of(lc, NULL) == TIDEGATE_LIFECYCLE_STATE_REASSERTING);
    TidegateLifecycleEffect effect = poll(lc, deadline);
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_RESTART_TUNNEL);
    CHECK(effect.path == cellular && effect.restart_attempt == 1);
    const uint64_t first = effect.restart_id;
    CHECK(poll(lc, deadline).kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_NONE);
    /* The slow attempt on cellular is overtaken by a move to the hotel's Wi-Fi. */
    now = deadline + 100000;
    CHECK_OK(tidegate_lifecycle_on_path_change(lc, now, hotel, &scheduled));
    now += config.path_debounce_us;
    CHECK_OK(tidegate_lifecycle_handle_timeout(lc, now));
    effect = poll(lc, now);
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_ABANDON_RESTART);
    CHECK(effect.restart_id == first);
    effect = poll(lc, now);
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_RESTART_TUNNEL);
    CHECK(effect.path == hotel && effect.restart_id > first);
    const uint64_t second = effect.restart_id;
    CHECK_STATUS(tidegate_lifecycle_on_restart_done(lc, now, generation, first),
                 TIDEGATE_STATUS_REPORT_STALE_RESTART);
    /* The hotel's captive portal: the attempt fails, waits out the back-off, fails again, and
     * with the attempts used up the session is cancelled instead of left up but dead. */
    CHECK_OK(tidegate_lifecycle_on_restart_failed(lc, now, generation, second));
    CHECK(poll(lc, now).kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_NONE);
    CHECK_OK(tidegate_lifecycle_poll_timeout(lc, &deadline));
    CHECK(deadline == now + config.restart_backoff_us);
    effect = poll(lc, deadline);
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_RESTART_TUNNEL);
    CHECK(effect.path == hotel && effect.restart_attempt == 2);
    CHECK_OK(tidegate_lifecycle_on_restart_failed(lc, deadline, generation, effect.restart_id));
    CHECK(poll(lc, deadline).kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_TEAR_DOWN);
    CHECK_OK(tidegate_lifecycle_on_torn_down(lc, deadline, generation));
    effect = poll(lc, deadline);
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_CANCEL_WITH_ERROR);
    CHECK(effect.cancel_cause == TIDEGATE_CANCEL_CAUSE_RESTARTS_EXHAUSTED);
    TidegateLifecycleStats stats;
    CHECK_OK(tidegate_lifecycle_stats(lc, &stats));
    CHECK(stats.path_changes == 4 && stats.restarts_run == 3 && stats.restarts_abandoned == 1);
    CHECK(stats.restarts_failed == 2 && stats.restarts_exhausted == 1 && stats.stale_reports == 1);
    /* A wake after a night's sleep restarts the next session's tunnel on the path it is on. */
    CHECK_OK(tidegate_lifecycle_on_start(lc, deadline, NULL, 0, &generation));
    CHECK(poll(lc, deadline).kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_START_TUNNEL);
    CHECK_OK(tidegate_lifecycle_on_tunnel_started(lc, deadline, generation));
    now = deadline + 8ull * 3600 * 1000000;
    CHECK_OK(tidegate_lifecycle_on_wake(lc, now, 8ull * 3600 * 1000000, &scheduled));
    CHECK(scheduled);
    effect = poll(lc, now + config.path_debounce_us);
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_RESTART_TUNNEL && effect.path == hotel);
    CHECK_OK(tidegate_lifecycle_on_restart_done(lc, now + 2000000, generation, effect.restart_id));
    CHECK(state_of(lc, NULL) == TIDEGATE_LIFECYCLE_STATE_RUNNING);
    tidegate_lifecycle_free(lc);
}

int main(void) {
    bad_input();
    uint64_t generation = first_session();
    second_session(generation);
    hung_phases();
    path_changes();
    return 0;
}
