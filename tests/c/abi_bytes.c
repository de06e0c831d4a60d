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

static TidegateFlowPolicy flow_policy;
#define FLOW_INIT(mem, len, out) \
    tidegate_flow_governor_init(&flow_policy, 0, (mem), (len), (TidegateFlowGovernor **)(out))

static void place_flow_governor(void) {
    flow_policy = tidegate_flow_policy_default();
    size_t size = 0, align = 0;
    CHECK_OK(tidegate_flow_governor_footprint(&flow_policy, &size, &align));
    CHECK(size > flow_policy.slots);
    CHECK_INIT_REFUSALS(FLOW_INIT);
    Block b = block(size, align, 0);
    TidegateFlowGovernor *governor = NULL;
    CHECK_OK(tidegate_flow_governor_init(&flow_policy, 0, b.at, b.len, &governor));
    CHECK((void *)governor == (void *)b.at);
    TidegateAdmission admission;
    CHECK_OK(tidegate_flow_governor_on_new_flow(governor, 1, 7, 9, TIDEGATE_FLOW_PROTOCOL_TCP,
                                                &admission));
    CHECK(admission.decision == TIDEGATE_ADMISSION_DECISION_ACCEPTED);
    tidegate_flow_governor_free(governor);
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

static TidegateBudgetConfig budget_config;
#define BUDGET_INIT(mem, len, out) \
    tidegate_budget_init(&budget_config, (mem), (len), (TidegateBudget **)(out))
static TidegateEyeballsConfig race_config;
#define RACE_INIT(mem, len, out) \
    tidegate_eyeballs_init(&race_config, 0, (mem), (len), (TidegateEyeballs **)(out))

static void place_budget_and_race(void) {
    budget_config = tidegate_budget_config_default();
    race_config = tidegate_eyeballs_config_default();
    size_t size = 0, align = 0;
    CHECK_OK(tidegate_budget_footprint(&budget_config, &size, &align));
    CHECK_INIT_REFUSALS(BUDGET_INIT);
    Block budget_memory = block(size, align, 0);
    TidegateBudget *budget = NULL;
    CHECK_OK(tidegate_budget_init(&budget_config, budget_memory.at, size, &budget));

    CHECK_OK(tidegate_eyeballs_footprint(&race_config, &size, &align));
    CHECK_INIT_REFUSALS(RACE_INIT);
    Block race_memory = block(size, align, 0);
    TidegateEyeballs *race = NULL;
    CHECK_OK(tidegate_eyeballs_init(&race_config, 0, race_memory.at, size, &race));
    CHECK((void *)race == (void *)race_memory.at);
    TidegateSocketAddress address = v6(1);
    size_t added = 0;
    CHECK_OK(tidegate_eyeballs_on_resolved(race, 0, TIDEGATE_ADDRESS_FAMILY_IPV6, &address, 1,
                                           &added));
    TidegateEyeballsAction action;
    CHECK_OK(tidegate_eyeballs_poll_action(race, 0, budget, &action));
    CHECK(action.kind == TIDEGATE_EYEBALLS_ACTION_KIND_START_ATTEMPT && action.index == 0);
    CHECK_OK(tidegate_eyeballs_on_abort(race, 1));
    do {
        CHECK_OK(tidegate_eyeballs_poll_action(race, 1, budget, &action));
    } while (action.kind != TIDEGATE_EYEBALLS_ACTION_KIND_NONE);
    tidegate_eyeballs_free(race);
    tidegate_budget_free(budget);
    free(race_memory.base);
    free(budget_memory.base);
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
static TidegateBudget *budget;
static TidegateEyeballs *race;
static TidegateFlowGovernor *governor;
static TidegateLifecycle *lifecycle;

#define TUNNEL_STATS(out) tidegate_tunnel_stats(tunnel, (out))
#define BUDGET_LEVELS(out) tidegate_budget_levels(budget, (out))
#define BUDGET_STATS(out) tidegate_budget_stats(budget, (out))
#define RACE_STATS(out) tidegate_eyeballs_stats(race, (out))
#define RACE_STATUS(out) tidegate_eyeballs_status(race, (out))
#define FLOW_STATS(out) tidegate_flow_governor_stats(governor, (out))
#define APP_STATE(out) tidegate_flow_governor_app_state(governor, 7, (out))
#define LIFECYCLE_STATS(out) tidegate_lifecycle_stats(lifecycle, (out))

static void out_structs_are_written_whole(void) {
    TidegateTunnelConfig tc = tidegate_tunnel_config_default();
    TidegateBudgetConfig bc = tidegate_budget_config_default();
    TidegateEyeballsConfig ec = tidegate_eyeballs_config_default();
    TidegateFlowPolicy fp = tidegate_flow_policy_default();
    TidegateLifecycleConfig lc = tidegate_lifecycle_config_default();
    CHECK_OK(tidegate_tunnel_new(&tc, &tunnel));
    CHECK_OK(tidegate_budget_new(&bc, &budget));
    CHECK_OK(tidegate_eyeballs_new(&ec, 0, &race));
    CHECK_OK(tidegate_flow_governor_new(&fp, 0, &governor));
    CHECK_OK(tidegate_lifecycle_new(&lc, &lifecycle));

    /* Some activity, so that flags and counters are set. */
    unsigned char packet[60] = {0};
    for (int i = 0; i < 40; i++) {
        CHECK_OK(tidegate_tunnel_on_outbound_packet(tunnel, 1, packet, sizeof packet));
    }
    TidegateAdmission admission;
    for (uint64_t dst = 1; dst <= 3; dst++) {
        CHECK_OK(tidegate_flow_governor_on_new_flow(governor, 1, 7, dst,
                                                    TIDEGATE_FLOW_PROTOCOL_TCP, &admission));
    }
    TidegateSocketAddress addresses[2] = {v6(1), v6(2)};
    size_t added = 0;
    CHECK_OK(tidegate_eyeballs_on_resolved(race, 0, TIDEGATE_ADDRESS_FAMILY_IPV6, addresses, 2,
                                           &added));
    uint64_t generation = 0;
    CHECK_OK(tidegate_lifecycle_on_start(lifecycle, 1, NULL, 0, &generation));

    CHECK_WRITTEN_WHOLE(TidegateTunnelStats, TUNNEL_STATS);
    CHECK_WRITTEN_WHOLE(TidegateBudgetLevels, BUDGET_LEVELS);
    CHECK_WRITTEN_WHOLE(TidegateBudgetStats, BUDGET_STATS);
    CHECK_WRITTEN_WHOLE(TidegateEyeballsStats, RACE_STATS);
    CHECK_WRITTEN_WHOLE(TidegateRaceStatus, RACE_STATUS);
    CHECK_WRITTEN_WHOLE(TidegateFlowStats, FLOW_STATS);
    CHECK_WRITTEN_WHOLE(TidegateAppState, APP_STATE);
    CHECK_WRITTEN_WHOLE(TidegateLifecycleStats, LIFECYCLE_STATS);

    /* Reserved bytes are 0. */
    TidegateTunnelStats ts;
    memset(&ts, 0xAA, sizeof ts);
    CHECK_OK(tidegate_tunnel_stats(tunnel, &ts));
    CHECK(all_bytes(ts.reserved, sizeof ts.reserved, 0));
    TidegateFlowStats fs;
    memset(&fs, 0xAA, sizeof fs);
    CHECK_OK(tidegate_flow_governor_stats(governor, &fs));
    CHECK(all_bytes(fs.reserved, sizeof fs.reserved, 0));
    for (size_t i = 0; i < 8; i++) CHECK(fs.top_apps[i].reserved == 0);

    /* Actions and effects: two polls of the same state give equal bytes. A race polled twice
     * moves on, so each kind is compared across two races fed alike. */
    TidegateEyeballsAction first, second;
    TidegateEyeballs *twin = NULL;
    CHECK_OK(tidegate_eyeballs_new(&ec, 0, &twin));
    CHECK_OK(tidegate_eyeballs_on_resolved(twin, 0, TIDEGATE_ADDRESS_FAMILY_IPV6, addresses, 2,
                                           &added));
    memset(&first, 0xAA, sizeof first);
    memset(&second, 0x55, sizeof second);
    CHECK_OK(tidegate_eyeballs_poll_action(race, 0, budget, &first));
    CHECK_OK(tidegate_eyeballs_poll_action(twin, 0, budget, &second));
    CHECK(first.kind == TIDEGATE_EYEBALLS_ACTION_KIND_START_ATTEMPT);
    CHECK(memcmp(&first, &second, sizeof first) == 0 && first.address.reserved == 0);
    memset(&first, 0xAA, sizeof first);
    memset(&second, 0x55, sizeof second);
    CHECK_OK(tidegate_eyeballs_poll_action(race, 0, budget, &first));
    CHECK_OK(tidegate_eyeballs_poll_action(twin, 0, budget, &second));
    CHECK(first.kind == TIDEGATE_EYEBALLS_ACTION_KIND_NONE);
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
    CHECK(memcmp(&effect_a, &effect_b, sizeof effect_a) == 0 && effect_a.reserved == 0);

    TidegateFlowNotification notes_a[2], notes_b[2];
    size_t count = 0;
    memset(notes_a, 0xAA, sizeof notes_a);
    memset(notes_b, 0x55, sizeof notes_b);
    CHECK_OK(tidegate_flow_governor_poll_notifications(governor, notes_a, 2, &count));
    CHECK_OK(tidegate_flow_governor_poll_notifications(governor, notes_b, 2, &count));
    CHECK(count == 0);

    /* Configurations returned by value: padding-free, so two copies compare equal. */
    TidegateFlowPolicy fp2 = tidegate_flow_policy_default();
    CHECK(memcmp(&fp, &fp2, sizeof fp) == 0 && fp.reserved == 0);
    TidegateBudgetConfig bc2 = tidegate_budget_config_default();
    CHECK(memcmp(&bc, &bc2, sizeof bc) == 0);

    tidegate_eyeballs_free(twin);
    tidegate_lifecycle_free(lifecycle_twin);
    tidegate_tunnel_free(tunnel);
    tidegate_eyeballs_free(race);
    tidegate_budget_free(budget);
    tidegate_flow_governor_free(governor);
    tidegate_lifecycle_free(lifecycle);
}

int main(void) {
    place_tunnel();
    place_flow_governor();
    place_lifecycle();
    place_budget_and_race();
    printf("placement: 5 engines placed in caller memory\n");
    out_structs_are_written_whole();
    printf("out-structs: every byte written\n");
    return 0;
}
