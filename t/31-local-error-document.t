# An operator's ErrorDocument on a notary vhost is served from the vhost's
# own DocumentRoot when it lies outside every merchant's space: the server's
# configuration sent the request there (an internal redirect), not the
# consumer. A consumer asking for the same path directly still gets the
# notary's 404, and the notary's own refusals keep their reason.
use strict;
use warnings;
use Test::More;
use NotaryTest;

# refusals: unknown merchant (02004), no client certificate (02005), no
# contract (02009); the unreachable merchant: mod_proxy's connect failure
# (AH00957, AH01114)
my $t = NotaryTest->new(allow_log => [qw(NOTARY02004 NOTARY02005 NOTARY02009 AH00957 AH01114)]);
$t->add_merchant('shop', 'ec256');
my $docs = "$t->{dir}/notary-docs";
mkdir $_ or die "mkdir $_: $!" for $docs, "$docs/errors";
NotaryTest::write_file("$docs/errors/503.html", "<p>local page: the merchant is unreachable</p>\n");
NotaryTest::write_file("$docs/errors/404.html", "<p>local page: not found</p>\n");
$t->start(extra => <<"EOF");
    DocumentRoot $docs
    <Directory $docs>
        Require all granted
    </Directory>
    ErrorDocument 503 /errors/503.html
    ErrorDocument 404 /errors/404.html
    ErrorDocument 403 /shop/static/hello.txt
EOF

my $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'alice admitted at shop') or diag $r->{body};

# the merchant's backend goes away: mod_proxy's 503, with the local page
$t->_stop_one('merchants');
$r = $t->request(path => '/shop/static/hello.txt', consumer => 'alice');
is($r->{status}, 503, 'merchant down: 503');
is($r->{body}, "<p>local page: the merchant is unreachable</p>\n",
   '... with the operator\'s local ErrorDocument') or diag $r->{body};
unlike($t->notary_error_log, qr/NOTARY02004: refused GET \/errors\//,
       '... which the notary did not take for a merchant named "errors"');

# the same path asked for directly is no local file: merchants only
$r = $t->request(path => '/errors/503.html', consumer => 'alice');
is($r->{status}, 404, 'the error page asked for directly: 404');
like($r->{body}, qr/no merchant 'errors' is registered/,
     '... the notary\'s refusal with its reason, not the local page');
like($t->notary_error_log, qr/NOTARY02004: refused GET \/errors\/503\.html/,
     '... logged with its number');

# the notary's own refusals keep their reason over an ErrorDocument
$r = $t->request(path => '/shop/static/hello.txt', consumer => 'bob');
is($r->{status}, 403, 'bob without a contract session: 403');
like($r->{body}, qr/no contract token and no contract session/,
     '... with the reason, not the ErrorDocument (which points into a merchant)');
$r = $t->request(path => '/shop/static/hello.txt');
is($r->{status}, 403, 'no client certificate: 403');
like($r->{body}, qr/a TLS client certificate is required/, '... with the reason');

done_testing;
