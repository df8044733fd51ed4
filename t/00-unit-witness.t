#!/bin/sh
# Unit tests of the evidence core (TAP from C): notary_witness, C2SP tlog-witness cosignatures.
exec "${NOTARY_BUILDDIR:-.}/t/unit/test_witness"
