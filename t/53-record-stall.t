# The record store stalls instead of refusing: a table lock held by another
# session, a host that accepts connections and never answers. Matched
# messages are refused within NotaryDatabaseTimeout with a clear error,
# nothing is recorded that was not delivered, unmatched traffic flows, and
# recording resumes once the stall ends.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use Time::HiRes ();
use NotaryTest;

# the store stalls: records not committed (03006, 03011), the refused
# request not passed on (AH01084, AH01097)
# NOTARY01201: the start-up check finds the silent database host unreachable
# NOTARY03303: the silent first host of two skipped
my $t = NotaryTest->new(allow_log => [qw(NOTARY03006 NOTARY03011 NOTARY01201 NOTARY03303 AH01084 AH01097)]);
my $m = $t->add_merchant('shop', 'ec256');
my $page = "<html><body><p>I accept the CONTRACT-TERMS.</p></body></html>\n";
NotaryTest::write_file("$m->{docroot}/static/contract.html", $page);
my $rule = "    NotaryRecord shop contains \"CONTRACT-TERMS\"\n";
$t->start(extra => $t->db_directive(timeout => 2) . $rule);

my $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'alice admitted');
$r = $t->request(path => '/shop/static/contract.html?before=1', consumer => 'alice');
is($r->{status}, 200, 'a matched exchange before the stall is delivered');
is(scalar($t->records("uri = '/static/contract.html?before=1'")), 1, '... and recorded');

# ---- another session holds a lock on the records table
my $dbh = $t->pg->dbh(user => 'postgres');
$dbh->begin_work;
$dbh->do('LOCK TABLE notary.records IN ACCESS EXCLUSIVE MODE');

$r = $t->request(path => '/shop/static/contract.html?stall=1', consumer => 'alice');
is($r->{status}, 503, 'table locked: a matched response is refused with 503');
like($r->{body}, qr/record could not be committed/, '... saying why');
unlike($r->{body}, qr/CONTRACT-TERMS/, '... and none of the matched body is delivered');
# the server cancels the statement (statement_timeout is 90% of the
# bound), or keeps out a row it reaches past that; when connecting took
# part of the time, the notary's own deadline may come first
like($t->notary_error_log,
     qr/NOTARY03006: response of exchange \w+ matched rule .* not committed: .*(?:statement timeout \(SQLSTATE 57014\)|known not written|no answer within 2000 ms)/,
     '... the error log names the timeout');

$r = $t->request(path => '/shop/echo?stall=2', consumer => 'alice', data => 'sign here: CONTRACT-TERMS',
                 headers => ['Content-Type: text/plain']);
is($r->{status}, 503, 'table locked: a matched request is refused with 503');
$t->backend_sync('shop');
ok(!grep({ m{"POST /echo\?stall=2 HTTP/1.1" 200} } $t->backend_hits('shop')),
   '... and the merchant never answered it as complete');

# several at once: they may share one transaction, and share its outcome
my @kids;
for my $i (1 .. 4) {
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        my $res = $t->request(path => "/shop/static/contract.html?stall=c$i", consumer => 'alice');
        POSIX::_exit($res->{status} == 503 ? 0 : 1);
    }
    push @kids, $pid;
}
my $bad = 0;
for (@kids) { waitpid($_, 0); $bad++ if $? }
is($bad, 0, 'table locked: 4 concurrent matched responses are all refused with 503');

$r = $t->request(path => '/shop/static/hello.txt?stall=3', consumer => 'alice');
is($r->{status}, 200, 'table locked: unmatched traffic flows');
is($r->{body}, "hello from shop\n", '... intact');

$dbh->rollback;
$dbh->disconnect;
$r = $t->request(path => '/shop/static/contract.html?after=1', consumer => 'alice');
is($r->{status}, 200, 'lock released: the matched response is delivered');
is(scalar($t->records("uri = '/static/contract.html?after=1'")), 1, '... and recorded');
is(scalar($t->records("uri LIKE '%stall=%'")), 0,
   'nothing refused during the stall was recorded (the server cancelled each statement)');

# ---- a database host that accepts connections and never answers
my $hole = IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.1', LocalPort => 0,
                                 Proto => 'tcp', ReuseAddr => 1) or die "listen: $!";
my $hport = $hole->sockport;
$t->restart(extra => "    NotaryDatabase \"host=127.0.0.1 port=$hport dbname=notary user=notary\"\n"
                   . "    NotaryDatabaseTimeout 1\n" . $rule);
$tok = $t->link_token(merchant => 'shop', consumer => 'alice');
$r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'silent database host: unmatched traffic flows');
$r = $t->request(path => '/shop/static/contract.html?hole=1', consumer => 'alice');
is($r->{status}, 503, 'silent database host: a matched response is refused with 503');
unlike($r->{body}, qr/CONTRACT-TERMS/, '... and none of the matched body is delivered');
like($t->notary_error_log,
     qr/NOTARY03006: response of exchange \w+ matched rule .* not committed: cannot connect to the record store: no answer within 1000 ms/,
     '... the error log says the connection got no answer within NotaryDatabaseTimeout');

# ---- the same silent host first in a multi-host NotaryDatabase, the real
# one second: the silent host costs its share (3 s / 2 hosts), then the
# record commits on the second, and a warning names the skipped host
my $real = $t->pg->conninfo('notary');
my ($rhost) = $real =~ /\bhost=(\S+)/;
my ($rport) = $real =~ /\bport=(\d+)/;
$t->restart(extra => "    NotaryDatabase \"host=127.0.0.1,$rhost port=$hport,$rport dbname=notary "
                   . "user=notary target_session_attrs=read-write\"\n"
                   . "    NotaryDatabaseTimeout 3\n" . $rule);
$tok = $t->link_token(merchant => 'shop', consumer => 'alice');
$r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'silent first of two hosts: alice admitted');
my $t0 = Time::HiRes::time();
$r = $t->request(path => '/shop/static/contract.html?hosts=1', consumer => 'alice');
my $took = Time::HiRes::time() - $t0;
is($r->{status}, 200, 'silent first of two hosts: a matched response is delivered, not 503');
like($r->{body}, qr/CONTRACT-TERMS/, '... whole');
is(scalar($t->records("uri = '/static/contract.html?hosts=1'")), 1, '... and recorded');
ok($took > 1.3 && $took < 2.9, sprintf('... after the silent host\'s share of 1.5 s, within the '
                                       . '3 s bound (took %.2f s)', $took));
like($t->notary_error_log,
     qr/NOTARY03303: record store: host 127\.0\.0\.1 port $hport of NotaryDatabase did not answer within 1\d\d\d ms; trying the next host/,
     '... the error log names the skipped host (NOTARY03303)');
# more, on whichever child: each either reuses its pooled connection to
# the second host or pays the silent host's share once (per child)
my @status;
for my $i (1 .. 3) {
    $r = $t->request(path => "/shop/static/contract.html?hosts=n$i", consumer => 'alice');
    push @status, $r->{status};
}
is_deeply(\@status, [200, 200, 200], 'three more matched responses delivered');
is(scalar($t->records("uri LIKE '/static/contract.html?hosts=n%'")), 3, '... and recorded');
close $hole;

done_testing;
