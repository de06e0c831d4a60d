/*
 * Drives the flow table of a TidegateProxy through the C header the way a transparent proxy
 * would: the host's system (Network framework) connects each flow, so no race runs, and every
 * close the engine asks for comes out of tidegate_proxy_poll_events.
 *
 * 1. Flood: one app opens twice the global cap of long-lived flows while a second app opens a
 *    flow every fourth step; the host closes every evicted flow when its CLOSE_FLOW event comes
 *    out. Checked: every flow of
 *    the second app is admitted, and open flows never exceed the cap.
 * 2. Also-ran storm: 100,000 flows open and close before any byte moves. Checked: the established
 *    flows stay, nothing is evicted or refused, and no slot leaks.
 * 3. Backpressure: a flow whose local app stops reading pauses its remote reads at the per-flow
 *    watermark and gets exactly one resume notification when the app catches up.
 * 4. Stalled app: an app stops taking data on many flows, each under the per-flow watermark;
 *    its reads pause at the app watermark while another app reads on, and resume once when it
 *    catches up.
 * 5. Timeouts and ids: idle flows are reported closed by handle_timeout; stale and forged ids
 *    are refused with their own status and change nothing; invalid configurations name their
 *    problem.
 * 6. Classes and pacing, at the default policy: one app's DNS burst stops at its share of the
 *    DNS budget while another app's queries get in; a UDP storm stops at the UDP cap while TCP
 *    gets in, and its sessions idle out after the UDP idle timeout; one app's reconnect storm
 *    is paced at its burst, told when to ask again, and admitted then; a flow whose peer stops
 *    draining is closed at the maximum paused time.
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

/* Make a proxy with the default configuration and `flows` as its flow policy. */
static TidegateProxy *make(const TidegateFlowPolicy *flows) {
    TidegateProxyConfig config = tidegate_proxy_config_default();
    config.flows = *flows;
    TidegateProxy *proxy = NULL;
    CHECK_OK(tidegate_proxy_new(&config, 0, &proxy));
    return proxy;
}

/* Admit a flow and tell the engine the host's system connects it. Returns 0 if refused. An
 * evicted flow is closed when its CLOSE_FLOW event is drained. */
static TidegateFlowId admit(TidegateProxy *proxy, uint64_t now, uint64_t app,
                            uint64_t destination) {
    TidegateAdmission admission;
    CHECK_OK(tidegate_proxy_on_new_flow(proxy, now, app, destination,
                                        TIDEGATE_FLOW_PROTOCOL_TCP,
                                        TIDEGATE_FLOW_CLASS_STREAM, &admission));
    if (admission.decision == TIDEGATE_ADMISSION_DECISION_REJECTED) {
        CHECK(admission.flow == 0);
        CHECK(admission.reject_reason != TIDEGATE_REJECT_REASON_NONE);
        return 0;
    }
    CHECK(admission.flow != 0);
    CHECK((admission.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED_AFTER_EVICTING) ==
          (admission.evicted != 0));
    CHECK_OK(tidegate_proxy_on_connecting(proxy, now, admission.flow));
    return admission.flow;
}

/* Report bytes, asserting the call succeeds; returns whether that side may still be read. */
static bool bytes(TidegateProxy *proxy, uint64_t now, TidegateFlowId flow, TidegateRelayStep step,
                  uint64_t count) {
    bool can_read = false;
    CHECK_OK(tidegate_proxy_on_bytes(proxy, now, flow, step, count, &can_read));
    return can_read;
}

/* Drain events, closing flows the engine asks to close. Returns resumes seen; counts evictions
 * in `*evictions` when given. */
static unsigned drain_counting(TidegateProxy *proxy, uint64_t now, TidegateFlowId *resumed,
                               unsigned *evictions) {
    TidegateProxyEvent batch[NOTIFY_BATCH];
    unsigned resumes = 0;
    for (;;) {
        size_t count = 0;
        CHECK_OK(tidegate_proxy_poll_events(proxy, batch, NOTIFY_BATCH, &count));
        if (count == 0) return resumes;
        for (size_t i = 0; i < count; i++) {
            switch (batch[i].kind) {
            case TIDEGATE_PROXY_EVENT_KIND_CLOSE_FLOW: {
                TidegateFlowOutcome outcome;
                CHECK(batch[i].close_reason != TIDEGATE_CLOSE_REASON_NONE);
                CHECK_OK(tidegate_proxy_on_closed(proxy, now, batch[i].flow, &outcome));
                if (batch[i].close_reason == TIDEGATE_CLOSE_REASON_EVICTED) {
                    CHECK(outcome == TIDEGATE_FLOW_OUTCOME_EVICTED);
                    if (evictions) (*evictions)++;
                }
                break;
            }
            case TIDEGATE_PROXY_EVENT_KIND_RESUME_READ_LOCAL:
            case TIDEGATE_PROXY_EVENT_KIND_RESUME_READ_REMOTE:
                if (resumed) *resumed = batch[i].flow;
                resumes++;
                break;
            default:
                CHECK(!"no race runs: no other event");
            }
        }
    }
}

