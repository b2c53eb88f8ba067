package emulator

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sync"
	"time"
)

var (
	keyOnce    sync.Once
	sharedKey  *rsa.PrivateKey
	sharedCert []byte
)

// SigningKey is an RSA key and a self-signed certificate (DER) for an
// emulator's app that signs client assertions (Salesforce's connected
// app, Dynamics' Entra application). It is generated once per process: RSA
// key generation is slow under -race, and every emulator can share it.
func SigningKey() (*rsa.PrivateKey, []byte) {
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "optoutsync-emulator"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			panic(err)
		}
		sharedKey, sharedCert = k, der
	})
	return sharedKey, sharedCert
}
