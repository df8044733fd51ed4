/* Unit tests of notary_target: the raw request-target split for routing. */
#include "tap.h"
#include "notary_target.h"

#include <apr_general.h>
#include <stdlib.h>

static apr_pool_t *pool;

static void split_is(const char *target, const char *name, const char *rest)
{
    const char *n = NULL, *r = NULL, *err = NULL;
    apr_status_t rv = notary_target_split(pool, target, &n, &r, &err);

    ok(rv == APR_SUCCESS, "%s splits%s%s", target, err ? ": " : "", err ? err : "");
    is_str(n, name, "%s: merchant name", target);
    is_str(r, rest, "%s: forwarded rest", target);
}

static void refused(const char *target, const char *why)
{
    const char *n = NULL, *r = NULL, *err = NULL;
    apr_status_t rv = notary_target_split(pool, target, &n, &r, &err);

    ok(rv == APR_EINVAL, "%s is refused", target);
    is_str(err, why, "%s: the reason", target);
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);

    split_is("/shop/static/hello.txt", "shop", "/static/hello.txt");
    split_is("/shop", "shop", "/");
    split_is("/shop/", "shop", "/");
    split_is("/shop/a?notary_token=x&b=1", "shop", "/a");
    split_is("/shop/a#frag", "shop", "/a");
    /* decoded once by httpd already: forwarded as the consumer wrote it */
    split_is("/pa/%252e%252e/pb/page.txt", "pa", "/%252e%252e/pb/page.txt");
    split_is("/shop/x%3fy=1", "shop", "/x%3fy=1");
    split_is("/shop/a%2520b", "shop", "/a%2520b");
    split_is("/shop/a%25b", "shop", "/a%25b");
    split_is("/shop/my%20terms.pdf", "shop", "/my%20terms.pdf");
    split_is("/shop/a%2Fb", "shop", "/a%2Fb");
    split_is("/shop/%E5%A5%91", "shop", "/%E5%A5%91");
    /* RFC 3986 equivalences: unreserved decoded, dot segments removed */
    split_is("/%73hop/%7Euser", "shop", "/~user");
    split_is("/shop/a/%2e%2e/b", "shop", "/b");
    split_is("/shop/a/%2E%2E/b", "shop", "/b");
    split_is("/shop/a/.%2e/b", "shop", "/b");
    split_is("/shop/a/./b/.", "shop", "/a/b/");
    split_is("/shop/a/b/..", "shop", "/a/");
    split_is("/pa/../pb/x", "pb", "/x");
    split_is("/pa/%2e%2e/pb/x", "pb", "/x");
    split_is("/../../shop/x", "shop", "/x");
    split_is("/shop/a//b", "shop", "/a//b");
    split_is("/shop/a/b/../../../../pb/x", "pb", "/x"); /* the name is routed after the dots */

    refused("shop/x", "the path does not start with '/'");
    refused("https://evil.example/shop/x", "the path does not start with '/'");
    refused("*", "the path does not start with '/'");
    refused("", "the path does not start with '/'");
    refused("/shop/%", "malformed percent-encoding");
    refused("/shop/%4", "malformed percent-encoding");
    refused("/shop/%zz", "malformed percent-encoding");
    /* no name: routed nowhere (404 at the notary) */
    split_is("/", "", "/");
    split_is("//shop/x", "", "/shop/x");
    split_is("/?a=b", "", "/");
    split_is("/shop/..", "", "/");

    ok(notary_target_within("/pa", "/pa"), "/pa is within /pa");
    ok(notary_target_within("/pa", "/pa/x"), "/pa/x is within /pa");
    ok(notary_target_within("/pa/", "/pa/x"), "/pa/x is within /pa/");
    ok(!notary_target_within("/pa", "/pab"), "/pab is not within /pa");
    ok(!notary_target_within("/pa", "/pb/x"), "/pb/x is not within /pa");
    ok(notary_target_within("", "/anything"), "an empty base contains every path");
    ok(notary_target_within(NULL, "/anything"), "no base (a merchant URL without a path) contains every path");

    apr_pool_destroy(pool);
    apr_terminate();
    return tap_done();
}
