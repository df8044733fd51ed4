package NotaryTest::Ledger;
# A ledger of matched messages for fault tests: clients note, per request,
# whether the receiver got the message complete, byte for byte; afterwards
# the store is reconciled against it.
#
#   my $l = NotaryTest::Ledger->new($t, merchant => 'shop');   # before $t->start
#   $t->start(extra => $t->db_directive . $l->rules);
#   my $load = $l->start_load(clients => 8, seconds => 6, max_requests => 400,
#                             mix => ['get', 'post'], tag => 'fast');
#   ... break something ...
#   my $sum = $load->wait;                 # per-client ledgers merged
#   $l->reconcile(tag => 'fast');          # Test::More checks, returns counts
#
# Who the receiver is, and how we know it got the message whole:
# - a matched GET (response rule): the consumer is the receiver; the client
#   compares status 200, length and SHA-256 of the body with the document;
# - a matched POST (request rule): the merchant is the receiver; its sink
#   CGI reads the body, and only if it has all CONTENT_LENGTH bytes appends
#   "id length sha256" to a file of the merchant's own, which is the
#   ledger's truth for that direction (the consumer may never see the
#   answer, e.g. when a notary child is killed).
#
# Every request carries a unique id in its query (L=TAG-CLIENT-N) and the
# consumer's token (the notary removes it), so each row is found by its uri
# and admission never depends on a contract session surviving a restart.
#
# reconcile() checks, for every (request, direction) that matches a rule:
# - received whole => exactly one row, its body of the right length and
#   SHA-256 (and body_sha256 = SHA-256(body));
# - not received whole => no row, unless the test names the documented case
#   (allow_undelivered => 'reason'): the record is committed before the final
#   byte goes out, so a receiver can lose a message after its commit (a
#   child killed, a connection cut); such rows are counted and must still
#   be complete;
# - no row of this tag that the ledger does not know, no partial row, no
#   row for a direction that matches no rule.
#
# Also here: the harness features the fault tests need and NotaryTest.pm
# does not have (a graceful restart, the notary's children and their RSS).
use strict;
use warnings;
use Carp qw(croak);
use Digest::SHA;
use Fcntl qw(O_WRONLY O_APPEND O_CREAT);
use IO::Select;
use POSIX qw(_exit);
use Time::HiRes qw(time sleep);
use IO::Socket::SSL;
use NotaryTest;

our $RESP_KW = 'LEDGER-RESPONSE-TERMS';
our $REQ_KW = 'LEDGER-REQUEST-SIGNATURE';

