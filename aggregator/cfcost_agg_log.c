/*
 * The aggregator's log: one line per message on stderr, with the time,
 * the process and the level.  See cfcost_agg.h.
 */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cfcost_agg.h"
#include "cfcost_agg_util.h"


int  cfcost_log_level = CFCOST_LOG_INFO;


static const char  *cfcost_log_names[] = { "error", "warn", "info",
                                           "debug" };


void
cfcost_log(int level, const char *fmt, ...)
{
    char     ts[CFCOST_ISO_LEN + 1], msg[2048];
    va_list  ap;

    if (level > cfcost_log_level) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    cfcost_iso_ms(ts, cfcost_now_ms());

    fprintf(stderr, "%s cfcost-aggregator[%d] %s: %s\n", ts, (int) getpid(),
            cfcost_log_names[level], msg);
}


int
cfcost_log_level_parse(const char *name)
{
    int  i;

    for (i = 0; i <= CFCOST_LOG_DEBUG; i++) {
        if (strcmp(name, cfcost_log_names[i]) == 0) {
            return i;
        }
    }

    return -1;
}
