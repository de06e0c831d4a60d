/*
 * A BSD-socket proxy host written from the header alone, driving one TidegateProxy on a virtual
 * clock: it feeds DNS answers and connect outcomes from a scripted network, drains the one event
 * queue after every input, and arms one timer. The engine lives in memory the host allocates
 * itself (tidegate_proxy_footprint + tidegate_proxy_init). The budget allows 2 attempts in
 * flight and 3 connections.
 *
 * Checked:
 * 1. IPv6 black hole: IPv4 starts at 250 ms and wins at 270 ms; the IPv6 attempt is cancelled
 *    and counted as an also-ran attempt; the budget counts one connection.
 * 2. A flow arriving while both attempts are in flight is refused at once, naming the limit.
 * 3. Every address refuses: one CONNECT_FAILED of class REFUSED; the flow's id is stale.
 * 4. Relay: a read past the flow watermark pauses the local side; the completion that brings
 *    it back down resumes it with RESUME_READ_LOCAL.
 * 5. A flow the host's system connects takes no race; its connect reports are refused for a
 *    raced flow (RACE_RUNNING).
 * 6. Closing gives the connection back exactly once (a second close is STALE_FLOW).
 * 7. Bad input (NULL out-parameters, a forged id, unknown enums) gets a status and changes
 *    nothing (the stats are byte-for-byte the same).
 * 8. EMFILE: the race fails with RESOURCE_EXHAUSTED, the budget halves its limits, a flow that
 *    would pass the lowered connection limit is refused at once naming it, and quiet time
 *    brings the configured limits back.
 *
 * Exits 0 on success; prints the failed check and exits 1 otherwise.
 */
#include <errno.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addresses.h"
#include "check.h"
#include "tidegate.h"

#define MS 1000u
#define MAX_PENDING 16

static TidegateProxy *proxy;
static uint64_t now;

/* The scripted network: what each started attempt will report, and when. */
typedef struct {
    TidegateFlowId flow;
    uint32_t attempt;
    uint64_t at;
    int error; /* 0: connects */
} Pending;
static Pending pending[MAX_PENDING];
static size_t pending_count;

/* What the host saw. */
static unsigned started, cancelled, established, failed, closes, resumes;
static uint64_t last_start_us, last_established_us;
static TidegateProxyEvent last_failure;

/* How connects to one address end: after `delay` ms with `error` (0 connects); -1 never. */
static int64_t ipv6_delay_ms = -1, ipv4_delay_ms = 20;
static int ipv6_error, ipv4_error;

static uint64_t key_of(const char *text) {
    uint64_t key = 0;
    CHECK_OK(tidegate_flow_key((const uint8_t *)text, strlen(text), &key));
    return key;
}

static void apply(const TidegateProxyEvent *e) {
    TidegateFlowOutcome outcome;
    switch (e->kind) {
    case TIDEGATE_PROXY_EVENT_KIND_START_ATTEMPT: {
        started++;
        last_start_us = now;
        int ipv6 = e->address.family == TIDEGATE_ADDRESS_FAMILY_IPV6;
        int64_t delay = ipv6 ? ipv6_delay_ms : ipv4_delay_ms;
        if (delay >= 0) {
            CHECK(pending_count < MAX_PENDING);
            pending[pending_count++] = (Pending){e->flow, e->attempt, now + (uint64_t)delay * MS,
                                                 ipv6 ? ipv6_error : ipv4_error};
        }
        break;
    }
    case TIDEGATE_PROXY_EVENT_KIND_CANCEL_ATTEMPT:
        cancelled++;
        for (size_t i = 0; i < pending_count; i++) {
            if (pending[i].flow == e->flow && pending[i].attempt == e->attempt) {
                pending[i] = pending[--pending_count];
                break;
            }
        }
        break;
    case TIDEGATE_PROXY_EVENT_KIND_ESTABLISHED:
        established++;
        last_established_us = now;
        break;
    case TIDEGATE_PROXY_EVENT_KIND_CONNECT_FAILED:
        failed++;
        last_failure = *e;
        break;
    case TIDEGATE_PROXY_EVENT_KIND_CLOSE_FLOW:
        closes++;
        CHECK_OK(tidegate_proxy_on_closed(proxy, now, e->flow, &outcome));
        break;
    case TIDEGATE_PROXY_EVENT_KIND_RESUME_READ_LOCAL:
    case TIDEGATE_PROXY_EVENT_KIND_RESUME_READ_REMOTE:
        resumes++;
        break;
    }
}

