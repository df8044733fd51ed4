#!/usr/bin/perl
# notary-verify on evidence made by the core (t/unit/make_evidence): valid
# files exit 0, each tampering exits 1, bad usage and I/O exit 2, --json
# parses and says what was checked.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use MIME::Base64 qw(encode_base64 decode_base64);
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use File::Spec;

my $build = File::Spec->rel2abs($ENV{NOTARY_BUILDDIR} || '.');   # the test changes directory
my $verify = "$build/notary-verify";
my $make = "$build/t/unit/make_evidence";
-x $verify or BAIL_OUT("no $verify");
-x $make or BAIL_OUT("no $make");

my $dir = tempdir(CLEANUP => 1);
system($make, $dir) == 0 or BAIL_OUT("make_evidence failed");
chdir $dir or die;

sub slurp { my ($f) = @_; open my $h, '<:raw', $f or die "$f: $!"; local $/; my $d = <$h>; close $h; $d }
sub spit { my ($f, $d) = @_; open my $h, '>:raw', $f or die "$f: $!"; print $h $d; close $h or die; $f }

# run notary-verify; returns (exit code, stdout, stderr)
sub run {
    my @args = @_;
    my $pid = open my $out, '-|';
    defined $pid or die "fork: $!";
    if (!$pid) {
        open STDERR, '>', "$dir/stderr" or die;
        exec $verify, @args or exit 99;
    }
    local $/;
    my $stdout = <$out> // '';
    close $out;
    my $code = $? >> 8;
    return ($code, $stdout, slurp("$dir/stderr"));
}

sub exits {
    my ($want, $name, @args) = @_;
    my ($code, $out, $err) = run(@args);
    is($code, $want, $name) or diag("notary-verify @args\nstdout: $out\nstderr: $err");
    return $out;
}

my @key = ('--key-file', 'log.vkey');

# --- usage, I/O -------------------------------------------------------------
my ($code, $out) = run('--version');
chomp $out;
is($code, 0, '--version exits 0');
like($out, qr/^notary-verify \d+\.\d+/, "--version names the program and version ($out)");
($code, $out) = run('--help');
ok($code == 0 && $out =~ /consistency OLD NEW/, '--help shows the commands');
exits(2, 'no command: 2', @key);
exits(2, 'unknown command: 2', @key, 'frobnicate', 'x');
exits(2, 'no key: 2', 'receipt', 'receipt-0');
exits(2, 'a key that is not a vkey: 2', '--key', 'nonsense', 'receipt', 'receipt-0');
exits(2, 'a missing receipt file: 2', @key, 'receipt', 'no-such-file');
exits(2, 'a missing body file: 2', @key, 'receipt', 'receipt-0', '--body', 'no-such-file');
exits(2, 'two receipt files: 2', @key, 'receipt', 'receipt-0', 'receipt-1');
exits(2, 'an unknown option: 2', @key, '--frob', 'receipt', 'receipt-0');
exits(2, 'consistency without a proof: 2', @key, 'consistency', 'checkpoint-3', 'checkpoint-7');
exits(2, 'consistency with the newer checkpoint first: 2', @key, 'consistency', 'checkpoint-7',
      'checkpoint-3', '--proof', 'proof-3-7');
exits(2, 'consistency with tiles that are not there: 2', @key, 'consistency', 'checkpoint-7',
      'checkpoint-600', '--tiles', "$dir/nowhere");

# --- valid ------------------------------------------------------------------
for my $i (0 .. 6) {
    exits(0, "receipt $i with its body and headers: 0", @key, 'receipt', "receipt-$i",
          '--body', "body-$i", '--headers', "headers-$i");
    exits(0, "promise $i with its body: 0", @key, 'promise', "promise-$i", '--body', "body-$i");
}
my $vkey = slurp('log.vkey'); chomp $vkey;
exits(0, 'the key given with --key, options before the command: 0', '--key', $vkey, '--body', 'body-2',
      'receipt', 'receipt-2');
{
    my $pid = open my $in, '|-';
    if (!$pid) { open STDOUT, '>', '/dev/null'; exec $verify, @key, 'receipt', '-'; exit 99 }
    print $in slurp('receipt-4');
    close $in;
    is($? >> 8, 0, 'a receipt on standard input (-): 0');
}
exits(0, 'consistency 3 -> 7 with a proof file: 0', @key, 'consistency', 'checkpoint-3', 'checkpoint-7',
      '--proof', 'proof-3-7');
exits(0, 'consistency 7 -> 600 with a proof file: 0', @key, 'consistency', 'checkpoint-7', 'checkpoint-600',
      '--proof', 'proof-7-600');
