# Faults under load, each with a ledger (t/lib/NotaryTest/Ledger.pm): the
# clients note for every matched message whether its receiver got it whole,
# byte for byte; afterwards the store must hold exactly one complete row for
# each message received whole, no partial row, and no row for a message not
# received whole except where the README says it can happen.
#
# - PostgreSQL restarted with -m fast, then with -m immediate, while 8
#   clients loop on matched GETs and POSTs: recording resumes without
#   restarting httpd;
# - the notary's only child killed with SIGKILL in the middle of matched
#   2 MiB downloads and uploads;
# - apachectl -k graceful twice under matched load: no failed request.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use NotaryTest;
use NotaryTest::Ledger;

my $T0 = time;
my $t = NotaryTest->new(allow_log => [qw(NOTARY03006 NOTARY03011 AH01084 AH01097 AH01225)]);
$t->add_merchant('shop', 'ec256');
my $l = NotaryTest::Ledger->new($t, merchant => 'shop');
my %conf = (extra => $t->db_directive(timeout => 5) . $l->rules);
$t->start(%conf);
# an immediate shutdown is a crash: PostgreSQL loses a commit it has
# acknowledged unless the commit waits for its WAL (the test cluster runs
# with synchronous_commit off for speed; a notary's store must not)
$t->pg->psql("ALTER SYSTEM SET synchronous_commit = on", user => 'postgres');
$t->pg->psql("SELECT pg_reload_conf()", user => 'postgres');
is($t->pg->psql("SHOW synchronous_commit", user => 'postgres'), "on\n", 'the store commits synchronously');

# one exchange of each kind first: the ledger itself works
{
    my $load = $l->start_load(tag => 'warm', clients => 1, max_requests => 2, seconds => 20)->wait;
    my $c = $l->reconcile(tag => 'warm', name => 'warm-up');
    is($c->{whole}, 2, 'warm-up: a matched GET and a matched POST received whole')
        or diag explain $l->entries('warm');
}

# ---- PostgreSQL restarted under load
for my $mode (qw(fast immediate)) {
    my $tag = "pg$mode";
    # bounded: 40 s and 250 requests a client at most; stopped 3 s after
    # the database is back
    my $load = $l->start_load(tag => $tag, clients => 8, seconds => 40, max_requests => 250,
                              mix => ['get', 'post']);
    $l->wait_whole($tag, 8, 20);
    my $t_stop = time;
    $t->pg->stop(mode => $mode);
    my $t_down = time;
    sleep 1;
    my $t_start = time;
    $t->pg->start_again;
    my $t_up = time;
    $l->wait_whole($tag, 8, 20, since => $t_up + 0.5);
    $load->stop->wait;
    is($load->{client_errors}, 0, "pg -m $mode: the 8 clients ran to the end");
    my $c = $l->reconcile(tag => $tag, name => "pg -m $mode");
    my $e = $l->entries($tag);
    my @during = grep { $_->{t0} > $t_down && $_->{t1} < $t_start } values %$e;
    my @after = grep { $_->{t0} > $t_up + 0.5 } values %$e;
    my $after_whole = grep { $_->{status} == 200 && $_->{client_whole} } @after;
    ok(scalar(@during) && !grep({ $_->{status} == 200 } @during),
       "pg -m $mode: while it was down, matched messages were refused ("
       . scalar(@during) . ' tried, statuses ' . join(',', sort { $a <=> $b } keys %{{ map { $_->{status} => 1 } @during }}) . ')');
    ok(@after && $after_whole == @after,
       "pg -m $mode: recording resumed without restarting httpd ($after_whole of " . scalar(@after)
       . ' matched messages started after the restart delivered and, per the ledger, recorded)')
        or diag join "\n", map { "$_->{id} $_->{status} $_->{err}" } grep { !$_->{client_whole} } @after;
    diag sprintf "pg -m %s: %d requests, %d whole, %d refused, %.1f s",
        $mode, $c->{requests}, $c->{whole}, $c->{not_whole}, $load->elapsed;
}

