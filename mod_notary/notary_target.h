/* notary_target: the consumer's request-target, split for routing, with no
 * httpd. httpd's core has already percent-decoded r->parsed_uri.path in
 * place by translate time; forwarding that would decode the path a second
 * time at the merchant (%252e%252e becomes a dot segment there, %3f a
 * query). So the notary routes and forwards from the raw target instead,
 * normalised only in ways RFC 3986 calls equivalent (section 6.2.2):
 * percent-encoded unreserved characters decoded, dot segments removed.
 * Everything else stays exactly as the consumer wrote it. */
#ifndef NOTARY_TARGET_H
#define NOTARY_TARGET_H

#include <apr_pools.h>
#include <apr_errno.h>

/* target: an origin-form request-target ("/NAME/rest?query"), as sent.
 * On success *name is the first path segment (the merchant name) and
 * *rest what follows it, starting with '/' ("/" when nothing does; the
 * name is empty for "/" or "//x", which names no merchant); the query is
 * not part of either. Both in p. Returns APR_SUCCESS, or
 * APR_EINVAL with *err (static text) for a target that is not an
 * origin-form path or has a malformed percent-encoding. */
apr_status_t notary_target_split(apr_pool_t *p, const char *target,
                                 const char **name, const char **rest,
                                 const char **err);

/* The normalisation above alone, of a path (no query): what a merchant
 * that normalises as RFC 3986 says makes of it. NULL and *err if the
 * percent-encoding is malformed or the path does not start with '/'. */
const char *notary_target_normalize(apr_pool_t *p, const char *path,
                                    apr_size_t len, const char **err);

/* 1 if path (already normalised) is base itself or lies below it
 * ("/pa", "/pa/x"; not "/pab"). An empty base contains every path. */
int notary_target_within(const char *base, const char *path);

#endif
