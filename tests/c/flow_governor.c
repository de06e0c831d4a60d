/*
 * Drives a TidegateFlowGovernor through the C header the way a transparent proxy would.
 *
 * 1. Flood: one app opens twice the global cap of long-lived flows while a second app opens a
 *    flow every fourth step; the host closes every evicted flow at once. Checked: every flow of
 *    the second app is admitted, and open flows never exceed the cap.
 * 2. Also-ran storm: 100,000 flows open and close before any byte moves. Checked: the established
 *    flows stay, nothing is evicted or refused, and no slot leaks.
 * 3. Backpressure: a flow whose local app stops reading pauses its remote reads at the per-flow
 *    watermark and gets exactly one resume notification when the app catches up.
 * 4. Stalled app: an app stops taking data on many flows, each under the per-flow watermark;
 *    its reads pause at the app watermark while another app reads on, and resume once when it
 *    catches up.
 * 5. Timeouts and ids: idle flows are reported closed by handle_timeout; stale and forged ids
 *    are refused with their own status and change nothing.
 *
 * Exits 0 on success; prints the failed check and exits 1 otherwise.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tidegate.h"

enum { NOTIFY_BATCH = 16, STORM_FLOWS = 100000 };

static uint64_t key_of(const char *text) {
    uint64_t key = 0;
    CHECK_OK(tidegate_flow_key((const uint8_t *)text, strlen(text), &key));
    return key;
}

/* Admit a flow; close the evicted one at once as the answer demands. Returns 0 if refused. */
static TidegateFlowId admit(TidegateFlowGovernor *governor, uint64_t now, uint64_t app,
                            uint64_t destination) {
    TidegateAdmission admission;
    CHECK_OK(tidegate_flow_governor_on_new_flow(governor, now, app, destination,
                                                TIDEGATE_FLOW_PROTOCOL_TCP, &admission));
    if (admission.decision == TIDEGATE_ADMISSION_DECISION_REJECTED) {
        CHECK(admission.flow == 0);
        CHECK(admission.reject_reason != TIDEGATE_REJECT_REASON_NONE);
        return 0;
    }
    CHECK(admission.flow != 0);
    if (admission.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED_AFTER_EVICTING) {
        TidegateFlowOutcome outcome;
        CHECK_OK(tidegate_flow_governor_on_closed(governor, now, admission.evicted, &outcome));
        CHECK(outcome == TIDEGATE_FLOW_OUTCOME_EVICTED);
    } else {
        CHECK(admission.evicted == 0);
    }
    return admission.flow;
}

/* Drain notifications, closing flows the governor asks to close. Returns resumes seen. */
static unsigned drain(TidegateFlowGovernor *governor, uint64_t now, TidegateFlowId *resumed) {
    TidegateFlowNotification batch[NOTIFY_BATCH];
    unsigned resumes = 0;
    for (;;) {
        size_t count = 0;
        CHECK_OK(tidegate_flow_governor_poll_notifications(governor, batch, NOTIFY_BATCH, &count));
        if (count == 0) return resumes;
        for (size_t i = 0; i < count; i++) {
            if (batch[i].kind == TIDEGATE_FLOW_NOTIFICATION_KIND_CLOSE) {
                TidegateFlowOutcome outcome;
                CHECK(batch[i].close_reason != TIDEGATE_CLOSE_REASON_NONE);
                CHECK_OK(tidegate_flow_governor_on_closed(governor, now, batch[i].flow, &outcome));
            } else {
                if (resumed) *resumed = batch[i].flow;
                resumes++;
            }
        }
    }
}

