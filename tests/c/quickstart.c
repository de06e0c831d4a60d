/*
 * The README's quick starts, checked: the C quick start as written, and the Swift quick start's
 * exact call sequence (Swift cannot be compiled here, so its calls are mirrored one for one).
 *
 * The Swift provider runs every tidegate call on one serial queue. Here that queue is a FIFO of
 * deferred callbacks, so `packetFlow.readPackets` and the server send complete later, as they do
 * on a device, in the order they were issued. The packet flow holds 5,000 packets; the server
 * takes a batch at a time. The run must deliver every packet, in order, and end with the ring
 * empty: a host written from the quick start must not stall or leak.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "check.h"

#define PACKETS 5000
#define PACKET_LEN 1400
#define READ_BATCH 64 /* packets a readPackets callback delivers at most */

/* ---- the C quick start, as the README shows it ---- */

static void c_quick_start(void) {
    uint8_t packets[3][100];
    memset(packets, 7, sizeof packets);
    const TidegatePacketView batch[3] = {
        {packets[0], 100}, {packets[1], 100}, {packets[2], 100}};
    size_t batch_len = 3;
    uint64_t now_us = 1000;

    TidegateTunnelConfig config;
    if (tidegate_tunnel_config_for_ceiling(4 << 20, 1400, TIDEGATE_AQM_CODEL, &config) !=
        TIDEGATE_STATUS_OK) {
        CHECK(false);
    }
    TidegateTunnel *tunnel = NULL;
    if (tidegate_tunnel_new(&config, &tunnel) != TIDEGATE_STATUS_OK) {
        CHECK(false);
    }
    size_t footprint = 0, align = 0;
    CHECK_OK(tidegate_tunnel_footprint(&config, &footprint, &align));
    CHECK(footprint <= 4 << 20);

    bool can_read = false;
    CHECK_OK(tidegate_tunnel_can_read_outbound(tunnel, &can_read));
    CHECK(can_read);
    size_t accepted = 0;
    TidegateStatus stopped = TIDEGATE_STATUS_OK;
    CHECK_OK(tidegate_tunnel_on_outbound_batch(tunnel, now_us, batch, batch_len, &accepted,
                                               &stopped));
    CHECK(accepted == 3 && stopped == TIDEGATE_STATUS_OK);

    TidegatePacketView views[32];
    size_t count = 0;
    CHECK_OK(tidegate_tunnel_poll_outbound(tunnel, now_us, views, 32, &count));
    CHECK(count == 3 && views[0].len == 100);
    bool resume = false;
    CHECK_OK(tidegate_tunnel_complete_outbound(tunnel, now_us, count, &resume));
    CHECK(!resume);

    tidegate_tunnel_free(tunnel);
    printf("C quick start: ok\n");
}

/* ---- the Swift quick start's sequence ---- */

typedef enum { READ_DONE, SEND_DONE } CallbackKind;

typedef struct {
    CallbackKind kind;
    size_t count;  /* SEND_DONE: the batch size */
    uint64_t now;  /* SEND_DONE: the `now` captured when the batch was polled */
} Callback;

/* The serial queue: callbacks run in the order they were scheduled. */
static Callback queue[PACKETS * 2];
static size_t queue_head, queue_tail;

static TidegateTunnel *tunnel;
static bool reading;
static uint32_t next_to_read;     /* the packet flow's next packet */
static uint32_t next_expected;    /* the server's next expected packet */
static uint32_t dropped_no_room;  /* NO_ROOM: the provider drops the packet (IP allows it) */
static uint64_t clock_us;

static void schedule(Callback callback) {
    CHECK(queue_tail < sizeof queue / sizeof queue[0]);
    queue[queue_tail++] = callback;
}

