# HTTP/2 never reaches the notary. httpd refuses to start with h2 on a
# notary vhost (t/20, NOTARY01108); here a server offers h2 on another
# vhost with the very same TLS set-up, so mod_ssl lets a stream of that
# connection name the notary in :authority. The notary answers it 421
# (NOTARY02016) and relays nothing; HTTP/1.1 on its own connection works.
use strict;
use warnings;
use Test::More;
use NotaryTest;

my $http2 = "$NotaryTest::MODDIR/mod_http2.so";
plan skip_all => "no mod_http2 at $http2" unless -f $http2;   # part of Debian's apache2-bin

# the h2 stream naming the notary is refused (NOTARY02016); the other
# vhost's certificate names notary.test, not other.test (AH01909, at each
# start), and its DocumentRoot serves nothing (AH01630)
my $t = NotaryTest->new(allow_log => [qw(NOTARY02016 AH01909 AH01630)]);
$t->add_merchant('shop', 'ec256');
my ($cert, $key) = $t->notary_cert;
my $port = $t->notary_port;
# the notary vhost (NotaryTest::notary_vhost) is first on the address: the
# default; this one answers SNI other.test with h2, same TLS set-up
$t->start(global => <<"EOF");
LoadModule http2_module $http2
<VirtualHost 127.0.0.1:$port>
    ServerName other.test
    Protocols h2 http/1.1
    SSLEngine on
    SSLCertificateFile $cert
    SSLCertificateKeyFile $key
    SSLVerifyClient optional_no_ca
    DocumentRoot ${\ $t->dir }/htdocs
</VirtualHost>
EOF

my $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'HTTP/1.1 on the notary\'s own connection: admitted')
    or diag $r->{body}, $t->notary_error_log;

my $hits = scalar $t->backend_hits('shop');
my @h2 = (curl_args => ['--http2', '--insecure', '--resolve', "other.test:$port:127.0.0.1"],
          url => "https://other.test:$port/shop/static/hello.txt", consumer => 'alice',
          headers => ['Host: notary.test']);
$r = $t->request(@h2);
is($r->{status}, 421, 'an h2 stream naming the notary in :authority: 421 Misdirected Request')
    or diag $r->{curl_out}, $r->{raw_headers}, $r->{body};
like($r->{raw_headers}, qr{^HTTP/2 421}m, '... answered over HTTP/2');
like($t->notary_error_log, qr/NOTARY02016: refused GET \S+: HTTP\/2 is not relayed/, '... with NOTARY02016 in the error log');
is(scalar $t->backend_hits('shop'), $hits, '... and nothing reached the merchant');

$r = $t->request(@h2, url => "https://other.test:$port/shop/static/hello.txt?notary_token=$tok");
is($r->{status}, 421, 'the same with a valid contract token: 421, no session over h2');

# the h2 vhost itself is served as usual
$r = $t->request(curl_args => ['--http2', '--insecure', '--resolve', "other.test:$port:127.0.0.1"],
                 url => "https://other.test:$port/static/hello.txt");
isnt($r->{status}, 421, 'the other vhost\'s own requests are not refused by the notary')
    or diag $r->{body};

done_testing;
