/*
 * Flows, races and the connection budget together, through the C header, on a virtual clock: a
 * BSD-socket proxy admits flows with tidegate_flow_governor_on_new_flow_with_budget, connects
 * each one with a TidegateEyeballs race polled through tidegate_flow_governor_poll_race, and
 * closes them with tidegate_flow_governor_on_closed_with_budget. The budget allows 2 attempts in
 * flight and 3 connections.
 *
 * Checked:
 * 1. IPv6 black hole: IPv4 starts after 250 ms and wins; the flow is established, the IPv6
 *    attempt is cancelled and counted as an also-ran attempt; the budget counts one connection.
 * 2. A flow arriving while both attempts are in flight is refused at once, naming the limit.
 * 3. Every address refuses: one FAILED step with class REFUSED; the flow is closed.
 * 4. EMFILE: the race fails with RESOURCE_EXHAUSTED, the budget backs off, and the next
 *    admission is refused at once for CONNECTIONS.
 * 5. Closing releases the flow's connection exactly once (a second close is STALE_FLOW); a close
 *    through the governor alone is owed and paid by tidegate_flow_governor_settle_budget.
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
#define MAX_STEPS 8

static TidegateFlowGovernor *governor;
static TidegateBudget *budget;

static uint64_t key_of(const char *text) {
    uint64_t key = 0;
    CHECK_OK(tidegate_flow_key((const uint8_t *)text, strlen(text), &key));
    return key;
}

/* Ask to admit a flow of `app`; writes the budget limit that refused it, if any. */
static TidegateAdmission admit(uint64_t now, const char *app, TidegateBudgetRefusal *refusal) {
    TidegateAdmission admission;
    CHECK_OK(tidegate_flow_governor_on_new_flow_with_budget(
        governor, budget, now, key_of(app), key_of("example.com:443"), TIDEGATE_FLOW_PROTOCOL_TCP,
        &admission, refusal));
    return admission;
}

/* A race for a new flow, with its DNS answers fed at `now`. */
static TidegateEyeballs *race_for(uint64_t now, const TidegateSocketAddress *aaaa, size_t aaaa_count,
                                  const TidegateSocketAddress *a, size_t a_count) {
    TidegateEyeballsConfig config = tidegate_eyeballs_config_default();
    TidegateEyeballs *race = NULL;
    size_t added = 0;
    CHECK_OK(tidegate_eyeballs_new(&config, now, &race));
    CHECK_OK(tidegate_eyeballs_on_resolved(race, now, TIDEGATE_ADDRESS_FAMILY_IPV6, aaaa,
                                           aaaa_count, &added));
    CHECK_OK(tidegate_eyeballs_on_resolved(race, now, TIDEGATE_ADDRESS_FAMILY_IPV4, a, a_count,
                                           &added));
    return race;
}

/* Poll the flow's race until NONE; returns how many steps were written to `steps`. */
static size_t drain(uint64_t now, TidegateFlowId flow, TidegateEyeballs *race,
                    TidegateConnectAction *steps) {
    size_t count = 0;
    for (;;) {
        TidegateConnectAction step;
        CHECK_OK(tidegate_flow_governor_poll_race(governor, budget, race, now, flow, &step));
        if (step.kind == TIDEGATE_CONNECT_ACTION_KIND_NONE) return count;
        CHECK(count < MAX_STEPS);
        steps[count++] = step;
    }
}

static TidegateBudgetLevels levels(void) {
    TidegateBudgetLevels l;
    CHECK_OK(tidegate_budget_levels(budget, &l));
    return l;
}

static TidegateFlowStats stats(void) {
    TidegateFlowStats s;
    CHECK_OK(tidegate_flow_governor_stats(governor, &s));
    return s;
}

static TidegateFlowState state_of(TidegateFlowId flow) {
    TidegateFlowState state;
    CHECK_OK(tidegate_flow_governor_state(governor, flow, &state));
    return state;
}

static void free_race(TidegateEyeballs *race) {
    bool finished = false;
    CHECK_OK(tidegate_eyeballs_is_finished(race, &finished));
    CHECK(finished);
    tidegate_eyeballs_free(race);
}

