# The benchmark behind bench/run: one PostgreSQL, a merchant httpd and a
# notary httpd (plain mod_proxy vhost, notary vhost with rules that never
# match, notary vhost recording everything), measured side by side in one
# run with wrk (client certificate through bench/client_cert_shim.so),
# openssl s_time (new TLS connection per request), pgbench and
# bench/store_load. Writes bench/results/report.md and chart.svg.
use strict;
use warnings;
use Getopt::Long;
use POSIX qw(floor);
use Time::HiRes qw(time sleep);
use Digest::SHA ();
use NotaryTest;

# --only REGEX (with --reps/--dur) measures just the matching HTTP
# workloads (e.g. 'GET 1k c16') and the targets given by --targets, prints
# them and writes no report: for trying a change, not for the record.
my ($quick, $only, $reps, $dur, $targets) = (0, undef, undef, undef, undef);
GetOptions('quick' => \$quick, 'only=s' => \$only, 'reps=i' => \$reps, 'dur=i' => \$dur,
           'targets=s' => \$targets)
    or die "usage: bench.pl [--quick] [--only REGEX [--reps N] [--dur S] [--targets a,b]]\n";
my $REPS = $reps // ($quick ? 1 : 3);
my $DUR = $dur // ($quick ? 2 : 5);
my $out_dir = "$NotaryTest::SRCDIR/bench/results";
my $shim = "$NotaryTest::BUILDDIR/bench/client_cert_shim.so";
my $store_load = "$NotaryTest::BUILDDIR/bench/store_load";
-x $store_load && -f $shim or die "build bench/store_load and the shim first (make bench-programs)\n";
$| = 1;
my $t0 = time;
sub note { printf "[%5.0fs] %s\n", time - $t0, join '', @_ }

# ------------------------------------------------------------------ set-up
my $t = NotaryTest->new(name => 'bench');
my $pg = $t->pg;
my $m = $t->add_merchant('shop', 'ec256', extra => <<'EOF');
    <Location /reflect>
        SetHandler reflector
    </Location>
EOF
my %SIZES = ('1k' => 1024, '16k' => 16 * 1024, '256k' => 256 * 1024);
for my $s (keys %SIZES) {
    NotaryTest::write_file("$m->{docroot}/static/$s.bin", 'x' x $SIZES{$s});
}
NotaryTest::write_file("$m->{docroot}/static/1m.bin", 'm' x (1024 * 1024));
{
    open my $f, '>', "$m->{docroot}/static/256m.bin" or die;
    my $chunk = 'g' x (1024 * 1024);
    print $f $chunk for 1 .. 256;
    close $f;
}

my ($ncert, $nkey) = $t->notary_cert;
my $ca = $t->ca;
my $pcert = $t->proxy_client_cert;
my $mport = $m->{port};
my $proxy_port = NotaryTest::free_port();
my $rec_port = NotaryTest::free_port();
my $db = $t->db_directive(timeout => 60);   # a 256 MiB record takes seconds
my $ssl_front = <<"EOF";
    SSLEngine on
    SSLCertificateFile $ncert
    SSLCertificateKeyFile $nkey
    SSLVerifyClient optional_no_ca
    SSLProxyEngine on
    SSLProxyVerify require
    SSLProxyCACertificateFile $ca
    SSLProxyCheckPeerName off
    SSLProxyMachineCertificateFile $pcert
EOF
my $dir = $t->dir;
# every vhost logs access alike (the notary vhost of the harness does)
sub access_log { qq{    CustomLog $dir/logs/access-$_[0].log "%P %h %{SSL_CLIENT_S_DN}x \\"%r\\" %>s %b"} }
my $global = <<"EOF";
# what an operator runs today: a plain reverse proxy
Listen 127.0.0.1:$proxy_port
<VirtualHost 127.0.0.1:$proxy_port>
    ServerName proxy.test
$ssl_front
    ProxyPass /shop/ https://127.0.0.1:$mport/
    ErrorLog $dir/logs/proxy-error.log
@{[ access_log('proxy') ]}
</VirtualHost>
# the notary recording every message
Listen 127.0.0.1:$rec_port
<VirtualHost 127.0.0.1:$rec_port>
    ServerName notary.test
$ssl_front
    NotaryEngine On
    NotaryMerchant shop https://127.0.0.1:$mport
