package ledger

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
)

// Seal encrypts an address (AES-256-GCM under a key derived from the
// ledger's) so that it can cross a workflow history, as explain's lookup
// of the current state does, without the address appearing in it: only a
// holder of the ledger key (the worker) can open it.
func (s *SQL) Seal(email string) (string, error) {
	aead, err := s.sealer()
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, []byte(email), nil)), nil
}

// Unseal opens what Seal made with the same key.
func (s *SQL) Unseal(sealed string) (string, error) {
	aead, err := s.sealer()
	if err != nil {
		return "", err
	}
	b, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil || len(b) < aead.NonceSize() {
		return "", errors.New("ledger: not a sealed address")
	}
	plain, err := aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], nil)
	if err != nil {
		return "", errors.New("ledger: the sealed address does not open with this ledger's key")
	}
	return string(plain), nil
}

func (s *SQL) sealer() (cipher.AEAD, error) { return s.aead("optout-sync explain seal v1") }

// aead is AES-256-GCM under a key derived from the ledger's for one use
// (label), so that what is sealed for one use does not open as another.
func (s *SQL) aead(label string) (cipher.AEAD, error) {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(label))
	block, err := aes.NewCipher(m.Sum(nil))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
