/* Shared by the libFuzzer targets: APR set-up once per process, a pool per
 * input, and a check that aborts with the reason (libFuzzer saves the input
 * that made it). No httpd: the targets link the core's sources directly. */
#ifndef NOTARY_FUZZ_H
#define NOTARY_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <apr_general.h>
#include <apr_pools.h>

/* An invariant of the code under test failed: say which, then abort so the
 * fuzzer keeps the input as a crash. */
#define FUZZ_CHECK(cond, ...) \
    do { \
        if (!(cond)) { \
            fprintf(stderr, "FUZZ INVARIANT FAILED at %s:%d: %s\n  ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__); \
            fprintf(stderr, "\n"); \
            abort(); \
        } \
    } while (0)

static apr_pool_t *fuzz_root;

/* Once per process, from LLVMFuzzerInitialize. */
static void fuzz_apr_init(void)
{
    if (apr_initialize() != APR_SUCCESS || apr_pool_create(&fuzz_root, NULL) != APR_SUCCESS) {
        fprintf(stderr, "fuzz: cannot initialise APR\n");
        exit(2);
    }
    /* Debian's APR takes pool memory with mmap, which LeakSanitizer does
     * not scan: whatever a long-lived pool points to would look leaked at
     * exit unless the pools are gone by then */
    atexit(apr_terminate);
}

/* A fresh pool for one input; the caller destroys it, so that every
 * cleanup (iconv, zlib, temporary files) runs per input and a leak shows. */
static apr_pool_t *fuzz_pool(void)
{
    apr_pool_t *p = NULL;

    if (apr_pool_create(&p, fuzz_root) != APR_SUCCESS) {
        fprintf(stderr, "fuzz: cannot create a pool\n");
        abort();
    }
    return p;
}

#endif /* NOTARY_FUZZ_H */
