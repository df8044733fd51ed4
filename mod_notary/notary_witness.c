/* C2SP tlog-witness and tlog-cosignature (Ed25519, cosignature/v1); see
 * notary_witness.h and docs/evidence.md. */
#include <string.h>

#include <apr_strings.h>
#include <apr_tables.h>

#include "notary_http.h"
#include "notary_witness.h"

#define EM_DASH_SP "\xe2\x80\x94 " /* U+2014 and a space: starts a signature line */
#define EM_DASH_SP_LEN 4
#define COSIG_RAW_LEN (4 + 8 + 64) /* key ID, timestamp, Ed25519 signature */

#define FAIL(msg) \
    do { \
        if (detail) *detail = (msg); \
        goto cleanup; \
    } while (0)

apr_uint32_t notary_witness_key_id(const char *name, const unsigned char pub[32])
{
    return notary_note_key_id_of(name, NOTARY_WITNESS_SIG_TYPE, pub);
}

static const char *vkey_string(apr_pool_t *p, const notary_witness_key *k)
{
    unsigned char buf[33];

    buf[0] = NOTARY_WITNESS_SIG_TYPE;
    memcpy(buf + 1, k->pub, 32);
    return apr_psprintf(p, "%s+%08x+%s", k->name, (unsigned)k->id,
                        notary_b64_encode(p, buf, sizeof(buf)));
}

notary_witness_key *notary_witness_vkey_parse(apr_pool_t *p, const char *vkey,
                                              const char **detail)
{
    notary_witness_key *k = apr_pcalloc(p, sizeof(*k));
    apr_uint32_t id = 0;

    if (notary_note_key_split(p, vkey, NOTARY_WITNESS_SIG_TYPE, &k->name, &id, k->pub, detail)
        != 0) {
        return NULL;
    }
    k->id = notary_witness_key_id(k->name, k->pub);
    if (k->id != id) {
        FAIL("the key ID does not match the name and key (type 0x04)");
    }
    k->vkey = apr_pstrdup(p, vkey);
    return k;
cleanup:
    return NULL;
}

notary_witness_key *notary_witness_key_from_seed(apr_pool_t *p, const char *name,
                                                 const unsigned char seed[32], const char **detail)
{
    notary_note_key *nk = notary_note_key_from_seed(p, name, seed, detail);
    notary_witness_key *k;

    if (!nk) {
        return NULL;
    }
    k = apr_pcalloc(p, sizeof(*k));
    k->name = nk->name;
    memcpy(k->pub, nk->pub, 32);
    memcpy(k->seed, seed, 32);
    k->has_private = 1;
    k->id = notary_witness_key_id(k->name, k->pub);
    k->vkey = vkey_string(p, k);
    return k;
}

char *notary_witness_message(apr_pool_t *p, apr_uint64_t time, const char *text,
                             apr_size_t text_len, apr_size_t *len)
{
    char *head = apr_psprintf(p, "cosignature/v1\ntime %" APR_UINT64_T_FMT "\n", time);
    apr_size_t hl = strlen(head);
    char *msg = apr_palloc(p, hl + text_len + 1);

    memcpy(msg, head, hl);
    memcpy(msg + hl, text, text_len);
    msg[hl + text_len] = '\0';
    *len = hl + text_len;
    return msg;
}

static int text_ok(const char *text, apr_size_t len)
{
    return len > 0 && text[len - 1] == '\n';
}

int notary_witness_cosign(apr_pool_t *p, const notary_witness_key *k, apr_uint64_t time,
                          const char *text, apr_size_t text_len, char **line, apr_size_t *len,
                          const char **detail)
{
    unsigned char raw[COSIG_RAW_LEN];
    apr_size_t mlen;
    const char *msg;
    int i, rv = -1;

    if (!k->has_private) {
        FAIL("a verifier key cannot cosign");
    }
    if (time == 0 || time > (apr_uint64_t)NOTARY_WITNESS_TIME_MAX || !text_ok(text, text_len)) {
        FAIL("a cosignature needs a time of 1 to 2^63-1 and note text ending in a newline");
    }
    msg = notary_witness_message(p, time, text, text_len, &mlen);
    for (i = 0; i < 4; i++) {
        raw[i] = (unsigned char)(k->id >> (24 - 8 * i));
    }
    for (i = 0; i < 8; i++) {
        raw[4 + i] = (unsigned char)(time >> (56 - 8 * i));
    }
    if (notary_ed25519_sign(k->seed, msg, mlen, raw + 12) != 0) {
        FAIL("libcrypto could not sign");
    }
    *line = apr_pstrcat(p, EM_DASH_SP, k->name, " ", notary_b64_encode(p, raw, sizeof(raw)),
                        "\n", NULL);
    *len = strlen(*line);
    rv = 0;
cleanup:
    return rv;
}

