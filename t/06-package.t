# The Debian package, as an operator meets it: debian/ builds
# libapache2-mod-notary with `dpkg-buildpackage -us -uc -b` from a clean copy
# of the tree (the worktree is left alone); lintian reports no tag that
# debian/README.source does not list with its reason; `apt-get install
# ./x.deb` installs it and enables nothing; `a2enmod notary` enables it and
# the modules it needs; the system apache2 -- /usr/sbin/apache2 through
# apache2ctl with /etc/apache2's configuration, run on a test port on
# 127.0.0.1 -- serves an example notary site, and one contract exchange goes
# through the installed module: the token made by the installed notary-link
# (the merchant's contract-start page), the record in a store made by the
# installed sql/apply.sh. At the end (also after a failure or a signal)
# apache2 is stopped, the site and the module disabled, the package purged,
# and /etc/apache2, /var/lib/apache2 and the list of installed packages must
# be as they were before the test.
#
# Root only (it installs a package). Every step runs under a time limit: the
# package build under 20 minutes, lintian under 10, the rest in seconds.
use strict;
use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use File::Find;
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);
use NotaryTest;

my $PKG = 'libapache2-mod-notary';
my $MOD = '/usr/lib/apache2/modules/mod_notary.so';
my $LINK = '/usr/bin/notary-link';
my $SHARE = "/usr/share/$PKG";
my $SITE = 'notary-t06-package';
my $SITE_FILE = "/etc/apache2/sites-available/$SITE.conf";
my @STATE_ROOTS = ('/etc/apache2', '/var/lib/apache2');
# a2enmod notary enables these through notary.load's "# Depends:" line
# (socache_shmcb also through ssl.load's)
my @NEEDED_MODS = qw(ssl proxy proxy_http socache_shmcb);

$> == 0 or die "t/06-package.t installs a package and runs the system apache2: run it as root (./script/test does)\n";
for my $tool (qw(dpkg-buildpackage dh dh_apache2 lintian apt-get dpkg a2enmod a2dismod a2ensite
                 a2dissite a2query apache2ctl git tar timeout)) {
    system("command -v $tool >/dev/null 2>&1") == 0
        or die "t/06-package.t: $tool is not installed (NOTARY_PACKAGES in script/common.sh)\n";
}
# a backstop over the steps' own limits: die, and END cleans up; so does
# a signal (exit runs END), from the first step on
$SIG{ALRM} = sub { die "t/06-package.t: over 45 minutes, giving up\n" };
alarm 2700;
my %SIGNO = (HUP => 1, INT => 2, TERM => 15);
for my $sig (keys %SIGNO) {
    $SIG{$sig} = sub { print STDERR "# t/06-package.t: SIG$sig, cleaning up\n"; exit 128 + $SIGNO{$sig} };
}

sub q_ { my $s = shift; $s =~ s/'/'\\''/g; "'$s'" }

# sh($command, timeout => seconds, log => file): runs a shell command under
# timeout(1); returns (exit code, output). 124 means it timed out. $CHILD is
# the timeout(1) running now: cleanup after a signal or a die stops it
# (timeout passes the signal on to the command's processes).
my $CHILD;
sub sh {
    my ($cmd, %o) = @_;
    my $limit = $o{timeout} || 120;
    my ($fh, $log) = $o{log} ? (undef, $o{log}) : File::Temp::tempfile('notary-t06-XXXXXX', TMPDIR => 1, UNLINK => 1);
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open(STDIN, '<', '/dev/null') && open(STDOUT, '>', $log) && open(STDERR, '>&', \*STDOUT)
            or POSIX::_exit(127);
        { no warnings 'exec'; exec('timeout', '--kill-after=10', $limit, 'sh', '-c', $cmd); }
        POSIX::_exit(127);
    }
    $CHILD = $pid;
    waitpid($pid, 0);
    my $st = $?;
    undef $CHILD;
    my $out = -f $log ? NotaryTest::read_file($log) : '';
    unlink $log unless $o{log};
    my $rc = ($st & 127) ? 128 + ($st & 127) : $st >> 8;
    return ($rc, $out);
}

