# Witness cosignatures of the log's checkpoints (NotaryLogWitness VKEY URL,
# C2SP tlog-witness add-checkpoint, tlog-cosignature Ed25519 cosignature/v1).
# The witnesses are t/unit/witness.py: written from the specs with Python's
# `cryptography`, sharing no code with the module; each verifies the log's
# signature and the RFC 9162 consistency proof itself, keeps its own state,
# answers 409 on a stale old size, and cosigns. Checked: checkpoints get
# cosigned, kept in notary.log_cosignatures and served at
# /.notary/log/checkpoint after the log's signature; notary-verify --witness
# passes on them and fails on a flipped cosignature or another witness's
# key; a witness that is down is logged once (NOTARY04202) while records
# are still integrated; one that answers 500 is logged (NOTARY04203) with
# its body escaped; one that signs wrongly is refused and nothing kept
# (NOTARY04204); a witness reset to an older state answers 409 and the
# integrator resyncs from the size it names (NOTARY04209); one that claims
# a larger tree than the log's is refused (NOTARY04205).
use strict;
use warnings;
use Test::More;
use Digest::SHA qw(sha256);
use MIME::Base64 qw(encode_base64 decode_base64);
use Time::HiRes qw(time sleep);
use NotaryTest;

my $build = $ENV{NOTARY_BUILDDIR} or BAIL_OUT('NOTARY_BUILDDIR not set');
my $src = $ENV{NOTARY_SRCDIR} || '.';
my $verify = "$build/notary-verify";
my $witness_py = "$src/t/unit/witness.py";
-x $verify && -f $witness_py or BAIL_OUT("no $verify or $witness_py");
system('python3', '-c', 'import cryptography') == 0
    or BAIL_OUT('python3-cryptography is needed (script/common.sh installs it)');

my $t = NotaryTest->new(allow_log => [qw(NOTARY04202 NOTARY04203 NOTARY04204 NOTARY04205)]);
my $m = $t->add_merchant('shop', 'ec256');
my $pg = $t->pg;
$pg->psql('CREATE ROLE integrator LOGIN IN ROLE notary_integrator, notary_receipt_reader');
my $dir = $t->{dir};

# ---- the log key and its vkey (C2SP signed-note)
my $key = "$dir/log.key";
NotaryTest::run_cmd('openssl', 'genpkey', '-algorithm', 'ed25519', '-out', $key);
my $origin = 'notary.test/log';
my $pub = substr(NotaryTest::run_out('openssl', 'pkey', '-in', $key, '-pubout', '-outform', 'DER'), -32);
my $vkey = "$origin+" . unpack('H*', substr(sha256("$origin\n\x01$pub"), 0, 4)) . '+'
         . encode_base64("\x01$pub", '');
NotaryTest::write_file("$dir/log.vkey", "$vkey\n");

# ---- two witnesses, each its own seed, state and mode
my %w;
for my $n (1, 2) {
    my $seed = unpack('H*', join '', map { chr int rand 256 } 1 .. 32);
    my $wd = "$dir/w$n";
    mkdir $wd or die;
    my $name = "witness.test/w$n";
    chomp(my $wv = NotaryTest::run_out('python3', $witness_py, 'vkey', $name, $seed));
    like($wv, qr/^\Q$name\E\+[0-9a-f]{8}\+B[A-P]/, "witness ${n}'s vkey, type 0x04: $wv");
    $w{$n} = { seed => $seed, dir => $wd, name => $name, vkey => $wv, port => NotaryTest::free_port() };
    $w{$n}{url} = "http://127.0.0.1:$w{$n}{port}/w";
}
# a third key no witness holds: "another witness"
my $other_seed = unpack('H*', join '', map { chr int rand 256 } 1 .. 32);
chomp(my $other_vkey = NotaryTest::run_out('python3', $witness_py, 'vkey', 'witness.test/w1', $other_seed));

sub start_witness {
    my ($n) = @_;
    my $x = $w{$n};
    unlink "$x->{dir}/ready";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        exec 'python3', $witness_py, 'serve', $x->{dir}, $x->{port}, $origin, $vkey, $x->{name}, $x->{seed};
        exit 127;
    }
    $x->{pid} = $pid;
    my $until = time + 20;
    sleep 0.1 while !-e "$x->{dir}/ready" && time < $until;
    ok(-e "$x->{dir}/ready", "witness $n listens on 127.0.0.1:$x->{port}");
}
sub stop_witness { my $x = $w{$_[0]}; if ($x->{pid}) { kill 'TERM', $x->{pid}; waitpid $x->{pid}, 0; $x->{pid} = 0 } }
END { for (values %w) { kill 'TERM', $_->{pid} if $_->{pid} } }
sub set_mode { NotaryTest::write_file("$w{$_[0]}{dir}/mode", "$_[1]\n") }
sub requests {
    my $f = "$w{$_[0]}{dir}/requests";
    return () unless -e $f;
    return map { [split / /] } split /\n/, NotaryTest::read_file($f);
}