int notary_witness_sig_verify(apr_pool_t *p, const notary_witness_key *k, const char *text,
                              apr_size_t text_len, const unsigned char *raw, apr_size_t raw_len,
                              apr_uint64_t *time, const char **detail)
{
    apr_uint64_t t = 0;
    apr_uint32_t id;
    apr_size_t mlen;
    const char *msg;
    int i, rv = -1;

    if (raw_len != COSIG_RAW_LEN) {
        FAIL("a cosignature is a key ID, an 8-byte time and a 64-byte Ed25519 signature");
    }
    id = ((apr_uint32_t)raw[0] << 24) | ((apr_uint32_t)raw[1] << 16) | ((apr_uint32_t)raw[2] << 8)
       | raw[3];
    if (id != k->id) {
        FAIL("the cosignature's key ID is not the witness key's");
    }
    for (i = 0; i < 8; i++) {
        t = (t << 8) | raw[4 + i];
    }
    /* the spec: never zero for add-checkpoint, at most 2^63 - 1 */
    if (t == 0 || t > (apr_uint64_t)NOTARY_WITNESS_TIME_MAX) {
        FAIL("the cosignature's time is 0 or above 2^63-1");
    }
    if (!text_ok(text, text_len)) {
        FAIL("note text must end in a newline");
    }
    msg = notary_witness_message(p, t, text, text_len, &mlen);
    if (!notary_ed25519_verify(k->pub, msg, mlen, raw + 12, 64)) {
        FAIL("the cosignature does not verify");
    }
    *time = t;
    rv = 0;
cleanup:
    return rv;
}

int notary_witness_request(apr_pool_t *p, apr_uint64_t old_size, const unsigned char *proof,
                           apr_size_t count, const char *checkpoint, apr_size_t checkpoint_len,
                           char **out, apr_size_t *len, const char **detail)
{
    apr_array_header_t *parts;
    apr_size_t i, off = 0, total = 0;

    if (count > NOTARY_WITNESS_MAX_PROOF) {
        if (detail) *detail = "a consistency proof of more than 63 hashes";
        return -1;
    }
    parts = apr_array_make(p, (int)count + 3, sizeof(const char *));
    APR_ARRAY_PUSH(parts, const char *) = apr_psprintf(p, "old %" APR_UINT64_T_FMT "\n", old_size);
    for (i = 0; i < count; i++) {
        APR_ARRAY_PUSH(parts, const char *) = apr_pstrcat(p, notary_b64_encode(p, proof + 32 * i, 32),
                                                          "\n", NULL);
    }
    APR_ARRAY_PUSH(parts, const char *) = "\n";
    for (i = 0; i < (apr_size_t)parts->nelts; i++) {
        total += strlen(APR_ARRAY_IDX(parts, i, const char *));
    }
    *out = apr_palloc(p, total + checkpoint_len + 1);
    for (i = 0; i < (apr_size_t)parts->nelts; i++) {
        const char *s = APR_ARRAY_IDX(parts, i, const char *);
        apr_size_t n = strlen(s);

        memcpy(*out + off, s, n);
        off += n;
    }
    memcpy(*out + off, checkpoint, checkpoint_len);
    off += checkpoint_len;
    (*out)[off] = '\0';
    *len = off;
    return 0;
}

int notary_witness_response(apr_pool_t *p, const notary_witness_key *k, const char *text,
                            apr_size_t text_len, const char *resp, apr_size_t resp_len,
                            notary_cosig *cs, const char **detail)
{
    const char *s = resp, *end = resp + resp_len;
    int found = 0;

    if (resp_len == 0 || resp[resp_len - 1] != '\n') {
        FAIL("the witness's answer is not signature lines ending in a newline");
    }
    if (memchr(resp, '\0', resp_len)) {
        FAIL("the witness's answer holds a NUL byte");
    }
    while (s < end) {
        const char *eol = memchr(s, '\n', (apr_size_t)(end - s)), *name, *sp;
        apr_size_t rawlen, nlen;
        unsigned char *raw;
        apr_uint64_t t;

        if ((apr_size_t)(eol - s) < EM_DASH_SP_LEN || memcmp(s, EM_DASH_SP, EM_DASH_SP_LEN)) {
            FAIL("a line of the witness's answer does not start with an em dash and a space");
        }
        name = s + EM_DASH_SP_LEN;
        if (!(sp = memchr(name, ' ', (apr_size_t)(eol - name)))) {
            FAIL("a signature line of the witness has no signature");
        }
        nlen = (apr_size_t)(sp - name);
        if (!notary_note_name_valid(name, nlen)) {
            FAIL("a signature line of the witness has an invalid key name");
        }
        if (!(raw = notary_b64_decode(p, sp + 1, (apr_size_t)(eol - sp - 1), &rawlen)) || rawlen < 5) {
            FAIL("a signature of the witness is not canonical base64 of a key ID and a signature");
        }
        /* another key's line (another witness, another type): ignored */
        if (nlen == strlen(k->name) && !memcmp(name, k->name, nlen)
            && (((apr_uint32_t)raw[0] << 24) | ((apr_uint32_t)raw[1] << 16)
                | ((apr_uint32_t)raw[2] << 8) | raw[3])
                   == k->id) {
            if (found) {
                FAIL("the witness answered two cosignatures of its key");
            }
            if (notary_witness_sig_verify(p, k, text, text_len, raw, rawlen, &t, detail) != 0) {
                goto cleanup;
            }
            cs->time = t;
            cs->line_len = (apr_size_t)(eol + 1 - s);
            cs->line = apr_pstrmemdup(p, s, cs->line_len);
            found = 1;
        }
        s = eol + 1;
    }
    if (!found) {
        FAIL("the witness's answer has no cosignature of its key");
    }
    return 0;
cleanup:
    return -1;
}

