#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ from the unit tests' inputs
and docs/vectors/. Rerun after changing it; the files are committed, so a
fuzz run needs neither python nor the brotli/zstd tools.

    fuzz/mkseeds.py            (from the source tree's top)

Input formats: see the comment at the top of each fuzz/fuzz_*.c.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import zlib

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(TOP, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# ---- token: '0' compact JWS, '1' '4' '7' ':' '=' header NUL payload signed
# with PS256 ES256 ES384 EdDSA RS256, '2' base64url text
SIGNERS = {"PS256": b"1", "ES256": b"4", "ES384": b"7", "EdDSA": b":", "RS256": b"="}


def token_seeds():
    with open(os.path.join(TOP, "docs", "vectors", "vectors.json")) as f:
        vectors = json.load(f)["vectors"]
    for v in vectors:
        tok = v["token"]
        put("token", "jws-" + v["name"], b"0" + tok.encode())
        parts = tok.split(".")
        if len(parts) == 3:
            try:
                hdr, pl = b64url_decode(parts[0].rstrip("=")), b64url_decode(parts[1])
            except Exception:
                continue
            try:
                alg = json.loads(hdr).get("alg")
            except Exception:
                alg = None
            sel = SIGNERS.get(alg, b"=")
            put("token", "signed-" + v["name"], sel + hdr + b"\0" + pl)
            put("token", "b64-" + v["name"], b"2" + parts[2].encode())
    claims = (b'{"aud":["other.example","notary.example."],"cnf":{"x5t#S256":'
              b'"mU5U0N14k7Ns_thhGbcoxqJ5jhpVcPTZXVRZo0thxXE"},"iat":1700000000.5,'
              b'"exp":1700000600,"nbf":1699999999,"jti":"order-4711"}')
    for alg, sel in SIGNERS.items():
        put("token", "signed-" + alg + "-aud-array-nbf",
            sel + b'{"alg":"' + alg.encode() + b'","typ":"application/notary+jwt","kid":"k1"}'
            + b"\0" + claims)
    put("token", "signed-deep-json", b"4" + b'{"alg":"ES256"}\0' + b'{"aud":' + b"[" * 200
        + b"]" * 200 + b"}")
    put("token", "signed-escapes", b":" + b'{"alg":"Ed\\u0044SA","typ":"JWT"}\0'
        + b'{"aud":"notary.example","cnf":{"x5t#S256":"' + b"A" * 43
        + b'"},"iat":0,"exp":253402300799,"jti":"\\u0000\\ud83d\\ude00"}')
    put("token", "jws-too-large", b"0" + b"A" * 4097 + b".e30.AA")
    for name, text in (("empty", ""), ("one", "Zg"), ("padded", "Zg=="), ("bits", "Zh"),
                       ("dash-underscore", "-_-_"), ("bad-char", "Zm+v")):
        put("token", "b64-" + name, b"2" + text.encode())


# ---- match: header lines, empty line, body
KEIYAKU = "契約書に同意します"
JA_BODY = "<p>以下の" + KEIYAKU + "。</p>"
LOREM = "".join("lorem ipsum dolor sit amet " if i % 7 else "consectetur 0123456789 "
                for i in range(40))


def case(rules, body, ct=None, ce=None, cuts=(), maxd=None, shared=()):
    head = []
    for r in rules:
        head.append(b"r" + (r.encode() if isinstance(r, str) else r))
    for s in shared:
        head.append(b"s" + s.encode())
    if ct is not None:
        head.append(b"t" + ct.encode())
    if ce is not None:
        head.append(b"e" + ce.encode())
    for c in cuts:
        head.append(b"c%d" % c)
    if maxd is not None:
        head.append(b"m%d" % maxd)
    if isinstance(body, str):
        body = body.encode()
    return b"\n".join(head) + b"\n\n" + body


def zip_(data, wbits):
    z = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return z.compress(data) + z.flush()


def tool(argv, data):
    if not shutil.which(argv[0]):
        return None
    return subprocess.run(argv, input=data, stdout=subprocess.PIPE, check=True).stdout


def match_seeds():
    put("match", "ushers", case(["he", "she", "his", "hers"], "ushers", cuts=(2, 3)))
    put("match", "utf8-ja", case([KEIYAKU, "</p>"], JA_BODY, "text/html; charset=UTF-8",
                                 cuts=(5, 13, 14)))
    for cs, label in (("shift_jis", "Shift_JIS"), ("euc_jp", "EUC-JP"), ("cp932", "windows-31j"),
                      ("iso2022_jp", "ISO-2022-JP"), ("utf-16", "UTF-16"),
                      ("utf-16-le", "UTF-16LE"), ("utf-16-be", "utf-16be"),
                      ("utf-32", "UTF-32"), ("cp1140", "IBM1140")):
        body = JA_BODY.encode(cs, errors="replace")
        put("match", "cs-" + label.lower(), case([KEIYAKU, "</p>"], body,
                                                 'text/html; charset="%s"' % label,
                                                 cuts=(1, 7, len(body) // 2 + 1)))
    # an odd cut inside a UTF-16 code unit, and a surrogate pair cut in two
    body = ("x" + KEIYAKU + "\U0001F600 end").encode("utf-16-le")
    put("match", "utf16le-odd-cuts", case([KEIYAKU, "\U0001F600 end"], body,
                                          "text/plain;charset=utf-16le", cuts=(1, 3, 5, 35, 37)))
    latin = "Der Vertrag über Waren".encode("latin-1")
    put("match", "latin1", case([KEIYAKU, "Vertrag über"], latin, "text/html; charset=iso-8859-1",
                                cuts=(12,)))
    put("match", "cp932-wave-dash", case(["1～3"], "a 1～3 b".encode("cp932"),
                                         "text/plain; charset=Shift_JIS", cuts=(3,)))
    put("match", "iso2022-invalid", case([KEIYAKU], b"\x1b$B\xff\xff\x1b(B junk "
                                         + KEIYAKU.encode("iso2022_jp"),
                                         "text/plain; charset=iso-2022-jp", cuts=(3, 9)))
    put("match", "unknown-charset", case(["needle"], "a needle", "text/plain; charset=x-klingon"))
    plain = (LOREM + JA_BODY).encode()
    for ce, wbits, name in (("gzip", 31, "gzip"), ("x-gzip", 31, "x-gzip"),
                            ("deflate", 15, "deflate-zlib"), ("deflate", -15, "deflate-raw")):
        z = zip_(plain, wbits)
        put("match", name, case([KEIYAKU, "needle"], z, "text/html", ce, cuts=(1, 2, 10, len(z) - 3)))
    z = zip_(b"aaa nee", 31) + zip_(b"dle bbb", 31)
    put("match", "gzip-multimember", case(["needle"], z, "text/plain", "gzip", cuts=(20,)))
    z = zip_(JA_BODY.encode("shift_jis"), 31)
    put("match", "gzip-shift_jis", case([KEIYAKU], z, "text/html; charset=Shift_JIS", "gzip",
                                        cuts=(11,)))
    z = zip_(JA_BODY.encode("utf-16"), 31)
    put("match", "gzip-utf16", case([KEIYAKU], z, "text/html; charset=UTF-16", "gzip", cuts=(11,)))
    z = zip_(plain, 31)
    put("match", "gzip-limit", case([KEIYAKU], z, "text/html", "gzip", maxd=len(plain) - 1,
                                    cuts=(7,)))
    put("match", "gzip-truncated", case(["needle"], z[:-6], "text/html", "gzip"))
    put("match", "gzip-not", case(["needle"], "needle, not gzip", "text/plain", "gzip"))
    put("match", "deflate-one-byte", case(["needle"], "n", "text/plain", "deflate"))
    put("match", "stacked-codings", case(["needle"], "a needle", "text/plain", "gzip, gzip"))
    put("match", "identity-gzip", case(["needle"], zip_(b"a needle", 31), "text/plain",
                                       " identity , gzip "))
    for ce, argv in (("br", ["brotli", "-c"]), ("zstd", ["zstd", "-c", "-q"])):
        data = tool(argv, plain)
        if data is not None:
            put("match", ce, case([KEIYAKU, "needle"], data, "text/html; charset=utf-8", ce,
                                  cuts=(3, 9)))
    # bodies for the form, multipart and JSON decoders of the matching issue
    form = "name=Taro&agree=" + "".join("%%%02X" % b for b in KEIYAKU.encode()) + "&x=a+b%20c"
    put("match", "form", case([KEIYAKU, "a b c"], form, "application/x-www-form-urlencoded",
                              cuts=(17, 20, 21)))
    form_sj = "agree=" + "".join("%%%02X" % b for b in KEIYAKU.encode("shift_jis"))
    put("match", "form-shift_jis", case([KEIYAKU], form_sj,
                                        "application/x-www-form-urlencoded; charset=Shift_JIS",
                                        cuts=(8,)))
    mp = ("--XyZ\r\nContent-Disposition: form-data; name=\"agree\"\r\n\r\n" + KEIYAKU
          + "\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n"
          "Content-Type: text/plain; charset=Shift_JIS\r\n\r\n").encode() \
        + JA_BODY.encode("shift_jis") + b"\r\n--XyZ--\r\n"
    put("match", "multipart", case([KEIYAKU, "</p>"], mp, 'multipart/form-data; boundary="XyZ"',
                                   cuts=(4, 60, 61)))
    put("match", "multipart-gzip", case([KEIYAKU], zip_(mp, 31),
                                        "multipart/form-data; boundary=XyZ", "gzip", cuts=(30,)))
    js = '{"agree":"' + "".join("\\u%04x" % ord(c) for c in KEIYAKU) + '","n":"a\\"b\\/c"}'
    put("match", "json-escapes", case([KEIYAKU, 'a"b/c'], js, "application/json", cuts=(12, 15)))
    put("match", "json-surrogates", case(["\U0001F600"], '["\\ud83d\\ude00"]',
                                         "application/problem+json", cuts=(8,)))
    put("match", "json-utf8", case([KEIYAKU], json.dumps({"a": KEIYAKU}, ensure_ascii=False),
                                   "application/json; charset=utf-8"))
    put("match", "shared-ids", case(["terms", "agree"], "I agree to the terms", "text/plain",
                                    shared=("TERMS",), cuts=(4,)))


def media_seeds():
    ranges = ["application/xml", "audio/*", "*/*", "application/*+xml", " Text/HTML ", "",
              "text", "text/", "/html", "text/html;x=1", "*/html", "te*t/html", "text/*+",
              "t\u00e9xt/html"]
    cts = ["Application/XML; charset=utf-8", "\ttext/html\t;q=1", "text/html garbage",
           "AUDIO/ogg;codecs=opus", "application/SOAP+XML; charset=utf-8",
           'text/html;Charset="EUC-JP"', 'text/html; a="x;charset=no" ; charset = utf-8',
           "text/html; charset=", 'text/html; charset="unterminated',
           'text/html; charset="sh\\ift_jis"', "text/plain; charset=shift_jis//TRANSLIT",
           "text/plain; charset=UTF-16", "text/plain; charset=ISO-2022-JP",
           "text/plain; charset= ' utf-8 ' ", "text/plain; charset=IBM939"]
    for i, r in enumerate(ranges):
        put("media", "range-%02d" % i, (r + "\n" + cts[i % len(cts)]).encode())
    for i, c in enumerate(cts):
        put("media", "ct-%02d" % i, ("text/html\n" + c).encode())


def main():
    if os.path.isdir(CORPUS):
        for t in ("token", "match", "media"):
            d = os.path.join(CORPUS, t)
            if os.path.isdir(d):
                for f in os.listdir(d):
                    # keep the reproducers of bugs found, which this script does not write
                    if not f.startswith("repro-"):
                        os.unlink(os.path.join(d, f))
    token_seeds()
    match_seeds()
    media_seeds()
    for t in sorted(os.listdir(CORPUS)):
        print("%s: %d seeds" % (t, len(os.listdir(os.path.join(CORPUS, t)))))


if __name__ == "__main__":
    sys.exit(main())
