/*
 * Socket addresses for the C test programs, from the ranges reserved for documentation
 * (2001:db8::/32, RFC 3849, and 192.0.2.0/24, RFC 5737): no test ever reaches them.
 */
#ifndef TIDEGATE_TEST_ADDRESSES_H
#define TIDEGATE_TEST_ADDRESSES_H

#include <stdint.h>
#include <string.h>

#include "tidegate.h"

/* [2001:db8::<last>]:443 */
static inline TidegateSocketAddress v6(uint8_t last) {
    TidegateSocketAddress a;
    memset(&a, 0, sizeof a);
    a.ip[0] = 0x20;
    a.ip[1] = 0x01;
    a.ip[2] = 0x0d;
    a.ip[3] = 0xb8;
    a.ip[15] = last;
    a.port = 443;
    a.family = TIDEGATE_ADDRESS_FAMILY_IPV6;
    return a;
}

/* 192.0.2.<last>:443 */
static inline TidegateSocketAddress v4(uint8_t last) {
    TidegateSocketAddress a;
    memset(&a, 0, sizeof a);
    a.ip[0] = 192;
    a.ip[1] = 0;
    a.ip[2] = 2;
    a.ip[3] = last;
    a.port = 443;
    a.family = TIDEGATE_ADDRESS_FAMILY_IPV4;
    return a;
}

#endif /* TIDEGATE_TEST_ADDRESSES_H */
