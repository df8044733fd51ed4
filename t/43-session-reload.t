# Contract sessions outlive a graceful restart (Debian's logrotate reloads
# httpd every night): a consumer in the middle of a contract goes on by the
# merchant's relative links after it, with the default shmcb cache and with
# redis. A full stop and start keeps them only where the provider's data
# lives outside httpd (redis), as the README says; a changed
# NotarySessionCache starts empty, with a notice.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use NotaryTest;

my $t = NotaryTest->new(allow_log => [qw(NOTARY02009)]);
$t->add_merchant('shop', 'ec256');

sub admitted {
    my ($label, $consumer) = @_;
    my $r = $t->request(path => '/shop/static/hello.txt', consumer => $consumer || 'alice');
    is($r->{status}, 200, $label) or diag "$r->{status} $r->{body}";
}

sub open_session {
    my ($label, $consumer) = @_;
    my $tok = $t->link_token(merchant => 'shop', consumer => $consumer);
    my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => $consumer);
    is($r->{status}, 200, "$label: the contract link admits $consumer") or diag $r->{body};
}

sub no_session {
    my ($label, $consumer) = @_;
    $t->refused_ok($label, status => 403, merchant => 'shop', lognum => '02009',
                   request => { path => '/shop/static/hello.txt', consumer => $consumer });
}

# ---- shmcb (the default)
$t->start;
open_session('shmcb', 'alice');
for my $n (1, 2) {
    $t->graceful;
    admitted("shmcb: after graceful restart $n, alice's session still admits her");
}
no_session('shmcb: ... and bob, who never had a token, still has no session', 'bob');
open_session('shmcb, after two reloads', 'carol');
$t->graceful;
admitted("shmcb: a session opened after a reload outlives the next one", 'carol');

# another cache configured: the old one's sessions are given up, and said so
my $main_log = $t->dir . '/logs/error-notary.log';
my $log_before = -s $main_log;
$t->graceful(global => 'NotarySessionCache "shmcb:' . $t->dir . '/run/notary/sessions(200000)"');
like(substr(NotaryTest::read_file($main_log), $log_before), qr/NOTARY01109: NotarySessionCache changed from 'shmcb'/,
     'a changed NotarySessionCache is logged (NOTARY01109)');
no_session('... and the sessions of the old cache are gone', 'alice');
$t->stop;

# a full stop and start: shared memory goes with the process
$t->start;
open_session('shmcb, full restart', 'alice');
$t->stop;
$t->start;
no_session('shmcb: a full stop and start ends the sessions (documented)', 'alice');
$t->stop;

# ---- redis (mod_socache_redis, Debian's redis-server)
my $redis = '/usr/bin/redis-server';
{
    # script/common.sh installs redis-server: its absence is a broken set-up
    -x $redis or BAIL_OUT("$redis is missing: run script/test, which installs it");
    my $port = NotaryTest::free_port();
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', $t->dir . '/logs/redis.log';
        open STDERR, '>&', \*STDOUT;
        exec $redis, '--port', $port, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
             '--dir', $t->dir;
        die "exec $redis: $!";
    }
    my $deadline = time + 10;
    sleep 0.1 until IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") || time > $deadline;
    my $global = "LoadModule socache_redis_module $NotaryTest::MODDIR/mod_socache_redis.so\n"
               . "NotarySessionCache redis:127.0.0.1:$port";
    $t->start(global => $global);
    open_session('redis', 'alice');
    for my $n (1, 2) {
        $t->graceful(global => $global);
        admitted("redis: after graceful restart $n, alice's session still admits her");
    }
    no_session('redis: bob has no session', 'bob');
    $t->stop;
    $t->start(global => $global);
    admitted('redis: the session outlives a full stop and start too');
    $t->stop;
    kill 'TERM', $pid;
    waitpid $pid, 0;
}

done_testing;