int notary_witness_conflict_parse(const char *body, apr_size_t len, apr_uint64_t *size,
                                  const char **detail)
{
    apr_uint64_t v = 0;
    apr_size_t i;

    if (len < 2 || body[len - 1] != '\n' || len - 1 > 19 || (len > 2 && body[0] == '0')) {
        FAIL("a 409 body is a tree size in decimal and a newline");
    }
    for (i = 0; i + 1 < len; i++) {
        if (body[i] < '0' || body[i] > '9') {
            FAIL("a 409 body is a tree size in decimal and a newline");
        }
        if (v > (APR_UINT64_MAX - 9) / 10) {
            FAIL("the 409 body's tree size is too large");
        }
        v = v * 10 + (apr_uint64_t)(body[i] - '0');
    }
    *size = v;
    return 0;
cleanup:
    return -1;
}

int notary_witness_check_checkpoint(apr_pool_t *p, const char *msg, apr_size_t len,
                                    const notary_note_key *const *log_keys, int nlog,
                                    const notary_witness_key *const *wks, int nwk,
                                    const char **detail)
{
    notary_checkpoint cp;
    notary_note *note = NULL;
    int i, j;

    if (notary_checkpoint_open(p, msg, len, log_keys, nlog, &cp, &note, detail) != 0) {
        return -1;
    }
    for (i = 0; i < nwk; i++) {
        int good = 0;

        for (j = 0; j < note->nsigs; j++) {
            const notary_note_sig *sig = &note->sigs[j];
            unsigned char *raw;
            apr_uint64_t t;

            if (strcmp(sig->name, wks[i]->name) || sig->id != wks[i]->id) {
                continue;
            }
            /* the note parser split off the key ID: put it back */
            raw = apr_palloc(p, 4 + sig->sig_len);
            raw[0] = (unsigned char)(sig->id >> 24);
            raw[1] = (unsigned char)(sig->id >> 16);
            raw[2] = (unsigned char)(sig->id >> 8);
            raw[3] = (unsigned char)sig->id;
            memcpy(raw + 4, sig->sig, sig->sig_len);
            if (notary_witness_sig_verify(p, wks[i], note->text, note->text_len, raw,
                                          4 + sig->sig_len, &t, detail)
                != 0) {
                if (detail) {
                    *detail = apr_psprintf(p, "witness %s: %s", wks[i]->name, *detail);
                }
                return -1;
            }
            good = 1;
        }
        if (!good) {
            if (detail) {
                *detail = apr_psprintf(p, "no cosignature of witness %s (%08x)", wks[i]->name,
                                       (unsigned)wks[i]->id);
            }
            return -1;
        }
    }
    return 0;
}

int notary_witness_post(apr_pool_t *p, const char *url, const char *body, apr_size_t len,
                        apr_interval_time_t timeout, long *status, char **resp,
                        apr_size_t *resp_len, const char **ctype, const char **err)
{
    /* a body with no Content-Type of its own: curl would say form data */
    static const char *const headers[] = { "Content-Type: text/plain; charset=utf-8", NULL };
    notary_http_reply r;

    if (notary_http_post(p, "the witness", apr_pstrcat(p, url, "/add-checkpoint", NULL), headers,
                         body, len, NOTARY_WITNESS_REPLY_MAX, timeout, &r, err)
        != 0) {
        return -1;
    }
    *status = r.status;
    *ctype = r.ctype;
    *resp = r.body;
    *resp_len = r.len;
    return 0;
}
