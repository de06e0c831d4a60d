/*
 * Drives a TidegateTunnel in flow-queue mode (TIDEGATE_AQM_FQ_CODEL) through the C header, as a
 * packet tunnel provider would: a configuration from a memory ceiling, a random-looking hash
 * seed, then a UDP flood at three times the link rate beside a sparse flow (one packet every
 * 50 ticks), both outbound and inbound.
 *
 * Checked: the ring's bytes never exceed the configuration; reading is never paused and nothing
 * read is refused (room is made by dropping from the fattest queue); every sparse packet is
 * delivered, within two hand-outs of its arrival; each flow's packets leave in order; inbound
 * drops from the fattest queue and never drops an arriving sparse packet.
 *
 * Exits 0 on success; prints the failed check and exits 1 otherwise.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "packet.h"
#include "tidegate.h"

enum { TICKS = 20000, FLOOD_PER_TICK = 3, SPARSE_EVERY = 50, PACKET = 1000 };
enum { FLOOD_PORT = 1000, SPARSE_PORT = 2000 };

static uint16_t port_of(const TidegatePacketView *v) {
    CHECK(v->len >= 32);
    return (uint16_t)((v->data[20] << 8) | v->data[21]);
}

static uint32_t seq_of(const TidegatePacketView *v) {
    uint32_t seq;
    memcpy(&seq, v->data + 28, sizeof seq);
    return seq;
}

int main(void) {
    TidegateTunnelConfig config;
    CHECK_OK(tidegate_tunnel_config_for_ceiling(1u << 20, 1400, TIDEGATE_AQM_FQ_CODEL, &config));
    CHECK(config.aqm == TIDEGATE_AQM_FQ_CODEL && config.flow_queues == 1024);
    /* A real host fills the seed from SecRandomCopyBytes or getrandom. */
    for (int i = 0; i < 16; i++) config.flow_hash_seed[i] = (uint8_t)(37 * i + 11);
    config.flow_queues = 64; /* lowering the queue count keeps the footprint within the ceiling */
    size_t size, align;
    CHECK_OK(tidegate_tunnel_footprint(&config, &size, &align));
    CHECK(size <= (1u << 20));

    TidegateTunnel *tunnel = NULL;
    CHECK_OK(tidegate_tunnel_new(&config, &tunnel));

    static uint8_t buf[PACKET];
    uint32_t flood_seq = 0, sparse_seq = 0, last_flood = 0, last_sparse = 0;
    int flood_seen = 0;
    uint32_t sparse_delivered = 0, max_sparse_wait = 0;
    uint32_t handouts_since_sparse = 0;
    for (uint64_t tick = 1; tick <= TICKS; tick++) {
        uint64_t now = tick * 100;
        /* The apps offer the flood and, now and then, a sparse packet. */
        for (int i = 0; i < FLOOD_PER_TICK; i++) {
            bool can_read = false;
            CHECK_OK(tidegate_tunnel_can_read_outbound(tunnel, &can_read));
            CHECK(can_read);
            make_packet(buf, PACKET, FLOOD_PORT, ++flood_seq);
            CHECK_OK(tidegate_tunnel_on_outbound_packet(tunnel, now, buf, PACKET));
        }
        if (tick % SPARSE_EVERY == 0) {
            make_packet(buf, 64, SPARSE_PORT, ++sparse_seq);
            CHECK_OK(tidegate_tunnel_on_outbound_packet(tunnel, now, buf, 64));
            handouts_since_sparse = 0;
        }
        /* The link takes one packet per tick. */
        TidegatePacketView view;
        size_t count = 0;
        CHECK_OK(tidegate_tunnel_poll_outbound(tunnel, now, &view, 1, &count));
        if (count == 1) {
            handouts_since_sparse++;
            if (port_of(&view) == SPARSE_PORT) {
                CHECK(seq_of(&view) > last_sparse);
                last_sparse = seq_of(&view);
                sparse_delivered++;
                if (handouts_since_sparse > max_sparse_wait) max_sparse_wait = handouts_since_sparse;
            } else {
                CHECK(port_of(&view) == FLOOD_PORT);
                CHECK(!flood_seen || seq_of(&view) > last_flood);
                last_flood = seq_of(&view);
                flood_seen = 1;
            }
            bool resume = true;
            CHECK_OK(tidegate_tunnel_complete_outbound(tunnel, now, 1, &resume));
            CHECK(!resume);
        }
        TidegateTunnelStats stats;
        CHECK_OK(tidegate_tunnel_stats(tunnel, &stats));
        CHECK(stats.outbound.arena_bytes_used <= config.outbound_bytes);
        CHECK(stats.outbound_refused_packets == 0 && !stats.outbound_paused);
    }
    CHECK(sparse_delivered == sparse_seq);
    CHECK(max_sparse_wait <= 2);

    /* Inbound: bursts of the flood with a sparse packet in each, written out between bursts. */
    uint32_t fattest_drops = 0, sparse_in = 0, sparse_out = 0;
    for (uint64_t burst = 1; burst <= 200; burst++) {
        uint64_t now = TICKS * 100 + burst * 1000;
        for (int i = 0; i < 100; i++) {
            TidegateInboundDisposition d;
            make_packet(buf, PACKET, FLOOD_PORT, ++flood_seq);
            CHECK_OK(tidegate_tunnel_on_inbound_packet(tunnel, now, buf, PACKET, &d));
            CHECK(d != TIDEGATE_INBOUND_DISPOSITION_DROPPED_NEWEST);
            if (d == TIDEGATE_INBOUND_DISPOSITION_QUEUED_AFTER_DROPPING_FROM_FATTEST) {
                fattest_drops++;
            }
        }
        TidegateInboundDisposition d;
        make_packet(buf, 64, SPARSE_PORT, ++sparse_in);
        CHECK_OK(tidegate_tunnel_on_inbound_packet(tunnel, now, buf, 64, &d));
        CHECK(d == TIDEGATE_INBOUND_DISPOSITION_QUEUED ||
              d == TIDEGATE_INBOUND_DISPOSITION_QUEUED_AFTER_DROPPING_FROM_FATTEST);
        /* The apps take 20 packets between bursts. */
        TidegatePacketView views[20];
        size_t count = 0;
        CHECK_OK(tidegate_tunnel_poll_inbound(tunnel, now, views, 20, &count));
        for (size_t i = 0; i < count; i++) {
            if (port_of(&views[i]) == SPARSE_PORT) sparse_out++;
        }
        CHECK_OK(tidegate_tunnel_complete_inbound(tunnel, now, count));
    }
    CHECK(fattest_drops > 0);
    CHECK(sparse_out == sparse_in);

    TidegateTunnelStats stats;
    CHECK_OK(tidegate_tunnel_stats(tunnel, &stats));
    printf("outbound: %u of %u sparse packets, each within %u hand-outs; %llu flood packets "
           "dropped from the fattest queue\n",
           sparse_delivered, sparse_seq, max_sparse_wait,
           (unsigned long long)stats.outbound.overflow_dropped_packets);
    printf("inbound: %u of %u sparse packets delivered; %u arrivals dropped from the fattest\n",
           sparse_out, sparse_in, fattest_drops);
    tidegate_tunnel_free(tunnel);
    return 0;
}
