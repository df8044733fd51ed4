# Capacity: the notary under many connections, at the settings the README
# recommends ("Sizing: the MPM, the store's pool and slow clients"), beside
# a plain mod_proxy vhost (ProxyPass to the same merchant) in the same httpd,
# so both share one MPM, one load and one merchant.
#
# 1. Slow clients (issue 15, item 4): $SLOW connections trickle their
#    request headers one byte a second (and come back when mod_reqtimeout
#    answers them 408); meanwhile a normal client -- a new TLS connection,
#    one GET -- is timed, alternately through the notary and through the
#    plain vhost: the p50 of each must stay under a second.
# 2. 500 concurrent keep-alive connections (item 5) loop for $HOLD seconds
#    on matched and unmatched GETs through the notary (and 50 more on the
#    plain vhost): no 502 or 503, no connection closed before its answer,
#    and the ledger of matched messages balances with the store's rows.
#
# mod_reqtimeout runs with the README's settings scaled down as in
# t/61-hostile-input.t (recommended header=20-40,MinRate=500
# body=20,MinRate=500; here header=4-8,MinRate=500 body=4,MinRate=500).
#
# To see the checks fail (none of these is run by default):
#   CAPACITY_MPM=debian       Debian's mpm_event.conf (ThreadsPerChild 25,
#                             MaxRequestWorkers 150) instead of the README's
#   CAPACITY_REQTIMEOUT=off   without mod_reqtimeout
#   CAPACITY_SLOW=N, CAPACITY_CONNS=N, CAPACITY_HOLD=S   smaller sizes for
#                             development (the checks then prove less)
#
# The clients are Perl event loops (IO::Socket::SSL, non-blocking after the
# handshake): $PROCS processes of up to 50 connections each; every loop is
# bounded in time and count, and everything binds 127.0.0.1.
use strict;
use warnings;
use Test::More;
use Digest::SHA;
use IO::Select;
use IO::Socket::SSL;
use POSIX qw(_exit);
use Time::HiRes qw(time sleep);
use NotaryTest;
use NotaryTest::Ledger;

my $T0 = time;
my $SLOW = $ENV{CAPACITY_SLOW} // 200;     # trickling connections (item 4)
my $CONNS = $ENV{CAPACITY_CONNS} // 500;   # keep-alive connections on the notary (item 5)
my $PLAIN_CONNS = int($CONNS / 10);        # and on the plain vhost meanwhile
my $HOLD = $ENV{CAPACITY_HOLD} // 25;      # seconds of item 5's load
my $PER_PROC = 50;