static void flood(void) {
    TidegateFlowPolicy policy = tidegate_flow_policy_default();
    policy.max_flows_per_app = policy.max_flows; /* only fairness protects the second app */
    policy.max_flows_per_destination = policy.max_flows;
    TidegateFlowGovernor *governor = NULL;
    CHECK_OK(tidegate_flow_governor_new(&policy, 0, &governor));
    uint64_t flooder = key_of("com.example.flooder");
    uint64_t polite = key_of("com.example.polite");
    TidegateFlowId mine[4] = {0, 0, 0, 0};
    unsigned admitted = 0, attempts = 2 * policy.max_flows;
    uint64_t now = 0;
    for (unsigned step = 0; step < attempts; step++) {
        now += 1000;
        TidegateFlowId flow = admit(governor, now, flooder, step % 200);
        if (flow != 0) {
            CHECK_OK(tidegate_flow_governor_on_connected(governor, now, flow));
            CHECK_OK(tidegate_flow_governor_on_local_read(governor, now, flow, 512));
        }
        if (step % 4 == 0) {
            TidegateFlowId own = admit(governor, now, polite, 100000 + step);
            CHECK(own != 0); /* the invariant: never locked out */
            admitted++;
            CHECK_OK(tidegate_flow_governor_on_connected(governor, now, own));
            unsigned slot = (step / 4) % 4;
            if (mine[slot] != 0) {
                TidegateFlowOutcome outcome;
                CHECK_OK(tidegate_flow_governor_on_closed(governor, now, mine[slot], &outcome));
                CHECK(outcome == TIDEGATE_FLOW_OUTCOME_ALSO_RAN);
            }
            mine[slot] = own;
        }
        drain(governor, now, NULL);
        TidegateFlowStats stats;
        CHECK_OK(tidegate_flow_governor_stats(governor, &stats));
        CHECK(stats.opening + stats.connecting + stats.established <= policy.max_flows);
    }
    TidegateFlowStats stats;
    CHECK_OK(tidegate_flow_governor_stats(governor, &stats));
    CHECK(stats.evicted > 0);
    CHECK(stats.rejected_table_full > 0);
    CHECK(stats.top_apps_len == 2);
    CHECK(stats.top_apps[0].app == flooder);
    printf("flood: %u of %u polite flows admitted, %llu evicted\n", admitted,
           attempts / 4, (unsigned long long)stats.evicted);
    tidegate_flow_governor_free(governor);
}

static void storm(void) {
    TidegateFlowPolicy policy = tidegate_flow_policy_default();
    TidegateFlowGovernor *governor = NULL;
    CHECK_OK(tidegate_flow_governor_new(&policy, 0, &governor));
    TidegateFlowId established[100];
    for (unsigned i = 0; i < 100; i++) {
        established[i] = admit(governor, 1, 10 + i % 5, i);
        CHECK(established[i] != 0);
        CHECK_OK(tidegate_flow_governor_on_connected(governor, 1, established[i]));
        CHECK_OK(tidegate_flow_governor_on_remote_read(governor, 1, established[i], 1000));
    }
    uint64_t now = 1;
    for (unsigned i = 0; i < STORM_FLOWS; i++) {
        now += 10;
        TidegateFlowId flow = admit(governor, now, 99, i % 13);
        CHECK(flow != 0);
        TidegateFlowOutcome outcome;
        CHECK_OK(tidegate_flow_governor_on_closed(governor, now, flow, &outcome));
        CHECK(outcome == TIDEGATE_FLOW_OUTCOME_ALSO_RAN);
    }
    TidegateFlowStats stats;
    CHECK_OK(tidegate_flow_governor_stats(governor, &stats));
    CHECK(stats.also_ran == STORM_FLOWS);
    CHECK(stats.evicted == 0);
    CHECK(stats.established == 100 && stats.opening == 0 && stats.closing == 0);
    CHECK(stats.bytes_pending_inbound == 100 * 1000);
    for (unsigned i = 0; i < 100; i++) {
        TidegateFlowState state;
        CHECK_OK(tidegate_flow_governor_state(governor, established[i], &state));
        CHECK(state == TIDEGATE_FLOW_STATE_ESTABLISHED);
    }
    /* No slot leaked: the table still takes exactly its cap without evicting, then refuses. */
    for (unsigned filled = 0; filled < policy.max_flows - 100; filled++) {
        TidegateFlowId flow = admit(governor, now, 1000 + filled % 50, 5000 + filled);
        CHECK(flow != 0);
        CHECK_OK(tidegate_flow_governor_on_connected(governor, now, flow));
    }
    CHECK_OK(tidegate_flow_governor_stats(governor, &stats));
    CHECK(stats.established == policy.max_flows);
    CHECK(stats.evicted == 0);
    CHECK(admit(governor, now, 10, 9999) == 0);
    printf("storm: %u also-ran flows, %u established kept\n", STORM_FLOWS, 100u);
    tidegate_flow_governor_free(governor);
}

