/*
 * Packets the C test programs send through the tunnel: shared by the host programs and the
 * bare-metal one.
 */
#ifndef TIDEGATE_TEST_PACKET_H
#define TIDEGATE_TEST_PACKET_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A UDP/IPv4 packet of `len` bytes (at least 32) from `port` to port 9, 10.0.0.1 to 10.0.0.2,
 * carrying `seq` after the UDP header. */
static inline void make_packet(uint8_t *p, size_t len, uint16_t port, uint32_t seq) {
    memset(p, 0, len);
    p[0] = 0x45;
    p[9] = 17;
    p[12] = 10, p[15] = 1;
    p[16] = 10, p[19] = 2;
    p[20] = (uint8_t)(port >> 8), p[21] = (uint8_t)port;
    p[23] = 9;
    memcpy(p + 28, &seq, sizeof seq);
}

#endif
