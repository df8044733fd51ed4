# The record store under load and when it is down: 50 concurrent matched
# exchanges give exactly 50 intact rows; with PostgreSQL stopped matched
# messages are refused and unmatched ones flow; recording resumes when it
# is back, without restarting httpd.
use strict;
use warnings;
use Test::More;
use Digest::SHA qw(sha256);
use NotaryTest;

# the database down: records not committed (03006, 03011), the refused
# request not passed on (AH01084, AH01097)
my $t = NotaryTest->new(allow_log => [qw(NOTARY03006 NOTARY03011 AH01084 AH01097)]);
my $m = $t->add_merchant('shop', 'ec256');
my $page = "<html><body><p>I accept the CONTRACT-TERMS.</p>" . ('.' x 3000) . "</body></html>\n";
NotaryTest::write_file("$m->{docroot}/static/contract.html", $page);
# the default bound: a fresh cluster on a loaded 2-core machine may take a
# few seconds to open its first connections under the burst below
$t->start(extra => $t->db_directive(timeout => 10)
                 . "    NotaryRecord shop contains \"CONTRACT-TERMS\"\n");

my $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'alice admitted');
$r = $t->request(path => "/shop/static/contract.html?n=0", consumer => 'alice');
is($r->{status}, 200, 'one matched exchange before the burst');

# ---- 50 concurrent matched exchanges
my @kids;
for my $i (1 .. 50) {
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        my $res = $t->request(path => "/shop/static/contract.html?n=$i", consumer => 'alice');
        my $ok = $res->{status} == 200 && $res->{body} eq $page;
        # say what went wrong: the parent prints it with the error log
        NotaryTest::write_file("$t->{dir}/kid.$i", "request n=$i: status $res->{status}, "
            . "curl exit $res->{curl_exit} ($res->{curl_out}), body " . length($res->{body})
            . " bytes\n") unless $ok;
        POSIX::_exit($ok ? 0 : 1);
    }
    push @kids, $pid;
}
my $bad = 0;
for (@kids) { waitpid($_, 0); $bad++ if $? }
is($bad, 0, '50 concurrent matched exchanges all delivered intact')
    or diag(join('', map { NotaryTest::read_file($_) } glob("$t->{dir}/kid.*")),
            "notary error log:\n", $t->notary_error_log);
my @rows = $t->records("uri LIKE '/static/contract.html?n=%' AND uri <> '/static/contract.html?n=0'");
is(scalar @rows, 50, 'exactly 50 rows');
is(scalar(grep { $_->{body} eq $page && $_->{body_sha256} eq sha256($page) } @rows), 50,
   '... each with the body as relayed');
my %ex = map { $_->{exchange_id} => 1 } @rows;
is(scalar keys %ex, 50, '... each its own exchange');

# ---- the database goes down
$t->pg->stop;
my $count_hits = sub { scalar(() = $t->backend_hits('shop')) };
$r = $t->request(path => '/shop/static/contract.html?down=1', consumer => 'alice');
is($r->{status}, 503, 'database down: a matched response is refused with 503');
like($r->{body}, qr/record could not be committed/, '... saying why');
unlike($r->{body}, qr/CONTRACT-TERMS/, '... and none of the matched body is delivered');
like($t->notary_error_log, qr/NOTARY03006: response of exchange \w+ matched rule .* not committed: .*cannot connect/,
     '... the error log names the cause');
$r = $t->request(path => '/shop/static/hello.txt?down=2', consumer => 'alice');
is($r->{status}, 200, 'database down: unmatched traffic flows');
is($r->{body}, "hello from shop\n", '... intact');
$r = $t->request(path => '/shop/echo?down=3', consumer => 'alice', data => 'sign here: CONTRACT-TERMS',
                 headers => ['Content-Type: text/plain']);
is($r->{status}, 503, 'database down: a matched request is refused with 503');
$t->backend_sync('shop');
ok(!grep({ m{"POST /echo\?down=3 HTTP/1.1" 200} } $t->backend_hits('shop')),
   '... and the merchant never answered it as complete');

# ---- the database comes back: recording resumes without restarting httpd
$t->pg->start_again;
$r = $t->request(path => '/shop/static/contract.html?up=1', consumer => 'alice');
is($r->{status}, 200, 'database back: the matched response is delivered');
is(scalar($t->records("uri = '/static/contract.html?up=1'")), 1, '... and recorded');
$r = $t->request(path => '/shop/echo?up=2', consumer => 'alice', data => 'sign here: CONTRACT-TERMS',
                 headers => ['Content-Type: text/plain']);
is($r->{status}, 200, 'database back: the matched request is delivered');
is(scalar($t->records("uri = '/echo?up=2'")), 2, '... and both directions recorded');
is(scalar($t->records("uri LIKE '%down=%'")), 0, 'nothing was recorded in part while it was down');

done_testing;