# ---- SIGKILL of the notary's only child in the middle of 2 MiB transfers
$t->restart(%conf, server_limit => 1, start_servers => 1);
{
    my $tag = 'kill';
    my @kids = $l->notary_children(1);
    is(scalar @kids, 1, 'one notary child serves every connection') or diag "children: @kids";
    # slow readers and writers: each 2 MiB transfer takes about half a second
    my $load = $l->start_load(tag => $tag, clients => 4, seconds => 40, max_requests => 60,
                              mix => ['bigget', 'bigpost'], read_pause => 0.002, write_pause => 0.005);
    my @killed;
    for my $round (1, 2) {
        # once transfers complete, kill the child while the next ones run
        $l->wait_whole($tag, 4 * $round, 20);
        sleep 0.3;
        my ($child) = $l->notary_children(1);
        die "no notary child to kill" unless $child && $child > 1;
        push @killed, [$child, time];
        kill 'KILL', $child or die "kill $child: $!";
    }
    $l->wait_whole($tag, 4, 20, since => $killed[-1][1] + 1.5);
    $load->stop->wait;
    is($load->{client_errors}, 0, 'SIGKILL: the 4 clients ran to the end');
    my $c = $l->reconcile(tag => $tag, name => 'SIGKILL mid-transfer',
        allow_undelivered => 'a record is committed before the final byte goes out; a child killed '
                           . 'between the commit and the final byte takes the rest with it');
    my $e = $l->entries($tag);
    # a second's margin either side: under load a client may note its start
    # or its cut a moment off the kill's own clock reading
    my @cut = grep { my $x = $_; !$x->{client_whole} && grep { $x->{t0} < $_->[1] + 1 && $x->{t1} >= $_->[1] - 1 } @killed }
              values %$e;
    ok(scalar @cut, 'the kills cut transfers in the middle (' . scalar(@cut) . ' cut: '
       . join(', ', map { "$_->{kind} $_->{got_len} bytes" } @cut[0 .. ($#cut > 5 ? 5 : $#cut)]) . ')');
    my @after = grep { $_->{t0} > $killed[-1][1] + 1.5 } values %$e;
    ok(@after && !grep({ !$_->{client_whole} } @after),
       'a new child serves matched 2 MiB transfers afterwards (' . scalar(@after) . ' started after, all whole)')
        or diag join "\n", map { "$_->{id} $_->{status} $_->{err}" } @after;
    my @now = $l->notary_children;
    ok(!grep({ my $k = $_; grep { $_->[0] == $k } @killed } @now), "the killed children are gone (now: @now)");
    diag sprintf "SIGKILL: %d transfers, %d whole, %d not whole, %d recorded but not received whole, %.1f s",
        $c->{requests}, $c->{whole}, $c->{not_whole}, $c->{undelivered_recorded}, $load->elapsed;
}

# ---- two graceful restarts under matched load: no failed request
$t->restart(%conf);
{
    my $tag = 'graceful';
    # a connection per request: a request written on an idle keep-alive
    # connection the old generation is closing is every client's retry case,
    # not a failure of the notary
    my $load = $l->start_load(tag => $tag, clients => 8, seconds => 40, max_requests => 200,
                              mix => ['get', 'post'], close => 1);
    my @gen;
    for my $round (1, 2) {
        $l->wait_whole($tag, 8 * $round, 20);
        my @before = $l->notary_children(1);
        $l->graceful;
        push @gen, [time, \@before];
    }
    $l->wait_whole($tag, 8, 20, since => $gen[-1][0]);
    $load->stop->wait;
    is($load->{client_errors}, 0, 'graceful x2: the 8 clients ran to the end');
    my $c = $l->reconcile(tag => $tag, name => 'graceful x2');
    my $e = $l->entries($tag);
    my @failed = grep { !($_->{dir} eq 'response' ? $_->{client_whole} : $_->{status} == 200) } values %$e;
    is(scalar @failed, 0, "graceful x2: no failed request ($c->{requests} made)")
        or diag join "\n", map { "$_->{id} $_->{kind} status $_->{status}: $_->{err}" } @failed;
    my @after = grep { $_->{t0} > $gen[-1][0] } values %$e;
    ok(scalar @after, 'graceful x2: requests were served by the newest generation (' . scalar(@after) . ')');
    diag sprintf "graceful: %d requests, %d whole, %.1f s", $c->{requests}, $c->{whole}, $load->elapsed;
}

my $nums = $l->log_numbers;
diag "error-log numbers at warn or above: "
    . join(', ', map { "$_ x$nums->{$_}" } sort keys %$nums);
diag sprintf 't/60 took %.0f s', time - $T0;
done_testing;