static unsigned drain(TidegateProxy *proxy, uint64_t now, TidegateFlowId *resumed) {
    return drain_counting(proxy, now, resumed, NULL);
}

static void flood(void) {
    TidegateFlowPolicy policy = tidegate_proxy_config_default().flows;
    policy.max_flows_per_app = policy.max_flows; /* only fairness protects the second app */
    policy.max_flows_per_destination = policy.max_flows;
    /* Pacing would slow the flooder before it fills the table: this section shows eviction. */
    policy.app_admission_burst = UINT32_MAX;
    policy.app_admission_rate_per_second = UINT32_MAX;
    TidegateProxy *proxy = make(&policy);
    uint64_t flooder = key_of("com.example.flooder");
    uint64_t polite = key_of("com.example.polite");
    TidegateFlowId mine[4] = {0, 0, 0, 0};
    unsigned admitted = 0, attempts = 2 * policy.max_flows;
    uint64_t now = 0;
    for (unsigned step = 0; step < attempts; step++) {
        now += 1000;
        TidegateFlowId flow = admit(proxy, now, flooder, step % 200);
        if (flow != 0) {
            CHECK_OK(tidegate_proxy_on_connected(proxy, now, flow));
            bytes(proxy, now, flow, TIDEGATE_RELAY_STEP_LOCAL_READ, 512);
        }
        if (step % 4 == 0) {
            TidegateFlowId own = admit(proxy, now, polite, 100000 + step);
            CHECK(own != 0); /* the invariant: never locked out */
            admitted++;
            CHECK_OK(tidegate_proxy_on_connected(proxy, now, own));
            unsigned slot = (step / 4) % 4;
            if (mine[slot] != 0) {
                TidegateFlowOutcome outcome;
                CHECK_OK(tidegate_proxy_on_closed(proxy, now, mine[slot], &outcome));
                CHECK(outcome == TIDEGATE_FLOW_OUTCOME_ALSO_RAN);
            }
            mine[slot] = own;
        }
        drain(proxy, now, NULL);
        TidegateProxyStats proxy_stats;
    TidegateFlowStats stats;
        CHECK_OK(tidegate_proxy_stats(proxy, &proxy_stats));
    stats = proxy_stats.flows;
        CHECK(stats.opening + stats.connecting + stats.established <= policy.max_flows);
    }
    TidegateProxyStats proxy_stats;
    TidegateFlowStats stats;
    CHECK_OK(tidegate_proxy_stats(proxy, &proxy_stats));
    stats = proxy_stats.flows;
    CHECK(stats.evicted > 0);
    CHECK(stats.rejected_table_full > 0);
    CHECK(stats.top_apps_len == 2);
    CHECK(stats.top_apps[0].app == flooder);
    printf("flood: %u of %u polite flows admitted, %llu evicted\n", admitted,
           attempts / 4, (unsigned long long)stats.evicted);
    tidegate_proxy_free(proxy);
}

