// Interop of the evidence core with an independent C2SP implementation:
// golang.org/x/mod/sumdb/note and sumdb/tlog (Debian: golang-go,
// golang-golang-x-mod-dev), both ways. TAP output.
//
// usage: GO111MODULE=off GOPATH=/usr/share/gocode go run interop_tlog.go DIR NOTARY-VERIFY
//
// DIR holds what t/unit/make_evidence wrote. Go checks our notes,
// checkpoints, tiles, receipts and proofs with its own code; signs the same
// texts with the same key (Ed25519 is deterministic: the bytes must be
// ours); recomputes the leaf-entry vectors of docs/evidence.md from their
// inputs; and makes a receipt and a checkpoint of its own, which
// NOTARY-VERIFY must accept.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

var n, failed int

func ok(cond bool, name string, seen ...interface{}) {
	n++
	if cond {
		fmt.Printf("ok %d - %s\n", n, name)
		return
	}
	failed++
	fmt.Printf("not ok %d - %s\n", n, name)
	if len(seen) > 0 {
		fmt.Printf("#   saw: %s\n", strings.ReplaceAll(fmt.Sprint(seen...), "\n", "\n#   "))
	}
}

func bail(format string, args ...interface{}) {
	fmt.Printf("Bail out! "+format+"\n", args...)
	os.Exit(255)
}

var dir string

func read(name string) []byte {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		bail("%v", err)
	}
	return b
}

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

func parseCheckpoint(text string) (checkpoint, error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 {
		return checkpoint{}, fmt.Errorf("short checkpoint %q", text)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return checkpoint{}, err
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		return checkpoint{}, err
	}
	return checkpoint{lines[0], size, root}, nil
}

// c2sp.org/tlog-proof@v1, parsed from the spec's text.
type tlogProof struct {
	extra      []byte
	index      int64
	proof      tlog.RecordProof
	checkpoint []byte
}

func parseProof(b []byte) (tlogProof, error) {
	var p tlogProof
	i := bytes.Index(b, []byte("\n\n"))
	if i < 0 {
		return p, fmt.Errorf("no blank line")
	}
	p.checkpoint = b[i+2:]
	lines := strings.Split(string(b[:i]), "\n")
	if lines[0] != "c2sp.org/tlog-proof@v1" {
		return p, fmt.Errorf("header %q", lines[0])
	}
	lines = lines[1:]
	if strings.HasPrefix(lines[0], "extra ") {
		x, err := base64.StdEncoding.DecodeString(lines[0][6:])
		if err != nil {
			return p, err
		}
		p.extra = x
		lines = lines[1:]
	}
	if !strings.HasPrefix(lines[0], "index ") {
		return p, fmt.Errorf("no index")
	}
	idx, err := strconv.ParseInt(lines[0][6:], 10, 64)
	if err != nil {
		return p, err
	}
	p.index = idx
	for _, l := range lines[1:] {
		h, err := tlog.ParseHash(l)
		if err != nil {
			return p, err
		}
		p.proof = append(p.proof, h)
	}
	return p, nil
}

// Go's own tree over our leaf hashes, in sumdb/tlog's storage layout.
type memStore []tlog.Hash

func (s *memStore) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x >= int64(len(*s)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = (*s)[x]
	}
	return out, nil
}

// Our tiles on disk, read through Go's tile reader: C2SP paths are Go's
// with the tile height (8) left out.
type dirTiles struct{ root string }

func (d dirTiles) Height() int { return 8 }
func (d dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		p := strings.Replace(t.Path(), "tile/8/", "tile/", 1)
		b, err := os.ReadFile(filepath.Join(d.root, p))
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}
func (d dirTiles) SaveTiles([]tlog.Tile, [][]byte) {}

func entryVector(dirn byte, t int64, status uint16, salt []byte, snd, rcv, meta, hdr, body, tok []byte) []byte {
	var e bytes.Buffer
	e.WriteString("notary-leaf/v1\n")
	e.WriteByte(dirn)
	binary.Write(&e, binary.BigEndian, t)
	binary.Write(&e, binary.BigEndian, status)
	e.Write(salt)
	for _, b := range [][]byte{snd, rcv, meta, hdr, body} {
		h := sha256.Sum256(b)
		e.Write(h[:])
	}
	if tok == nil {
		e.Write(make([]byte, 32))
	} else {
		h := sha256.Sum256(tok)
		e.Write(h[:])
	}
	return e.Bytes()
}

func metadata(fields ...*string) []byte {
	var m bytes.Buffer
	for _, f := range fields {
		if f == nil {
			binary.Write(&m, binary.BigEndian, uint32(0xFFFFFFFF))
			continue
		}
		binary.Write(&m, binary.BigEndian, uint32(len(*f)))
		m.WriteString(*f)
	}
	return m.Bytes()
}

func s(v string) *string { return &v }

