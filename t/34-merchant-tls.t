# A merchant whose TLS the notary's SSLProxy* settings reject (issue 17):
# the consumer gets 502 with the NOTARY02011 refusal naming mod_ssl's
# reason, not mod_proxy's "500 Proxy Error", and the error log one
# NOTARY02011 line with the same reason. Real certificates for every mode:
# self-signed (SSLProxyVerify require), expired (SSLProxyVerify require,
# and SSLProxyVerify none with SSLProxyCheckPeerExpire), registered by IP
# address and by a name the certificate does not carry (SSLProxyCheckPeerName on).
use strict;
use warnings;
use Test::More;
use NotaryTest;

# NOTARY02011: the refusals. mod_ssl's AH02039 (its verify error, at
# error level when LogLevel is below info; at info it is AH02276) and
# mod_proxy's AH00898/AH01084/AH01097 (the failed request, as it sees
# it); AH01909: the merchants' own httpd warns that
# 'othername' does not carry its ServerName, which is the point
my $t = NotaryTest->new(allow_log => [qw(NOTARY02011 AH02039 AH00898 AH01084 AH01097
                                          AH01909)]);
my $pki = $t->pki;
my $ca = $t->ca;

$t->add_merchant('good', 'ec256');
# self-signed: the key is the merchant's, no CA vouches for it
my $ss = $t->add_merchant('selfsigned', 'ec256');
NotaryTest::run_cmd('openssl', 'req', '-x509', '-new', '-key', $ss->{key},
                    '-out', "$pki/selfsigned.pem", '-days', '2', '-subj', '/CN=localhost',
                    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
                    # a server certificate, not a CA's (the merchants' mod_ssl warns, AH01906)
                    '-addext', 'basicConstraints=critical,CA:FALSE');
