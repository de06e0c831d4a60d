/*
 * Drives a TidegateTunnel with a byte queue limit through the C header, as a packet tunnel
 * provider on NWConnection would: the layer below (a socket whose send buffer the host cannot
 * size) takes everything it is given and transmits 1500 bytes per tick, calling back with a send
 * completion for each packet it finished; the host reports each with
 * tidegate_tunnel_on_outbound_transmitted and drains the tunnel again. Apps offer two packets per
 * tick while reading is allowed: a third more than the link carries.
 *
 * Run once without the limit and once with it, CoDel on. Checked: without the limit the queue
 * below grows without bound, out of CoDel's reach; with it the link never idles after warm-up, the bytes below stay
 * within two ticks of drain and one packet, the tunnel's own figure of the bytes below matches
 * the host's, and the tunnel's ceiling holds.
 *
 * Exits 0 on success; prints the failed check and exits 1 otherwise.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tidegate.h"

enum { TICKS = 4000, RATE = 1500, PACKET = 1000, OFFERED = 2, BELOW_MAX = 16384 };

/* The layer below: a FIFO of packet lengths nobody manages. */
typedef struct {
    uint32_t len[BELOW_MAX];
    size_t head, count;
    uint64_t bytes;
    uint64_t head_done; /* bytes of the head packet already transmitted */
} Below;

static void below_push(Below *b, uint32_t len) {
    CHECK(b->count < BELOW_MAX);
    b->len[(b->head + b->count) % BELOW_MAX] = len;
    b->count++;
    b->bytes += len;
}

typedef struct {
    uint64_t most_below, idle_ticks, tunnel_below_mismatches, bytes_high_water, limit;
} Outcome;

static Outcome run(uint32_t queue_limit_max_bytes) {
    TidegateTunnelConfig config = tidegate_tunnel_config_default();
    config.max_packet_len = PACKET;
    config.outbound_bytes = 64 * 1024;
    config.outbound_packets = 64;
    config.outbound_high_watermark_bytes = 48 * 1024;
    config.outbound_low_watermark_bytes = 32 * 1024;
    config.outbound_high_watermark_packets = 48;
    config.outbound_low_watermark_packets = 32;
    config.aqm = TIDEGATE_AQM_CODEL;
    config.queue_limit_max_bytes = queue_limit_max_bytes;
    config.queue_limit_min_bytes = PACKET;
    config.queue_limit_hold_us = 50000; /* 50 ticks of 1 ms */
    TidegateTunnel *tunnel = NULL;
    CHECK_OK(tidegate_tunnel_new(&config, &tunnel));

    static Below below;
    memset(&below, 0, sizeof below);
    static uint8_t packet[PACKET];
    Outcome out = {0};
    for (uint64_t tick = 0; tick < TICKS; tick++) {
        uint64_t now = tick * 1000;
        bool can_read = false;
        CHECK_OK(tidegate_tunnel_can_read_outbound(tunnel, &can_read));
        for (int i = 0; i < OFFERED && can_read; i++) {
            TidegateStatus s = tidegate_tunnel_on_outbound_packet(tunnel, now, packet, PACKET);
            if (s == TIDEGATE_STATUS_NO_ROOM) break;
            CHECK_OK(s);
            CHECK_OK(tidegate_tunnel_can_read_outbound(tunnel, &can_read));
        }
        /* Send what the tunnel hands out; each send is complete once the socket took it. */
        for (;;) {
            TidegatePacketView view;
            size_t n = 0;
            CHECK_OK(tidegate_tunnel_poll_outbound(tunnel, now, &view, 1, &n));
            if (n == 0) break;
            below_push(&below, (uint32_t)view.len);
            bool resume = false;
            CHECK_OK(tidegate_tunnel_complete_outbound(tunnel, now, 1, &resume));
        }
        if (tick >= TICKS / 2) {
            if (below.bytes > out.most_below) out.most_below = below.bytes;
            if (below.bytes == 0) out.idle_ticks++;
        }
        /* The link transmits RATE bytes; each packet finished calls back. */
        uint64_t budget = RATE;
        while (budget > 0 && below.count > 0) {
            uint64_t left = below.len[below.head] - below.head_done;
            uint64_t take = left < budget ? left : budget;
            below.head_done += take;
            below.bytes -= take;
            budget -= take;
            if (below.head_done == below.len[below.head]) {
                CHECK_OK(tidegate_tunnel_on_outbound_transmitted(tunnel, now + 999,
                                                                 below.len[below.head]));
                below.head = (below.head + 1) % BELOW_MAX;
                below.count--;
                below.head_done = 0;
            }
        }
        TidegateTunnelStats stats;
        CHECK_OK(tidegate_tunnel_stats(tunnel, &stats));
        /* The tunnel counts whole packets until their completion; the host, bytes on the wire. */
        uint64_t host_below = below.bytes + below.head_done;
        if (queue_limit_max_bytes != 0 && stats.outbound_bytes_below != host_below) {
            out.tunnel_below_mismatches++;
        }
        CHECK(stats.outbound.arena_bytes_used <= config.outbound_bytes);
        out.bytes_high_water = stats.outbound.bytes_high_water;
        out.limit = stats.outbound_queue_limit_bytes;
    }
    tidegate_tunnel_free(tunnel);
    return out;
}

int main(void) {
    Outcome off = run(0);
    Outcome on = run(64 * 1024);
    CHECK(off.idle_ticks == 0 && on.idle_ticks == 0);
    CHECK(off.most_below >= 32 * 1024);
    CHECK(on.most_below <= 2 * RATE + PACKET);
    CHECK(on.tunnel_below_mismatches == 0);
    CHECK(on.limit >= PACKET && on.limit <= 64 * 1024);
    printf("without a limit: link idle %llu ticks, at most %llu bytes below\n",
           (unsigned long long)off.idle_ticks, (unsigned long long)off.most_below);
    printf("with the limit: link idle %llu ticks, at most %llu bytes below, limit %llu\n",
           (unsigned long long)on.idle_ticks, (unsigned long long)on.most_below,
           (unsigned long long)on.limit);
    return 0;
}