static void storm(void) {
    TidegateFlowPolicy policy = tidegate_proxy_config_default().flows;
    TidegateProxy *proxy = make(&policy);
    TidegateFlowId established[100];
    for (unsigned i = 0; i < 100; i++) {
        established[i] = admit(proxy, 1, 10 + i % 5, i);
        CHECK(established[i] != 0);
        CHECK_OK(tidegate_proxy_on_connected(proxy, 1, established[i]));
        bytes(proxy, 1, established[i], TIDEGATE_RELAY_STEP_REMOTE_READ, 1000);
    }
    uint64_t now = 1;
    for (unsigned i = 0; i < STORM_FLOWS; i++) {
        now += 10;
        TidegateFlowId flow = admit(proxy, now, 99, i % 13);
        CHECK(flow != 0);
        TidegateFlowOutcome outcome;
        CHECK_OK(tidegate_proxy_on_closed(proxy, now, flow, &outcome));
        CHECK(outcome == TIDEGATE_FLOW_OUTCOME_ALSO_RAN);
    }
    TidegateProxyStats proxy_stats;
    TidegateFlowStats stats;
    CHECK_OK(tidegate_proxy_stats(proxy, &proxy_stats));
    stats = proxy_stats.flows;
    CHECK(stats.also_ran == STORM_FLOWS);
    CHECK(stats.evicted == 0);
    CHECK(stats.established == 100 && stats.opening == 0 && stats.closing == 0);
    CHECK(stats.bytes_pending_inbound == 100 * 1000);
    for (unsigned i = 0; i < 100; i++) {
        TidegateProxyFlow flow;
        CHECK_OK(tidegate_proxy_flow(proxy, established[i], &flow));
        CHECK(flow.state == TIDEGATE_FLOW_STATE_ESTABLISHED);
        CHECK(flow.race_state == TIDEGATE_PROXY_RACE_STATE_NONE);
    }
    /* No slot leaked: the table still takes exactly its cap without evicting, then refuses. */
    for (unsigned filled = 0; filled < policy.max_flows - 100; filled++) {
        TidegateFlowId flow = admit(proxy, now, 1000 + filled % 50, 5000 + filled);
        CHECK(flow != 0);
        CHECK_OK(tidegate_proxy_on_connected(proxy, now, flow));
    }
    CHECK_OK(tidegate_proxy_stats(proxy, &proxy_stats));
    stats = proxy_stats.flows;
    CHECK(stats.established == policy.max_flows);
    CHECK(stats.evicted == 0);
    CHECK(admit(proxy, now, 10, 9999) == 0);
    printf("storm: %u also-ran flows, %u established kept\n", STORM_FLOWS, 100u);
    tidegate_proxy_free(proxy);
}

static void backpressure(void) {
    TidegateFlowPolicy policy = tidegate_proxy_config_default().flows;
    TidegateProxy *proxy = make(&policy);
    TidegateFlowId slow = admit(proxy, 1, 1, 1);
    TidegateFlowId fast = admit(proxy, 1, 2, 2);
    CHECK_OK(tidegate_proxy_on_connected(proxy, 1, slow));
    CHECK_OK(tidegate_proxy_on_connected(proxy, 1, fast));
    bool can_read = true;
    unsigned chunks = 0;
    while (can_read) {
        CHECK(chunks < 1000);
        bytes(proxy, 2, slow, TIDEGATE_RELAY_STEP_REMOTE_READ, 16384);
        bytes(proxy, 2, fast, TIDEGATE_RELAY_STEP_REMOTE_READ, 16384);
        bytes(proxy, 2, fast, TIDEGATE_RELAY_STEP_LOCAL_WRITTEN, 16384);
        CHECK_OK(tidegate_proxy_can_read(proxy, slow, TIDEGATE_PROXY_SIDE_REMOTE, &can_read));
        chunks++;
    }
    CHECK((uint64_t)chunks * 16384 >= policy.flow_high_watermark_bytes);
    CHECK_OK(tidegate_proxy_can_read(proxy, fast, TIDEGATE_PROXY_SIDE_REMOTE, &can_read));
    CHECK(can_read); /* the slow app stalls only its own flow */
    CHECK(tidegate_proxy_on_bytes(proxy, 3, slow, TIDEGATE_RELAY_STEP_LOCAL_WRITTEN, UINT64_MAX,
                                  &can_read) ==
          TIDEGATE_STATUS_COMPLETION_EXCEEDS_PENDING);
    CHECK(drain(proxy, 3, NULL) == 0);
    bytes(proxy, 3, slow, TIDEGATE_RELAY_STEP_LOCAL_WRITTEN, (uint64_t)chunks * 16384);
    TidegateFlowId resumed = 0;
    CHECK(drain(proxy, 3, &resumed) == 1);
    CHECK(resumed == slow);
    CHECK(drain(proxy, 3, NULL) == 0);
    printf("backpressure: paused after %u chunks, resumed once\n", chunks);
    tidegate_proxy_free(proxy);
}