# The README's recommendation (see "Sizing" there) for this machine and
# these loads, or Debian's mpm_event.conf to show the checks failing.
my $debian = ($ENV{CAPACITY_MPM} // '') eq 'debian';
my $server_limit = $debian ? 16 : 20;
my $mpm = $debian
    ? "StartServers 2\nMinSpareThreads 25\nMaxSpareThreads 75\nThreadLimit 64\n"
    . "ThreadsPerChild 25\nMaxRequestWorkers 150\n"
    : "StartServers 20\nMinSpareThreads 75\nMaxSpareThreads 600\nThreadLimit 64\n"
    . "ThreadsPerChild 30\nMaxRequestWorkers 600\nAsyncRequestWorkerFactor 0.1\n";
my $reqtimeout = ($ENV{CAPACITY_REQTIMEOUT} // '') eq 'off' ? ''
    : "LoadModule reqtimeout_module $NotaryTest::MODDIR/mod_reqtimeout.so\n"
    . "RequestReadTimeout header=4-8,MinRate=500 body=4,MinRate=500\n";

# AH01382: mod_reqtimeout's 408 to the slow clients (info); nothing at warn
# is expected from the recommended settings.
my $t = NotaryTest->new(allow_log => []);
my $m = $t->add_merchant('shop', 'ec256');
my $l = NotaryTest::Ledger->new($t, merchant => 'shop');

my $plain_port = NotaryTest::free_port();
my ($ncert, $nkey) = $t->notary_cert;
my $ca = $t->ca;
my $proxy_cert = $t->proxy_client_cert;
my $murl = $t->merchant_url('shop');
my $dir = $t->dir;
my $plain = <<"EOF";
Listen 127.0.0.1:$plain_port
<VirtualHost 127.0.0.1:$plain_port>
    ServerName plain.test
    Protocols http/1.1
    SSLEngine on
    SSLCertificateFile $ncert
    SSLCertificateKeyFile $nkey
    SSLProxyEngine on
    SSLProxyVerify require
    SSLProxyCACertificateFile $ca
    SSLProxyCheckPeerName off
    SSLProxyMachineCertificateFile $proxy_cert
    ProxyPass "/shop/" "$murl/" max=1
    ErrorLog $dir/logs/plain-error.log
    CustomLog $dir/logs/plain-access.log "%P \\"%r\\" %>s %b"
</VirtualHost>
EOF
$t->start(server_limit => $server_limit, start_servers => $debian ? 2 : 20,
          global => "$mpm$reqtimeout$plain",
          extra => $t->db_directive(timeout => 10) . $l->rules
                 . "    <Proxy \"$murl\">\n        ProxySet max=1\n    </Proxy>\n");
diag(($debian ? "Debian's mpm_event defaults" : "the README's MPM settings")
     . ($reqtimeout ? ', mod_reqtimeout header=4-8,MinRate=500' : ', no mod_reqtimeout')
     . ", $SLOW slow clients, $CONNS + $PLAIN_CONNS connections for $HOLD s");

my $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
my ($ccert, $ckey) = $t->consumer('alice');
my $hello = NotaryTest::read_file($m->{docroot} . '/static/hello.txt');

my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'the notary serves the merchant');
$r = $t->request(url => "https://notary.test:$plain_port/shop/static/hello.txt", consumer => 'alice',
                 curl_args => ['--resolve', "notary.test:$plain_port:127.0.0.1"]);
is($r->{status}, 200, 'the plain mod_proxy vhost serves the merchant');

sub tls {
    my ($port, $timeout) = @_;
    return IO::Socket::SSL->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                SSL_hostname => 'notary.test', SSL_ca_file => $ca,
                                SSL_cert_file => $ccert, SSL_key_file => $ckey,
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

sub read_stats {
    my $f = shift;
    return {} unless -f $f;
    my %h = NotaryTest::read_file($f) =~ /(\w+)=(\d+)/g;
    return \%h;
}

{
    my $statf = "$dir/slow-stats";
    my $kid = fork // die "fork: $!";
    if (!$kid) {
        eval { slow_clients($SLOW, 60, $statf); 1 } or warn "slow clients: $@";
        _exit(0);
    }
    # let them take their places: all connected once (or 15 s)
    my $ramp_until = time + 15;
    sleep 0.5 while time < $ramp_until && (read_stats($statf)->{max_held} // 0) < $SLOW;
    my (@tn, @tp, @bad);
    my $until = time + 25;
    for my $i (1 .. 15) {
        last if time > $until;
        my $a = normal_get($t->notary_port, "/shop/static/hello.txt?normal=$i&notary_token=$tok", 10);
        my $b = normal_get($plain_port, "/shop/static/hello.txt?normal=$i", 10);
        push @tn, $a->[0];
        push @tp, $b->[0];
        push @bad, "notary #$i: status $a->[1] $a->[2]" if $a->[2];
        push @bad, "plain #$i: status $b->[1] $b->[2]" if $b->[2];
        # spread over more than one header timeout, so the measures also
        # fall while slow clients are answered and come back
        sleep 0.5;
    }
    my $st = read_stats($statf);
    kill 'TERM', $kid;
    waitpid($kid, 0);
    $st = read_stats($statf);
    my ($pn, $pp) = (median(@tn), median(@tp));
    diag(sprintf("slow clients: %d held at most (%d while measured), %d connects, %d failed, %d answered 408, %d closed otherwise",
                 map { $st->{$_} // 0 } qw(max_held held connects failed_connects answered closed)));
    diag(sprintf("normal client (new TLS connection, one GET), %d each: notary p50 %.3f s max %.3f s; plain mod_proxy p50 %.3f s max %.3f s",
                 scalar @tn, $pn // -1, pct(1, @tn) // -1, $pp // -1, pct(1, @tp) // -1));
    ok(($st->{max_held} // 0) >= $SLOW * 0.9,
       "the slow clients held their connections ($st->{max_held} of $SLOW at most at once)");
    # The goal is "not delayed beyond a second"; the bound is half that:
    # at the recommended settings the p50 measured ~0.02 s on a loaded
    # 2-core machine, with Debian's MPM settings 0.6 s here (with the
    # scaled-down header timeout, which frees a starved thread every 4 s;
    # at the real 20-40 s the issue measured 18.8 s).
    ok(@tn >= 10 && $pn < 0.5, sprintf('under %d slow clients a normal client is served through the notary in under 0.5 s at p50 (%.3f s, %d requests)',
                                       $SLOW, $pn // -1, scalar @tn));
    ok(@tp >= 10 && $pp < 0.5, sprintf('... and through the plain mod_proxy vhost (%.3f s)', $pp // -1));
    ok(!@bad, 'every normal request got its 200 and page whole') or diag(join "\n", @bad);
    ok(!$reqtimeout || ($st->{answered} // 0) > 0,
       "mod_reqtimeout answered trickling clients 408 meanwhile (" . ($st->{answered} // 0) . ')');
}

# ------------------------------------------------------------ 2. 500 connections
# One event loop per process over up to $PER_PROC keep-alive connections,
# each looping on GETs (alternately matched -- the ledger's 6000-byte page --
# and unmatched) until $hold seconds pass; a matched one writes its ledger
# line; the rest is counted in $statf.
sub conn_loop {
    my (%o) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $doc = $l->doc('small');
    my $ledger;
    if ($o{tag}) {
        open $ledger, '>>', $t->dir . "/ledger-$o{tag}-$o{k}.log" or die;
        $ledger->autoflush(1);
    }
    my (%c, @lat);
    my @conns;
    my $connect = sub {
        my $s = tls($o{port}, 10);
        if (!$s) { $c{connect_failed}++; return undef }
        $s->blocking(0);
        $c{connects}++;
        return { s => $s, buf => '', n => 0 };
    };
    sleep 0.05 while time < $o{ramp_at};
    push @conns, $connect->() for 1 .. $o{n};
    $c{opened_at_start} = grep { $_ } @conns;
    open my $mark, '>', "$o{statf}.ready" or die; close $mark;
    sleep 0.02 while time < $o{start} && !-e $o{gofile};
    my $deadline = time + $o{hold};
    my $hard = $deadline + 30;
    my $seq = 0;
    my $sel_all = sub { IO::Select->new(map { $_->{s} } grep { $_ && $_->{req} } @conns) };
    my $finish = sub {
        my ($x, $err) = @_;
        my $q = $x->{req};
        my ($st) = $x->{buf} =~ m{\AHTTP/1\.\d (\d{3})};
        $st //= 0;
        my $body = $q->{body} // '';
        my $whole = !$err && $st == 200 && (!$q->{matched} || ($body eq $doc->{body})) ? 1 : 0;
        $c{"status_$st"}++;
        $c{requests}++;
        $c{matched}++ if $q->{matched};
        if ($err) {
            # closed before any byte of an answer (on a reused connection: the
            # keep-alive race), or cut in the middle
            $c{ length $x->{buf} ? "cut_$err" : ($x->{n} ? 'closed_reused_before_answer' : 'closed_new_before_answer') }++;
        }
        push @lat, time - $q->{t0} unless $err;
        if ($q->{matched} && $ledger) {
            print $ledger join("\t", $q->{id}, 'get', 'response', $q->{uri}, $doc->{len}, $doc->{sha}, $st,
                               length $body, Digest::SHA::sha256_hex($body), sprintf('%.3f', $q->{t0}),
                               $err // ($whole ? '' : 'incomplete'), $whole, sprintf('%.3f', time)), "\n";
        }
        $x->{n}++;
        $x->{req} = undef;
        $x->{buf} = '';
        return !$err && !$q->{close};
    };
    while (1) {
        my $now = time;
        last if $now > $hard;
        for my $i (0 .. $#conns) {
            next if $conns[$i] && $conns[$i]{req};
            last if $now >= $deadline;
            $conns[$i] //= $connect->() // next;
            my $x = $conns[$i];
            my $matched = $o{matched_every} && ++$seq % $o{matched_every} == 0;
            my $id = ($o{tag} // "plain") . "-$o{k}-$seq";
            my $uri = $matched ? "/static/ledger-small.html?L=$id" : "/static/hello.txt?U=$o{k}-$seq";
            my $path = $o{prefix} . $uri . ($o{token} ? "&notary_token=$o{token}" : '');
            my $req = "GET $path HTTP/1.1\r\nHost: notary.test\r\n\r\n";
            $x->{req} = { id => $id, uri => $uri, matched => $matched, t0 => time };
            my $w = syswrite($x->{s}, $req);
            if (!defined $w || $w != length $req) {
                # a non-blocking TLS write of a few hundred bytes goes at
                # once; anything else is a connection the server closed
                $finish->($x, 'write');
                close $x->{s};
                $conns[$i] = undef;
            }
        }
        my @busy = grep { $_ && $_->{req} } @conns;
        last if !@busy && $now >= $deadline;
        my @ready = grep { $_->{s}->pending } @busy;
        @ready = do { my %r = map { $_ => 1 } IO::Select->new(map { $_->{s} } @busy)->can_read(0.5);
                      grep { $r{ $_->{s} } } @busy } unless @ready;
        for my $x (@ready) {
            my ($eof, $err);
            while (1) {
                my $n = sysread($x->{s}, $x->{buf}, 65536, length $x->{buf});
                if (defined $n && $n > 0) { next }
                if (defined $n) { $eof = 1; last }
                last if $!{EAGAIN} || $!{EINTR} || $SSL_ERROR == SSL_WANT_READ || $SSL_ERROR == SSL_WANT_WRITE;
                $err = "read: $!"; last;
            }
            # a complete answer?
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
            my $i;
            for (0 .. $#conns) { $i = $_ if $conns[$_] && $conns[$_] == $x }
            if ($done) {
                next if $finish->($x, undef);
                close $x->{s};
                $conns[$i] = undef;
            }
            elsif ($eof || $err) {
                $finish->($x, $eof ? 'eof' : $err);
                close $x->{s};
                $conns[$i] = undef;
            }
        }
    }
    for my $x (grep { $_ && $_->{req} } @conns) { $finish->($x, 'unfinished') }
    close $_->{s} for grep { $_ } @conns;
    @lat = sort { $a <=> $b } @lat;
    $c{lat_p50_ms} = int(1000 * (median(@lat) // 0));
    $c{lat_p99_ms} = int(1000 * (pct(0.99, @lat) // 0));
    open my $f, '>', $o{statf} or die;
    print $f join(' ', map { "$_=$c{$_}" } sort keys %c), "\n";
    close $f;
}

{
    my $tag = 'cap';
    my @kids;
    my $ramp_at = time + 0.5;
    my $procs_n = int(($CONNS + $PER_PROC - 1) / $PER_PROC);
    my $procs_p = int(($PLAIN_CONNS + $PER_PROC - 1) / $PER_PROC);
    # start together once every connection is open (at most 40 s of ramp)
    my $start = time + 40;
    my @statf;
    my $gofile = "$dir/conn-go";
    my $k = 0;
    for my $spec ((map { ['notary', $_] } 1 .. $procs_n), (map { ['plain', $_] } 1 .. $procs_p)) {
        my ($role, $j) = @$spec;
        my $total = $role eq 'notary' ? $CONNS : $PLAIN_CONNS;
        my $n = $j * $PER_PROC <= $total ? $PER_PROC : $total - ($j - 1) * $PER_PROC;
        $k++;
        my $statf = "$dir/conn-stats-$role-$j";
        unlink $statf, "$statf.ready";
        push @statf, [$role, $statf];
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            my $ok = eval {
                conn_loop(k => $k, n => $n, statf => $statf, hold => $HOLD,
                          ramp_at => $ramp_at + 0.1 * $k, start => $start, gofile => $gofile,
                          port => $role eq 'notary' ? $t->notary_port : $plain_port,
                          prefix => '/shop', token => $role eq 'notary' ? $tok : undef,
                          tag => $role eq 'notary' ? $tag : undef, matched_every => $role eq 'notary' ? 2 : 0);
                1;
            };
            warn "client $k: $@" unless $ok;
            _exit($ok ? 0 : 1);
        }
        push @kids, $pid;
    }
    # all go once every process has its connections open
    my $t_wait = time;
    sleep 0.1 while time < $start && grep { !-f "$_->[1].ready" } @statf;
    NotaryTest::write_file($gofile, '');
    diag(sprintf('%d processes opened their connections in %.1f s', scalar @statf, time - $t_wait));
    my $bad = 0;
    for (@kids) { waitpid($_, 0); $bad++ if $? }
    is($bad, 0, 'every client process ended cleanly');
    my (%sum, %role);
    for my $x (@statf) {
        my $s = read_stats($x->[1]);
        for (keys %$s) {
            # latencies: the slowest process's figure; counts: summed
            if (/^lat_/) { $role{ $x->[0] }{$_} = $s->{$_} if $s->{$_} > ($role{ $x->[0] }{$_} // 0) }
            else { $role{ $x->[0] }{$_} += $s->{$_} }
        }
    }
    for my $role (qw(notary plain)) {
        my $s = $role{$role} || {};
        diag("$role: " . join(' ', map { "$_=$s->{$_}" } sort keys %$s));
    }
    my $n = $role{notary} || {};
    my $p = $role{plain} || {};
    is($n->{opened_at_start} // 0, $CONNS, "$CONNS connections to the notary open at once");
    ok(($n->{requests} // 0) > $CONNS, "they made requests ($n->{requests}, $n->{matched} matched)");
    my $refused = ($n->{status_502} // 0) + ($n->{status_503} // 0);
    is($refused, 0, 'no 502 or 503 from the notary');
    my $lost = ($n->{closed_reused_before_answer} // 0) + ($n->{closed_new_before_answer} // 0)
             + ($n->{connect_failed} // 0) + ($n->{unfinished} // 0)
             + scalar(grep { /^cut_/ } keys %$n);
    is($lost, 0, 'no connection closed or refused before its answer, none cut, none unfinished');
    is(($n->{status_200} // 0), $n->{requests}, 'every request to the notary answered 200');
    my $prefused = ($p->{status_502} // 0) + ($p->{status_503} // 0);
    is($prefused + ($p->{closed_reused_before_answer} // 0), 0,
       "the plain mod_proxy vhost meanwhile: no 502/503, none closed ($p->{requests} requests)");
    $l->reconcile(tag => $tag, name => "$CONNS connections");
}

$t->check_error_logs;
diag(sprintf('%.1f s in all', time - $T0));
done_testing;
