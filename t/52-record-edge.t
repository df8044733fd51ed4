# Recording, the awkward inputs: compression bombs, compressed and chunked
# request bodies, EUC-JP, charsets and codings the notary cannot decode.
# Bytes always pass unchanged; what is recorded is what was transmitted.
use strict;
use warnings;
use utf8;
use Test::More;
use Encode qw(encode);
use Time::HiRes qw(time);
use NotaryTest;

binmode(Test::More->builder->$_, ':encoding(UTF-8)') for qw(output failure_output todo_output);
my $KW = '契約書に同意します';
my $KW8 = encode('UTF-8', $KW);

# warnings on bodies matched only in part (03002, 03003, 03015), the
# backend breaking off (03017, AH01110), consumers going away mid-body
# (AH02608, AH01097 at the notary, AH01225 at the merchant's CGI)
my $t = NotaryTest->new(allow_log => [qw(NOTARY03002 NOTARY03003 NOTARY03015 NOTARY03017 AH01110 AH02608 AH01097 AH01225)]);
my $m = $t->add_merchant('shop', 'ec256', extra => <<'EOF');
    AddEncoding gzip .gz
    AddType text/html .eucjp .unk .cmp
    AddCharset EUC-JP .eucjp
    AddCharset x-no-such-charset .unk
    AddEncoding compress .cmp
EOF
my $doc = $m->{docroot};
sub gz_file {
    my ($name, $cmd) = @_;
    system("($cmd) | gzip -1 -n -c > $doc/static/$name") == 0 or die "gzip $name";
}
# 200 MiB of zeros, then the keyword: a 200 KB download that inflates past
# the decoding limit (64 MiB) before the keyword
gz_file('bomb-late.html.gz', "head -c 209715200 /dev/zero; printf '%s' '$KW8'");
# the keyword first, then the zeros
gz_file('bomb-early.html.gz', "printf '%s' '$KW8'; head -c 209715200 /dev/zero");
NotaryTest::write_file("$doc/static/page.eucjp", encode('euc-jp', "<p>注文: $KW</p>\n"));
NotaryTest::write_file("$doc/static/page.unk", "<p>$KW8</p>\n");
NotaryTest::write_file("$doc/static/page.cmp", "\x1f\x9d\x90\x61\x00");   # LZW: a coding the notary does not read

# a merchant whose backend announces 500000 bytes, sends a matched start
# and 300 KB, then dies
NotaryTest::write_file($t->dir . '/cgi/nph-broken', <<"CGI", 0755);
#!/usr/bin/perl
\$| = 1;
binmode STDOUT;
print "HTTP/1.1 200 OK\\r\\nContent-Type: text/html; charset=utf-8\\r\\nContent-Length: 500000\\r\\n\\r\\n";
print "<p>$KW8</p>", "z" x 300000;
exit 0;
CGI
# the same with chunked framing: no length announced, so the notary holds
# back the last byte it has seen
NotaryTest::write_file($t->dir . '/cgi/nph-broken-chunked', <<"CGI", 0755);
#!/usr/bin/perl
\$| = 1;
binmode STDOUT;
my \$b = "<p>$KW8</p>" . ("z" x 300000);
print "HTTP/1.1 200 OK\\r\\nContent-Type: text/html; charset=utf-8\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n";
printf "%x\\r\\n%s\\r\\n", length(\$b), \$b;
exit 0;
CGI
# a matched response whose header block is larger than 64 KiB
NotaryTest::write_file($t->dir . '/cgi/nph-bigheaders', <<"CGI", 0755);
#!/usr/bin/perl
binmode STDOUT;
print "HTTP/1.1 200 OK\\r\\nContent-Type: text/html; charset=utf-8\\r\\n";
print "X-Pad-\$_: ", ("h" x 4000), "\\r\\n" for 1 .. 20;
my \$body = "<p>$KW8</p>\\n";
print "Content-Length: ", length(\$body), "\\r\\n\\r\\n", \$body;
CGI
$t->start(extra => $t->db_directive . encode('UTF-8', "    NotaryRecord shop contains \"$KW\"\n"));
my $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'alice admitted');

