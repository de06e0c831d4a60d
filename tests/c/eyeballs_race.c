/*
 * Runs Happy Eyeballs races through the C header the way a BSD-socket proxy would, on a virtual
 * clock: the "network" is a table saying, per address, whether a connect succeeds or fails after
 * some delay or is swallowed (a black hole).
 *
 * Checked:
 * - IPv6 black hole: IPv4 starts 250 ms later and wins; the IPv6 attempt is cancelled.
 * - Every candidate fails: one FAILED action, with the class of the last errno.
 * - Budget exhaustion: no attempt beyond the budget; a race that may not wait fails at once with
 *   NO_BUDGET, and a direct request is refused with TIDEGATE_STATUS_NO_BUDGET_ATTEMPTS.
 * - Back-off: EMFILE halves the limits, quiet time restores them.
 * - Every started attempt ends exactly once (connected, failed or cancelled), and the budget
 *   counts what the host holds.
 *
 * Exits 0 on success; prints the failed check and exits 1 otherwise.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addresses.h"
#include "check.h"
#include "tidegate.h"

#define MS 1000u
#define NEVER UINT64_MAX
#define MAX_ATTEMPTS 16

/* How the simulated network answers a connect to one address. */
typedef struct Path {
    TidegateSocketAddress address;
    uint64_t after_us; /* when the outcome arrives, after the start */
    int errno_value;   /* 0: connects; otherwise the connect fails with this errno */
    int black_hole;    /* nothing ever comes back */
} Path;

/* One DNS answer, delivered at a virtual time. */
typedef struct Answer {
    uint64_t at_us;
    uint32_t family;
    const TidegateSocketAddress *addresses;
    size_t count;
    int delivered;
} Answer;

enum Life { UNUSED = 0, STARTED, ENDED };

/* The host's side of one race. */
typedef struct Host {
    TidegateEyeballs *race;
    const Path *paths;
    size_t path_count;
    Answer *answers;
    size_t answer_count;
    enum Life life[MAX_ATTEMPTS];
    uint64_t outcome_at[MAX_ATTEMPTS]; /* NEVER when nothing is pending */
    int outcome_errno[MAX_ATTEMPTS];
    /* What happened, for the checks. */
    uint64_t started_at[MAX_ATTEMPTS];
    int starts, cancels, failures, winner;
    uint64_t won_at;
    TidegateEyeballsAction failure;
} Host;

static int same_address(const TidegateSocketAddress *a, const TidegateSocketAddress *b) {
    return a->family == b->family && a->port == b->port && memcmp(a->ip, b->ip, 16) == 0;
}

static void host_init(Host *host, TidegateEyeballs *race, const Path *paths, size_t path_count,
                      Answer *answers, size_t answer_count) {
    memset(host, 0, sizeof *host);
    host->race = race;
    host->paths = paths;
    host->path_count = path_count;
    host->answers = answers;
    host->answer_count = answer_count;
    host->winner = -1;
    for (size_t i = 0; i < MAX_ATTEMPTS; i++) host->outcome_at[i] = NEVER;
}

static void end_attempt(Host *host, uint32_t index) {
    CHECK(index < MAX_ATTEMPTS);
    CHECK(host->life[index] == STARTED); /* ends exactly once */
    host->life[index] = ENDED;
    host->outcome_at[index] = NEVER;
}