$ss->{cert} = "$pki/selfsigned.pem";
# expired in January 2024, signed by the test CA (openssl ca sets
# the dates; x509 -req cannot)
my $ex = $t->add_merchant('expired', 'ec256');
{
    my $d = "$pki/ca-db";
    mkdir $d;
    mkdir "$d/new";
    NotaryTest::write_file("$d/index.txt", '');
    NotaryTest::write_file("$d/serial", "1000\n");
    NotaryTest::write_file("$d/ca.cnf", <<"EOF");
[ca]
default_ca = test_ca
[test_ca]
database = $d/index.txt
new_certs_dir = $d/new
serial = $d/serial
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
EOF
    NotaryTest::write_file("$d/ext", "basicConstraints=CA:FALSE\n"
                           . "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                           . "extendedKeyUsage=serverAuth,clientAuth\n");
    NotaryTest::run_cmd('openssl', 'req', '-new', '-key', $ex->{key}, '-out', "$d/expired.csr",
                        '-subj', '/CN=localhost');
    NotaryTest::run_cmd('openssl', 'ca', '-batch', '-config', "$d/ca.cnf", '-cert', $ca,
                        '-keyfile', "$pki/ca.key", '-in', "$d/expired.csr",
                        '-out', "$pki/expired.pem", '-notext', '-extfile', "$d/ext",
                        '-startdate', '20240101000000Z', '-enddate', '20240102000000Z');
    $ex->{cert} = "$pki/expired.pem";
}
# a valid certificate for another name
my $on = $t->add_merchant('othername', 'ec256');
@{$on}{qw(cert key)} = $t->issue('merchant-othername', 'ec256', cn => 'other.example',
                                 san => 'DNS:other.example');

# The refusal, as the consumer and the error log see it: 502, the reason
# in the body and in one NOTARY02011 line, nothing reached the merchant.
sub refused_tls {
    my ($name, $path, $reason, $what, $backend) = @_;
    $backend //= $name;
    my $tag = "tls-" . int(rand(1e9));
    my $off = length $t->notary_error_log;
    my $tok = $t->link_token(merchant => $name, consumer => 'alice');
    my $r = $t->request(path => "/$path/static/hello.txt?$tag=1&notary_token=$tok",
                        consumer => 'alice');
    my $log = substr($t->notary_error_log, $off);
    is($r->{status}, 502, "$what: 502") or diag "body: $r->{body}\nlog: $log";
    like($r->{body}, qr/^notary refused the request: .*$reason/, "... the body names mod_ssl's reason")
        or diag $r->{body};
    unlike($r->{body}, qr/Proxy Error/, '... not mod_proxy\'s Proxy Error page');
    my @lines = grep { /NOTARY02011: / } split /\n/, $log;
    is(scalar @lines, 1, '... one NOTARY02011 line') or diag $log;
    like($lines[0] // '', qr/NOTARY02011: refused GET \/$path\/static\/hello\.txt: .*$reason/,
         '... with the same reason');
    $t->backend_sync('good');   # the merchants' httpd has logged what it answered
    my $f = "$t->{dir}/logs/backend-$backend.log";
    my $hits = -f $f ? () = NotaryTest::read_file($f) =~ /$tag/g : 0;
    is($hits, 0, '... and no request reached the merchant');
}

sub admitted {
    my ($name, $path, $what) = @_;
    my $tok = $t->link_token(merchant => $name, consumer => 'alice');
    my $r = $t->request(path => "/$path/static/hello.txt?notary_token=$tok", consumer => 'alice');
    is($r->{status}, 200, "$what: admitted") or diag $r->{body}, $t->notary_error_log;
    is($r->{body}, "hello from $name\n", '... and relayed');
}

# ---- SSLProxyVerify require (the harness's, as conf/notary.conf advises),
# merchants registered by IP address, SSLProxyCheckPeerName off
$t->start;
admitted('good', 'good', 'a merchant with a certificate from the trusted CA');
refused_tls('selfsigned', 'selfsigned', qr/SSLProxyVerify refuses the merchant's certificate: self-signed certificate \(X509 error 18 at depth 0, \/CN=localhost\)/,
            'a self-signed merchant under SSLProxyVerify require');
refused_tls('expired', 'expired', qr/SSLProxyVerify refuses the merchant's certificate: certificate has expired \(X509 error 10 at depth 0, \/CN=localhost\)/,
            'an expired merchant certificate under SSLProxyVerify require');

# ---- SSLProxyCheckPeerName on: by IP address, by a name the certificate
# lacks, and by the name it carries
my %port = map { $_ => $t->merchant($_)->{port} } qw(good othername);
$t->restart(merchants => [], extra => "    SSLProxyCheckPeerName on\n"
            . "    NotaryMerchant goodip https://127.0.0.1:$port{good}\n"
            . "    NotaryMerchant good https://localhost:$port{good}\n"
            . "    NotaryMerchant othername https://localhost:$port{othername}\n");
admitted('good', 'good', 'SSLProxyCheckPeerName on, the merchant by a name its certificate carries');
{
    # 'goodip' is the good merchant's backend under another name: its key
    # signs the token (link_token looks the name up)
    local $t->{merchants}{goodip} = $t->merchant('good');
    refused_tls('goodip', 'goodip', qr/the merchant is registered by IP address \(127\.0\.0\.1\) and SSLProxyCheckPeerName matches only the DNS names and the CN of its certificate \(\/CN=localhost\), never an address/,
                'SSLProxyCheckPeerName on, the merchant by IP address (its certificate has an IP SAN)',
                'good');
}
refused_tls('othername', 'othername', qr/the merchant's certificate \(\/CN=other\.example\) does not match the host name localhost \(SSLProxyCheckPeerName\)/,
            'SSLProxyCheckPeerName on, a certificate for another name');

# ---- SSLProxyVerify none, SSLProxyCheckPeerExpire on: mod_ssl's check
# after the handshake
$t->restart(extra => "    SSLProxyVerify none\n    SSLProxyCheckPeerExpire on\n");
admitted('good', 'good', 'SSLProxyVerify none: a valid certificate');
refused_tls('expired', 'expired', qr/the merchant's certificate \(\/CN=localhost\) expired on Jan  2 00:00:00 2024 GMT \(SSLProxyCheckPeerExpire\)/,
            'SSLProxyCheckPeerExpire on, an expired certificate');

done_testing;