my $log_conf = "    NotaryLogKey $key\n"
             . "    NotaryLogOrigin $origin\n"
             . "    NotaryLogInterval 1\n"
             . '    NotaryLogIntegratorDatabase "' . $pg->conninfo('integrator') . "\"\n";
my $base = $t->db_directive(timeout => 5) . "    NotaryRecord shop contains \"CONTRACT-TERMS\"\n";
my $wconf = "    NotaryLogWitness $w{1}{vkey} $w{1}{url}\n    NotaryLogWitness $w{2}{vkey} $w{2}{url}\n";

# ---- start-up checks
{
    my ($rc, $out) = $t->config_test(extra => $base . "    NotaryLogWitness $w{1}{vkey} $w{1}{url}\n");
    ok($rc != 0 && $out =~ /NOTARY04201: NotaryLogWitness .* needs NotaryLogKey/,
       'NotaryLogWitness without a log: apachectl -t fails, saying why') or diag($out);
    ($rc, $out) = $t->config_test(extra => $base . $log_conf . "    NotaryLogWitness $vkey $w{1}{url}\n");
    ok($rc != 0 && $out =~ /NotaryLogWitness: '\Q$vkey\E' is not a witness verifier key .*signature type 0x04/,
       'a signed-note key of type 0x01 as VKEY is refused') or diag($out);
    (my $badid = $w{1}{vkey}) =~ s/\+([0-9a-f])/'+' . ($1 eq '0' ? '1' : '0')/e;
    ($rc, $out) = $t->config_test(extra => $base . $log_conf . "    NotaryLogWitness $badid $w{1}{url}\n");
    ok($rc != 0 && $out =~ /key ID does not match/, 'a VKEY with a wrong key ID is refused') or diag($out);
    ($rc, $out) = $t->config_test(extra => $base . $log_conf . "    NotaryLogWitness $w{1}{vkey} ftp://127.0.0.1/w\n");
    ok($rc != 0 && $out =~ /NotaryLogWitness: 'ftp:.*' is not an http or https URL/,
       'a witness URL that is not http(s) is refused') or diag($out);
    ($rc, $out) = $t->config_test(extra => $base . $log_conf . "    NotaryLogWitness $w{1}{vkey} $w{1}{url}\n" x 2);
    ok($rc != 0 && $out =~ /witness witness\.test\/w1 is named twice/, 'one witness named twice is refused')
        or diag($out);
    ($rc, $out) = $t->config_test(extra => $base . $log_conf . $wconf);
    is($rc, 0, 'two NotaryLogWitness lines pass apachectl -t') or diag($out);
}

# witness 1 runs; witness 2 is down (nothing listens on its port)
start_witness(1);
$t->start(extra => $base . $log_conf . $wconf);
my $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'alice admitted');
sub exchange {
    my ($n) = @_;
    my $res = $t->request(path => "/shop/echo?n=$n", consumer => 'alice',
                          data => "sign $n: CONTRACT-TERMS", headers => ['Content-Type: text/plain']);
    is($res->{status}, 200, "matched exchange $n delivered");
    # both records written (the response's is committed after the answer)
    $t->wait_for(sub { 2 == scalar $t->records('uri = ?', "/echo?n=$n") }, timeout => 10,
                 what => "the records of exchange $n");
}
sub log_size { my $s = $pg->psql('SELECT size FROM notary.log_state'); chomp $s; $s }
sub cosigned {
    my ($n) = @_;
    my $s = $pg->psql("SELECT coalesce(max(size), -1) FROM notary.log_cosignatures WHERE witness = '$w{$n}{vkey}'");
    chomp $s;
    return $s;
}
sub all_integrated { !grep { !defined $_->{leaf_index} } $t->records }

exchange($_) for 1 .. 2;
ok($t->wait_for(sub { all_integrated() && cosigned(1) == log_size() && log_size() >= 4 }, timeout => 25,
                what => 'witness 1 cosigning the latest checkpoint'),
   'witness 1 cosigned the latest checkpoint (tree of ' . log_size() . ')');
