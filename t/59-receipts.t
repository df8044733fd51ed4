# Receipts for both parties (DESIGN.md "Evidence", issue 14 item 4).
#
# 50 concurrent matched POSTs (a request and a response record each) from
# ten consumers. Every response carries a Link to the receipt of each of its
# records and a Notary-Receipt header: the signed promise of the request's
# record, an RFC 8941 byte sequence, whose entry is the row's leaf (checked
# against leaf_hash) and which `notary-verify promise` accepts with the bytes
# the consumer sent. Each client keeps exactly the bytes it got. Before
# integration (NotaryLogInterval 3600: the integrator does not run) GET
# /.notary/receipt/ID/DIRECTION answers 202 with the promise; after a
# graceful restart with NotaryLogInterval 1 the records are integrated and
# it answers 200 with a c2sp.org/tlog-proof@v1 receipt that `notary-verify
# receipt --body` (and, for the response, --headers: the header block the
# consumer got, Link included) finds valid -- and invalid (exit 1) after
# one flipped byte. Both parties get them (the merchant with a certificate
# of its backend's key); a third party's certificate, another consumer's,
# no certificate, a bad id or direction all get one and the same 404.
use strict;
use warnings;
use Test::More;
use Digest::SHA qw(sha256);
use MIME::Base64 qw(encode_base64 decode_base64);
use Time::HiRes qw(time sleep);
use POSIX ();
use NotaryTest;

my $build = $ENV{NOTARY_BUILDDIR} or BAIL_OUT('NOTARY_BUILDDIR not set');
my $verify = "$build/notary-verify";
-x $verify or BAIL_OUT("no $verify");

my $t = NotaryTest->new(allow_log => []);
my $m = $t->add_merchant('shop', 'ec256');
my $dir = $t->dir;
my $pg = $t->pg;
# the log's connection also answers the receipt endpoint: both roles
$pg->psql('CREATE ROLE integrator LOGIN IN ROLE notary_integrator, notary_receipt_reader');
NotaryTest::write_file("$m->{docroot}/static/terms.txt", "These are the CONTRACT-TERMS.\n");

my $key = "$dir/log.key";
NotaryTest::run_cmd('openssl', 'genpkey', '-algorithm', 'ed25519', '-out', $key);
my $origin = 'notary.test/log';
my $pub = substr(NotaryTest::run_out('openssl', 'pkey', '-in', $key, '-pubout', '-outform', 'DER'), -32);
my $id = substr(sha256("$origin\n\x01$pub"), 0, 4);
my $vkey = "$origin+" . unpack('H*', $id) . '+' . encode_base64("\x01$pub", '');
NotaryTest::write_file("$dir/log.vkey", "$vkey\n");

my $conf = sub {
    my $interval = shift;
    return $t->db_directive(timeout => 10)
         . "    NotaryRecord shop contains \"CONTRACT-TERMS\"\n"
         . "    NotaryLogKey $key\n    NotaryLogOrigin $origin\n"
         . "    NotaryLogInterval $interval\n"
         . '    NotaryLogIntegratorDatabase "' . $pg->conninfo('integrator') . "\"\n";
};

# notary-verify's exit code and output
sub nv {
    my @args = @_;
    my $cmd = join ' ', map { (my $w = $_) =~ s/'/'\\''/g; "'$w'" } $verify, '--key-file', "$dir/log.vkey", @args;
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

# the Link values (rel="notary-receipt") of a raw header block, in order
sub receipt_links {
    my $raw = shift;
    return map { /^<([^>]*)>; rel="notary-receipt"$/ ? $1 : () }
           $raw =~ /^Link: ([^\r\n]*)\r?$/mig;
}

# The header block as the record keeps it: without the status line and the
# empty line that ends it.
sub header_block {
    my $raw = shift;
    $raw =~ s/\A[^\n]*\n//;
    $raw =~ s/\r\n\r\n\z//;
    return $raw;
}

my $xdir = "$dir/x";
mkdir $xdir or die "$xdir: $!";
my @consumers = map { "c$_" } 0 .. 9;

# ---- phase 1: the integrator does not run (NotaryLogInterval 3600)
$t->start(extra => $conf->(3600));
for my $c (@consumers) {
    my $tok = $t->link_token(merchant => 'shop', consumer => $c);
    my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => $c);
    is($r->{status}, 200, "$c admitted") or diag($r->{body});
}

