package netsuite

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/optoutsync/optoutsync/connectors"
)

// M2M holds the OAuth 2.0 client-credentials (machine-to-machine) setup of
// a NetSuite integration: the integration's client id, the certificate id
// NetSuite assigned when the public certificate was uploaded, and the
// matching private key.
type M2M struct {
	ClientID      string
	CertificateID string
	// PrivateKey is PEM: "EC PRIVATE KEY", "RSA PRIVATE KEY" or PKCS#8
	// "PRIVATE KEY". RSA keys sign with PS256 (NetSuite accepts no RS256),
	// EC keys with ES256/ES384/ES512 by curve.
	PrivateKey string
	// Scopes default to ["rest_webservices"].
	Scopes []string
}

// tokenPath is the M2M token endpoint under the account host.
const tokenPath = "/services/rest/auth/oauth2/v1/token"

// tokenSource fetches and caches M2M access tokens.
type tokenSource struct {
	cfg      M2M
	key      crypto.Signer
	method   jwt.SigningMethod
	tokenURL string
	http     *http.Client
	now      func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time
}

// parsePrivateKey reads a PEM EC or RSA key and picks the JWT algorithm.
func parsePrivateKey(pemText string) (crypto.Signer, jwt.SigningMethod, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, nil, errors.New("not PEM")
	}
	var key any
	var err error
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, nil, fmt.Errorf("unsupported PEM block %q", block.Type)
	}
	if err != nil {
		return nil, nil, err
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, jwt.SigningMethodPS256, nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return k, jwt.SigningMethodES256, nil
		case elliptic.P384():
			return k, jwt.SigningMethodES384, nil
		case elliptic.P521():
			return k, jwt.SigningMethodES512, nil
		}
		return nil, nil, errors.New("unsupported EC curve")
	}
	return nil, nil, fmt.Errorf("unsupported key type %T", key)
}

// refreshMargin is how long before expiry a cached token is replaced.
const refreshMargin = 5 * time.Minute

// Token returns a cached access token or fetches a new one.
func (s *tokenSource) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != "" && s.now().Before(s.expires) {
		return s.token, nil
	}
	tok, ttl, err := s.fetch(ctx)
	if err != nil {
		return "", err
	}
	// Replace the token a little before it lapses, so that no request
	// starts with a token about to expire in flight.
	s.token, s.expires = tok, s.now().Add(ttl-min(refreshMargin, ttl/2))
	return tok, nil
}

// invalidate drops the cached token after NetSuite rejected it.
func (s *tokenSource) invalidate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = ""
}

// assertion builds the client_assertion JWT NetSuite documents: kid = the
// certificate id, iss = client id, aud = the token endpoint, scope as an
// array (as in Oracle's sample JWT), exp one hour after iat at most.
func (s *tokenSource) assertion() (string, error) {
	now := s.now()
	scopes := s.cfg.Scopes
	if len(scopes) == 0 {
		scopes = []string{"rest_webservices"}
	}
	claims := jwt.MapClaims{
		"iss":   s.cfg.ClientID,
		"scope": scopes,
		"aud":   s.tokenURL,
		"iat":   now.Unix(),
		"exp":   now.Add(time.Hour).Unix(),
	}
	t := jwt.NewWithClaims(s.method, claims)
	t.Header["kid"] = s.cfg.CertificateID
	return t.SignedString(s.key)
}

func (s *tokenSource) fetch(ctx context.Context) (string, time.Duration, error) {
	a, err := s.assertion()
	if err != nil {
		return "", 0, fmt.Errorf("netsuite: signing the M2M client assertion: %w", err)
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {a},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("netsuite: M2M token request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", 0, fmt.Errorf("netsuite: M2M token response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		// The token endpoint answers in OAuth 2.0 form ({"error": ...}),
		// not with o:errorDetails. A 4xx there means the assertion, key or
		// client was refused: retrying cannot help.
		var oe struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		_ = json.Unmarshal(body, &oe)
		apiErr := classify(resp, body)
		if resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			apiErr.Kind = connectors.ErrUnauthorized
		}
		if oe.Error != "" {
			apiErr.Code, apiErr.Detail = oe.Error, oe.Description
		}
		return "", 0, apiErr
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		return "", 0, errors.New("netsuite: M2M token response without access_token")
	}
	if !strings.EqualFold(tr.TokenType, "bearer") {
		return "", 0, fmt.Errorf("netsuite: M2M token type %q, want bearer", tr.TokenType)
	}
	ttl := time.Duration(tr.ExpiresIn) * time.Second
	if ttl <= 0 {
		ttl = time.Hour // NetSuite documents 60 minutes
	}
	return tr.AccessToken, ttl, nil
}
