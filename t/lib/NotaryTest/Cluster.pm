package NotaryTest::Cluster;
# Several notary nodes for t/70-multinode.t (docs/deploy.md): the harness's
# notary (node "a") and more httpd notaries beside it (node "b", ...), one
# HAProxy in TCP mode in front of them (TLS passes through to the nodes),
# one redis-server for the contract sessions, and a hot standby of the
# harness's PostgreSQL cluster.
#
#   my $t = NotaryTest->new(...); $t->add_merchant('shop', 'ec256');
#   my $c = NotaryTest::Cluster->new($t);
#   my $b = $c->add_node('b');             # a NotaryTest object of its own
#   my $lb = $c->balancer_view;            # ... whose requests go through HAProxy
#   my $sb = $c->start_standby;            # NotaryTest::Pg, streaming from $t->pg
#   $c->start_redis;
#   $c->start_nodes(global => $c->session_cache_conf, extra => ...);
#   $c->start_haproxy;
#   $c->haproxy_state;                     # { a => 'UP', b => 'DOWN' }
#
# A node is a copy of the harness object with a directory of its own under
# the harness's (its httpd.conf, logs/ and run/; pki/, htdocs/ and cgi/ are
# links to the harness's): the same PKI, notary certificate, merchants and
# consumers, so one contract link is good on every node, while each node
# has its own port, pid file and error logs -- checked at the end of the
# file like the harness's own (same allow-list). The merchants' httpd is
# the harness's alone.
#
# Every process started here binds 127.0.0.1 and is ended at END (and by
# stop_daemons); the standby cluster goes with NotaryTest::Pg's own END.
use strict;
use warnings;
use Carp qw(croak);
use File::Path qw(make_path);
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use NotaryTest;
use NotaryTest::Pg;

our %DAEMONS;    # pid => name: our redis-server and haproxy
my $OWNER = $$;

sub new {
    my ($class, $t) = @_;
    # made once, before any node copies them: a node must never make its
    # own (pki/ is shared: it would overwrite the harness's files), and
    # every node records into the harness's cluster
    $t->ca;
    $t->notary_cert;
    $t->proxy_client_cert;
    $t->{consumers} ||= {};
    $t->pg;
    return bless { t => $t, nodes => { a => $t }, order => ['a'] }, $class;
}

sub node { $_[0]{nodes}{ $_[1] } or croak "no node $_[1]" }
sub node_names { @{ $_[0]{order} } }

sub add_node {
    my ($self, $name) = @_;
    my $t = $self->{t};
    croak "node $name exists" if $self->{nodes}{$name};
    my $d = $t->dir . "/node-$name";
    make_path("$d/logs", "$d/run");
    chmod 0755, $d;
    for my $sub (qw(pki htdocs cgi)) {
        symlink($t->dir . "/$sub", "$d/$sub") or croak "symlink $d/$sub: $!";
    }
    my $n = bless { %$t, dir => $d, ports => { notary => NotaryTest::free_port() },
                    started => {}, allow_log => $t->{allow_log}, watched => 0,
                    logs_checked => 0 }, ref $t;
    delete $n->{sync_seq};
    # its logs are checked at done_testing, as the harness's are
    NotaryTest::_watch_logs($n);
    $self->{nodes}{$name} = $n;
    push @{ $self->{order} }, $name;
    return $n;
}

# A view of the harness whose notary_port is HAProxy's: request(),
# tls_connect() and NotaryTest::Ledger's clients go through the balancer.
# Never started itself; its logs are the nodes'.
sub balancer_view {
    my $self = shift;
    my $t = $self->{t};
    $self->{lb_port} ||= NotaryTest::free_port();
    return $self->{lb} ||= bless { %$t, ports => { notary => $self->{lb_port} }, started => {},
                                   watched => 0, logs_checked => 1 }, ref $t;
}

# Every object that reads the record store (records, reconcile) now reads
# this cluster: after a failover, the promoted standby.
sub use_pg {
    my ($self, $pg) = @_;
    $_->{pg} = $pg for values %{ $self->{nodes} }, grep { $_ } $self->{lb};
    return $pg;
}

# start the harness (merchants and node a), then every other node with the
# same configuration
sub start_nodes {
    my ($self, %o) = @_;
    $self->{t}->start(%o);
    for my $name (grep { $_ ne 'a' } $self->node_names) {
        my $n = $self->{nodes}{$name};
        $n->write_conf(%o);
        $n->_start_one('notary', $n->notary_port);
    }
}

sub stop_node {
    my ($self, $name) = @_;
    my $n = $self->node($name);
    $n->_stop_one('notary');
}

# start a node again, with the configuration it was started with
sub start_node {
    my ($self, $name) = @_;
    my $n = $self->node($name);
    $n->_start_one('notary', $n->notary_port);
}

# the pid in a node's pid file (undef when it has none)
sub node_pid {
    my ($self, $name) = @_;
    my $f = $self->node($name)->dir . '/run/notary/httpd.pid';
    open my $fh, '<', $f or return undef;
    my $p = <$fh> // '';
    chomp $p;
    return $p =~ /^\d+$/ ? $p : undef;
}