/* Poll until NONE, acting on each action as a socket host would. */
static void drain(Host *host, TidegateBudget *budget, uint64_t now) {
    for (;;) {
        TidegateEyeballsAction action;
        CHECK_OK(tidegate_eyeballs_poll_action(host->race, now, budget, &action));
        switch (action.kind) {
        case TIDEGATE_EYEBALLS_ACTION_KIND_NONE:
            return;
        case TIDEGATE_EYEBALLS_ACTION_KIND_START_ATTEMPT: {
            CHECK(action.index < MAX_ATTEMPTS);
            CHECK(host->life[action.index] == UNUSED);
            TidegateBudgetLevels levels;
            CHECK_OK(tidegate_budget_levels(budget, &levels));
            CHECK(levels.attempts_in_flight <= levels.attempt_limit); /* never beyond budget */
            host->life[action.index] = STARTED;
            host->started_at[action.index] = now;
            host->starts++;
            /* socket() + connect() would go here. */
            for (size_t p = 0; p < host->path_count; p++) {
                if (same_address(&host->paths[p].address, &action.address)) {
                    if (!host->paths[p].black_hole) {
                        host->outcome_at[action.index] = now + host->paths[p].after_us;
                        host->outcome_errno[action.index] = host->paths[p].errno_value;
                    }
                }
            }
            break;
        }
        case TIDEGATE_EYEBALLS_ACTION_KIND_CANCEL_ATTEMPT:
            end_attempt(host, action.index); /* close() */
            host->cancels++;
            break;
        case TIDEGATE_EYEBALLS_ACTION_KIND_CONNECTED:
            end_attempt(host, action.index); /* keep the socket: it is the connection */
            CHECK(host->winner == -1);
            host->winner = (int)action.index;
            host->won_at = now;
            break;
        case TIDEGATE_EYEBALLS_ACTION_KIND_FAILED:
            host->failures++;
            host->failure = action;
            break;
        default:
            CHECK(0);
        }
    }
}

/* Run the race on the virtual clock until it is finished or `end` passes. */
static void run(Host *host, TidegateBudget *budget, uint64_t start, uint64_t end) {
    uint64_t now = start;
    drain(host, budget, now);
    for (int steps = 0;; steps++) {
        CHECK(steps < 10000);
        bool finished = false;
        CHECK_OK(tidegate_eyeballs_is_finished(host->race, &finished));
        if (finished) return;
        uint64_t next = NEVER, timer = NEVER;
        CHECK_OK(tidegate_eyeballs_poll_timeout(host->race, &timer));
        if (timer < next) next = timer;
        CHECK_OK(tidegate_budget_poll_timeout(budget, &timer));
        if (timer < next) next = timer;
        for (size_t i = 0; i < host->answer_count; i++) {
            if (!host->answers[i].delivered && host->answers[i].at_us < next) {
                next = host->answers[i].at_us;
            }
        }
        for (size_t i = 0; i < MAX_ATTEMPTS; i++) {
            if (host->outcome_at[i] < next) next = host->outcome_at[i];
        }
        if (next == NEVER || next > end) return;
        if (next > now) now = next;

        for (size_t i = 0; i < host->answer_count; i++) {
            Answer *answer = &host->answers[i];
            if (!answer->delivered && answer->at_us <= now) {
                size_t added = 0;
                answer->delivered = 1;
                CHECK_OK(tidegate_eyeballs_on_resolved(host->race, now, answer->family,
                                                       answer->addresses, answer->count, &added));
                CHECK(added == answer->count);
            }
        }
        for (size_t i = 0; i < MAX_ATTEMPTS; i++) {
            if (host->outcome_at[i] > now) continue;
            host->outcome_at[i] = NEVER;
            if (host->outcome_errno[i] == 0) {
                /* Rejected only if the race already cancels it: then CANCEL_ATTEMPT closes it. */
                TidegateStatus status = tidegate_eyeballs_on_attempt_connected(host->race, now, i);
                CHECK(status == TIDEGATE_STATUS_OK ||
                      status == TIDEGATE_STATUS_ATTEMPT_NOT_IN_FLIGHT);
            } else if (tidegate_eyeballs_on_attempt_failed(host->race, now, i,
                                                           host->outcome_errno[i]) ==
                       TIDEGATE_STATUS_OK) {
                end_attempt(host, i); /* close() */
            }
        }
        CHECK_OK(tidegate_budget_handle_timeout(budget, now));
        CHECK_OK(tidegate_eyeballs_handle_timeout(host->race, now));
        drain(host, budget, now);
    }
}

