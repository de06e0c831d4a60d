/*
 * Two promises of the C ABI, checked byte by byte from C:
 *
 * 1. Placement: every engine has `_footprint(config, &size, &align)` and
 *    `_init(config, [now,] memory, len, &handle)`. Memory that is too small or misaligned is
 *    refused with its status and not written; memory of the footprint's size and alignment
 *    holds a working engine whose handle is the memory itself; `_free` ends it and leaves the
 *    memory to the caller.
 * 2. Out-structs are written whole: a snapshot taken into memory filled with 0xAA and one taken
 *    into memory filled with 0x55 are equal byte for byte (no byte left as it was, padding or
 *    not), and every reserved field is 0.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addresses.h"
#include "check.h"

#define CHECK_OK(call) CHECK_STATUS(call, TIDEGATE_STATUS_OK)

/* Memory for `size` bytes starting `skew` bytes past an `align` boundary, filled with 0xAA. */
typedef struct {
    unsigned char *base;
    unsigned char *at;
    size_t len;
} Block;

static Block block(size_t size, size_t align, size_t skew) {
    Block b;
    b.len = size;
    b.base = malloc(size + align + skew);
    CHECK(b.base != NULL);
    uintptr_t start = ((uintptr_t)b.base + align - 1) / align * align;
    b.at = (unsigned char *)start + skew;
    memset(b.at, 0xAA, size);
    return b;
}

static int all_bytes(const unsigned char *p, size_t len, unsigned char value) {
    for (size_t i = 0; i < len; i++) {
        if (p[i] != value) return 0;
    }
    return 1;
}

/* The refusals every `_init` shares: too small, misaligned, NULL; nothing written. */
#define CHECK_INIT_REFUSALS(init_call_with)                                                 \
    do {                                                                                    \
        Block small_ = block(size, align, 0);                                               \
        void *out_ = (void *)&small_;                                                       \
        CHECK_STATUS(init_call_with(small_.at, size - 1, &out_),                            \
                     TIDEGATE_STATUS_BUFFER_TOO_SMALL);                                     \
        CHECK(out_ == (void *)&small_ && all_bytes(small_.at, size - 1, 0xAA));             \
        free(small_.base);                                                                  \
        if (align > 1) {                                                                    \
            Block skewed_ = block(size, align, 1);                                          \
            CHECK_STATUS(init_call_with(skewed_.at, size, &out_), TIDEGATE_STATUS_MISALIGNED); \
            CHECK(out_ == (void *)&small_ && all_bytes(skewed_.at, size, 0xAA));            \
            free(skewed_.base);                                                             \
        }                                                                                   \
        CHECK_STATUS(init_call_with(NULL, size, &out_), TIDEGATE_STATUS_NULL_ARGUMENT);     \
    } while (0)

/* ---- placement ------------------------------------------------------------------------- */

static TidegateTunnelConfig tunnel_config;
#define TUNNEL_INIT(mem, len, out) \
    tidegate_tunnel_init(&tunnel_config, (mem), (len), (TidegateTunnel **)(out))

