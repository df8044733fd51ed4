#!/usr/bin/env python3
"""An independent C2SP tlog-witness for t/66-log-witness.t, written from the
specs (c2sp.org/tlog-witness, tlog-cosignature, signed-note, RFC 9162) with
Python's `cryptography`, sharing no code with mod_notary.

  witness.py vkey NAME SEEDHEX            print the cosigner's vkey (type 0x04)
  witness.py serve DIR PORT ORIGIN LOGVKEY NAME SEEDHEX

serve answers POST /add-checkpoint on 127.0.0.1:PORT: it verifies the log's
Ed25519 signature under LOGVKEY, checks `old` against its own state (409 with
its size otherwise), verifies the RFC 9162 consistency proof itself, keeps
the new state, and answers a cosignature/v1 line. DIR/state holds "size
base64root" (absent: never cosigned); DIR/mode is read at each request:
ok, badsig (one bit of the signature flipped), 500. Every request is
appended to DIR/requests as "old size proof_lines status". Exits after 600 s.
"""
import base64
import hashlib
import os
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from cryptography.hazmat.primitives.asymmetric.ed25519 import (Ed25519PrivateKey,
                                                               Ed25519PublicKey)
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

EM = "\u2014 "


def key_id(name, typ, pub):
    return hashlib.sha256(name.encode() + b"\n" + bytes([typ]) + pub).digest()[:4]


def cosigner(seedhex):
    priv = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seedhex))
    pub = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return priv, pub


def vkey(name, seedhex):
    _, pub = cosigner(seedhex)
    return "%s+%s+%s" % (name, key_id(name, 4, pub).hex(), base64.b64encode(b"\x04" + pub).decode())


def h_node(a, b):
    return hashlib.sha256(b"\x01" + a + b).digest()


def verify_consistency(first, second, first_hash, second_hash, proof):
    """RFC 9162 2.1.4.2, with old == new and old == 0 handled by the caller."""
    if not proof:
        return False
    if first & (first - 1) == 0:
        proof = [first_hash] + proof
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = h_node(c, fr)
            sr = h_node(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = h_node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_hash and sr == second_hash


def main_serve(d, port, origin, logvkey, name, seedhex):
    lname, lid, lb64 = logvkey.split("+", 2)
    lraw = base64.b64decode(lb64)
    assert lname == origin and lraw[0] == 1 and len(lraw) == 33
    log_pub = Ed25519PublicKey.from_public_bytes(lraw[1:])
    log_id = bytes.fromhex(lid)
    assert key_id(origin, 1, lraw[1:]) == log_id
    priv, pub = cosigner(seedhex)
    my_id = key_id(name, 4, pub)
    lock = threading.Lock()

    def state():
        try:
            with open(os.path.join(d, "state")) as f:
                s, r = f.read().split()
                return int(s), base64.b64decode(r)
        except FileNotFoundError:
            return 0, hashlib.sha256(b"").digest()

    def mode():
        try:
            with open(os.path.join(d, "mode")) as f:
                return f.read().strip() or "ok"
        except FileNotFoundError:
            return "ok"

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def answer(self, code, body=b"", ctype="text/plain", note=(0, 0, 0)):
            with open(os.path.join(d, "requests"), "a") as f:
                f.write("%d %d %d %d\n" % (note[0], note[1], note[2], code))
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            if self.path != "/w/add-checkpoint":
                return self.answer(404)
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n).decode("utf-8")
            head, sep, note = body.partition("\n\n")
            if not sep:
                return self.answer(400)
            lines = head.split("\n")
            if not lines[0].startswith("old "):
                return self.answer(400)
            old = int(lines[0][4:])
            proof = [base64.b64decode(x) for x in lines[1:]]
            # the note: text up to the last blank line, then signature lines
            cut = note.rfind("\n\n")
            text, sigs = note[:cut + 1], note[cut + 2:]
            tl = text.split("\n")
            if tl[0] != origin:
                return self.answer(404)
            size, root = int(tl[1]), base64.b64decode(tl[2])
            info = (old, size, len(proof))
            good = False
            for sl in sigs.rstrip("\n").split("\n"):
                if not sl.startswith(EM):
                    return self.answer(400, note=info)
                sname, sb64 = sl[len(EM):].split(" ")
                raw = base64.b64decode(sb64)
                if sname == origin and raw[:4] == log_id:
                    try:
                        log_pub.verify(raw[4:], text.encode())
                        good = True
                    except InvalidSignature:
                        return self.answer(403, note=info)
            if not good:
                return self.answer(403, note=info)
            if old > size:
                return self.answer(400, note=info)
            with lock:
                have, have_root = state()
                if old != have:
                    return self.answer(409, b"%d\n" % have, "text/x.tlog.size", note=info)
                if size == 0 and root != hashlib.sha256(b"").digest():
                    return self.answer(422, note=info)
                if old == 0:
                    ok = not proof
                elif old == size:
                    ok = not proof and root == have_root
                else:
                    ok = verify_consistency(old, size, have_root, root, proof)
                if not ok:
                    return self.answer(422, note=info)
                with open(os.path.join(d, "state.tmp"), "w") as f:
                    f.write("%d %s\n" % (size, base64.b64encode(root).decode()))
                os.rename(os.path.join(d, "state.tmp"), os.path.join(d, "state"))
            m = mode()
            if m == "500":
                # a second line of its own: it must reach the notary's
                # error log escaped, never as a line
                return self.answer(500, b"down for maintenance\nFORGED LINE from the witness\n",
                                   note=info)
            t = int(time.time())
            msg = b"cosignature/v1\ntime %d\n" % t + text.encode()
            sig = bytearray(priv.sign(msg))
            if m == "badsig":
                sig[17] ^= 0x08
            raw = my_id + struct.pack(">Q", t) + bytes(sig)
            line = "%s%s %s\n" % (EM, name, base64.b64encode(raw).decode())
            self.answer(200, line.encode("utf-8"), note=info)

    srv = HTTPServer(("127.0.0.1", port), H)
    srv.timeout = 1
    with open(os.path.join(d, "ready"), "w") as f:
        f.write("%d\n" % os.getpid())
    deadline = time.time() + 600
    while time.time() < deadline:
        srv.handle_request()


if __name__ == "__main__":
    if sys.argv[1] == "vkey":
        print(vkey(sys.argv[2], sys.argv[3]))
    elif sys.argv[1] == "serve":
        main_serve(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7])
    else:
        sys.exit(2)
