/*
 * Drives a TidegateTunnel through the C header the way a packet tunnel provider would.
 *
 * Outbound: apps produce packets much faster than the simulated tunnel sends them. The host
 * reads only while tidegate_tunnel_can_read_outbound says so, stops when it says no, and starts
 * again only when a completion reports resume_reading (the edge a provider must not miss).
 * A packet refused with NO_ROOM stays with the host and is retried. Checked: queued plus in-flight
 * bytes never exceed the ring, and every packet arrives exactly once, in order (sequence numbers
 * in the payload).
 *
 * Inbound: the tunnel delivers bursts faster than the apps take them; checked: accepted plus
 * dropped equals offered, and what is delivered is in order with no duplicates.
 *
 * Exits 0 on success; prints the failed check and exits 1 otherwise.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tidegate.h"

enum { OUTBOUND_PACKETS = 20000, READ_BATCH = 32, SEND_PER_TICK = 6, INBOUND_OFFERED = 5000 };

static size_t packet_len(uint32_t seq) { return 64 + (seq * 37u) % 1337u; }

static void fill_packet(uint8_t *buf, uint32_t seq, size_t len) {
    memcpy(buf, &seq, sizeof seq);
    for (size_t i = sizeof seq; i < len; i++) buf[i] = (uint8_t)(seq + i);
}

static uint32_t packet_seq(const TidegatePacketView *view) {
    uint32_t seq;
    CHECK(view->len >= sizeof seq);
    memcpy(&seq, view->data, sizeof seq);
    return seq;
}

static void check_ceiling(const TidegateTunnel *tunnel, const TidegateTunnelConfig *config) {
    TidegateTunnelStats stats;
    CHECK_OK(tidegate_tunnel_stats(tunnel, &stats));
    CHECK(stats.outbound.bytes_queued + stats.outbound.bytes_in_flight <= config->outbound_bytes);
    CHECK(stats.outbound.bytes_high_water <= config->outbound_bytes);
    CHECK(stats.inbound.bytes_queued + stats.inbound.bytes_in_flight <= config->inbound_bytes);
    /* The rings' bytes include the alignment padding, which never breaks the ceiling. */
    CHECK(stats.outbound.arena_bytes_used <= config->outbound_bytes);
    CHECK(stats.outbound.arena_bytes_used >=
          stats.outbound.bytes_queued + stats.outbound.bytes_in_flight);
    CHECK(stats.inbound.arena_bytes_used <= config->inbound_bytes);
    CHECK(stats.inbound.arena_bytes_used >=
          stats.inbound.bytes_queued + stats.inbound.bytes_in_flight);
}

static void flood_outbound(TidegateTunnel *tunnel, const TidegateTunnelConfig *config) {
    static uint8_t buf[1500];
    uint32_t produced = 0, received = 0, refused = 0, aligned = 0;
    uint64_t now = 0;
    int reading = 1; /* a read is outstanding, as after startTunnel */
    int holding = 0; /* a refused packet is held for retry */

    for (int tick = 0; received < OUTBOUND_PACKETS; tick++) {
        CHECK(tick < 1000000); /* a host that never resumes reading would spin here */
        now += 100;
        if (reading) {
            /* One readPackets batch: the whole batch is pushed even if reading pauses midway. */
            for (int i = 0; i < READ_BATCH && produced < OUTBOUND_PACKETS; i++) {
                size_t len = packet_len(produced);
                fill_packet(buf, produced, len);
                TidegateStatus status = tidegate_tunnel_on_outbound_packet(tunnel, now, buf, len);
                if (status == TIDEGATE_STATUS_NO_ROOM) {
                    refused++;
                    holding = 1;
                    break;
                }
                CHECK_OK(status);
                produced++;
            }
            bool can_read = false;
            CHECK_OK(tidegate_tunnel_can_read_outbound(tunnel, &can_read));
            reading = can_read && !holding;
        } else if (holding) {
            size_t len = packet_len(produced);
            fill_packet(buf, produced, len);
            if (tidegate_tunnel_on_outbound_packet(tunnel, now, buf, len) == TIDEGATE_STATUS_OK) {
                produced++;
                holding = 0;
                /* Read again if allowed; otherwise the next resume_reading edge restarts us. */
                bool can_read = false;
                CHECK_OK(tidegate_tunnel_can_read_outbound(tunnel, &can_read));
                reading = can_read;
            }
        }
        check_ceiling(tunnel, config);

        /* The tunnel drains SEND_PER_TICK packets per tick: far slower than the apps. */
        TidegatePacketView views[SEND_PER_TICK];
        size_t count = 0;
        CHECK_OK(tidegate_tunnel_poll_outbound(tunnel, now, views, SEND_PER_TICK, &count));
        for (size_t i = 0; i < count; i++) {
            CHECK(packet_seq(&views[i]) == received);
            CHECK(views[i].len == packet_len(received));
            aligned += (uintptr_t)views[i].data % config->packet_align == 0;
            received++;
        }
        check_ceiling(tunnel, config);
        if (count > 0) {
            bool resume = false;
            CHECK_OK(tidegate_tunnel_complete_outbound(tunnel, now + 50, count, &resume));
            if (resume) {
                CHECK(!reading);
                reading = !holding;
            }
        }
    }

    TidegateTunnelStats stats;
    CHECK_OK(tidegate_tunnel_stats(tunnel, &stats));
    CHECK(stats.outbound.packets_accepted == OUTBOUND_PACKETS);
    CHECK(stats.outbound.packets_completed == OUTBOUND_PACKETS);
    CHECK(stats.outbound_refused_packets == refused);
    CHECK(stats.outbound_pauses > 0);
    CHECK(stats.outbound.bytes_queued == 0 && stats.outbound.bytes_in_flight == 0);
    /* Alignment yields only where the padding does not fit, near a full ring. */
    CHECK(aligned >= received / 10 * 9);
    printf("outbound: %u packets in order, %llu pauses, %u refusals, high water %llu of %u bytes, "
           "%u on %u-byte boundaries\n",
           received, (unsigned long long)stats.outbound_pauses, refused,
           (unsigned long long)stats.outbound.bytes_high_water, config->outbound_bytes, aligned,
           config->packet_align);
}

