#!/bin/sh
# Unit tests of the httpd-independent core (TAP from C).
exec "${NOTARY_BUILDDIR:-.}/t/unit/test_target"