static void check_all_ended(const Host *host) {
    for (size_t i = 0; i < MAX_ATTEMPTS; i++) CHECK(host->life[i] != STARTED);
}

static TidegateEyeballs *new_race(const TidegateEyeballsConfig *config, uint64_t now) {
    TidegateEyeballs *race = NULL;
    CHECK_OK(tidegate_eyeballs_new(config, now, &race));
    CHECK(race != NULL);
    return race;
}

static void ipv6_black_hole(TidegateBudget *budget) {
    TidegateEyeballsConfig config = tidegate_eyeballs_config_default();
    TidegateEyeballs *race = new_race(&config, 0);
    TidegateSocketAddress aaaa[] = {v6(1)};
    TidegateSocketAddress a[] = {v4(1)};
    Path paths[] = {{v6(1), 0, 0, 1}, {v4(1), 20 * MS, 0, 0}};
    Answer answers[] = {{0, TIDEGATE_ADDRESS_FAMILY_IPV6, aaaa, 1, 0},
                        {1 * MS, TIDEGATE_ADDRESS_FAMILY_IPV4, a, 1, 0}};
    Host host;
    host_init(&host, race, paths, 2, answers, 2);
    run(&host, budget, 0, 10000 * MS);

    CHECK(host.starts == 2);
    CHECK(host.started_at[0] == 0);
    CHECK(host.started_at[1] == 250 * MS); /* the Connection Attempt Delay */
    CHECK(host.winner == 1 && host.won_at == 270 * MS);
    CHECK(host.cancels == 1 && host.failures == 0);
    check_all_ended(&host);

    TidegateRaceStatus status;
    CHECK_OK(tidegate_eyeballs_status(race, &status));
    CHECK(status.state == TIDEGATE_RACE_STATE_CONNECTED && status.index == 1);
    TidegateEyeballsStats stats;
    CHECK_OK(tidegate_eyeballs_stats(race, &stats));
    CHECK(stats.attempts_started == 2 && stats.attempts_also_ran == 1);

    TidegateBudgetLevels levels;
    CHECK_OK(tidegate_budget_levels(budget, &levels));
    CHECK(levels.attempts_in_flight == 0 && levels.open_connections == 1);
    /* The host closes the winner some time later. */
    CHECK_OK(tidegate_budget_on_connection_closed(budget, 5000 * MS));
    CHECK_OK(tidegate_budget_levels(budget, &levels));
    CHECK(levels.open_connections == 0);
    tidegate_eyeballs_free(race);
    printf("black hole: IPv4 started at %llu ms and won at %llu ms, IPv6 cancelled\n",
           (unsigned long long)(host.started_at[1] / MS), (unsigned long long)(host.won_at / MS));
}

static void every_candidate_fails(TidegateBudget *budget) {
    TidegateEyeballsConfig config = tidegate_eyeballs_config_default();
    TidegateEyeballs *race = new_race(&config, 0);
    TidegateSocketAddress aaaa[] = {v6(1)};
    TidegateSocketAddress a[] = {v4(1)};
    Path paths[] = {{v6(1), 5 * MS, ENETUNREACH, 0}, {v4(1), 20 * MS, ECONNREFUSED, 0}};
    Answer answers[] = {{0, TIDEGATE_ADDRESS_FAMILY_IPV6, aaaa, 1, 0},
                        {0, TIDEGATE_ADDRESS_FAMILY_IPV4, a, 1, 0}};
    Host host;
    host_init(&host, race, paths, 2, answers, 2);
    run(&host, budget, 0, 10000 * MS);

    CHECK(host.starts == 2 && host.winner == -1 && host.cancels == 0);
    CHECK(host.started_at[1] == 10 * MS); /* the failure started the next at once (10 ms floor) */
    CHECK(host.failures == 1);
    CHECK(host.failure.failure == TIDEGATE_RACE_FAILURE_ALL_ATTEMPTS_FAILED);
    CHECK(host.failure.last_error_class == TIDEGATE_ERROR_CLASS_REFUSED);
    check_all_ended(&host);
    TidegateBudgetLevels levels;
    CHECK_OK(tidegate_budget_levels(budget, &levels));
    CHECK(levels.attempts_in_flight == 0 && levels.open_connections == 0);
    tidegate_eyeballs_free(race);
    printf("all failed: one failure, last class %u\n", (unsigned)host.failure.last_error_class);
}