sub new {
    my ($class, $t, %o) = @_;
    my $self = bless { t => $t, merchant => $o{merchant} || 'shop', docs => {} }, $class;
    my $m = $t->merchant($self->{merchant});
    # documents served by the merchant: name => bytes (all matched)
    my %sizes = (small => 6000, big => 2 * 1024 * 1024, %{ $o{sizes} || {} });
    for my $name (sort keys %sizes) {
        my $body = "<html><body><p>$RESP_KW ($name)</p>" . _pattern($sizes{$name}, $name);
        $body = substr($body, 0, $sizes{$name} - 1) . "\n";
        NotaryTest::write_file("$m->{docroot}/static/ledger-$name.html", $body);
        $self->{docs}{$name} = { body => $body, len => length $body,
                                 sha => Digest::SHA::sha256_hex($body) };
    }
    # the merchant's sink: notes a request body only when it has all of it
    my $sinklog = $t->dir . '/logs/ledger-sink.log';
    $self->{sinklog} = $sinklog;
    NotaryTest::write_file($t->dir . '/cgi/ledger-sink', <<"EOF", 0755);
#!/usr/bin/perl
use strict;
use Digest::SHA;
use Fcntl qw(O_WRONLY O_APPEND O_CREAT);
binmode STDIN; binmode STDOUT;
my \$want = \$ENV{CONTENT_LENGTH} // 0;
my \$sha = Digest::SHA->new(256);
my \$got = 0;
while (\$got < \$want) {
    my \$n = read(STDIN, my \$buf, 65536);
    last unless \$n;
    \$got += \$n;
    \$sha->add(\$buf);
}
my \$hex = \$sha->hexdigest;
my (\$id) = (\$ENV{QUERY_STRING} // '') =~ /(?:^|&)L=([^&]+)/;
if (\$got == \$want && defined \$id) {
    sysopen(my \$fh, '$sinklog', O_WRONLY | O_APPEND | O_CREAT, 0644) or die "sink log: \$!";
    syswrite(\$fh, "\$id \$got \$hex\\n");
    close \$fh;
}
print "Content-Type: text/plain\\r\\n\\r\\n";
print "sink got=\$got want=\$want sha=\$hex\\n";
EOF
    return $self;
}

sub _pattern {
    my ($n, $name) = @_;
    my $unit = join '', map { chr(32 + ($_ * 7 + length $name) % 90) } 0 .. 1023;
    return substr($unit x (int($n / 1024) + 2), 0, $n);
}

sub doc { $_[0]{docs}{$_[1]} or croak "no ledger document $_[1]" }

# The rules the ledger's traffic is matched by.
sub rules {
    my $self = shift;
    return "    NotaryRecord $self->{merchant} contains \"$RESP_KW\" response\n"
         . "    NotaryRecord $self->{merchant} contains \"$REQ_KW\" request\n";
}

# A request body of N bytes that matches the request rule (and whose
# merchant answer matches nothing).
sub post_body {
    my ($self, $n, $id) = @_;
    my $head = "$REQ_KW id=$id ";
    return $head . substr(_pattern($n, $id), 0, $n - length $head);
}

# ---------------------------------------------------------------- harness extras
sub notary_pidfile { $_[0]{t}->dir . '/run/notary/httpd.pid' }

sub notary_parent {
    my $self = shift;
    # the parent writes its pid file a moment after it listens
    my $deadline = time + 10;
    while (1) {
        if (open my $f, '<', $self->notary_pidfile) {
            my $p = <$f> // '';
            chomp $p;
            return $p if $p =~ /^\d+$/ && kill 0, $p;
        }
        croak "notary pid file: none within 10 s" if time > $deadline;
        sleep 0.1;
    }
}

# the notary's children (processes whose parent is the notary's httpd);
# $want: wait up to 15 s until there are that many (a parent just started
# or just lost a child forks it a moment later)
sub notary_children {
    my ($self, $want) = @_;
    my $deadline = time + 15;
    while (1) {
        my $pp = $self->notary_parent;
        my @k;
        for my $st (glob '/proc/[0-9]*/stat') {
            open my $f, '<', $st or next;
            my $l = <$f> // next;
            my ($pid, $ppid) = $l =~ /^(\d+) \(.*\) \S (\d+) /s or next;
            push @k, $pid if $ppid == $pp && $pid > 1;
        }
        return sort { $a <=> $b } @k if !$want || @k >= $want || time > $deadline;
        sleep 0.1;
    }
}

sub vm_kb {
    my ($pid, $field) = @_;
    open my $f, '<', "/proc/$pid/status" or return undef;
    # a lexical line: the caller's $_ may be the pid (for, map)
    while (my $line = <$f>) { return $1 if $line =~ /^\Q$field\E:\s+(\d+) kB/ }
    return undef;
}

# apachectl -k graceful on the notary (how => 'restart' for the hard
# restart a test may use to show its check fails); waits until a new
# generation serves
sub graceful {
    my ($self, %o) = @_;
    $self->{t}->graceful(signal => $o{how} || 'graceful');
    return 1;
}

# Error-log lines at warn or above, counted by number (AHnnnnn, NOTARYnnnnn)
# and level, in the notary's two logs and the merchants' (marked so)
sub log_numbers {
    my ($self, %o) = @_;
    my %n;
    for my $f (qw(error-notary.log notary-error.log error-merchants.log)) {
        my $who = $f eq 'error-merchants.log' ? 'merchants: ' : '';
        my $p = $self->{t}->dir . "/logs/$f";
        next unless -f $p;
        for (split /\n/, NotaryTest::read_file($p)) {
            my ($lvl) = /^\[[^\]]*\] \[[^:\]]*:(\w+)\]/ or next;
            next unless $lvl =~ /^(?:warn|error|crit|alert|emerg)$/;
            my ($num) = /\b((?:AH|NOTARY)\d{5}):/;
            $num //= 'unnumbered: ' . substr((/\] ([^\[\]]*)$/)[0] // $_, 0, 80);
            $n{"$who$num ($lvl)"}++;
        }
    }
    return \%n;
}