exits(0, 'consistency 300 -> 600 from tiles: 0', @key, 'consistency', 'checkpoint-300', 'checkpoint-600',
      '--tiles', 'tiles');
exits(0, 'consistency 3 -> 600 from tiles: 0', @key, 'consistency', 'checkpoint-3', 'checkpoint-600',
      '--tiles', 'tiles');
exits(0, 'consistency of a receipt\'s checkpoint with itself: 0', @key, 'consistency', 'receipt-1',
      'checkpoint-600');
exits(0, 'several keys, the right one among them: 0', '--key-file', 'other.vkey', @key, 'receipt',
      'receipt-5');

# --- --json -----------------------------------------------------------------
($code, $out) = run(@key, '--json', 'receipt', 'receipt-3', '--body', 'body-3', '--headers', 'headers-3');
my $j = eval { decode_json($out) };
ok($j, '--json output of a receipt parses') or diag($@, $out);
SKIP: {
    skip 'no JSON', 7 unless $j;
    ok($j->{valid} && JSON::PP::is_bool($j->{valid}) && !defined $j->{reason}, 'valid: true, reason: null');
    is($j->{command}, 'receipt', 'command: receipt');
    is($j->{index}, 3, 'index 3');
    is($j->{entry}{body_sha256}, sha256_hex(slurp('body-3')), 'entry.body_sha256 is the body file\'s SHA-256');
    is($j->{entry}{direction}, 'response', 'record 3 is a response');
    is($j->{metadata}{uri}, '/contract/1', 'metadata.uri from the receipt\'s extra');
    is($j->{log}{tree_size}, 600, 'log.tree_size 600');
}
($code, $out) = run(@key, '--json', 'receipt', 'receipt-3', '--body', 'body-2');
$j = eval { decode_json($out) };
ok($code == 1 && $j && !$j->{valid} && $j->{reason} =~ /body/ && !$j->{files}{body}{matches},
   "--json of a body mismatch: valid false, the reason, files.body.matches false ($code)") or diag($out);
{
    (my $t = slurp('receipt-3')) =~ s/^index 3$/index 2/m;
    ($code, $out) = run(@key, '--json', 'receipt', spit('tampered', $t));
    $j = eval { decode_json($out) };
    ok($code == 1 && $j && !$j->{valid} && $j->{reason} =~ /inclusion proof/
       && $j->{entry}{body_sha256} eq sha256_hex(slurp('body-3')),
       "--json of a receipt whose proof fails: the reason, and the entry it claims ($code)") or diag($out);
}
($code, $out) = run(@key, '--json', 'consistency', 'checkpoint-600', 'checkpoint-600-fork');
$j = eval { decode_json($out) };
ok($code == 1 && $j && !$j->{valid} && $j->{reason} =~ /fork/, "--json of a fork names it") or diag($out);
($code, $out) = run(@key, '--json', 'promise', 'promise-0');
$j = eval { decode_json($out) };
ok($code == 0 && $j && $j->{mmd} == 10 && $j->{entry}{token_sha256} eq sha256_hex('header.payload.signature'),
   '--json of a promise: mmd and the token hash') or diag($out);