int main(void) {
    TidegateFlowPolicy policy = tidegate_flow_policy_default();
    TidegateBudgetConfig budget_config = tidegate_budget_config_default();
    budget_config.max_attempts_in_flight = 2;
    budget_config.max_open_connections = 3;
    budget_config.fd_limit = 10240;
    budget_config.backoff_floor = 1;
    CHECK_OK(tidegate_flow_governor_new(&policy, 0, &governor));
    CHECK_OK(tidegate_budget_new(&budget_config, &budget));

    TidegateConnectAction steps[MAX_STEPS];
    TidegateBudgetRefusal refusal = TIDEGATE_BUDGET_REFUSAL_CONNECTIONS;
    TidegateFlowOutcome outcome;

    /* 1. IPv6 black hole, IPv4 wins. */
    TidegateSocketAddress a6 = v6(1), a4 = v4(1);
    TidegateAdmission first = admit(0, "com.example.browser", &refusal);
    CHECK(first.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    CHECK(refusal == TIDEGATE_BUDGET_REFUSAL_NONE);
    TidegateEyeballs *race = race_for(0, &a6, 1, &a4, 1);
    CHECK(drain(0, first.flow, race, steps) == 1);
    CHECK(steps[0].kind == TIDEGATE_CONNECT_ACTION_KIND_START_ATTEMPT && steps[0].index == 0);
    CHECK(steps[0].address.family == TIDEGATE_ADDRESS_FAMILY_IPV6);
    CHECK(state_of(first.flow) == TIDEGATE_FLOW_STATE_CONNECTING);
    CHECK(drain(249 * MS, first.flow, race, steps) == 0);
    CHECK(drain(250 * MS, first.flow, race, steps) == 1);
    CHECK(steps[0].kind == TIDEGATE_CONNECT_ACTION_KIND_START_ATTEMPT && steps[0].index == 1);
    CHECK(steps[0].address.family == TIDEGATE_ADDRESS_FAMILY_IPV4);
    CHECK(levels().attempts_in_flight == 2);

    /* 2. Both attempts in flight: a new flow is refused at once. */
    TidegateAdmission refused = admit(260 * MS, "com.example.mail", &refusal);
    CHECK(refused.decision == TIDEGATE_ADMISSION_DECISION_REJECTED);
    CHECK(refused.reject_reason == TIDEGATE_REJECT_REASON_CONNECTION_BUDGET);
    CHECK(refusal == TIDEGATE_BUDGET_REFUSAL_ATTEMPTS_IN_FLIGHT);

    CHECK_OK(tidegate_eyeballs_on_attempt_connected(race, 270 * MS, 1));
    CHECK(drain(270 * MS, first.flow, race, steps) == 2);
    CHECK(steps[0].kind == TIDEGATE_CONNECT_ACTION_KIND_ESTABLISHED && steps[0].index == 1);
    CHECK(steps[1].kind == TIDEGATE_CONNECT_ACTION_KIND_CANCEL_ATTEMPT && steps[1].index == 0);
    free_race(race);
    CHECK(state_of(first.flow) == TIDEGATE_FLOW_STATE_ESTABLISHED);
    CHECK(levels().attempts_in_flight == 0 && levels().open_connections == 1);
    CHECK(stats().also_ran_attempts == 1 && stats().connections_held == 1);
    CHECK(stats().also_ran == 0);
    printf("race: IPv4 won at 270 ms, 1 also-ran attempt, 1 connection counted\n");
    printf("admission: refused at once, attempts in flight\n");

    /* 3. Every address refuses. */
    TidegateAdmission third = admit(300 * MS, "com.example.mail", &refusal);
    CHECK(third.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    TidegateSocketAddress b6 = v6(2), b4 = v4(2);
    race = race_for(300 * MS, &b6, 1, &b4, 1);
    CHECK(drain(300 * MS, third.flow, race, steps) == 1);
    CHECK_OK(tidegate_eyeballs_on_attempt_failed(race, 305 * MS, 0, ECONNREFUSED));
    CHECK(drain(310 * MS, third.flow, race, steps) == 1);
    CHECK(steps[0].kind == TIDEGATE_CONNECT_ACTION_KIND_START_ATTEMPT && steps[0].index == 1);
    CHECK_OK(tidegate_eyeballs_on_attempt_failed(race, 320 * MS, 1, ECONNREFUSED));
    CHECK(drain(320 * MS, third.flow, race, steps) == 1);
    CHECK(steps[0].kind == TIDEGATE_CONNECT_ACTION_KIND_FAILED);
    CHECK(steps[0].failure == TIDEGATE_RACE_FAILURE_ALL_ATTEMPTS_FAILED);
    CHECK(steps[0].error_class == TIDEGATE_ERROR_CLASS_REFUSED);
    free_race(race);
    CHECK(state_of(third.flow) == TIDEGATE_FLOW_STATE_CLOSED);
    CHECK(stats().connect_failures[TIDEGATE_ERROR_CLASS_REFUSED] == 1);
    printf("refused: one failure, class %u\n", (unsigned)steps[0].error_class);

    /* 4. EMFILE: the budget backs off and admission sees it at once. */
    TidegateAdmission fourth = admit(400 * MS, "com.example.news", &refusal);
    CHECK(fourth.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    race = race_for(400 * MS, NULL, 0, &a4, 1);
    CHECK(drain(400 * MS, fourth.flow, race, steps) == 1);
    CHECK_OK(tidegate_eyeballs_on_attempt_failed(race, 401 * MS, 0, EMFILE));
    CHECK(drain(401 * MS, fourth.flow, race, steps) == 1);
    CHECK(steps[0].kind == TIDEGATE_CONNECT_ACTION_KIND_FAILED);
    CHECK(steps[0].error_class == TIDEGATE_ERROR_CLASS_RESOURCE_EXHAUSTED);
    free_race(race);
    CHECK(levels().backing_off && levels().connection_limit == 1);
    TidegateAdmission fifth = admit(402 * MS, "com.example.news", &refusal);
    CHECK(fifth.decision == TIDEGATE_ADMISSION_DECISION_REJECTED);
    CHECK(fifth.reject_reason == TIDEGATE_REJECT_REASON_CONNECTION_BUDGET);
    CHECK(refusal == TIDEGATE_BUDGET_REFUSAL_CONNECTIONS);
    printf("back-off: EMFILE lowered the connection limit to 1, next flow refused at once\n");

    /* 5. Closes release the connection once; a close without the budget is owed. */
    CHECK_OK(tidegate_flow_governor_on_local_read(governor, 500 * MS, first.flow, 1500));
    CHECK_OK(tidegate_flow_governor_on_remote_sent(governor, 500 * MS, first.flow, 1500));
    CHECK_OK(tidegate_flow_governor_on_closed_with_budget(governor, budget, 510 * MS, first.flow,
                                                          &outcome));
    CHECK(outcome == TIDEGATE_FLOW_OUTCOME_CLOSED);
    CHECK(levels().open_connections == 0 && stats().connections_held == 0);
    CHECK(tidegate_flow_governor_on_closed_with_budget(governor, budget, 511 * MS, first.flow,
                                                       &outcome) == TIDEGATE_STATUS_STALE_FLOW);
    CHECK(levels().open_connections == 0);

    TidegateAdmission sixth = admit(520 * MS, "com.example.news", &refusal);
    CHECK(sixth.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    TidegateSocketAddress c4 = v4(3);
    race = race_for(520 * MS, NULL, 0, &c4, 1);
    CHECK(drain(520 * MS, sixth.flow, race, steps) == 1);
    CHECK_OK(tidegate_eyeballs_on_attempt_connected(race, 530 * MS, 0));
    CHECK(drain(530 * MS, sixth.flow, race, steps) == 1);
    CHECK(steps[0].kind == TIDEGATE_CONNECT_ACTION_KIND_ESTABLISHED);
    free_race(race);
    CHECK(levels().open_connections == 1);
    CHECK_OK(tidegate_flow_governor_on_closed(governor, 540 * MS, sixth.flow, &outcome));
    CHECK(outcome == TIDEGATE_FLOW_OUTCOME_ALSO_RAN);
    CHECK(levels().open_connections == 1); /* owed */
    CHECK_OK(tidegate_flow_governor_settle_budget(governor, budget, 541 * MS));
    CHECK_OK(tidegate_flow_governor_settle_budget(governor, budget, 542 * MS));
    CHECK(levels().open_connections == 0);
    CHECK(stats().budget_mismatches == 0);
    printf("close: connection released once, owed close paid by settle\n");

    /* An id the governor never issued is refused and touches nothing. */
    race = race_for(600 * MS, &a6, 1, &a4, 1);
    TidegateConnectAction step;
    CHECK(tidegate_flow_governor_poll_race(governor, budget, race, 600 * MS, 12345, &step) ==
          TIDEGATE_STATUS_UNKNOWN_FLOW);
    CHECK(levels().attempts_in_flight == 0);
    tidegate_eyeballs_free(race);

    tidegate_budget_free(budget);
    tidegate_flow_governor_free(governor);
    return 0;
}