# ---------------------------------------------------------------- the client
# A minimal HTTP/1.1 client over TLS with alice's certificate, for loops:
# keeps its connection alive unless told, never resends a request.
sub _connect {
    my ($self) = @_;
    my $t = $self->{t};
    my ($c, $k) = $t->consumer('alice');
    return IO::Socket::SSL->new(PeerAddr => '127.0.0.1', PeerPort => $t->notary_port,
                                SSL_hostname => 'notary.test', SSL_ca_file => $t->ca,
                                SSL_cert_file => $c, SSL_key_file => $k, Timeout => 10);
}

# read exactly $n bytes (or to EOF when $n is undef) with a deadline;
# $pause: seconds to sleep after each piece (a slow reader)
sub _read_n {
    my ($s, $bufref, $n, $deadline, $pause, $sink) = @_;
    my $got = 0;
    my $sel = IO::Select->new($s);
    while (!defined $n || $got < $n) {
        if (length $$bufref) {
            my $take = defined $n ? ($n - $got < length $$bufref ? $n - $got : length $$bufref)
                                  : length $$bufref;
            $sink->(substr($$bufref, 0, $take, ''));
            $got += $take;
            next;
        }
        unless ($s->pending) {
            my $left = $deadline - time;
            return ($got, 'timeout') if $left <= 0;
            $sel->can_read($left > 1 ? 1 : $left) or next;
        }
        my $r = sysread($s, $$bufref, 65536);
        if (!defined $r) {
            next if $!{EAGAIN} || $!{EINTR};
            return ($got, "read: $!");
        }
        return ($got, defined $n ? 'eof' : undef) if $r == 0;
        sleep $pause if $pause;
    }
    return ($got, undef);
}

sub _read_line {
    my ($s, $bufref, $deadline) = @_;
    my $sel = IO::Select->new($s);
    while ($$bufref !~ /\n/) {
        unless ($s->pending) {
            return (undef, 'timeout') if time > $deadline;
            $sel->can_read(1) or next;
        }
        my $r = sysread($s, $$bufref, 65536, length $$bufref);
        if (!defined $r) { next if $!{EAGAIN} || $!{EINTR}; return (undef, "read: $!") }
        return (undef, 'eof') if $r == 0;
    }
    $$bufref =~ s/^([^\n]*\n)// or die;
    return ($1, undef);
}