# ---- compression bombs
my $t0 = time;
$r = $t->request(path => '/shop/static/bomb-late.html.gz', consumer => 'alice');
my $took = time - $t0;
my $late = do { local $/; open my $f, '<', "$doc/static/bomb-late.html.gz"; binmode $f; <$f> };
is($r->{status}, 200, 'a gzip bomb (200 MiB inflated): 200');
NotaryTest::is_bytes($r->{body}, $late, '... relayed byte for byte, compressed');
is(scalar($t->records("uri = '/static/bomb-late.html.gz'")), 0,
   '... the keyword past the decoding limit is not seen: no row');
like($t->notary_error_log, qr/NOTARY03015: response body: matched only the first 67108864 decoded bytes \(decoding limit reached\)/,
     '... and the log says the body was matched only in part');
diag sprintf 'bomb relayed in %.2f s', $took;

$r = $t->request(path => '/shop/static/bomb-early.html.gz', consumer => 'alice');
my @rows = $t->records("uri = '/static/bomb-early.html.gz'");
is(scalar @rows, 1, 'a gzip bomb with the keyword up front is recorded');
my $early = do { local $/; open my $f, '<', "$doc/static/bomb-early.html.gz"; binmode $f; <$f> };
NotaryTest::is_bytes(@rows ? $rows[0]{body} : undef, $early,
                     '... with the compressed bytes as transmitted (' . length($early) . ' bytes)');
NotaryTest::is_bytes($r->{body}, $early, '... which the consumer received');

# ---- request bodies: gzip-encoded, chunked
my $form = encode('UTF-8', "consent=$KW&name=alice");
my $gzform = do {
    open my $g, '-|', 'sh', '-c', "printf '%s' '$form' | gzip -n -c" or die;
    binmode $g; local $/; <$g>;
};
$r = $t->request(path => '/shop/echo?enc=gzip', consumer => 'alice', data => $gzform,
                 headers => ['Content-Type: application/x-www-form-urlencoded', 'Content-Encoding: gzip']);
is($r->{status}, 200, 'a gzip-encoded POST is relayed');
@rows = $t->records("uri = '/echo?enc=gzip' AND direction = 'request'");
is(scalar @rows, 1, '... recorded: the keyword was found in the decoded form');
NotaryTest::is_bytes(@rows ? $rows[0]{body} : undef, $gzform, '... the row keeps the gzip bytes as sent');
like($r->{body}, qr/^body-length: ${\ length $gzform}$/m, '... and the merchant got them unchanged');

$r = $t->request(path => '/shop/echo?te=chunked', consumer => 'alice', data => $form,
                 headers => ['Content-Type: text/plain; charset=utf-8', 'Transfer-Encoding: chunked']);
is($r->{status}, 200, 'a chunked POST is relayed');
@rows = $t->records("uri = '/echo?te=chunked' AND direction = 'request'");
is(scalar @rows, 1, '... recorded');
NotaryTest::is_bytes(@rows ? $rows[0]{body} : undef, $form, '... without the chunk framing');

# ---- charsets and codings
$r = $t->request(path => '/shop/static/page.eucjp', consumer => 'alice');
@rows = $t->records("uri = '/static/page.eucjp'");
is(scalar @rows, 1, 'an EUC-JP page with the keyword is recorded');
NotaryTest::is_bytes(@rows ? $rows[0]{body} : undef, $r->{body}, '... in EUC-JP, as transmitted');

$r = $t->request(path => '/shop/static/page.unk', consumer => 'alice');
is(scalar($t->records("uri = '/static/page.unk'")), 1,
   'an unknown charset is matched as UTF-8 (recorded)');
like($t->notary_error_log, qr/NOTARY03002: response body: unknown charset/, '... with a warning');

$r = $t->request(path => '/shop/static/page.cmp', consumer => 'alice');
is($r->{status}, 200, 'a Content-Encoding the notary cannot decode (compress) is relayed');
like($t->notary_error_log, qr/NOTARY03003: response body: Content-Encoding 'compress' cannot be decoded/,
     '... with a warning that it was matched as transmitted');

# ---- HEAD: no message body, nothing to record
my $n = $t->record_count;
$r = $t->request(path => '/shop/static/page.eucjp', consumer => 'alice', curl_args => ['--head']);
is($r->{status}, 200, 'HEAD of a page that would be recorded: 200');
is($t->record_count, $n, '... and no row (there is no body)');

