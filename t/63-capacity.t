# Capacity: the notary under many connections, at the settings the README
# recommends ("Sizing: the MPM, the merchant's pool, the store and slow
# clients"), beside a plain mod_proxy vhost (ProxyPass to the same
# merchant) in the same httpd, so both share one MPM, one load and one
# merchant.
#
# 1. Slow clients (issue 15, item 4): $SLOW connections trickle their
#    request headers one byte a second (and come back when mod_reqtimeout
#    answers them 408); meanwhile a normal client -- a new TLS connection,
#    one GET -- is timed, alternately through the notary and through the
#    plain vhost: the p50 of each must stay under a second. mod_reqtimeout
#    runs with the README's own values (header=20-40,MinRate=500
#    body=20,MinRate=500), not scaled down: the measures span more than one
#    header timeout, so they also fall while slow clients are answered and
#    come back.
# 2. 500 concurrent keep-alive connections (item 5) loop for $HOLD seconds
#    on matched and unmatched GETs through the notary (and 50 more on the
#    plain vhost): all open at once, no 502 or 503, nothing lost, and the
#    ledger of matched messages balances with the store's rows.
#    "Nothing lost" allows one thing HTTP allows: the server closing a
#    keep-alive connection between two requests (RFC 9112, 9.6), which a
#    client notices only once it has written its next request and which it
#    retries (9.3.1), as curl and browsers do. The event MPM does it when a
#    request arrives on an idle connection of a child whose workers are all
#    busy (server/mpm/event/event.c: "If we don't get a worker immediately
#    (nonblocking), we close the connection"). The clients here retry such
#    a request (up to twice, on a new connection) and the test proves,
#    from the access logs, that the notary never read the attempt and the
#    merchant never saw it. Any other connection closed before its answer
#    -- a new one, a request the notary read, a cut answer -- is a loss and
#    fails the test.
# 3. The 502 mod_proxy gives when a merchant closes a pooled connection as
#    it is reused (item 5's "explain any 502"): a merchant that answers the
#    first request on each connection and closes when the second arrives,
#    behind the notary and behind a plain ProxyPass vhost, one child each:
#    on the first request of a consumer connection both answer 502
#    (AH01102, AH00898), on a later request both close the consumer's
#    connection without an answer (mod_proxy_http's AH01104: the client is
#    to retry); with "SetEnv proxy-initial-not-pooled 1" (the README's
#    remedy where a merchant may close pooled connections unforeseen) the
#    first request gets a fresh merchant connection and 200, and only a
#    later request can meet a closing one (closed without an answer, for
#    the client to send again).
#
# Why an earlier version of this file failed on a loaded machine (48 new
# and 68 reused connections closed before their answer, p50 7 s; its logs
# were not kept, so this is read from its figures and its code): its
# clients opened their connections first and then waited for one another,
# idle, for up to 5 s -- about the header timeout it used (4 s, extended
# by the handshake's bytes), after which mod_reqtimeout closes a connection
# that has not sent its request; and each client process reconnected with a
# blocking TLS handshake of up to 10 s, during which its 49 other
# connections could sit idle past KeepAliveTimeout (5 s), be closed, and
# reconnect in turn. The clients here send each connection's first request
# as soon as its handshake is done, connect without blocking inside their
# event loop, and tell a closed idle connection from a loss.
#
# Variants (none is run by default):
#   CAPACITY_MPM=debian       Debian's mpm_event.conf (ThreadsPerChild 25,
#                             MaxRequestWorkers 150) instead of the README's:
#                             the checks fail (slow clients not all let in, a
#                             normal request unanswered, a third of the busy
#                             attempts closed, AH10159 and AH00484 logged)
#   CAPACITY_REQTIMEOUT=off   without mod_reqtimeout: the slow clients keep
#                             their workers (the sizing still absorbs 200)
#   CAPACITY_SLOW=N, CAPACITY_CONNS=N, CAPACITY_HOLD=S   smaller sizes for
#                             development (the checks then prove less)
#
# The clients are Perl event loops (IO::Socket::SSL, non-blocking), one
# process per 50 connections; every loop is bounded in time and count, and
# everything binds 127.0.0.1. The whole file takes about 2 minutes.
use strict;
use warnings;
use Test::More;
use Digest::SHA;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::SSL;
use POSIX qw(_exit);
use Socket qw(SOL_SOCKET SO_ERROR);
use Time::HiRes qw(time sleep);
use NotaryTest;
use NotaryTest::Ledger;

my $T0 = time;
my $SLOW = $ENV{CAPACITY_SLOW} // 200;     # trickling connections (item 4)
my $CONNS = $ENV{CAPACITY_CONNS} // 500;   # keep-alive connections on the notary (item 5)
my $PLAIN_CONNS = int($CONNS / 10);        # and on the plain vhost meanwhile
my $HOLD = $ENV{CAPACITY_HOLD} // 25;      # seconds of item 5's load
my $PER_PROC = 50;
my $ATTEMPTS = 3;                          # a request closed unanswered is sent again, twice at most

