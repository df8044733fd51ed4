#!/usr/bin/perl
# notary_log against a real PostgreSQL: runs the C unit test t/unit/test_log
# in its phases (basic, concurrent, restart) and turns its TAP into ours.
# Binary: $NOTARY_TEST_LOG, else $NOTARY_BUILDDIR/t/unit/test_log.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use IPC::Open2;
use Test::More;
use NotaryTest::Pg;

my $bin = $ENV{NOTARY_TEST_LOG}
    || ($ENV{NOTARY_BUILDDIR} ? "$ENV{NOTARY_BUILDDIR}/t/unit/test_log" : undef);
BAIL_OUT('test_log not built: set NOTARY_BUILDDIR (make check) or NOTARY_TEST_LOG')
    unless $bin && -x $bin;

my $tmp = tempdir('notary-log-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{NOTARY_KEEP_TMP});
my $pg = NotaryTest::Pg->start(dir => $tmp);
$pg->psql(<<'SQL');
CREATE ROLE integrator LOGIN IN ROLE notary_integrator;
CREATE ROLE receipts LOGIN IN ROLE notary_receipt_reader;
SQL
my %env = (
    NOTARY_TEST_PGCONN            => $pg->conninfo('notary'),
    NOTARY_TEST_PGCONN_INTEGRATOR => $pg->conninfo('integrator'),
    NOTARY_TEST_PGCONN_RECEIPT    => $pg->conninfo('receipts'),
    NOTARY_TEST_PGCONN_ADMIN      => $pg->conninfo('postgres'),
    NOTARY_TEST_RUN               => "l$$",
);

sub run_phase {
    my ($phase, %control) = @_;
    local %ENV = (%ENV, %env);
    my ($out, $in);
    my $pid = open2($out, $in, $bin, $phase) or die "open2 $bin: $!";
    my ($planned, $seen, $failed) = (undef, 0, 0);
    while (my $line = <$out>) {
        chomp $line;
        if ($line =~ /^# CONTROL (\S+)/) {
            my $act = $control{$1};
            ok($act, "$phase: wrapper knows control '$1'");
            $act->() if $act;
            print {$in} "done\n";
            $in->flush;
            next;
        }
        if ($line =~ /^(not )?ok (\d+) - (.*)$/) {
            $seen++;
            $failed++ if $1;
            ok(!$1, "$phase: $3");
        }
        elsif ($line =~ /^1\.\.(\d+)/) {
            $planned = $1;
        }
        elsif ($line =~ /^#\s?(.*)$/) {
            diag("$phase: $1");
        }
        else {
            diag("$phase: unexpected output: $line");
        }
    }
    close $in;
    waitpid($pid, 0);
    is($? >> 8, $failed ? 1 : 0, "$phase: test_log exit status (signal " . ($? & 127) . ")");
    ok(defined $planned && $planned == $seen,
       "$phase: test_log ran its whole plan (planned " . ($planned // 'none') . ", saw $seen)");
}

run_phase('basic');
run_phase('concurrent');
run_phase('restart', restart => sub { $pg->stop; $pg->start_again });

# an independent look, through DBI as compliance staff: the view's new columns
my $dbh = $pg->dbh(user => 'auditor');
my ($n, $distinct, $max, $nulls) = $dbh->selectrow_array(
    q{SELECT count(leaf_index), count(DISTINCT leaf_index), max(leaf_index),
             count(*) FILTER (WHERE leaf_index IS NULL AND leaf_hash IS NOT NULL) FROM notary_records});
is($distinct, $n, "DBI: $n indexed rows, each index once");
is($max, $n - 1, 'DBI: indexes run from 0 without a gap');
my ($size) = $dbh->selectrow_array('SELECT size FROM notary.log_state');
is($size, $n, 'DBI: the log state counts every indexed row');
$dbh->disconnect;

$pg->stop;
done_testing;
