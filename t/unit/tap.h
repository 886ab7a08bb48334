/*
 * A tiny TAP producer for the unit tests, so they run under
 * `prove --exec ''`.  Header-only: include it from exactly one file.
 *
 *   ok(cond, fmt, ...)              passes when cond is true
 *   is_u64(got, want, fmt, ...)     passes when got == want
 *   is_str(got, want, fmt, ...)     passes when both are equal strings
 *   diag(fmt, ...)                  a "# ..." line on stderr
 *   return done_testing();          prints "1..N"; non-zero on a failure
 *
 * Each check returns 1 when it passed, 0 when it failed.
 */

#ifndef CFCOST_TAP_H
#define CFCOST_TAP_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>


#define ok(cond, ...)                                                        \
    tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

#define is_u64(got, want, ...)                                               \
    tap_is_u64((uint64_t) (got), (uint64_t) (want), __FILE__, __LINE__,      \
               __VA_ARGS__)

#define is_str(got, want, ...)                                               \
    tap_is_str((got), (want), __FILE__, __LINE__, __VA_ARGS__)


static unsigned  tap_run;
static unsigned  tap_failed;


static inline void tap_vresult(int pass, const char *file, int line,
    const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));
static inline int tap_ok(int pass, const char *file, int line,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static inline int tap_is_u64(uint64_t got, uint64_t want, const char *file,
    int line, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static inline int tap_is_str(const char *got, const char *want,
    const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static inline void diag(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));


/* Prints one "ok N - ..." or "not ok N - ..." line and counts it. */
static inline void
tap_vresult(int pass, const char *file, int line, const char *fmt,
    va_list ap)
{
    tap_run++;

    printf("%sok %u - ", pass ? "" : "not ", tap_run);
    vprintf(fmt, ap);
    printf("\n");

    if (!pass) {
        tap_failed++;
        fflush(stdout);
        fprintf(stderr, "#   Failed test at %s line %d.\n", file, line);
    }

    fflush(stdout);
}


static inline void
diag(const char *fmt, ...)
{
    va_list  ap;

    fflush(stdout);
    fprintf(stderr, "# ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
}


static inline int
tap_ok(int pass, const char *file, int line, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    tap_vresult(pass, file, line, fmt, ap);
    va_end(ap);

    return pass;
}


static inline int
tap_is_u64(uint64_t got, uint64_t want, const char *file, int line,
    const char *fmt, ...)
{
    int      pass;
    va_list  ap;

    pass = (got == want);

    va_start(ap, fmt);
    tap_vresult(pass, file, line, fmt, ap);
    va_end(ap);

    if (!pass) {
        diag("         got: %llu", (unsigned long long) got);
        diag("    expected: %llu", (unsigned long long) want);
    }

    return pass;
}


static inline int
tap_is_str(const char *got, const char *want, const char *file, int line,
    const char *fmt, ...)
{
    int      pass;
    va_list  ap;

    if (got == NULL || want == NULL) {
        pass = (got == want);

    } else {
        pass = (strcmp(got, want) == 0);
    }

    va_start(ap, fmt);
    tap_vresult(pass, file, line, fmt, ap);
    va_end(ap);

    if (!pass) {
        diag("         got: %s%s%s", got ? "'" : "", got ? got : "NULL",
             got ? "'" : "");
        diag("    expected: %s%s%s", want ? "'" : "", want ? want : "NULL",
             want ? "'" : "");
    }

    return pass;
}


/* Prints the plan; returns the exit status for main(). */
static inline int
done_testing(void)
{
    printf("1..%u\n", tap_run);
    fflush(stdout);

    if (tap_failed > 0) {
        diag("Looks like you failed %u test%s of %u.", tap_failed,
             tap_failed == 1 ? "" : "s", tap_run);
        return 1;
    }

    return 0;
}

#endif /* CFCOST_TAP_H */
