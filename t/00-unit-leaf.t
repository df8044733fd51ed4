#!/bin/sh
# Unit tests of the evidence core (TAP from C): notary_leaf.
exec "${NOTARY_BUILDDIR:-.}/t/unit/test_leaf"
