#!/usr/bin/perl
# Code, docs and the glue's layering agree (issue 12). No servers, no root:
# reads the sources, README.md, conf/notary.conf, docs/mod_notary.md and
# the built objects.
#
# - Every log number (NOTARYnnnnn) in mod_notary/*.c is written literally,
#   once, and has its own row in README.md's "Error log" table; the table
#   lists no number the code does not log, and no ranges.
# - Every directive of the command table (notary_cmds in
#   mod_notary_config.c) is in conf/notary.conf and in README.md.
# - The manual, docs/mod_notary.md: every directive has its block with
#   the context its handler enforces and the default its help string
#   names; every log number has its row with its level and what to do.
# - The glue's calls run one way: in the fixed order below, no glue object
#   refers to a function (or data) of a glue object above it -- so no two
#   glue files call each other. Read with nm from the built objects.
use strict;
use warnings;
use Test::More;

my $src = $ENV{NOTARY_SRCDIR} || '.';
my $build = $ENV{NOTARY_BUILDDIR} || $src;

sub slurp {
    my $file = shift;
    open my $fh, '<', $file or die "cannot read $file: $!\n";
    local $/;
    return scalar <$fh>;
}

# C source without its comments (string and character literals kept, so
# "audio/*" or "https://" in a string is not taken for a comment).
sub code_of {
    my $c = slurp(shift);
    $c =~ s{("(?:\\.|[^"\\\n])*")|('(?:\\.|[^'\\\n])*')|(/\*.*?\*/)|(//[^\n]*)}
           {defined $1 ? $1 : defined $2 ? $2 : ' '}gse;
    return $c;
}

my @sources = sort glob("$src/mod_notary/*.c");
ok(scalar @sources, "mod_notary/*.c found under $src") or BAIL_OUT('no sources');

# ---------------------------------------------------------------------
# Log numbers
my (%where, @built);
for my $file (@sources) {
    my $code = code_of($file);
    (my $short = $file) =~ s{^\Q$src\E/}{};
    while ($code =~ /NOTARY(\d{5})/g) {
        push @{ $where{$1} }, $short;
    }
    # a number put together at run time ("NOTARY%s") escapes grep
    push @built, $short if $code =~ /"NOTARY%/;
}
ok(scalar keys %where, 'the code logs NOTARYnnnnn numbers');
is_deeply(\@built, [], 'no log number is built at run time ("NOTARY%s")');
my @twice = map { "NOTARY$_ in " . join(', ', @{ $where{$_} }) }
            grep { @{ $where{$_} } > 1 } sort keys %where;
is_deeply(\@twice, [], 'each log number is written once in the code')
    or diag join("\n", @twice);

my $readme = slurp("$src/README.md");
my ($errlog) = $readme =~ /^### Error log\n(.*?)(?=^##? )/ms;
ok(defined $errlog, 'README.md has an "### Error log" section')
    or BAIL_OUT('no error-log section');
my (%row, @bad_rows, @dup_rows);
for my $line (split /\n/, $errlog) {
    next unless $line =~ /^\|\s*([^|]*?)\s*\|/;
    my $cell = $1;
    next if $cell eq 'number' || $cell =~ /^-+$/;
    if ($cell =~ /^NOTARY(\d{5})$/) {
        push @dup_rows, $cell if $row{$1}++;
    }
    else {
        push @bad_rows, $cell;
    }
}
is_deeply(\@bad_rows, [], 'every row of the error-log table names one number (no ranges, no lists)')
    or diag "rows: @bad_rows";
is_deeply(\@dup_rows, [], 'no number has two rows') or diag "twice: @dup_rows";
my @undocumented = map { "NOTARY$_ (" . join(', ', @{ $where{$_} }) . ')' }
                   grep { !$row{$_} } sort keys %where;
is_deeply(\@undocumented, [], 'every number in the code is in the README\'s error-log table')
    or diag "missing from README.md: " . join(', ', @undocumented);