static void budget_exhaustion(void) {
    TidegateBudgetConfig budget_config = tidegate_budget_config_default();
    budget_config.max_attempts_in_flight = 1;
    TidegateBudget *budget = NULL;
    CHECK_OK(tidegate_budget_new(&budget_config, &budget));

    TidegateEyeballsConfig config = tidegate_eyeballs_config_default();
    TidegateEyeballs *holder = new_race(&config, 0);
    TidegateSocketAddress aaaa[] = {v6(1)};
    Path paths[] = {{v6(1), 0, 0, 1}};
    Answer answers[] = {{0, TIDEGATE_ADDRESS_FAMILY_IPV6, aaaa, 1, 0}};
    Host host;
    host_init(&host, holder, paths, 1, answers, 1);
    run(&host, budget, 0, 100 * MS);
    CHECK(host.starts == 1);

    /* A race that may not wait is refused at once, clearly. */
    config.budget_wait_us = 0;
    TidegateEyeballs *impatient = new_race(&config, 100 * MS);
    TidegateSocketAddress a[] = {v4(9)};
    size_t added = 0;
    CHECK_OK(tidegate_eyeballs_on_resolved(impatient, 100 * MS, TIDEGATE_ADDRESS_FAMILY_IPV4, a, 1,
                                           &added));
    CHECK_OK(tidegate_eyeballs_on_resolution_done(impatient, 100 * MS));
    TidegateEyeballsAction action;
    CHECK_OK(tidegate_eyeballs_poll_action(impatient, 100 * MS, budget, &action));
    CHECK(action.kind == TIDEGATE_EYEBALLS_ACTION_KIND_FAILED);
    CHECK(action.failure == TIDEGATE_RACE_FAILURE_NO_BUDGET);
    CHECK(action.budget_refusal == TIDEGATE_BUDGET_REFUSAL_ATTEMPTS_IN_FLIGHT);
    CHECK(tidegate_budget_try_start_attempt(budget, 100 * MS) ==
          TIDEGATE_STATUS_NO_BUDGET_ATTEMPTS);
    TidegateBudgetLevels levels;
    CHECK_OK(tidegate_budget_levels(budget, &levels));
    CHECK(levels.attempts_in_flight == 1);

    /* Aborting the holder releases its attempt, exactly once. */
    CHECK_OK(tidegate_eyeballs_on_abort(host.race, 200 * MS));
    drain(&host, budget, 200 * MS);
    CHECK(host.cancels == 1);
    check_all_ended(&host);
    bool finished = false;
    CHECK_OK(tidegate_eyeballs_is_finished(host.race, &finished));
    CHECK(finished);
    CHECK_OK(tidegate_budget_levels(budget, &levels));
    CHECK(levels.attempts_in_flight == 0);
    CHECK_OK(tidegate_budget_try_start_attempt(budget, 200 * MS));
    CHECK_OK(tidegate_budget_on_attempt_cancelled(budget, 200 * MS));

    tidegate_eyeballs_free(impatient);
    tidegate_eyeballs_free(holder);
    tidegate_budget_free(budget);
    printf("budget: refused at once with \"%s\"\n",
           tidegate_status_str(TIDEGATE_STATUS_NO_BUDGET_ATTEMPTS));
}