static void flood_inbound(TidegateTunnel *tunnel, const TidegateTunnelConfig *config) {
    static uint8_t buf[1500];
    uint64_t now = 1000000000;
    uint32_t queued = 0, dropped = 0;
    int64_t last_delivered = -1;
    for (uint32_t seq = 0; seq < INBOUND_OFFERED; seq++) {
        size_t len = packet_len(seq);
        fill_packet(buf, seq, len);
        TidegateInboundDisposition disposition;
        CHECK_OK(tidegate_tunnel_on_inbound_packet(tunnel, now++, buf, len, &disposition));
        if (disposition == TIDEGATE_INBOUND_DISPOSITION_DROPPED_NEWEST) {
            dropped++;
        } else {
            queued++;
        }
        check_ceiling(tunnel, config);
        if (seq % 50 == 49) { /* the apps take a batch now and then */
            TidegatePacketView views[8];
            size_t count = 0;
            CHECK_OK(tidegate_tunnel_poll_inbound(tunnel, now, views, 8, &count));
            for (size_t i = 0; i < count; i++) {
                int64_t delivered = packet_seq(&views[i]);
                CHECK(delivered > last_delivered);
                last_delivered = delivered;
            }
            CHECK_OK(tidegate_tunnel_complete_inbound(tunnel, now, count));
        }
    }
    TidegateTunnelStats stats;
    CHECK_OK(tidegate_tunnel_stats(tunnel, &stats));
    CHECK(stats.inbound.packets_accepted == queued);
    CHECK(stats.inbound_dropped_newest_packets == dropped);
    CHECK(stats.inbound.packets_accepted + stats.inbound_dropped_newest_packets +
              stats.inbound_dropped_oldest_packets == INBOUND_OFFERED);
    CHECK(dropped > 0);
    printf("inbound: %u offered, %u queued, %u dropped\n", INBOUND_OFFERED, queued, dropped);
}

static void bad_input(void) {
    TidegateTunnelConfig config = tidegate_tunnel_config_default();
    TidegateTunnel *tunnel = NULL;
    bool flag = false;
    CHECK(tidegate_tunnel_new(NULL, &tunnel) == TIDEGATE_STATUS_NULL_ARGUMENT);
    CHECK(tidegate_tunnel_new(&config, NULL) == TIDEGATE_STATUS_NULL_ARGUMENT);
    CHECK(tidegate_tunnel_can_read_outbound(NULL, &flag) == TIDEGATE_STATUS_NULL_ARGUMENT);
    config.inbound_drop_policy = 7;
    CHECK(tidegate_tunnel_new(&config, &tunnel) == TIDEGATE_STATUS_CONFIG_UNKNOWN_DROP_POLICY);
    CHECK(tunnel == NULL); /* out-params are written only on success */
    config = tidegate_tunnel_config_default();
    config.outbound_low_watermark_bytes = config.outbound_high_watermark_bytes;
    CHECK(tidegate_tunnel_new(&config, &tunnel) == TIDEGATE_STATUS_CONFIG_WATERMARKS_OUT_OF_ORDER);
    config = tidegate_tunnel_config_default();
    CHECK(config.packet_align == 64);
    config.packet_align = 48; /* not a power of two */
    CHECK(tidegate_tunnel_new(&config, &tunnel) == TIDEGATE_STATUS_CONFIG_BAD_PACKET_ALIGN);
    CHECK(tunnel == NULL);
    tidegate_tunnel_free(NULL);
    CHECK(strcmp(tidegate_status_str(TIDEGATE_STATUS_OK), "ok") == 0);
    CHECK(strcmp(tidegate_status_str(12345), "unknown status") == 0);
    CHECK(strlen(tidegate_version()) > 0);
}

int main(void) {
    bad_input();

    TidegateTunnelConfig config = tidegate_tunnel_config_default();
    config.outbound_bytes = 64 * 1024;
    config.outbound_packets = 256;
    config.outbound_high_watermark_bytes = 48 * 1024;
    config.outbound_low_watermark_bytes = 32 * 1024;
    config.outbound_high_watermark_packets = 192;
    config.outbound_low_watermark_packets = 128;
    config.inbound_bytes = 32 * 1024;
    config.inbound_packets = 64;

    size_t footprint = 0, align = 0;
    CHECK_OK(tidegate_tunnel_footprint(&config, &footprint, &align));
    CHECK(align == config.packet_align);
    CHECK(footprint >= 96 * 1024 + 320 * 16);

    TidegateTunnel *tunnel = NULL;
    CHECK_OK(tidegate_tunnel_new(&config, &tunnel));
    flood_outbound(tunnel, &config);
    flood_inbound(tunnel, &config);
    tidegate_tunnel_free(tunnel);
    printf("footprint: %zu bytes\n", footprint);
    return 0;
}