my @stale = map { "NOTARY$_" } grep { !$where{$_} } sort keys %row;
is_deeply(\@stale, [], 'the error-log table lists no number the code does not log')
    or diag "in README.md only: @stale";

# ---------------------------------------------------------------------
# Directives
my $config = code_of("$src/mod_notary/mod_notary_config.c");
my ($cmds) = $config =~ /command_rec\s+notary_cmds\s*\[\s*\]\s*=\s*\{(.*?)\n\};/s;
ok(defined $cmds, 'notary_cmds found in mod_notary_config.c') or BAIL_OUT('no command table');
my @directives = $cmds =~ /AP_INIT_\w+\(\s*"(\w+)"/g;
cmp_ok(scalar @directives, '>=', 9, 'the command table names the directives')
    or diag "found: @directives";
my $notary_conf = slurp("$src/conf/notary.conf");
my @not_in_conf = grep { $notary_conf !~ /^#?[ \t]*\Q$_\E\b/m } @directives;
is_deeply(\@not_in_conf, [], 'every directive is annotated in conf/notary.conf')
    or diag "missing from conf/notary.conf: @not_in_conf";
my @not_in_readme = grep { index($readme, "`$_`") < 0 } @directives;
is_deeply(\@not_in_readme, [], 'every directive is documented in README.md')
    or diag "missing from README.md: @not_in_readme";

# ---------------------------------------------------------------------
# The manual (docs/mod_notary.md), in the httpd manual's form: each
# directive of the command table has its block -- "### Name", then the
# rows Description, Syntax, Default, Context, Status, Module -- whose
# context is the one its handler enforces and whose default is the one its
# help string names; each log number in the code has one row in the
# manual's "Log messages" table with the level the code logs it at and
# what to do about it.
my $manual = slurp("$src/docs/mod_notary.md");
my %cmd;    # directive => { handler, where (RSRC_CONF ...), help }
while ($cmds =~ /AP_INIT_\w+\(\s*"(\w+)"\s*,\s*(\w+)\s*,\s*\w+\s*,\s*([\w|\s]+?)\s*,((?:\s*"(?:\\.|[^"\\])*")+)\s*\)/g) {
    my ($name, $handler, $where, $lits) = ($1, $2, $3, $4);
    my $help = join '', $lits =~ /"((?:\\.|[^"\\])*)"/g;
    $cmd{$name} = { handler => $handler, where => $where, help => $help };
}
is_deeply([sort keys %cmd], [sort @directives], 'each directive\'s handler, context and help string are read')
    or diag "read: @{[sort keys %cmd]}";