# ---------------------------------------------------------------- daemons
sub _spawn {
    my ($self, $name, $log, @cmd) = @_;
    my $pid = fork // croak "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(127);
        { no warnings 'exec'; exec { $cmd[0] } @cmd; }
        print STDERR "exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    $DAEMONS{$pid} = $name;
    return $pid;
}

sub _wait_port {
    my ($self, $name, $pid, $port, $log) = @_;
    my $deadline = time + 15;
    until (IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 1)) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $DAEMONS{$pid};
            croak "$name exited at start (status $?):\n" . (-f $log ? NotaryTest::read_file($log) : '');
        }
        croak "$name did not listen on $port within 15 s:\n" . NotaryTest::read_file($log)
            if time > $deadline;
        sleep 0.1;
    }
}

sub _stop_daemon {
    my ($self, $pid) = @_;
    return unless $pid && $DAEMONS{$pid};
    kill 'TERM', $pid;
    my $deadline = time + 10;
    while (time < $deadline) {
        last if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    if (kill 0, $pid) {
        kill 'KILL', $pid;
        waitpid($pid, 0);
    }
    delete $DAEMONS{$pid};
}

# One redis-server (Debian's, installed by script/common.sh), no
# persistence: the nodes' shared contract sessions.
sub start_redis {
    my $self = shift;
    my $redis = '/usr/bin/redis-server';
    -x $redis or croak "$redis is missing: run script/test, which installs it";
    my $port = NotaryTest::free_port();
    my $log = $self->{t}->dir . '/logs/redis.log';
    my $pid = $self->_spawn('redis-server', $log, $redis, '--port', $port, '--bind', '127.0.0.1',
                            '--save', '', '--appendonly', 'no', '--dir', $self->{t}->dir);
    $self->_wait_port('redis-server', $pid, $port, $log);
    @{$self}{qw(redis_pid redis_port)} = ($pid, $port);
    return $port;
}

# The nodes' `global` configuration for sessions in redis.
sub session_cache_conf {
    my $self = shift;
    croak 'start_redis first' unless $self->{redis_port};
    return "LoadModule socache_redis_module $NotaryTest::MODDIR/mod_socache_redis.so\n"
         . "NotarySessionCache redis:127.0.0.1:$self->{redis_port}";
}

sub haproxy_conf {
    my $self = shift;
    my $sock = $self->{t}->dir . '/run/haproxy.sock';
    my $servers = join '', map {
        "    server $_ 127.0.0.1:" . $self->{nodes}{$_}->notary_port . "\n"
    } $self->node_names;
    # TCP mode: the consumer's TLS (and client certificate) reaches the
    # node untouched. Health check: a TLS handshake with the node every
    # 200 ms, down after 2 failures, up after 2 successes. A connection
    # refused by a node that is gone is tried again at once on another
    # (redispatch), so a new connection never meets a dead node.
    return <<"EOF";
global
    maxconn 512
    stats socket $sock mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 1s
    retries 3
    option redispatch 1

frontend notary
    bind 127.0.0.1:$self->{lb_port}
    default_backend nodes

backend nodes
    balance roundrobin
    default-server check inter 200ms fall 2 rise 2 check-ssl verify none check-sni notary.test
$servers
EOF
}

# HAProxy in the foreground as our own child (never the system service),
# with our configuration; returns once it listens and sees every node up.
sub start_haproxy {
    my $self = shift;
    my $haproxy = '/usr/sbin/haproxy';
    -x $haproxy or croak "$haproxy is missing: run script/test, which installs it";
    $self->balancer_view;
    my $d = $self->{t}->dir;
    my $cfg = "$d/haproxy.cfg";
    NotaryTest::write_file($cfg, $self->haproxy_conf);
    my $out = `$haproxy -c -f $cfg 2>&1`;
    croak "haproxy -c refused $cfg ($?):\n$out" if $?;
    my $log = "$d/logs/haproxy.log";
    my $pid = $self->_spawn('haproxy', $log, $haproxy, '-db', '-f', $cfg);
    $self->_wait_port('haproxy', $pid, $self->{lb_port}, $log);
    $self->{haproxy_pid} = $pid;
    for my $name ($self->node_names) {
        $self->wait_haproxy($name, 'UP', 15)
            or croak "haproxy never saw node $name up:\n" . NotaryTest::read_file($log);
    }
    return $pid;
}

sub haproxy_log {
    my $f = $_[0]{t}->dir . '/logs/haproxy.log';
    return -f $f ? NotaryTest::read_file($f) : '';
}

# The balancer's view of the nodes from its stats socket: name => UP,
# DOWN, ... (the first word of its status column)
sub haproxy_state {
    my $self = shift;
    my $s = IO::Socket::UNIX->new(Peer => $self->{t}->dir . '/run/haproxy.sock') or return {};
    print $s "show stat\n";
    local $/;
    my $csv = <$s> // '';
    close $s;
    my @lines = split /\n/, $csv;
    my $head = shift @lines // '';
    $head =~ s/^#\s*//;
    my @cols = split /,/, $head;
    my ($si) = grep { $cols[$_] eq 'status' } 0 .. $#cols;
    my ($ni) = grep { $cols[$_] eq 'svname' } 0 .. $#cols;
    return {} unless defined $si && defined $ni;
    my %st;
    for (@lines) {
        my @f = split /,/, $_, -1;
        next unless $self->{nodes}{ $f[$ni] // '' };
        ($st{ $f[$ni] }) = ($f[$si] // '') =~ /^(\S+)/;
    }
    return \%st;
}

# wait until HAProxy's health checks say node $name is $want (UP, DOWN)
sub wait_haproxy {
    my ($self, $name, $want, $secs) = @_;
    return $self->{t}->wait_for(sub { ($self->haproxy_state->{$name} // '') eq $want },
                                timeout => $secs // 10, what => "haproxy to see node $name $want");
}

sub stop_daemons {
    my $self = shift;
    $self->_stop_daemon(delete $self->{haproxy_pid});
    $self->_stop_daemon(delete $self->{redis_pid});
}

END {
    if ($$ == $OWNER) {
        local $?;
        for my $pid (keys %DAEMONS) {
            kill 'TERM', $pid;
            waitpid($pid, 0);
        }
        %DAEMONS = ();
    }
}

# ---------------------------------------------------------------- the standby
# A hot standby of the harness's cluster: pg_basebackup -R over the
# primary's socket (a replication line added to its pg_hba.conf), its own
# port and socket directory, hot_standby on; returns it as a NotaryTest::Pg
# (psql, dbh, stop, start_again work on it as on the primary).
sub start_standby {
    my $self = shift;
    my $pg = $self->{t}->pg;
    my $dir = $self->{t}->dir . '/pg-standby';
    make_path($dir);
    chmod 0755, $dir;
    my $sb = bless {
        dir => $dir, pgdata => "$dir/pgdata", sockdir => "$dir/pgsock", logfile => "$dir/pg.log",
        port => NotaryTest::free_port(), tcp => 0, bindir => $pg->bindir_of,
        srcdir => $pg->srcdir_of, db => $pg->dbname, owner_pid => $$,
    }, ref $pg;
    for my $d ($sb->{pgdata}, $sb->{sockdir}) {
        mkdir $d or croak "mkdir $d: $!";
    }
    NotaryTest::write_file($sb->{logfile}, '');
    if ($> == 0) {
        my ($uid, $gid) = (getpwnam('postgres'))[2, 3];
        croak "no OS user postgres" unless defined $uid;
        chown $uid, $gid, $sb->{pgdata}, $sb->{sockdir}, $sb->{logfile} or croak "chown: $!";
    }
    chmod 0700, $sb->{pgdata};
    chmod 0755, $sb->{sockdir};

    open my $hba, '>>', $pg->pgdata . '/pg_hba.conf' or croak "pg_hba.conf: $!";
    print $hba "local replication all trust\n";
    close $hba or croak "pg_hba.conf: $!";
    $pg->psql('SELECT pg_reload_conf()');
    $sb->_run(as_postgres => 1, cmd => [
        $pg->bindir_of . '/pg_basebackup', '-D', $sb->{pgdata}, '-h', $pg->sockdir,
        '-p', $pg->port, '-U', 'postgres', '-R', '-X', 'stream', '-c', 'fast', '--no-sync']);
    # the primary's settings came along; these come after them and win
    open my $conf, '>>', "$sb->{pgdata}/postgresql.conf" or croak "postgresql.conf: $!";
    print $conf "# NotaryTest::Cluster: the standby\n", "port = $sb->{port}\n",
        "unix_socket_directories = '$sb->{sockdir}'\n", "hot_standby = on\n";
    close $conf or croak "postgresql.conf: $!";
    $NotaryTest::Pg::LIVE{"$sb"} = $sb;
    $sb->start_again;
    return $self->{standby} = $sb;
}

# Synchronous replication to the standby: a commit the primary
# acknowledges is on the standby too (synchronous_commit = on waits for its
# flush). Set on the primary only, after the base backup: a promoted
# standby with it would wait for a standby of its own that never comes.
# Returns the primary's pg_stat_replication row ("state sync_state").
sub sync_replication {
    my $self = shift;
    my $pg = $self->{t}->pg;
    $pg->psql("ALTER SYSTEM SET synchronous_standby_names = '*'");
    $pg->psql('SELECT pg_reload_conf()');
    my $row = '';
    $self->{t}->wait_for(sub {
        $row = $pg->psql("SELECT state || ' ' || sync_state FROM pg_stat_replication");
        $row =~ /^streaming sync$/m;
    }, timeout => 20, what => 'the standby to stream synchronously');
    chomp $row;
    return $row;
}

sub promote {
    my ($self, $sb) = @_;
    $sb->_run(as_postgres => 1, cmd => [
        $sb->bindir_of . '/pg_ctl', '-D', $sb->pgdata, '-w', '-t', '60', 'promote']);
    return $sb;
}

1;