exchange($_) for 3 .. 4;
ok($t->wait_for(sub { all_integrated() && cosigned(1) == log_size() && log_size() >= 8 }, timeout => 25,
                what => 'witness 1 cosigning the next checkpoint'),
   '... and the next one, as the log grows (tree of ' . log_size() . ')');
my @proofs = grep { $_->[3] == 200 && $_->[0] > 0 && $_->[2] > 0 } requests(1);
ok(scalar @proofs, 'the witness cosigned from an old size > 0 with a non-empty consistency proof it checked itself ('
   . join(', ', map { "old $_->[0] -> $_->[1], $_->[2] hashes" } @proofs) . ')');
is(scalar(grep { $_->[3] == 422 || $_->[3] == 403 } requests(1)), 0, 'the witness never refused a proof or a signature');

# ---- witness 2 down: one line, and the log goes on
ok($t->wait_for(sub { $t->notary_error_log =~ /NOTARY04202: log \Q$origin\E: witness witness\.test\/w2 gave no answer/ },
                timeout => 15, what => 'NOTARY04202'),
   'witness 2 down: NOTARY04202 names it');
my @down = $t->notary_error_log =~ /(NOTARY04202: log \S+ witness witness\.test\/w2)/g;
is(scalar @down, 1, '... logged once, not every round');
is(cosigned(2), -1, '... nothing kept for it');
exchange(5);
ok($t->wait_for(sub { all_integrated() && cosigned(1) == log_size() }, timeout => 20, what => 'integration'),
   '... records are still integrated and witness 1 still cosigns');

# ---- the served checkpoint carries the cosignature
my $res = $t->request(path => '/.notary/log/checkpoint');
is($res->{status}, 200, 'GET /.notary/log/checkpoint: 200');
my $served = $res->{body};
my $line = $pg->psql("SELECT cosignature FROM notary.log_cosignatures WHERE witness = '$w{1}{vkey}' "
                     . "AND size = (SELECT size FROM notary.log_state)");
chomp $line;
my $state = $pg->psql('SELECT checkpoint FROM notary.log_state');
$state =~ s/\n\z//;
utf8::encode($state) if utf8::is_utf8($state);
utf8::encode($line) if utf8::is_utf8($line);
is($served, "$state$line", "the served checkpoint is the log's signed note with witness 1's line after it")
    or diag($served);
like($served, qr/\n\x{e2}\x{80}\x{94} witness\.test\/w1 \S+\n\z/, '... a note signature line of witness.test/w1');
NotaryTest::write_file("$dir/cp", $served);

my $vcmd = "'$verify' --key-file '$dir/log.vkey'";
my $text = `$vcmd --witness '$w{1}{vkey}' consistency '$dir/cp' '$dir/cp' 2>&1`;
is($? >> 8, 0, 'notary-verify --witness W1 consistency: the cosigned checkpoint passes') or diag($text);
$text = `$vcmd --witness '$w{1}{vkey}' --json consistency '$dir/cp' '$dir/cp' 2>&1`;
like($text, qr/"cosigned_by":\s*\[\s*"witness\.test\/w1"\s*\]/, '... --json names the witness') or diag($text);
$text = `$vcmd --witness '$w{2}{vkey}' consistency '$dir/cp' '$dir/cp' 2>&1`;
is($? >> 8, 1, '--witness W2 (which never cosigned): invalid, exit 1') or diag($text);
like($text, qr/no cosignature of witness witness\.test\/w2/, '... saying which cosignature is missing') or diag($text);
$text = `$vcmd --witness '$other_vkey' consistency '$dir/cp' '$dir/cp' 2>&1`;
is($? >> 8, 1, '--witness with another key under the same name: invalid') or diag($text);
$text = `$vcmd consistency '$dir/cp' '$dir/cp' 2>&1`;
is($? >> 8, 0, 'without --witness the cosignature line is ignored (signed-note: unknown key)') or diag($text);