# One request on $conn (a hashref {s, buf, n}); returns a result hashref:
# {status, len, sha, whole_body(bytes read as framed), err, reused}
sub http {
    my ($self, $conn, %o) = @_;
    my $deadline = time + ($o{timeout} || 60);
    my $res = { status => 0, len => 0, err => undef, reused => $conn->{n} ? 1 : 0 };
    my $s = $conn->{s};
    my $head = "$o{method} $o{path} HTTP/1.1\r\nHost: notary.test\r\n";
    $head .= "Connection: close\r\n" if $o{close};
    if (defined $o{body}) {
        $head .= "Content-Type: application/octet-stream\r\nContent-Length: "
               . length($o{body}) . "\r\n";
    }
    $head .= "\r\n";
    my $out = $head . ($o{body} // '');
    my $piece = $o{write_piece} || length $out;
    for (my $off = 0; $off < length $out; $off += $piece) {
        my $chunk = substr($out, $off, $piece);
        while (length $chunk) {
            my $w = syswrite($s, $chunk);
            if (!defined $w) {
                next if $!{EAGAIN} || $!{EINTR};
                $res->{err} = "write: $!";
                return $res;
            }
            substr($chunk, 0, $w, '');
        }
        sleep $o{write_pause} if $o{write_pause} && $off + $piece < length $out;
    }
    $conn->{n}++;
    my ($line, $err) = _read_line($s, \$conn->{buf}, $deadline);
    if (!defined $line) { $res->{err} = "status line: $err"; return $res }
    ($res->{status}) = $line =~ m{^HTTP/1\.\d (\d{3})} or do { $res->{err} = "bad status line '$line'"; return $res };
    my %h;
    while (1) {
        ($line, $err) = _read_line($s, \$conn->{buf}, $deadline);
        if (!defined $line) { $res->{err} = "headers: $err"; return $res }
        last if $line =~ /^\r?\n$/;
        $h{lc $1} = $2 if $line =~ /^([^:]+):\s*(.*?)\r?\n$/;
    }
    $res->{headers} = \%h;
    my $sha = Digest::SHA->new(256);
    my $keep = $o{keep_body} ? \(my $kept = '') : undef;
    my $sink = sub { $sha->add($_[0]); $res->{len} += length $_[0]; $$keep .= $_[0] if $keep };
    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        while (1) {
            ($line, $err) = _read_line($s, \$conn->{buf}, $deadline);
            if (!defined $line) { $res->{err} = "chunk size: $err"; last }
            my ($size) = $line =~ /^([0-9a-fA-F]+)/ or do { $res->{err} = "bad chunk line"; last };
            $size = hex $size;
            if ($size == 0) {
                # trailer section up to the blank line
                while (1) {
                    ($line, $err) = _read_line($s, \$conn->{buf}, $deadline);
                    if (!defined $line) { $res->{err} = "trailer: $err"; last }
                    last if $line =~ /^\r?\n$/;
                }
                last;
            }
            my ($got, $e) = _read_n($s, \$conn->{buf}, $size, $deadline, $o{read_pause}, $sink);
            if ($e) { $res->{err} = "chunk body: $e"; last }
            ($line, $err) = _read_line($s, \$conn->{buf}, $deadline);
            if (!defined $line) { $res->{err} = "chunk end: $err"; last }
        }
    }
    elsif (defined $h{'content-length'}) {
        my ($got, $e) = _read_n($s, \$conn->{buf}, $h{'content-length'}, $deadline, $o{read_pause}, $sink);
        $res->{err} = "body: $e after $got of $h{'content-length'} bytes" if $e;
    }
    elsif ($o{method} ne 'HEAD' && $res->{status} >= 200 && $res->{status} != 204 && $res->{status} != 304) {
        my ($got, $e) = _read_n($s, \$conn->{buf}, undef, $deadline, $o{read_pause}, $sink);
        $res->{err} = "body to close: $e" if $e;
        $res->{closed} = 1;
    }
    $res->{sha} = $sha->hexdigest;
    $res->{body} = $$keep if $keep;
    $res->{closed} = 1 if ($h{connection} // '') =~ /close/i || $o{close};
    return $res;
}

# ---------------------------------------------------------------- load
# Forks `clients` processes; each loops on matched requests (mix of 'get',
# 'post', 'bigget', 'bigpost') until `seconds` pass, it made `max_requests`
# or the test calls $load->stop; one ledger line per request in its own
# file.
sub start_load {
    my ($self, %o) = @_;
    my $t = $self->{t};
    my $tag = $o{tag} or croak 'start_load: tag';
    my $tok = $self->{token} ||= $t->link_token(merchant => $self->{merchant}, consumer => 'alice');
    my @pids;
    my @files;
    my $stop = $t->dir . "/ledger-$tag.stop";
    unlink $stop;
    my $t_start = time;
    for my $k (1 .. ($o{clients} || 8)) {
        my $file = $t->dir . "/ledger-$tag-$k.log";
        push @files, $file;
        my $pid = fork // croak "fork: $!";
        if (!$pid) {
            my $rc = eval { $self->_client_loop($file, $tag, $k, $tok, %o, stopfile => $stop); 0 } // do {
                warn "ledger client $k: $@"; 1 };
            _exit($rc);
        }
        push @pids, $pid;
    }
    return NotaryTest::Ledger::Load->new(ledger => $self, pids => \@pids, files => \@files,
                                         tag => $tag, t0 => $t_start, stopfile => $stop);
}

