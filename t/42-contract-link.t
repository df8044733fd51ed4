# The real flow: the consumer opens the merchant's contract-start page over
# mutual TLS, gets a contract link made by notary-link, follows it through
# the notary, and then uses the merchant's relative links without a token.
use strict;
use warnings;
use Test::More;
use NotaryTest;

# a link for another consumer is refused (02008)
my $t = NotaryTest->new(allow_log => [qw(NOTARY02008)]);
my $m = $t->add_merchant('shop', 'ec256');
NotaryTest::write_file("$m->{docroot}/static/terms.html",
                   "<h1>Terms</h1><a href=\"contract.xml\">the contract</a>\n");
$t->start;
my ($ccert, $ckey) = $t->consumer('alice');
my $notary = 'notary.test:' . $t->notary_port;

# 1. the merchant's start page, directly, over mutual TLS
my $start = $t->request(url => $t->merchant_url('shop') . '/start?path=/static/terms.html',
                        consumer => 'alice', curl_args => ['--insecure']);
is($start->{status}, 303, 'the merchant\'s contract-start page answers with a redirect');
my $link = $start->{headers}{location} // '';
like($link, qr{^https://notary\.test:\d+/shop/static/terms\.html\?notary_token=[\w-]+\.[\w-]+\.[\w-]+$},
     '... to a contract link on the notary');

# 2. follow it through the notary
my $r = $t->request(url => $link, consumer => 'alice');
is($r->{status}, 200, 'the contract link admits the consumer');
like($r->{body}, qr{<h1>Terms</h1>}, '... and relays the merchant\'s page');

# 3. a relative link from that page works without a token (contract session)
$r = $t->request(path => '/shop/static/contract.xml', consumer => 'alice');
is($r->{status}, 200, 'the page\'s relative link is admitted by the contract session');
like($r->{body}, qr{<contract merchant="shop"/>}, '... with the merchant\'s document');

# another consumer cannot reuse alice's link
$t->refused_ok('alice\'s link does not admit bob', status => 403, reason => qr/certificate|bound/,
               request => { url => $link, consumer => 'bob' });

# without a client certificate the merchant issues no link
$r = $t->request(url => $t->merchant_url('shop') . '/start', curl_args => ['--insecure']);
is($r->{status}, 403, 'no client certificate at the merchant: no link');

# curl -L walks the whole flow in one go, like a browser
my $out = `curl -sS -L --max-time 20 --cacert @{[$t->ca]} --insecure --cert $ccert --key $ckey --resolve $notary:127.0.0.1 -w '\%{http_code} \%{url_effective}' -o /dev/null '@{[$t->merchant_url('shop')]}/start?path=/static/contract.xml' 2>&1`;
like($out, qr{^200 https://notary\.test:\d+/shop/static/contract\.xml\?notary_token=}, 'a client that follows redirects ends at the contract through the notary')
    or diag $out;

# notary-link --version names the tool, the package and configure's version
{
    my $out = `@{[NotaryTest::notary_link()]} --version 2>&1`;
    is($? >> 8, 0, 'notary-link --version exits 0');
    my ($version) = `grep -m1 '^#define PACKAGE_VERSION' $NotaryTest::BUILDDIR/config.h` =~ /"([^"]+)"/;
    ok(defined $version, "config.h defines PACKAGE_VERSION under $NotaryTest::BUILDDIR");
    is($out, "notary-link (mod_notary) " . ($version // '?') . "\n",
       'notary-link --version prints "notary-link (mod_notary) VERSION" from config.h');
    my $help = `@{[NotaryTest::notary_link()]} --help 2>&1`;
    like($help, qr/^\s+--version\s/m, 'notary-link --help lists --version');
}

done_testing;