# every bit of the cosignature's 76 bytes flipped in turn: each refused
{
    my ($pre, $b64) = $served =~ /\A(.*\n\x{e2}\x{80}\x{94} witness\.test\/w1 )(\S+)\n\z/s or BAIL_OUT('no cosignature line');
    my $raw = decode_base64($b64);
    is(length $raw, 76, 'the cosignature is 76 bytes (key ID, time, Ed25519 signature)');
    my ($tried, $refused, @accepted) = (0, 0);
    for my $i (0 .. 75) {
        for my $bit (0, 3, 7) {    # three bits a byte: 228 runs of notary-verify
            my $f = $raw;
            substr($f, $i, 1) = chr(ord(substr($f, $i, 1)) ^ (1 << $bit));
            NotaryTest::write_file("$dir/cp-flip", $pre . encode_base64($f, '') . "\n");
            system("$vcmd --witness '$w{1}{vkey}' consistency '$dir/cp-flip' '$dir/cp-flip' >/dev/null 2>&1");
            $tried++;
            if ($? >> 8 == 1) { $refused++ } else { push @accepted, "byte $i bit $bit" }
        }
    }
    is($refused, $tried, "notary-verify --witness refuses all $tried flipped cosignatures") or diag("@accepted");
}

# ---- receipts: the checkpoint they are made against carries the cosignatures
{
    my ($rec) = $t->records('uri = ?', '/echo?n=5');
    my $g = $t->request(path => "/.notary/receipt/$rec->{exchange_id}/request", consumer => 'alice');
    is($g->{status}, 200, "alice's receipt of exchange 5's request: 200");
    like($g->{body}, qr/\n\x{e2}\x{80}\x{94} witness\.test\/w1 \S+\n\z/, '... its checkpoint ends with witness 1\'s cosignature')
        or diag($g->{body});
    NotaryTest::write_file("$dir/receipt", $g->{body});
    $text = `$vcmd --witness '$w{1}{vkey}' receipt '$dir/receipt' 2>&1`;
    is($? >> 8, 0, 'notary-verify --witness W1 receipt: valid') or diag($text);
    $text = `$vcmd --witness '$w{2}{vkey}' receipt '$dir/receipt' 2>&1`;
    is($? >> 8, 1, 'notary-verify --witness W2 receipt: invalid (no cosignature of W2)') or diag($text);
    (my $bad = $g->{body}) =~ s/(witness\.test\/w1 \S{20})(\S)/$1 . ($2 eq 'A' ? 'B' : 'A')/e;
    NotaryTest::write_file("$dir/receipt-bad", $bad);
    $text = `$vcmd --witness '$w{1}{vkey}' receipt '$dir/receipt-bad' 2>&1`;
    is($? >> 8, 1, 'a receipt whose cosignature has one character changed: invalid with --witness') or diag($text);
    $text = `$vcmd receipt '$dir/receipt-bad' 2>&1`;
    is($? >> 8, 0, '... and still valid without --witness (the log\'s signature is intact)') or diag($text);
}

# audit: the checkpoint given, with --witness
my $acmd = "$vcmd audit --db '${\ $pg->conninfo('auditor')}'";
$text = `$acmd --checkpoint '$dir/cp' --witness '$w{1}{vkey}' 2>&1`;
is($? >> 8, 0, 'audit --checkpoint CP --witness W1: VALID') or diag($text);
$text = `$acmd --checkpoint '$dir/cp' --witness '$w{2}{vkey}' 2>&1`;
is($? >> 8, 1, 'audit --checkpoint CP --witness W2: INVALID') or diag($text);
like($text, qr/uncosigned/, '... an uncosigned finding') or diag($text);

# ---- witness 2 comes up answering 500 with a body of two lines: one
# NOTARY04203 line, the witness's bytes escaped in it, nothing kept
set_mode(2, '500');
start_witness(2);
exchange(6);
ok($t->wait_for(sub { $t->notary_error_log =~ /NOTARY04203: log \Q$origin\E: witness witness\.test\/w2 refused checkpoint \d+: HTTP 500: down for maintenance\\nFORGED LINE from the witness\\n/ },
                timeout => 25, what => 'NOTARY04203'),
   'witness 2 answering 500: NOTARY04203 with the start of its body, escaped')
    or diag($t->notary_error_log);
unlike($t->notary_error_log, qr/^FORGED LINE/m, "... the witness's second line is no line of the error log");
is(cosigned(2), -1, '... and nothing kept from it');

# ---- witness 2 then signs wrongly: refused, nothing kept
set_mode(2, 'badsig');
exchange(61);
ok($t->wait_for(sub { $t->notary_error_log =~ /NOTARY04204: log \Q$origin\E: witness witness\.test\/w2 answered checkpoint \d+ with no valid cosignature.*does not verify/ },
                timeout => 25, what => 'NOTARY04204'),
   'witness 2 answering a bad signature: NOTARY04204');
is(cosigned(2), -1, '... and nothing kept from it');
ok(scalar(grep { $_->[3] == 200 } requests(2)) >= 1, '... it was asked, and answered 200');

