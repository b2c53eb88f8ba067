package netsuite

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// TBA holds the four OAuth 1.0a Token-Based Authentication secrets of a
// NetSuite integration record and access token.
type TBA struct {
	ConsumerKey    string
	ConsumerSecret string
	TokenID        string
	TokenSecret    string
}

// PercentEncode encodes s as RFC 5849 §3.6 requires: every byte except the
// unreserved set ALPHA / DIGIT / "-" / "." / "_" / "~" becomes %XX with
// upper-case hex. url.QueryEscape differs (space as "+", "~" escaped), which
// would break the signature.
func PercentEncode(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// SignatureBaseString builds the RFC 5849 §3.4.1 base string:
// METHOD&pct(scheme://host/path)&pct(sorted, encoded params). params holds
// the oauth_* parameters (without oauth_signature and without realm, which
// NetSuite leaves out of the signature) plus every query parameter of the
// request. baseURL is the request URL without its query.
func SignatureBaseString(method, baseURL string, params url.Values) string {
	type pair struct{ k, v string }
	pairs := make([]pair, 0, len(params))
	for k, vs := range params {
		for _, v := range vs {
			pairs = append(pairs, pair{PercentEncode(k), PercentEncode(v)})
		}
	}
	// Sorted by encoded name, then encoded value (§3.4.1.3.2).
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	var norm strings.Builder
	for i, p := range pairs {
		if i > 0 {
			norm.WriteByte('&')
		}
		norm.WriteString(p.k)
		norm.WriteByte('=')
		norm.WriteString(p.v)
	}
	return strings.ToUpper(method) + "&" + PercentEncode(baseURL) + "&" + PercentEncode(norm.String())
}

// Signature is base64(HMAC-SHA256(pct(consumerSecret)&pct(tokenSecret), base)),
// not yet percent-encoded for the header.
func Signature(base, consumerSecret, tokenSecret string) string {
	mac := hmac.New(sha256.New, []byte(PercentEncode(consumerSecret)+"&"+PercentEncode(tokenSecret)))
	mac.Write([]byte(base))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// BaseURL is the URL a request is signed over: lower-case scheme and host
// (default port dropped) and the path, without query or fragment.
func BaseURL(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Host)
	if (scheme == "https" && strings.HasSuffix(host, ":443")) || (scheme == "http" && strings.HasSuffix(host, ":80")) {
		host = host[:strings.LastIndexByte(host, ':')]
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path
}

// AuthorizationHeader returns the OAuth header for one request with the
// given nonce and timestamp, in the order of NetSuite's documented example.
// realm is the account id as NetSuite spells it ("1234567_SB1"); it sits in
// the header but not in the signature.
func AuthorizationHeader(method string, u *url.URL, realm string, c TBA, nonce, timestamp string) string {
	params := url.Values{}
	for k, vs := range u.Query() {
		params[k] = vs
	}
	oauth := [][2]string{
		{"oauth_token", c.TokenID},
		{"oauth_consumer_key", c.ConsumerKey},
		{"oauth_nonce", nonce},
		{"oauth_timestamp", timestamp},
		{"oauth_signature_method", "HMAC-SHA256"},
		{"oauth_version", "1.0"},
	}
	for _, kv := range oauth {
		params.Add(kv[0], kv[1])
	}
	sig := Signature(SignatureBaseString(method, BaseURL(u), params), c.ConsumerSecret, c.TokenSecret)
	var b strings.Builder
	b.WriteString(`OAuth realm="` + PercentEncode(realm) + `"`)
	for _, kv := range oauth {
		b.WriteString(", " + kv[0] + `="` + PercentEncode(kv[1]) + `"`)
	}
	b.WriteString(`, oauth_signature="` + PercentEncode(sig) + `"`)
	return b.String()
}

// tbaSigner signs each attempt with a fresh nonce and timestamp: NetSuite
// rejects a reused nonce, so a retry must never resend the old header.
func tbaSigner(realm string, c TBA, now func() time.Time) func(*http.Request) error {
	return func(req *http.Request) error {
		req.Header.Set("Authorization", AuthorizationHeader(req.Method, req.URL, realm, c, newNonce(), strconv.FormatInt(now().Unix(), 10)))
		return nil
	}
}

// newNonce returns 20 random alphanumerics, the shape of NetSuite's example.
func newNonce() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var raw [20]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails (Go 1.24+)
	for i := range raw {
		raw[i] = alphabet[int(raw[i])%len(alphabet)]
	}
	return string(raw[:])
}
