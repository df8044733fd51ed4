#!/usr/bin/perl
# Code, docs and the glue's layering agree (issue 12). No servers, no root:
# reads the sources, README.md, conf/notary.conf and the built objects.
#
# - Every log number (NOTARYnnnnn) in mod_notary/*.c is written literally,
#   once, and has its own row in README.md's "Error log" table; the table
#   lists no number the code does not log, and no ranges.
# - Every directive of the command table (notary_cmds in
#   mod_notary_config.c) is in conf/notary.conf and in README.md.
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
# The glue's calls run one way: top to bottom of this list. The module
# record (notary_module) is data every glue file names; it is not a call.
my @order = qw(mod_notary mod_notary_route mod_notary_gate mod_notary_record
               mod_notary_log mod_notary_session notary_exchange mod_notary_check
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