static void place_tunnel(void) {
    tunnel_config = tidegate_tunnel_config_default();
    size_t size = 0, align = 0;
    CHECK_STATUS(tidegate_tunnel_footprint(&tunnel_config, NULL, &align),
                 TIDEGATE_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(tidegate_tunnel_footprint(&tunnel_config, &size, NULL),
                 TIDEGATE_STATUS_NULL_ARGUMENT);
    CHECK(size == 0 && align == 0);
    CHECK_OK(tidegate_tunnel_footprint(&tunnel_config, &size, &align));
    CHECK(align == tunnel_config.packet_align);
    CHECK(size >= tunnel_config.outbound_bytes + tunnel_config.inbound_bytes);
    CHECK_INIT_REFUSALS(TUNNEL_INIT);

    Block b = block(size, align, 0);
    TidegateTunnel *tunnel = NULL;
    CHECK_OK(tidegate_tunnel_init(&tunnel_config, b.at, b.len, &tunnel));
    CHECK((void *)tunnel == (void *)b.at);
    unsigned char packet[100];
    memset(packet, 7, sizeof packet);
    CHECK_OK(tidegate_tunnel_on_outbound_packet(tunnel, 1, packet, sizeof packet));
    TidegatePacketView view;
    size_t count = 0;
    CHECK_OK(tidegate_tunnel_poll_outbound(tunnel, 2, &view, 1, &count));
    CHECK(count == 1 && view.len == sizeof packet && memcmp(view.data, packet, view.len) == 0);
    /* The packet lies inside the caller's memory: nothing else is used. */
    CHECK(view.data >= b.at && view.data + view.len <= b.at + b.len);
    CHECK((uintptr_t)view.data % tunnel_config.packet_align == 0);
    bool resume = false;
    CHECK_OK(tidegate_tunnel_complete_outbound(tunnel, 3, 1, &resume));
    tidegate_tunnel_free(tunnel);
    /* The memory is the caller's again: a second tunnel fits in it. */
    CHECK_OK(tidegate_tunnel_init(&tunnel_config, b.at, b.len, &tunnel));
    tidegate_tunnel_free(tunnel);
    free(b.base);
}

static TidegateProxyConfig proxy_config;
#define PROXY_INIT(mem, len, out) \
    tidegate_proxy_init(&proxy_config, 0, (mem), (len), (TidegateProxy **)(out))

static void place_proxy(void) {
    proxy_config = tidegate_proxy_config_default();
    size_t size = 0, align = 0;
    CHECK_OK(tidegate_proxy_footprint(&proxy_config, &size, &align));
    CHECK(size > proxy_config.flows.slots + proxy_config.race_slots);
    CHECK_INIT_REFUSALS(PROXY_INIT);
    Block b = block(size, align, 0);
    TidegateProxy *proxy = NULL;
    CHECK_OK(tidegate_proxy_init(&proxy_config, 0, b.at, b.len, &proxy));
    CHECK((void *)proxy == (void *)b.at);
    TidegateAdmission admission;
    CHECK_OK(tidegate_proxy_on_new_flow(proxy, 1, 7, 9, TIDEGATE_FLOW_PROTOCOL_TCP,
                                        TIDEGATE_FLOW_CLASS_STREAM, &admission));
    CHECK(admission.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    TidegateSocketAddress address = v6(1);
    size_t added = 0;
    CHECK_OK(tidegate_proxy_on_resolved(proxy, 1, admission.flow, TIDEGATE_ADDRESS_FAMILY_IPV6,
                                        &address, 1, &added));
    TidegateProxyEvent event;
    size_t count = 0;
    CHECK_OK(tidegate_proxy_poll_events(proxy, &event, 1, &count));
    CHECK(count == 1 && event.kind == TIDEGATE_PROXY_EVENT_KIND_START_ATTEMPT);
    tidegate_proxy_free(proxy);
    /* The memory is the caller's again: a second engine fits in it. */
    CHECK_OK(tidegate_proxy_init(&proxy_config, 0, b.at, b.len, &proxy));
    tidegate_proxy_free(proxy);
    free(b.base);
}

static TidegateLifecycleConfig lifecycle_config;
#define LIFECYCLE_INIT(mem, len, out) \
    tidegate_lifecycle_init(&lifecycle_config, (mem), (len), (TidegateLifecycle **)(out))

static void place_lifecycle(void) {
    lifecycle_config = tidegate_lifecycle_config_default();
    size_t size = 0, align = 0;
    CHECK_OK(tidegate_lifecycle_footprint(&lifecycle_config, &size, &align));
    CHECK_INIT_REFUSALS(LIFECYCLE_INIT);
    Block b = block(size, align, 0);
    TidegateLifecycle *lifecycle = NULL;
    CHECK_OK(tidegate_lifecycle_init(&lifecycle_config, b.at, b.len, &lifecycle));
    CHECK((void *)lifecycle == (void *)b.at);
    uint64_t generation = 0;
    CHECK_OK(tidegate_lifecycle_on_start(lifecycle, 1, NULL, 0, &generation));
    CHECK(generation == 1);
    tidegate_lifecycle_free(lifecycle);
    free(b.base);
}

/* ---- whole out-structs ------------------------------------------------------------------ */

/* Call `fill_and_call` into a struct filled with 0xAA and into one filled with 0x55; the two
 * results must be equal byte for byte. */
#define CHECK_WRITTEN_WHOLE(Type, call_into)                                        \
    do {                                                                            \
        Type a_, b_;                                                                \
        memset(&a_, 0xAA, sizeof a_);                                               \
        memset(&b_, 0x55, sizeof b_);                                               \
        CHECK_OK(call_into(&a_));                                                   \
        CHECK_OK(call_into(&b_));                                                   \
        if (memcmp(&a_, &b_, sizeof a_) != 0) {                                     \
            fprintf(stderr, "%s: a byte of %s was left unwritten\n", #call_into, #Type); \
            exit(1);                                                                \
        }                                                                           \
    } while (0)

static TidegateTunnel *tunnel;
static TidegateProxy *proxy;
static TidegateLifecycle *lifecycle;
static TidegateFlowId raced;

#define TUNNEL_STATS(out) tidegate_tunnel_stats(tunnel, (out))
#define PROXY_STATS(out) tidegate_proxy_stats(proxy, (out))
#define PROXY_FLOW(out) tidegate_proxy_flow(proxy, raced, (out))
#define APP_STATE(out) tidegate_proxy_app_state(proxy, 7, (out))
#define LIFECYCLE_STATS(out) tidegate_lifecycle_stats(lifecycle, (out))

/* A proxy engine with three flows of app 7, the first racing two IPv6 addresses. */
static TidegateProxy *busy_proxy(const TidegateProxyConfig *config, TidegateFlowId *first) {
    TidegateProxy *p = NULL;
    CHECK_OK(tidegate_proxy_new(config, 0, &p));
    TidegateAdmission admission;
    for (uint64_t dst = 1; dst <= 3; dst++) {
        CHECK_OK(tidegate_proxy_on_new_flow(p, 1, 7, dst, TIDEGATE_FLOW_PROTOCOL_TCP,
                                        TIDEGATE_FLOW_CLASS_STREAM, &admission));
        if (dst == 1) *first = admission.flow;
    }
    TidegateSocketAddress addresses[2] = {v6(1), v6(2)};
    size_t added = 0;
    CHECK_OK(tidegate_proxy_on_resolved(p, 1, *first, TIDEGATE_ADDRESS_FAMILY_IPV6, addresses, 2,
                                        &added));
    return p;
}

static void out_structs_are_written_whole(void) {
    TidegateTunnelConfig tc = tidegate_tunnel_config_default();
    TidegateProxyConfig pc = tidegate_proxy_config_default();
    TidegateLifecycleConfig lc = tidegate_lifecycle_config_default();
    CHECK_OK(tidegate_tunnel_new(&tc, &tunnel));
    proxy = busy_proxy(&pc, &raced);
    CHECK_OK(tidegate_lifecycle_new(&lc, &lifecycle));

    /* Some activity, so that flags and counters are set. */
    unsigned char packet[60] = {0};
    for (int i = 0; i < 40; i++) {
        CHECK_OK(tidegate_tunnel_on_outbound_packet(tunnel, 1, packet, sizeof packet));
    }
    uint64_t generation = 0;
    CHECK_OK(tidegate_lifecycle_on_start(lifecycle, 1, NULL, 0, &generation));

    CHECK_WRITTEN_WHOLE(TidegateTunnelStats, TUNNEL_STATS);
    CHECK_WRITTEN_WHOLE(TidegateProxyStats, PROXY_STATS);
    CHECK_WRITTEN_WHOLE(TidegateProxyFlow, PROXY_FLOW);
    CHECK_WRITTEN_WHOLE(TidegateAppState, APP_STATE);
    CHECK_WRITTEN_WHOLE(TidegateLifecycleStats, LIFECYCLE_STATS);

    /* Reserved bytes are 0. */
    TidegateTunnelStats ts;
    memset(&ts, 0xAA, sizeof ts);
    CHECK_OK(tidegate_tunnel_stats(tunnel, &ts));
    CHECK(all_bytes(ts.reserved, sizeof ts.reserved, 0));
    TidegateProxyStats ps;
    memset(&ps, 0xAA, sizeof ps);
    CHECK_OK(tidegate_proxy_stats(proxy, &ps));
    CHECK(all_bytes(ps.flows.reserved, sizeof ps.flows.reserved, 0));
    CHECK(ps.races.reserved == 0 && ps.races.running == 1);
    for (size_t i = 0; i < 8; i++) CHECK(ps.flows.top_apps[i].reserved == 0);

    /* Events and effects: two polls of the same state give equal bytes. A poll moves the
     * engine on, so each kind is compared across two engines fed alike. */
    TidegateFlowId twin_raced = 0;
    TidegateProxy *twin = busy_proxy(&pc, &twin_raced);
    CHECK(twin_raced == raced);
    TidegateProxyEvent first, second;
    size_t count_a = 0, count_b = 0;
    memset(&first, 0xAA, sizeof first);
    memset(&second, 0x55, sizeof second);
    CHECK_OK(tidegate_proxy_poll_events(proxy, &first, 1, &count_a));
    CHECK_OK(tidegate_proxy_poll_events(twin, &second, 1, &count_b));
    CHECK(count_a == 1 && count_b == 1);
    CHECK(first.kind == TIDEGATE_PROXY_EVENT_KIND_START_ATTEMPT);
    CHECK(memcmp(&first, &second, sizeof first) == 0 && first.address.reserved == 0);
    /* A close asks for the attempt's cancellation: another kind, other fields. */
    TidegateFlowOutcome outcome;
    CHECK_OK(tidegate_proxy_on_closed(proxy, 2, raced, &outcome));
    CHECK_OK(tidegate_proxy_on_closed(twin, 2, raced, &outcome));
    memset(&first, 0xAA, sizeof first);
    memset(&second, 0x55, sizeof second);
    CHECK_OK(tidegate_proxy_poll_events(proxy, &first, 1, &count_a));
    CHECK_OK(tidegate_proxy_poll_events(twin, &second, 1, &count_b));
    CHECK(first.kind == TIDEGATE_PROXY_EVENT_KIND_CANCEL_ATTEMPT);
    CHECK(memcmp(&first, &second, sizeof first) == 0);

    TidegateLifecycleEffect effect_a, effect_b;
    TidegateLifecycle *lifecycle_twin = NULL;
    CHECK_OK(tidegate_lifecycle_new(&lc, &lifecycle_twin));
    CHECK_OK(tidegate_lifecycle_on_start(lifecycle_twin, 1, NULL, 0, &generation));
    memset(&effect_a, 0xAA, sizeof effect_a);
    memset(&effect_b, 0x55, sizeof effect_b);
    CHECK_OK(tidegate_lifecycle_poll_effect(lifecycle, 1, &effect_a));
    CHECK_OK(tidegate_lifecycle_poll_effect(lifecycle_twin, 1, &effect_b));
    CHECK(effect_a.kind == TIDEGATE_LIFECYCLE_EFFECT_KIND_START_TUNNEL);
    CHECK(memcmp(&effect_a, &effect_b, sizeof effect_a) == 0 && effect_a.cancel_cause == TIDEGATE_CANCEL_CAUSE_HOST);

    /* Configurations returned by value: padding-free, so two copies compare equal. */
    TidegateProxyConfig pc2 = tidegate_proxy_config_default();
    CHECK(memcmp(&pc, &pc2, sizeof pc) == 0 && pc.reserved == 0);

    tidegate_proxy_free(twin);
    tidegate_lifecycle_free(lifecycle_twin);
    tidegate_tunnel_free(tunnel);
    tidegate_proxy_free(proxy);
    tidegate_lifecycle_free(lifecycle);
}

int main(void) {
    place_tunnel();
    place_proxy();
    place_lifecycle();
    printf("placement: 3 engines placed in caller memory\n");
    out_structs_are_written_whole();
    printf("out-structs: every byte written\n");
    return 0;
}
