# Matching what a person agreed to (issue 13): form, multipart and JSON
# bodies from real clients (curl, Python's urllib/email/json) are recorded
# once, with their bytes exactly as sent, when the text a person typed is
# in them, however it was encoded on the wire; the same bodies without the
# text are not. A br response, a page whose charset only a <meta> names,
# and Accept-Encoding narrowed towards merchants with response rules.
use strict;
use warnings;
use utf8;
use Test::More;
use Encode qw(encode);
use NotaryTest;

binmode(Test::More->builder->$_, ':encoding(UTF-8)') for qw(output failure_output todo_output);

my $AGREE = 'I agree to the terms';
my $KW = '契約に同意します';
my $KW8 = encode('UTF-8', $KW);
my $TERMS = '利用規約に同意する';

my $t = NotaryTest->new(allow_log => [qw(NOTARY03301)]);
my $m = $t->add_merchant('shop', 'ec256', extra => <<'EOF');
    AddType text/html .br
    AddEncoding br .br
EOF
$t->add_merchant('plain', 'ec256');
my $doc = $m->{docroot};

# a br response (precompressed, as a merchant with brotli would send it)
{
    my $html = encode('UTF-8', "<html><body>" . ('z' x 3000) . "<p>$TERMS</p></body></html>\n");
    NotaryTest::write_file("$doc/static/terms.html.src", $html);
    system('brotli', '-q', '9', '-f', '-o', "$doc/static/terms.br", "$doc/static/terms.html.src") == 0
        or BAIL_OUT('brotli CLI failed');
    unlink "$doc/static/terms.html.src";
}
# a Shift_JIS page only its <meta> labels (no charset in Content-Type)
NotaryTest::write_file("$doc/static/meta-sjis.html",
    encode('shiftjis', "<!DOCTYPE html><html><head><meta charset=\"Shift_JIS\">"
           . "<title>規約</title></head><body><p>ご注文の前に: $TERMS</p></body></html>\n"));
NotaryTest::write_file("$doc/static/meta-sjis-other.html",
    encode('shiftjis', "<!DOCTYPE html><html><head><meta charset=\"Shift_JIS\">"
           . "<title>規約</title></head><body><p>ご注文ありがとうございます</p></body></html>\n"));

my $rules = <<"EOF";
    NotaryRecord shop contains "$AGREE" request
    NotaryRecord shop contains "$KW" request
    NotaryRecord shop contains "$TERMS" response
    NotaryRecord plain contains "$AGREE" request
    NotaryMaxRecordSize 1M
EOF
$t->start(extra => $t->db_directive . encode('UTF-8', $rules));