static void stalled_app(void) {
    enum { BROWSER_FLOWS = 16, CHUNK = 192 * 1024 };
    TidegateFlowPolicy policy = tidegate_proxy_config_default().flows;
    CHECK(CHUNK < policy.flow_high_watermark_bytes); /* no flow reaches its own watermark */
    TidegateProxy *proxy = make(&policy);
    uint64_t browser_app = key_of("com.example.browser");
    TidegateFlowId browser[BROWSER_FLOWS];
    for (unsigned i = 0; i < BROWSER_FLOWS; i++) {
        browser[i] = admit(proxy, 1, browser_app, 100 + i);
        CHECK_OK(tidegate_proxy_on_connected(proxy, 1, browser[i]));
    }
    TidegateFlowId mail = admit(proxy, 1, key_of("com.example.mail"), 200);
    CHECK_OK(tidegate_proxy_on_connected(proxy, 1, mail));

    /* The browser receives a chunk on one flow after another and never writes any of it. */
    bool can_read = true;
    unsigned reads = 0;
    while (can_read) {
        CHECK(reads < BROWSER_FLOWS);
        bytes(proxy, 2, browser[reads], TIDEGATE_RELAY_STEP_REMOTE_READ, CHUNK);
        CHECK_OK(tidegate_proxy_can_read(proxy, browser[reads], TIDEGATE_PROXY_SIDE_REMOTE, &can_read));
        reads++;
    }
    CHECK((uint64_t)reads * CHUNK >= policy.app_high_watermark_bytes);
    CHECK_OK(tidegate_proxy_can_read(proxy, browser[reads], TIDEGATE_PROXY_SIDE_REMOTE, &can_read));
    CHECK(!can_read); /* the whole app is paused, not only the flow that read */
    bytes(proxy, 2, mail, TIDEGATE_RELAY_STEP_REMOTE_READ, CHUNK);
    CHECK_OK(tidegate_proxy_can_read(proxy, mail, TIDEGATE_PROXY_SIDE_REMOTE, &can_read));
    CHECK(can_read); /* the other app reads on */
    TidegateProxyStats proxy_stats;
    TidegateFlowStats stats;
    CHECK_OK(tidegate_proxy_stats(proxy, &proxy_stats));
    stats = proxy_stats.flows;
    CHECK(stats.apps_reads_paused == 1 && stats.app_pauses == 1 && !stats.reads_paused_globally);
    TidegateAppState app;
    CHECK_OK(tidegate_proxy_app_state(proxy, browser_app, &app));
    CHECK(app.reads_paused && app.open_flows == BROWSER_FLOWS);
    CHECK(app.bytes_pending == (uint64_t)reads * CHUNK);
    CHECK(drain(proxy, 2, NULL) == 0);

    /* The browser catches up flow by flow; at the app's low watermark the paused read resumes. */
    unsigned written = 0;
    TidegateFlowId resumed = 0;
    while (drain(proxy, 3, &resumed) == 0) {
        CHECK(written < reads);
        bytes(proxy, 3, browser[written], TIDEGATE_RELAY_STEP_LOCAL_WRITTEN, CHUNK);
        written++;
    }
    CHECK(resumed == browser[reads - 1]);
    CHECK((uint64_t)(reads - written) * CHUNK <= policy.app_low_watermark_bytes);
    CHECK(drain(proxy, 3, NULL) == 0);
    CHECK_OK(tidegate_proxy_stats(proxy, &proxy_stats));
    stats = proxy_stats.flows;
    CHECK(stats.apps_reads_paused == 0);
    CHECK_OK(tidegate_proxy_app_state(proxy, browser_app, &app));
    CHECK(!app.reads_paused && app.bytes_pending == (uint64_t)(reads - written) * CHUNK);
    printf("stalled app: paused after %u flows, the other app read on, resumed once after %u\n",
           reads, written);
    tidegate_proxy_free(proxy);
}

