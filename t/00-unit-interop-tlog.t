#!/bin/sh
# Interop of the evidence core with an independent C2SP implementation,
# golang.org/x/mod's sumdb/note and sumdb/tlog, both ways
# (t/unit/interop_tlog.go; Debian: golang-go, golang-golang-x-mod-dev).
B="${NOTARY_BUILDDIR:-.}"
S="${NOTARY_SRCDIR:-.}"
command -v go >/dev/null 2>&1 || { echo "Bail out! no go (Debian: golang-go)"; exit 1; }
[ -d /usr/share/gocode/src/golang.org/x/mod/sumdb/tlog ] \
    || { echo "Bail out! no sumdb/tlog (Debian: golang-golang-x-mod-dev)"; exit 1; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
"$B/t/unit/make_evidence" "$tmp/fx" || { echo "Bail out! make_evidence failed"; exit 1; }
# GOPATH mode over Debian's packaged sources: no module download
GOCACHE="$tmp/cache" GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= \
    go run "$S/t/unit/interop_tlog.go" "$tmp/fx" "$B/notary-verify"
