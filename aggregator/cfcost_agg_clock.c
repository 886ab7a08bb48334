/*
 * The aggregator's clocks.  See cfcost_agg.h.  Alone in a file so that a
 * unit test can link the rest with a clock of its own.
 */

#include <time.h>

#include "cfcost_agg.h"


int64_t
cfcost_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


uint64_t
cfcost_mono_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}
