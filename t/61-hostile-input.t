# Hostile input: every case answered with a clear status and an error-log
# line, bounded in memory and time, nothing recorded in part, and the
# notary's children alive afterwards (their PIDs unchanged, no child exit
# in the log).
#
# - slow clients trickling headers and bodies, under mod_reqtimeout
#   (the test's settings are the README's recommendation scaled down:
#   recommended  RequestReadTimeout header=20-40,MinRate=500 body=20,MinRate=500
#   here         RequestReadTimeout header=4-8,MinRate=500 body=4,MinRate=500);
# - request smuggling: Content-Length with Transfer-Encoding, two
#   Content-Lengths, Transfer-Encoding: chunked, identity, obs-folded and
#   bare-LF framing headers -- each followed by a second request on the same
#   connection (or, when the notary closed it, on a new one): the merchant's
#   pooled connection answers it with its own page (not desynchronised), and
#   no smuggled request reaches the merchant's access log;
# - a 64 KiB token, 10,000 query arguments (at httpd's default request-line
#   limit, then with the limit raised so the notary's own parsers see them),
#   %00 and invalid UTF-8 in path and query, a token whose JSON nests 10,000
#   levels (and one nested as deep as the token size limit allows);
# - a 1 GiB unmatched upload, generated on the fly, streamed through.
use strict;
use warnings;
use Test::More;
use Digest::SHA;
use IO::Select;
use MIME::Base64 qw(encode_base64url);
use Time::HiRes qw(time sleep);
use NotaryTest;
use NotaryTest::Ledger;

my $T0 = time;
my $t = NotaryTest->new(allow_log => [qw(NOTARY02008 AH01095)]);
my $m = $t->add_merchant('shop', 'ec256', extra => "    LimitRequestLine 200000\n");
my $l = NotaryTest::Ledger->new($t, merchant => 'shop');
my $REQ_KW = $NotaryTest::Ledger::REQ_KW;
my $reqtimeout = "LoadModule reqtimeout_module $NotaryTest::MODDIR/mod_reqtimeout.so\n"
               . "RequestReadTimeout header=4-8,MinRate=500 body=4,MinRate=500\n";
my %conf = (loglevel => "info core:debug http:debug", global => $reqtimeout, extra => $t->db_directive(timeout => 5) . $l->rules);
$t->start(%conf);

my $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$tok", consumer => 'alice');
is($r->{status}, 200, 'alice admitted (a contract session for the raw requests below)');

my @kids0 = $l->notary_children(2);
sub children_alive {
    my ($what) = @_;
    my @now = $l->notary_children(scalar @kids0);
    my $log = NotaryTest::read_file($t->dir . '/logs/error-notary.log');
    my @exits = $log =~ /(AH00052: child pid \d+ exit signal [^\n]*)/g;
    ok("@now" eq "@kids0" && !@exits, "$what: the notary's children are alive (pids @now)")
        or diag "before: @kids0, now: @now; @exits";
}

sub log_mark { length $t->error_log }
sub log_since { substr($t->error_log, $_[0]) }
sub hits { my @h = $t->backend_hits('shop'); \@h }

# Write $bytes on a fresh TLS connection (optionally trickled), read until
# the server closes or $o{wait} seconds pass; returns the raw answer and how
# long it took.
sub raw_exchange {
    my ($bytes, %o) = @_;
    my $s = $t->tls_connect;
    my $t0 = time;
    my $deadline = $t0 + ($o{wait} || 10);
    my $sel = IO::Select->new($s);
    my $in = '';
    my $closed = 0;
    my $read = sub {
        my $r = sysread($s, $in, 65536, length $in);
        $closed = 1 if defined $r && $r == 0;
        $closed = 1 if !defined $r && !$!{EAGAIN} && !$!{EINTR};
    };
    if ($o{trickle}) {
        # the first part at once, then a byte every $o{trickle} s
        my ($head, $rest) = @$bytes;
        print $s $head;
        for my $c (split //, $rest) {
            last if time > $deadline;
            last unless defined syswrite($s, $c);
            my $until = time + $o{trickle};
            while (!$closed && time < $until) {
                $read->() if $s->pending || $sel->can_read($until - time);
            }
            last if $closed || length $in;
        }
    }
    else {
        print $s $bytes;
    }
    while (!$closed && time < $deadline) {
        $read->() if $s->pending || $sel->can_read($deadline - time > 0.5 ? 0.5 : $deadline - time);
    }
    close $s;
    return ($in, time - $t0, $closed);
}

