# The walk-through behind script/demo (uses the test harness's pieces).
use strict;
use warnings;
use NotaryTest;

$| = 1;
sub say_step { print "\n== $_[0]\n" }
sub show { my ($label, $r) = @_; printf "   %-28s HTTP %s\n", $label, $r->{status} }

my $t = NotaryTest->new(name => 'demo');
say_step('Setting up: a throwaway PostgreSQL with the record store (sql/)');
my $pg = $t->pg;
print "   PostgreSQL on ", $pg->sockdir, " port ", $pg->port, "\n";

my $m = $t->add_merchant('shop', 'ec256');
NotaryTest::write_file("$m->{docroot}/static/terms.html", <<'HTML');
<html><body><h1>Sales contract</h1>
<p>By continuing, I agree to the CONTRACT TERMS of Example Shop.</p>
<p><a href="contract.xml">The contract</a> - <a href="/shop/echo">apply</a></p>
</body></html>
HTML
NotaryTest::write_file("$m->{docroot}/static/contract.xml",
    qq{<?xml version="1.0"?>\n<contract merchant="shop"><item>Bicycle</item><price>300 EUR</price></contract>\n});

say_step('Starting the notary (notary.test) and the merchant "shop" (EC P-256 key)');
$t->start(extra => $t->db_directive . <<'CONF');
    NotaryRecord shop contains "CONTRACT TERMS"
    NotaryRecord shop type application/xml response
    NotaryRecord shop contains "APPLICATION" request
CONF
print "   notary:   https://notary.test:", $t->notary_port, "  (NotaryMerchant shop ", $t->merchant_url('shop'), ")\n";
print "   rules:    shop contains \"CONTRACT TERMS\"; shop type application/xml response;\n";
print "             shop contains \"APPLICATION\" request\n";

my ($ccert) = $t->consumer('alice');
my $fp = `openssl x509 -in $ccert -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum`;
$fp =~ s/\s.*//s;
print "   consumer: alice, self-signed certificate, key sha256 $fp\n";

say_step('1. Alice opens the merchant\'s contract-start page over mutual TLS');
my $start = $t->request(url => $t->merchant_url('shop') . '/start?path=/static/terms.html',
                        consumer => 'alice', curl_args => ['--insecure']);
show('GET shop/start', $start);
my $link = $start->{headers}{location} or die "the merchant issued no contract link\n";
(my $short = $link) =~ s/(notary_token=.{24}).*/$1.../;
print "   the merchant answers with a contract link (made by notary-link):\n   $short\n";

say_step('2. Alice follows the link through the notary');
my $r = $t->request(url => $link, consumer => 'alice');
show('GET /shop/static/terms.html', $r);
die "the contract link was refused: $r->{body}" unless $r->{status} == 200;
print "   ", ($r->{body} =~ /<p>(By continuing[^<]*)/)[0], "\n";

say_step('3. The page\'s relative links work without the token (contract session)');
$r = $t->request(path => '/shop/static/contract.xml', consumer => 'alice');
show('GET /shop/static/contract.xml', $r);
die "session refused: $r->{body}" unless $r->{status} == 200;

say_step('4. Alice sends her application');
$r = $t->request(path => '/shop/echo?form=application', consumer => 'alice',
                 data => 'name=Alice&item=Bicycle&kind=APPLICATION&consent=yes',
                 headers => ['Content-Type: application/x-www-form-urlencoded']);
show('POST /shop/echo', $r);
die "application refused: $r->{body}" unless $r->{status} == 200;
print "   the merchant received the consumer's certificate in Client-Cert: ",
      ($r->{body} =~ /^header client-cert: :(.{20})/m ? "$1...\n" : "(missing!)\n");

say_step('5. What the notary refuses');
$r = $t->request(path => '/shop/static/terms.html');
show('no client certificate', $r);
print "   $r->{body}";
$r = $t->request(url => $link, consumer => 'bob');
show("bob with alice's link", $r);
print "   $r->{body}";
$r = $t->request(path => '/other/x', consumer => 'alice');
show('an unregistered merchant', $r);
print "   $r->{body}";

say_step("6. The records, as compliance staff see them (sql/reports/by_consumer.sql -v fp=$fp)");
my $conn = $pg->conninfo('auditor');
system('psql', '-X', '--expanded', '-v', "fp=$fp", '-f', "$NotaryTest::SRCDIR/sql/reports/by_consumer.sql", $conn) == 0
    or die "the report failed\n";
my $n = $t->record_count;
die "expected 3 records (the terms page, contract.xml, the application), found $n\n"
    unless $n == 3;
print "\n== Done: $n records committed before their receivers got the last byte.\n";
print "   Keep everything for a look: NOTARY_KEEP_TMP=1 ./script/demo (directory: ", $t->dir, ")\n";
