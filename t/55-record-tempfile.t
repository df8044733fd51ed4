# A matched body larger than what a record keeps in memory (256 KiB) goes
# to a temporary file. When that file cannot be written -- here a file-size
# limit on the notary's processes, as a full disk would do -- the message
# is refused: its last byte never reaches the receiver, nothing is
# recorded in part, the error log says why, and the notary goes on.
use strict;
use warnings;
use Test::More;
use NotaryTest;

system('prlimit --version >/dev/null 2>&1') == 0
    or BAIL_OUT('prlimit (util-linux) is needed to limit the notary\'s file size');

# bodies that cannot be kept (03009, 03010, 03012, 03013); the refused
# request body cut short at the notary and the merchant's CGI (AH02608,
# AH10154, AH01225)
my $t = NotaryTest->new(allow_log => [qw(NOTARY03009 NOTARY03010 NOTARY03012 NOTARY03013 AH02608 AH10154 AH01225)]);
my $m = $t->add_merchant('shop', 'ec256');
my $doc = $m->{docroot};
my $MiB = 1024 * 1024;
# 2 MiB with the keyword up front: past memory, and past the limit below
my $big = 'contract ' . ('c' x (2 * $MiB));
NotaryTest::write_file("$doc/static/big.txt", $big);
NotaryTest::write_file("$doc/static/small.txt", "contract small\n");
$t->start(extra => $t->db_directive . "    NotaryRecord shop contains \"contract\"\n"
                 . "    NotaryMaxRecordSize 16M\n");
my $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
my $r = $t->request(path => "/shop/static/small.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'alice admitted');

# before the limit: the same bodies are recorded through their temp files
$r = $t->request(path => '/shop/static/big.txt?before', consumer => 'alice');
is($r->{status}, 200, 'a 2 MiB matched response: 200');
NotaryTest::is_bytes($r->{body}, $big, '... relayed whole');
my @rows = $t->records("uri = '/static/big.txt?before'");
is(scalar @rows, 1, '... and recorded');
NotaryTest::is_bytes(@rows ? $rows[0]{body} : undef, $big, '... whole (through a temporary file)');
$r = $t->request(path => '/shop/echo?before', consumer => 'alice', data => $big,
                 headers => ['Content-Type: text/plain']);
like($r->{body}, qr/^body-length: ${\ length $big}$/m, 'a 2 MiB matched request is relayed');
is(scalar($t->records("uri = '/echo?before' AND direction = 'request'")), 1, '... and recorded');

# the same notary, restarted with 1 MiB as the largest file it may write
my $extra = $t->db_directive . "    NotaryRecord shop contains \"contract\"\n    NotaryMaxRecordSize 16M\n";
$t->restart(extra => $extra, fsize_limit => $MiB);
$tok = $t->link_token(merchant => 'shop', consumer => 'alice');
$r = $t->request(path => "/shop/static/small.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'restarted with a 1 MiB file size limit; alice admitted again');

# the response: announced 200 and started, so cut off, not completed
my $n = $t->record_count;
$r = $t->request(path => '/shop/static/big.txt?limited', consumer => 'alice');
ok($r->{curl_exit} != 0 && length($r->{body}) < length($big),
   "a matched response that cannot be kept is cut off before its end (curl exit $r->{curl_exit}, "
   . length($r->{body}) . ' of ' . length($big) . ' bytes)');
like($t->notary_error_log, qr/NOTARY03013: .*cannot keep the response body for its record/,
     '... and the log says why');

# the request: refused with 500; the merchant never gets all of it
$r = $t->request(path => '/shop/echo?limited', consumer => 'alice', data => $big,
                 headers => ['Content-Type: text/plain']);
is($r->{status}, 500, 'a matched request that cannot be kept is refused (500)');
unlike($r->{body}, qr/^body-length: ${\ length $big}$/m, '... and the merchant did not answer it whole');
like($t->notary_error_log, qr/NOTARY03010: .*cannot keep the request body for its record/,
     '... and the log says why');
is($t->record_count, $n, 'neither was recorded, in part or whole');

# what fits in memory is still recorded
$r = $t->request(path => '/shop/static/small.txt?after', consumer => 'alice');
is($r->{status}, 200, 'a small matched response still passes');
is(scalar($t->records("uri = '/static/small.txt?after'")), 1, '... and is recorded');

$t->stop;
done_testing;
