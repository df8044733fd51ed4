/* LD_PRELOAD shim: makes any OpenSSL client (wrk, h2load) present a TLS
 * client certificate, since neither has an option for one. Every SSL_CTX
 * created gets NOTARY_BENCH_CERT / NOTARY_BENCH_KEY loaded.
 *
 *   LD_PRELOAD=bench/client_cert_shim.so NOTARY_BENCH_CERT=c.pem \
 *     NOTARY_BENCH_KEY=c.key wrk https://127.0.0.1:8443/...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <openssl/ssl.h>

SSL_CTX *SSL_CTX_new(const SSL_METHOD *method)
{
    static SSL_CTX *(*real)(const SSL_METHOD *);
    const char *cert = getenv("NOTARY_BENCH_CERT");
    const char *key = getenv("NOTARY_BENCH_KEY");
    SSL_CTX *ctx;

    if (!real) {
        real = (SSL_CTX * (*)(const SSL_METHOD *)) dlsym(RTLD_NEXT, "SSL_CTX_new");
        if (!real) {
            fprintf(stderr, "client_cert_shim: no SSL_CTX_new to wrap\n");
            abort();
        }
    }
    ctx = real(method);
    if (ctx && cert && key) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1
            || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
            fprintf(stderr, "client_cert_shim: cannot load %s / %s\n", cert, key);
            abort();
        }
    }
    return ctx;
}
