// Issue a mod_notary contract link with Go's standard library (docs/token.md).
//
// usage: go run issue_token.go KEY.pem CONSUMER NOTARY_URL MERCHANT PATH [JTI [ALG]]
//
//	(the arguments as in issue_token.py)
//
// No module outside the standard library (Go 1.15 or later; Debian:
// golang-go). A JOSE library such as go-jose does the same; this shows
// what it must produce.
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

const lifetime = 600 // seconds; the notary accepts at most NotaryTokenMaxAge (900)

var b64url = base64.RawURLEncoding

type claims struct {
	Aud string            `json:"aud"`
	Cnf map[string]string `json:"cnf"`
	Iat int64             `json:"iat"`
	Exp int64             `json:"exp"`
	Jti string            `json:"jti,omitempty"`
}

// loadKey reads a PEM private key: PKCS#8, or traditional EC or RSA.
func loadKey(file string) (crypto.Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			return nil, errors.New(file + ": no private key in PEM")
		}
		switch block.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, err
			}
			if signer, ok := k.(crypto.Signer); ok {
				return signer, nil
			}
			return nil, errors.New(file + ": not a signing key")
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(block.Bytes)
		}
	}
}

func consumerCertDER(consumer string) ([]byte, error) {
	if strings.HasPrefix(consumer, ":") { // a Client-Cert header value, ":BASE64-DER:"
		return base64.StdEncoding.DecodeString(strings.Trim(strings.TrimSpace(consumer), ":"))
	}
	data, err := os.ReadFile(consumer)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New(consumer + ": not a PEM certificate")
	}
	return block.Bytes, nil
}

func defaultAlg(key crypto.Signer) (string, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return "RS256", nil
	case ed25519.PrivateKey:
		return "EdDSA", nil
	case *ecdsa.PrivateKey:
		switch k.Curve.Params().Name {
		case "P-256":
			return "ES256", nil
		case "P-384":
			return "ES384", nil
		}
	}
	return "", errors.New("the key must be RSA, EC P-256, EC P-384 or Ed25519")
}

func sign(alg string, key crypto.Signer, input []byte) ([]byte, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		h := sha256.Sum256(input)
		if alg == "RS256" {
			return rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
		}
		if alg == "PS256" {
			return rsa.SignPSS(rand.Reader, k, crypto.SHA256, h[:],
				&rsa.PSSOptions{SaltLength: 32})
		}
	case *ecdsa.PrivateKey:
		var h []byte
		size := (k.Curve.Params().BitSize + 7) / 8
		if alg == "ES256" && size == 32 {
			sum := sha256.Sum256(input)
			h = sum[:]
		} else if alg == "ES384" && size == 48 {
			sum := sha512.Sum384(input)
			h = sum[:]
		} else {
			break
		}
		r, s, err := ecdsa.Sign(rand.Reader, k, h)
		if err != nil {
			return nil, err
		}
		// JWS wants R || S, each as wide as the curve, not DER
		sig := make([]byte, 2*size)
		r.FillBytes(sig[:size])
		s.FillBytes(sig[size:])
		return sig, nil
	case ed25519.PrivateKey:
		if alg == "EdDSA" {
			return ed25519.Sign(k, input), nil
		}
	}
	return nil, fmt.Errorf("alg %s does not fit this key", alg)
}

func issueToken(key crypto.Signer, certDER []byte, audience, jti, alg string) (string, error) {
	var err error
	if alg == "" {
		if alg, err = defaultAlg(key); err != nil {
			return "", err
		}
	}
	now := time.Now().Unix()
	x5t := sha256.Sum256(certDER)
	header, err := json.Marshal(map[string]string{"alg": alg, "typ": "notary+jwt"})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims{Aud: audience,
		Cnf: map[string]string{"x5t#S256": b64url.EncodeToString(x5t[:])},
		Iat: now, Exp: now + lifetime, Jti: jti})
	if err != nil {
		return "", err
	}
	input := b64url.EncodeToString(header) + "." + b64url.EncodeToString(payload)
	sig, err := sign(alg, key, []byte(input))
	if err != nil {
		return "", err
	}
	return input + "." + b64url.EncodeToString(sig), nil
}

func contractLink(notaryURL, merchant, path, token string) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return strings.TrimRight(notaryURL, "/") + "/" + merchant + path + sep + "notary_token=" + token
}

func run(args []string) error {
	jti, alg := "", ""
	if len(args) > 5 {
		jti = args[5]
	}
	if len(args) > 6 {
		alg = args[6]
	}
	key, err := loadKey(args[0])
	if err != nil {
		return err
	}
	der, err := consumerCertDER(args[1])
	if err != nil {
		return err
	}
	u, err := url.Parse(args[2])
	if err != nil {
		return err
	}
	// aud: the notary's host only, no port
	token, err := issueToken(key, der, u.Hostname(), jti, alg)
	if err != nil {
		return err
	}
	fmt.Println(contractLink(args[2], args[3], args[4], token))
	return nil
}

func main() {
	if len(os.Args) < 6 || len(os.Args) > 8 {
		fmt.Fprintln(os.Stderr, "usage: issue_token KEY.pem CONSUMER NOTARY_URL MERCHANT PATH [JTI [ALG]]")
		os.Exit(2)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "issue_token:", err)
		os.Exit(1)
	}
}
