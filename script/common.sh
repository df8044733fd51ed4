# Shared by script/test, script/demo and bench/run: install what is needed
# (Debian 12, as root) and build the module in the source tree.
set -euo pipefail

NOTARY_PACKAGES="build-essential autoconf automake libtool pkg-config make gcc
  apache2 apache2-dev apache2-ssl-dev libapr1-dev libaprutil1-dev
  libssl-dev libjansson-dev libpq-dev zlib1g-dev libbrotli-dev libzstd-dev brotli
  libcurl4-openssl-dev
  postgresql postgresql-client openssl curl ca-certificates
  perl libio-socket-ssl-perl libdbd-pg-perl libjson-perl
  python3 python3-jwt python3-cryptography
  golang-go golang-golang-x-mod-dev
  nodejs libcrypt-jwt-perl libcryptx-perl
  redis-server haproxy
  clang libclang-rt-dev clang-format
  dpkg-dev debhelper lintian fakeroot git"
# clang and libclang-rt-dev (libFuzzer, ASan, UBSan runtimes): fuzz/run
# nodejs, golang-go, libcrypt-jwt-perl, python3-jwt: the manual's token
# samples (docs/examples/, t/08-token-samples.t)
# redis-server and haproxy: the several-node test (t/70), run as the test's
# own processes, never as the system services
# dpkg-dev, debhelper, lintian, fakeroot, git: t/06-package.t
# builds the Debian package (debian/) from a git archive of the tree;
# dh_apache2 (the virtual dh-apache2) comes with apache2-dev

notary_install_deps() {
    local missing="" p
    for p in $NOTARY_PACKAGES $*; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "== installing:$missing"
        apt-get update -qq
        # policy-rc.d or not: we never want the packaged apache2/postgresql
        # services; the tests start their own
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    fi
}

notary_build() {
    local flags="${1:-}"
    echo "== building mod_notary ${flags:+($flags)}"
    if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt configure ]; then
        autoreconf -fi
    fi
    if [ ! -f Makefile ] || [ "$(cat .configure-flags 2>/dev/null)" != "$flags" ]; then
        # shellcheck disable=SC2086
        ./configure $flags
        echo "$flags" > .configure-flags
        make clean >/dev/null 2>&1 || true
    fi
    make -j2
}
