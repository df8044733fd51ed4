/* notary-link: the merchant's tool to issue a notary token for a consumer's
 * certificate and print the contract link that carries it. Manual:
 * docs/notary-link.1. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <apr_cstr.h>
#include <apr_general.h>
#include <apr_getopt.h>
#include <apr_lib.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "notary_util.h"
#include "notary_token.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

#define EXIT_USAGE 2
#define MAX_PEM (1024 * 1024)

static const char usage_text[] =
    "usage: notary-link --key MERCHANT-KEY.pem --consumer-cert CONSUMER.pem\n"
    "                   --notary https://NOTARY[:PORT] --merchant NAME --path /PATH[?QUERY]\n"
    "                   [--lifetime SECONDS] [--alg RS256|PS256|ES256|ES384|EdDSA]\n"
    "                   [--jti ID] [--aud HOST] [--param NAME] [--now EPOCH] [--token-only]\n"
    "       notary-link --version | --help\n"
    "\n"
    "Prints https://NOTARY[:PORT]/NAME/PATH?QUERY&notary_token=TOKEN, where TOKEN is a\n"
    "JWS signed with MERCHANT-KEY (the private key of the certificate the merchant's\n"
    "backend presents to the notary), bound to the consumer's certificate.\n"
    "\n"
    "  --key FILE            merchant private key, PEM (PKCS#8 or traditional; RSA, EC, Ed25519)\n"
    "  --consumer-cert FILE  the consumer's certificate, PEM\n"
    "  --notary URL          the notary's https base URL as the consumer reaches it\n"
    "  --merchant NAME       the merchant's name registered at the notary (NotaryMerchant)\n"
    "  --path PATH           path (and query) on the merchant's site; starts with /\n"
    "  --lifetime SECONDS    token lifetime, default 600 (notaries refuse more than\n"
    "                        NotaryTokenMaxAge, default 900)\n"
    "  --alg ALG             default: RS256 for RSA, ES256 for P-256, ES384 for P-384,\n"
    "                        EdDSA for Ed25519\n"
    "  --jti ID              token id, recorded with the contract session\n"
    "  --aud HOST            audience, default the host of --notary (no port)\n"
    "  --param NAME          query parameter, default notary_token (NotaryTokenParam)\n"
    "  --now EPOCH           issue time in seconds since 1970 (for tests), default now\n"
    "  --token-only          print only the token\n"
    "  --version             print the version and exit\n"
    "  --help                this text\n";

enum { O_KEY = 256,
       O_CERT,
       O_NOTARY,
       O_MERCHANT,
       O_PATH,
       O_LIFETIME,
       O_ALG,
       O_JTI,
       O_AUD,
       O_PARAM,
       O_NOW,
       O_TOKEN_ONLY,
       O_VERSION,
       O_HELP };

static const apr_getopt_option_t options[] = {
    { "key", O_KEY, 1, "" },
    { "consumer-cert", O_CERT, 1, "" },
    { "notary", O_NOTARY, 1, "" },
    { "merchant", O_MERCHANT, 1, "" },
    { "path", O_PATH, 1, "" },
    { "lifetime", O_LIFETIME, 1, "" },
    { "alg", O_ALG, 1, "" },
    { "jti", O_JTI, 1, "" },
    { "aud", O_AUD, 1, "" },
    { "param", O_PARAM, 1, "" },
    { "now", O_NOW, 1, "" },
    { "token-only", O_TOKEN_ONLY, 0, "" },
    { "version", O_VERSION, 0, "" },
    { "help", O_HELP, 0, "" },
    { NULL, 0, 0, NULL },
};

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "notary-link: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n%s", usage_text);
    return EXIT_USAGE;
}

static int fail(const char *what, const char *arg)
{
    unsigned long e = ERR_peek_last_error();
    char buf[256];

    fprintf(stderr, "notary-link: %s%s%s", what, arg ? ": " : "", arg ? arg : "");
    if (e) {
        ERR_error_string_n(e, buf, sizeof(buf));
        fprintf(stderr, " (%s)", buf);
    }
    fprintf(stderr, "\n");
    return 1;
}

/* Characters that need no escaping in a path segment or query name. */
static int url_safe(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!apr_isalnum(*s) && !strchr("-._~", *s))
            return 0;
    return 1;
}

