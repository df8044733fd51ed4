# The token samples of the manual (docs/examples/issue_token.{py,js,go,pl})
# are real: each, run as a merchant would run it, issues contract links
# that a real notary accepts for every key type and algorithm, from the
# consumer's PEM certificate and from the Client-Cert header the notary
# sends; and the manual shows exactly these files.
#
# Debian: python3-jwt python3-cryptography, nodejs, golang-go,
# libcrypt-jwt-perl libcryptx-perl (script/common.sh installs them).
use strict;
use warnings;
use Test::More;
use JSON::PP;
use MIME::Base64 qw(decode_base64 encode_base64);
use NotaryTest;

my $src = $NotaryTest::SRCDIR;
my $ex = "$src/docs/examples";

# ---------------------------------------------------------------------
# The manual's code blocks are these files, byte for byte: a block is
# introduced by "<!-- example: examples/FILE -->" on the line before it.
my %file = map { $_ => NotaryTest::read_file("$ex/issue_token.$_") } qw(py js go pl);
my %included;
for my $doc (qw(docs/mod_notary.md docs/merchant.md)) {
    my $text = NotaryTest::read_file("$src/$doc");
    while ($text =~ /^<!-- example: examples\/(\S+) -->\n```\w*\n(.*?)^```$/msg) {
        my ($name, $block) = ($1, $2);
        my ($ext) = $name =~ /^issue_token\.(\w+)$/;
        ok($ext && exists $file{$ext}, "$doc shows $name, one of docs/examples/") or next;
        NotaryTest::is_bytes($block, $file{$ext}, "$doc: the block of $name is docs/examples/$name");
        $included{$ext}++;
    }
}
for my $ext (sort keys %file) {
    ok($included{$ext}, "the manual shows docs/examples/issue_token.$ext");
}

# ---------------------------------------------------------------------
# A notary and four merchants, one per key type; a fifth merchant whose
# key file is in the traditional PEM form ("EC PRIVATE KEY").
# A token bound to another consumer is refused (02008); the merchant
# "locked" has the manual's backend settings (only the notary's client
# certificate gets in), so a direct client is refused there (AH01630).
my $t = NotaryTest->new(allow_log => [qw(NOTARY02008 AH01630)]);
my $proxy_cn = 'notary.test proxy client';    # the harness's SSLProxyMachineCertificateFile
$t->add_merchant('locked', 'ec256', extra => <<"EOF");
    SSLVerifyClient require
    SSLCACertificateFile @{[ $t->ca ]}
    <Location "/">
        Require expr "%{SSL_CLIENT_S_DN_CN} == '$proxy_cn'"
    </Location>
EOF
$t->add_merchant('p256', 'ec256');
$t->add_merchant('p384', 'ec384');
$t->add_merchant('rsa', 'rsa');
$t->add_merchant('ed', 'ed25519');
$t->add_merchant('trad', 'ec256');
my $trad_key = $t->pki . '/merchant-trad-traditional.key';
NotaryTest::run_cmd('openssl', 'pkey', '-in', $t->merchant('trad')->{key}, '-traditional',
                    '-out', $trad_key);
like(NotaryTest::read_file($trad_key), qr/^-----BEGIN EC PRIVATE KEY-----/,
     'the traditional key file is a SEC1 "EC PRIVATE KEY"');
$t->start;
my $notary_url = 'https://notary.test:' . $t->notary_port;

# How each sample runs: Go is built once (GOPATH mode, standard library
# only: nothing is downloaded).
my $go_bin = $t->dir . '/issue_token_go';
{
    my $cache = $t->dir . '/gocache';
    my $out = `GOCACHE='$cache' GO111MODULE=off GOFLAGS= go build -o '$go_bin' '$ex/issue_token.go' 2>&1`;
    is($?, 0, 'go build docs/examples/issue_token.go') or diag $out;
}
my %run = (
    py => ['/usr/bin/python3', "$ex/issue_token.py"],
    js => ['node', "$ex/issue_token.js"],
    go => [$go_bin],
    pl => ['/usr/bin/perl', "$ex/issue_token.pl"],
);

# Runs a sample; returns its contract link (undef and a failed test when
# it fails or prints something else).
sub issue {
    my ($lang, $label, @args) = @_;
    my $errf = $t->dir . "/sample-stderr";
    my $cmd = join ' ', map { NotaryTest::_q($_) } @{ $run{$lang} }, @args;
    my $out = `$cmd 2>'$errf'`;
    my $rc = $?;
    my $err = -f $errf ? NotaryTest::read_file($errf) : '';
    chomp $out;
    if ($rc || $out !~ m{\A\Q$notary_url\E/}) {
        fail("$lang: $label: the sample prints a contract link");
        diag "exit status $rc; stdout: $out\nstderr: $err";
        return undef;
    }
    return $out;
}

# The JSON of a token's header or payload.
sub part {
    my ($token, $i) = @_;
    (my $b = (split /\./, $token)[$i]) =~ tr/-_/+\//;
    return decode_json(decode_base64($b . '=' x ((4 - length($b) % 4) % 4)));
}

