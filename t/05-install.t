# make install puts the module where apxs says, notary-link on the PATH and
# notary.load (naming that module) with notary.conf in $pkgdatadir;
# make uninstall takes all of it away again.
use strict;
use warnings;
use Test::More;
use File::Find;
use File::Temp qw(tempdir);
use NotaryTest;

my $build = $NotaryTest::BUILDDIR;
BAIL_OUT("no Makefile in $build") unless -f "$build/Makefile";
my $dest = tempdir('notary-install-XXXXXX', DIR => '/tmp', CLEANUP => 1);

sub installed_files {
    my @f;
    find({ wanted => sub { push @f, substr($File::Find::name, length $dest) if -f || -l },
           no_chdir => 1 }, $dest);
    return sort @f;
}

my $out = `make -C '$build' install DESTDIR='$dest' 2>&1`;
is($?, 0, 'make install DESTDIR=... succeeds') or diag $out;
chomp(my $moddir = `apxs -q LIBEXECDIR`);
ok(-f "$dest$moddir/mod_notary.so", "mod_notary.so is installed in apxs's LIBEXECDIR ($moddir)");
ok(!-e "$dest$moddir/mod_notary.la", '... without a libtool .la beside it');
my ($link) = grep { -x } glob("$dest/usr/local/bin/notary-link $dest/usr/bin/notary-link");
ok($link, 'notary-link is installed');
like(`$link --help 2>&1`, qr/--consumer-cert/, '... and runs');

my ($load) = grep { m{/share/mod_notary/notary\.load$} } installed_files();
ok($load, 'notary.load is installed in $pkgdatadir') or diag explain [installed_files()];
my $text = $load ? NotaryTest::read_file("$dest$load") : '';
like($text, qr{^LoadModule notary_module \Q$moddir\E/mod_notary\.so$}m,
     "... and loads mod_notary.so from $moddir");
ok(-f "$dest" . ($load =~ s/notary\.load$/notary.conf/r), '... beside the annotated notary.conf')
    if $load;

$out = `make -C '$build' uninstall DESTDIR='$dest' 2>&1`;
is($?, 0, 'make uninstall DESTDIR=... succeeds') or diag $out;
is_deeply([installed_files()], [], 'make uninstall removes every file make install put');
done_testing;
