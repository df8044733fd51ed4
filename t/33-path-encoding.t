# The forwarded path is the one the consumer sent: httpd's core has decoded
# r->parsed_uri.path once already, and the notary must not let the merchant
# decode it a second time. Two merchants under different base paths of one
# backend host (NotaryMerchant pa https://host/pa, pb https://host/pb): a
# consumer admitted for pa alone can never reach pb's space, and every
# spelling reaches the merchant -- and the record -- as written.
use strict;
use warnings;
use Test::More;
use NotaryTest;

my $t = NotaryTest->new(allow_log => [qw(NOTARY02009 AH10244)]);
my $host = $t->add_merchant('host', 'ec256');
my $doc = $host->{docroot};
mkdir "$doc/$_" for qw(pa pb);
NotaryTest::write_file("$doc/pa/page.txt", "page of pa\n");
NotaryTest::write_file("$doc/pb/page.txt", "SECRET page of pb\n");
NotaryTest::write_file("$doc/pa/my terms.pdf", "terms RECORD-ME\n");
NotaryTest::write_file("$doc/pa/x?y=1", "file x?y=1\n");
NotaryTest::write_file("$doc/pa/a%20b", "file a%20b\n");
NotaryTest::write_file("$doc/pa/a%b", "file a%b\n");
my $url = $t->merchant_url('host');
$t->start(merchants => [], extra => "    NotaryMerchant pa $url/pa\n    NotaryMerchant pb $url/pb\n"
          . "    NotaryRecord pa contains \"RECORD-ME\" response\n" . $t->db_directive);

my ($ccert) = $t->consumer('alice');
my $tok = NotaryTest::run_out(NotaryTest::notary_link(), '--key', $host->{key},
    '--consumer-cert', $ccert, '--notary', 'https://notary.test:' . $t->notary_port,
    '--merchant', 'pa', '--path', '/', '--token-only', '--lifetime', 600);
$tok =~ s/\s+$//;

sub get {
    my ($path) = @_;
    return $t->request(path => $path, consumer => 'alice', curl_args => ['--path-as-is']);
}
sub last_backend_uri {
    my @h = $t->backend_hits('host');
    return @h && $h[-1] =~ m{"GET (\S+) HTTP} ? $1 : '';
}

my $r = get("/pa/page.txt?notary_token=$tok");
is($r->{status}, 200, 'alice is admitted at pa') or diag $r->{body};
is($r->{body}, "page of pa\n", '... and gets pa\'s page');

# %252e%252e: httpd makes it %2e%2e; forwarded so, the merchant would make
# it a dot segment and serve pb's page
$r = get('/pa/%252e%252e/pb/page.txt');
unlike($r->{body}, qr/SECRET/, 'a double-encoded dot segment does not reach pb\'s page');
is($r->{status}, 404, '... the merchant looks for a file named %2e%2e under pa');
is(last_backend_uri(), '/pa/%252e%252e/pb/page.txt', '... which is the path the consumer sent');

for my $p ('/pa/../pb/page.txt', '/pa/%2e%2e/pb/page.txt', '/pa/.%2E/pb/page.txt') {
    $t->refused_ok("$p is pb's, where alice has no session", status => 403, merchant => 'host',
                   lognum => '02009', request => sub { get($p) });
}

my %spelling = (
    '/pa/my%20terms.pdf' => "terms RECORD-ME\n",
    '/pa/x%3fy=1'        => "file x?y=1\n",
    '/pa/a%2520b'        => "file a%20b\n",
    '/pa/a%25b'          => "file a%b\n",
);
for my $p (sort keys %spelling) {
    $r = get($p);
    is($r->{status}, 200, "$p reaches the merchant") or diag $r->{body}, $t->error_log;
    is($r->{body}, $spelling{$p}, "... and names the file the consumer meant");
    is(last_backend_uri(), $p, '... sent exactly as the consumer wrote it');
}
$r = get('/pa/%70age.txt');
is($r->{body}, "page of pa\n", 'an encoded unreserved character is the character (RFC 3986 6.2.2.2)');

my @rec = $t->records("merchant = 'pa'");
is(scalar(@rec), 1, 'the matched response is recorded once');
is($rec[0]{uri}, '/pa/my%20terms.pdf', '... with the uri the merchant was sent') if @rec;

# httpd's core refuses it before the notary sees it (AH10244)
$t->refused_ok('a path with a malformed percent-encoding is refused', status => 400, merchant => 'host',
               request => sub { get('/pa/a%zzb') });
$t->stop;
done_testing;