# Split a buffer of pipelined responses into [status, headers, body]
sub parse_responses {
    my ($buf) = @_;
    my @r;
    while ($buf =~ s{\AHTTP/1\.\d (\d{3})[^\r\n]*\r\n((?:[^\r\n]+\r\n)*)\r\n}{}) {
        my ($st, $hb) = ($1, $2);
        my %h = map { /^([^:]+):\s*(.*)$/ ? (lc $1 => $2) : () } split /\r\n/, $hb;
        my $body = '';
        if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
            while ($buf =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r\n//) {
                my $n = hex $1;
                if (!$n) { $buf =~ s/\A(?:[^\r\n]+\r\n)*\r\n//; last }
                $body .= substr($buf, 0, $n, '');
                $buf =~ s/\A\r\n//;
            }
        }
        elsif (defined $h{'content-length'}) {
            $body = substr($buf, 0, $h{'content-length'}, '');
        }
        push @r, { status => $st + 0, headers => \%h, body => $body } unless $st =~ /^1/;
    }
    return @r;
}

# ---------------------------------------------------------------- slow clients
{
    my $mark = log_mark();
    my $before = hits();
    my $kid = fork // die;
    if (!$kid) {
        # a normal client meanwhile
        sleep 1;
        my $r = $t->request(path => '/shop/static/hello.txt?during=trickle', consumer => 'alice', timeout => 5);
        POSIX::_exit($r->{status} == 200 ? 0 : 1);
    }
    my ($in, $took) = raw_exchange(["GET /shop/static/hello.txt?slow=header HTTP/1.1\r\nHost: notary.test\r\n",
                                    "X-Slow: " . ('a' x 60) . "\r\n\r\n"], trickle => 0.5, wait => 20);
    waitpid($kid, 0);
    is($?, 0, 'slow headers: a normal client is served meanwhile');
    my ($res) = parse_responses($in);
    ok($res && $res->{status} == 408 && $took < 12,
       sprintf('a client trickling its header block (a byte each 0.5 s) gets 408 after the header timeout (status %s, %.1f s)',
               $res ? $res->{status} : 'none', $took));
    like(log_since($mark), qr/AH01382: Request header read timeout/, '... and the error log says so (AH01382)');
    ok(!grep({ /slow=header/ } @{ hits() }[@$before .. $#{ hits() }]), '... nothing reached the merchant');
    children_alive('slow headers');

    # a matched POST whose body trickles in
    $mark = log_mark();
    my $id = 'slowbody';
    my $body = "$REQ_KW " . ('b' x 400);
    ($in, $took) = raw_exchange(["POST /shop/cgi/ledger-sink?L=$id HTTP/1.1\r\nHost: notary.test\r\n"
                                 . "Content-Type: text/plain\r\nContent-Length: " . (length($body) + 100) . "\r\n\r\n$body",
                                 'c' x 100], trickle => 0.5, wait => 25);
    ($res) = parse_responses($in);
    ok($res && $res->{status} == 408 && $took < 12,
       sprintf('a matched POST whose body trickles in gets 408 after the body timeout (status %s, %.1f s)',
               $res ? $res->{status} : 'none', $took)) or diag $in;
    like(log_since($mark), qr/AH01382: Request body read timeout/, '... and the error log says so (AH01382)');
    sleep 0.3;
    ok(!grep({ /L=$id HTTP\/1.1" 200/ } @{ hits() }), '... the merchant never answered it as complete');
    is(scalar($t->records("uri LIKE ?", "%L=$id%")), 0, '... and nothing is recorded');
    children_alive('slow body');
}

# ---------------------------------------------------------------- smuggling
my $follow_n = 0;
sub smuggle_case {
    my ($name, $head, $body, %o) = @_;
    my $id = "sm$name";
    $id =~ s/\W//g;
    my $smuggled = "GET /static/smuggled-$id.txt HTTP/1.1\r\nHost: localhost\r\n\r\n";
    $body =~ s/SMUGGLED/$smuggled/;
    my $follow = "GET /shop/static/hello.txt?follow=$id HTTP/1.1\r\nHost: notary.test\r\nConnection: close\r\n\r\n";
    my $mark = log_mark();
    my $nhits = @{ hits() };
    (my $req = $head) =~ s/ID/$id/g;
    my ($in, $took) = raw_exchange($req . $body . $follow, wait => 10);
    my @res = parse_responses($in);
    my $first = $res[0];
    my $same_conn = @res >= 2;
    # the follow-up's answer is the last; between them only the notary's
    # own refusal of the hidden request, if the notary took the bytes after
    # a body as the consumer's next request (to no merchant: /static/...)
    my $second = $res[-1];
    my @middle = @res[1 .. $#res - 1];
    ok(!grep({ !($_->{status} == 404 && $_->{body} =~ /no merchant 'static'/) } @middle),
       "$name: nothing answered between the two but the notary's own 404 for the hidden request ("
       . scalar(@middle) . ')') or diag "raw:\n$in";
    if (!$same_conn) {
        # the notary closed the connection after refusing: a new one
        my $r = $t->request(path => "/shop/static/hello.txt?follow=$id", consumer => 'alice');
        $second = { status => $r->{status}, body => $r->{body} };
    }
    my $st = $first ? $first->{status} : 'none';
    ok($first && ($o{ok} ? $o{ok}->($first) : $first->{status} == 400),
       "$name: answered $st" . ($o{ok} ? '' : ' (400)') . sprintf(' in %.1f s', $took))
        or diag "raw answer:\n$in";
    if ($first && $first->{status} >= 400) {
        like(log_since($mark), qr/\[(?:core|http|http1|proxy|proxy_http|notary):\w+\] .*(?:AH|NOTARY)\d{5}:/,
             "$name: ... with an error-log line")
            or diag log_since($mark);
    }
    ok($second && $second->{status} == 200 && $second->{body} eq "hello from shop\n",
       "$name: the next request " . ($same_conn ? 'on the same connection' : 'on a new connection (the notary closed the first)')
       . ' gets its own page: the merchant connection is in step')
        or diag "second: " . ($second ? "$second->{status} '$second->{body}'" : 'none') . "\nraw:\n$in";
    sleep 0.3;
    my @h = @{ hits() };
    my @new = @h[$nhits .. $#h];
    ok(!grep({ /smuggled/ } @h), "$name: no smuggled request reached the merchant")
        or diag @new;
    my @unexpected = grep { !/follow=$id / && !/L=$id / } @new;
    ok(!@unexpected, "$name: the merchant saw only the expected requests (" . scalar(@new) . ')')
        or diag @new;
    # nothing recorded in part: a row only for a body the merchant got whole
    my $sink = $l->sink_entries->{$id} || [];
    my @rows = $t->records("uri LIKE ?", "%L=$id%");
    ok(!grep({ my $r = $_; !grep { $_->{len} == length($r->{body}) } @$sink } @rows),
       "$name: no row except for a body the merchant got whole (" . scalar(@rows) . ' rows)');
    return $first;
}

my $hb = "POST /shop/cgi/ledger-sink?L=ID HTTP/1.1\r\nHost: notary.test\r\nContent-Type: text/plain\r\n";
my $chunked_smuggle = sub { my $p = "$REQ_KW x"; sprintf("%x\r\n%s\r\n0\r\n\r\nSMUGGLED", length $p, $p) };
{
    my $b = $chunked_smuggle->();
    my $len = length($b) + length("GET /static/smuggled-smCLTE.txt HTTP/1.1\r\nHost: localhost\r\n\r\n") - length('SMUGGLED');
    # httpd takes Transfer-Encoding over Content-Length and closes the
    # connection after the answer (RFC 9112 6.3); the bytes after the
    # last chunk are never a request
    smuggle_case('CL.TE', $hb . "Content-Length: $len\r\nTransfer-Encoding: chunked\r\n\r\n", $b,
                 ok => sub { $_[0]{status} == 400 || $_[0]{status} == 200 });
    smuggle_case('TE.CL', $hb . "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", $chunked_smuggle->(),
                 ok => sub { $_[0]{status} == 400 || $_[0]{status} == 200 });
}
smuggle_case('two Content-Length', $hb . "Content-Length: 5\r\nContent-Length: 70\r\n\r\n", "$REQ_KW SMUGGLED");
smuggle_case('TE chunked, identity', $hb . "Transfer-Encoding: chunked, identity\r\n\r\n", $chunked_smuggle->(),
             ok => sub { $_[0]{status} == 400 || $_[0]{status} == 501 });
smuggle_case('obs-fold TE', $hb . "Content-Length: 5\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\n", $chunked_smuggle->());
smuggle_case('obs-fold CL', $hb . "Content-Length: 5\r\n 0\r\n\r\n", "$REQ_KW SMUGGLED");
smuggle_case('space before colon', $hb . "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n", $chunked_smuggle->());
{
    (my $lf = $hb) =~ s/\r\n/\n/g;
    smuggle_case('bare LF headers', $lf . "Content-Length: 5\nTransfer-Encoding: chunked\n\n", $chunked_smuggle->(),
                 ok => sub { $_[0]{status} == 400 || $_[0]{status} == 200 });
    # bare LF inside the chunk framing
    my $p = "$REQ_KW y";
    smuggle_case('bare LF chunks', $hb . "Transfer-Encoding: chunked\r\n\r\n",
                 sprintf("%x\n%s\n0\n\nSMUGGLED", length $p, $p));
}
children_alive('smuggling');

# ---------------------------------------------------------------- big and odd inputs
my $big_tok = 'eyJhbGciOiJFUzI1NiJ9.' . ('A' x 65536) . '.AAAA';
my $args = join '&', map { "a$_=$_" } 1 .. 10000;
{
    my $mark = log_mark();
    my $r = $t->request(path => "/shop/static/hello.txt?notary_token=$big_tok", consumer => 'alice');
    is($r->{status}, 414, 'a 64 KiB token at the default request-line limit: 414 from httpd');
    $r = $t->request(path => "/shop/echo?$args", consumer => 'alice');
    is($r->{status}, 414, '10,000 query arguments at the default limit: 414');
    like(log_since($mark), qr/AH00565: request failed: client's request-line exceeds LimitRequestLine/, '... with the error-log line AH00565');
    children_alive('long request lines');
}

# the notary vhost's request-line limit raised: the notary's own parsers see them
$t->restart(%conf, extra => $conf{extra} . "    LimitRequestLine 200000\n");
@kids0 = $l->notary_children(2);
{
    my $mark = log_mark();
    $t->refused_ok('a 64 KiB token: 403, token too large',
                   request => { path => "/shop/static/hello.txt?notary_token=$big_tok", consumer => 'alice' },
                   status => 403, reason => qr/token too large/, lognum => '02008');

    $tok = $t->link_token(merchant => 'shop', consumer => 'alice');
    my $r = $t->request(path => "/shop/echo?$args&notary_token=$tok", consumer => 'alice');
    is($r->{status}, 200, '10,000 query arguments with a token: relayed');
    my ($q) = $r->{body} =~ /^query: (.*)$/m;
    ok(defined $q && $q eq $args, '... the merchant gets all 10,000, in order, the token removed')
        or diag 'got ' . length($q // '') . ' bytes of query';

    # %00 and invalid UTF-8
    for my $c (['%00 in the path', '/shop/static/hello%00.txt', [400, 404]],
               ['invalid UTF-8 (%ff%fe) in the path', '/shop/static/%ff%fe.txt', [404]],
               ['%00 in the query', '/shop/echo?a=%00b&c=1', [200]],
               ['invalid UTF-8 (%c3%28, %ff) in the query', '/shop/echo?a=%c3%28&b=%ff', [200]]) {
        my ($name, $path, $want) = @$c;
        my $nh = @{ hits() };
        my $r = $t->request(path => $path, consumer => 'alice');
        ok(scalar(grep { $_ == $r->{status} } @$want), "$name: $r->{status}") or diag $r->{body};
        if ($r->{status} == 200) {
            (my $q = $path) =~ s/^[^?]*\?//;
            like($r->{body}, qr/^query: \Q$q\E$/m, "$name: ... relayed unchanged");
        }
    }
    # raw bytes: not percent-encoded
    for my $c (['raw invalid UTF-8 in the path', "/shop/static/\xff\xfe.txt"],
               ['raw invalid UTF-8 in the query', "/shop/echo?a=\xc3\x28\xff"],
               ['a raw NUL in the request line', "/shop/echo?a=\x00b"]) {
        my ($name, $path) = @$c;
        my $mk = log_mark();
        my ($in, $took) = raw_exchange("GET $path HTTP/1.1\r\nHost: notary.test\r\nConnection: close\r\n\r\n");
        my ($res) = parse_responses($in);
        my $st = $res ? $res->{status} : 'none';
        ok($res && ($res->{status} == 400 || $res->{status} == 404 || $res->{status} == 200),
           "$name: a clear answer ($st)") or diag $in;
        like(log_since($mk), qr/(?:AH|NOTARY)\d{5}:/, "$name: ... with an error-log line")
            if $res && $res->{status} >= 400;
    }

    # a token whose JSON nests 10,000 levels, and one as deep as fits
    my $hdr = encode_base64url('{"alg":"ES256","typ":"notary+jwt"}');
    my $deep = encode_base64url('{"aud":' . ('[' x 10000) . (']' x 10000) . '}');
    $t->refused_ok('a token whose JSON nests 10,000 levels: 403 (too large)',
                   request => { path => "/shop/static/hello.txt?notary_token=$hdr.$deep.AAAA", consumer => 'alice' },
                   status => 403, reason => qr/token/, lognum => '02008');
    my $n = int((4096 - length($hdr) - 10) * 3 / 4 / 2) - 10;
    my $fits = encode_base64url('{"aud":' . ('[' x $n) . (']' x $n) . '}');
    $t->refused_ok("a token whose JSON nests $n levels (as deep as the size limit allows): 403",
                   request => { path => "/shop/static/hello.txt?notary_token=$hdr.$fits.AAAA", consumer => 'alice' },
                   status => 403, reason => qr/token/, lognum => '02008');
    $fits = encode_base64url(('[' x $n) . (']' x $n));
    $t->refused_ok("a token whose header nests $n levels: 403",
                   request => { path => "/shop/static/hello.txt?notary_token=$fits.$deep.AAAA", consumer => 'alice' },
                   status => 403, reason => qr/token/, lognum => '02008');
    children_alive('odd inputs');
}

# ---------------------------------------------------------------- 1 GiB unmatched upload
{
    my $size = 1024 * 1024 * 1024;      # httpd's default LimitRequestBody is 1 GiB
    my $id = 'gib';
    my $block = join '', map { chr(($_ * 31) % 251) } 0 .. 65535;   # never the keyword
    my $s = $t->tls_connect;
    print $s "POST /shop/cgi/ledger-sink?L=$id HTTP/1.1\r\nHost: notary.test\r\n"
           . "Content-Type: application/octet-stream\r\nContent-Length: $size\r\nConnection: close\r\n\r\n";
    my %base;
    $base{$_} = NotaryTest::Ledger::vm_kb($_, 'VmRSS') // 0 for $l->notary_children(2);
    my %peak = %base;
    my $sha = Digest::SHA->new(256);
    my $t0 = time;
    my $deadline = $t0 + 300;
    my $sent = 0;
    my $err;
    while ($sent < $size) {
        if (time > $deadline) { $err = 'not sent within 300 s'; last }
        my $w = syswrite($s, $block);
        if (!defined $w) { next if $!{EAGAIN} || $!{EINTR}; $err = "write: $!"; last }
        $sha->add(substr($block, 0, $w));
        $sent += $w;
        if ($w < length $block) {
            # keep the stream periodic: send the block's rest next
            my $rest = substr($block, $w);
            while (length $rest) {
                my $w2 = syswrite($s, $rest);
                if (!defined $w2) { next if $!{EAGAIN} || $!{EINTR}; $err = "write: $!"; last }
                $sha->add(substr($rest, 0, $w2, ''));
                $sent += $w2;
            }
            last if $err;
        }
        if ($sent % (64 * 1024 * 1024) == 0) {
            for my $k (keys %peak) {
                my $v = NotaryTest::Ledger::vm_kb($k, 'VmRSS') // 0;
                $peak{$k} = $v if $v > $peak{$k};
            }
        }
    }
    my $sent_time = time - $t0;
    my $in = '';
    my $sel = IO::Select->new($s);
    while (time < $deadline) {
        last unless $s->pending || $sel->can_read(1);
        my $r = sysread($s, $in, 65536, length $in);
        last unless $r;
    }
    close $s;
    my ($res) = parse_responses($in);
    my $took = time - $t0;
    my $hex = $sha->hexdigest;
    ok(!$err && $res && $res->{status} == 200 && $res->{body} =~ /got=$size want=$size sha=$hex/,
       sprintf('a 1 GiB unmatched upload reaches the merchant whole (%.0f s: %.0f MB/s)', $took, $size / $took / 1e6))
        or diag "sent $sent: " . ($err // '') . "\n$in";
    ok($took < 300, '... within 300 s');
    my $grow = (sort { $b <=> $a } map { $peak{$_} - $base{$_} } keys %peak)[0] // 0;
    ok($grow < 32 * 1024, "... the notary's children grew at most ${grow} kB while relaying it (under 32 MiB)")
        or diag explain { base => \%base, peak => \%peak };
    diag 'VmRSS (kB) of the children before and at their peak: '
        . join(', ', map { "$_: $base{$_} -> $peak{$_}" } sort keys %base);
    is(scalar($t->records("uri LIKE ?", "%L=$id%")), 0, '... and nothing is recorded');
    children_alive('1 GiB upload');
}

my $nums = $l->log_numbers;
diag "error-log numbers at warn or above: " . join(', ', map { "$_ x$nums->{$_}" } sort keys %$nums);
diag sprintf 't/61 took %.0f s', time - $T0;
done_testing;