# The README's recommendation (see "Sizing" there) for these loads, or
# Debian's mpm_event.conf to show the checks failing.
my $debian = ($ENV{CAPACITY_MPM} // '') eq 'debian';
my $server_limit = $debian ? 16 : 20;
my $mpm = $debian
    ? "StartServers 2\nMinSpareThreads 25\nMaxSpareThreads 75\nThreadLimit 64\n"
    . "ThreadsPerChild 25\nMaxRequestWorkers 150\nAsyncRequestWorkerFactor 2\n"
    : "StartServers 20\nMinSpareThreads 75\nMaxSpareThreads 700\nThreadLimit 64\n"
    . "ThreadsPerChild 35\nMaxRequestWorkers 700\nAsyncRequestWorkerFactor 1\n";
my $reqtimeout = ($ENV{CAPACITY_REQTIMEOUT} // '') eq 'off' ? ''
    : "LoadModule reqtimeout_module $NotaryTest::MODDIR/mod_reqtimeout.so\n"
    . "RequestReadTimeout header=20-40,MinRate=500 body=20,MinRate=500\n";
# The merchant: more threads in one child than all the pooled connections
# the notary and the plain vhost may hold to it (20 children x max=1 each),
# so none of its children ever has every worker busy and closes its idle
# keep-alive connections under them; and the pools drop a connection idle
# for 30 s (ttl) before the merchant's KeepAliveTimeout (60 s) would close
# it (the README's "merchant's side"). So no pooled merchant connection
# closes as it is reused, and the first request of a consumer connection
# may reuse one (proxy-initial-not-pooled, which part 3 shows, is not
# needed; it would cost each of the 550 a TLS handshake with the merchant,
# queued behind max=1).
my $worker = 'max=1 ttl=30';
my $merchant_mpm = "StartServers 2\nServerLimit 2\nThreadLimit 64\nThreadsPerChild 64\n"
                 . "MaxRequestWorkers 128\nMinSpareThreads 4\nMaxSpareThreads 128\n";

# AH01382: mod_reqtimeout's 408 to the slow clients (info); nothing at warn
# is expected from the recommended settings.
my $t = NotaryTest->new(allow_log => []);
my $m = $t->add_merchant('shop', 'ec256');
my $l = NotaryTest::Ledger->new($t, merchant => 'shop');

my $plain_port = NotaryTest::free_port();
my $ca = $t->ca;
my $dir = $t->dir;
my $murl = $t->merchant_url('shop');

# A plain mod_proxy vhost in the notary's httpd: its TLS set-up is the
# notary's, its backend settings are those of the notary's merchant worker.
sub plain_vhost {
    my ($tt, $port, $prefix, $url, $params, $extra) = @_;
    my ($cert, $key) = $tt->notary_cert;
    my $pc = $tt->proxy_client_cert;
    my ($ca_, $d) = ($tt->ca, $tt->dir);
    return <<"EOF";
Listen 127.0.0.1:$port
<VirtualHost 127.0.0.1:$port>
    ServerName notary.test
    Protocols http/1.1
    SSLEngine on
    SSLCertificateFile $cert
    SSLCertificateKeyFile $key
    SSLProxyEngine on
    SSLProxyVerify require
    SSLProxyCACertificateFile $ca_
    SSLProxyCheckPeerName off
    SSLProxyMachineCertificateFile $pc
    ProxyPass "$prefix/" "$url/" $params
$extra
    ErrorLog $d/logs/plain-error.log
    CustomLog $d/logs/plain-access.log "%P \\"%r\\" %>s %b"
</VirtualHost>
EOF
}

$t->start(server_limit => $server_limit, start_servers => $debian ? 2 : 20,
          global => $mpm . $reqtimeout . plain_vhost($t, $plain_port, '/shop', $murl, $worker, ''),
          merchants_global => $merchant_mpm,
          extra => $t->db_directive(timeout => 10) . $l->rules
                 . "    <Proxy \"$murl\">\n        ProxySet $worker\n    </Proxy>\n");
diag(($debian ? "Debian's mpm_event defaults" : "the README's MPM settings")
     . ($reqtimeout ? ', mod_reqtimeout header=20-40,MinRate=500' : ', no mod_reqtimeout')
     . ", $SLOW slow clients, $CONNS + $PLAIN_CONNS connections for $HOLD s");

my $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
my ($ccert, $ckey) = $t->consumer('alice');
my $hello = NotaryTest::read_file($m->{docroot} . '/static/hello.txt');

my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'the notary serves the merchant');
$r = $t->request(url => "https://notary.test:$plain_port/shop/static/hello.txt", consumer => 'alice',
                 curl_args => ['--resolve', "notary.test:$plain_port:127.0.0.1"]);
is($r->{status}, 200, 'the plain mod_proxy vhost serves the merchant');

# A blocking TLS connection (alice's certificate) to a port of an instance.
sub tls {
    my ($port, $timeout, $tt) = @_;
    $tt //= $t;
    my ($c, $k) = $tt->consumer('alice');
    return IO::Socket::SSL->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                SSL_hostname => 'notary.test', SSL_ca_file => $tt->ca,
                                SSL_cert_file => $c, SSL_key_file => $k,
                                Timeout => $timeout // 10);
}

sub median {
    my @s = sort { $a <=> $b } @_;
    return undef unless @s;
    return @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2;
}

sub pct {
    my ($p, @v) = @_;
    my @s = sort { $a <=> $b } @v;
    return @s ? $s[int($p * $#s + 0.5)] : undef;
}

# A normal client: a new TLS connection, one GET, the whole answer read;
# returns [seconds, status, error] (seconds counted to the last byte or to
# the failure).
sub normal_get {
    my ($port, $path, $limit) = @_;
    my $t0 = time;
    my $deadline = $t0 + $limit;
    my $s = tls($port, $limit) or return [time - $t0, 0, 'connect: ' . (IO::Socket::SSL::errstr() || $!)];
    print $s "GET $path HTTP/1.1\r\nHost: notary.test\r\nConnection: close\r\n\r\n";
    my $sel = IO::Select->new($s);
    my $in = '';
    while (time < $deadline) {
        unless ($s->pending) { $sel->can_read($deadline - time) or last }
        my $n = sysread($s, $in, 65536, length $in);
        last if !$n && !($! && ($!{EAGAIN} || $!{EINTR}));
    }
    close $s;
    my ($st) = $in =~ m{\AHTTP/1\.1 (\d{3})};
    my $ok = defined $st && $st == 200 && $in =~ /\r\n\r\n\Q$hello\E\z/;
    return [time - $t0, $st // 0, $ok ? '' : (time >= $deadline ? 'timeout' : 'incomplete')];
}

sub read_stats {
    my $f = shift;
    return {} unless -f $f;
    my %h = NotaryTest::read_file($f) =~ /(\w+)=(\d+)/g;
    return \%h;
}

# ------------------------------------------------------------ 1. slow clients
# One process keeps $SLOW connections trickling: each sends its request
# line, then one byte of an endless header each second; one that is
# answered (408) or closed is replaced. Its counts go to a file.
sub slow_clients {
    my ($n, $seconds, $statf) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $stop = 0;
    local $SIG{TERM} = sub { $stop = 1 };
    my $deadline = time + $seconds;
    my (%c, @conns);
    my $save = sub {
        open my $f, '>', "$statf.tmp" or die;
        print $f join(' ', map { "$_=" . ($c{$_} // 0) } qw(connects failed_connects answered closed max_held held)), "\n";
        close $f;
        rename "$statf.tmp", $statf;
    };
    my $next_tick = time;
    while (!$stop && time < $deadline) {
        # (re)connect up to 25 a round, so the trickle keeps its pace
        my $made = 0;
        for my $i (0 .. $n - 1) {
            next if $conns[$i];
            last if $made++ >= 25 || $stop;
            my $s = tls($t->notary_port, 5);
            if (!$s) { $c{failed_connects}++; next }
            $s->blocking(0);
            syswrite($s, "GET /shop/static/hello.txt?slow=$i HTTP/1.1\r\nHost: notary.test\r\nX-Slow: ");
            $conns[$i] = { s => $s };
            $c{connects}++;
        }
        my $held = grep { $_ } @conns;
        $c{held} = $held;
        $c{max_held} = $held if $held > ($c{max_held} // 0);
        # one byte each second on every connection; an answer ends it
        if (time >= $next_tick) {
            $next_tick = time + 1;
            for my $i (0 .. $n - 1) {
                my $x = $conns[$i] or next;
                my $buf = '';
                my $rd = sysread($x->{s}, $buf, 4096);
                if (defined $rd && $rd > 0) {
                    $c{answered}++ if $buf =~ m{^HTTP/1\.1 408};
                    close $x->{s}; $conns[$i] = undef; next;
                }
                my $gone = defined $rd && $rd == 0;
                if (!$gone && !defined syswrite($x->{s}, 'a')) {
                    # a full send buffer is not an end (the byte goes next second)
                    $gone = !($SSL_ERROR == SSL_WANT_WRITE || $SSL_ERROR == SSL_WANT_READ || $!{EAGAIN});
                }
                if ($gone) {
                    $c{closed}++;
                    close $x->{s}; $conns[$i] = undef;
                }
            }
            $save->();
        }
        sleep 0.05;
    }
    $save->();
    close $_->{s} for grep { $_ } @conns;
}

{
    my $statf = "$dir/slow-stats";
    my $kid = fork // die "fork: $!";
    if (!$kid) {
        eval { slow_clients($SLOW, 75, $statf); 1 } or warn "slow clients: $@";
        _exit(0);
    }
    # let them take their places: all connected once (or 15 s)
    my $ramp_until = time + 15;
    sleep 0.5 while time < $ramp_until && (read_stats($statf)->{max_held} // 0) < $SLOW;
    my $t_ramp = time;
    my (@tn, @tp, @bad);
    # 20 measures of each, spread over 28 s: more than the header timeout
    # (20 s, extended by the handshake's bytes), so they also fall while
    # the first slow clients are answered 408 and come back
    my $until = time + 40;
    for my $i (1 .. 20) {
        last if time > $until;
        my $due = $t_ramp + 1.4 * $i;
        sleep($due - time) if $due > time;
        my $a = normal_get($t->notary_port, "/shop/static/hello.txt?normal=$i&notary_token=$tok", 10);
        my $b = normal_get($plain_port, "/shop/static/hello.txt?normal=$i", 10);
        push @tn, $a->[0];
        push @tp, $b->[0];
        push @bad, "notary #$i: status $a->[1] $a->[2]" if $a->[2];
        push @bad, "plain #$i: status $b->[1] $b->[2]" if $b->[2];
    }
    my $st = read_stats($statf);
    kill 'TERM', $kid;
    waitpid($kid, 0);
    $st = read_stats($statf);
    my ($pn, $pp) = (median(@tn), median(@tp));
    diag(sprintf("slow clients: %d held at most, %d connects, %d failed, %d answered 408, %d closed otherwise",
                 map { $st->{$_} // 0 } qw(max_held connects failed_connects answered closed)));
    diag(sprintf("normal client (new TLS connection, one GET), %d each: notary p50 %.3f s max %.3f s; plain mod_proxy p50 %.3f s max %.3f s",
                 scalar @tn, $pn // -1, pct(1, @tn) // -1, $pp // -1, pct(1, @tp) // -1));
    ok(($st->{max_held} // 0) >= $SLOW * 0.9,
       "the slow clients held their connections ($st->{max_held} of $SLOW at most at once)");
    # The goal (issue 15) is "not delayed beyond a second". At the
    # recommended settings every slow connection has a worker of its own
    # and the normal client finds idle ones: 0.03-0.07 s at p50 here on a
    # 2-core machine at load averages of 20 to 34. With Debian's 150 workers
    # (CAPACITY_MPM=debian) 174 of the 200 slow connections got in, httpd
    # logged AH10159 and AH00484 (the error-log check fails), and a normal
    # request found no worker within 10 s (the check below that every one
    # got its page fails); the issue measured 18.8 s at p50.
    ok(@tn >= 15 && $pn < 1, sprintf('under %d slow clients a normal client is served through the notary in under 1 s at p50 (%.3f s, %d requests)',
                                     $SLOW, $pn // -1, scalar @tn));
    ok(@tp >= 15 && $pp < 1, sprintf('... and through the plain mod_proxy vhost (%.3f s)', $pp // -1));
    ok(!@bad, 'every normal request got its 200 and page whole') or diag(join "\n", @bad);
    ok(!$reqtimeout || ($st->{answered} // 0) > 0,
       "mod_reqtimeout answered trickling clients 408 meanwhile (" . ($st->{answered} // 0) . ')');
}

# ------------------------------------------------------------ 2. 500 connections
# One event loop per process over up to $PER_PROC keep-alive connections,
# each looping on GETs (for the notary alternately matched -- the ledger's
# 6000-byte page -- and unmatched) until $o{end}; nothing in the loop
# blocks: connects, TLS handshakes, writes and reads all wait in one
# select. Every attempt of a matched request writes its ledger line; a
# request whose reused connection was closed before any byte of its answer
# is noted (for the access-log check) and sent again on a new connection.
sub conn_loop {
    my (%o) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $doc = $l->doc('small');
    my $ledger;
    if ($o{ledger}) {
        open $ledger, '>>', "$dir/ledger-$o{tag}-$o{k}.log" or die;
        $ledger->autoflush(1);
    }
    open my $closedf, '>', "$o{statf}.closed" or die;
    $closedf->autoflush(1);
    my (%c, @lat, @timeline);
    my $open = 0;
    my $opened = sub {
        $open += $_[0];
        push @timeline, sprintf("%.4f %d", time, $open);
    };
    my @slots = map { { i => $_, x => undef, retry => undef } } 0 .. $o{n} - 1;
    my $seq = 0;
    my $hard = $o{end} + 30;
    # one TLS context for all the process's connections: loading the CA,
    # certificate and key for each would cost more CPU than the handshake
    my $ctx = IO::Socket::SSL::SSL_Context->new(SSL_ca_file => $ca, SSL_cert_file => $ccert,
                                                SSL_key_file => $ckey, SSL_verify_mode => SSL_VERIFY_PEER)
        or die "TLS context: $SSL_ERROR";

    my $drop = sub {
        my ($slot) = @_;
        my $x = $slot->{x} or return;
        $opened->(-1) if $x->{up};
        close $x->{s};
        $slot->{x} = undef;
    };
    my $connect = sub {
        my ($slot) = @_;
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $o{port},
                                      Proto => 'tcp', Blocking => 0);
        if (!$s) { $c{connect_failed}++; return }
        $c{connects}++;
        $slot->{x} = { s => $s, st => 'tcp', want => 'w', since => time, n => 0, buf => '', up => 0 };
    };
    # one step of the TLS handshake; true once done
    my $handshake = sub {
        my ($slot) = @_;
        my $x = $slot->{x};
        if ($x->{s}->connect_SSL) {
            $x->{st} = 'idle';
            $x->{up} = 1;
            $opened->(1);
            return 1;
        }
        if ($SSL_ERROR == SSL_WANT_READ) { $x->{want} = 'r'; return 0 }
        if ($SSL_ERROR == SSL_WANT_WRITE) { $x->{want} = 'w'; return 0 }
        $c{tls_failed}++;
        warn "client $o{k}: TLS handshake: $SSL_ERROR\n" if $c{tls_failed} <= 3;
        $drop->($slot);
        return 0;
    };
    # an attempt ends: answered (err undef), or closed ('eof', a read or a
    # write error), or not answered in 30 s ('timeout')
    my $finish = sub {
        my ($slot, $err) = @_;
        my $x = $slot->{x};
        my $q = delete $x->{req};
        my ($st) = $x->{buf} =~ m{\AHTTP/1\.\d (\d{3})};
        $st //= 0;
        my $body = $q->{body} // '';
        my $whole = !$err && $st == 200 && (!$q->{matched} || $body eq $doc->{body}) ? 1 : 0;
        $c{attempts}++;
        $c{requests}++ if $q->{att} == 1;
        $c{matched_attempts}++ if $q->{matched};
        if ($err) {
            if ($err eq 'timeout') {
                $c{timeout}++;
            }
            elsif (length $x->{buf}) {
                $c{cut}++;
            }
            elsif ($x->{n}) {
                # the keep-alive case: closed after an earlier answer,
                # before any byte of this one; sent again, and proven
                # unread from the logs afterwards
                $c{closed_reused_before_answer}++;
                print $closedf "$q->{id}\treused\t$err\n";
                if ($q->{att} < $ATTEMPTS && time < $hard - 10) {
                    $slot->{retry} = { seq => $q->{seq}, att => $q->{att} + 1, matched => $q->{matched} };
                    $c{retried}++;
                }
                else { $c{gave_up}++ }
            }
            else {
                # a new connection closed before its first answer: a loss
                $c{closed_new_before_answer}++;
                print $closedf "$q->{id}\tnew\t$err\n";
            }
        }
        else {
            $c{"status_$st"}++;
            push @lat, int(1000 * (time - $q->{t0}));
        }
        if ($q->{matched} && $ledger) {
            print $ledger join("\t", $q->{id}, 'get', 'response', $q->{uri}, $doc->{len}, $doc->{sha}, $st,
                               length $body, Digest::SHA::sha256_hex($body), sprintf('%.3f', $q->{t0}),
                               $err // ($whole ? '' : 'incomplete'), $whole, sprintf('%.3f', time)), "\n";
        }
        $x->{n}++;
        $x->{buf} = '';
        $x->{st} = 'idle';
        $x->{want} = undef;
        $drop->($slot) if $err || $q->{close};
    };
    my $send = sub {
        my ($slot) = @_;
        my $x = $slot->{x};
        my $q = delete $slot->{retry};
        if (!$q) {
            $seq++;
            my $matched = $o{matched_every} && $seq % $o{matched_every} == 0;
            $q = { seq => $seq, att => 1, matched => $matched };
        }
        my $id = "$o{tag}-$o{k}-$q->{seq}-$q->{att}";
        my $uri = $q->{matched} ? "/static/ledger-small.html?L=$id" : "/static/hello.txt?U=$id";
        $q->{id} = $id;
        $q->{uri} = $uri;
        $q->{t0} = time;
        $x->{req} = $q;
        $x->{out} = "GET $o{prefix}$uri" . ($o{token} ? "&notary_token=$o{token}" : '')
                  . " HTTP/1.1\r\nHost: notary.test\r\n\r\n";
        $x->{st} = 'busy';
    };
    my $write = sub {
        my ($slot) = @_;
        my $x = $slot->{x};
        my $w = syswrite($x->{s}, $x->{out});
        if (defined $w) {
            substr($x->{out}, 0, $w, '');
            $x->{want} = length $x->{out} ? 'w' : 'r';
            return;
        }
        if ($!{EAGAIN} || $SSL_ERROR == SSL_WANT_WRITE) { $x->{want} = 'w'; return }
        if ($SSL_ERROR == SSL_WANT_READ) { $x->{want} = 'r'; return }
        $finish->($slot, "write: $!");
    };
    # reads what there is; finishes the attempt when its answer is complete
    my $read = sub {
        my ($slot) = @_;
        my $x = $slot->{x};
        my ($eof, $err);
        while (1) {
            my $n = sysread($x->{s}, $x->{buf}, 65536, length $x->{buf});
            next if defined $n && $n > 0;
            if (defined $n) { $eof = 1; last }
            last if $!{EAGAIN} || $!{EINTR} || $SSL_ERROR == SSL_WANT_READ || $SSL_ERROR == SSL_WANT_WRITE;
            $err = "read: " . ($! || $SSL_ERROR);
            last;
        }
        my $done;
        if ($x->{buf} =~ /\A(.*?\r\n)\r\n/s) {
            my $head = $1;
            my $hl = length($head) + 2;
            $x->{req}{close} = 1 if $head =~ /^Connection:\s*close/mi;
            if ($head =~ /^Content-Length:\s*(\d+)/mi) {
                if (length($x->{buf}) >= $hl + $1) {
                    $x->{req}{body} = substr($x->{buf}, $hl, $1);
                    $done = 1;
                }
            }
            elsif ($head =~ /^Transfer-Encoding:\s*chunked/mi) {
                my $rest = substr($x->{buf}, $hl);
                my $body = '';
                while ($rest =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r\n//) {
                    my $len = hex $1;
                    if (!$len) { $done = 1 if $rest =~ /\A(?:[^\r\n]+\r\n)*\r\n/; last }
                    last if length($rest) < $len + 2;
                    $body .= substr($rest, 0, $len + 2, '');
                    substr($body, -2) = '';
                }
                $x->{req}{body} = $body if $done;
            }
            else { $done = $eof }
        }
        if ($done) { $finish->($slot, undef) }
        elsif ($eof || $err) { $finish->($slot, $eof ? 'eof' : $err) }
    };

    sleep 0.01 while time < $o{start};
    while (1) {
        my $now = time;
        last if $now > $hard;
        my $working = $now < $o{end};
        my (@rd, @wr, %by);
        my $busy = 0;
        for my $slot (@slots) {
            my $x = $slot->{x};
            if (!$x) {
                next unless $working || $slot->{retry};
                $connect->($slot) or next;
                $x = $slot->{x};
            }
            if ($x->{st} ne 'busy' && $x->{st} ne 'idle' && $now - $x->{since} > 20) {
                $c{connect_timeout}++;
                $drop->($slot);
                next;
            }
            if ($x->{st} eq 'idle') {
                next unless $working || $slot->{retry};
                $send->($slot);
                $write->($slot);
                $x = $slot->{x} or next;
            }
            if ($x->{st} eq 'busy') {
                $busy++;
                if ($now - $x->{req}{t0} > 30) { $finish->($slot, 'timeout'); next }
                # bytes already decrypted wait in IO::Socket::SSL, not the socket
                if ($x->{s}->pending) { $read->($slot); $x = $slot->{x} or next; next if $x->{st} ne 'busy' }
            }
            next unless $x->{want};
            push @{ $x->{want} eq 'r' ? \@rd : \@wr }, $x->{s};
            $by{ fileno $x->{s} } = $slot;
        }
        last if !$working && !$busy && !grep { $_->{retry} } @slots;
        my ($r, $w) = IO::Select->select(IO::Select->new(@rd), IO::Select->new(@wr), undef, 0.2);
        for my $s (@{ $r || [] }, @{ $w || [] }) {
            my $slot = $by{ fileno $s } or next;
            my $x = $slot->{x} or next;
            next unless $x->{s} == $s;
            if ($x->{st} eq 'tcp') {
                my $e = unpack('i', getsockopt($x->{s}, SOL_SOCKET, SO_ERROR) // pack('i', -1));
                if ($e) {
                    $c{connect_failed}++;
                    warn "client $o{k}: connect: " . ($! = $e) . "\n" if $c{connect_failed} <= 3;
                    $drop->($slot);
                    next;
                }
                IO::Socket::SSL->start_SSL($x->{s}, SSL_startHandshake => 0, SSL_hostname => 'notary.test',
                                           SSL_verifycn_name => 'notary.test', SSL_verifycn_scheme => 'http',
                                           SSL_reuse_ctx => $ctx)
                    or do { $c{tls_failed}++; $drop->($slot); next };
                $x->{st} = 'tls';
                $handshake->($slot);
            }
            elsif ($x->{st} eq 'tls') { $handshake->($slot) }
            elsif ($x->{st} eq 'busy') {
                if ($x->{want} eq 'w' && length $x->{out}) { $write->($slot) }
                else { $read->($slot) }
            }
        }
    }
    for my $slot (@slots) {
        $c{unfinished}++ if $slot->{retry} || ($slot->{x} && $slot->{x}{req});
        $drop->($slot);
    }
    open my $f, '>', $o{statf} or die;
    print $f join(' ', map { "$_=$c{$_}" } sort keys %c), "\n";
    close $f;
    NotaryTest::write_file("$o{statf}.lat", join("\n", @lat) . "\n");
    NotaryTest::write_file("$o{statf}.open", join("\n", @timeline) . "\n");
}

# The attempts a log names: "TAG-K-SEQ-ATT" ids in its request lines.
sub ids_in_log {
    my ($f) = @_;
    my %seen;
    return \%seen unless -f $f;
    open my $fh, '<', $f or die "$f: $!";
    while (my $line = <$fh>) {
        $seen{$1} = 1 while $line =~ /[?&][LU]=([a-z]+-\d+-\d+-\d+)/g;
    }
    return \%seen;
}

{
    my $tag = 'cap';
    my @kids;
    my $procs_n = int(($CONNS + $PER_PROC - 1) / $PER_PROC);
    my $procs_p = int(($PLAIN_CONNS + $PER_PROC - 1) / $PER_PROC);
    # everyone connects from $start on and works until $end: 10 s for the
    # handshakes of all connections, then $HOLD seconds with all open
    my $start = time + 1;
    my $end = $start + 10 + $HOLD;
    my @statf;
    my $k = 0;
    for my $spec ((map { ['notary', $_] } 1 .. $procs_n), (map { ['plain', $_] } 1 .. $procs_p)) {
        my ($role, $j) = @$spec;
        my $total = $role eq 'notary' ? $CONNS : $PLAIN_CONNS;
        my $n = $j * $PER_PROC <= $total ? $PER_PROC : $total - ($j - 1) * $PER_PROC;
        $k++;
        my $statf = "$dir/conn-stats-$role-$j";
        push @statf, [$role, $statf];
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            my $ok = eval {
                conn_loop(k => $k, n => $n, statf => $statf, start => $start + 0.05 * $k, end => $end,
                          port => $role eq 'notary' ? $t->notary_port : $plain_port,
                          prefix => '/shop', token => $role eq 'notary' ? $tok : undef,
                          tag => $role eq 'notary' ? $tag : 'plain', ledger => $role eq 'notary',
                          matched_every => $role eq 'notary' ? 2 : 0);
                1;
            };
            warn "client $k: $@" unless $ok;
            _exit($ok ? 0 : 1);
        }
        push @kids, $pid;
    }
    my $bad = 0;
    for (@kids) { waitpid($_, 0); $bad++ if $? }
    is($bad, 0, 'every client process ended cleanly');

    my (%role, %lat, %peak);
    for my $x (@statf) {
        my ($role, $f) = @$x;
        my $s = read_stats($f);
        $role{$role}{$_} += $s->{$_} for keys %$s;
        push @{ $lat{$role} }, grep { /^\d+$/ } split /\n/, (-f "$f.lat" ? NotaryTest::read_file("$f.lat") : '');
    }
    # connections open at once: the clients' timelines merged
    for my $role (qw(notary plain)) {
        my (@ev, %cur);
        for my $x (grep { $_->[0] eq $role } @statf) {
            next unless -f "$x->[1].open";
            push @ev, map { [split(' ', $_), $x->[1]] } grep { /\S/ } split /\n/, NotaryTest::read_file("$x->[1].open");
        }
        my $sum = 0;
        for my $e (sort { $a->[0] <=> $b->[0] } @ev) {
            $sum += $e->[1] - ($cur{ $e->[2] } // 0);
            $cur{ $e->[2] } = $e->[1];
            $peak{$role} = $sum if $sum > ($peak{$role} // 0);
        }
    }
    # the closed attempts, checked against what the notary read (its access
    # log) and what reached the merchant (the merchant's)
    $t->backend_sync('shop');
    my $read_n = ids_in_log("$dir/logs/notary-access.log");
    my $read_p = ids_in_log("$dir/logs/plain-access.log");
    my $at_merchant = ids_in_log("$dir/logs/backend-shop.log");
    for my $x (@statf) {
        my ($role, $f) = @$x;
        next unless -f "$f.closed";
        for my $line (split /\n/, NotaryTest::read_file("$f.closed")) {
            my ($id, $how, $err) = split /\t/, $line;
            my $read = ($role eq 'notary' ? $read_n : $read_p)->{$id};
            if ($how eq 'reused' && !$read && !$at_merchant->{$id}) {
                $role{$role}{idle_closed}++;
            }
            else {
                push @{ $role{$role}{lost} }, "$id: closed before its answer on a $how connection ($err)"
                    . ($read ? ', read by the server' : '') . ($at_merchant->{$id} ? ', seen by the merchant' : '');
            }
        }
    }
    for my $role (qw(notary plain)) {
        my $s = $role{$role} || {};
        my @l = sort { $a <=> $b } @{ $lat{$role} || [] };
        diag(sprintf("%s: %d connections open at once at most; latency p50 %d ms, p99 %d ms; %s", $role, $peak{$role} // 0,
                     median(@l) // -1, pct(0.99, @l) // -1,
                     join(' ', map { "$_=$s->{$_}" } grep { !ref $s->{$_} } sort keys %$s)));
    }
    for my $role (qw(notary plain)) {
        my $s = $role{$role} || {};
        my $name = $role eq 'notary' ? 'the notary' : 'the plain mod_proxy vhost';
        my $want = $role eq 'notary' ? $CONNS : $PLAIN_CONNS;
        is($peak{$role} // 0, $want, "$want connections to $name open at once");
        ok(($s->{requests} // 0) > $want, "they made requests (" . ($s->{requests} // 0) . " requests, "
           . ($s->{matched_attempts} // 0) . " matched attempts)");
        is(($s->{status_502} // 0) + ($s->{status_503} // 0), 0, "no 502 or 503 from $name");
        my $answered = 0;
        $answered += $s->{$_} for grep { /^status_/ } keys %$s;
        is($s->{status_200} // 0, $answered, "every answer from $name was 200 ($answered answers)");
        my @lost = @{ $s->{lost} || [] };
        push @lost, map { "$_: " . ($s->{$_} // 0) } grep { $s->{$_} }
            qw(connect_failed connect_timeout tls_failed timeout cut unfinished gave_up);
        ok(!@lost, "nothing lost at $name: no connection refused or closed before its answer, none cut or unfinished, "
           . "but for idle keep-alive connections closed before the notary read the next request on them, sent again ("
           . ($s->{idle_closed} // 0) . ')')
            or diag(join "\n", @lost[0 .. ($#lost > 19 ? 19 : $#lost)]);
        is(($s->{retried} // 0), ($s->{closed_reused_before_answer} // 0),
           "$name: every request closed unanswered on a reused connection was sent again");
        # HTTP allows those closes, but at the recommended sizing they are
        # rare: 0.02-0.25 % of attempts in runs on a 2-core machine at load
        # averages of 20 to 46; with Debian's MPM settings 34-46 % (notary)
        # and 40-47 % (plain)
        my $rate = ($s->{idle_closed} // 0) / ($s->{attempts} || 1);
        ok($rate < 0.05, sprintf("$name: under 5 %% of attempts met an idle connection closed by the MPM "
                                 . "(%.2f %%: %d of %d)", 100 * $rate, $s->{idle_closed} // 0, $s->{attempts} // 0));
    }
    $l->reconcile(tag => $tag, name => "$CONNS connections");
    # an attempt the notary never logged could also be one a dying child
    # took with it: none died
    my @exits = NotaryTest::read_file("$dir/logs/error-notary.log") =~ /(AH00052: [^\n]*)/g;
    ok(!@exits, 'no notary child died (AH00052)') or diag(join "\n", @exits);
}

# ------------------------------------------------------------ 3. the 502
# A merchant that answers the first request on each TLS connection and
# closes the connection when the second one arrives: what a merchant does
# that closes a pooled keep-alive connection at the moment the proxy reuses
# it (its KeepAliveTimeout, or its MPM closing idle connections when its
# workers are all busy), made certain. One notary child, so the pool is one.
my $rt = NotaryTest->new(allow_log => [
    # mod_proxy_http, on both vhosts: "error reading status line from
    # remote server" (every failed reuse), and the 502's "Error reading
    # from remote server returned by /path"
    qw(AH01102 AH00898)]);
my ($rcert, $rkey) = $rt->issue('racy', 'ec256', cn => 'localhost', san => 'DNS:localhost,IP:127.0.0.1');
my $rport = NotaryTest::free_port();
my $rlog = $rt->dir . '/logs/racy-merchant.log';
my $racy = fork // die "fork: $!";
if (!$racy) {
    # bounded: 60 s, 40 connections, 10 s per read
    my $srv = IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.1', LocalPort => $rport,
                                    Proto => 'tcp', ReuseAddr => 1) or _exit(1);
    $SIG{CHLD} = 'IGNORE';
    my $deadline = time + 60;
    my $sel = IO::Select->new($srv);
    for my $cn (1 .. 40) {
        last if time > $deadline;
        $sel->can_read($deadline - time) or last;
        my $c = $srv->accept or next;
        my $pid = fork;
        if (defined $pid && !$pid) {
            my $s = IO::Socket::SSL->start_SSL($c, SSL_server => 1, SSL_cert_file => $rcert, SSL_key_file => $rkey,
                                               SSL_verify_mode => SSL_VERIFY_NONE, Timeout => 10) or _exit(0);
            my $in = '';
            my $cs = IO::Select->new($s);
            for my $rn (1 .. 2) {
                while ($in !~ /\r\n\r\n/) {
                    last unless $s->pending || $cs->can_read(10);
                    my $got = sysread($s, $in, 65536, length $in);
                    _exit(0) unless $got;
                }
                $in =~ s/\A([^\r\n]*)\r\n.*?\r\n\r\n//s or _exit(0);
                open my $lf, '>>', $rlog or _exit(1);
                print $lf "connection $cn request $rn: $1\n";
                close $lf;
                last if $rn == 2;           # read, then closed unanswered
                my $body = "racy answer\n";
                print $s "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " . length($body)
                       . "\r\n\r\n$body";
            }
            close $s;
            _exit(0);
        }
        close $c;
    }
    _exit(0);
}
my $rurl = "https://127.0.0.1:$rport";
my $rplain = NotaryTest::free_port();
my ($rc_cert) = $rt->consumer('alice');
my $rtok = NotaryTest::run_out(NotaryTest::notary_link(), '--key', $rkey, '--consumer-cert', $rc_cert,
                               '--notary', 'https://notary.test:' . $rt->notary_port, '--merchant', 'racy',
                               '--path', '/', '--token-only', '--lifetime', 600);
$rtok =~ s/\s+$//;

# GETs on one kept-alive connection; each result: status, or 0 with
# 'closed' when the server closed the connection before any byte
sub ka_gets {
    my ($port, @paths) = @_;
    my $s = tls($port, 10, $rt) or return ["connect: " . IO::Socket::SSL::errstr()];
    my @res;
    my $sel = IO::Select->new($s);
    for my $p (@paths) {
        print $s "GET $p HTTP/1.1\r\nHost: notary.test\r\n\r\n";
        my $in = '';
        my $deadline = time + 10;
        my $whole;
        while (time < $deadline) {
            if (my ($head) = $in =~ /\A(.*?\r\n\r\n)/s) {
                if ($head =~ /^Content-Length:\s*(\d+)/mi) {
                    if (length($in) >= length($head) + $1) { $whole = 1; last }
                }
                elsif ($head =~ /^Transfer-Encoding:\s*chunked/mi) {
                    if ($in =~ /\r\n0\r\n(?:[^\r\n]+\r\n)*\r\n\z/) { $whole = 1; last }
                }
            }
            last unless $s->pending || $sel->can_read($deadline - time);
            my $n = sysread($s, $in, 65536, length $in);
            last unless $n;
        }
        my ($st) = $in =~ m{\AHTTP/1\.1 (\d{3})};
        push @res, !length $in ? 'closed' : $whole ? $st : "incomplete $st";
        last if !$whole;
    }
    close $s;
    return \@res;
}

for my $pooling (0, 1) {
    my $np = $pooling ? "    SetEnv proxy-initial-not-pooled 1\n" : '';
    my %conf = (server_limit => 1, start_servers => 1,
                global => plain_vhost($rt, $rplain, '/racy', $rurl, 'max=1', $np),
                extra => "    NotaryMerchant racy $rurl\n$np"
                       . "    <Proxy \"$rurl\">\n        ProxySet max=1\n    </Proxy>\n");
    $pooling ? $rt->restart(%conf) : $rt->start(%conf);
    my $how = $pooling ? 'with proxy-initial-not-pooled' : 'without proxy-initial-not-pooled';
    for my $v (['notary', $rt->notary_port, "&notary_token=$rtok"], ['plain', $rplain, '']) {
        my ($name, $port, $q) = @$v;
        my $path = sub { "/racy/page?$name-$pooling-$_[0]$q" };
        # a: a first connection, answered, its merchant connection pooled
        my $a = ka_gets($port, $path->('a'));
        # b: the first request of a second consumer connection reuses that
        #    merchant connection, which closes; c: then a fresh one,
        #    answered and pooled; d: reuses it, which closes
        my $bcd = ka_gets($port, map { $path->($_) } qw(b c d));
        # with proxy-initial-not-pooled, b goes on a fresh merchant
        # connection, which is pooled afterwards: c reuses it, and it closes
        my $want = $pooling ? '200 200 closed' : '200 502 200 closed';
        is(join(' ', @$a, @$bcd), $want, "$name, $how: " . ($pooling
           ? 'the first request of a consumer connection goes on a fresh merchant connection (200); the next one, '
             . 'on that connection pooled, which closes, is closed without an answer'
           : 'a first connection 200; on a second, the first request (its pooled merchant connection closes as it '
             . 'is reused) 502, the next 200, the one after (its pooled merchant connection closes) closed without an answer')
           . " ($want)");
    }
}
my $rlines = -f $rlog ? NotaryTest::read_file($rlog) : '';
for my $name (qw(notary plain)) {
    my @b = $rlines =~ /request 2: GET \/page\?$name-0-b /g;
    is(scalar @b, 1, "$name: the request answered 502 reached the merchant as the second on its connection, "
       . "which it closed");
    my @nb = $rlines =~ /request 1: GET \/page\?$name-1-b /g;
    is(scalar @nb, 1, "$name, with proxy-initial-not-pooled: the first request of a consumer connection was the "
       . "first on its merchant connection");
}
my $rerr = -f $rt->dir . '/logs/notary-error.log' ? NotaryTest::read_file($rt->dir . '/logs/notary-error.log') : '';
my $perr = -f $rt->dir . '/logs/plain-error.log' ? NotaryTest::read_file($rt->dir . '/logs/plain-error.log') : '';
ok($rerr =~ /AH01102: .*AH00898: Error reading from remote server returned by/s
   && $perr =~ /AH01102: .*AH00898: Error reading from remote server returned by/s,
   'the 502: AH01102 then AH00898, in the notary\'s log as in the plain vhost\'s');
kill 'TERM', $racy;
waitpid($racy, 0);

diag(sprintf('%.1f s in all', time - $T0));
done_testing;
