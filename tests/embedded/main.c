/*
 * tidegate on a microcontroller: the bare-metal static library (thumbv7em-none-eabihf, no std,
 * no allocator) driven from C on an MPS2 AN386 board (Cortex-M4F) under QEMU, with output and
 * exit status through semihosting. Built and run by tests/embedded/run.sh.
 *
 * Every engine lives in a static buffer, placed with _init after checking _footprint. Driven:
 * - a packet tunnel, FIFO with CoDel: outbound pushes until reading pauses, polls and completes
 *   until it resumes, inbound past its ring with drop-oldest; the ceiling and every count;
 * - a packet tunnel in flow-queue mode: a flood beside a sparse flow, inbound drops from the
 *   fattest queue;
 * - the proxy engine: flows admitted up to the cap and refused past it, bytes pausing a read
 *   at the watermark and resuming it, closes;
 * - the memory governor: a report past the critical threshold, a refused reservation, the
 *   level passed to both engines.
 *
 * Prints the RAM it uses (arenas, peak stack) and exits 0; a failed check exits 1.
 */
#define TIDEGATE_NO_STD
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The checks the host programs use; semihosting carries their stderr. */
#include "../c/check.h"
#include "../c/packet.h"
#include "tidegate.h"

uint32_t stack_peak_bytes(void);

static void on_panic(void) {
    printf("tidegate panicked: the hook ran\n");
    exit(2);
}

/* Static memory for every engine: sized here, checked against _footprint at run time. */
static uint8_t tunnel_memory[24 * 1024] __attribute__((aligned(64)));
static uint8_t fq_memory[24 * 1024] __attribute__((aligned(64)));
static uint8_t proxy_memory[16 * 1024] __attribute__((aligned(64)));
static uint8_t governor_memory[1024] __attribute__((aligned(64)));
static size_t arena_bytes;

static void *place(uint8_t *memory, size_t len, size_t size, size_t align) {
    CHECK(size <= len);
    CHECK((uintptr_t)memory % align == 0);
    arena_bytes += size;
    return memory;
}

