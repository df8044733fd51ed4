# Contract tokens: verified against the key the merchant's backend presents
# in the TLS handshake; every refusal is a 403 (400 for a malformed request)
# with the reason, a NOTARY log line, and no byte at the backend.
use strict;
use warnings;
use Test::More;
use NotaryTest;

# refusals: token not URL-encoded (02007), two tokens (02006),
# invalid (02008), none (02009), signature or key mismatch on connection B
# (02012) -- there mod_proxy logs the request it could not pass on (AH01084,
# AH01097)
my $t = NotaryTest->new(allow_log => [qw(NOTARY02006 NOTARY02007 NOTARY02008 NOTARY02009 NOTARY02012 AH01084 AH01097)]);
$t->add_merchant('shop', 'ec256');
$t->add_merchant('p384', 'ec384');
$t->add_merchant('rsa', 'rsa');
$t->add_merchant('ed', 'ed25519');
$t->start;
my $now = time;

sub try_token {
    my ($tok, %o) = @_;
    my $m = $o{merchant} || 'shop';
    return { path => "/$m/echo?before=1&notary_token=$tok&after=2", consumer => $o{consumer} || 'alice' };
}

sub refuse_token {
    my ($name, $tok, $reason, %o) = @_;
    $t->refused_ok("$name: 403", status => 403, reason => $reason, lognum => $o{lognum} || '020(08|12)',
                   merchant => $o{merchant} || 'shop', request => try_token($tok, %o));
}

# ---- refusals (alice has no contract session at shop)
$t->refused_ok('no token and no session: 403', status => 403, lognum => '02009',
               reason => qr/no contract token and no contract session/,
               request => { path => '/shop/echo', consumer => 'alice' });
refuse_token('malformed token', 'not-a-token', qr/malformed/);
refuse_token('two parts only', 'eyJhbGciOiJFUzI1NiJ9.eyJhIjoxfQ', qr/malformed/);
refuse_token('empty token', '', qr/malformed/);
refuse_token('garbage in base64url', 'eyJ!.e30.AA', qr/malformed/);
refuse_token('oversized token (over 4096 bytes)', 'A' x 5000 . '.e30.AA', qr/too large/);
$t->refused_ok('a token beyond LimitRequestLine: 414 from httpd', status => 414,
               request => try_token('A' x 8300));

my $good = $t->link_token(merchant => 'shop', consumer => 'alice');
(my $badsig = $good) =~ s/(.)(.)$/ ($2 eq 'A' ? 'B' : 'A') . $2 /e;
$badsig =~ s/\.([^.]{10})/.$1/;  # keep shape
{
    my @p = split /\./, $good;
    my $sig = $p[2];
    substr($sig, 5, 1) = substr($sig, 5, 1) eq 'A' ? 'B' : 'A';
    refuse_token('signature altered', "$p[0].$p[1].$sig", qr/signature/);
    # claims altered after signing: the signature no longer covers them
    my $other = $t->link_token(merchant => 'shop', consumer => 'alice', jti => 'other');
    my @q = split /\./, $other;
    refuse_token('claims of one token with the signature of another', "$q[0].$q[1].$sig", qr/signature/);
}
refuse_token('signed with another merchant\'s key (P-256 too)',
             $t->link_token(merchant => 'shop', consumer => 'alice', key => $t->merchant('rsa')->{key} =~ s/rsa/rsa/r && do {
                 # a second P-256 key, not the one shop's backend presents
                 my $k = $t->genkey('stranger', 'ec256'); $k }),
             qr/signature/);
# A refusal for the claims names what was expected -- the audience, the
# lifetime limit, the clock skew -- in the body and in the log line, so the
# merchant can fix its issuer from the 403 alone.
sub refuse_expecting {
    my ($name, $tok, $want, %o) = @_;
    my $log_before = length $t->notary_error_log;
    refuse_token($name, $tok, $want, %o);
    my $log = substr($t->notary_error_log, $log_before);
    like($log, qr/NOTARY02008: refused GET \S+: .*$want/, "... and the log line says the same: $name");
}
refuse_expecting('expired', $t->link_token(merchant => 'shop', consumer => 'alice', now => $now - 1000, lifetime => 600),
                 qr/token expired \(token exp is \d+ s in the past: at most 60 s of clock skew is allowed\)/);
refuse_expecting('not yet valid', $t->link_token(merchant => 'shop', consumer => 'alice', now => $now + 1000, lifetime => 600),
                 qr/token not yet valid \(token iat is \d+ s in the future: at most 60 s of clock skew is allowed\)/);
refuse_expecting('lifetime over NotaryTokenMaxAge (900 s)', $t->link_token(merchant => 'shop', consumer => 'alice', lifetime => 901),
                 qr/token lifetime too long \(token lifetime \(exp - iat\) is 901 s: at most NotaryTokenMaxAge 900 s is accepted\)/);