static void backpressure(void) {
    TidegateFlowPolicy policy = tidegate_flow_policy_default();
    TidegateFlowGovernor *governor = NULL;
    CHECK_OK(tidegate_flow_governor_new(&policy, 0, &governor));
    TidegateFlowId slow = admit(governor, 1, 1, 1);
    TidegateFlowId fast = admit(governor, 1, 2, 2);
    CHECK_OK(tidegate_flow_governor_on_connected(governor, 1, slow));
    CHECK_OK(tidegate_flow_governor_on_connected(governor, 1, fast));
    bool can_read = true;
    unsigned chunks = 0;
    while (can_read) {
        CHECK(chunks < 1000);
        CHECK_OK(tidegate_flow_governor_on_remote_read(governor, 2, slow, 16384));
        CHECK_OK(tidegate_flow_governor_on_remote_read(governor, 2, fast, 16384));
        CHECK_OK(tidegate_flow_governor_on_local_written(governor, 2, fast, 16384));
        CHECK_OK(tidegate_flow_governor_can_read_remote(governor, slow, &can_read));
        chunks++;
    }
    CHECK((uint64_t)chunks * 16384 >= policy.flow_high_watermark_bytes);
    CHECK_OK(tidegate_flow_governor_can_read_remote(governor, fast, &can_read));
    CHECK(can_read); /* the slow app stalls only its own flow */
    CHECK(tidegate_flow_governor_on_local_written(governor, 3, slow, UINT64_MAX) ==
          TIDEGATE_STATUS_COMPLETION_EXCEEDS_PENDING);
    CHECK(drain(governor, 3, NULL) == 0);
    CHECK_OK(tidegate_flow_governor_on_local_written(governor, 3, slow, (uint64_t)chunks * 16384));
    TidegateFlowId resumed = 0;
    CHECK(drain(governor, 3, &resumed) == 1);
    CHECK(resumed == slow);
    CHECK(drain(governor, 3, NULL) == 0);
    printf("backpressure: paused after %u chunks, resumed once\n", chunks);
    tidegate_flow_governor_free(governor);
}

