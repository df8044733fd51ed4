#!/usr/bin/perl
# Issue a mod_notary contract link with Crypt::JWT (docs/token.md).
#
# usage: issue_token.pl KEY.pem CONSUMER NOTARY_URL MERCHANT PATH [JTI [ALG]]
#   (the arguments as in issue_token.py)
#
# Debian: libcrypt-jwt-perl (with libcryptx-perl)
use strict;
use warnings;
use Crypt::JWT qw(encode_jwt);
use Crypt::Digest::SHA256 qw(sha256);
use Crypt::Misc qw(encode_b64u decode_b64 pem_to_der);
use Crypt::PK::ECC;
use Crypt::PK::Ed25519;
use Crypt::PK::RSA;

use constant LIFETIME => 600;    # seconds; the notary accepts at most NotaryTokenMaxAge (900)

sub load_key {
    my ($file) = @_;
    for my $class (qw(Crypt::PK::Ed25519 Crypt::PK::ECC Crypt::PK::RSA)) {
        my $key = eval { $class->new($file) };
        return $key if $key && $key->is_private;
    }
    die "$file: not an RSA, EC or Ed25519 private key in PEM\n";
}

sub consumer_cert_der {
    my ($consumer) = @_;
    # a Client-Cert header value, ":BASE64-DER:"
    if ($consumer =~ /^\s*:([A-Za-z0-9+\/]+=*):\s*$/) {
        my $b64 = $1;    # a copy: passed as $1, it may change inside decode_b64
        return decode_b64($b64) // die "Client-Cert is not :BASE64:\n";
    }
    open my $fh, '<', $consumer or die "$consumer: $!\n";
    my $pem = do { local $/; <$fh> };
    $pem =~ /(-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----)/s
        or die "$consumer: not a PEM certificate\n";
    return pem_to_der($1);
}

sub default_alg {
    my ($key) = @_;
    return 'RS256' if $key->isa('Crypt::PK::RSA');
    return 'EdDSA' if $key->isa('Crypt::PK::Ed25519');
    my $curve = $key->key2hash->{curve_name} // '';
    return 'ES256' if $curve eq 'secp256r1';
    return 'ES384' if $curve eq 'secp384r1';
    die "the key must be RSA, EC P-256, EC P-384 or Ed25519\n";
}

sub issue_token {
    my ($key, $cert_der, $audience, $jti, $alg) = @_;
    my $now = time;
    my %claims = (aud => $audience, cnf => { 'x5t#S256' => encode_b64u(sha256($cert_der)) },
                  iat => $now, exp => $now + LIFETIME);
    $claims{jti} = $jti if defined $jti && length $jti;
    # Crypt::JWT writes ECDSA signatures as R || S, as JWS requires
    return encode_jwt(payload => \%claims, key => $key, alg => $alg || default_alg($key),
                      extra_headers => { typ => 'notary+jwt' });
}

sub contract_link {
    my ($notary_url, $merchant, $path, $token) = @_;
    (my $base = $notary_url) =~ s{/+$}{};
    return "$base/$merchant$path" . ($path =~ /\?/ ? '&' : '?') . "notary_token=$token";
}

die "usage: issue_token.pl KEY.pem CONSUMER NOTARY_URL MERCHANT PATH [JTI [ALG]]\n"
    if @ARGV < 5 || @ARGV > 7;
my ($keyfile, $consumer, $notary_url, $merchant, $path, $jti, $alg) = @ARGV;
# aud: the notary's host only, no port
$notary_url =~ m{^https://(?:\[([^\]]+)\]|([^:/?#]+))}i
    or die "NOTARY_URL must be https://HOST[:PORT]\n";
my $audience = lc($1 // $2);
my $token = issue_token(load_key($keyfile), consumer_cert_der($consumer), $audience, $jti, $alg);
print contract_link($notary_url, $merchant, $path, $token), "\n";