# ---- a header block past 64 KiB is recorded whole and never taken for body
{
    my $r = $t->request(path => '/shop/cgi/nph-bigheaders', consumer => 'alice');
    is($r->{body}, "<p>$KW8</p>\n", 'a matched response with 80 KB of headers arrives intact');
    my @rows = $t->records("uri = '/cgi/nph-bigheaders'");
    is(scalar @rows, 1, '... is recorded');
    my $h = @rows ? $rows[0]{headers} : '';
    is(scalar(() = $h =~ /^X-Pad-\d+: h{4000}\r?$/mg), 20, '... with every header line');
    is(@rows ? $rows[0]{body} : undef, "<p>$KW8</p>\n", '... and its body, nothing more');
}

# ---- the merchant's backend breaks off in the middle of a matched response:
# the consumer never gets it whole and knows it (curl fails), or, when
# mod_proxy saw the break before anything went out (a loaded machine), gets
# mod_proxy's own complete 502 with none of the body
{
    # Content-Length 500000: what came (300 KB) is relayed, the final byte
    # never came
    my $r = $t->request(path => '/shop/cgi/nph-broken', consumer => 'alice');
    ok(($r->{curl_exit} != 0 && length($r->{body}) < 500000)
       || ($r->{curl_exit} == 0 && $r->{status} >= 500 && $r->{body} !~ /zzz/),
       "a matched response the backend broke off is not delivered whole (curl exit $r->{curl_exit}, "
       . "status $r->{status}, " . length($r->{body}) . ' bytes)');
    is(scalar($t->records("uri = '/cgi/nph-broken'")), 0, '... and never recorded as if it were');

    # chunked: at most all but the last byte the backend sent
    $r = $t->request(path => '/shop/cgi/nph-broken-chunked', consumer => 'alice');
    ok(($r->{curl_exit} != 0 && length($r->{body}) < 300000 + length("<p>$KW8</p>"))
       || ($r->{curl_exit} == 0 && $r->{status} >= 500 && $r->{body} !~ /zzz/),
       "the same, chunked: not delivered whole (curl exit $r->{curl_exit}, "
       . "status $r->{status}, " . length($r->{body}) . ' bytes)');
    is(scalar($t->records("uri = '/cgi/nph-broken-chunked'")), 0, '... and not recorded');
    like($t->notary_error_log, qr/NOTARY03017: .*backend broke off/, '... the error log says why');
}

# ---- a consumer that announces a matched body and goes away halfway: no
# byte is held back while the Content-Length says more is to come, so the
# merchant gets what came -- but never the whole request, and nothing is
# recorded
{
    my $half = "<p>$KW8</p>" . ('t' x 50000);
    for my $framing ('length', 'chunked') {
        my $s = $t->tls_connect;
        print $s "POST /shop/echo?step=truncated-$framing HTTP/1.1\r\nHost: notary.test\r\n"
               . "Content-Type: text/html; charset=utf-8\r\n"
               . ($framing eq 'length' ? "Content-Length: 100000\r\n\r\n$half"
                                       : sprintf("Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n",
                                                 length $half, $half));
        select undef, undef, undef, 0.5;   # the half reaches the notary, then we go away
        close $s;
    }
    # the notary logs each when it is done with it (its backend connection
    # closed), then the merchant's own line is a sync away
    for my $framing ('length', 'chunked') {
        ok($t->wait_notary_access(qr{"POST /shop/echo\?step=truncated-$framing HTTP/1\.1"}, timeout => 30),
           "the notary is done with the request cut off halfway ($framing)");
    }
    $t->backend_sync('shop');
    for my $framing ('length', 'chunked') {
        is(scalar($t->records("uri = '/echo?step=truncated-$framing'")), 0,
           "a matched request body cut off halfway ($framing) is not recorded");
        ok(!grep({ m{"POST /echo\?step=truncated-$framing HTTP/1.1" 200} } $t->backend_hits('shop')),
           '... and the merchant did not answer it as complete');
    }
    my $r = $t->request(path => '/shop/static/page.unk', consumer => 'alice');
    is($r->{status}, 200, '... and the notary goes on serving');
}

done_testing;