# One contract link: its form, its token's header and claims, and the
# notary's verdict (200 through to the merchant's echo, the token removed,
# the session opened with this jti).
sub admits_ok {
    my (%o) = @_;
    my ($lang, $m, $consumer, $jti, $alg, $label) = @o{qw(lang merchant consumer jti alg label)};
    my $link = $o{link} or return;
    my ($path, $token) = $link =~ m{\A\Q$notary_url\E(/\Q$m\E/echo\?x=1&notary_token=([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+))\z};
    ok(defined $token, "$lang: $label: the link is NOTARY/$m/echo?x=1&notary_token=TOKEN")
        or return diag "link: $link";
    my $hdr = part($token, 0);
    my $claims = part($token, 1);
    is_deeply([$hdr->{alg}, $hdr->{typ}], [$alg, 'notary+jwt'], "$lang: $label: header alg $alg, typ notary+jwt");
    is($claims->{aud}, 'notary.test', "$lang: $label: aud is the notary's host, without the port");
    is($claims->{exp} - $claims->{iat}, 600, "$lang: $label: a 600 s lifetime");
    my $log_before = length $t->notary_error_log;
    my $r = $t->request(path => $path, consumer => $consumer);
    is($r->{status}, 200, "$lang: $label: the notary admits the consumer with it")
        or return diag "$r->{body}\n" . substr($t->notary_error_log, $log_before);
    like($r->{body}, qr{^uri: /echo\?x=1$}m, "$lang: $label: ... the token parameter is not forwarded");
    like(substr($t->notary_error_log, $log_before),
         qr/NOTARY02013: contract session opened: merchant \Q$m\E, until $claims->{exp}, jti \Q$jti\E /,
         "$lang: $label: ... and the session it opens carries the jti");
    return $r;
}

my @cases = (['p256', 'ES256'], ['p384', 'ES384'], ['rsa', 'RS256'], ['rsa', 'PS256'], ['ed', 'EdDSA']);
for my $lang (qw(py js go pl)) {
    my $first;
    # every key type, from the consumer's PEM certificate; a new consumer
    # each time, so that only the token can admit it
    for my $case (@cases) {
        my ($m, $alg) = @$case;
        my $c = "$lang-$alg";
        my ($cert) = $t->consumer($c, $alg eq 'ES384' ? 'rsa' : 'ec256');
        my $jti = "order-$lang-$alg";
        my $link = issue($lang, "$alg from a PEM certificate", $t->merchant($m)->{key}, $cert,
                         $notary_url, $m, '/echo?x=1', $jti, ($alg eq 'PS256' ? 'PS256' : ()));
        admits_ok(lang => $lang, merchant => $m, consumer => $c, jti => $jti, alg => $alg,
                  label => "$alg from a PEM certificate", link => $link);
        $first //= $link;
    }

    # the Client-Cert header a merchant gets from the notary: the consumer
    # is in a session at p256 (a notary-link token), the p256 backend
    # echoes the header, and a token for merchant trad is issued from it
    # with trad's key in the traditional PEM form
    my $c = "$lang-header";
    my ($cert) = $t->consumer($c);
    my $tok = $t->link_token(merchant => 'p256', consumer => $c);
    my $r = $t->request(path => "/p256/echo?notary_token=$tok", consumer => $c);
    my ($header) = $r->{body} =~ /^header client-cert: (.*)$/m;
    my $der = NotaryTest::run_out('openssl', 'x509', '-in', $cert, '-outform', 'DER');
    is($header, ':' . encode_base64($der, '') . ':',
       "$lang: the merchant gets the consumer's certificate as Client-Cert :BASE64-DER:");
    my $link = issue($lang, 'ES256 from the Client-Cert header, traditional key file', $trad_key,
                     $header // ':missing:', $notary_url, 'trad', '/echo?x=1', "order-$lang-header");
    admits_ok(lang => $lang, merchant => 'trad', consumer => $c, jti => "order-$lang-header", alg => 'ES256',
              label => 'ES256 from the Client-Cert header, traditional key file', link => $link);

    # and the binding holds: another consumer cannot use the first link
    next unless $first;
    my ($path) = $first =~ m{\A\Q$notary_url\E(/.*)\z};
    $t->consumer("$lang-other");
    $t->refused_ok("$lang: the ES256 link is refused to another consumer (403, NOTARY02008)",
                   status => 403, lognum => '02008', merchant => 'p256',
                   reason => qr/token is bound to another consumer certificate/,
                   request => { path => $path, consumer => "$lang-other" });
}

# ---------------------------------------------------------------------
# The manual's backend settings ("Connection B: only the notary"): the
# notary gets in and the backend reads Client-Cert; a consumer connecting
# directly, with or without a certificate, does not get in -- nor does a
# certificate from the same CA with another name.
{
    my $c = 'locked-consumer';
    my ($cert) = $t->consumer($c);
    my $link = issue('py', 'for the locked merchant', $t->merchant('locked')->{key}, $cert,
                     $notary_url, 'locked', '/echo?x=1', 'order-locked');
    my $r = admits_ok(lang => 'py', merchant => 'locked', consumer => $c, jti => 'order-locked',
                      alg => 'ES256', label => 'a backend that requires the notary\'s certificate',
                      link => $link);
    my $der = NotaryTest::run_out('openssl', 'x509', '-in', $cert, '-outform', 'DER');
    like($r ? $r->{body} : '', qr/^header client-cert: \Q:${\ encode_base64($der, '')}:\E$/m,
         '... and reads the consumer\'s certificate from Client-Cert');
    my $direct = $t->merchant_url('locked') . '/echo';
    $r = $t->request(url => $direct, consumer => $c);
    is($r->{status}, 0, 'a consumer connecting to that backend directly gets no TLS connection')
        or diag "status $r->{status}: $r->{body}";
    $r = $t->request(url => $direct);
    is($r->{status}, 0, '... nor does a client without a certificate')
        or diag "status $r->{status}: $r->{body}";
    my ($ic, $ik) = $t->issue('intruder', 'ec256', cn => 'intruder', eku => 'clientAuth');
    $r = $t->request(url => $direct, curl_args => ['--cert', $ic, '--key', $ik]);
    is($r->{status}, 403, '... and a certificate from the notary\'s CA with another name is refused (Require expr)')
        or diag "status $r->{status}: $r->{body}";
}

done_testing();
