/*
 * Preloaded into nginx by scripts/sanitized-nginx (`make test-sanitize`
 * builds it as build/asan/ubsan-options.so, without sanitizers).
 *
 * gcc's UBSan runtime (libubsan, loaded with the sanitized module) reads
 * UBSAN_OPTIONS only when it first reports, in a worker, from
 * /proc/self/environ -- which nginx has overwritten with its process title
 * by then.  Without its options UBSan neither halts nor writes where the
 * tests look, and its start-up even points ASan's reports at stderr
 * (libubsan's __sanitizer_set_report_path call binds to libasan's).  This
 * keeps UBSAN_OPTIONS as the master saw them at start and hands them to
 * libubsan through its __ubsan_default_options hook.
 */
#include <stdlib.h>
#include <string.h>

static char cfcost_ubsan_options[4096];

__attribute__((constructor))
static void
cfcost_ubsan_options_save(void)
{
    const char  *o = getenv("UBSAN_OPTIONS");

    if (o != NULL) {
        strncpy(cfcost_ubsan_options, o, sizeof(cfcost_ubsan_options) - 1);
    }
}

const char *__ubsan_default_options(void);

const char *
__ubsan_default_options(void)
{
    return cfcost_ubsan_options;
}