static void timeouts_and_ids(void) {
    TidegateFlowPolicy policy = tidegate_proxy_config_default().flows;
    TidegateProxy *proxy = make(&policy);
    TidegateFlowId idle = admit(proxy, 1, 1, 1);
    TidegateFlowId stuck = admit(proxy, 1, 1, 2);
    CHECK_OK(tidegate_proxy_on_connected(proxy, 1, idle));
    uint64_t deadline = 0;
    CHECK_OK(tidegate_proxy_poll_timeout(proxy, &deadline));
    CHECK(deadline == 1 + policy.connect_timeout_us);
    CHECK_OK(tidegate_proxy_handle_timeout(proxy, deadline));
    TidegateProxyEvent batch[4];
    size_t count = 0;
    CHECK_OK(tidegate_proxy_poll_events(proxy, batch, 4, &count));
    CHECK(count == 1);
    CHECK(batch[0].kind == TIDEGATE_PROXY_EVENT_KIND_CLOSE_FLOW);
    CHECK(batch[0].close_reason == TIDEGATE_CLOSE_REASON_CONNECT_TIMEOUT);
    CHECK(batch[0].flow == stuck);
    TidegateFlowOutcome outcome;
    CHECK_OK(tidegate_proxy_on_closed(proxy, deadline, stuck, &outcome));
    CHECK(outcome == TIDEGATE_FLOW_OUTCOME_CONNECT_TIMEOUT);
    CHECK_OK(tidegate_proxy_handle_timeout(proxy, 1 + policy.idle_timeout_us));
    CHECK_OK(tidegate_proxy_poll_events(proxy, batch, 4, &count));
    CHECK(count == 1 && batch[0].flow == idle);
    CHECK(batch[0].close_reason == TIDEGATE_CLOSE_REASON_IDLE_TIMEOUT);
    CHECK_OK(tidegate_proxy_on_closed(proxy, 1 + policy.idle_timeout_us, idle, &outcome));
    CHECK(outcome == TIDEGATE_FLOW_OUTCOME_IDLE_TIMEOUT);
    CHECK_OK(tidegate_proxy_poll_timeout(proxy, &deadline));
    CHECK(deadline == UINT64_MAX);

    /* Stale and forged ids are refused and change nothing. */
    outcome = TIDEGATE_FLOW_OUTCOME_CLOSED;
    CHECK(tidegate_proxy_on_closed(proxy, 2, idle, &outcome) ==
          TIDEGATE_STATUS_STALE_FLOW);
    CHECK(outcome == TIDEGATE_FLOW_OUTCOME_CLOSED);
    bool can_read = true;
    CHECK(tidegate_proxy_on_bytes(proxy, 2, (uint64_t)1 << 60, TIDEGATE_RELAY_STEP_LOCAL_READ, 1,
                                  &can_read) ==
          TIDEGATE_STATUS_UNKNOWN_FLOW);
    CHECK(can_read); /* not written on failure */
    CHECK(tidegate_proxy_on_connected(proxy, 2, 0) == TIDEGATE_STATUS_UNKNOWN_FLOW);
    CHECK(tidegate_proxy_on_connected(proxy, 2, idle) == TIDEGATE_STATUS_STALE_FLOW);
    CHECK(tidegate_proxy_on_connected(NULL, 2, idle) == TIDEGATE_STATUS_NULL_ARGUMENT);
    TidegateAdmission admission;
    CHECK(tidegate_proxy_on_new_flow(proxy, 2, 1, 1, 7, TIDEGATE_FLOW_CLASS_STREAM,
                                     &admission) == TIDEGATE_STATUS_INVALID_ARGUMENT);
    TidegateProxyStats proxy_stats;
    TidegateFlowStats stats;
    CHECK_OK(tidegate_proxy_stats(proxy, &proxy_stats));
    stats = proxy_stats.flows;
    CHECK(stats.idle_timeouts == 1 && stats.connect_timeouts == 1);
    CHECK(stats.admitted == 2 && stats.apps == 0);

    /* Invalid policies name their problem. */
    TidegateProxy *none = NULL;
    TidegateProxyConfig bad = tidegate_proxy_config_default();
    bad.flows.slots = bad.flows.max_flows;
    CHECK(tidegate_proxy_new(&bad, 0, &none) == TIDEGATE_STATUS_CONFIG_FLOW_TOO_FEW_SLOTS);
    CHECK(none == NULL);
    bad = tidegate_proxy_config_default();
    bad.flows.flow_low_watermark_bytes = bad.flows.flow_high_watermark_bytes;
    CHECK(tidegate_proxy_new(&bad, 0, &none) == TIDEGATE_STATUS_CONFIG_WATERMARKS_OUT_OF_ORDER);
    size_t bytes = 0, align = 0;
    TidegateProxyConfig config = tidegate_proxy_config_default();
    CHECK_OK(tidegate_proxy_footprint(&config, &bytes, &align));
    CHECK(bytes > 0 && align > 0);
    printf("timeouts: 1 idle, 1 connect; footprint %zu bytes\n", bytes);
    tidegate_proxy_free(proxy);
    tidegate_proxy_free(NULL);
}

