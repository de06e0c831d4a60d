/*
 * Drives the memory governor through the C header the way an iOS packet tunnel or app proxy
 * would: every tick it reports the headroom os_proc_available_memory() gives (simulated here),
 * polls the pressure, and passes each change to the tunnel and the proxy engine. The host's own
 * large allocations (TLS handshakes) go through reservations.
 *
 * 1. Headroom falls as the host's allocations surge: pressure rises to elevated, then critical;
 *    a reservation is refused near the critical threshold and at it; 0 headroom is "unknown".
 * 2. The tunnel applies the levels: reading pauses at once when the shrunk high watermark is
 *    already passed, the limits it reports are the configured ones halved and quartered, and
 *    the resume edge comes when relief grows them back.
 * 3. The proxy applies them: at critical a new flow is refused with MEMORY_PRESSURE and an idle
 *    flow is evicted (CLOSE_FLOW, outcome MEMORY_PRESSURE); stats report the shrunk limits.
 * 4. Relief: the level falls only after the calm period, through the governor's timeout.
 *
 * Exits 0 on success; prints the failed check and exits 1 otherwise.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "tidegate.h"

enum { MIB = 1 << 20 };

static TidegateTunnel *tunnel;
static TidegateProxy *proxy;
static TidegateMemory *governor;
static bool reading = true;

/* After every governor call: pass a new level to every engine, as the README says. */
static void apply_pressure(uint64_t now) {
    TidegatePressure level;
    bool changed = false;
    CHECK_OK(tidegate_memory_poll_pressure(governor, &level, &changed));
    if (!changed) return;
    bool resume = false;
    CHECK_OK(tidegate_tunnel_on_pressure(tunnel, now, level, &resume));
    if (resume) reading = true;
    CHECK_OK(tidegate_proxy_on_pressure(proxy, now, level));
}

static TidegatePressure level_now(void) {
    TidegateMemoryStats stats;
    CHECK_OK(tidegate_memory_stats(governor, &stats));
    return stats.pressure;
}

