#!/usr/bin/perl
# notary_store against a real PostgreSQL: runs the C unit test
# t/unit/test_store (built by `make check`) in its two phases and turns its
# TAP into ours. Binary: $NOTARY_TEST_STORE, else $NOTARY_BUILDDIR/t/unit/test_store.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use IPC::Open2;
use Test::More;
use NotaryTest::Pg;

my $bin = $ENV{NOTARY_TEST_STORE}
    || ($ENV{NOTARY_BUILDDIR} ? "$ENV{NOTARY_BUILDDIR}/t/unit/test_store" : undef);
BAIL_OUT('test_store not built: set NOTARY_BUILDDIR (make check) or NOTARY_TEST_STORE')
    unless $bin && -x $bin;

my $tmp = tempdir('notary-store-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{NOTARY_KEEP_TMP});
my $pg = NotaryTest::Pg->start(dir => $tmp);
my $run = "s$$";
my %env = (
    NOTARY_TEST_PGCONN        => $pg->conninfo('notary'),
    NOTARY_TEST_PGCONN_READER => $pg->conninfo('auditor'),
    NOTARY_TEST_PGCONN_ADMIN  => $pg->conninfo('postgres'),
    NOTARY_TEST_RUN           => $run,
);

# Runs one phase; CONTROL lines from the child are acted on, then answered.
sub run_phase {
    my ($phase, %control) = @_;
    local %ENV = (%ENV, %env);
    my ($out, $in);
    my $pid = open2($out, $in, $bin, $phase) or die "open2 $bin: $!";
    my ($planned, $seen, $failed) = (undef, 0, 0);
    while (my $line = <$out>) {
        chomp $line;
        if ($line =~ /^# CONTROL (\S+)/) {
            my $what = $1;
            my $act = $control{$what};
            ok($act, "$phase: wrapper knows control '$what'");
            $act ||= sub {};     # answer anyway: the child waits for a line
            # an action that must run while the child works answers itself
            my $answered = 0;
            my $answer = sub { print {$in} "done\n"; $in->flush; $answered = 1 };
            $act->($answer);
            $answer->() unless $answered;
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
            note("$phase: $1");
            diag("$phase: $1") if $line =~ /failed at|got /;
        }
        else {
            diag("$phase: unexpected output: $line");
        }
    }
    close $in;
    waitpid($pid, 0);
    my $rc = $? >> 8;
    is($rc, $failed ? 1 : 0, "$phase: test_store exit status (signal " . ($? & 127) . ")");
    is($seen, $planned, "$phase: test_store ran its whole plan (its 1..N line)");
}

run_phase('basic');

# an independent look at what the C test wrote, through DBI as the auditor
my $dbh = $pg->dbh(user => 'auditor');
my $rows = $dbh->selectall_arrayref(
    "SELECT direction, body, octet_length(body), encode(body_sha256, 'hex'),
            encode(sha256(body), 'hex') FROM notary_records
      WHERE exchange_id = ? ORDER BY direction", undef, "$run-x1");
is(scalar @$rows, 2, 'DBI: request and response of x1 are there')
    or diag explain $rows;
is($rows->[0][1], "<contract>\0\x01\x02\xff\xfe binary\0tail</contract>",
   'DBI: request body with NUL bytes intact') if @$rows;
is($rows->[0][3], $rows->[0][4], 'DBI: stored body_sha256 is sha256(body)') if @$rows;
my ($conc) = $dbh->selectrow_array(
    "SELECT count(*) FROM notary_records WHERE exchange_id LIKE ?", undef, "$run-conc-%");
is($conc, 175, 'DBI: 175 rows from the concurrent inserts (7 threads x 25; the 8th is refused)');
$dbh->disconnect;

run_phase('restart',
    stop    => sub { $pg->stop },
    start   => sub { $pg->start_again },
    restart => sub { $pg->stop; $pg->start_again },
    'kill-inflight' => \&kill_inflight);

# Hold a lock the writer's INSERT waits for, kill that backend mid-statement,
# wait for the store's retry to queue up on a fresh connection, release.
sub kill_inflight {
    my ($answer) = @_;
    my $dba = $pg->dbh(user => 'postgres');
    $dba->begin_work;
    $dba->do('LOCK TABLE notary.records IN EXCLUSIVE MODE');
    my $mon = $pg->dbh(user => 'postgres');
    $answer->();
    my $waiting = sub {
        $mon->selectcol_arrayref(q{SELECT pid FROM pg_stat_activity
            WHERE usename = 'notary' AND wait_event_type = 'Lock'});
    };
    my ($first, $second);
    for (1 .. 100) { ($first) = @{ $waiting->() }; last if $first; select undef, undef, undef, 0.02 }
    ok($first, "kill-inflight: the writer's INSERT waits on the lock (pid " . ($first // 'none') . ")");
    $mon->do('SELECT pg_terminate_backend(?)', undef, $first) if $first;
    for (1 .. 100) {
        ($second) = grep { $_ != ($first // 0) } @{ $waiting->() };
        last if $second;
        select undef, undef, undef, 0.02;
    }
    ok($second, "kill-inflight: the retry waits on a fresh connection (pid " . ($second // 'none') . ")");
    $dba->rollback;
    $dba->disconnect;
    $mon->disconnect;
}

$dbh = $pg->dbh(user => 'auditor');
my $r = $dbh->selectall_arrayref(
    "SELECT exchange_id FROM notary_records WHERE exchange_id LIKE ? ORDER BY id",
    undef, "$run-r-%");
is_deeply([map { $_->[0] } @$r],
          ["$run-r-before", "$run-r-after", "$run-r-stale", "$run-r-inflight"],
          'DBI: restart phase left exactly before, after, stale, inflight, in order')
    or diag explain $r;
$dbh->disconnect;

# several hosts in the conninfo, the first silent (listeners of the C test)
run_phase('hosts');

$pg->stop;
done_testing;