func testVectors() {
	spki := func(pub string) []byte {
		b, _ := hex.DecodeString("302a300506032b6570032100" + pub)
		return b
	}
	a := spki("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
	b := spki("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
	salt1, salt2 := make([]byte, 16), make([]byte, 16)
	for i := range salt1 {
		salt1[i] = byte(i)
		salt2[i] = byte(0xf0 + i)
	}
	x := "5f1c0a9e3b7d42e8a6c4f0b2d9e81735"
	m1 := metadata(s("shop"), s(`shop contains "I agree"`), s("POST"), s("/contract/sign?id=42"),
		s("application/x-www-form-urlencoded"), &x)
	e1 := entryVector(1, 1767225600123456, 0, salt1, a, b, m1,
		[]byte("Host: shop.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 13"),
		[]byte("agree=I+agree"), []byte("eyJhbGciOiJFZERTQSJ9.eyJhdWQiOiJub3RhcnkuZXhhbXBsZSJ9.c2ln"))
	h1 := tlog.RecordHash(e1)
	ok(hex.EncodeToString(h1[:]) == "ef2872ecca67bc3427b7bc35290f84cb063f3bb11b4aff637bcc78fe4d4efcd5",
		"Go recomputes entry vector 1 of docs/evidence.md from its inputs", hex.EncodeToString(h1[:]))
	m2 := metadata(s("shop"), s(`shop contains "I agree"`), s("POST"), s("/contract/sign?id=42"), nil, &x)
	e2 := entryVector(2, 1767225600234567, 200, salt2, b, a, m2, []byte("Content-Length: 0"), []byte{}, nil)
	h2 := tlog.RecordHash(e2)
	ok(hex.EncodeToString(h2[:]) == "b8d1546f1ee4e0d1d9fd3ea5b2de169346101b4c48d75edc76fb47790f6a976e",
		"Go recomputes entry vector 2 (NULL field, no token, empty body)", hex.EncodeToString(h2[:]))
}

func main() {
	if len(os.Args) != 3 {
		bail("usage: interop_tlog DIR NOTARY-VERIFY")
	}
	dir = os.Args[1]
	verifyBin := os.Args[2]

	testVectors()

	vkey := strings.TrimSpace(string(read("log.vkey")))
	skey := strings.TrimSpace(string(read("log.skey")))
	verifier, err := note.NewVerifier(vkey)
	ok(err == nil, "Go parses our vkey", err)
	signer, err := note.NewSigner(skey)
	ok(err == nil, "Go parses our skey", err)
	if err != nil {
		bail("keys")
	}
	ok(signer.KeyHash() == verifier.KeyHash(), "the same key ID from both")
	verifiers := note.VerifierList(verifier)

	// Go's own tree over our leaves
	raw := read("leaves")
	var store memStore
	for i := int64(0); i*32 < int64(len(raw)); i++ {
		var h tlog.Hash
		copy(h[:], raw[i*32:])
		add, err := tlog.StoredHashesForRecordHash(i, h, &store)
		if err != nil {
			bail("%v", err)
		}
		store = append(store, add...)
	}
	size := int64(len(raw) / 32)

	cps := map[int64]checkpoint{}
	for _, sz := range []int64{3, 7, 300, 600} {
		name := fmt.Sprintf("checkpoint-%d", sz)
		msg := read(name)
		nt, err := note.Open(msg, verifiers)
		ok(err == nil, "Go opens "+name, err)
		if err != nil {
			continue
		}
		cp, err := parseCheckpoint(nt.Text)
		ok(err == nil && cp.size == sz && cp.origin == verifier.Name(), name+": origin and size", err)
		th, err := tlog.TreeHash(sz, &store)
		ok(err == nil && th == cp.root, name+": Go's tree hash of our leaves is the signed root", th, cp.root)
		again, err := note.Sign(&note.Note{Text: nt.Text}, signer)
		ok(err == nil && bytes.Equal(again, msg), name+": Go signs the text to the same bytes", string(again))
		cps[sz] = cp
	}

	for _, pr := range [][2]int64{{3, 7}, {7, 600}, {300, 600}} {
		name := fmt.Sprintf("proof-%d-%d", pr[0], pr[1])
		var proof tlog.TreeProof
		for _, l := range strings.Fields(string(read(name))) {
			h, err := tlog.ParseHash(l)
			if err != nil {
				bail("%v", err)
			}
			proof = append(proof, h)
		}
		old, nw := cps[pr[0]], cps[pr[1]]
		err := tlog.CheckTree(proof, nw.size, nw.root, old.size, old.root)
		ok(err == nil, "Go checks our consistency proof "+name, err)
		goProof, err := tlog.ProveTree(pr[1], pr[0], &store)
		ok(err == nil && fmt.Sprint(goProof) == fmt.Sprint(proof), name+": Go's own proof is the same hashes")
	}

	// tiles: every tile Go would make is ours, byte for byte, at our path
	// the tiles of a tree of `size`, from the tlog-tiles definition
	var tiles []tlog.Tile
	for l := 0; size>>(8*l) > 0; l++ {
		count := size >> (8 * l)
		for t := int64(0); t*256 < count; t++ {
			w := count - t*256
			if w > 256 {
				w = 256
			}
			tiles = append(tiles, tlog.Tile{H: 8, L: l, N: t, W: int(w)})
		}
	}
	same := 0
	for _, t := range tiles {
		want, err := tlog.ReadTileData(t, &store)
		if err != nil {
			bail("%v", err)
		}
		p := strings.Replace(t.Path(), "tile/8/", "tile/", 1)
		got, err := os.ReadFile(filepath.Join(dir, "tiles", p))
		if err == nil && bytes.Equal(got, want) {
			same++
		} else {
			fmt.Printf("#   tile %s differs or is missing (%v)\n", p, err)
		}
	}
	ok(same == len(tiles) && same > 0, fmt.Sprintf("all %d tiles of the 600-leaf tree are Go's, at the C2SP paths", len(tiles)))
	thr := tlog.TileHashReader(tlog.Tree{N: 600, Hash: cps[600].root}, dirTiles{filepath.Join(dir, "tiles")})
	th, err := tlog.TreeHash(600, thr)
	ok(err == nil && th == cps[600].root, "Go's tile reader authenticates our tiles against checkpoint-600", err)

	for i := int64(0); i < 7; i++ {
		name := fmt.Sprintf("receipt-%d", i)
		p, err := parseProof(read(name))
		if err != nil {
			ok(false, "Go parses "+name, err)
			continue
		}
		nt, err := note.Open(p.checkpoint, verifiers)
		if err != nil {
			ok(false, name+": Go opens its checkpoint", err)
			continue
		}
		cp, _ := parseCheckpoint(nt.Text)
		entry := p.extra[:234]
		leaf := tlog.RecordHash(entry)
		mh := sha256.Sum256(p.extra[234:])
		bh := sha256.Sum256(read(fmt.Sprintf("body-%d", i)))
		err = tlog.CheckRecord(p.proof, cp.size, cp.root, p.index, leaf)
		fromTiles, terr := tlog.ProveRecord(600, i, thr)
		ok(err == nil && p.index == i && bytes.Equal(mh[:], entry[106:138]) && bytes.Equal(bh[:], entry[170:202]) &&
			terr == nil && fmt.Sprint(fromTiles) == fmt.Sprint(p.proof),
			name+": Go checks inclusion, metadata and body hashes; the proof is the one Go reads from our tiles", err, terr)
	}

	for i := 0; i < 7; i++ {
		name := fmt.Sprintf("promise-%d", i)
		msg := read(name)
		nt, err := note.Open(msg, verifiers)
		ok(err == nil && strings.HasPrefix(nt.Text, "notary-promise/v1\norigin "+verifier.Name()+"\nentry "),
			"Go opens "+name, err)
	}

	// the other way: Go's own key, checkpoint and receipt, judged by notary-verify
	gskey, gvkey, err := note.GenerateKey(rand.Reader, "interop.example/log")
	if err != nil {
		bail("%v", err)
	}
	gsigner, _ := note.NewSigner(gskey)
	groot, _ := tlog.TreeHash(600, &store)
	gcp, err := note.Sign(&note.Note{Text: fmt.Sprintf("interop.example/log\n600\n%s\n", groot)}, gsigner)
	if err != nil {
		bail("%v", err)
	}
	gproof, _ := tlog.ProveRecord(600, 5, &store)
	p5, _ := parseProof(read("receipt-5"))
	var rc bytes.Buffer
	fmt.Fprintf(&rc, "c2sp.org/tlog-proof@v1\nextra %s\nindex 5\n", base64.StdEncoding.EncodeToString(p5.extra))
	for _, h := range gproof {
		fmt.Fprintf(&rc, "%s\n", h)
	}
	rc.WriteString("\n")
	rc.Write(gcp)
	os.WriteFile(filepath.Join(dir, "go.vkey"), []byte(gvkey+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "go-receipt"), rc.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "go-checkpoint"), gcp, 0o644)
	out, err := exec.Command(verifyBin, "--key-file", filepath.Join(dir, "go.vkey"), "receipt",
		filepath.Join(dir, "go-receipt"), "--body", filepath.Join(dir, "body-5")).CombinedOutput()
	ok(err == nil, "notary-verify accepts a receipt whose proof and signed checkpoint Go made", string(out), err)
	out, err = exec.Command(verifyBin, "--key-file", filepath.Join(dir, "log.vkey"), "receipt",
		filepath.Join(dir, "go-receipt")).CombinedOutput()
	code := -1
	if ee, isExit := err.(*exec.ExitError); isExit {
		code = ee.ExitCode()
	}
	ok(code == 1, "and refuses it with our log's key (exit 1)", string(out))

	fmt.Printf("1..%d\n", n)
	if failed > 0 {
		os.Exit(1)
	}
}
