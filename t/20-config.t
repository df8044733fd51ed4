# apachectl -t catches bad notary configuration with a message that names
# the directive and the line.
use strict;
use warnings;
use Test::More;
use NotaryTest;

my $t = NotaryTest->new;
$t->add_merchant('shop', 'ec256');

my ($rc, $out) = $t->config_test;
is($rc, 0, 'a valid notary configuration passes apachectl -t') or diag $out;
like($out, qr/Syntax OK/, '... and says Syntax OK');

my @bad = (
    [ 'non-https merchant URL', 'NotaryMerchant plain http://127.0.0.1:8080',
      qr/NotaryMerchant: 'http:\/\/127\.0\.0\.1:8080' must be an https URL/ ],
    [ 'duplicate merchant name', "NotaryMerchant twice https://127.0.0.1:9/a\n    NotaryMerchant twice https://127.0.0.1:9/b",
      qr/NotaryMerchant: merchant 'twice' is already registered on this virtual host \(at .*:\d+\)/ ],
    [ 'URL without host', 'NotaryMerchant nohost https:///path',
      qr/NotaryMerchant: 'https:\/\/\/path' is not an absolute URL/ ],
    [ 'relative URL', 'NotaryMerchant rel /local/path',
      qr/NotaryMerchant: '\/local\/path' is not an absolute URL/ ],
    [ 'URL with a bad port', 'NotaryMerchant badport https://127.0.0.1:99999/',
      qr/NotaryMerchant: .*(port|absolute URL)/ ],
    [ 'URL with a query', 'NotaryMerchant q https://127.0.0.1:9/?a=b',
      qr/NotaryMerchant: .* must not carry user info, a query or a fragment/ ],
    [ 'URL with user info', 'NotaryMerchant u https://user:pw@127.0.0.1:9/',
      qr/NotaryMerchant: .* must not carry user info/ ],
    [ 'merchant name with a slash', 'NotaryMerchant a/b https://127.0.0.1:9/',
      qr/NotaryMerchant: invalid merchant name 'a\/b'/ ],
    [ 'merchant name ..', 'NotaryMerchant .. https://127.0.0.1:9/',
      qr/NotaryMerchant: invalid merchant name '\.\.'/ ],
    [ 'NotaryMerchant with one argument', 'NotaryMerchant lonely',
      qr/NotaryMerchant takes two arguments/ ],
    [ 'malformed NotaryDatabase', 'NotaryDatabase "host=/tmp port"',
      qr/NotaryDatabase: not a valid libpq connection string/ ],
    [ 'NotaryTokenMaxAge not a number', 'NotaryTokenMaxAge soon',
      qr/NotaryTokenMaxAge: 'soon' is not a number of seconds/ ],
    [ 'NotaryTokenMaxAge zero', 'NotaryTokenMaxAge 0',
      qr/NotaryTokenMaxAge: '0' is not a number of seconds/ ],
    [ 'NotaryTokenParam with a space', 'NotaryTokenParam "a b"',
      qr/NotaryTokenParam: 'a b' is not a plain query parameter name/ ],
    [ 'NotaryEngine with a bad flag', 'NotaryEngine maybe',
      qr/NotaryEngine must be On or Off/ ],
    [ 'NotarySessionCache inside a vhost', 'NotarySessionCache shmcb',
      qr/NotarySessionCache cannot occur within <VirtualHost> section/ ],
    [ 'NotaryRecord for an unknown merchant', 'NotaryRecord nosuch contains "x"',
      qr/NotaryRecord: unknown merchant 'nosuch' \(register it with NotaryMerchant/ ],
    [ 'NotaryRecord with empty text', 'NotaryRecord shop contains ""',
      qr/NotaryRecord: the text after 'contains' is empty/ ],
    [ 'NotaryRecord with a malformed media range', 'NotaryRecord * type application',
      qr/NotaryRecord: 'application' is not a media range/ ],
    [ 'NotaryRecord with a media range carrying parameters', 'NotaryRecord * type "text/html; charset=utf-8"',
      qr/NotaryRecord: 'text\/html; charset=utf-8' is not a media range/ ],
    [ 'NotaryRecord with an unknown condition', 'NotaryRecord * matches "x"',
      qr/NotaryRecord: unknown condition 'matches' \(use contains or type\)/ ],
    [ 'NotaryRecord with a bad direction', 'NotaryRecord * contains "x" both',
      qr/NotaryRecord: 'both' is not a direction/ ],
    [ 'NotaryRecord with trailing words', 'NotaryRecord * contains "x" request extra',
      qr/NotaryRecord: unexpected 'extra'/ ],
    [ 'NotaryMaxRecordSize not a size', 'NotaryMaxRecordSize big',
      qr/NotaryMaxRecordSize: 'big' is not a size/ ],
    [ 'NotaryMaxRecordSize over 1G', 'NotaryMaxRecordSize 2G',
      qr/NotaryMaxRecordSize: '2G' is not a size/ ],
    [ 'NotaryDatabaseTimeout zero', 'NotaryDatabaseTimeout 0',
      qr/NotaryDatabaseTimeout: '0' is not a number of seconds/ ],
);
for my $case (@bad) {
    my ($name, $directive, $want) = @$case;
    my ($rc, $out) = $t->config_test(extra => "    $directive\n");
    isnt($rc, 0, "apachectl -t fails: $name");
    like($out, $want, "... with a message naming the directive: $name");
    like($out, qr/Syntax error on line \d+ of \S+httpd\.conf/, "... and the line: $name");
}

# Global-only and main-server-only placement
($rc, $out) = $t->config_test(global => 'NotaryMerchant shop https://127.0.0.1:9/');
isnt($rc, 0, 'NotaryMerchant outside a <VirtualHost> fails');
like($out, qr/NotaryMerchant: only allowed inside <VirtualHost>/, '... and says where it belongs');

# At server level NotaryEngine would make every vhost a notary (the
# default site, /server-status): refused, On or Off
for my $flag (qw(On Off)) {
    ($rc, $out) = $t->config_test(global => "NotaryEngine $flag");
    isnt($rc, 0, "NotaryEngine $flag outside a <VirtualHost> fails at apachectl -t");
    like($out, qr/NotaryEngine: only allowed inside <VirtualHost>: at server level every virtual host/,
         "... and says where it belongs: NotaryEngine $flag");
    like($out, qr/Syntax error on line \d+ of \S+httpd\.conf/, "... and the line: NotaryEngine $flag");
}

($rc, $out) = $t->config_test(global => 'NotarySessionCache nosuchcache:/x');
isnt($rc, 0, 'NotarySessionCache with an unknown provider fails at apachectl -t');
like($out, qr/NotarySessionCache: unknown socache provider 'nosuchcache'/, '... naming the provider');

($rc, $out) = $t->config_test(extra => "    NotaryRecord shop contains \"x\"\n");
isnt($rc, 0, 'NotaryRecord without NotaryDatabase fails at apachectl -t');
like($out, qr/NOTARY01107: NotaryRecord on notary\.test:\d+ needs NotaryDatabase/, '... saying what is missing');

($rc, $out) = $t->config_test(extra => "    NotaryDatabase \"dbname=notary\"\n    NotaryRecord shop contains \"I agree\"\n"
                                     . "    NotaryRecord * type application/xml response\n    NotaryRecord * type audio/* request\n"
                                     . "    NotaryMaxRecordSize 16M\n    NotaryDatabaseTimeout 5\n");
is($rc, 0, 'valid NotaryRecord rules, NotaryMaxRecordSize and NotaryDatabaseTimeout pass') or diag $out;

# HTTP/2 would slip past the record filters and the per-connection
# admission: a notary vhost that offers it does not start
($rc, $out) = $t->config_test(extra => "    Protocols h2 http/1.1\n");
isnt($rc, 0, 'Protocols h2 on a notary vhost fails at apachectl -t');
like($out, qr/NOTARY01108: Protocols lists h2 for the notary vhost notary\.test:\d+ .*HTTP\/1\.1 only/,
     '... saying why and what to set');
($rc, $out) = $t->config_test(global => 'Protocols h2c http/1.1');
isnt($rc, 0, 'a server-wide Protocols h2c that the notary vhost inherits fails too');
like($out, qr/NOTARY01108: Protocols lists h2c/, '... naming the protocol');
($rc, $out) = $t->config_test(global => 'Protocols h2 http/1.1', extra => "    Protocols http/1.1\n");
is($rc, 0, 'server-wide h2 with the notary vhost set to http/1.1 passes') or diag $out;

($rc, $out) = $t->config_test(global => "NotaryTokenMaxAge 600\nNotaryTokenParam t\nNotarySessionCache shmcb");
is($rc, 0, 'server-wide NotaryTokenMaxAge, NotaryTokenParam, NotarySessionCache are accepted') or diag $out;

done_testing;