sub _client_loop {
    my ($self, $file, $tag, $k, $tok, %o) = @_;
    # a write to a connection whose child was killed fails with EPIPE; the
    # signal would end the client silently
    local $SIG{PIPE} = 'IGNORE';
    sysopen(my $log, $file, O_WRONLY | O_APPEND | O_CREAT, 0644) or die "$file: $!";
    my $deadline = time + ($o{seconds} || 5);
    my $max = $o{max_requests} || 1000;
    my @mix = @{ $o{mix} || ['get', 'post'] };
    my $conn;
    srand($$);
    for my $n (1 .. $max) {
        last if time > $deadline || -e $o{stopfile};
        my $kind = $mix[($n + $k) % @mix];
        my $id = "$tag-$k-$n";
        if (!$conn || $o{close}) {
            my $s = $self->_connect;
            if (!$s) {
                my $e = IO::Socket::SSL::errstr() || $!;
                syswrite($log, join("\t", $id, $kind, '', '', '', '', 0, 0, '', sprintf('%.3f', time), "connect: $e") . "\n");
                sleep 0.2;
                next;
            }
            $conn = { s => $s, buf => '', n => 0 };
        }
        my ($uri, %req, $dir, $doc);
        if ($kind =~ /get$/) {
            $doc = $kind eq 'bigget' ? $self->doc('big') : $self->doc('small');
            my $name = $kind eq 'bigget' ? 'big' : 'small';
            $uri = "/static/ledger-$name.html?L=$id";
            %req = (method => 'GET');
            $dir = 'response';
        }
        else {
            my $body = $self->post_body($kind eq 'bigpost' ? 2 * 1024 * 1024 : 3000, $id);
            $doc = { len => length $body, sha => Digest::SHA::sha256_hex($body) };
            $uri = "/cgi/ledger-sink?L=$id";
            %req = (method => 'POST', body => $body,
                    $o{write_pause} ? (write_piece => 65536, write_pause => $o{write_pause}) : ());
            $dir = 'request';
        }
        my $t0 = time;
        my $r = $self->http($conn, %req, path => "/$self->{merchant}$uri&notary_token=$tok",
                            close => $o{close}, read_pause => $o{read_pause}, timeout => $o{timeout} || 60);
        # what the consumer saw as whole (for a GET: the message itself)
        my $whole = !$r->{err} && $r->{status} == 200
            && ($dir eq 'request' || ($r->{len} == $doc->{len} && $r->{sha} eq $doc->{sha})) ? 1 : 0;
        syswrite($log, join("\t", $id, $kind, $dir, $uri, $doc->{len}, $doc->{sha}, $r->{status},
                            $r->{len}, $r->{sha} // '', sprintf('%.3f', $t0), $r->{err} // ($whole ? '' : 'incomplete'),
                            $whole, sprintf('%.3f', time)) . "\n");
        if ($r->{err} || $r->{closed}) {
            close $conn->{s};
            undef $conn;
        }
    }
    close $conn->{s} if $conn;
}

# Poll the clients' ledgers until $n messages of a tag were received whole
# (those started after `since`, if given), at most $secs seconds; returns
# whether they were.
sub wait_whole {
    my ($self, $tag, $n, $secs, %o) = @_;
    my $deadline = time + $secs;
    while (1) {
        my $e = $self->entries($tag);
        my $got = grep { $_->{status} == 200 && ($_->{dir} eq 'request' || $_->{client_whole})
                         && (!$o{since} || $_->{t0} > $o{since}) } values %$e;
        return 1 if $got >= $n;
        return 0 if time > $deadline;
        sleep 0.1;
    }
}

# The ledger lines of a tag: id => {...}
sub entries {
    my ($self, $tag) = @_;
    local $_;
    my %e;
    for my $f (glob $self->{t}->dir . "/ledger-$tag-*.log") {
        open my $fh, '<', $f or die "$f: $!";
        while (<$fh>) {
            chomp;
            my @f = split /\t/, $_, -1;
            my %x;
            @x{qw(id kind dir uri len sha status got_len got_sha t0 err client_whole t1)} = @f;
            $e{$x{id}} = \%x;
        }
    }
    return \%e;
}

sub sink_entries {
    my $self = shift;
    local $_;
    my %s;
    return \%s unless -f $self->{sinklog};
    open my $fh, '<', $self->{sinklog} or die;
    while (<$fh>) {
        my ($id, $len, $sha) = split;
        push @{ $s{$id} }, { len => $len, sha => $sha };
    }
    return \%s;
}