static void stalled_app(void) {
    enum { BROWSER_FLOWS = 16, CHUNK = 192 * 1024 };
    TidegateFlowPolicy policy = tidegate_flow_policy_default();
    CHECK(CHUNK < policy.flow_high_watermark_bytes); /* no flow reaches its own watermark */
    TidegateFlowGovernor *governor = NULL;
    CHECK_OK(tidegate_flow_governor_new(&policy, 0, &governor));
    uint64_t browser_app = key_of("com.example.browser");
    TidegateFlowId browser[BROWSER_FLOWS];
    for (unsigned i = 0; i < BROWSER_FLOWS; i++) {
        browser[i] = admit(governor, 1, browser_app, 100 + i);
        CHECK_OK(tidegate_flow_governor_on_connected(governor, 1, browser[i]));
    }
    TidegateFlowId mail = admit(governor, 1, key_of("com.example.mail"), 200);
    CHECK_OK(tidegate_flow_governor_on_connected(governor, 1, mail));

    /* The browser receives a chunk on one flow after another and never writes any of it. */
    bool can_read = true;
    unsigned reads = 0;
    while (can_read) {
        CHECK(reads < BROWSER_FLOWS);
        CHECK_OK(tidegate_flow_governor_on_remote_read(governor, 2, browser[reads], CHUNK));
        CHECK_OK(tidegate_flow_governor_can_read_remote(governor, browser[reads], &can_read));
        reads++;
    }
    CHECK((uint64_t)reads * CHUNK >= policy.app_high_watermark_bytes);
    CHECK_OK(tidegate_flow_governor_can_read_remote(governor, browser[reads], &can_read));
    CHECK(!can_read); /* the whole app is paused, not only the flow that read */
    CHECK_OK(tidegate_flow_governor_on_remote_read(governor, 2, mail, CHUNK));
    CHECK_OK(tidegate_flow_governor_can_read_remote(governor, mail, &can_read));
    CHECK(can_read); /* the other app reads on */
    TidegateFlowStats stats;
    CHECK_OK(tidegate_flow_governor_stats(governor, &stats));
    CHECK(stats.apps_reads_paused == 1 && stats.app_pauses == 1 && !stats.reads_paused_globally);
    TidegateAppState app;
    CHECK_OK(tidegate_flow_governor_app_state(governor, browser_app, &app));
    CHECK(app.reads_paused && app.open_flows == BROWSER_FLOWS);
    CHECK(app.bytes_pending == (uint64_t)reads * CHUNK);
    CHECK(drain(governor, 2, NULL) == 0);

    /* The browser catches up flow by flow; at the app's low watermark the paused read resumes. */
    unsigned written = 0;
    TidegateFlowId resumed = 0;
    while (drain(governor, 3, &resumed) == 0) {
        CHECK(written < reads);
        CHECK_OK(tidegate_flow_governor_on_local_written(governor, 3, browser[written], CHUNK));
        written++;
    }
    CHECK(resumed == browser[reads - 1]);
    CHECK((uint64_t)(reads - written) * CHUNK <= policy.app_low_watermark_bytes);
    CHECK(drain(governor, 3, NULL) == 0);
    CHECK_OK(tidegate_flow_governor_stats(governor, &stats));
    CHECK(stats.apps_reads_paused == 0);
    CHECK_OK(tidegate_flow_governor_app_state(governor, browser_app, &app));
    CHECK(!app.reads_paused && app.bytes_pending == (uint64_t)(reads - written) * CHUNK);
    printf("stalled app: paused after %u flows, the other app read on, resumed once after %u\n",
           reads, written);
    tidegate_flow_governor_free(governor);
}

