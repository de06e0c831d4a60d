/*
 * The black box through the C header, in a real file and a real process that is killed.
 *
 * A child process plays a provider under memory pressure: it runs a lifecycle and a memory
 * governor, and every "second" captures both into a TidegateBlackBoxRecord, encodes it and
 * writes the slot into the black box file with pwrite. In the middle of writing its sixth record
 * it is killed with SIGKILL, as jetsam kills a provider: no stop call, half a slot written.
 *
 * The parent, the next launch, reads the file back: the torn slot is skipped, record 5 is read,
 * and it has no clean-stop flag, so the launch knows the last session was killed, and the
 * figures say what it last knew (critical pressure, the session running). It then runs a session
 * that stops cleanly and writes record 6 with the clean-stop flag, which the launch after reads.
 *
 * Exits 0 on success; prints the failed check and exits 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "tidegate.h"

static TidegateLifecycle *running_lifecycle(uint64_t now) {
    TidegateLifecycleConfig config = tidegate_lifecycle_config_default();
    TidegateLifecycle *lc = NULL;
    CHECK_OK(tidegate_lifecycle_new(&config, &lc));
    uint64_t generation = 0;
    CHECK_OK(tidegate_lifecycle_on_start(lc, now, NULL, 0, &generation));
    TidegateLifecycleEffect effect;
    CHECK_OK(tidegate_lifecycle_poll_effect(lc, now, &effect));
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_START_TUNNEL);
    CHECK_OK(tidegate_lifecycle_on_tunnel_started(lc, now, generation));
    return lc;
}

/* Capture, encode and write record `sequence`; with `torn`, write only half the slot. */
static void write_record(int fd, uint64_t sequence, uint64_t now, uint32_t flags,
                         const TidegateLifecycle *lc, const TidegateMemory *memory, int torn) {
    TidegateBlackBoxRecord record;
    memset(&record, 0, sizeof record);
    record.sequence = sequence;
    record.written_at_us = now;
    record.flags = flags;
    CHECK_OK(tidegate_black_box_capture_lifecycle(&record, lc));
    if (memory != NULL) {
        CHECK_OK(tidegate_black_box_capture_memory(&record, memory));
    }
    uint8_t slot[TIDEGATE_BLACK_BOX_SLOT_LEN];
    size_t offset = 0;
    CHECK_OK(tidegate_black_box_encode(&record, slot, sizeof slot, &offset));
    CHECK(offset == (sequence % 2) * TIDEGATE_BLACK_BOX_SLOT_LEN);
    size_t len = torn ? sizeof slot / 2 : sizeof slot;
    CHECK(pwrite(fd, slot, len, (off_t)offset) == (ssize_t)len);
}

static TidegateBlackBoxRecord read_black_box(int fd, TidegateStatus expected) {
    uint8_t file[TIDEGATE_BLACK_BOX_LEN];
    ssize_t got = pread(fd, file, sizeof file, 0);
    CHECK(got >= 0);
    TidegateBlackBoxRecord record;
    memset(&record, 0, sizeof record);
    CHECK_STATUS(tidegate_black_box_decode(file, (size_t)got, &record), expected);
    return record;
}

/* The provider that is killed: five records under rising pressure, then SIGKILL mid-write. */
static void killed_provider(int fd) {
    TidegateLifecycle *lc = running_lifecycle(1000000);
    TidegateMemoryConfig config = tidegate_memory_config_packet_tunnel();
    TidegateMemory *memory = NULL;
    CHECK_OK(tidegate_memory_new(&config, &memory));
    for (uint64_t second = 1; second <= 5; second++) {
        uint64_t now = (1 + second) * 1000000;
        /* The footprint climbs by 9 MiB a second toward the 50 MiB limit. */
        uint64_t footprint = second * 9ull * 1024 * 1024;
        CHECK_OK(tidegate_memory_on_footprint(memory, now, footprint));
        write_record(fd, second, now, 0, lc, memory, 0);
    }
    write_record(fd, 6, 7000000, 0, lc, memory, 1);
    raise(SIGKILL);
    exit(2); /* not reached */
}

int main(void) {
    FILE *file = tmpfile();
    CHECK(file != NULL);
    int fd = fileno(file);
    read_black_box(fd, TIDEGATE_STATUS_BLACK_BOX_EMPTY);

    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        killed_provider(fd);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    /* The next launch: the torn sixth record is skipped; the fifth says the session was killed
     * while running, at critical pressure. */
    TidegateBlackBoxRecord last = read_black_box(fd, TIDEGATE_STATUS_OK);
    CHECK(last.sequence == 5);
    CHECK((last.flags & TIDEGATE_BLACK_BOX_CLEAN_STOP) == 0);
    CHECK(last.lifecycle_state == TIDEGATE_LIFECYCLE_STATE_RUNNING && last.generation == 1);
    CHECK(last.pressure == TIDEGATE_PRESSURE_CRITICAL);
    CHECK(last.memory_peak_bytes >= 45ull * 1024 * 1024);
    printf("killed session found: record %llu, state %llu, pressure %llu, peak %llu MiB\n",
           (unsigned long long)last.sequence, (unsigned long long)last.lifecycle_state,
           (unsigned long long)last.pressure,
           (unsigned long long)(last.memory_peak_bytes >> 20));

    /* This launch stops cleanly and says so in its last record. */
    TidegateLifecycle *lc = running_lifecycle(10000000);
    uint64_t now = 11000000;
    TidegateStopOutcome outcome;
    CHECK_OK(tidegate_lifecycle_on_stop(lc, now, &outcome));
    TidegateLifecycleEffect effect;
    CHECK_OK(tidegate_lifecycle_poll_effect(lc, now, &effect));
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_TEAR_DOWN);
    CHECK_OK(tidegate_lifecycle_on_torn_down(lc, now, effect.generation));
    CHECK_OK(tidegate_lifecycle_poll_effect(lc, now, &effect));
    CHECK(effect.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_COMPLETE_STOP);
    write_record(fd, last.sequence + 1, now, TIDEGATE_BLACK_BOX_CLEAN_STOP, lc, NULL, 0);
    tidegate_lifecycle_free(lc);

    TidegateBlackBoxRecord clean = read_black_box(fd, TIDEGATE_STATUS_OK);
    CHECK(clean.sequence == 6 && (clean.flags & TIDEGATE_BLACK_BOX_CLEAN_STOP) != 0);
    CHECK(clean.lifecycle_state == TIDEGATE_LIFECYCLE_STATE_STOPPED && clean.stops_completed == 1);
    CHECK(clean.pressure == 0 && clean.memory_peak_bytes == 0);
    printf("clean stop found: record %llu\n", (unsigned long long)clean.sequence);
    fclose(file);
    return 0;
}
