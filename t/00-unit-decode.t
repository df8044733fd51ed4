#!/bin/sh
# Unit tests of the core: form, multipart, JSON, br/zstd, sniffing, every cut.
exec "${NOTARY_BUILDDIR:-.}/t/unit/test_decode"