/* Ask to admit a flow of `app` with the given protocol and class; returns the answer. */
static TidegateAdmission ask(TidegateProxy *proxy, uint64_t now, uint64_t app,
                             uint64_t destination, TidegateFlowProtocol protocol,
                             TidegateFlowClass flow_class) {
    TidegateAdmission admission;
    CHECK_OK(tidegate_proxy_on_new_flow(proxy, now, app, destination, protocol, flow_class,
                                        &admission));
    CHECK((admission.flow != 0) == (admission.decision != TIDEGATE_ADMISSION_DECISION_REJECTED));
    return admission;
}

/* Ask `count` flows of one class at once, from `apps` apps numbered from `app`, to destinations
 * numbered from `destination`; each admitted flow is connected, each refusal must be `refusal`.
 * Returns how many were admitted. */
static unsigned burst(TidegateProxy *proxy, uint64_t now, uint64_t app, unsigned apps,
                      uint64_t destination, unsigned count, TidegateFlowProtocol protocol,
                      TidegateFlowClass flow_class, TidegateRejectReason refusal) {
    unsigned admitted = 0;
    for (unsigned i = 0; i < count; i++) {
        TidegateAdmission a = ask(proxy, now, app + i % apps, destination + i, protocol, flow_class);
        if (a.decision == TIDEGATE_ADMISSION_DECISION_REJECTED) {
            CHECK(a.reject_reason == refusal);
        } else {
            admitted++;
            CHECK_OK(tidegate_proxy_on_connected(proxy, now, a.flow));
        }
    }
    return admitted;
}