refuse_expecting('wrong audience', $t->link_token(merchant => 'shop', consumer => 'alice', aud => 'evil.test'),
                 qr/token is for another notary \(token aud does not name this notary: aud must be "notary\.test", this virtual host's ServerName\)/);
refuse_token('bound to another consumer', $t->link_token(merchant => 'shop', consumer => 'bob'),
             qr/certificate|bound|binding/);
refuse_token('alg none', $t->mint(merchant => 'shop', consumer => 'alice', args => ['--alg-none']),
             qr/none/);
refuse_token('HS256 keyed with the merchant public key (key confusion)',
             $t->mint(merchant => 'shop', consumer => 'alice', args => ['--hmac-with-pubkey']),
             qr/HMAC|HS256/i);
refuse_token('RS256 token at an EC merchant (alg does not fit the key)',
             $t->mint(merchant => 'shop', consumer => 'alice', key => $t->merchant('rsa')->{key}, alg => 'RS256'),
             qr/does not fit|mismatch|key type/i);
refuse_token('ES384 token at a P-256 merchant', 
             $t->mint(merchant => 'shop', consumer => 'alice', key => $t->merchant('p384')->{key}, alg => 'ES384'),
             qr/does not fit|mismatch|curve|key/i);
refuse_token('unsupported alg RS512', 
             $t->mint(merchant => 'rsa', consumer => 'alice', alg => 'RS512'),
             qr/unsupported|not supported|algorithm/i, merchant => 'rsa');
refuse_token('typ other than notary+jwt or JWT',
             $t->mint(merchant => 'shop', consumer => 'alice', header => '{"typ":"at+jwt"}'), qr/typ/);
refuse_token('missing cnf claim',
             $t->mint(merchant => 'shop', consumer => 'alice', claims => '{"cnf":null}'), qr/cnf|claim/);
refuse_token('missing exp claim',
             $t->mint(merchant => 'shop', consumer => 'alice', claims => '{"exp":null}'), qr/exp|claim/);
$t->refused_ok('two tokens in one request: 400', status => 400, lognum => '02006',
               reason => qr/more than one contract token/,
               request => { path => "/shop/echo?notary_token=$good&notary_token=$good", consumer => 'alice' });
$t->refused_ok('a token with a broken %-escape: 400', status => 400, lognum => '02007',
               reason => qr/not properly URL-encoded/,
               request => { path => "/shop/echo?notary_token=%zz$good", consumer => 'alice' });
{
    # a percent-encoded token is decoded before it is verified
    my $c = 'encoded';
    $t->consumer($c);
    (my $enc = $t->link_token(merchant => 'shop', consumer => $c)) =~ s/\./%2E/g;
    my $r = $t->request(path => "/shop/echo?notary_token=$enc", consumer => $c);
    is($r->{status}, 200, 'a percent-encoded token (dots as %2E) is accepted') or diag $r->{body};
}
# kid/jwk/x5t in the header never choose the key
refuse_token('header jwk naming another key is ignored (signature checked with the presented key)',
             $t->mint(merchant => 'shop', consumer => 'alice', key => $t->genkey('attacker', 'ec256'),
                      header => '{"kid":"x","jwk":{"kty":"EC"},"x5t":"abc"}'), qr/signature/);

# ---- acceptance: notary-link and PyJWT, every algorithm
my $n = 0;
for my $case (['shop', undef, 'ES256'], ['p384', undef, 'ES384'], ['rsa', undef, 'RS256'],
              ['rsa', 'PS256', 'PS256'], ['ed', undef, 'EdDSA']) {
    my ($m, $alg, $label) = @$case;
    for my $issuer (qw(notary-link PyJWT)) {
        my $c = 'consumer' . ++$n;
        $t->consumer($c, $n % 2 ? 'ec256' : 'rsa');
        my $tok = $issuer eq 'PyJWT'
            ? $t->mint(merchant => $m, consumer => $c, ($alg ? (alg => $alg) : ()), jti => "j$n")
            : $t->link_token(merchant => $m, consumer => $c, ($alg ? (alg => $alg) : ()), jti => "j$n");
        my ($hdr) = split /\./, $tok;
        my $r = $t->request(%{ try_token($tok, merchant => $m, consumer => $c) });
        is($r->{status}, 200, "$label token from $issuer admits at a " . $t->merchant($m)->{type} . " merchant")
            or diag "$r->{body}\n" . $t->notary_error_log;
        like($r->{body}, qr{^uri: /echo\?before=1&after=2$}m,
             '... the token parameter is removed, the other arguments kept in order');
        $r = $t->request(path => "/$m/static/hello.txt", consumer => $c);
        is($r->{status}, 200, '... and opens a contract session (no token needed next)');
    }
}
like($t->notary_error_log, qr/NOTARY02013: contract session opened: merchant ed, .*jti j10/,
     'the session opening is logged with the jti');

# token parameter name is configurable
$t->stop;
$t->start(extra => "    NotaryTokenParam contract\n");
{
    $t->consumer('carol');
    my $tok = $t->link_token(merchant => 'shop', consumer => 'carol');
    my $r = $t->request(path => "/shop/echo?contract=$tok&x=1", consumer => 'carol');
    is($r->{status}, 200, 'NotaryTokenParam renames the token parameter');
    like($r->{body}, qr{^uri: /echo\?x=1$}m, '... and that parameter is removed');
    my $tok2 = $t->link_token(merchant => 'shop', consumer => 'dave');
    $t->refused_ok('the default name is then an ordinary parameter: no token, 403', status => 403,
                   request => { path => "/shop/echo?notary_token=$tok2", consumer => 'dave' });
}
$t->stop;
$t->start(extra => "    NotaryTokenMaxAge 1200\n");
{
    my $tok = $t->link_token(merchant => 'shop', consumer => 'erin', lifetime => 1100);
    my $r = $t->request(path => "/shop/echo?notary_token=$tok", consumer => 'erin');
    is($r->{status}, 200, 'NotaryTokenMaxAge 1200 accepts a 1100 s token');
    refuse_expecting('a 1300 s token over NotaryTokenMaxAge 1200 names the configured limit',
                     $t->link_token(merchant => 'shop', consumer => 'erin', lifetime => 1300),
                     qr/token lifetime \(exp - iat\) is 1300 s: at most NotaryTokenMaxAge 1200 s is accepted/,
                     consumer => 'erin');
}

done_testing;