static void fifo_tunnel(void) {
    TidegateTunnelConfig config = tidegate_tunnel_config_default();
    config.outbound_bytes = 8192;
    config.outbound_packets = 16;
    config.inbound_bytes = 4096;
    config.inbound_packets = 8;
    config.max_packet_len = 512;
    config.outbound_high_watermark_bytes = 6144;
    config.outbound_low_watermark_bytes = 2048;
    config.outbound_high_watermark_packets = 12;
    config.outbound_low_watermark_packets = 4;
    config.inbound_drop_policy = TIDEGATE_DROP_POLICY_DROP_OLDEST;
    config.aqm = TIDEGATE_AQM_CODEL;
    config.packet_align = 4;
    size_t size, align;
    CHECK_OK(tidegate_tunnel_footprint(&config, &size, &align));
    TidegateTunnel *tunnel = NULL;
    void *memory = place(tunnel_memory, sizeof tunnel_memory, size, align);
    CHECK_OK(tidegate_tunnel_init(&config, memory, sizeof tunnel_memory, &tunnel));

    uint8_t packet[512];
    uint64_t now = 1000;
    int pushed = 0;
    bool can_read = true;
    /* Outbound: read while allowed; reading pauses at a high watermark. */
    while (can_read) {
        make_packet(packet, 500, 1000, (uint32_t)pushed);
        CHECK_OK(tidegate_tunnel_on_outbound_packet(tunnel, now, packet, 500));
        pushed++;
        CHECK_OK(tidegate_tunnel_can_read_outbound(tunnel, &can_read));
    }
    CHECK(pushed == 12); /* 12 x 500 bytes reaches 6144 bytes after alignment, or 12 packets */
    /* Hand out and complete until reading resumes, exactly once. */
    int resumes = 0, sent = 0;
    while (!can_read) {
        TidegatePacketView views[2];
        size_t count = 0;
        CHECK_OK(tidegate_tunnel_poll_outbound(tunnel, now, views, 2, &count));
        CHECK(count > 0);
        for (size_t i = 0; i < count; i++) {
            uint32_t seq;
            memcpy(&seq, views[i].data + 28, sizeof seq);
            CHECK(seq == (uint32_t)sent);
            sent++;
        }
        bool resume = false;
        CHECK_OK(tidegate_tunnel_complete_outbound(tunnel, now, count, &resume));
        resumes += resume;
        CHECK_OK(tidegate_tunnel_can_read_outbound(tunnel, &can_read));
    }
    CHECK(resumes == 1);
    /* Inbound: twice the ring, nothing handed out, so the oldest are dropped. */
    for (int i = 0; i < 16; i++) {
        make_packet(packet, 500, 2000, (uint32_t)i);
        TidegateInboundDisposition disposition;
        CHECK_OK(tidegate_tunnel_on_inbound_packet(tunnel, now, packet, 500, &disposition));
        CHECK(disposition != TIDEGATE_INBOUND_DISPOSITION_DROPPED_NEWEST);
    }
    /* Refused input changes nothing but its counter. */
    CHECK_STATUS(tidegate_tunnel_on_outbound_packet(tunnel, now, packet, 0),
                 TIDEGATE_STATUS_PACKET_EMPTY);
    CHECK_STATUS(tidegate_tunnel_on_outbound_packet(tunnel, now, packet, 513),
                 TIDEGATE_STATUS_PACKET_TOO_LONG);
    CHECK_STATUS(tidegate_tunnel_on_outbound_packet(NULL, now, packet, 10),
                 TIDEGATE_STATUS_NULL_ARGUMENT);

    TidegateTunnelStats stats;
    CHECK_OK(tidegate_tunnel_stats(tunnel, &stats));
    CHECK(stats.outbound.bytes_high_water <= config.outbound_bytes);
    CHECK(stats.inbound.bytes_high_water <= config.inbound_bytes);
    CHECK(stats.outbound.packets_accepted == 12);
    CHECK(stats.outbound.packets_completed == (uint64_t)sent);
    CHECK(stats.inbound.packets_accepted == 16);
    CHECK(stats.inbound_dropped_oldest_packets > 0);
    CHECK(stats.inbound.packets_queued + stats.inbound_dropped_oldest_packets == 16);
    CHECK(stats.outbound.empty_packets == 1 && stats.outbound.oversized_packets == 1);
    printf("fifo tunnel: %d read before reading paused, resumed once after %d sent, %llu inbound "
           "dropped oldest\n", pushed, sent,
           (unsigned long long)stats.inbound_dropped_oldest_packets);
}

static void fq_tunnel(TidegateTunnel **out) {
    /* 32 cells of 256 bytes each way, 16 flow queues. */
    TidegateTunnelConfig config = tidegate_tunnel_config_default();
    config.aqm = TIDEGATE_AQM_FQ_CODEL;
    config.max_packet_len = 256;
    config.packet_align = 64;
    config.outbound_packets = config.inbound_packets = 32;
    config.outbound_bytes = config.inbound_bytes = 32 * 256;
    config.flow_queues = 16;
    for (int i = 0; i < 16; i++) config.flow_hash_seed[i] = (uint8_t)(37 * i + 11);
    size_t size, align;
    CHECK_OK(tidegate_tunnel_footprint(&config, &size, &align));
    void *memory = place(fq_memory, sizeof fq_memory, size, align);
    TidegateTunnel *tunnel = NULL;
    CHECK_OK(tidegate_tunnel_init(&config, memory, sizeof fq_memory, &tunnel));

    /* A flood of 3 packets per tick beside a sparse flow, one packet every 10 ticks; one
     * packet leaves per tick. Every sparse packet gets through. */
    uint8_t packet[256];
    uint32_t flood_seq = 0, sparse_sent = 0, sparse_seen = 0;
    for (uint64_t tick = 0; tick < 2000; tick++) {
        uint64_t now = 1000 + tick * 100;
        for (int i = 0; i < 3; i++) {
            make_packet(packet, 200, 1000, flood_seq++);
            TidegateInboundDisposition disposition;
            CHECK_OK(tidegate_tunnel_on_inbound_packet(tunnel, now, packet, 200, &disposition));
        }
        if (tick % 10 == 0) {
            make_packet(packet, 100, 2000, sparse_sent++);
            TidegateInboundDisposition disposition;
            CHECK_OK(tidegate_tunnel_on_inbound_packet(tunnel, now, packet, 100, &disposition));
        }
        TidegatePacketView view;
        size_t count = 0;
        CHECK_OK(tidegate_tunnel_poll_inbound(tunnel, now, &view, 1, &count));
        if (count == 1 && ((view.data[20] << 8) | view.data[21]) == 2000) sparse_seen++;
        CHECK_OK(tidegate_tunnel_complete_inbound(tunnel, now, count));
    }
    TidegateTunnelStats stats;
    CHECK_OK(tidegate_tunnel_stats(tunnel, &stats));
    CHECK(stats.inbound.overflow_dropped_packets > 0);
    CHECK(stats.inbound.packets_queued * (uint64_t)config.max_packet_len <= config.inbound_bytes);
    CHECK(sparse_seen + 1 >= sparse_sent);
    printf("fq tunnel: %lu of %lu sparse packets through a flood, %llu dropped from the fattest\n",
           (unsigned long)sparse_seen, (unsigned long)sparse_sent,
           (unsigned long long)stats.inbound.overflow_dropped_packets);
    *out = tunnel;
}