static void classes_and_pacing(void) {
    TidegateFlowPolicy policy = tidegate_proxy_config_default().flows;
    TidegateProxy *proxy = make(&policy);
    uint64_t now = 1;
    uint64_t chatty = key_of("com.example.chatty"), quiet = key_of("com.example.quiet");

    /* One app's DNS burst: its share, then refused at once; another app still resolves. */
    unsigned dns = burst(proxy, now, chatty, 1, 53000, 100, TIDEGATE_FLOW_PROTOCOL_UDP,
                         TIDEGATE_FLOW_CLASS_DNS, TIDEGATE_REJECT_REASON_DNS_OVER_LIMIT);
    CHECK(dns == policy.max_dns_in_flight_per_app);
    TidegateAdmission other =
        ask(proxy, now, quiet, 53999, TIDEGATE_FLOW_PROTOCOL_UDP, TIDEGATE_FLOW_CLASS_DNS);
    CHECK(other.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    CHECK_OK(tidegate_proxy_on_connected(proxy, now, other.flow));
    TidegateAppState app;
    CHECK_OK(tidegate_proxy_app_state(proxy, chatty, &app));
    CHECK(app.dns_in_flight == policy.max_dns_in_flight_per_app);

    /* A UDP storm from many apps stops at the UDP cap; TCP still gets in. */
    unsigned udp = burst(proxy, now, 1000, 40, 60000, 400, TIDEGATE_FLOW_PROTOCOL_UDP,
                         TIDEGATE_FLOW_CLASS_DATAGRAM, TIDEGATE_REJECT_REASON_DATAGRAM_OVER_LIMIT);
    CHECK(udp == policy.max_datagram_flows);
    TidegateAdmission tcp =
        ask(proxy, now, quiet, 443, TIDEGATE_FLOW_PROTOCOL_TCP, TIDEGATE_FLOW_CLASS_STREAM);
    CHECK(tcp.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    CHECK_OK(tidegate_proxy_on_connected(proxy, now, tcp.flow));
    TidegateProxyStats stats;
    CHECK_OK(tidegate_proxy_stats(proxy, &stats));
    CHECK(stats.flows.datagram_flows == policy.max_datagram_flows);
    CHECK(stats.flows.dns_in_flight == policy.max_dns_in_flight_per_app + 1);
    CHECK(stats.flows.rejected_datagram_over_limit == 400 - udp);
    CHECK(stats.flows.rejected_dns_over_limit == 100 - dns);

    /* The DNS flows idle out first, then the UDP sessions; the TCP flow stays. */
    uint64_t deadline = 0;
    CHECK_OK(tidegate_proxy_poll_timeout(proxy, &deadline));
    CHECK(deadline == now + policy.dns_idle_timeout_us);
    now += policy.datagram_idle_timeout_us;
    CHECK_OK(tidegate_proxy_handle_timeout(proxy, now));
    drain(proxy, now, NULL);
    CHECK_OK(tidegate_proxy_stats(proxy, &stats));
    CHECK(stats.flows.datagram_flows == 0 && stats.flows.dns_in_flight == 0);
    CHECK(stats.flows.established == 1);
    CHECK(stats.flows.idle_timeouts == udp + dns + 1);

    /* One app's reconnect storm: its burst at once, then refused with a time to ask again. */
    uint64_t storm = key_of("com.example.storm");
    unsigned admitted = 0;
    TidegateAdmission paced = {0};
    uint64_t storm_at = now;
    for (unsigned f = 0; f < 200; f++) {
        TidegateAdmission a =
            ask(proxy, now, storm, 70000 + f, TIDEGATE_FLOW_PROTOCOL_TCP, TIDEGATE_FLOW_CLASS_STREAM);
        if (a.decision == TIDEGATE_ADMISSION_DECISION_REJECTED) {
            CHECK(a.reject_reason == TIDEGATE_REJECT_REASON_PACED);
            CHECK(a.retry_at_us > now);
            paced = a;
        } else {
            admitted++;
            CHECK(a.retry_at_us == 0);
            CHECK_OK(tidegate_proxy_on_connected(proxy, now, a.flow));
        }
    }
    CHECK(admitted == policy.app_admission_burst);
    CHECK(paced.retry_at_us == now + (1000000 + policy.app_admission_rate_per_second - 1) /
                                         policy.app_admission_rate_per_second);
    /* The quiet app is not paced by the storm. */
    TidegateAdmission unpaced =
        ask(proxy, now, quiet, 444, TIDEGATE_FLOW_PROTOCOL_TCP, TIDEGATE_FLOW_CLASS_STREAM);
    CHECK(unpaced.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    TidegateFlowOutcome outcome;
    CHECK_OK(tidegate_proxy_on_closed(proxy, now, unpaced.flow, &outcome));
    CHECK(ask(proxy, paced.retry_at_us - 1, storm, 79999, TIDEGATE_FLOW_PROTOCOL_TCP,
              TIDEGATE_FLOW_CLASS_STREAM)
              .reject_reason == TIDEGATE_REJECT_REASON_PACED);
    TidegateAdmission retried = ask(proxy, paced.retry_at_us, storm, 79999,
                                    TIDEGATE_FLOW_PROTOCOL_TCP, TIDEGATE_FLOW_CLASS_STREAM);
    CHECK(retried.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    now = paced.retry_at_us;
    uint64_t retried_at = now;
    CHECK_OK(tidegate_proxy_on_connected(proxy, now, retried.flow));

    /* A peer that stops draining: the read pauses, and the flow closes at the paused limit. */
    bool can_read = bytes(proxy, now, tcp.flow, TIDEGATE_RELAY_STEP_REMOTE_READ,
                          policy.flow_high_watermark_bytes);
    CHECK(!can_read);
    CHECK_OK(tidegate_proxy_stats(proxy, &stats));
    CHECK(stats.flows.flows_paused == 1);
    CHECK_OK(tidegate_proxy_handle_timeout(proxy, now + policy.max_paused_us));
    TidegateProxyEvent event;
    size_t count = 0;
    CHECK_OK(tidegate_proxy_poll_events(proxy, &event, 1, &count));
    CHECK(count == 1 && event.flow == tcp.flow);
    CHECK(event.close_reason == TIDEGATE_CLOSE_REASON_PAUSED_TOO_LONG);
    CHECK_OK(tidegate_proxy_on_closed(proxy, now + policy.max_paused_us, tcp.flow, &outcome));
    CHECK(outcome == TIDEGATE_FLOW_OUTCOME_PAUSED_TOO_LONG);
    CHECK_OK(tidegate_proxy_stats(proxy, &stats));
    CHECK(stats.flows.paused_closes == 1 && stats.flows.flows_paused == 0);
    printf("classes: %u DNS queries of one app, %u UDP sessions, %u flows of a storm at once, "
           "the next at +%llu us\n",
           dns, udp, admitted, (unsigned long long)(retried_at - storm_at));
    tidegate_proxy_free(proxy);
}

int main(void) {
    flood();
    storm();
    backpressure();
    stalled_app();
    timeouts_and_ids();
    classes_and_pacing();
    return 0;
}