for my $d (@directives) {
    my $c = $cmd{$d} or next;
    my ($section) = $manual =~ /^### \Q$d\E[ \t]*\n(.*?)(?=^##)/ms;
    ok(defined $section, "docs/mod_notary.md has a section \"### $d\"") or next;
    my %row;
    for my $line (split /\n/, $section) {
        $row{$1} = $2 if $line =~ /^\|\s*(\w+):\s*\|\s*(.*?)\s*\|\s*$/;
    }
    my @missing = grep { !defined $row{$_} || $row{$_} eq '' }
                  qw(Description Syntax Default Context Status Module);
    is_deeply(\@missing, [], "$d: Description, Syntax, Default, Context, Status, Module")
        or next;
    like($row{Syntax}, qr/^`\Q$d\E\b/, "$d: Syntax: begins with the directive");
    is($row{Status}, 'External', "$d: Status: External");
    is($row{Module}, 'mod_notary', "$d: Module: mod_notary");
    # the context the handler enforces (httpd's words)
    my ($body) = $config =~ /^(static const char \*\Q$c->{handler}\E\(.*?^\})/ms;
    ok(defined $body, "$d: its handler $c->{handler} is in mod_notary_config.c") or next;
    my $context = $c->{where} ne 'RSRC_CONF' ? undef
                : $body =~ /!cmd->server->is_virtual/ ? 'virtual host'
                : $body =~ /GLOBAL_ONLY/ ? 'server config'
                : 'server config, virtual host';
    ok(defined $context, "$d: its context can be read from the code ($c->{where})")
        and is($row{Context}, $context, "$d: Context: as $c->{handler} enforces it");
    # the default its help string names
    (my $default = $row{Default}) =~ s/`//g;
    if ($c->{help} =~ /\(default:? ([^,)]+)/) {
        my $want = $1;
        like($default, qr/(?:^|\s)\Q$want\E\b/, "$d: Default: names '$want', as the help string says");
    }
    else {
        # "(no default)", or a directive that registers something
        like($default, qr/^none\b/, "$d: Default: none, as the help string names no default");
    }
}

# The log numbers: one row each in the manual, with the level the code
# logs the number at -- the APLOG_ level of the statement that writes it,
# error for a refusal (notary_refuse) -- and what to do.
my %level_name = (EMERG => 'emerg', ALERT => 'alert', CRIT => 'crit', ERR => 'error',
                  WARNING => 'warn', NOTICE => 'notice', INFO => 'info', DEBUG => 'debug');
my (%level, @level_unknown);
for my $file (@sources) {
    my $code = code_of($file);
    # a ';' or brace inside a string literal ends no statement (character
    # literals are skipped whole, so that '"' starts no string)
    $code =~ s{("(?:\\.|[^"\\\n])*")|('(?:\\.|[^'\\\n])*')}
              {defined $1 ? $1 =~ tr/;{}/   /r : $2}ge;
    (my $short = $file) =~ s{^\Q$src\E/}{};
    while ($code =~ /NOTARY(\d{5})/g) {
        my ($num, $pos) = ($1, $-[0]);
        my ($start) = sort { $b <=> $a } map { rindex($code, $_, $pos) } (';', '{', '}');
        my $stmt = substr($code, $start + 1, $pos - $start - 1);
        my @lv = $stmt =~ /APLOG_(EMERG|ALERT|CRIT|ERR|WARNING|NOTICE|INFO|DEBUG)\b/g;
        my $lv = $stmt =~ /\bnotary_refuse\s*\(/ ? 'error' : @lv ? $level_name{ $lv[-1] } : undef;
        # a level the configuration picks: `int VAR = COND ? APLOG_A : APLOG_B;`
        # in the same file, logged as ap_log_*(APLOG_MARK, VAR, ...): "b or a"
        if (!defined $lv && $stmt =~ /\bap_log_\w+\s*\(\s*APLOG_MARK\s*,\s*(\w+)\s*,/) {
            my $var = $1;
            if ($code =~ /\b\Q$var\E\s*=\s*[^;?]+\?\s*APLOG_(\w+)\s*:\s*APLOG_(\w+)\s*;/
                && $level_name{$1} && $level_name{$2}) {
                $lv = "$level_name{$2} or $level_name{$1}";
            }
        }
        if (defined $lv) { $level{$num} = $lv } else { push @level_unknown, "NOTARY$num ($short)" }
    }
}
is_deeply(\@level_unknown, [], 'the level of every log number can be read where it is logged')
    or diag "no APLOG_ level in the statement of: @level_unknown";
my ($msgs) = $manual =~ /^## Log messages\n(.*?)(?=^##? |\z)/ms;
ok(defined $msgs, 'docs/mod_notary.md has a "## Log messages" section')
    or BAIL_OUT('no log-message section in the manual');
my (%mrow, @mbad, @mdup, @no_advice);
for my $line (split /\n/, $msgs) {
    next unless $line =~ /^\|/;
    my @cell = map { s/^\s+|\s+$//gr } split /(?<!\\)\|/, $line;
    shift @cell;    # before the first |
    next if $cell[0] eq 'number' || $cell[0] =~ /^-+$/;
    if ($cell[0] !~ /^NOTARY(\d{5})$/) { push @mbad, $cell[0]; next }
    push @mdup, $cell[0] if $mrow{$1};
    $mrow{$1} = { level => $cell[1], advice => $cell[4] };
    push @no_advice, $cell[0] unless defined $cell[4] && $cell[4] =~ /\w/;
}
is_deeply(\@mbad, [], 'every row of the manual\'s log table names one number') or diag "rows: @mbad";
is_deeply(\@mdup, [], 'no number has two rows in the manual') or diag "twice: @mdup";
my @not_in_manual = map { "NOTARY$_" } grep { !$mrow{$_} } sort keys %where;
is_deeply(\@not_in_manual, [], 'every log number in the code is in the manual\'s log table')
    or diag "missing from docs/mod_notary.md: @not_in_manual";
my @manual_stale = map { "NOTARY$_" } grep { !$where{$_} } sort keys %mrow;
is_deeply(\@manual_stale, [], 'the manual lists no number the code does not log')
    or diag "in docs/mod_notary.md only: @manual_stale";
my @wrong_level = map { "NOTARY$_: manual '$mrow{$_}{level}', code '$level{$_}'" }
                  grep { $mrow{$_} && defined $level{$_} && $mrow{$_}{level} ne $level{$_} }
                  sort keys %where;
is_deeply(\@wrong_level, [], 'the manual gives each number the level the code logs it at')
    or diag join("\n", @wrong_level);
is_deeply(\@no_advice, [], 'every number in the manual says what to do') or diag "@no_advice";

# ---------------------------------------------------------------------
# The glue's calls run one way: top to bottom of this list. The module
# record (notary_module) is data every glue file names; it is not a call.
my @order = qw(mod_notary mod_notary_route mod_notary_gate mod_notary_record
               mod_notary_log mod_notary_session notary_exchange mod_notary_status
               mod_notary_check
               mod_notary_config);
my %rank = map { $order[$_] => $_ } 0 .. $#order;
my (%obj, %defines, %uses);
# libtool's PIC objects first; automake prefixes a target's name
# ("la-", "mod_notary_la-") when the target has flags of its own
for my $dir ("$build/mod_notary/.libs", "$build/mod_notary") {
    for my $o (glob("$dir/*.o")) {
        (my $name = $o) =~ s{.*/}{};
        $name =~ s/\.o$//;
        $name =~ s/^(?:mod_notary_)?la-//;
        next unless $name =~ /^mod_notary/ || $name eq 'notary_exchange';
        $obj{$name} ||= $o;
    }
}
my @unplaced = grep { !exists $rank{$_} } sort keys %obj;
is_deeply(\@unplaced, [], 'every glue object has its place in the order')
    or diag "not in \@order of $0: @unplaced";
my @unbuilt = grep { !$obj{$_} } @order;
is_deeply(\@unbuilt, [], "every glue object is built (under $build/mod_notary)")
    or diag "build the module first (make): missing @unbuilt";
for my $name (sort keys %obj) {
    my @nm = `nm -P '$obj{$name}'`;
    ok($? == 0 && @nm, "nm reads $name") or next;
    for (@nm) {
        my ($sym, $type) = split ' ';
        next if !defined $type || $sym eq 'notary_module';
        if ($type eq 'U') {
            $uses{$name}{$sym} = 1;
        }
        elsif ($type =~ /^[TDBRGSVWC]$/) {
            $defines{$sym} = $name;
        }
    }
}
my (@upward, %edge);
for my $from (sort keys %uses) {
    for my $sym (sort keys %{ $uses{$from} }) {
        my $to = $defines{$sym};
        next if !defined $to || $to eq $from;
        push @{ $edge{"$from -> $to"} }, $sym;
        if (exists $rank{$from} && exists $rank{$to} && $rank{$to} <= $rank{$from}) {
            push @upward, "$from calls $to ($sym)";
        }
    }
}
ok(scalar keys %edge, 'the glue objects call one another (the check sees calls)');
is_deeply(\@upward, [], 'no glue object calls one above it: ' . join(' > ', @order))
    or diag join("\n", @upward);
my @mutual = grep { my ($x, $y) = split / -> /; $x lt $y && $edge{"$y -> $x"} } sort keys %edge;
is_deeply(\@mutual, [], 'no two glue objects call each other')
    or diag join("\n", map { my ($x, $y) = split / -> /; "$x <-> $y" } @mutual);

done_testing();