# Reconcile the store with the ledger of a tag (see the top of the file).
# %o: allow_undelivered => reason; returns counts.
sub reconcile {
    my ($self, %o) = @_;
    my $tag = $o{tag} or croak 'reconcile: tag';
    require Test::More;
    my $tb = Test::More->builder;
    my $t = $self->{t};
    my $e = $self->entries($tag);
    my $sink = $self->sink_entries;
    my $dbh = $t->pg->dbh(user => 'auditor');
    my $rows = $dbh->selectall_arrayref(
        "SELECT id, uri, direction, length(body) AS len, encode(body_sha256, 'hex') AS sha, "
      . "encode(sha256(body), 'hex') AS real_sha, exchange_id FROM notary_records "
      . "WHERE uri LIKE ? ORDER BY id", { Slice => {} }, "%L=$tag-%");
    $dbh->disconnect;
    my %rows;
    my @stray;
    for my $r (@$rows) {
        my ($id) = $r->{uri} =~ /[?&]L=([^&]+)/;
        if (!defined $id || !$e->{$id}) { push @stray, "$r->{direction} row $r->{id} for $r->{uri}"; next }
        push @{ $rows{$id}{ $r->{direction} } }, $r;
    }
    my (%c, @missing, @partial, @dup, @undelivered, @wrongdir);
    for my $id (sort keys %$e) {
        my $x = $e->{$id};
        $c{requests}++;
        next unless $x->{dir};      # never connected: nothing sent
        my $whole;
        if ($x->{dir} eq 'request') {
            # the merchant's own note: it read every byte, and they are ours
            my @s = @{ $sink->{$id} || [] };
            $whole = grep { $_->{len} == $x->{len} && $_->{sha} eq $x->{sha} } @s;
            push @partial, "$id: the merchant got a different body (@{[ map { qq{$_->{len}/$_->{sha}} } @s ]})"
                if @s && !$whole;
            push @dup, "$id: the merchant got the request " . scalar(@s) . " times" if @s > 1;
        }
        else {
            $whole = $x->{client_whole};
        }
        $c{whole}++ if $whole;
        $c{not_whole}++ unless $whole;
        my $other = $x->{dir} eq 'request' ? 'response' : 'request';
        push @wrongdir, "$id: a $other row (no rule matches that direction)" if $rows{$id}{$other};
        my @r = @{ $rows{$id}{ $x->{dir} } || [] };
        $c{rows} += @r;
        push @dup, "$id: " . scalar(@r) . " $x->{dir} rows" if @r > 1;
        for my $r (@r) {
            push @partial, "$id: row $r->{id} has $r->{len} bytes sha $r->{sha}, the message $x->{len} bytes sha $x->{sha}"
                if $r->{len} != $x->{len} || $r->{sha} ne $x->{sha};
            push @partial, "$id: row $r->{id} body_sha256 is not the SHA-256 of its body"
                if $r->{sha} ne $r->{real_sha};
        }
        if ($whole && !@r) {
            push @missing, "$id ($x->{kind}): received whole (status $x->{status}), no row";
        }
        if (!$whole && @r) {
            push @undelivered, "$id ($x->{kind}): a row, but the receiver did not get it whole "
                . "(status $x->{status}, $x->{got_len} of $x->{len} bytes: $x->{err})";
        }
    }
    $c{undelivered_recorded} = @undelivered;
    my $name = $o{name} || $tag;
    $tb->ok($c{requests} > 0 && !@missing, "$name: every matched message received whole has its row "
            . "($c{whole} whole of $c{requests})")
        or $tb->diag(join "\n", @missing[0 .. ($#missing > 19 ? 19 : $#missing)]);
    $tb->ok(!@partial, "$name: no partial row (lengths and SHA-256 of every row = the message's)")
        or $tb->diag(join "\n", @partial);
    $tb->ok(!@dup, "$name: no message recorded or received twice") or $tb->diag(join "\n", @dup);
    $tb->ok(!@stray && !@wrongdir, "$name: no row the ledger does not know") or $tb->diag(join "\n", @stray, @wrongdir);
    if ($o{allow_undelivered}) {
        $tb->ok(1, "$name: rows of messages not received whole: " . scalar(@undelivered)
                . " (allowed: $o{allow_undelivered})");
        $tb->diag(join "\n", @undelivered) if @undelivered;
    }
    else {
        $tb->ok(!@undelivered, "$name: no row for a message its receiver did not get whole")
            or $tb->diag(join "\n", @undelivered);
    }
    $c{missing} = @missing;
    $c{partial} = @partial;
    $c{failed} = scalar grep { !($_->{dir} eq 'response' ? $_->{client_whole} : $_->{status} == 200) } values %$e;
    $self->{undelivered}{$tag} = \@undelivered;
    return \%c;
}

package NotaryTest::Ledger::Load;
use Time::HiRes qw(time);
sub new { my ($c, %o) = @_; bless {%o}, $c }
sub pids { @{ $_[0]{pids} } }
# ask the clients to stop after their current request
sub stop {
    my $self = shift;
    open my $f, '>', $self->{stopfile} or die "$self->{stopfile}: $!";
    close $f;
    return $self;
}
sub wait {
    my $self = shift;
    my $bad = 0;
    for (@{ $self->{pids} }) { waitpid($_, 0); $bad++ if $? }
    $self->{elapsed} = time - $self->{t0};
    $self->{client_errors} = $bad;
    return $self;
}
sub elapsed { $_[0]{elapsed} }

1;
