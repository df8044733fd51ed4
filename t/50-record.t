# Recording: messages that match NotaryRecord rules are written to
# PostgreSQL with every column of notary_records filled from what was really
# relayed; nothing else is; a matched message never reaches its receiver
# whole without its committed record.
use strict;
use warnings;
use utf8;
use Test::More;
use Digest::SHA qw(sha256_hex);
use Encode qw(encode);
use NotaryTest;

my $KW = '契約書に同意します';          # the contract keyword, UTF-8 in httpd.conf
my $KW8 = encode('UTF-8', $KW);

binmode(Test::More->builder->$_, ':encoding(UTF-8)') for qw(output failure_output todo_output);
# refused: unknown merchant (02004), over NotaryMaxRecordSize (03008,
# 03009, 03012); the refused request body: mod_proxy's and the merchant's
# CGI's lines for a body cut short (AH02608, AH10154, AH01225)
my $t = NotaryTest->new(allow_log => [qw(NOTARY02004 NOTARY03008 NOTARY03009 NOTARY03012 AH02608 AH10154 AH01225)]);
my $m = $t->add_merchant('shop', 'ec256', extra => <<'EOF');
    AddType text/html .sjis
    AddCharset Shift_JIS .sjis
    AddEncoding gzip .gz
EOF
my $doc = $m->{docroot};
NotaryTest::write_file("$doc/static/terms.html",
    encode('UTF-8', "<html><body><h1>利用規約</h1><p>$KW</p></body></html>\n"));
NotaryTest::write_file("$doc/static/terms.sjis",
    encode('shiftjis', "<html><body><p>ご注文の前に: $KW</p></body></html>\n"));
NotaryTest::write_file("$doc/static/plain.html", "<html><body>nothing to see</body></html>\n");
{
    my $html = encode('UTF-8', "<html><body>" . ('x' x 5000) . "<p>$KW</p></body></html>\n");
    open my $gz, '|-', "gzip -9 -n -c > $doc/static/packed.html.gz" or die;
    binmode $gz;
    print $gz $html;
    close $gz;
}
NotaryTest::write_file("$doc/static/big.bin", join('', map { pack('N', $_ * 2654435761 % 4294967296) } 1 .. 5 * 1024 * 256));
NotaryTest::write_file("$doc/static/huge-contract.html",
    encode('UTF-8', "<p>$KW</p>") . ('y' x (2 * 1024 * 1024)));
