#!/bin/sh
# Unit tests of the evidence core (TAP from C): notary_tsa, RFC 3161, against openssl ts.
exec "${NOTARY_BUILDDIR:-.}/t/unit/test_tsa"