/* Drain the event queue, a few events at a time, as a host loop does after every input. */
static void drain(void) {
    TidegateProxyEvent events[3];
    size_t count;
    do {
        CHECK_OK(tidegate_proxy_poll_events(proxy, events, 3, &count));
        for (size_t i = 0; i < count; i++) apply(&events[i]);
    } while (count > 0);
}

/* Run the clock to `until`: deliver the network's reports and fire the engine's timer. */
static void run_until(uint64_t until) {
    for (;;) {
        uint64_t next = until;
        uint64_t deadline;
        CHECK_OK(tidegate_proxy_poll_timeout(proxy, &deadline));
        if (deadline < next) next = deadline;
        for (size_t i = 0; i < pending_count; i++) {
            if (pending[i].at < next) next = pending[i].at;
        }
        if (next > now) now = next;
        for (size_t i = 0; i < pending_count;) {
            if (pending[i].at <= now) {
                Pending p = pending[i];
                pending[i] = pending[--pending_count];
                if (p.error == 0) {
                    CHECK_OK(tidegate_proxy_on_attempt_connected(proxy, now, p.flow, p.attempt));
                } else {
                    CHECK_OK(tidegate_proxy_on_attempt_failed(proxy, now, p.flow, p.attempt,
                                                              p.error));
                }
                drain();
            } else {
                i++;
            }
        }
        CHECK_OK(tidegate_proxy_handle_timeout(proxy, now));
        drain();
        if (now >= until) return;
    }
}

static TidegateAdmission admit(const char *app) {
    TidegateAdmission admission;
    CHECK_OK(tidegate_proxy_on_new_flow(proxy, now, key_of(app), key_of("example.com:443"),
                                        TIDEGATE_FLOW_PROTOCOL_TCP,
                                        TIDEGATE_FLOW_CLASS_STREAM, &admission));
    return admission;
}

static void resolve(TidegateFlowId flow, uint8_t host) {
    TidegateSocketAddress a6 = v6(host), a4 = v4(host);
    size_t added = 0;
    CHECK_OK(tidegate_proxy_on_resolved(proxy, now, flow, TIDEGATE_ADDRESS_FAMILY_IPV6, &a6, 1,
                                        &added));
    CHECK(added == 1);
    CHECK_OK(tidegate_proxy_on_resolved(proxy, now, flow, TIDEGATE_ADDRESS_FAMILY_IPV4, &a4, 1,
                                        &added));
    CHECK_OK(tidegate_proxy_on_resolution_done(proxy, now, flow));
    drain();
}

static TidegateProxyStats stats(void) {
    TidegateProxyStats s;
    CHECK_OK(tidegate_proxy_stats(proxy, &s));
    return s;
}