$db
    NotaryRecord shop type */*
    NotaryMaxRecordSize 300M
    ErrorLog $dir/logs/record-error.log
@{[ access_log('record') ]}
</VirtualHost>
EOF
# the notary with rules that never match (the matcher scans every body)
$t->start(global => $global, loglevel => 'warn', server_limit => 2, start_servers => 2,
          extra => $db . "    NotaryRecord shop contains \"NEVER-MATCHES-7f3a9c\"\n");

my ($ccert, $ckey) = $t->consumer('alice');
my $nport = $t->notary_port;
my %URL = (
    direct => "https://127.0.0.1:$mport",
    proxy  => "https://127.0.0.1:$proxy_port/shop",
    notary => "https://127.0.0.1:$nport/shop",
    record => "https://127.0.0.1:$rec_port/shop",
);
my @TARGETS = $targets ? split(/,/, $targets) : qw(direct proxy notary record);
# contract sessions for alice on both notary vhosts; a session lasts as long
# as its token (at most 900 s), so they are renewed before every workload
sub renew_sessions {
    for my $p ($nport, $rec_port) {
        my $tok = $t->link_token(merchant => 'shop', consumer => 'alice', lifetime => 900);
        my $r = $t->request(url => "https://127.0.0.1:$p/shop/static/1k.bin?notary_token=$tok",
                            consumer => 'alice', curl_args => ['--insecure']);
        die "could not open a contract session on port $p: $r->{status} $r->{body}" unless $r->{status} == 200;
    }
}
renew_sessions();
note("servers up: merchant :$mport, proxy :$proxy_port, notary :$nport, recording notary :$rec_port");

# ------------------------------------------------------------------ helpers
sub median { my @v = sort { $a <=> $b } @_; return @v ? $v[$#v / 2] : 0 }

# Rows per commit: the rows inserted since id $since, and in how many
# transactions (a row's xmin is the transaction that inserted it). Exact,
# unlike the statistics views, which lag by up to seconds.
my $sdbh;
sub rows_since {
    my ($since) = @_;
    $sdbh ||= $pg->dbh(user => 'postgres');
    return $sdbh->selectrow_array(
        'SELECT count(*), count(DISTINCT xmin::text) FROM notary.records WHERE id > ?', undef, $since);
}
sub last_id {
    $sdbh ||= $pg->dbh(user => 'postgres');
    return ($sdbh->selectrow_array('SELECT coalesce(max(id), 0) FROM notary.records'))[0];
}

sub lua_post {
    my $size = shift;
    my $f = "$dir/post-$size.lua";
    NotaryTest::write_file($f, qq{wrk.method = "POST"\nwrk.body = string.rep("p", $SIZES{$size})\n}
                         . qq{wrk.headers["Content-Type"] = "application/octet-stream"\n});
    return $f;
}

sub to_ms {
    my ($v, $u) = @_;
    return $u eq 'us' ? $v / 1000 : $u eq 's' ? $v * 1000 : $v;
}

# ------------------------------------------------------------------ CPU accounting
# CPU time (user + system) that each part spends on a workload, read from
# /proc around the wrk run: a server's parent with its reaped children
# (cutime, cstime) plus its live children, so PostgreSQL backends and httpd
# children that come and go are all counted; wrk's own from times().
# Unlike req/s, CPU per request hardly moves when other tenants load the
# machine, so it shows what each target costs and where the time goes.
my $HZ = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;
my $NPROC = `nproc` + 0 || 1;
my %ROOT = (front => "$dir/run/notary/httpd.pid", merchant => "$dir/run/merchants/httpd.pid",
            pg => "$pg->{pgdata}/postmaster.pid");
my @PARTS = qw(wrk front merchant pg);
sub first_line { open my $f, '<', $_[0] or return 0; my $l = <$f> // ''; chomp $l; return $l }
sub cpu_snapshot {
    my %root = map { ($_ => first_line($ROOT{$_})) } keys %ROOT;
    my %of = reverse %root;
    my (%ticks, @front_kids);
    opendir my $d, '/proc' or die "/proc: $!";
    for my $pid (grep { /^\d+$/ } readdir $d) {
        my $st = first_line("/proc/$pid/stat") or next;
        $st =~ s/^.*\)\s+// or next;        # past "pid (comm) "
        my @f = split ' ', $st;              # f[1] ppid, f[11..14] utime stime cutime cstime
        my $part = $of{$pid} // $of{$f[1]} // next;
        $ticks{$part} += $f[11] + $f[12] + $f[13] + $f[14];
        push @front_kids, $pid if $part eq 'front' && $pid ne $root{front};
    }
    closedir $d;
    my $cs = 0;
    for my $pid (@front_kids) {
        for my $task (glob "/proc/$pid/task/*/status") {
            open my $f, '<', $task or next;
            while (<$f>) { $cs += $1 if /^(?:non)?voluntary_ctxt_switches:\s+(\d+)/ }
        }
    }
    my @t = times;
    return { (map { ($_ => ($ticks{$_} // 0) / $HZ) } qw(front merchant pg)), wrk => $t[2] + $t[3], cs => $cs };
}

# The URL of a workload on a target, and wrk with alice's certificate
sub wl_url {
    my ($target, $method, $size) = @_;
    return $URL{$target} . ($method eq 'GET' ? "/static/$size.bin" : '/reflect');
}
sub wrk_cmd {
    my (%o) = @_;
    my @cmd = ('wrk', '-t', ($o{conns} > 1 ? 2 : 1), '-c', $o{conns}, '-d', ($o{dur} // $DUR) . 's',
               '--latency');
    push @cmd, '-s', lua_post($o{size}) if $o{method} eq 'POST';
    push @cmd, '-H', 'Connection: close' if $o{close};
    push @cmd, $o{url};
    return "LD_PRELOAD=$shim NOTARY_BENCH_CERT=$ccert NOTARY_BENCH_KEY=$ckey "
         . join(' ', map { "'$_'" } @cmd);
}

sub wrk {
    my (%o) = @_;
    my $cmd = wrk_cmd(%o) . ' 2>&1';
    my $before = cpu_snapshot();
    my $out = `$cmd`;
    my $after = cpu_snapshot();
    my %r = (rps => 0, p50 => 0, p99 => 0, errors => 0);
    $r{rps} = $1 if $out =~ /Requests\/sec:\s+([\d.]+)/;
    # CPU per request (µs) of each part, context switches per request in
    # the front httpd's children, and how busy the machine's CPUs were
    # with all of it
    if ($out =~ /^\s*(\d+) requests in ([\d.]+)(m?s)/m && $1 > 0) {
        my ($n, $secs) = ($1, $3 eq 'ms' ? $2 / 1000 : $2);
        my $all = 0;
        for my $part (@PARTS) {
            my $used = $after->{$part} - $before->{$part};
            $all += $used;
            $r{"cpu_$part"} = $used * 1e6 / $n;
        }
        $r{cpu_all} = $all * 1e6 / $n;
        $r{cs} = ($after->{cs} - $before->{cs}) / $n;
        $r{busy} = 100 * $all / ($secs * $NPROC);
    }
    $r{p50} = to_ms($1, $2) if $out =~ /^\s+50%\s+([\d.]+)(us|ms|s)\b/m;
    $r{p99} = to_ms($1, $2) if $out =~ /^\s+99%\s+([\d.]+)(us|ms|s)\b/m;
    $r{errors} += $1 if $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
    $r{errors} += $1 + $2 + $3 + $4 if $out =~ /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/;
    warn "wrk $o{url}: $r{errors} errors\n$out" if $r{errors};
    return \%r;
}

sub s_time {
    my ($target, $mode) = @_;
    (my $hostport = $URL{$target}) =~ s{^https://([^/]+).*}{$1};
    (my $path = $URL{$target}) =~ s{^https://[^/]+}{};
    my $out = `openssl s_time -connect $hostport -$mode -time $DUR -cert $ccert -key $ckey -www $path/static/1k.bin 2>&1`;
    # "N connections in T real seconds, B bytes read per connection"
    return $1 / $2 if $out =~ /(\d+) connections in (\d+) real seconds/ && $2 > 0;
    warn "s_time $target $mode: $out";
    return 0;
}

# ------------------------------------------------------------------ HTTP workloads
my (%R, @WORKLOADS);
# The targets in turn, starting one further each repetition: on a shared
# machine load comes and goes, and a fixed order would give one target the
# same neighbours (and the same drift) every time.
sub rotated {
    my ($rep) = @_;
    return map { $TARGETS[($_ + $rep - 1) % @TARGETS] } 0 .. $#TARGETS;
}
# Median over the repetitions of a per-repetition figure of two targets
# measured in the same repetition (a minute apart at most): the ratio of
# their req/s, or the difference of their p50 latencies. Medians taken
# first could come from different repetitions, i.e. different load.
sub paired {
    my ($w, $what, $num, $den) = @_;
    my @v;
    for my $i (0 .. $#{ $R{$w}{$num}{rps} || [] }) {
        if ($what eq 'ratio') {
            my $d = $R{$w}{$den}{rps}[$i];
            push @v, $d ? $R{$w}{$num}{rps}[$i] / $d : 0;
        }
        else {
            push @v, $R{$w}{$num}{p50}[$i] - $R{$w}{$den}{p50}[$i];
        }
    }
    return median(@v);
}
for my $method ('GET', 'POST') {
    for my $size ('1k', '16k', '256k') {
        for my $conns (16, 1) {
            next if $quick && $conns == 1 && $size ne '1k';
            my $w = "$method $size c$conns";
            next if defined $only && $w !~ /$only/;
            push @WORKLOADS, $w;
            renew_sessions();
            for my $rep (1 .. $REPS) {
                for my $target (rotated($rep)) {
                    my $url = wl_url($target, $method, $size);
                    my $since = $target eq 'record' ? last_id() : 0;
                    my $r = wrk(url => $url, method => $method, size => $size, conns => $conns);
                    push @{ $R{$w}{$target}{$_} }, $r->{$_} // 0
                        for qw(rps p50 p99 errors cs busy cpu_all), map { "cpu_$_" } @PARTS;
                    if ($target eq 'record') {
                        my ($n, $x) = rows_since($since);
                        push @{ $R{$w}{record}{rpc} }, $x ? $n / $x : 0;
                    }
                }
            }
            note(sprintf "%-14s %s", $w, join '  ', map { sprintf "%s %.0f/s", $_, median(@{ $R{$w}{$_}{rps} }) } @TARGETS);
        }
    }
}

if (defined $only) {
    for my $w (@WORKLOADS) {
        printf "%-14s %s\n", $w, join '  ', map {
            my $rps = median(@{ $R{$w}{$_}{rps} });
            sprintf "%s %.0f/s (%.2f) p50 %.2f ms", $_, $rps,
                $R{$w}{proxy} ? paired($w, 'ratio', $_, 'proxy') : 0,
                median(@{ $R{$w}{$_}{p50} });
        } @TARGETS;
        printf "%-14s record rows/commit %.2f\n", $w, median(@{ $R{$w}{record}{rpc} }) if $R{$w}{record};
        printf "%-14s CPU us/req %s\n", $w, join '  ', map {
            my $tg = $_;
            sprintf "%s %.0f (front %.0f pg %.0f cs %.1f busy %.0f%%)", $tg,
                map { median(@{ $R{$w}{$tg}{$_} }) } qw(cpu_all cpu_front cpu_pg cs busy);
        } @TARGETS;
    }
    exit 0;
}

# ------------------------------------------------------------------ new TLS connection per request
my %HS;
renew_sessions();
for my $mode ('new', 'reuse') {
    for my $rep (1 .. $REPS) {
        for my $target (@TARGETS) {
            push @{ $HS{$mode}{$target} }, s_time($target, $mode);
        }
    }
    note(sprintf "s_time -%-5s  %s", $mode, join '  ', map { sprintf "%s %.0f/s", $_, median(@{ $HS{$mode}{$_} }) } @TARGETS);
}

# ------------------------------------------------------------------ store path vs pgbench
my %DB;
my $pgconn = $pg->conninfo('notary');
my $pgbin = NotaryTest::Pg::bindir();
my $pgbench = -x "$pgbin/pgbench" ? "$pgbin/pgbench" : 'pgbench';
# the module's own statement (sql/0002_writer_path.sql): a row into
# notary.records by key digest, its body digest computed by the client;
# the two keys registered beforehand, as the module does once per connection
$pg->psql(q{INSERT INTO notary.keys (sha256, der) VALUES (sha256('\x0101010101'), '\x0101010101'),
            (sha256('\x0202020202'), '\x0202020202') ON CONFLICT DO NOTHING});
my ($k1, $k2) = map { Digest::SHA::sha256_hex($_ x 5) } "\x01", "\x02";
for my $size ('1k', '16k', '256k') {
    my $hexbody = unpack('H*', 'b' x $SIZES{$size});
    my $hexsha = Digest::SHA::sha256_hex('b' x $SIZES{$size});
    my $script = "$dir/pgbench-$size.sql";
    NotaryTest::write_file($script, <<"EOF");
\\set n random(1, 1000000000000)
INSERT INTO notary.records (recorded_at, direction, merchant, sender_key_sha256, receiver_key_sha256, rule, method, uri, status, content_type, headers, body, body_sha256, exchange_id) VALUES (now(), 'response', 'bench', '\\x$k1', '\\x$k2', '* type */*', 'GET', '/bench', 200, 'application/octet-stream', 'Content-Type: application/octet-stream', '\\x$hexbody', '\\x$hexsha', 'pgb-' || :client_id || '-' || :n);
EOF
    for my $rep (1 .. $REPS) {
        my $out = `'$pgbench' -n -M prepared -c 16 -j 2 -T $DUR -f '$script' '$pgconn' 2>&1`;
        my ($tps) = $out =~ /tps = ([\d.]+) \(without initial connection time\)/;
        warn "pgbench: $out" unless $tps;
        push @{ $DB{$size}{pgbench} }, $tps || 0;
        my $since = last_id();
        $out = `'$store_load' '$pgconn' 16 $DUR $SIZES{$size} 2>&1`;
        my ($rps) = $out =~ /records_per_sec=([\d.]+)/;
        warn "store_load: $out" unless $rps;
        push @{ $DB{$size}{store} }, $rps || 0;
        my ($n, $x) = rows_since($since);
        push @{ $DB{$size}{rpc} }, $x ? $n / $x : 0;
    }
    note(sprintf "INSERT %-5s pgbench %.0f tps, store_load %.0f records/s", $size,
         median(@{ $DB{$size}{pgbench} }), median(@{ $DB{$size}{store} }));
}

# ------------------------------------------------------------------ memory
sub child_rss {
    my @pids = grep { $_ != 0 } map { /^\s*(\d+)\s+(\d+)/ && $2 != 1 ? $1 : () }
               `ps -o pid=,ppid= --ppid \$(cat $dir/run/notary/httpd.pid)`;
    my %rss;
    for my $p (@pids) {
        open my $f, '<', "/proc/$p/status" or next;
        while (<$f>) { $rss{$p} = $1 if /^VmRSS:\s+(\d+) kB/ }
    }
    return \%rss;
}
my %MEM;
renew_sessions();
for my $case (['relay', $URL{notary}], ['record', $URL{record}]) {
    my ($label, $base) = @$case;
    for my $size ('1m', '256m') {
        for my $i (1 .. 4) {   # reach every child's threads a few times
            my $r = `curl -sS --insecure --cert $ccert --key $ckey -o /dev/null -w '%{http_code} %{size_download}' $base/static/$size.bin`;
            die "memory run $label $size: $r\n" unless $r =~ /^200 /;
        }
        my $rss = child_rss();
        $MEM{$label}{$size} = (sort { $b <=> $a } values %$rss)[0] || 0;
    }
}
note("memory (max child RSS, kB): " . join ', ', map { my $l = $_; map { "$l $_ $MEM{$l}{$_}" } qw(1m 256m) } qw(relay record));

# ------------------------------------------------------------------ profile
# Where the CPU goes in the two recording workloads furthest from their
# targets, POST 1 KiB and GET 256 KiB at c16, and the same for the plain
# proxy: the whole machine, by process and library, then the hottest
# symbols (perf record -a, software clock).
my @PROFILED = (['POST', '1k'], ['GET', '256k']);
my %PROF;
if (system('perf --version >/dev/null 2>&1') == 0) {
    renew_sessions();
    for my $wl (@PROFILED) {
        my ($method, $size) = @$wl;
        for my $target ('proxy', 'record') {
            my $data = "$dir/perf-$target.data";
            my $pid = fork;
            if (!$pid) {
                exec('sh', '-c', wrk_cmd(url => wl_url($target, $method, $size), method => $method,
                                         size => $size, conns => 16, dur => $DUR + 2)
                                 . ' >/dev/null 2>&1');
            }
            sleep 1;
            system("perf record -q -F 499 -a -g -o $data -- sleep $DUR >/dev/null 2>&1");
            waitpid($pid, 0);
            my $p = $PROF{"$method $size"}{$target} = {};
            $p->{comm} = `perf report -i $data --stdio --no-children --sort comm,dso --percent-limit 2 2>/dev/null | grep -v '^#' | grep '%' | head -14`;
            $p->{sym} = `perf report -i $data --stdio --no-children --sort comm,sym --percent-limit 1.2 -g none 2>/dev/null | grep -v '^#' | grep '%' | head -22`;
        }
    }
    note('profiles taken');
}

# ------------------------------------------------------------------ report
mkdir $out_dir;
my $cpu = `grep -m1 'model name' /proc/cpuinfo`; $cpu =~ s/.*:\s*//; chomp $cpu;
my $nproc = `nproc`; chomp $nproc;
my ($httpd_v) = `$NotaryTest::HTTPD -v` =~ /Server version: (\S+)/;
my $ssl_v = `openssl version`; chomp $ssl_v;
my $pg_v = `'$pgbin/postgres' --version`; chomp $pg_v;
my $wrk_v = (`wrk -v 2>&1` =~ /^(wrk \S+)/m)[0] // 'wrk';
my $git = `git -C $NotaryTest::SRCDIR rev-parse --short HEAD 2>/dev/null`; chomp $git;
my $date = `date -u '+%Y-%m-%d %H:%M UTC'`; chomp $date;

my @md;
push @md, "# mod_notary benchmark" . ($quick ? ' (quick mode: 1 run each, 2 s)' : ''), '';
push @md, "Run $date at commit `$git`, " . sprintf('%.0f', (time - $t0) / 60) . " minutes.", '';
push @md, "- machine: $nproc CPUs ($cpu), shared: wrk, both httpd and PostgreSQL run on it at once",
          "- $httpd_v (mpm_event), $ssl_v, $pg_v, $wrk_v",
          "- every figure is the median of $REPS run(s) of ${DUR} s; the four targets are measured in turn within each repetition (starting one further each time), so figures in one table come from the same minutes; each ratio (and the c=1 latency added) is the median of the per-repetition ratios (differences), each pair measured within the same minute",
          "- TLS 1.3 with client certificates everywhere (wrk presents alice's certificate through `bench/client_cert_shim.so`, an LD_PRELOAD over `SSL_CTX_new`)",
          "- targets: **direct** = the merchant backend itself; **proxy** = plain mod_proxy vhost (ProxyPass) to it; **notary** = notary vhost, consumer admitted by contract session, one `contains` rule that never matches (every body scanned); **record** = notary vhost with `NotaryRecord shop type */*` (every response, and every POST request, recorded in PostgreSQL before release)",
          "- POST goes to mod_reflector on the backend (the response is the request body)",
          "- compare only figures of this report with each other: the machine is shared and noisy", '';

push @md, '## Throughput and latency', '';
push @md, '| workload | direct req/s | proxy req/s | notary req/s | record req/s | notary/proxy | record/proxy | p50 proxy ms | p50 notary ms | p50 record ms | p99 record ms | record rows/commit |';
push @md, '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|';
my %RATIO;
for my $w (@WORKLOADS) {
    my %med = map { my $tg = $_; ($tg => { map { ($_ => median(@{ $R{$w}{$tg}{$_} })) } qw(rps p50 p99) }) } @TARGETS;
    my $np = paired($w, 'ratio', 'notary', 'proxy');
    my $rp = paired($w, 'ratio', 'record', 'proxy');
    $RATIO{$w} = { r_notary => $np, r_record => $rp, med => \%med,
                   added => paired($w, 'diff', 'record', 'notary') };
    push @md, sprintf '| %s | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |', $w,
        (map { $med{$_}{rps} } @TARGETS), $np, $rp, $med{proxy}{p50}, $med{notary}{p50}, $med{record}{p50}, $med{record}{p99},
        median(@{ $R{$w}{record}{rpc} || [] });
}
my $errs = 0;
for my $w (@WORKLOADS) { for my $tg (@TARGETS) { $errs += $_ for @{ $R{$w}{$tg}{errors} } } }
push @md, '', "Errors (non-2xx or socket errors) over all runs: $errs.", '';
push @md, '![req/s per workload](chart.svg)', '';

# CPU per request, and what recording adds against the targets' budgets
my %TARGET_RATIO = ('1k' => 0.80, '16k' => 0.80, '256k' => 0.70);
my @C16 = grep { /c16$/ } @WORKLOADS;
my $cpu_of = sub { my ($w, $tg, $k) = @_; return median(@{ $R{$w}{$tg}{$k} || [] }) };
push @md, '## CPU per request', '',
    "CPU time (user + system, µs per request, median of the repetitions) of each part while wrk ran at c16, read from `/proc` around each wrk run: **front** is the httpd that serves the proxy and both notary vhosts, **merchant** the backend httpd; PostgreSQL counts all its processes. **cs**: context switches per request in the front httpd's children. **busy**: share of the machine's $NPROC CPUs all of it used (the rest was idle or went to other tenants). On a machine this loaded, req/s follows total CPU per request, and CPU per request varies far less from one minute to the next than req/s does.", '';
push @md, '| workload | target | wrk | front | merchant | PostgreSQL | total | cs | busy % |', '|---|---|---:|---:|---:|---:|---:|---:|---:|';
for my $w (@C16) {
    for my $tg (@TARGETS) {
        push @md, sprintf '| %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f | %.0f |', $w, $tg,
            (map { $cpu_of->($w, $tg, "cpu_$_") } @PARTS), $cpu_of->($w, $tg, 'cpu_all'), $cpu_of->($w, $tg, 'cs'), $cpu_of->($w, $tg, 'busy');
    }
}
push @md, '', 'What each notary mode adds to the proxy\'s CPU per request, against the budget its target leaves (the proxy\'s total × (1 ÷ target − 1); 0.95 for the non-matching notary, 0.80 or 0.70 for recording):', '';
push @md, '| workload | proxy total µs | notary adds (budget at 0.95) | record adds | of which front | of which PostgreSQL | budget at target | proxy ÷ record CPU |', '|---|---:|---:|---:|---:|---:|---:|---:|';
for my $w (@C16) {
    my ($size) = $w =~ / (\w+) c16/;
    my $px = $cpu_of->($w, 'proxy', 'cpu_all') or next;
    my $rec = $cpu_of->($w, 'record', 'cpu_all');
    push @md, sprintf '| %s | %.0f | %+.0f (%.0f) | %+.0f | %+.0f | %+.0f | %.0f | %.2f |', $w, $px,
        $cpu_of->($w, 'notary', 'cpu_all') - $px, $px * (1 / 0.95 - 1),
        $rec - $px, $cpu_of->($w, 'record', 'cpu_front') - $cpu_of->($w, 'proxy', 'cpu_front'),
        $cpu_of->($w, 'record', 'cpu_pg') - $cpu_of->($w, 'proxy', 'cpu_pg'),
        $px * (1 / $TARGET_RATIO{$size} - 1), $rec ? $px / $rec : 0;
}
push @md, '';
my @C1 = grep { /c1$/ } @WORKLOADS;
if (@C1) {
    push @md, 'With one connection (c=1) nothing is batched: each recorded message waits for a commit of its own before its last byte goes on, a GET for one, a POST for two in sequence. What recording adds to the p50, and the CPU behind it (µs per request; all of PostgreSQL\'s falls inside those waits):', '';
    push @md, '| workload | p50 notary ms | p50 record ms | added ms (paired) | PostgreSQL CPU µs | front CPU added µs |', '|---|---:|---:|---:|---:|---:|';
    for my $w (@C1) {
        push @md, sprintf '| %s | %.2f | %.2f | %+.2f | %.0f | %+.0f |', $w,
            $RATIO{$w}{med}{notary}{p50}, $RATIO{$w}{med}{record}{p50}, $RATIO{$w}{added},
            $cpu_of->($w, 'record', 'cpu_pg'),
            $cpu_of->($w, 'record', 'cpu_front') - $cpu_of->($w, 'notary', 'cpu_front');
    }
    push @md, '';
}

push @md, '## Admission: a new TLS connection per request', '';
push @md, '`openssl s_time` (one client, GET 1 KiB, a full TLS handshake per request, or TLS session resumption):', '';
push @md, '| handshake | direct conn/s | proxy conn/s | notary conn/s | record conn/s | notary/proxy |', '|---|---:|---:|---:|---:|---:|';
for my $mode ('new', 'reuse') {
    my %med = map { ($_ => median(@{ $HS{$mode}{$_} })) } @TARGETS;
    push @md, sprintf '| %s | %.0f | %.0f | %.0f | %.0f | %.2f |', $mode eq 'new' ? 'full' : 'resumed',
        (map { $med{$_} } @TARGETS), $med{proxy} ? $med{notary} / $med{proxy} : 0;
}
push @md, '';

push @md, '## The store path against PostgreSQL\'s own insert rate', '';
push @md, 'pgbench runs the single-row `INSERT INTO notary.records` the module sends for a lone record (schema version 2: keys by digest; the body digest re-checked by a CHECK constraint), 16 clients:',
          '`pgbench -M prepared -c 16` against `bench/store_load` (the module\'s own `notary_store_insert`, 16 threads; records that queue up while a commit is in flight go together as one multi-row INSERT, each caller still waiting for its own commit). Rows per commit: rows inserted ÷ distinct inserting transactions (`xmin`).', '';
push @md, '| body | pgbench tps | store records/s | store/pgbench | store rows/commit |', '|---|---:|---:|---:|---:|';
my %DBR;
for my $size ('1k', '16k', '256k') {
    my ($a, $b) = (median(@{ $DB{$size}{pgbench} }), median(@{ $DB{$size}{store} }));
    $DBR{$size} = $a ? $b / $a : 0;
    push @md, sprintf '| %s | %.0f | %.0f | %.2f | %.2f |', $size, $a, $b, $DBR{$size}, median(@{ $DB{$size}{rpc} });
}
push @md, '';

push @md, '## Memory', '';
push @md, 'Largest httpd child RSS (kB) after relaying a 1 MiB and a 256 MiB body four times each:', '';
push @md, '| | after 1 MiB | after 256 MiB | difference |', '|---|---:|---:|---:|';
for my $l ('relay', 'record') {
    push @md, sprintf '| %s | %d | %d | %d |', $l eq 'relay' ? 'notary (not recorded)' : 'notary (recorded)',
        $MEM{$l}{'1m'}, $MEM{$l}{'256m'}, $MEM{$l}{'256m'} - $MEM{$l}{'1m'};
}
push @md, '';

if (%PROF) {
    push @md, '## Profile', '';
    push @md, "`perf record -a` (whole machine, ${DUR} s) while wrk runs at c16 against the plain proxy and against the recording notary: share of CPU samples by process and library, then the hottest symbols.", '';
    for my $wl (map { "$_->[0] $_->[1]" } @PROFILED) {
        for my $target ('proxy', 'record') {
            my $p = $PROF{$wl}{$target};
            push @md, "### $wl, $target, by process and library", '', '```', $p->{comm}, '```', '';
            push @md, "### $wl, $target, hottest symbols", '', '```', $p->{sym}, '```', '';
        }
    }
}

# targets
my @T;
my $min = sub {
    my ($k, $want) = @_;
    my @v = map { $RATIO{$_}{$k} } grep { $_ =~ $want } @WORKLOADS;
    return (sort { $a <=> $b } @v)[0] // 0;
};
my $nonmatch = $min->('r_notary', qr/c16/);
push @T, ['notary non-matching >= 0.95 x proxy req/s at every size (c16)', sprintf('lowest %.2f', $nonmatch), $nonmatch >= 0.95];
my $r_small = $min->('r_record', qr/ (1k|16k) c16/);
push @T, ['recording >= 0.80 x proxy at 1 KiB and 16 KiB (c16)', sprintf('lowest %.2f', $r_small), $r_small >= 0.80];
my $r_big = $min->('r_record', qr/256k c16/);
push @T, ['recording >= 0.70 x proxy at 256 KiB (c16)', sprintf('lowest %.2f', $r_big), $r_big >= 0.70];
my $st = (sort { $a <=> $b } values %DBR)[0] // 0;
push @T, ['store path >= 0.9 x pgbench single-INSERT tps', sprintf('lowest %.2f', $st), $st >= 0.9];
my @lat = map { $RATIO{$_}{added} } grep { /c1$/ } @WORKLOADS;
my $lat = (sort { $b <=> $a } @lat)[0] // 0;
push @T, ['c=1 p50 added by recording <= 0.35 ms over the non-matching notary', sprintf('worst +%.2f ms', $lat), $lat <= 0.35];
my $mem = ($MEM{record}{'256m'} - $MEM{record}{'1m'}) / 1024;
my $memr = ($MEM{relay}{'256m'} - $MEM{relay}{'1m'}) / 1024;
push @T, ['RSS difference 1 MiB vs 256 MiB < 2 MiB per child (relay / record)', sprintf('%.1f / %.1f MiB', $memr, $mem), $mem < 2 && $memr < 2];
push @md, '## Targets', '', '| target | measured | met |', '|---|---|---|';
push @md, map { sprintf '| %s | %s | %s |', $_->[0], $_->[1], $_->[2] ? 'yes' : '**no**' } @T;
push @md, '';
my $analysis = "$NotaryTest::SRCDIR/bench/ANALYSIS.md";
if (-f $analysis) {
    push @md, '## Analysis', '', '(from `bench/ANALYSIS.md`, written by hand after looking at this run and its profile)', '';
    push @md, do { local $/; open my $f, '<', $analysis; <$f> };
}
NotaryTest::write_file("$out_dir/report.md", join("\n", @md) . "\n");

# chart
my $data = "$dir/chart.dat";
NotaryTest::write_file($data, join '', map { my $w = $_; qq{"$w" } . join(' ', map { sprintf '%.0f', $RATIO{$w}{med}{$_}{rps} } @TARGETS) . "\n" } @WORKLOADS);
my $gp = <<"EOF";
set terminal svg size 1100,480 dynamic font "sans,11"
set output "$out_dir/chart.svg"
set title "req/s per workload (median, one run of bench/run)"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -30
set key top right
set ylabel "requests per second"
set grid ytics
plot "$data" using 2:xtic(1) title "direct", '' using 3 title "proxy", '' using 4 title "notary", '' using 5 title "record"
EOF
open my $g, '|-', 'gnuplot' or die "gnuplot: $!";
print $g $gp;
close $g;
note("report written: $out_dir/report.md");
print "\n", join("\n", map { sprintf '%-70s %-18s %s', $_->[0], $_->[1], $_->[2] ? 'met' : 'NOT MET' } @T), "\n";
$t->stop;
