# Contract sessions: after a token verifies, (consumer certificate, merchant)
# is admitted without a token until exp, in every httpd child, as long as the
# backend presents the key the token was verified with.
use strict;
use warnings;
use Test::More;
use NotaryTest;

# refusals: no session (02009), the merchant's key changed (02012, 02014),
# with mod_proxy's lines for the request it could not pass on (AH01084,
# AH01097)
my $t = NotaryTest->new(allow_log => [qw(NOTARY02009 NOTARY02012 NOTARY02014 AH01084 AH01097)]);
$t->add_merchant('shop', 'ec256');
$t->add_merchant('books', 'ed25519');
# children are replaced every 3 connections: a session must live outside them
$t->start(max_conn_per_child => 3, start_servers => 2);

my $tok = $t->link_token(merchant => 'shop', consumer => 'alice', jti => 'order-1');
my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'the contract link admits alice') or diag $r->{body};

my (%pids, @fail);
for my $i (1 .. 24) {
    my $r = $t->request(path => '/shop/static/hello.txt', consumer => 'alice');
    push @fail, "request $i: $r->{status} $r->{body}" unless $r->{status} == 200;
}
is_deeply(\@fail, [], '24 token-less requests on new connections are all admitted');
$pids{(split ' ', $_)[0]}++ for grep { m{GET /shop/static/hello.txt HTTP} } split /\n/, $t->notary_access_log;
cmp_ok(scalar(keys %pids), '>=', 5, 'they were served by many different children')
    or diag explain \%pids;

$t->refused_ok('a session with one merchant admits nothing at another', status => 403, merchant => 'books',
               lognum => '02009', request => { path => '/books/static/hello.txt', consumer => 'alice' });
$t->refused_ok('a session of one consumer admits no other consumer', status => 403, merchant => 'shop',
               lognum => '02009', request => { path => '/shop/static/hello.txt', consumer => 'bob' });

# expiry: a 3 s token gives a 3 s session
my $short = $t->link_token(merchant => 'books', consumer => 'alice', lifetime => 3);
$r = $t->request(path => "/books/static/hello.txt?notary_token=$short", consumer => 'alice');
is($r->{status}, 200, 'a short-lived token admits');
$r = $t->request(path => '/books/static/hello.txt', consumer => 'alice');
is($r->{status}, 200, '... and its session admits right away');
sleep 4;
$t->refused_ok('the session ends at the token\'s exp', status => 403, merchant => 'books',
               lognum => '020(09|10)', reason => qr/(expired|no contract session)/,
               request => { path => '/books/static/hello.txt', consumer => 'alice' });
$t->stop;

# Pooled backend connections: one child, so the second request reuses the
# first one's connection (same source port at the backend), and the gate
# checks on the reused connection without a new handshake.
$t->start(server_limit => 1, start_servers => 1);
my $tok2 = $t->link_token(merchant => 'shop', consumer => 'carol');
$r = $t->request(path => "/shop/echo?notary_token=$tok2", consumer => 'carol');
is($r->{status}, 200, 'carol admitted');
$r = $t->request(path => '/shop/echo', consumer => 'carol');
is($r->{status}, 200, 'carol\'s session admits');
my @ports = map { /(\d+)\s*$/ ? $1 : () } $t->backend_hits('shop');
is($ports[-1], $ports[-2], '... over the pooled backend connection of the first request')
    or diag explain \@ports;
my @p = split /\./, $t->link_token(merchant => 'shop', consumer => 'carol');
substr($p[2], 3, 1) = substr($p[2], 3, 1) eq 'A' ? 'B' : 'A';
$t->refused_ok('a bad signature is refused on the pooled connection', status => 403, lognum => '02012',
               reason => qr/signature/,
               request => { path => "/shop/echo?notary_token=" . join('.', @p), consumer => 'carol' });
$t->stop;

# The merchant's backend changes its key while the notary keeps running:
# sessions verified with the old key admit nothing more.
$t->start;
my $tok3 = $t->link_token(merchant => 'shop', consumer => 'dave');
$r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok3", consumer => 'dave');
is($r->{status}, 200, 'dave admitted');
$t->restart_merchants;
$r = $t->request(path => '/shop/static/hello.txt', consumer => 'dave');
is($r->{status}, 200, 'the session survives a restart of the merchant\'s backend (same key)');
$t->rekey_merchant('shop');
$t->restart_merchants;
$t->refused_ok('after the merchant changed its key, the old session admits nothing', status => 403,
               lognum => '02014', reason => qr/another key/,
               request => { path => '/shop/static/hello.txt', consumer => 'dave' });
$t->refused_ok('a token signed with the old key is refused by the new backend key', status => 403,
               lognum => '02012', reason => qr/signature/,
               request => { path => "/shop/static/hello.txt?notary_token=$tok3", consumer => 'dave' });
my $tok4 = $t->link_token(merchant => 'shop', consumer => 'dave');
$r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok4", consumer => 'dave');
is($r->{status}, 200, 'a token signed with the new key admits again');
$r = $t->request(path => '/shop/static/hello.txt', consumer => 'dave');
is($r->{status}, 200, '... and renews the session for the new key');
$t->stop;

# Another socache provider: sessions in mod_socache_dbm.
my $dbm = $t->dir . '/run/sessions';
$t->start(global => "LoadModule socache_dbm_module $NotaryTest::MODDIR/mod_socache_dbm.so\nNotarySessionCache dbm:$dbm\n");
my $tok5 = $t->link_token(merchant => 'books', consumer => 'erin');
$r = $t->request(path => "/books/static/hello.txt?notary_token=$tok5", consumer => 'erin');
is($r->{status}, 200, 'NotarySessionCache dbm: admitted by token') or diag $t->error_log;
$r = $t->request(path => '/books/static/hello.txt', consumer => 'erin');
is($r->{status}, 200, '... and by the session stored in dbm');
ok(-e "$dbm" || -e "$dbm.pag" || -e "$dbm.db" || glob("$dbm*"), '... which is on disk');

done_testing;