sub tail { my ($s, $n) = @_; my @l = split /\n/, $s // ''; join("\n", @l > $n ? @l[-$n .. -1] : @l) }

# dpkg and apt-get wait for the dpkg lock (another session's apt-get may
# hold it for a while); anything else that fails, fails at once
sub dpkg_sh {
    my ($cmd) = @_;
    my $deadline = time + 300;
    while (1) {
        my ($rc, $out) = sh($cmd, timeout => 600);
        return ($rc, $out) if $rc == 0 || $out !~ /\block\b/i || time > $deadline;
        sleep 3;
    }
}

# What /etc/apache2 and /var/lib/apache2 hold: path => "dir MODE",
# "link TARGET" or "file MODE SHA256".
sub snapshot {
    my %s;
    for my $root (grep { -e } @STATE_ROOTS) {
        find({ no_chdir => 1, wanted => sub {
            my $p = $File::Find::name;
            my $mode = sprintf '%04o', (lstat $p)[2] & 07777;
            $s{$p} = -l $p ? 'link ' . readlink($p)
                   : -d _  ? "dir $mode"
                   : -f _  ? "file $mode " . sha256_hex(NotaryTest::read_file($p))
                   : 'other';
        } }, $root);
    }
    return \%s;
}

# the packages dpkg knows in any state but not-installed (a purged package
# may stay in its database as "pn", selected for purge and not installed)
sub packages {
    return join '', sort grep { !/ .n.?$/ }
        `dpkg-query -W -f='\${binary:Package} \${Version} \${db:Status-Abbrev}\\n'`;
}

# dpkg's status of the package: '' when unknown, e.g. "ii", "pn", "rc"
sub pkg_status {
    my $s = `dpkg-query -W -f='\${db:Status-Abbrev}' $PKG 2>/dev/null`;
    $s =~ s/\s+$//;
    return $s;
}
sub pkg_present { pkg_status() =~ /^.[^n]/ }

# ---------------------------------------------------------------- the machine as found
my $before = snapshot();
my $packages_before = packages();
my %enabled_before = map { $_ => (system("a2query -q -m $_") == 0) } 'notary', @NEEDED_MODS;
# the test removes what it installs: refuse to start over anything it would
# then take away
die "t/06-package.t: $PKG is already on this machine (status '" . pkg_status() . "'); "
    . "dpkg --purge it first, the test would remove it\n" if pkg_present();
for my $f ($MOD, $LINK, '/usr/bin/notary-verify', '/etc/apache2/mods-available/notary.load',
           '/etc/apache2/mods-available/notary.conf', $SITE_FILE, $SHARE) {
    die "t/06-package.t: $f exists and belongs to no package of ours; the test would remove it\n"
        if -e $f;
}

my $work = tempdir('notary-pkg-XXXXXX', DIR => '/tmp', CLEANUP => !$ENV{NOTARY_KEEP_TMP});
chmod 0755, $work;
my $src = "$work/src";
my $t;                     # the harness (merchant, PKI, PostgreSQL)
my %done;                  # what cleanup has to undo
my $sys;                   # the system apache2's run, lock and log directories

# apache2ctl with /etc/apache2 (mods-enabled, sites-enabled, conf-enabled as
# a2enmod and a2ensite leave them) and /usr/sbin/apache2. Two things differ
# from a plain `apache2ctl start`: ports.conf is left out (its Listen 80 and,
# with ssl, 443 on every address; the test site brings its own Listen on
# 127.0.0.1), and the run, lock and log directories are the test's (an
# envvars that sources /etc/apache2/envvars and moves them), so a system
# instance's pid file and logs are never touched. APACHE_STARTED_BY_SYSTEMD
# tells apache2ctl to run httpd itself rather than ask systemctl for the
# machine's apache2.service.
sub apache2ctl {
    my ($action) = @_;
    return sh("APACHE_ENVVARS=$sys/envvars APACHE_ARGUMENTS='-d /etc/apache2 -f $sys/apache2.conf' "
              . "APACHE_STARTED_BY_SYSTEMD=1 apache2ctl $action", timeout => 60);
}

sub apache2_pid {
    return undef unless $sys && -f "$sys/run/apache2.pid";
    my $p = NotaryTest::read_file("$sys/run/apache2.pid");
    return $p =~ /^(\d+)/ ? $1 : undef;
}

sub stop_apache2 {
    return unless $done{apache2};
    my $pid = apache2_pid();
    my ($rc, $out) = apache2ctl('stop');
    if ($pid) {
        my $deadline = time + 20;
        sleep 0.1 while kill(0, $pid) && time < $deadline;
        # ours, started by this test: killed if it would not stop
        kill 'KILL', $pid if kill 0, $pid;
    }
    delete $done{apache2};
    return ($rc, $out);
}

# Undoes everything, in order, whatever got done; returns what went wrong.
sub cleanup {
    alarm 0;
    if ($CHILD) {
        kill 'TERM', $CHILD;
        waitpid($CHILD, 0);
        undef $CHILD;
    }
    my @problems;
    my $run = sub {
        my ($what, $cmd, $dpkg) = @_;
        my ($rc, $out) = $dpkg ? dpkg_sh($cmd) : sh($cmd, timeout => 60);
        push @problems, "$what (exit $rc): " . tail($out, 10) if $rc;
    };
    stop_apache2();
    $t->stop_merchants if $t;
    if (delete $done{site}) {
        $run->("a2dissite $SITE", "a2dissite -q -p $SITE") if -l "/etc/apache2/sites-enabled/$SITE.conf";
        unlink $SITE_FILE;
    }
    if (delete $done{a2enmod}) {
        # the module, and what a2enmod enabled for it that was not enabled
        # before (-p: its state in /var/lib/apache2 too)
        for my $m ('notary', grep { !$enabled_before{$_} } reverse @NEEDED_MODS) {
            $run->("a2dismod $m", "a2dismod -q -f -p $m") if system("a2query -q -m $m") == 0;
        }
    }
    if (delete $done{installed}) {
        $run->("dpkg --purge $PKG", "dpkg --purge $PKG", 1) if pkg_present();
    }
    # whatever is left over (state markers, a half-done step) is put back as
    # found; said in a note, so a change in what the steps above leave shows
    my $now = snapshot();
    for my $p (sort { length $b <=> length $a } grep { !exists $before->{$_} } keys %$now) {
        my $ok = $now->{$p} =~ /^dir/ ? rmdir $p : unlink $p;
        push @problems, "left over, cannot remove $p: $!" unless $ok;
        print STDERR "# cleanup removed what the steps left: $p ($now->{$p})\n" if $ok;
    }
    for my $p (sort { length $a <=> length $b } grep { !exists $now->{$_} } keys %$before) {
        my $d = $before->{$p};
        my $ok;
        if ($d =~ /^dir (\d+)$/) { $ok = mkdir($p) && chmod(oct $1, $p) }
        elsif ($d =~ /^link (.*)$/) { $ok = symlink $1, $p }
        elsif ($d =~ /^file (\d+) (\w+)$/ && $2 eq sha256_hex('')) {
            # a2enmod's state markers are empty files
            my $mode = oct $1;
            my $fh;
            $ok = open($fh, '>', $p) && close($fh) && chmod($mode, $p);
        }
        push @problems, "removed, cannot restore $p ($d)" unless $ok;
        print STDERR "# cleanup restored what the steps removed: $p ($d)\n" if $ok;
    }
    return @problems;
}

my $cleaned;
END {
    if (!$cleaned) {
        local ($?, $@);
        $cleaned = 1;
        my @p = eval { cleanup() };
        push @p, "cleanup died: $@" if $@;
        print STDERR "# t/06-package.t cleanup: $_\n" for @p;
    }
}

# The last tests: cleanup, and the machine as found.
sub finish {
    $cleaned = 1;
    my @problems = cleanup();
    ok(!@problems, 'cleanup: apache2 stopped, site and module disabled, package purged')
        or diag join "\n", @problems;
    ok(!pkg_present(), "... $PKG is not installed any more (dpkg: '" . pkg_status() . "')")
        if $done{ever_installed};
    ok(!-e $_, "... $_ is gone") for $MOD, $LINK, '/etc/apache2/mods-available/notary.load', $SHARE;
    my $after = snapshot();
    my @diff = map { "$_: before '" . ($before->{$_} // 'absent') . "', after '" . ($after->{$_} // 'absent') . "'" }
               grep { ($before->{$_} // '') ne ($after->{$_} // '') } sort keys %{ { %$before, %$after } };
    ok(!@diff, '/etc/apache2 and /var/lib/apache2 are as they were before the test')
        or diag join "\n", @diff;
    is(packages(), $packages_before, 'the installed packages are those installed before the test');
    done_testing;
    exit;
}

# ---------------------------------------------------------------- build
# A clean copy of the tree: the committed files with the worktree's changes
# to them (git stash create records those without touching the worktree or
# its refs; it prints nothing when there are none). debian/ is not in the
# release tarball (make dist), so the test needs a git checkout.
{
    my $top = `git -C '$NotaryTest::SRCDIR' rev-parse --show-toplevel 2>/dev/null`;
    ok($? == 0 && $top, "the source tree $NotaryTest::SRCDIR is a git checkout (debian/ is not in make dist's tarball)")
        or finish();
    chomp(my $ref = `git -C '$NotaryTest::SRCDIR' stash create 2>/dev/null`);
    $ref ||= 'HEAD';
    my ($rc, $out) = sh("git -C '$NotaryTest::SRCDIR' archive --format=tar --prefix=src/ $ref | tar -x -C $work");
    is($rc, 0, "a clean copy of the source tree (git archive $ref)") or diag $out;
    ok(-x "$src/debian/rules" && -f "$src/configure.ac", '... with debian/rules and configure.ac')
        or finish();
}

my $t0 = time;
my ($rc, $out) = sh("cd $src && DEB_BUILD_OPTIONS=parallel=2 dpkg-buildpackage -us -uc -b",
                    timeout => 1200, log => "$work/build.log");
is($rc, 0, sprintf('dpkg-buildpackage -us -uc -b builds the package (%d s)', time - $t0))
    or diag tail($out, 80);
my ($deb) = grep { !/-dbgsym_/ } glob("$work/${PKG}_*.deb");
my ($changes) = glob("$work/${PKG}_*.changes");
my ($buildinfo) = glob("$work/${PKG}_*.buildinfo");
ok($deb && $changes && $buildinfo, '... a .deb, its .changes and .buildinfo')
    or do { diag "in $work: " . join(' ', map { s{.*/}{}r } glob("$work/*")); finish() };

# ---------------------------------------------------------------- what it holds
my %files = map {; s{^\.}{}r => 1 } grep { length } map { (split ' ', $_)[5] // '' }
            split /\n/, `dpkg-deb -c '$deb'`;
my @sql = map { s{^\Q$src\E/}{}r } glob("$src/sql/*.sql"), glob("$src/sql/reports/*.sql");
for my $f ($MOD, '/etc/apache2/mods-available/notary.load', '/etc/apache2/mods-available/notary.conf',
           $LINK, '/usr/bin/notary-verify',
           '/usr/share/man/man1/notary-link.1.gz', '/usr/share/man/man1/notary-verify.1.gz',
           "$SHARE/sql/apply.sh", (map { "$SHARE/$_" } @sql),
           "/usr/share/doc/$PKG/copyright", "/usr/share/doc/$PKG/changelog.Debian.gz") {
    ok($files{$f}, "the package holds $f");
}
# dh_compress compresses what is over 4 kB
for my $doc ('README.md', (map { s{.*/}{}r } glob("$src/docs/*.md")), 'sql/README.md',
             'examples/notary-vhost.conf.example') {
    ok($files{"/usr/share/doc/$PKG/$doc"} || $files{"/usr/share/doc/$PKG/$doc.gz"},
       "... and $doc in /usr/share/doc/$PKG");
}
ok(!scalar(grep { m{^/usr/share/mod_notary\b|\.la$} } keys %files), '... nothing of make install\'s hand-install layout (share/mod_notary, .la)');
my $depends = `dpkg-deb -f '$deb' Depends`;
like($depends, qr/\bapache2-api-\d{8}\b/, 'Depends names the apache2 module API (dh_apache2)') or diag $depends;
like($depends, qr/\b$_\b/, "Depends names $_ (shlibs)") for qw(libjansson4 libpq5 libssl3 libzstd1 libbrotli1);

# ---------------------------------------------------------------- lintian
# Every tag lintian reports (errors, warnings, information) must be listed in
# debian/README.source with the reason it stays.
{
    my $readme = -f "$src/debian/README.source" ? NotaryTest::read_file("$src/debian/README.source") : '';
    my %listed = map { $_ => 1 } $readme =~ /^- `([a-z0-9][a-z0-9+.-]*)`/mg;
    $t0 = time;
    my ($lrc, $lout) = sh("lintian -I --tag-display-limit 0 '$changes'", timeout => 600,
                          log => "$work/lintian.log");
    ok($lrc == 0 || $lrc == 1, sprintf('lintian runs on the .changes, .buildinfo and .deb (%d s)', time - $t0))
        or diag tail($lout, 30);
    my @tags = map { /^([EWIPXO]): \S+(?: \w+)?: (\S+)/ ? "$1 $2" : () } split /\n/, $lout;
    my @unlisted = grep { !$listed{ (split ' ', $_)[1] } } @tags;
    ok(!@unlisted, 'lintian: no tag that debian/README.source does not list with its reason')
        or diag "unlisted:\n" . join("\n", @unlisted) . "\nlintian said:\n$lout";
    ok(!grep({ /^E / } @tags), '... and no error') or diag join "\n", grep { /^E / } @tags;
    note("lintian: " . (join(', ', @tags) || 'no tags'));
}

# ---------------------------------------------------------------- install
$done{installed} = $done{ever_installed} = 1;
($rc, $out) = dpkg_sh("DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                      . "-o DPkg::Lock::Timeout=300 '$deb'");
is($rc, 0, "apt-get install ./$PKG.deb installs it") or diag tail($out, 40);
is(pkg_status(), 'ii', "... $PKG is installed") or finish();
{
    my $now = snapshot();
    my @new = grep { m{^/etc/apache2/(?:mods|sites|conf)-enabled/} && !exists $before->{$_} } sort keys %$now;
    ok(!@new, '... and enables nothing (dh_apache2 --noenable)') or diag "@new";
}
ok(-f $MOD, "the module is where apxs says ($MOD)");
my $load = NotaryTest::read_file('/etc/apache2/mods-available/notary.load');
like($load, qr{^LoadModule notary_module \Q$MOD\E$}m, 'mods-available/notary.load loads it');
like($load, qr{^# Depends: ssl proxy proxy_http socache_shmcb$}m, '... and names the modules it needs for a2enmod');
like(NotaryTest::read_file('/etc/apache2/mods-available/notary.conf'), qr{^# NotaryEngine On\|Off}m,
     'mods-available/notary.conf is the annotated reference');
like(scalar `$LINK --help 2>&1`, qr/--consumer-cert/, "the installed $LINK runs");
ok(-x "$SHARE/sql/apply.sh", "$SHARE/sql/apply.sh is executable");

# ---------------------------------------------------------------- a2enmod
$done{a2enmod} = 1;
($rc, $out) = sh('a2enmod notary');
is($rc, 0, 'a2enmod notary') or diag $out;
is(system("a2query -q -m $_"), 0, "... $_ is enabled") for 'notary', @NEEDED_MODS;

# ---------------------------------------------------------------- the example site
# The harness's merchant (its own httpd), PKI and PostgreSQL; the notary is
# the system apache2. The merchant's contract-start page runs the installed
# notary-link, and its backend loads the installed module (not enabled in it).
{
    no warnings 'redefine';
    *NotaryTest::notary_link = sub { $LINK };
    *NotaryTest::module_path = sub { $MOD };
}
$t = NotaryTest->new;
my $m = $t->add_merchant('shop', 'ec256');
my $pg = do {
    # the record store from the installed schema: sql/apply.sh as shipped
    local $ENV{NOTARY_SRCDIR} = $SHARE;
    $t->pg;
};
is($pg->srcdir_of, $SHARE, 'the record store is made by the installed sql/apply.sh');
$t->write_conf;           # the harness's files, readable by the servers' users
$t->restart_merchants;

$sys = $t->dir . '/system-apache2';
# apache2ctl makes the lock directory itself (owned by www-data: it refuses
# one owned by anybody else) and the run directory if missing
make_path(map { "$sys/$_" } qw(run log));
chmod 0755, $sys, map { "$sys/$_" } qw(run log);
NotaryTest::write_file("$sys/envvars", <<"EOF");
# /etc/apache2/envvars, with the run, lock and log directories of t/06-package.t
. /etc/apache2/envvars
export APACHE_PID_FILE=$sys/run/apache2.pid
export APACHE_RUN_DIR=$sys/run
export APACHE_LOCK_DIR=$sys/lock
export APACHE_LOG_DIR=$sys/log
EOF
{
    my $conf = NotaryTest::read_file('/etc/apache2/apache2.conf');
    $conf =~ s{^\s*Include\s+ports\.conf\s*$}{# ports.conf left out by t/06-package.t: the test site has its own Listen}m
        or die "/etc/apache2/apache2.conf has no 'Include ports.conf' line\n";
    NotaryTest::write_file("$sys/apache2.conf", $conf);
}
$done{site} = 1;
NotaryTest::write_file($SITE_FILE, "# t/06-package.t: a notary on 127.0.0.1 (removed at the end of the test)\n"
    . $t->notary_vhost(extra => $t->db_directive . "    NotaryRecord shop type application/xml response\n"));
($rc, $out) = sh("a2ensite $SITE");
is($rc, 0, "a2ensite $SITE: a notary virtual host on 127.0.0.1:" . $t->notary_port) or diag $out;
($rc, $out) = apache2ctl('configtest');
is($rc, 0, 'apache2ctl configtest') or diag $out;
$done{apache2} = 1;
($rc, $out) = apache2ctl('start');
is($rc, 0, 'apache2ctl start: the system apache2') or diag $out;
# httpd listens before it writes its pid file: wait for both
my $up = $t->wait_for(sub { IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->notary_port, Timeout => 1)
                            && apache2_pid() },
                      timeout => 20, what => 'apache2 to listen on ' . $t->notary_port . ' and write its pid file');
ok($up, '... listens on the test port')
    or do { diag NotaryTest::read_file("$sys/log/error.log") if -f "$sys/log/error.log"; finish() };
{
    my $pid = apache2_pid();
    my $maps = $pid && -r "/proc/$pid/maps" ? NotaryTest::read_file("/proc/$pid/maps") : '';
    like($maps, qr{\Q$MOD\E}, "... with the installed $MOD loaded (apache2 pid " . ($pid // 'none') . ')');
}

# ---------------------------------------------------------------- one contract exchange
my $start = $t->request(url => $t->merchant_url('shop') . '/start?path=/static/contract.xml',
                        consumer => 'alice', curl_args => ['--insecure']);
is($start->{status}, 303, 'the merchant\'s contract-start page answers with a contract link')
    or diag "$start->{curl_out}\n$start->{body}";
my $link = $start->{headers}{location} // '';
like($link, qr{^https://notary\.test:\d+/shop/static/contract\.xml\?notary_token=[\w-]+\.[\w-]+\.[\w-]+$},
     '... made by the installed notary-link');
my $r = $t->request(url => $link, consumer => 'alice');
is($r->{status}, 200, 'the installed module admits the consumer with the token')
    or diag "$r->{curl_out}\n$r->{body}\n" . $t->notary_error_log;
like($r->{body}, qr{<contract merchant="shop"/>}, '... and relays the merchant\'s contract');
ok($t->wait_notary_access(qr{"GET /shop/static/contract\.xml\?notary_token=\S+ HTTP/1\.1" 200}),
   '... logged by the notary site of the system apache2');
my @rows = $t->records('merchant = ? AND uri = ?', 'shop', '/static/contract.xml');
is(scalar @rows, 1, 'the exchange is recorded in the record store') or diag $t->notary_error_log;
my $row = $rows[0] || {};
is($row->{direction}, 'response', '... the response');
is($row->{status}, 200, '... status 200');
is($row->{rule}, 'shop type application/xml response', '... by the site\'s rule');
is($row->{body}, NotaryTest::read_file("$m->{docroot}/static/contract.xml"), '... with the body as relayed');
is(NotaryTest::hex_of($row->{sender_key}), NotaryTest::hex_of($t->spki_der($m->{key})),
   '... sent by the merchant\'s key');

# the system apache2's own error log: nothing at warn or above but the
# machine's missing ServerName (AH00558) and mod_ssl's OpenSSL version note (AH01882)
stop_apache2();
{
    my $log = -f "$sys/log/error.log" ? NotaryTest::read_file("$sys/log/error.log") : '';
    my @bad = grep { /^\[[^\]]+\] \[[^:\]]*:(?:warn|error|crit|alert|emerg)\]/ && !/\bAH0(?:0558|1882)\b/ }
              split /\n/, $log;
    ok(!@bad, 'apache2\'s error log: no line at warn or above') or diag join "\n", @bad;
}

finish();