# ---- witness 2 fixed: it cosigns (its state moved on with the bad answer:
# the next request from old 0 gets a 409 and is made again from its size)
set_mode(2, 'ok');
exchange(7);
ok($t->wait_for(sub { all_integrated() && cosigned(2) == log_size() }, timeout => 30,
                what => 'witness 2 cosigning'),
   'witness 2 signing correctly again: the latest checkpoint cosigned by it');
like($t->notary_error_log, qr/NOTARY04209: log \Q$origin\E: witness witness\.test\/w2 has cosigned \d+ leaves, not 0: asking again from there/,
     '... after a 409 resync from the size it named (NOTARY04209)');
like($t->notary_error_log, qr/NOTARY04207: log \Q$origin\E: witness witness\.test\/w2 cosigns again/,
     '... NOTARY04207 says it works again');
ok(scalar(grep { $_->[3] == 409 } requests(2)) >= 1, '... the witness did answer 409');

$res = $t->request(path => '/.notary/log/checkpoint');
NotaryTest::write_file("$dir/cp2", $res->{body});
$text = `$vcmd --witness '$w{1}{vkey}' --witness '$w{2}{vkey}' consistency '$dir/cp' '$dir/cp2' --tiles '$dir/none' 2>&1`;
# the tiles are not fetched here: OLD (cp) has one cosignature, NEW two
like($text, qr/no cosignature of witness witness\.test\/w2/, 'two --witness: the older checkpoint, cosigned by w1 only, fails')
    or diag($text);
$text = `$vcmd --witness '$w{1}{vkey}' --witness '$w{2}{vkey}' consistency '$dir/cp2' '$dir/cp2' 2>&1`;
is($? >> 8, 0, 'the newer one, cosigned by both, passes --witness W1 --witness W2') or diag($text);

# ---- witness 1 restored from an old backup: 409 with a smaller size, resync
{
    my ($s_old) = grep { $_->[3] == 200 } requests(1);
    my $cp_old = $pg->psql("SELECT checkpoint FROM notary.log_checkpoints WHERE size = $s_old->[1]");
    my ($root) = $cp_old =~ /\A[^\n]*\n\d+\n(\S+)\n/ or BAIL_OUT('no root');
    NotaryTest::write_file("$w{1}{dir}/state", "$s_old->[1] $root\n");
    my $before = () = $t->notary_error_log =~ /NOTARY04209: log \S+ witness witness\.test\/w1/g;
    exchange(8);
    ok($t->wait_for(sub { all_integrated() && cosigned(1) == log_size() }, timeout => 30,
                    what => 'witness 1 after its reset'),
       "witness 1 reset to size $s_old->[1]: the latest checkpoint is cosigned again");
    my $after = () = $t->notary_error_log =~ /NOTARY04209: log \S+ witness witness\.test\/w1/g;
    ok($after > $before, '... after a 409 naming its old size (NOTARY04209)');
}

# ---- a witness that claims a tree larger than the log's: refused
{
    NotaryTest::write_file("$w{1}{dir}/state", "1000000 " . encode_base64("\0" x 32, '') . "\n");
    exchange(9);
    ok($t->wait_for(sub { $t->notary_error_log =~ /NOTARY04205: log \Q$origin\E: witness witness\.test\/w1 disagrees about the log's size .*1000000 leaves, larger than the log's/ },
                    timeout => 25, what => 'NOTARY04205'),
       'a witness that says it cosigned 1000000 leaves: NOTARY04205 (another log under this origin, or a fork)');
    ok($t->wait_for(sub { all_integrated() }, timeout => 10, what => 'integration'), '... integration goes on');
    ok(cosigned(1) < log_size(), '... nothing kept for the new checkpoint');
}

# ---- the table is append-only
my $err = eval { $pg->psql("UPDATE notary.log_cosignatures SET cosigned_at = 1"); 1 } ? '' : $@;
like($err, qr/append-only|refused/, 'UPDATE of notary.log_cosignatures is refused') or diag($err);
$err = eval { $pg->psql('DELETE FROM notary.log_cosignatures'); 1 } ? '' : $@;
like($err, qr/append-only|refused/, 'DELETE is refused');
$err = eval { $pg->psql('TRUNCATE notary.log_cosignatures'); 1 } ? '' : $@;
like($err, qr/append-only|refused/, 'TRUNCATE is refused');

$text = `$acmd 2>&1`;
is($? >> 8, 0, 'notary-verify audit: VALID') or diag($text);

$t->stop;
stop_witness($_) for 1, 2;
done_testing;