# a page sent in pieces, the keyword cut inside its third character
{
    my ($a, $b) = (substr($KW8, 0, 7), substr($KW8, 7));
    my $q = sub { join '', map { sprintf '\\x%02x', ord } split //, shift };
    NotaryTest::write_file($t->dir . '/cgi/split', <<"EOF", 0755);
#!/usr/bin/perl
\$| = 1;
binmode STDOUT;
print "Content-Type: text/html; charset=utf-8\\r\\n\\r\\n";
print "<html><body><p>", "${\ $q->($a)}";
select undef, undef, undef, 0.3;
print "${\ $q->($b)}", "</p>";
select undef, undef, undef, 0.3;
print "</body></html>\\n";
EOF
}

my $rules = <<"EOF";
    NotaryRecord shop contains "$KW"
    NotaryRecord * type application/xml response
    NotaryRecord shop contains "APPLICATION-FORM" request
    NotaryMaxRecordSize 1M
EOF
my %conf = (extra => $t->db_directive . encode('UTF-8', $rules));
$t->start(%conf);

my $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
my $r = $t->request(path => "/shop/static/plain.html?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'alice admitted') or diag $r->{body};
is($t->record_count, 0, 'a page that matches no rule leaves no row');

my $merchant_spki = $t->spki_der($m->{key});
my $consumer_spki = $t->spki_der(($t->consumer('alice'))[1]);

# ---- a keyword in a UTF-8 page: every column
my $t0 = time;
$r = $t->request(path => '/shop/static/terms.html?lang=ja', consumer => 'alice');
is($r->{status}, 200, 'UTF-8 page with the keyword: 200');
my @rows = $t->records;
is(scalar @rows, 1, '... one row recorded') or BAIL_OUT('no recording at all: ' . $t->error_log);
my $row = $rows[0];
is($row->{direction}, 'response', 'direction is response');
is($row->{merchant}, 'shop', 'merchant is the NotaryMerchant name');
is(NotaryTest::hex_of($row->{sender_key}), NotaryTest::hex_of($merchant_spki),
   'sender_key is the DER SPKI the merchant\'s backend presented');
is(NotaryTest::hex_of($row->{receiver_key}), NotaryTest::hex_of($consumer_spki),
   'receiver_key is the consumer\'s DER SPKI');
is(NotaryTest::hex_of($row->{sender_key_sha256}), sha256_hex($merchant_spki), 'sender_key_sha256');
is(NotaryTest::hex_of($row->{receiver_key_sha256}), sha256_hex($consumer_spki), 'receiver_key_sha256');
{
    my $rule = utf8::is_utf8($row->{rule}) ? $row->{rule} : Encode::decode('UTF-8', $row->{rule});
    is($rule, "shop contains \"$KW\"", 'rule as written in httpd.conf');
}
is($row->{method}, 'GET', 'method');
is($row->{uri}, '/static/terms.html?lang=ja', 'uri: path and query as sent to the backend');
is($row->{status}, 200, 'status');
like($row->{content_type}, qr{^text/html}, 'content_type as sent');
NotaryTest::is_bytes($row->{body}, $r->{body}, 'body: exactly the bytes the consumer received');
is(NotaryTest::hex_of($row->{body_sha256}), sha256_hex($r->{body}), 'body_sha256');
{
    (my $client_headers = $r->{raw_headers}) =~ s/^HTTP\/\S+ [^\r\n]*\r\n//;
    $client_headers =~ s/\r\n\r\n\z//;
    is($row->{headers}, $client_headers, 'headers: the block the consumer received, byte for byte');
}
ok($row->{recorded_at}, 'recorded_at is set');
like($row->{exchange_id}, qr/^[0-9a-f]{32}$/, 'exchange_id is set');

# ---- split across chunks in the middle of a character
$r = $t->request(path => '/shop/cgi/split', consumer => 'alice');
is($r->{status}, 200, 'chunked page, keyword split mid-character: 200') or diag "$r->{curl_out} $r->{raw_headers}";
@rows = $t->records('uri = ?', '/cgi/split');
is(scalar @rows, 1, '... recorded');
NotaryTest::is_bytes(@rows ? $rows[0]{body} : undef, $r->{body}, '... body as relayed (transfer coding removed)');
like($r->{raw_headers}, qr/Transfer-Encoding: chunked/i, '... it really was chunked');

# ---- Shift_JIS
$r = $t->request(path => '/shop/static/terms.sjis', consumer => 'alice');
@rows = $t->records('uri = ?', '/static/terms.sjis');
is(scalar @rows, 1, 'keyword in a Shift_JIS page (rule written in UTF-8): recorded');
like($rows[0]{content_type} // '', qr/charset=Shift_JIS/i, '... with its charset');
NotaryTest::is_bytes(@rows ? $rows[0]{body} : undef, $r->{body}, '... body kept in Shift_JIS as transmitted');

# ---- gzip
$r = $t->request(path => '/shop/static/packed.html.gz', consumer => 'alice');
@rows = $t->records('uri = ?', '/static/packed.html.gz');
is(scalar @rows, 1, 'keyword inside a gzip body: recorded');
my $gz = do { local $/; open my $f, '<', "$doc/static/packed.html.gz"; binmode $f; <$f> };
NotaryTest::is_bytes(@rows ? $rows[0]{body} : undef, $gz, '... body is the compressed bytes as transmitted');

# ---- XML by type
$r = $t->request(path => '/shop/static/contract.xml', consumer => 'alice');
@rows = $t->records('uri = ?', '/static/contract.xml');
is(scalar @rows, 1, 'an XML contract is recorded by its type');
like($rows[0]{rule} // '', qr{^\* type application/xml response$}, '... by the type rule');

# ---- request-only rule on a POST
my $form = "name=Alice&consent=yes&kind=APPLICATION-FORM";
$r = $t->request(path => '/shop/echo?step=apply', consumer => 'alice', data => $form,
                 headers => ['Content-Type: application/x-www-form-urlencoded']);
is($r->{status}, 200, 'POST of an application form: 200') or diag "$r->{curl_out} $r->{raw_headers}";
@rows = $t->records("uri = ? AND direction = 'request'", '/echo?step=apply');
is(scalar @rows, 1, '... the request is recorded');
$row = $rows[0] || {};
is($row->{body} // '', $form, '... its body as sent');
is(NotaryTest::hex_of($row->{sender_key} // ''), NotaryTest::hex_of($consumer_spki), '... sender is the consumer');
is(NotaryTest::hex_of($row->{receiver_key} // ''), NotaryTest::hex_of($merchant_spki), '... receiver is the merchant');
is($row->{status}, undef, '... status is null for a request');
is($row->{method}, 'POST', '... method POST');
like($row->{headers} // '', qr/^Client-Cert: :[A-Za-z0-9+\/=]+:\r?$/m, '... headers as relayed (with Client-Cert)');
unlike($row->{headers} // '', qr/^Host: notary/m, '... to the merchant, not from the consumer');
{
    # the block mod_proxy wrote, in pieces: lines joined by CRLF, neither the
    # request line nor the blank line that ends it, nothing of the body
    my $h = $row->{headers} // '';
    like($h, qr/\A[A-Za-z][A-Za-z0-9-]*: /, '... headers start with a field, not the request line');
    unlike($h, qr/\r\n\r\n|\r\n\z|\Q$form\E/, '... and stop before the blank line and the body');
    is(scalar(grep { !/^[A-Za-z][A-Za-z0-9-]*: / } split /\r\n/, $h), 0, '... every line a field');
    like($h, qr{^Content-Type: application/x-www-form-urlencoded\r?$}m, '... the consumer\'s Content-Type among them');
    like($h, qr{^Content-Length: ${\ length $form}\r?$}m, '... and the body length');
}
is(scalar($t->records("uri = ? AND direction = 'response'", '/echo?step=apply')), 0,
   '... the response (no response rule matches) is not');

# ---- Expect: 100-continue: the body comes after httpd's 100, recorded whole
{
    my $body = "kind=APPLICATION-FORM&" . ('p' x 3000);
    my $r = $t->request(path => '/shop/echo?step=expect', consumer => 'alice', data => $body,
                        headers => ['Content-Type: application/x-www-form-urlencoded',
                                    'Expect: 100-continue']);
    is($r->{status}, 200, 'a POST with Expect: 100-continue: 200') or diag $r->{raw_headers};
    like($r->{raw_headers}, qr{^HTTP/1\.1 100 }m, '... after a 100 Continue');
    like($r->{body}, qr/^body-length: ${\ length $body}$/m, '... the merchant got the whole body');
    my @rows = $t->records("uri = ? AND direction = 'request'", '/echo?step=expect');
    is(scalar @rows, 1, '... and it is recorded');
    NotaryTest::is_bytes(@rows ? $rows[0]{body} : undef, $body, '... whole');
}

# ---- a refused POST: its body is read and dropped, its connection serves
# the next request (one curl, two URLs, one connection)
{
    my $body = 'APPLICATION-FORM ' . ('q' x 100000);
    my $port = $t->notary_port;
    my $r = $t->request(path => '/shop/echo?step=after-refusal', consumer => 'alice', data => $body,
                        headers => ['Content-Type: application/octet-stream'],
                        curl_args => ['-v', "https://notary.test:$port/nosuch/echo?step=refused"]);
    like($r->{raw_headers}, qr{^HTTP/1\.1 404 }m, 'a POST to no merchant: 404');
    is($r->{status}, 200, '... and the next POST on the same connection: 200');
    like($r->{curl_out}, qr/Re-using existing connection/i, '... which curl reused')
        or diag $r->{curl_out} =~ /^[*<>].*$/mg;
    is(scalar($t->records('uri = ?', '/echo?step=after-refusal')), 1, '... recorded')
        or diag 'curl sent it again? ', join(' | ', $r->{curl_out} =~ /^\* (Connection died.*)$/mg);
    is(scalar($t->records('uri = ?', '/echo?step=refused')), 0, '... the refused one is not');
}

# ---- request and response of one exchange
$r = $t->request(path => '/shop/echo?step=sign', consumer => 'alice', data => encode('UTF-8', "I say: $KW"),
                 headers => ['Content-Type: text/plain; charset=utf-8']);
@rows = $t->records('uri = ?', '/echo?step=sign');
is(scalar @rows, 2, 'request and response of one exchange both recorded');
is($rows[0]{exchange_id}, $rows[1]{exchange_id}, '... sharing one exchange_id') if @rows == 2;
is(join(',', map { $_->{direction} } @rows), 'request,response', '... request first');

# ---- unmatched traffic
my $before = $t->record_count;
$r = $t->request(path => '/shop/static/big.bin', consumer => 'alice');
my $big = do { local $/; open my $f, '<', "$doc/static/big.bin"; binmode $f; <$f> };
is($r->{status}, 200, 'a 5 MiB download that matches nothing: 200');
NotaryTest::is_bytes($r->{body}, $big, '... arrives intact');
$r = $t->request(path => '/shop/static/hello.txt', consumer => 'alice');
is($t->record_count, $before, '... and unmatched traffic leaves no row');

# ---- matched bodies past the spool's memory part (256 KiB): kept in a
# temporary file and streamed to the database with COPY
{
    my $long = encode('UTF-8', ('w' x 600000) . "<p>$KW</p>\n" . ("\0\xff" x 1000));
    NotaryTest::write_file("$doc/static/long-contract.html", $long);
    $r = $t->request(path => '/shop/static/long-contract.html?n=long', consumer => 'alice');
    is($r->{status}, 200, 'a matched 600 KB response: 200');
    NotaryTest::is_bytes($r->{body}, $long, '... delivered intact');
    @rows = $t->records('uri = ?', '/static/long-contract.html?n=long');
    is(scalar @rows, 1, '... and recorded once');
    NotaryTest::is_bytes(@rows ? $rows[0]{body} : undef, $long, '... its body byte for byte');
    is(NotaryTest::hex_of(@rows ? $rows[0]{body_sha256} : undef), sha256_hex($long), '... with its SHA-256');

    my $form = 'APPLICATION-FORM ' . join('', map { chr($_ % 256) } 1 .. 700000);
    $r = $t->request(path => '/shop/echo?step=longform', consumer => 'alice', data => $form,
                     headers => ['Content-Type: application/octet-stream']);
    is($r->{status}, 200, 'a matched 700 KB request is relayed') or diag $r->{body};
    # the record filter sits among the protocol filters, so mod_proxy_http
    # streams the body with the client's Content-Length (no spooling to
    # count it, no re-framing)
    like($r->{body}, qr/^header content-length: @{[ length $form ]}$/m,
         '... the merchant gets the Content-Length the consumer sent');
    unlike($r->{body}, qr/^header transfer-encoding:/m, '... not re-framed as chunked');
    like($r->{body}, qr/^body-length: @{[ length $form ]}$/m, '... and every byte');
    @rows = $t->records('uri = ?', '/echo?step=longform');
    is(scalar(grep { $_->{direction} eq 'request' } @rows), 1, '... and recorded');
    my ($req) = grep { $_->{direction} eq 'request' } @rows;
    NotaryTest::is_bytes($req ? $req->{body} : undef, $form, '... its body byte for byte');
    is(NotaryTest::hex_of($req ? $req->{body_sha256} : undef), sha256_hex($form), '... with its SHA-256');
}

# ---- over NotaryMaxRecordSize
$before = $t->record_count;
$r = $t->request(path => '/shop/static/huge-contract.html', consumer => 'alice');
my $full = -s "$doc/static/huge-contract.html";
cmp_ok(length($r->{body}), '<', $full, "a matched 2 MiB response over NotaryMaxRecordSize is not delivered whole (got "
   . length($r->{body}) . " of $full bytes, status $r->{status})");
is($t->record_count, $before, '... and not recorded');
like($t->notary_error_log, qr/NOTARY03008: response of exchange \w+ matched rule .* larger than NotaryMaxRecordSize/,
     '... the error log says why');
my $hits_before = () = $t->backend_hits('shop');
$r = $t->request(path => '/shop/echo?step=huge', consumer => 'alice',
                 data => 'APPLICATION-FORM' . ('z' x (2 * 1024 * 1024)),
                 headers => ['Content-Type: application/octet-stream']);
is($r->{status}, 413, 'a matched 2 MiB request over NotaryMaxRecordSize: 413') or diag $r->{body};
is($t->record_count, $before, '... not recorded');
$t->backend_sync('shop');
my @after = $t->backend_hits('shop');
ok(!grep({ m{"POST /echo\?step=huge HTTP/1.1" 200} } @after), '... and the backend did not answer it as complete')
    or diag @after[$hits_before .. $#after];

done_testing;