static TidegateProxy *proxy_engine(void) {
    TidegateProxyConfig config = tidegate_proxy_config_default();
    config.flows.slots = 12;
    config.flows.max_flows = 8;
    config.flows.max_flows_per_app = 8;
    config.flows.max_flows_per_destination = 8;
    config.flows.max_connecting = 8;
    config.flows.max_datagram_flows = 4;
    config.flows.max_dns_in_flight = 4;
    config.flows.max_dns_in_flight_per_app = 2;
    config.flows.flow_high_watermark_bytes = 4096;
    config.flows.flow_low_watermark_bytes = 1024;
    config.race_slots = 2;
    size_t size, align;
    CHECK_OK(tidegate_proxy_footprint(&config, &size, &align));
    void *memory = place(proxy_memory, sizeof proxy_memory, size, align);
    TidegateProxy *proxy = NULL;
    CHECK_OK(tidegate_proxy_init(&config, 0, memory, sizeof proxy_memory, &proxy));

    TidegateFlowId flows[8];
    for (int i = 0; i < 8; i++) {
        TidegateAdmission admission;
        CHECK_OK(tidegate_proxy_on_new_flow(proxy, 10, 1, (uint64_t)i, TIDEGATE_FLOW_PROTOCOL_TCP,
                                            TIDEGATE_FLOW_CLASS_STREAM, &admission));
        CHECK(admission.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
        flows[i] = admission.flow;
        CHECK_OK(tidegate_proxy_on_connecting(proxy, 10, flows[i]));
        CHECK_OK(tidegate_proxy_on_connected(proxy, 10, flows[i]));
    }
    TidegateAdmission admission;
    CHECK_OK(tidegate_proxy_on_new_flow(proxy, 11, 1, 99, TIDEGATE_FLOW_PROTOCOL_TCP,
                                        TIDEGATE_FLOW_CLASS_STREAM, &admission));
    CHECK(admission.decision == TIDEGATE_ADMISSION_DECISION_REJECTED);
    CHECK(admission.reject_reason == TIDEGATE_REJECT_REASON_APP_OVER_LIMIT);

    /* A read past the flow's watermark pauses it; the bytes sent resume it. */
    bool can_read = true;
    CHECK_OK(tidegate_proxy_on_bytes(proxy, 12, flows[0], TIDEGATE_RELAY_STEP_LOCAL_READ, 5000,
                                     &can_read));
    CHECK(!can_read);
    CHECK_OK(tidegate_proxy_on_bytes(proxy, 13, flows[0], TIDEGATE_RELAY_STEP_REMOTE_SENT, 5000,
                                     &can_read));
    TidegateProxyEvent events[4];
    size_t count = 0;
    CHECK_OK(tidegate_proxy_poll_events(proxy, events, 4, &count));
    CHECK(count == 1 && events[0].kind == TIDEGATE_PROXY_EVENT_KIND_RESUME_READ_LOCAL &&
          events[0].flow == flows[0]);
    for (int i = 0; i < 8; i++) {
        TidegateFlowOutcome outcome;
        CHECK_OK(tidegate_proxy_on_closed(proxy, 14, flows[i], &outcome));
    }
    CHECK_STATUS(tidegate_proxy_on_closed(proxy, 15, flows[0], NULL),
                 TIDEGATE_STATUS_NULL_ARGUMENT);
    TidegateProxyStats stats;
    CHECK_OK(tidegate_proxy_stats(proxy, &stats));
    CHECK(stats.flows.admitted == 8 && stats.flows.rejected_app_over_limit == 1);
    CHECK(stats.flows.opening + stats.flows.connecting + stats.flows.established == 0);
    printf("proxy: 8 flows admitted, 1 refused at the app's cap, a paused read resumed once\n");
    return proxy;
}

static void governor(TidegateTunnel *tunnel, TidegateProxy *proxy) {
    TidegateMemoryConfig config = tidegate_memory_config_app_proxy();
    config.max_reservations = 4;
    size_t size, align;
    CHECK_OK(tidegate_memory_footprint(&config, &size, &align));
    void *memory = place(governor_memory, sizeof governor_memory, size, align);
    TidegateMemory *governor = NULL;
    CHECK_OK(tidegate_memory_init(&config, memory, sizeof governor_memory, &governor));
    uint64_t reservation = 0;
    CHECK_OK(tidegate_memory_reserve(governor, 1, 64 * 1024, &reservation));
    /* The footprint passes the critical threshold: reservations are refused. */
    CHECK_OK(tidegate_memory_on_footprint(governor, 2, config.limit_bytes / 10 * 9));
    CHECK_STATUS(tidegate_memory_reserve(governor, 3, 1024, &reservation),
                 TIDEGATE_STATUS_MEMORY_PRESSURE);
    TidegatePressure level;
    bool changed = false;
    CHECK_OK(tidegate_memory_poll_pressure(governor, &level, &changed));
    CHECK(changed && level == TIDEGATE_PRESSURE_CRITICAL);
    bool resume = false;
    CHECK_OK(tidegate_tunnel_on_pressure(tunnel, 4, level, &resume));
    CHECK_OK(tidegate_proxy_on_pressure(proxy, 4, level));
    TidegateAdmission admission;
    CHECK_OK(tidegate_proxy_on_new_flow(proxy, 5, 1, 1, TIDEGATE_FLOW_PROTOCOL_TCP,
                                        TIDEGATE_FLOW_CLASS_STREAM, &admission));
    CHECK(admission.reject_reason == TIDEGATE_REJECT_REASON_MEMORY_PRESSURE);
    CHECK_STATUS(tidegate_proxy_on_pressure(proxy, 4, 7), TIDEGATE_STATUS_INVALID_ARGUMENT);
    printf("memory governor: critical, a reservation refused, the level passed to both engines\n");
}

#ifdef TIDEGATE_TEST_PANIC
void tidegate_testing_panic(void);
#endif

int main(void) {
    tidegate_set_panic_hook(on_panic);
#ifdef TIDEGATE_TEST_PANIC
    /* Built against the library with `testing-panic`: the panic must reach on_panic. */
    tidegate_testing_panic();
    printf("the panic returned\n");
    return 0;
#endif
    printf("tidegate %s on a Cortex-M4F\n", tidegate_version());
    fifo_tunnel();
    TidegateTunnel *tunnel = NULL;
    fq_tunnel(&tunnel);
    TidegateProxy *proxy = proxy_engine();
    governor(tunnel, proxy);
    printf("engine arenas: %lu bytes\n", (unsigned long)arena_bytes);
    printf("peak stack: %lu bytes\n", (unsigned long)stack_peak_bytes());
    printf("all checks passed\n");
    return 0;
}
