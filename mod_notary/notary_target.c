/* notary_target: request-target normalisation and routing split (see the
 * header for why the raw target, not httpd's decoded path). */
#include "notary_target.h"

#include <string.h>
#include <apr_strings.h>

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int unreserved(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
        || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
        || c == '~';
}

const char *notary_target_normalize(apr_pool_t *p, const char *path,
                                    apr_size_t len, const char **err)
{
    /* decoding only shrinks, and dot-segment removal works in place */
    char *out = apr_palloc(p, len + 1), *o = out;
    char *seg, *w;
    apr_size_t i;

    if (len == 0 || path[0] != '/') {
        *err = "the path does not start with '/'";
        return NULL;
    }
    for (i = 0; i < len; i++) {
        if (path[i] == '%') {
            int hi, lo;
            if (i + 2 >= len) {
                *err = "malformed percent-encoding";
                return NULL;
            }
            hi = hexval((unsigned char)path[i + 1]);
            lo = hexval((unsigned char)path[i + 2]);
            if (hi < 0 || lo < 0) {
                *err = "malformed percent-encoding";
                return NULL;
            }
            if (unreserved(hi * 16 + lo)) {
                *o++ = (char)(hi * 16 + lo);
            }
            else {
                memcpy(o, path + i, 3);
                o += 3;
            }
            i += 2;
        }
        else {
            *o++ = path[i];
        }
    }
    *o = '\0';

    /* RFC 3986 5.2.4 on an absolute path: w is the output end, seg the
     * start of the input segment (without its '/') */
    w = out;
    seg = out + 1;
    for (;;) {
        char *end = strchr(seg, '/');
        apr_size_t slen = end ? (apr_size_t)(end - seg) : strlen(seg);
        int last = end == NULL;

        if (slen == 1 && seg[0] == '.') {
            if (last) {
                *w++ = '/';
            }
        }
        else if (slen == 2 && seg[0] == '.' && seg[1] == '.') {
            while (w > out && *--w != '/') {
            }
            if (last) {
                *w++ = '/';
            }
        }
        else {
            *w++ = '/';
            memmove(w, seg, slen);
            w += slen;
        }
        if (last) {
            break;
        }
        seg = end + 1;
    }
    if (w == out) {
        *w++ = '/';
    }
    *w = '\0';
    return out;
}

apr_status_t notary_target_split(apr_pool_t *p, const char *target,
                                 const char **name, const char **rest,
                                 const char **err)
{
    apr_size_t len = strcspn(target, "?#");
    const char *norm = notary_target_normalize(p, target, len, err);
    const char *n, *slash;

    if (!norm) {
        return APR_EINVAL;
    }
    n = norm + 1;
    slash = strchr(n, '/');
    *name = slash ? apr_pstrmemdup(p, n, slash - n) : n;
    *rest = slash ? slash : "/";
    return APR_SUCCESS;
}

int notary_target_within(const char *base, const char *path)
{
    apr_size_t blen;

    if (!base) {
        base = ""; /* a merchant URL without a path: strncmp wants a string */
    }
    blen = strlen(base);

    while (blen && base[blen - 1] == '/') {
        blen--;
    }
    return !strncmp(path, base, blen) && (path[blen] == '\0' || path[blen] == '/');
}