# --- tampering: exit 1 ------------------------------------------------------
my $receipt = slurp('receipt-3');
my ($extra) = $receipt =~ /^extra (\S+)$/m;
my $raw = decode_base64($extra);
my @tampered;
for my $off (0, 15, 20, 25, 30, 50, 80, 110, 140, 180, 210, 233, 240, length($raw) - 1) {
    my $r = $raw;
    substr($r, $off, 1) = chr(ord(substr($r, $off, 1)) ^ 0x01);
    my $b64 = encode_base64($r, '');
    (my $t = $receipt) =~ s/^extra \S+$/extra $b64/m;
    push @tampered, ["a bit of the extra at byte $off", $t];
}
{
    my @lines = split /\n/, $receipt, -1;
    for my $n (3, 5, 8) {    # proof lines follow "index"
        my @l = @lines;
        my $h = decode_base64($l[$n]);
        substr($h, 7, 1) = chr(ord(substr($h, 7, 1)) ^ 0x80);
        $l[$n] = encode_base64($h, '');
        push @tampered, ["a bit of proof hash line $n", join("\n", @l)];
    }
    (my $t = $receipt) =~ s/^index 3$/index 2/m;
    push @tampered, ['another index', $t];
    ($t = $receipt) =~ s/^600$/601/m;
    push @tampered, ['another tree size', $t];
    my ($root) = $receipt =~ /^600\n(\S+)$/m;
    my $rb = decode_base64($root);
    substr($rb, 0, 1) = chr(ord(substr($rb, 0, 1)) ^ 0x01);
    ($t = $receipt) =~ s/^\Q$root\E$/encode_base64($rb, '')/me;
    push @tampered, ['a bit of the root', $t];
    my ($sig) = $receipt =~ /^\x{e2}\x{80}\x{94} notary\.example\/log (\S+)$/m;
    my $sb = decode_base64($sig);
    substr($sb, 40, 1) = chr(ord(substr($sb, 40, 1)) ^ 0x04);
    ($t = $receipt) =~ s/\Q$sig\E/encode_base64($sb, '')/e;
    push @tampered, ['a bit of the signature', $t];
    push @tampered, ['the file cut short', substr($receipt, 0, length($receipt) - 10)];
    ($t = $receipt) =~ s/^extra \S+\n//m;
    push @tampered, ['no extra line', $t];
    my $cp600 = slurp('checkpoint-600');
    my $fork = slurp('checkpoint-600-fork');
    ($t = $receipt) =~ s/\Q$cp600\E/$fork/;
    push @tampered, ['the checkpoint of a forked tree, signed with the real key', $t];
}
for my $case (@tampered) {
    my ($name, $content) = @$case;
    exits(1, "receipt with $name: 1", @key, 'receipt', spit('tampered', $content));
}
exits(1, 'a receipt checked with another key of the same name: 1', '--key-file', 'other.vkey', 'receipt', 'receipt-3');
exits(1, 'a receipt with another record\'s body: 1', @key, 'receipt', 'receipt-3', '--body', 'body-4');
exits(1, 'a receipt with another record\'s headers: 1', @key, 'receipt', 'receipt-3', '--headers', 'headers-4');
exits(1, 'a receipt with one byte more in the body: 1', @key, 'receipt', 'receipt-3', '--body',
      spit('body-x', slurp('body-3') . ' '));

my $promise = slurp('promise-1');
{
    my ($entry) = $promise =~ /^entry (\S+)$/m;
    my $e = decode_base64($entry);
    for my $off (15, 16, 24, 30, 60, 120, 200, 233) {
        my $x = $e;
        substr($x, $off, 1) = chr(ord(substr($x, $off, 1)) ^ 0x10);
        (my $t = $promise) =~ s/^entry \S+$/'entry ' . encode_base64($x, '')/me;
        exits(1, "promise with entry byte $off changed: 1", @key, 'promise', spit('tampered', $t));
    }
    (my $t = $promise) =~ s/^mmd 10$/mmd 1/m;
    exits(1, 'promise with another mmd: 1', @key, 'promise', spit('tampered', $t));
    exits(1, 'promise checked with another key: 1', '--key-file', 'other.vkey', 'promise', 'promise-1');
    exits(1, 'a receipt given as a promise: 1', @key, 'promise', 'receipt-1');
}

exits(1, 'consistency 7 -> forked 600 with the real proof: 1', @key, 'consistency', 'checkpoint-7',
      'checkpoint-600-fork', '--proof', 'proof-7-600');
exits(1, 'consistency 7 -> forked 600 from the real tiles: 1', @key, 'consistency', 'checkpoint-7',
      'checkpoint-600-fork', '--tiles', 'tiles');
exits(1, 'two checkpoints of size 600 with different roots: 1', @key, 'consistency', 'checkpoint-600',
      'checkpoint-600-fork');
exits(1, 'a receipt against the forked checkpoint: 1', @key, 'consistency', 'receipt-0', 'checkpoint-600-fork');
{
    my @p = split /\n/, slurp('proof-7-600');
    for my $n (0 .. $#p) {
        my @q = @p;
        my $h = decode_base64($q[$n]);
        substr($h, 31, 1) = chr(ord(substr($h, 31, 1)) ^ 0x01);
        $q[$n] = encode_base64($h, '');
        exits(1, "consistency 7 -> 600 with proof hash $n flipped: 1", @key, 'consistency', 'checkpoint-7',
              'checkpoint-600', '--proof', spit('proof-x', join("\n", @q) . "\n"));
    }
    exits(1, 'consistency 7 -> 600 with the proof of 3 -> 7: 1', @key, 'consistency', 'checkpoint-7',
          'checkpoint-600', '--proof', 'proof-3-7');
}
{
    # a tile changed on disk: the tiles no longer hash to NEW's root
    my $t = slurp('tiles/tile/0/001');
    substr($t, 100, 1) = chr(ord(substr($t, 100, 1)) ^ 0x01);
    spit('tiles/tile/0/001', $t);
    exits(1, 'consistency from a tampered tile: 1', @key, 'consistency', 'checkpoint-300', 'checkpoint-600',
          '--tiles', 'tiles');
}

done_testing();