static void timeouts_and_ids(void) {
    TidegateFlowPolicy policy = tidegate_flow_policy_default();
    TidegateFlowGovernor *governor = NULL;
    CHECK_OK(tidegate_flow_governor_new(&policy, 0, &governor));
    TidegateFlowId idle = admit(governor, 1, 1, 1);
    TidegateFlowId stuck = admit(governor, 1, 1, 2);
    CHECK_OK(tidegate_flow_governor_on_connected(governor, 1, idle));
    CHECK_OK(tidegate_flow_governor_on_connecting(governor, 1, stuck));
    uint64_t deadline = 0;
    CHECK_OK(tidegate_flow_governor_poll_timeout(governor, &deadline));
    CHECK(deadline == 1 + policy.connect_timeout_us);
    CHECK_OK(tidegate_flow_governor_handle_timeout(governor, deadline));
    TidegateFlowNotification batch[4];
    size_t count = 0;
    CHECK_OK(tidegate_flow_governor_poll_notifications(governor, batch, 4, &count));
    CHECK(count == 1);
    CHECK(batch[0].kind == TIDEGATE_FLOW_NOTIFICATION_KIND_CLOSE);
    CHECK(batch[0].close_reason == TIDEGATE_CLOSE_REASON_CONNECT_TIMEOUT);
    CHECK(batch[0].flow == stuck);
    TidegateFlowOutcome outcome;
    CHECK_OK(tidegate_flow_governor_on_closed(governor, deadline, stuck, &outcome));
    CHECK(outcome == TIDEGATE_FLOW_OUTCOME_CONNECT_TIMEOUT);
    CHECK_OK(tidegate_flow_governor_handle_timeout(governor, 1 + policy.idle_timeout_us));
    CHECK_OK(tidegate_flow_governor_poll_notifications(governor, batch, 4, &count));
    CHECK(count == 1 && batch[0].flow == idle);
    CHECK(batch[0].close_reason == TIDEGATE_CLOSE_REASON_IDLE_TIMEOUT);
    CHECK_OK(tidegate_flow_governor_on_closed(governor, 1 + policy.idle_timeout_us, idle, &outcome));
    CHECK(outcome == TIDEGATE_FLOW_OUTCOME_IDLE_TIMEOUT);
    CHECK_OK(tidegate_flow_governor_poll_timeout(governor, &deadline));
    CHECK(deadline == UINT64_MAX);

    /* Stale and forged ids are refused and change nothing. */
    outcome = TIDEGATE_FLOW_OUTCOME_CLOSED;
    CHECK(tidegate_flow_governor_on_closed(governor, 2, idle, &outcome) ==
          TIDEGATE_STATUS_STALE_FLOW);
    CHECK(outcome == TIDEGATE_FLOW_OUTCOME_CLOSED);
    CHECK(tidegate_flow_governor_on_local_read(governor, 2, (uint64_t)1 << 60, 1) ==
          TIDEGATE_STATUS_UNKNOWN_FLOW);
    CHECK(tidegate_flow_governor_on_connected(governor, 2, 0) == TIDEGATE_STATUS_UNKNOWN_FLOW);
    CHECK(tidegate_flow_governor_on_connected(governor, 2, idle) == TIDEGATE_STATUS_STALE_FLOW);
    CHECK(tidegate_flow_governor_on_connected(NULL, 2, idle) == TIDEGATE_STATUS_NULL_ARGUMENT);
    TidegateAdmission admission;
    CHECK(tidegate_flow_governor_on_new_flow(governor, 2, 1, 1, 7, &admission) ==
          TIDEGATE_STATUS_INVALID_ARGUMENT);
    TidegateFlowStats stats;
    CHECK_OK(tidegate_flow_governor_stats(governor, &stats));
    CHECK(stats.idle_timeouts == 1 && stats.connect_timeouts == 1);
    CHECK(stats.admitted == 2 && stats.apps == 0);

    /* Invalid policies name their problem. */
    TidegateFlowGovernor *none = NULL;
    TidegateFlowPolicy bad = tidegate_flow_policy_default();
    bad.slots = bad.max_flows;
    CHECK(tidegate_flow_governor_new(&bad, 0, &none) == TIDEGATE_STATUS_CONFIG_FLOW_TOO_FEW_SLOTS);
    CHECK(none == NULL);
    bad = tidegate_flow_policy_default();
    bad.flow_low_watermark_bytes = bad.flow_high_watermark_bytes;
    CHECK(tidegate_flow_governor_new(&bad, 0, &none) ==
          TIDEGATE_STATUS_CONFIG_WATERMARKS_OUT_OF_ORDER);
    size_t bytes = 0, align = 0;
    CHECK_OK(tidegate_flow_governor_footprint(&policy, &bytes, &align));
    CHECK(bytes > 0 && align > 0);
    printf("timeouts: 1 idle, 1 connect; footprint %zu bytes\n", bytes);
    tidegate_flow_governor_free(governor);
    tidegate_flow_governor_free(NULL);
}

int main(void) {
    flood();
    storm();
    backpressure();
    stalled_app();
    timeouts_and_ids();
    return 0;
}
