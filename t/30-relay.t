# The notary relays registered merchants over mutual TLS, routes by name
# only, and refuses what is not a notary request before any backend sees it.
use strict;
use warnings;
use Test::More;
use MIME::Base64 qw(encode_base64);
use NotaryTest;

# refused, as the tests ask: CONNECT (02001), an absolute URI (02002), an
# unknown merchant (02004), no client certificate (02005)
my $t = NotaryTest->new(allow_log => [qw(NOTARY02001 NOTARY02002 NOTARY02004 NOTARY02005)]);
$t->add_merchant('shop', 'ec256');
$t->add_merchant('books', 'rsa');
$t->start;

# admit alice at both merchants (contract sessions; tokens are t/40-token.t's)
for my $m (qw(shop books)) {
    my $tok = $t->link_token(merchant => $m, consumer => 'alice');
    my $r = $t->request(path => "/$m/static/hello.txt?notary_token=$tok", consumer => 'alice');
    is($r->{status}, 200, "a contract link admits alice at $m") or diag $r->{body}, $t->notary_error_log;
}

my $r = $t->request(path => '/shop/static/hello.txt', consumer => 'alice');
is($r->{status}, 200, 'GET through the notary: 200');
is($r->{body}, "hello from shop\n", '... with the backend body byte for byte');

$r = $t->request(path => '/books/static/hello.txt', consumer => 'alice');
is($r->{body}, "hello from books\n", 'each name routes to its own merchant');

$r = $t->request(path => '/shop/echo/deep/path?x=1&y=%41%2F&z', consumer => 'alice');
like($r->{body}, qr{^uri: /echo/deep/path\?x=1&y=%41%2F&z$}m,
     'path and query reach the backend unchanged (encoding kept)') or diag $r->{body};
like($r->{body}, qr{^method: GET$}m, '... as a GET');

my $payload = join('', map { chr($_ % 256) } 0 .. 70000);
$r = $t->request(path => '/shop/echo', consumer => 'alice', data => $payload,
                 headers => ['Content-Type: application/octet-stream']);
like($r->{body}, qr/^body-length: 70001$/m, 'a POST body of 70001 bytes reaches the backend whole');
ok(index($r->{body}, "body: $payload\n") >= 0, '... byte for byte');

# The notary authenticates itself to the backend with its own certificate.
my @hits = $t->backend_hits('shop');
like($hits[-1], qr/^CN=notary\.test proxy client /,
     'the backend sees the notary\'s SSLProxyMachineCertificateFile certificate');

# RFC 9440 Client-Cert: the consumer's certificate, set by the notary only.
my ($acert) = $t->consumer('alice');
my $der = `openssl x509 -in $acert -outform DER`;
my $want = ':' . encode_base64($der, '') . ':';
$r = $t->request(path => '/shop/echo', consumer => 'alice');
like($r->{body}, qr/^header client-cert: \Q$want\E$/m,
     'the backend receives the consumer certificate in Client-Cert (RFC 9440)') or diag $r->{body};
$r = $t->request(path => '/shop/echo', consumer => 'alice',
                 headers => ['Client-Cert: :Zm9yZ2Vk:', 'Client-Cert-Chain: :Zm9yZ2Vk:']);
like($r->{body}, qr/^header client-cert: \Q$want\E$/m, 'a Client-Cert sent by the consumer is replaced');
unlike($r->{body}, qr/Zm9yZ2Vk/, '... and Client-Cert-Chain from the consumer is dropped');

# Refusals: nothing reaches any backend.
$t->refused_ok('no client certificate: 403', status => 403, lognum => '02005',
               reason => qr/TLS client certificate is required/,
               request => { path => '/shop/static/hello.txt' });
$t->refused_ok('unregistered merchant name: 404', status => 404, lognum => '02004',
               reason => qr/no merchant 'nosuch' is registered/,
               request => { path => '/nosuch/static/hello.txt', consumer => 'alice' });
$t->refused_ok('dot segments cannot escape the merchant name', status => 404, lognum => '02004',
               request => { path => '/shop/../nosuch/static/hello.txt', consumer => 'alice',
                            curl_args => ['--path-as-is'] });
# percent-encoded dots are dots (httpd decodes unreserved characters before
# removing dot segments): they cannot escape the merchant name either
for my $path ('/shop/%2e%2e/nosuch/static/hello.txt', '/shop/%2E%2E/nosuch/static/hello.txt',
              '/shop/.%2e/nosuch/static/hello.txt', '/shop/static/%2e%2e/%2e%2e/nosuch/hello.txt') {
    $t->refused_ok("percent-encoded dot segments cannot escape the merchant name ($path)",
                   status => 404, lognum => '02004', reason => qr/no merchant 'nosuch' is registered/,
                   request => { path => $path, consumer => 'alice', curl_args => ['--path-as-is'] });
}
# nor can an encoded slash make one path segment look like two
$t->refused_ok('an encoded slash in the merchant name: 404', status => 404,
               request => { path => '/shop%2f..%2fnosuch/static/hello.txt', consumer => 'alice',
                            curl_args => ['--path-as-is'] });
# dot segments that stay inside the merchant's space reach that merchant,
# with the path as the merchant would resolve it
$r = $t->request(path => '/shop/static/%2e%2e/static/./hello.txt', consumer => 'alice',
                 curl_args => ['--path-as-is']);
is($r->{status}, 200, 'dot segments inside the merchant\'s space are resolved');
$t->backend_sync('shop');   # the access log is written after the response
like(($t->backend_hits('shop'))[-1], qr{"GET /static/hello\.txt HTTP/1\.1" 200},
     '... and the merchant is asked for the resolved path');
$t->refused_ok('root of the notary: 404', status => 404,
               request => { path => '/', consumer => 'alice' });

for my $case (["GET https://127.0.0.1:" . $t->merchant('shop')->{port} . "/static/hello.txt HTTP/1.1\r\nHost: notary.test\r\nConnection: close\r\n\r\n", 'absolute URI to the backend'],
              ["GET https://notary.test/shop/static/hello.txt HTTP/1.1\r\nHost: notary.test\r\nConnection: close\r\n\r\n", 'absolute URI naming the notary itself'],
              ["GET http://example.org/ HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n", 'absolute URI to a foreign host']) {
    my ($req, $name) = @$case;
    $t->refused_ok("$name: 400", status => 400, merchant => 'shop',
                   request => sub { my ($st, $resp) = $t->raw_request($req);
                                    my ($body) = $resp =~ /\r\n\r\n(.*)\z/s;
                                    return { status => $st, body => $body // '' } });
}
$t->refused_ok('CONNECT is never relayed', status => 405, merchant => 'shop',
               request => sub { my ($st, $resp) = $t->raw_request(
                   "CONNECT 127.0.0.1:" . $t->merchant('shop')->{port} . " HTTP/1.1\r\nHost: notary.test\r\nConnection: close\r\n\r\n");
                   return { status => $st, body => $resp } });
is(scalar(() = $t->backend_hits('books')), 2, 'books saw only its two admitted requests');

done_testing;