int main(void) {
    TidegateProxyConfig config = tidegate_proxy_config_default();
    config.budget.max_attempts_in_flight = 2;
    config.budget.max_open_connections = 3;
    config.budget.fd_limit = 10240;
    config.budget.backoff_floor = 1;
    config.race_slots = 8;
    size_t size = 0, align = 0;
    CHECK_OK(tidegate_proxy_footprint(&config, &size, &align));
    void *memory = aligned_alloc(align, (size + align - 1) / align * align);
    CHECK(memory != NULL);
    CHECK_OK(tidegate_proxy_init(&config, 0, memory, size, &proxy));
    printf("engine: %zu bytes in memory of the host's own\n", size);

    /* 1. IPv6 black hole, IPv4 wins. */
    TidegateAdmission first = admit("com.example.browser");
    CHECK(first.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    resolve(first.flow, 1);
    CHECK(started == 1);
    TidegateProxyFlow view;
    CHECK_OK(tidegate_proxy_flow(proxy, first.flow, &view));
    CHECK(view.state == TIDEGATE_FLOW_STATE_CONNECTING);
    CHECK(view.race_state == TIDEGATE_PROXY_RACE_STATE_CONNECTING && view.attempts_in_flight == 1);
    run_until(260 * MS);
    CHECK(started == 2 && last_start_us == 250 * MS);
    CHECK(stats().attempts_in_flight == 2);

    /* 2. Both attempts in flight: a new flow is refused at once, naming the limit. */
    TidegateAdmission refused = admit("com.example.mail");
    CHECK(refused.decision == TIDEGATE_ADMISSION_DECISION_REJECTED);
    CHECK(refused.reject_reason == TIDEGATE_REJECT_REASON_CONNECTION_BUDGET);
    CHECK(refused.budget_refusal == TIDEGATE_BUDGET_REFUSAL_ATTEMPTS_IN_FLIGHT);

    run_until(300 * MS);
    CHECK(established == 1 && last_established_us == 270 * MS && cancelled == 1);
    CHECK_OK(tidegate_proxy_flow(proxy, first.flow, &view));
    CHECK(view.state == TIDEGATE_FLOW_STATE_ESTABLISHED);
    CHECK(view.race_state == TIDEGATE_PROXY_RACE_STATE_NONE);
    TidegateProxyStats s = stats();
    CHECK(s.attempts_in_flight == 0 && s.open_connections == 1);
    CHECK(s.flows.also_ran_attempts == 1 && s.flows.connections_held == 1);
    CHECK(s.races.won == 1 && s.races.running == 0);
    printf("black hole: IPv4 started at 250 ms and won at 270 ms, IPv6 cancelled\n");
    printf("admission: refused at once, attempts in flight\n");

    /* 3. Every address refuses. */
    ipv6_delay_ms = 5;
    ipv6_error = ECONNREFUSED;
    ipv4_delay_ms = 5;
    ipv4_error = ECONNREFUSED;
    TidegateAdmission third = admit("com.example.mail");
    CHECK(third.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    resolve(third.flow, 2);
    run_until(400 * MS);
    CHECK(failed == 1 && last_failure.flow == third.flow);
    CHECK(last_failure.failure == TIDEGATE_RACE_FAILURE_ALL_ATTEMPTS_FAILED);
    CHECK(last_failure.error_class == TIDEGATE_ERROR_CLASS_REFUSED);
    TidegateFlowOutcome outcome;
    CHECK_STATUS(tidegate_proxy_on_closed(proxy, now, third.flow, &outcome),
                 TIDEGATE_STATUS_STALE_FLOW);
    CHECK(stats().flows.connect_failures[TIDEGATE_ERROR_CLASS_REFUSED] == 1);
    printf("refused: one failure, class REFUSED, flow already closed\n");

    /* 4. Relay on the established flow: 300 KiB read pauses the local side. */
    bool can_read = true;
    CHECK_OK(tidegate_proxy_on_bytes(proxy, now, first.flow, TIDEGATE_RELAY_STEP_LOCAL_READ,
                                     300 * 1024, &can_read));
    CHECK(!can_read);
    CHECK_OK(tidegate_proxy_can_read(proxy, first.flow, TIDEGATE_PROXY_SIDE_REMOTE, &can_read));
    CHECK(can_read);
    CHECK_OK(tidegate_proxy_on_bytes(proxy, now, first.flow, TIDEGATE_RELAY_STEP_REMOTE_SENT,
                                     250 * 1024, &can_read));
    CHECK(can_read);
    drain();
    CHECK(resumes == 1);
    printf("relay: paused at the flow watermark, resumed by one event\n");

    /* 5. A flow the host's system connects. */
    TidegateAdmission system = admit("com.example.news");
    CHECK(system.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    CHECK_OK(tidegate_proxy_on_connecting(proxy, now, system.flow));
    CHECK_OK(tidegate_proxy_on_connected(proxy, now, system.flow));
    CHECK(stats().open_connections == 1); /* the system's connection is not the budget's */
    TidegateAdmission raced = admit("com.example.news");
    resolve(raced.flow, 3);
    CHECK_STATUS(tidegate_proxy_on_connected(proxy, now, raced.flow), TIDEGATE_STATUS_RACE_RUNNING);
    CHECK_OK(tidegate_proxy_on_closed(proxy, now, raced.flow, &outcome));
    CHECK(outcome == TIDEGATE_FLOW_OUTCOME_ALSO_RAN);
    unsigned cancelled_before = cancelled;
    drain();
    CHECK(cancelled == cancelled_before + 1 && stats().races.aborted == 1);
    CHECK(stats().attempts_in_flight == 0 && stats().races.running == 0);
    printf("system connect: no race, no budget; a raced flow refuses it; a close aborts the race\n");

    /* 6. Closing gives the connection back once. */
    CHECK_OK(tidegate_proxy_on_closed(proxy, now, first.flow, &outcome));
    CHECK(outcome == TIDEGATE_FLOW_OUTCOME_CLOSED);
    CHECK(stats().open_connections == 0 && stats().flows.connections_held == 0);
    CHECK_STATUS(tidegate_proxy_on_closed(proxy, now, first.flow, &outcome),
                 TIDEGATE_STATUS_STALE_FLOW);
    CHECK(stats().open_connections == 0);
    printf("close: the connection went back to the budget once\n");

    /* 7. Bad input changes nothing. */
    TidegateProxyStats before = stats();
    TidegateAdmission admission;
    size_t added;
    TidegateSocketAddress a4 = v4(9);
    CHECK_STATUS(
        tidegate_proxy_on_new_flow(proxy, now, 1, 2, 7, TIDEGATE_FLOW_CLASS_STREAM, &admission),
        TIDEGATE_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(
        tidegate_proxy_on_new_flow(proxy, now, 1, 2, TIDEGATE_FLOW_PROTOCOL_TCP, 3, &admission),
        TIDEGATE_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(tidegate_proxy_on_new_flow(proxy, now, 1, 2, 0, TIDEGATE_FLOW_CLASS_STREAM, NULL),
                 TIDEGATE_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(tidegate_proxy_on_bytes(proxy, now, system.flow, 9, 1, &can_read),
                 TIDEGATE_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(tidegate_proxy_on_bytes(proxy, now, system.flow, TIDEGATE_RELAY_STEP_REMOTE_SENT,
                                         1, &can_read),
                 TIDEGATE_STATUS_COMPLETION_EXCEEDS_PENDING);
    CHECK_STATUS(tidegate_proxy_on_resolved(proxy, now, UINT64_MAX, TIDEGATE_ADDRESS_FAMILY_IPV4,
                                            &a4, 1, &added),
                 TIDEGATE_STATUS_UNKNOWN_FLOW);
    CHECK_STATUS(tidegate_proxy_on_resolved(proxy, now, system.flow, TIDEGATE_ADDRESS_FAMILY_IPV6,
                                            &a4, 1, &added),
                 TIDEGATE_STATUS_ADDRESS_FAMILY_MISMATCH);
    CHECK_STATUS(tidegate_proxy_on_resolved(proxy, now, system.flow, TIDEGATE_ADDRESS_FAMILY_IPV4,
                                            NULL, 1, &added),
                 TIDEGATE_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(tidegate_proxy_on_attempt_failed(proxy, now, system.flow, 0, EMFILE),
                 TIDEGATE_STATUS_NO_RACE);
    CHECK_STATUS(tidegate_proxy_can_read(proxy, system.flow, 2, &can_read),
                 TIDEGATE_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(tidegate_proxy_poll_events(proxy, NULL, 4, &added), TIDEGATE_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(tidegate_proxy_on_connection_closed(proxy, now),
                 TIDEGATE_STATUS_BUDGET_NO_OPEN_CONNECTION);
    TidegateProxyStats after = stats();
    CHECK(memcmp(&before, &after, sizeof before) == 0);
    printf("bad input: 11 calls refused, nothing changed\n");

    /* 8. EMFILE backs the budget off; quiet time restores it. */
    ipv6_error = EMFILE;
    ipv4_error = EMFILE;
    unsigned failed_before = failed;
    TidegateAdmission starved = admit("com.example.mail");
    CHECK(starved.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    resolve(starved.flow, 4);
    run_until(now + 100 * MS);
    CHECK(failed == failed_before + 1 && last_failure.flow == starved.flow);
    CHECK(last_failure.error_class == TIDEGATE_ERROR_CLASS_RESOURCE_EXHAUSTED);
    s = stats();
    CHECK(s.budget.backoffs >= 1);
    CHECK(s.attempt_limit == 1 && s.connection_limit == 1);
    CHECK_OK(tidegate_proxy_try_open_connection(proxy, now)); /* the host's own: 1 of 1 */
    TidegateAdmission over = admit("com.example.mail");
    CHECK(over.decision == TIDEGATE_ADMISSION_DECISION_REJECTED);
    CHECK(over.reject_reason == TIDEGATE_REJECT_REASON_CONNECTION_BUDGET);
    CHECK(over.budget_refusal == TIDEGATE_BUDGET_REFUSAL_CONNECTIONS);
    CHECK_OK(tidegate_proxy_on_connection_closed(proxy, now));
    run_until(now + 10000 * MS);
    s = stats();
    CHECK(s.attempt_limit == 2 && s.connection_limit == 3);
    printf("back-off: EMFILE halved the limits, the next flow was refused at once, quiet time "
           "restored them\n");

    CHECK_OK(tidegate_proxy_on_closed(proxy, now, system.flow, &outcome));
    tidegate_proxy_free(proxy);
    free(memory);
    return 0;
}