static void back_off_and_recover(void) {
    TidegateBudgetConfig config = tidegate_budget_config_default();
    TidegateBudget *budget = NULL;
    CHECK_OK(tidegate_budget_new(&config, &budget));
    CHECK_OK(tidegate_budget_set_fd_limit(budget, 10240));
    TidegateBudgetLevels levels;
    CHECK_OK(tidegate_budget_levels(budget, &levels));
    CHECK(levels.attempt_limit == 64 && levels.connection_limit == 400);

    CHECK_OK(tidegate_budget_try_start_attempt(budget, 0));
    CHECK_OK(tidegate_budget_on_attempt_failed(budget, 10 * MS, EMFILE));
    CHECK_OK(tidegate_budget_levels(budget, &levels));
    CHECK(levels.backing_off && levels.attempt_limit == 32 && levels.connection_limit == 200);
    uint64_t deadline = 0;
    CHECK_OK(tidegate_budget_poll_timeout(budget, &deadline));
    CHECK(deadline == 1010 * MS);
    for (uint64_t now = deadline; now != NEVER;) {
        CHECK_OK(tidegate_budget_handle_timeout(budget, now));
        CHECK_OK(tidegate_budget_poll_timeout(budget, &now));
    }
    CHECK_OK(tidegate_budget_levels(budget, &levels));
    CHECK(!levels.backing_off && levels.attempt_limit == 64 && levels.connection_limit == 400);
    TidegateBudgetStats stats;
    CHECK_OK(tidegate_budget_stats(budget, &stats));
    CHECK(stats.resource_errors == 1 && stats.backoffs == 1);
    tidegate_budget_free(budget);
    printf("back-off: halved on EMFILE, recovered step by step\n");
}

