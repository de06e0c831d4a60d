/*
 * Checks shared by the C test programs: a failed check prints where and what, and exits 1, which
 * is how a program reports failure to the Rust harness that runs it.
 */
#ifndef TIDEGATE_TEST_CHECK_H
#define TIDEGATE_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "tidegate.h"

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

#define CHECK_STATUS(call, expected)                                                      \
    do {                                                                                  \
        TidegateStatus status_ = (call);                                                  \
        if (status_ != (expected)) {                                                      \
            fprintf(stderr, "%s:%d: %s returned %u (%s), expected %u\n", __FILE__, __LINE__, \
                    #call, (unsigned)status_, tidegate_status_str(status_),              \
                    (unsigned)(expected));                                                \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, TIDEGATE_STATUS_OK)

#endif /* TIDEGATE_TEST_CHECK_H */