/* The host of an https URL, without port or IPv6 brackets; NULL if none. */
static const char *url_host(apr_pool_t *p, const char *url)
{
    const char *h, *e;

    if (apr_cstr_casecmpn(url, "https://", 8) != 0)
        return NULL;
    h = url + 8;
    if (*h == '[') {
        e = strchr(h, ']');
        return e && e > h + 1 ? apr_pstrmemdup(p, h + 1, (apr_size_t)(e - h - 1)) : NULL;
    }
    e = h + strcspn(h, ":/?#");
    if (*e == '?' || *e == '#' || e == h)
        return NULL;
    return apr_pstrmemdup(p, h, (apr_size_t)(e - h));
}

static int parse_int(const char *s, apr_int64_t *out)
{
    char *end = NULL;

    if (!s || !*s)
        return 0;
    apr_set_os_error(0);
    *out = apr_strtoi64(s, &end, 10);
    return end && !*end && apr_get_os_error() == 0;
}

int main(int argc, const char *const *argv)
{
    const char *key_file = NULL, *cert_file = NULL, *notary = NULL, *merchant = NULL;
    const char *path = NULL, *alg = NULL, *jti = NULL, *aud = NULL, *param = "notary_token";
    const char *arg, *token, *err = NULL, *frag;
    apr_int64_t lifetime = 600, now = (apr_int64_t)time(NULL);
    int token_only = 0, rc = 1, opt;
    apr_getopt_t *os;
    apr_status_t rv;
    apr_pool_t *p = NULL;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    BIO *bio = NULL;
    char *pem = NULL, *path_part, *base;
    apr_size_t der_len = 0, pem_len = 0;
    unsigned char *der, hash[32];
    int n;

    if (apr_app_initialize(&argc, &argv, NULL) != APR_SUCCESS
        || apr_pool_create(&p, NULL) != APR_SUCCESS) {
        fprintf(stderr, "notary-link: cannot initialize APR\n");
        return 1;
    }
    if (apr_getopt_init(&os, p, argc, argv) != APR_SUCCESS) {
        fprintf(stderr, "notary-link: cannot initialize option parsing\n");
        goto cleanup;
    }
    os->errfn = NULL; /* our own messages */
    while ((rv = apr_getopt_long(os, options, &opt, &arg)) == APR_SUCCESS) {
        switch (opt) {
        case O_KEY: key_file = arg; break;
        case O_CERT: cert_file = arg; break;
        case O_NOTARY: notary = arg; break;
        case O_MERCHANT: merchant = arg; break;
        case O_PATH: path = arg; break;
        case O_ALG: alg = arg; break;
        case O_JTI: jti = arg; break;
        case O_AUD: aud = arg; break;
        case O_PARAM: param = arg; break;
        case O_TOKEN_ONLY: token_only = 1; break;
        case O_VERSION:
            printf("notary-link (mod_notary) %s\n", PACKAGE_VERSION);
            rc = 0;
            goto cleanup;
        case O_HELP:
            fputs(usage_text, stdout);
            rc = 0;
            goto cleanup;
        case O_LIFETIME:
            if (!parse_int(arg, &lifetime) || lifetime <= 0) {
                rc = usage_error("--lifetime must be a whole number of seconds > 0, not '%s'", arg);
                goto cleanup;
            }
            break;
        case O_NOW:
            if (!parse_int(arg, &now) || now < 0) {
                rc = usage_error("--now must be seconds since 1970, not '%s'", arg);
                goto cleanup;
            }
            break;
        }
    }
    if (rv != APR_EOF) {
        rc = usage_error("unknown option or missing value near '%s'",
                         os->ind > 0 && os->ind <= argc ? argv[os->ind - 1] : "?");
        goto cleanup;
    }
    if (os->ind < argc) {
        rc = usage_error("unexpected argument '%s'", argv[os->ind]);
        goto cleanup;
    }
    if (!key_file || !cert_file) {
        rc = usage_error("%s", "--key and --consumer-cert are required");
        goto cleanup;
    }
    if (!token_only && (!notary || !merchant || !path)) {
        rc = usage_error("%s", "--notary, --merchant and --path are required (or --token-only with --aud)");
        goto cleanup;
    }
    if (notary && !url_host(p, notary)) {
        rc = usage_error("--notary must be an https URL with a host, not '%s'", notary);
        goto cleanup;
    }
    if (!aud && !(aud = notary ? url_host(p, notary) : NULL)) {
        rc = usage_error("%s", "--aud or --notary is required");
        goto cleanup;
    }
    if (merchant && !url_safe(merchant)) {
        rc = usage_error("--merchant must be letters, digits, '-', '.', '_', '~', not '%s'", merchant);
        goto cleanup;
    }
    if (path && path[0] != '/') {
        rc = usage_error("--path must start with '/', not '%s'", path);
        goto cleanup;
    }
    if (!url_safe(param)) {
        rc = usage_error("--param must be letters, digits, '-', '.', '_', '~', not '%s'", param);
        goto cleanup;
    }
    if (lifetime > 900)
        fprintf(stderr, "notary-link: warning: a lifetime over 900 s is refused by notaries "
                        "with the default NotaryTokenMaxAge\n");

    if (!(bio = BIO_new_file(key_file, "r"))) {
        rc = fail("cannot read the key file", key_file);
        goto cleanup;
    }
    if (!(key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL))) {
        rc = fail("not a PEM private key", key_file);
        goto cleanup;
    }
    BIO_free(bio);
    bio = NULL;

    /* Read the certificate whole: notary_x509_from_pem takes a string,
     * as the module gets it from mod_ssl. */
    if (!(bio = BIO_new_file(cert_file, "r"))) {
        rc = fail("cannot read the consumer certificate", cert_file);
        goto cleanup;
    }
    pem = apr_palloc(p, MAX_PEM);
    n = BIO_read(bio, pem, MAX_PEM);
    if (n <= 0 || n >= MAX_PEM) {
        rc = fail("consumer certificate file is empty or larger than 1 MiB", cert_file);
        goto cleanup;
    }
    pem_len = (apr_size_t)n;
    if (!(cert = notary_x509_from_pem(pem, pem_len))) {
        rc = fail("not a PEM certificate", cert_file);
        goto cleanup;
    }
    if (!(der = notary_x509_der(p, cert, &der_len))) {
        rc = fail("cannot encode the consumer certificate", cert_file);
        goto cleanup;
    }
    notary_sha256(der, der_len, hash);

    if (!(token = notary_token_sign(p, key, alg, aud, hash, now, now + lifetime, jti, &err))) {
        rc = fail("cannot issue the token", err);
        goto cleanup;
    }
    if (token_only) {
        printf("%s\n", token);
        rc = 0;
        goto cleanup;
    }

    /* The fragment stays last; the token joins the query. */
    frag = strchr(path, '#');
    path_part = frag ? apr_pstrmemdup(p, path, (apr_size_t)(frag - path)) : apr_pstrdup(p, path);
    base = apr_pstrdup(p, notary);
    while (*base && base[strlen(base) - 1] == '/')
        base[strlen(base) - 1] = '\0';
    n = (int)strlen(path_part);
    printf("%s/%s%s%s%s=%s%s\n", base, merchant, path_part,
           !strchr(path_part, '?') ? "?" : (path_part[n - 1] == '?' || path_part[n - 1] == '&') ? ""
                                                                                                : "&",
           param, token, frag ? frag : "");
    rc = 0;

cleanup:
    BIO_free(bio);
    EVP_PKEY_free(key);
    X509_free(cert);
    if (p)
        apr_pool_destroy(p);
    apr_terminate();
    if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
        fprintf(stderr, "notary-link: cannot write the output\n");
        rc = 1;
    }
    return rc;
}