static void bad_input(void) {
    TidegateEyeballsConfig config = tidegate_eyeballs_config_default();
    TidegateEyeballs *race = NULL;
    CHECK(tidegate_eyeballs_new(NULL, 0, &race) == TIDEGATE_STATUS_NULL_ARGUMENT);
    CHECK(tidegate_eyeballs_new(&config, 0, NULL) == TIDEGATE_STATUS_NULL_ARGUMENT);
    config.preferred_family = 5;
    CHECK(tidegate_eyeballs_new(&config, 0, &race) ==
          TIDEGATE_STATUS_CONFIG_UNKNOWN_ADDRESS_FAMILY);
    CHECK(race == NULL); /* out-params are written only on success */

    TidegateBudgetConfig budget_config = tidegate_budget_config_default();
    TidegateBudget *budget = NULL;
    budget_config.max_open_connections = 0;
    CHECK(tidegate_budget_new(&budget_config, &budget) == TIDEGATE_STATUS_CONFIG_BUDGET_ZERO_LIMIT);
    CHECK(budget == NULL);
    budget_config = tidegate_budget_config_default();
    CHECK_OK(tidegate_budget_new(&budget_config, &budget));
    CHECK(tidegate_budget_on_connection_closed(budget, 0) ==
          TIDEGATE_STATUS_BUDGET_NO_OPEN_CONNECTION);

    config = tidegate_eyeballs_config_default();
    CHECK_OK(tidegate_eyeballs_new(&config, 0, &race));
    TidegateSocketAddress mixed[] = {v6(1), v4(1)};
    size_t added = 99;
    CHECK(tidegate_eyeballs_on_resolved(race, 0, TIDEGATE_ADDRESS_FAMILY_IPV6, mixed, 2, &added) ==
          TIDEGATE_STATUS_ADDRESS_FAMILY_MISMATCH);
    CHECK(added == 99);
    CHECK(tidegate_eyeballs_on_resolved(race, 0, 7, mixed, 1, &added) ==
          TIDEGATE_STATUS_INVALID_ARGUMENT);
    CHECK(tidegate_eyeballs_on_resolved(race, 0, TIDEGATE_ADDRESS_FAMILY_IPV6, NULL, 1, &added) ==
          TIDEGATE_STATUS_NULL_ARGUMENT);
    CHECK(tidegate_eyeballs_on_attempt_failed(race, 0, 3, ECONNREFUSED) ==
          TIDEGATE_STATUS_UNKNOWN_ATTEMPT);
    TidegateEyeballsAction action;
    CHECK(tidegate_eyeballs_poll_action(race, 0, NULL, &action) == TIDEGATE_STATUS_NULL_ARGUMENT);
    CHECK(tidegate_eyeballs_poll_action(NULL, 0, budget, &action) == TIDEGATE_STATUS_NULL_ARGUMENT);
    TidegateRaceStatus status;
    CHECK_OK(tidegate_eyeballs_status(race, &status));
    CHECK(status.state == TIDEGATE_RACE_STATE_RESOLVING);
    /* Both queries fail: one clear failure, no addresses. */
    CHECK_OK(tidegate_eyeballs_on_resolution_failed(race, 1, TIDEGATE_ADDRESS_FAMILY_IPV6));
    CHECK_OK(tidegate_eyeballs_on_resolution_failed(race, 1, TIDEGATE_ADDRESS_FAMILY_IPV4));
    CHECK_OK(tidegate_eyeballs_poll_action(race, 1, budget, &action));
    CHECK(action.kind == TIDEGATE_EYEBALLS_ACTION_KIND_FAILED);
    CHECK(action.failure == TIDEGATE_RACE_FAILURE_NO_ADDRESSES);
    CHECK(tidegate_eyeballs_on_resolution_done(race, 2) == TIDEGATE_STATUS_RACE_FINISHED);

    tidegate_eyeballs_free(race);
    tidegate_eyeballs_free(NULL);
    tidegate_budget_free(budget);
    tidegate_budget_free(NULL);
    CHECK(strcmp(tidegate_status_str(TIDEGATE_STATUS_RACE_FINISHED),
                 "the race is already finished") == 0);
    CHECK(tidegate_errno_class(EMFILE) == TIDEGATE_ERROR_CLASS_RESOURCE_EXHAUSTED);
    CHECK(tidegate_errno_class(ECONNREFUSED) == TIDEGATE_ERROR_CLASS_REFUSED);
    TidegateEyeballsConfig race_config = tidegate_eyeballs_config_default();
    budget_config = tidegate_budget_config_default();
    size_t size = 0, align = 0;
    CHECK_OK(tidegate_eyeballs_footprint(&race_config, &size, &align));
    CHECK(size > 16 * sizeof(TidegateSocketAddress) && align > 0);
    CHECK_OK(tidegate_budget_footprint(&budget_config, &size, &align));
    CHECK(size > 0 && align > 0);
    race_config.connection_attempt_delay_us = 5000; /* below the RFC's 10 ms floor */
    CHECK(tidegate_eyeballs_footprint(&race_config, &size, &align) ==
          TIDEGATE_STATUS_CONFIG_EYEBALLS_OUT_OF_RANGE);
    budget_config.fd_limit = 0;
    CHECK(tidegate_budget_footprint(&budget_config, &size, &align) ==
          TIDEGATE_STATUS_CONFIG_BUDGET_ZERO_LIMIT);
}

int main(void) {
    bad_input();

    TidegateBudgetConfig config = tidegate_budget_config_default();
    TidegateBudget *budget = NULL;
    CHECK_OK(tidegate_budget_new(&config, &budget));
    ipv6_black_hole(budget);
    every_candidate_fails(budget);
    tidegate_budget_free(budget);

    budget_exhaustion();
    back_off_and_recover();
    TidegateEyeballsConfig race_config = tidegate_eyeballs_config_default();
    size_t race_bytes = 0, budget_bytes = 0, align = 0;
    CHECK_OK(tidegate_eyeballs_footprint(&race_config, &race_bytes, &align));
    CHECK_OK(tidegate_budget_footprint(&config, &budget_bytes, &align));
    printf("footprint: race %zu bytes, budget %zu bytes\n", race_bytes, budget_bytes);
    return 0;
}