my $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'alice admitted to shop') or BAIL_OUT($r->{body});
$tok = $t->link_token(merchant => 'plain', consumer => 'alice');
$r = $t->request(path => "/plain/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'alice admitted to plain') or BAIL_OUT($r->{body});

# Python makes the bodies as its libraries would send them; $code prints
# the Content-Type and writes the body to the file named in argv[1].
sub py_body {
    my ($code) = @_;
    my $py = $t->dir . "/mk.$$.py";
    my $out = $t->dir . "/body.$$";
    NotaryTest::write_file($py, encode('UTF-8', "# -*- coding: utf-8 -*-\nimport sys\n$code"));
    my $ct = `python3 $py $out`;
    $? == 0 or BAIL_OUT("python3 failed: $code");
    chomp $ct;
    my $body = NotaryTest::read_file($out);
    unlink $py, $out;
    return ($ct, $body);
}

# POST $body to /shop/echo?case=$case; check it is recorded once, exactly as
# sent ($want 1), or not at all ($want 0).
sub post_case {
    my ($case, $ct, $body, $want, %o) = @_;
    my $merchant = $o{merchant} || 'shop';
    my $r = $t->request(path => "/$merchant/echo?case=$case", consumer => 'alice', data => $body,
                        headers => ["Content-Type: $ct", @{ $o{headers} || [] }]);
    is($r->{status}, 200, "$case: relayed, 200") or diag "$r->{curl_out} $r->{raw_headers}";
    like($r->{body}, qr/^body-length: ${\ length $body}$/m, "$case: the merchant got it whole");
    my @rows = $t->records("uri = ? AND direction = 'request'", "/echo?case=$case");
    is(scalar @rows, $want, "$case: " . ($want ? 'recorded once' : 'not recorded'));
    if ($want && @rows) {
        ok($rows[0]{body} eq $body, "$case: the record keeps the bytes exactly as sent")
            or diag 'recorded ' . length($rows[0]{body}) . ' bytes, sent ' . length($body);
        is($rows[0]{content_type}, $ct, "$case: its Content-Type as sent");
    }
    is(scalar($t->records("uri = ? AND direction = 'response'", "/echo?case=$case")), 0,
       "$case: the echoed response (no response rule matches it) is not recorded");
    return $r;
}

# ---- forms as browsers send them
my ($ct, $body) = py_body(<<'EOF');
from urllib.parse import urlencode
open(sys.argv[1], 'wb').write(urlencode({'name': 'Taro Yamada', 'accept': 'I agree to the terms', 'go': 'Send'}).encode())
print('application/x-www-form-urlencoded')
EOF
like($body, qr/accept=I\+agree\+to\+the\+terms/, 'form body has + for spaces');
post_case('form', $ct, $body, 1);
($ct, $body) = py_body(<<'EOF');
from urllib.parse import urlencode
open(sys.argv[1], 'wb').write(urlencode({'name': 'Taro Yamada', 'accept': 'I agree to the rules', 'go': 'Send'}).encode())
print('application/x-www-form-urlencoded')
EOF
post_case('form-other', $ct, $body, 0);

($ct, $body) = py_body(<<'EOF');
from urllib.parse import urlencode
open(sys.argv[1], 'wb').write(urlencode({'name': '山田太郎', 'consent': '契約に同意します'}).encode())
print('application/x-www-form-urlencoded')
EOF
like($body, qr/consent=%E5%A5%91/, 'Japanese form body is percent-encoded UTF-8');
post_case('form-ja', $ct, $body, 1);
($ct, $body) = py_body(<<'EOF');
from urllib.parse import urlencode
open(sys.argv[1], 'wb').write(urlencode({'name': '山田太郎', 'consent': '契約に同意しません'}).encode())
print('application/x-www-form-urlencoded')
EOF
post_case('form-ja-other', $ct, $body, 0);

# <form accept-charset="Shift_JIS"> with <input type=hidden name=_charset_>:
# the browser sends Shift_JIS bytes and fills _charset_ in
($ct, $body) = py_body(<<'EOF');
from urllib.parse import urlencode
open(sys.argv[1], 'wb').write(urlencode([('_charset_', 'Shift_JIS'), ('name', '山田太郎'), ('consent', '契約に同意します')], encoding='shift_jis').encode())
print('application/x-www-form-urlencoded')
EOF
like($body, qr/consent=%8C_%96%F1/, 'Shift_JIS form body (a trail byte left as the ASCII _)');
post_case('form-sjis', $ct, $body, 1);
($ct, $body) = py_body(<<'EOF');
from urllib.parse import urlencode
open(sys.argv[1], 'wb').write(urlencode([('_charset_', 'Shift_JIS'), ('name', '山田太郎'), ('consent', '契約を拒否します')], encoding='shift_jis').encode())
print('application/x-www-form-urlencoded')
EOF
post_case('form-sjis-other', $ct, $body, 0);

# ---- multipart: the text in a quoted-printable part, or in a base64 part
my $mp = <<'EOF';
import email.encoders, email.policy
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
def form(parts):
    msg = MIMEMultipart('form-data')
    for name, text, enc in parts:
        p = MIMEText('', 'plain', 'utf-8')
        del p['Content-Transfer-Encoding']
        del p['MIME-Version']
        p.set_payload(text.encode('utf-8'))
        (email.encoders.encode_base64 if enc == 'b64' else email.encoders.encode_quopri)(p)
        p.add_header('Content-Disposition', 'form-data', name=name)
        msg.attach(p)
    raw = msg.as_bytes(policy=email.policy.HTTP)
    head, body = raw.split(b'\r\n\r\n', 1)
    open(sys.argv[1], 'wb').write(body)
    print(msg['Content-Type'].replace('\n', ''))
EOF
($ct, $body) = py_body($mp . <<'EOF');
form([('name', 'Taro', 'b64'),
      ('consent', 'ご確認ください。' * 6 + '契約に同意します', 'qp')])
EOF
like($body, qr/Content-Transfer-Encoding: quoted-printable/, 'multipart body has a quoted-printable part');
unlike($body, qr/\Q$KW8\E/, '... the text is not in it as UTF-8 bytes');
post_case('multipart-qp', $ct, $body, 1);
($ct, $body) = py_body($mp . <<'EOF');
form([('name', 'Taro', 'qp'),
      ('consent', 'Please read. ' * 5 + 'I agree to the terms', 'b64')])
EOF
like($body, qr/Content-Transfer-Encoding: base64/, 'multipart body has a base64 part');
unlike($body, qr/\Q$AGREE\E/, '... the text is not in it as transmitted');
post_case('multipart-b64', $ct, $body, 1);
($ct, $body) = py_body($mp . <<'EOF');
form([('name', 'I agree', 'b64'),
      ('consent', ' to the terms', 'qp')])
EOF
post_case('multipart-other', $ct, $body, 0);

# ---- JSON from json.dumps (\u escapes), plain and gzip-compressed
($ct, $body) = py_body(<<'EOF');
import json
open(sys.argv[1], 'wb').write(json.dumps({'order': 17, 'consent': '契約に同意します'}).encode())
print('application/json')
EOF
like($body, qr/\\u5951\\u7d04/, 'JSON body has \\u escapes');
post_case('json', $ct, $body, 1);
($ct, $body) = py_body(<<'EOF');
import json
open(sys.argv[1], 'wb').write(json.dumps({'order': 17, 'consent': '契約を拒否します'}).encode())
print('application/json')
EOF
post_case('json-other', $ct, $body, 0);
($ct, $body) = py_body(<<'EOF');
import json, gzip
open(sys.argv[1], 'wb').write(gzip.compress(json.dumps({'order': 17, 'consent': '契約に同意します'}).encode()))
print('application/json')
EOF
post_case('json-gzip', $ct, $body, 1, headers => ['Content-Encoding: gzip']);
($ct, $body) = py_body(<<'EOF');
import json, gzip
open(sys.argv[1], 'wb').write(gzip.compress(json.dumps({'order': 17, 'consent': '契約を拒否します'}).encode()))
print('application/json')
EOF
post_case('json-gzip-other', $ct, $body, 0, headers => ['Content-Encoding: gzip']);

# invalid JSON: matched as transmitted, and the error log says so
post_case('json-invalid', 'application/json', "consent=I agree to the terms", 1);
like($t->notary_error_log, qr/NOTARY03301: request body: not valid JSON/,
     'invalid JSON: warning NOTARY03301 logged');

# ---- responses: br, and a charset only <meta> names
$r = $t->request(path => '/shop/static/terms.br', consumer => 'alice');
is($r->{status}, 200, 'br response: 200');
is($r->{headers}{'content-encoding'}, 'br', '... sent with Content-Encoding: br');
my @rows = $t->records("uri = ? AND direction = 'response'", '/static/terms.br');
is(scalar @rows, 1, 'br response with the text: recorded once');
ok(@rows && $rows[0]{body} eq NotaryTest::read_file("$doc/static/terms.br"),
   '... its body the br bytes as sent');
$r = $t->request(path => '/shop/static/meta-sjis.html', consumer => 'alice');
is($r->{status}, 200, '<meta>-only Shift_JIS page: 200');
unlike($r->{headers}{'content-type'} // '', qr/charset/i, '... no charset in its Content-Type');
@rows = $t->records("uri = ? AND direction = 'response'", '/static/meta-sjis.html');
is(scalar @rows, 1, '<meta>-only Shift_JIS page with the text: recorded once');
$r = $t->request(path => '/shop/static/meta-sjis-other.html', consumer => 'alice');
is(scalar($t->records('uri = ?', '/static/meta-sjis-other.html')), 0,
   '<meta>-only Shift_JIS page without the text: not recorded');

# ---- Accept-Encoding towards a merchant with response rules
$r = $t->request(path => '/shop/echo?case=ae', consumer => 'alice',
                 headers => ['Accept-Encoding: compress, br;q=1.0, dcb, zstd, *;q=0.1']);
like($r->{body}, qr/^header accept-encoding: br;q=1\.0, zstd$/m,
     'shop (response rules): Accept-Encoding narrowed to codings the notary reads')
    or diag $r->{body};
$r = $t->request(path => '/plain/echo?case=ae', consumer => 'alice',
                 headers => ['Accept-Encoding: compress, br, dcb']);
like($r->{body}, qr/^header accept-encoding: compress, br, dcb$/m,
     'plain (no response rules): Accept-Encoding passed unchanged') or diag $r->{body};

unlike($t->notary_error_log, qr/\[(?:crit|alert|emerg)\]|AH00052|segfault/,
       'no crash in the error log');
done_testing;