int main(void) {
    TidegateTunnelConfig tunnel_config = tidegate_tunnel_config_default();
    CHECK_OK(tidegate_tunnel_new(&tunnel_config, &tunnel));
    TidegateProxyConfig proxy_config = tidegate_proxy_config_default();
    CHECK_OK(tidegate_proxy_new(&proxy_config, 0, &proxy));
    TidegateMemoryConfig config = tidegate_memory_config_packet_tunnel();
    CHECK(config.limit_bytes == 50u * MIB);
    CHECK_OK(tidegate_memory_new(&config, &governor));

    /* An idle established flow, for the eviction below. */
    TidegateAdmission admission;
    CHECK_OK(tidegate_proxy_on_new_flow(proxy, 0, 1, 1, TIDEGATE_FLOW_PROTOCOL_TCP,
                                        TIDEGATE_FLOW_CLASS_STREAM, &admission));
    CHECK(admission.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    TidegateFlowId idle = admission.flow;
    CHECK_OK(tidegate_proxy_on_connecting(proxy, 0, idle));
    CHECK_OK(tidegate_proxy_on_connected(proxy, 0, idle));

    /* The tunnel holds a burst of 1400-byte packets (1408 with alignment): three quarters of
     * its byte high watermark, so above half of it. */
    uint8_t packet[1400];
    memset(packet, 0x45, sizeof packet);
    uint32_t burst = tunnel_config.outbound_high_watermark_bytes * 3 / 4 / 1408;
    for (uint32_t i = 0; i < burst; i++) {
        CHECK_OK(tidegate_tunnel_on_outbound_packet(tunnel, 0, packet, sizeof packet));
    }
    bool can_read = false;
    CHECK_OK(tidegate_tunnel_can_read_outbound(tunnel, &can_read));
    CHECK(can_read);

    /* 1. The headroom falls: 40 MiB, 20 MiB (30 used: elevated), 13 MiB (37 used: critical). */
    uint64_t now = 3000000;
    CHECK_OK(tidegate_memory_on_headroom(governor, now, 40u * MIB));
    apply_pressure(now);
    CHECK(level_now() == TIDEGATE_PRESSURE_NORMAL);
    uint64_t tls = 0;
    CHECK_OK(tidegate_memory_reserve(governor, now, 2u * MIB, &tls));
    CHECK(tls != 0);
    now += 100000;
    CHECK_OK(tidegate_memory_on_headroom(governor, now, 20u * MIB));
    apply_pressure(now);
    CHECK(level_now() == TIDEGATE_PRESSURE_ELEVATED);

    /* 2. Elevated halves the high watermark: the burst is above it, so reading pauses. */
    CHECK_OK(tidegate_tunnel_can_read_outbound(tunnel, &can_read));
    CHECK(!can_read);
    TidegateTunnelLimits limits;
    CHECK_OK(tidegate_tunnel_limits(tunnel, &limits));
    CHECK(limits.pressure == TIDEGATE_PRESSURE_ELEVATED);
    CHECK(limits.outbound_high_watermark_packets ==
          tunnel_config.outbound_high_watermark_packets / 2);

    /* A 6 MiB handshake batch would reach 36 MiB, past the critical 35: refused. */
    uint64_t refused = 0;
    CHECK_STATUS(tidegate_memory_reserve(governor, now, 6u * MIB, &refused),
                 TIDEGATE_STATUS_MEMORY_PRESSURE);
    CHECK(refused == 0);
    now += 100000;
    CHECK_OK(tidegate_memory_on_headroom(governor, now, 13u * MIB));
    apply_pressure(now);
    CHECK(level_now() == TIDEGATE_PRESSURE_CRITICAL);
    CHECK_STATUS(tidegate_memory_reserve(governor, now, 1, &refused),
                 TIDEGATE_STATUS_MEMORY_PRESSURE);
    CHECK_OK(tidegate_tunnel_limits(tunnel, &limits));
    CHECK(limits.inbound_bytes == tunnel_config.inbound_bytes / 4);
    printf("pressure: normal, elevated at 30 MiB used, critical at 37; 2 reservations refused\n");

    /* 3. The proxy at critical: the idle flow was evicted, a new flow is refused. */
    TidegateProxyEvent events[4];
    size_t count = 0;
    CHECK_OK(tidegate_proxy_poll_events(proxy, events, 4, &count));
    CHECK(count == 1);
    CHECK(events[0].kind == TIDEGATE_PROXY_EVENT_KIND_CLOSE_FLOW);
    CHECK(events[0].flow == idle);
    CHECK(events[0].close_reason == TIDEGATE_CLOSE_REASON_MEMORY_PRESSURE);
    TidegateFlowOutcome outcome;
    CHECK_OK(tidegate_proxy_on_closed(proxy, now, idle, &outcome));
    CHECK(outcome == TIDEGATE_FLOW_OUTCOME_MEMORY_PRESSURE);
    CHECK_OK(tidegate_proxy_on_new_flow(proxy, now, 2, 2, TIDEGATE_FLOW_PROTOCOL_TCP,
                                        TIDEGATE_FLOW_CLASS_STREAM, &admission));
    CHECK(admission.decision == TIDEGATE_ADMISSION_DECISION_REJECTED);
    CHECK(admission.reject_reason == TIDEGATE_REJECT_REASON_MEMORY_PRESSURE);
    TidegateProxyStats proxy_stats;
    CHECK_OK(tidegate_proxy_stats(proxy, &proxy_stats));
    CHECK(proxy_stats.pressure == TIDEGATE_PRESSURE_CRITICAL);
    CHECK(proxy_stats.limits.max_flows == proxy_config.flows.max_flows / 4);
    CHECK(proxy_stats.limits.flow_high_watermark_bytes ==
          proxy_config.flows.flow_high_watermark_bytes / 4);
    CHECK(proxy_stats.attempt_limit == proxy_config.budget.max_attempts_in_flight / 4);
    CHECK(proxy_stats.flows.rejected_memory_pressure == 1);
    CHECK(proxy_stats.flows.pressure_closes == 1);
    printf("proxy: 1 idle flow evicted, 1 new flow refused, limits quartered\n");

    /* 4. Relief: the host frees its batch; the headroom recovers; calm, then normal. */
    CHECK_OK(tidegate_memory_release(governor, now, tls));
    CHECK_STATUS(tidegate_memory_release(governor, now, tls),
                 TIDEGATE_STATUS_UNKNOWN_RESERVATION);
    now += 100000;
    CHECK_OK(tidegate_memory_on_headroom(governor, now, 40u * MIB));
    apply_pressure(now);
    CHECK(level_now() == TIDEGATE_PRESSURE_CRITICAL);
    uint64_t deadline = 0;
    CHECK_OK(tidegate_memory_poll_timeout(governor, &deadline));
    CHECK(deadline == now + config.calm_us);
    CHECK_OK(tidegate_memory_handle_timeout(governor, deadline));
    apply_pressure(deadline);
    CHECK(level_now() == TIDEGATE_PRESSURE_NORMAL);
    /* The burst is above the normal low watermark, so reading stays paused until completions
     * bring it there; the completion that does reports the resume edge. */
    CHECK_OK(tidegate_tunnel_can_read_outbound(tunnel, &can_read));
    if (!can_read) {
        reading = false;
        TidegatePacketView views[64];
        size_t handed = 0;
        while (!reading) {
            CHECK_OK(tidegate_tunnel_poll_outbound(tunnel, deadline, views, 64, &handed));
            CHECK(handed > 0);
            bool resume = false;
            CHECK_OK(tidegate_tunnel_complete_outbound(tunnel, deadline, handed, &resume));
            if (resume) reading = true;
        }
    }
    CHECK_OK(tidegate_tunnel_can_read_outbound(tunnel, &can_read));
    CHECK(can_read);
    CHECK_OK(tidegate_proxy_on_new_flow(proxy, deadline, 2, 2, TIDEGATE_FLOW_PROTOCOL_TCP,
                                        TIDEGATE_FLOW_CLASS_STREAM, &admission));
    CHECK(admission.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    TidegateMemoryStats stats;
    CHECK_OK(tidegate_memory_stats(governor, &stats));
    CHECK(stats.critical_entries == 1 && stats.elevated_entries == 1);
    CHECK(stats.reservations_refused == 2 && stats.reservations == 0);
    printf("relief: normal after %llu ms of calm; reading resumed; flows admitted again\n",
           (unsigned long long)(config.calm_us / 1000));

    /* Unknown headroom is never critical. */
    CHECK_OK(tidegate_memory_on_headroom(governor, deadline + 1, 0));
    CHECK(level_now() == TIDEGATE_PRESSURE_NORMAL);

    tidegate_memory_free(governor);
    tidegate_proxy_free(proxy);
    tidegate_tunnel_free(tunnel);
    return 0;
}