# unrecorded, response-only and request-only exchanges: a Link per record
{
    my $r = $t->request(path => '/shop/static/hello.txt', consumer => 'c0');
    is_deeply([receipt_links($r->{raw_headers})], [], 'an exchange without a record: no Link');
    ok(!defined $r->{headers}{'notary-receipt'}, '... and no Notary-Receipt');

    $r = $t->request(path => '/shop/static/terms.txt', consumer => 'c0');
    my ($row) = $t->records("uri = '/static/terms.txt'");
    my @links = receipt_links($r->{raw_headers});
    is_deeply(\@links, ["/.notary/receipt/$row->{exchange_id}/response"],
              'a recorded response (GET, request not recorded): the Link of its own receipt')
        or diag($r->{raw_headers});
    ok(!defined $r->{headers}{'notary-receipt'}, '... no Notary-Receipt: no request record');

    $r = $t->request(path => '/shop/static/hello.txt?post=1', consumer => 'c0', method => 'POST',
                     data => 'I accept the CONTRACT-TERMS', headers => ['Content-Type: text/plain']);
    ($row) = $t->records("uri = '/static/hello.txt?post=1'");
    ok($row && $row->{direction} eq 'request', 'a matched POST to a static page: only its request recorded')
        or diag(explain [ $t->records("uri LIKE '/static/hello.txt%'") ]);
    @links = receipt_links($r->{raw_headers});
    is_deeply(\@links, ["/.notary/receipt/$row->{exchange_id}/request"],
              "... its answer ($r->{status}) carries the request's Link only") or diag($r->{raw_headers});
    like($r->{headers}{'notary-receipt'} // '', qr/^:[A-Za-z0-9+\/]+=*:$/,
         '... and Notary-Receipt, a byte sequence');
}

