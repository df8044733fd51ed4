# ProxyErrorOverride on a notary vhost: when the merchant answers with an
# error, httpd discards the merchant's body and sends its own error page.
# That page is the notary's, not a message from the merchant: it is never
# recorded as the merchant's response, even where a rule matches its type.
use strict;
use warnings;
use Test::More;
use NotaryTest;

my $t = NotaryTest->new;
$t->add_merchant('shop', 'ec256');
NotaryTest::write_file($t->dir . '/cgi/fail', <<'CGI', 0755);
#!/usr/bin/perl
print "Status: 500 Internal Server Error\r\nContent-Type: text/html\r\n\r\n";
print "<p>the merchant's own error page, CONTRACT-TERMS inside</p>\n";
CGI
NotaryTest::write_file($t->dir . '/cgi/page', <<'CGI', 0755);
#!/usr/bin/perl
print "Content-Type: text/html\r\n\r\n<p>CONTRACT-TERMS</p>\n";
CGI
$t->start(extra => $t->db_directive
                   . "    NotaryRecord shop type text/html response\n"
                   . "    ProxyErrorOverride On\n");
my $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
my $r = $t->request(path => "/shop/cgi/page?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'a text/html page from the merchant: 200') or diag $r->{body};
is(scalar($t->records("uri LIKE '/cgi/page%'")), 1, '... recorded by the type rule');

my $n = $t->record_count;
$r = $t->request(path => '/shop/cgi/fail', consumer => 'alice');
is($r->{status}, 500, 'the merchant answers 500: the consumer gets 500');
unlike($r->{body}, qr/CONTRACT-TERMS/, '... with httpd\'s own page (ProxyErrorOverride), not the merchant\'s');
is($t->record_count, $n, '... and no row: nothing of the merchant reached the consumer');

$r = $t->request(path => '/shop/cgi/page', consumer => 'alice');
is(scalar($t->records("uri = '/cgi/page'")), 2,
   'the next page on the same vhost is recorded again (the token is not part of the URI)');

done_testing;