/* readIfAllowed() */
static void read_if_allowed(void) {
    bool can_read = false;
    CHECK_OK(tidegate_tunnel_can_read_outbound(tunnel, &can_read));
    if (!can_read || reading) {
        return; /* paused: wait for resume_reading */
    }
    reading = true;
    /* packetFlow.readPackets { ... } completes later, on the queue */
    schedule((Callback){.kind = READ_DONE});
}

/* sendQueued(now:) */
static void send_queued(uint64_t now) {
    TidegatePacketView views[32];
    size_t count = 0;
    CHECK_OK(tidegate_tunnel_poll_outbound(tunnel, now, views, 32, &count));
    if (count == 0) {
        return;
    }
    /* sendToServer(views[0..<count]): the server checks the order as the bytes leave */
    for (size_t i = 0; i < count; i++) {
        uint32_t sequence;
        CHECK(views[i].len == PACKET_LEN);
        memcpy(&sequence, views[i].data, sizeof sequence);
        /* Dropped packets leave gaps; the rest arrive in order. */
        CHECK(sequence >= next_expected);
        next_expected = sequence + 1;
    }
    schedule((Callback){.kind = SEND_DONE, .count = count, .now = now});
}

/* the readPackets completion handler */
static void on_read_done(void) {
    reading = false;
    clock_us += 100;
    uint64_t now = clock_us;
    uint8_t packet[PACKET_LEN];
    for (int i = 0; i < READ_BATCH && next_to_read < PACKETS; i++) {
        memset(packet, 0, sizeof packet);
        memcpy(packet, &next_to_read, sizeof next_to_read);
        next_to_read++;
        TidegateStatus s = tidegate_tunnel_on_outbound_packet(tunnel, now, packet, sizeof packet);
        if (s == TIDEGATE_STATUS_NO_ROOM) {
            dropped_no_room++;
        } else {
            CHECK_OK(s);
        }
    }
    send_queued(now);
    read_if_allowed(); /* keeps reading while allowed */
}

/* the sendToServer completion handler */
static void on_send_done(size_t count, uint64_t now) {
    bool resume = false;
    CHECK_OK(tidegate_tunnel_complete_outbound(tunnel, now, count, &resume));
    send_queued(now);  /* what is still queued goes out */
    if (resume) {
        read_if_allowed(); /* the edge: never forget it */
    }
}

static void swift_quick_start(void) {
    /* startTunnel */
    TidegateTunnelConfig config = tidegate_tunnel_config_default();
    config.max_packet_len = 1400;
    CHECK_OK(tidegate_tunnel_new(&config, &tunnel));
    read_if_allowed();

    size_t callbacks = 0;
    while (queue_head < queue_tail) {
        Callback callback = queue[queue_head++];
        callbacks++;
        if (callback.kind == READ_DONE) {
            if (next_to_read < PACKETS) {
                on_read_done();
            } else {
                reading = false; /* the packet flow is drained */
            }
        } else {
            on_send_done(callback.count, callback.now);
        }
        /* Reset the queue's storage when it drains, so it never runs out. */
        if (queue_head == queue_tail) {
            queue_head = queue_tail = 0;
        }
    }

    CHECK(next_to_read == PACKETS);
    CHECK(dropped_no_room == 0); /* read only while allowed: nothing was refused */
    CHECK(next_expected == PACKETS);
    TidegateTunnelStats stats;
    CHECK_OK(tidegate_tunnel_stats(tunnel, &stats));
    CHECK(stats.outbound.packets_completed == PACKETS);
    CHECK(stats.outbound.packets_queued == 0 && stats.outbound.packets_in_flight == 0);
    CHECK(stats.outbound.bytes_high_water <= config.outbound_bytes);
    tidegate_tunnel_free(tunnel);
    printf("Swift quick start: %u packets sent in order, %llu pauses, %zu callbacks\n",
           (unsigned)PACKETS, (unsigned long long)stats.outbound_pauses, callbacks);
}

int main(void) {
    c_quick_start();
    swift_quick_start();
    return 0;
}