# 50 concurrent matched POSTs; each client keeps what it sent and got
my @kids;
for my $i (1 .. 50) {
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        my $c = $consumers[$i % 10];
        my $sent = "exchange $i of $c: I accept the CONTRACT-TERMS " . ('x' x (7 * $i)) . "\n";
        my $r = $t->request(path => "/shop/echo?n=$i", consumer => $c, data => $sent,
                            headers => ['Content-Type: text/plain', 'Expect:']);
        NotaryTest::write_file("$xdir/$i.sent", $sent);
        NotaryTest::write_file("$xdir/$i.body", $r->{body});
        NotaryTest::write_file("$xdir/$i.head", $r->{raw_headers});
        NotaryTest::write_file("$xdir/$i.status", "$r->{status} $r->{curl_exit} $r->{curl_out}");
        # right away, while integration is not running: the promises
        for my $link (receipt_links($r->{raw_headers})) {
            my ($d) = $link =~ m{/(request|response)$} or next;
            my $g = $t->request(path => $link, consumer => $c);
            NotaryTest::write_file("$xdir/$i.$d.202", $g->{body});
            NotaryTest::write_file("$xdir/$i.$d.202.head", $g->{raw_headers});
        }
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
waitpid($_, 0) for @kids;

my %ex;    # i => { c, xid, sent, body, head, req => row, resp => row }
{
    my @rows = $t->records("uri LIKE '/echo?n=%'");
    my %by = map { ("$_->{uri} $_->{direction}" => $_) } @rows;
    my (@bad_status, @bad_body);
    for my $i (1 .. 50) {
        my $e = $ex{$i} = { c => $consumers[$i % 10] };
        $e->{$_} = NotaryTest::read_file("$xdir/$i.$_") for qw(sent body head status);
        push @bad_status, "$i: $e->{status}" unless $e->{status} =~ /^200 0 /;
        push @bad_body, $i unless index($e->{body}, "body: $e->{sent}") >= 0;
        $e->{req} = $by{"/echo?n=$i request"};
        $e->{resp} = $by{"/echo?n=$i response"};
        $e->{xid} = $e->{req} ? $e->{req}{exchange_id} : '';
    }
    is_deeply(\@bad_status, [], '50 concurrent matched POSTs: all 200') or diag($t->notary_error_log);
    is_deeply(\@bad_body, [], '... each echoing the body its client sent');
    is(scalar @rows, 100, '... 100 records, a request and a response each');
    is(scalar(grep { $_->{req} && $_->{resp} && $_->{req}{exchange_id} eq $_->{resp}{exchange_id} }
              values %ex), 50, '... both of an exchange under one exchange id');
}

# Links and Notary-Receipt on each of the 50
{
    my (@bad_links, @bad_sf, @bad_entry, @bad_verify, @bad_mmd);
    for my $i (1 .. 50) {
        my $e = $ex{$i};
        my @links = receipt_links($e->{head});
        push @bad_links, "$i: @links" unless "@links" eq
            "/.notary/receipt/$e->{xid}/request /.notary/receipt/$e->{xid}/response";
        my ($sf) = $e->{head} =~ /^Notary-Receipt: ([^\r\n]*)\r?$/mi;
        if (!defined $sf || $sf !~ /^:([A-Za-z0-9+\/]+=*):$/) {
            push @bad_sf, "$i: " . ($sf // 'none');
            next;
        }
        my $note = decode_base64($1);
        $e->{promise} = $note;
        my ($b64) = $note =~ /\Anotary-promise\/v1\norigin \Q$origin\E\nentry ([A-Za-z0-9+\/=]+)\nmmd (\d+)\n\n/;
        my ($mmd) = $note =~ /\nmmd (\d+)\n/;
        push @bad_mmd, "$i: " . ($mmd // 'none') unless defined $mmd && $mmd == 3660;
        my $entry = defined $b64 ? decode_base64($b64) : '';
        push @bad_entry, $i unless length($entry) == 234
            && sha256("\0" . $entry) eq $e->{req}{leaf_hash};
        NotaryTest::write_file("$xdir/$i.nr", "$sf\n");
        my ($rc, $out) = nv('promise', "$xdir/$i.nr", '--body', "$xdir/$i.sent");
        push @bad_verify, "$i: exit $rc: $out" unless $rc == 0;
    }
    is_deeply(\@bad_links, [], 'each response links the receipts of both its records '
              . '(</.notary/receipt/ID/request>, </.notary/receipt/ID/response>; rel="notary-receipt")');
    is_deeply(\@bad_sf, [], '... and carries Notary-Receipt as an RFC 8941 byte sequence');
    is_deeply(\@bad_entry, [], "... a promise under the log's origin whose entry is the request "
              . "row's leaf (SHA-256(0x00 || entry) = leaf_hash)");
    is_deeply(\@bad_mmd, [], '... with mmd = NotaryLogInterval (3600) + 60');
    is_deeply(\@bad_verify, [], '... notary-verify promise (the header value as is) --body '
              . 'the bytes sent: VALID') or diag(join "\n", @bad_verify);

    my ($rc, $out) = nv('promise', "$xdir/1.nr", '--body', "$xdir/2.sent");
    is($rc, 1, "... with another exchange's body: INVALID (exit 1)") or diag($out);
}

# the 202 answers the clients got while the records were not integrated
{
    my (@bad, @bad_same, @bad_verify);
    for my $i (1 .. 50) {
        my $e = $ex{$i};
        for my $d (qw(request response)) {
            my $f = "$xdir/$i.$d.202";
            my $head = -f "$f.head" ? NotaryTest::read_file("$f.head") : '';
            unless ($head =~ m{^HTTP/1\.1 202 } && $head =~ m{^Content-Type: text/plain; charset=utf-8\r$}mi
                    && $head =~ m{^Cache-Control: private, no-store\r$}mi && $head =~ m{^Retry-After: 3600\r$}mi) {
                push @bad, "$i $d: $head";
                next;
            }
            my @files = $d eq 'request' ? ('--body', "$xdir/$i.sent")
                : ('--body', "$xdir/$i.body", '--headers', "$xdir/$i.hblock");
            NotaryTest::write_file("$xdir/$i.hblock", header_block($e->{head})) if $d eq 'response';
            my ($rc, $out) = nv('promise', $f, @files);
            push @bad_verify, "$i $d: exit $rc: $out" unless $rc == 0;
        }
        push @bad_same, $i unless defined $e->{promise}
            && NotaryTest::read_file("$xdir/$i.request.202") eq $e->{promise};
    }
    is_deeply(\@bad, [], 'before integration GET /.notary/receipt/ID/request|response: 202, '
              . 'text/plain; charset=utf-8, Cache-Control: private, no-store, Retry-After: 3600')
        or diag(join "\n", @bad[0 .. ($#bad < 2 ? $#bad : 2)]);
    is_deeply(\@bad_same, [], "... the request's promise, byte for byte the one of Notary-Receipt");
    is_deeply(\@bad_verify, [], '... each promise VALID with the bytes its client sent (request) '
              . 'or got (response: body, and the header block with its Link)')
        or diag(join "\n", @bad_verify);
}

# who may ask: the parties only
my $mcert = "$dir/merchant-client.pem";
NotaryTest::run_cmd('openssl', 'req', '-x509', '-new', '-key', $m->{key}, '-out', $mcert,
                    '-days', '2', '-subj', '/CN=shop');
my @merchant = (curl_args => ['--cert', $mcert, '--key', $m->{key}]);
my $not_found;
sub refused {
    my ($name, %o) = @_;
    my $r = $t->request(%o);
    $not_found //= $r->{body} if $r->{status} == 404;
    ok($r->{status} == 404 && $r->{body} eq ($not_found // ''), "$name: 404, the same body")
        or diag("status $r->{status}: $r->{body}");
}
{
    my $e = $ex{1};
    my $r = $t->request(path => "/.notary/receipt/$e->{xid}/response", @merchant);
    is($r->{status}, 202, "the merchant (a certificate of its backend's key) gets the response's promise");
    refused("a third party's certificate, the request's promise",
            path => "/.notary/receipt/$e->{xid}/request", consumer => 'mallory');
    refused('another consumer (c2), the response of c1',
            path => "/.notary/receipt/$e->{xid}/response", consumer => 'c2');
}

# ---- phase 2: integration runs (graceful restart, NotaryLogInterval 1)
$t->graceful(extra => $conf->(1));
my $t0 = time;
my @left;
for (1 .. 300) {
    @left = grep { !defined $_->{leaf_index} } $t->records;
    last unless @left;
    sleep 0.2;
}
is(scalar @left, 0, sprintf('after the restart every record is integrated (%.1f s)', time - $t0))
    or diag($t->notary_error_log);

# the 50 clients fetch their receipts at once
@kids = ();
for my $i (1 .. 50) {
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        my $e = $ex{$i};
        for my $d (qw(request response)) {
            my $g = $t->request(path => "/.notary/receipt/$e->{xid}/$d", consumer => $e->{c});
            NotaryTest::write_file("$xdir/$i.$d.200", $g->{body});
            NotaryTest::write_file("$xdir/$i.$d.200.head", $g->{raw_headers});
        }
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
waitpid($_, 0) for @kids;
{
    my (@bad, @bad_verify, @bad_index);
    for my $i (1 .. 50) {
        my $e = $ex{$i};
        for my $d (qw(request response)) {
            my $f = "$xdir/$i.$d.200";
            my $head = -f "$f.head" ? NotaryTest::read_file("$f.head") : '';
            my $body = -f $f ? NotaryTest::read_file($f) : '';
            unless ($head =~ m{^HTTP/1\.1 200 } && $head =~ m{^Content-Type: text/plain; charset=utf-8\r$}mi
                    && $head =~ m{^Cache-Control: private, no-cache\r$}mi
                    && $body =~ m{\Ac2sp\.org/tlog-proof\@v1\nextra }) {
                push @bad, "$i $d: $head$body";
                next;
            }
            my $row = $d eq 'request' ? $e->{req} : $e->{resp};
            my ($index) = $body =~ /^index (\d+)$/m;
            my ($leaf) = $t->records('id = ?', $row->{id});
            push @bad_index, "$i $d" unless defined $index && $index == $leaf->{leaf_index};
            my @files = $d eq 'request' ? ('--body', "$xdir/$i.sent")
                : ('--body', "$xdir/$i.body", '--headers', "$xdir/$i.hblock");
            my ($rc, $out) = nv('receipt', $f, @files);
            push @bad_verify, "$i $d: exit $rc: $out" unless $rc == 0;
        }
    }
    is_deeply(\@bad, [], 'after integration: 200, text/plain; charset=utf-8, Cache-Control: '
              . 'private, no-cache, a c2sp.org/tlog-proof@v1 receipt, for all 100')
        or diag(join "\n", @bad[0 .. ($#bad < 2 ? $#bad : 2)]);
    is_deeply(\@bad_index, [], "... at the record's leaf_index");
    is_deeply(\@bad_verify, [], '... notary-verify receipt --body (and --headers) with the '
              . 'bytes each client sent or got: VALID') or diag(join "\n", @bad_verify);
}

# a flipped byte anywhere it matters: INVALID, exit 1
{
    my $body = NotaryTest::read_file("$xdir/7.body");
    substr($body, 10, 1) ^= "\x01";
    NotaryTest::write_file("$xdir/7.body.flipped", $body);
    my ($rc, $out) = nv('receipt', "$xdir/7.response.200", '--body', "$xdir/7.body.flipped");
    is($rc, 1, 'a flipped byte in the saved response body: receipt --body INVALID (exit 1)')
        or diag($out);
    like($out, qr/not the body the entry commits to/, '... saying the body is not the one recorded')
        or diag($out);
    my $sent = NotaryTest::read_file("$xdir/7.sent");
    substr($sent, -2, 1) ^= "\x20";
    NotaryTest::write_file("$xdir/7.sent.flipped", $sent);
    ($rc, $out) = nv('receipt', "$xdir/7.request.200", '--body', "$xdir/7.sent.flipped");
    is($rc, 1, '... in the sent request body: INVALID (exit 1)') or diag($out);
    my $hb = header_block($ex{7}{head});
    $hb =~ s{/response>}{/request>} or die 'no response Link in the header block';
    NotaryTest::write_file("$xdir/7.hblock.flipped", $hb);
    ($rc, $out) = nv('receipt', "$xdir/7.response.200", '--body', "$xdir/7.body",
                     '--headers', "$xdir/7.hblock.flipped");
    is($rc, 1, '... the header block with its Link changed: INVALID (exit 1)') or diag($out);
    my $receipt = NotaryTest::read_file("$xdir/7.request.200");
    my ($extra) = $receipt =~ /^extra (\S+)$/m;
    my $raw = decode_base64($extra);
    substr($raw, 30, 1) ^= "\x01";    # the salt
    my $enc = encode_base64($raw, '');
    $receipt =~ s/^extra \S+$/extra $enc/m;
    NotaryTest::write_file("$xdir/7.request.200.flipped", $receipt);
    ($rc, $out) = nv('receipt', "$xdir/7.request.200.flipped", '--body', "$xdir/7.sent");
    is($rc, 1, '... a bit of the entry in the receipt: INVALID (exit 1)') or diag($out);
}

# both parties, and nobody else
{
    my $e = $ex{3};
    for my $d (qw(request response)) {
        my $r = $t->request(path => "/.notary/receipt/$e->{xid}/$d", @merchant);
        is($r->{status}, 200, "the merchant gets the $d receipt too");
        NotaryTest::write_file("$xdir/m.$d", $r->{body});
        my ($rc, $out) = nv('receipt', "$xdir/m.$d", '--body', "$xdir/3." . ($d eq 'request' ? 'sent' : 'body'));
        is($rc, 0, '... VALID with the same bytes') or diag($out);
    }
    for my $d (qw(request response)) {
        refused("a third party's certificate (mallory), the $d receipt",
                path => "/.notary/receipt/$e->{xid}/$d", consumer => 'mallory');
        refused("another consumer's certificate (c4, not c3), the $d receipt",
                path => "/.notary/receipt/$e->{xid}/$d", consumer => 'c4');
        refused("no client certificate, the $d receipt", path => "/.notary/receipt/$e->{xid}/$d");
    }
    my $c = $e->{c};
    refused('a bad direction', path => "/.notary/receipt/$e->{xid}/both", consumer => $c);
    refused('a trailing slash', path => "/.notary/receipt/$e->{xid}/request/", consumer => $c);
    refused('an exchange id in capitals', path => '/.notary/receipt/' . uc($e->{xid}) . '/request',
            consumer => $c);
    refused('a short exchange id', path => '/.notary/receipt/' . substr($e->{xid}, 1) . '/request',
            consumer => $c);
    refused('an exchange id with no record', path => '/.notary/receipt/' . ('0' x 32) . '/request',
            consumer => $c);
    refused('nothing after /.notary/receipt/', path => '/.notary/receipt/', consumer => $c);
    my $r = $t->request(path => "/.notary/receipt/$e->{xid}/request", consumer => $c,
                        method => 'POST', data => 'x');
    is($r->{status}, 405, 'POST to a receipt: 405');
    like($t->notary_error_log, qr/NOTARY04102: .*neither the record's sender's nor its receiver's/,
         'the error log (info) says why a 404 was given');
}

done_testing;
