package netsuitetest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const tokenPath = "/services/rest/auth/oauth2/v1/token"

// timestampWindow is how far an oauth_timestamp may be from the server's
// clock, and how long a nonce is remembered. UNCONFIRMED: NetSuite's own
// window is not published; 5 minutes is the common OAuth 1.0a choice.
const timestampWindow = 5 * time.Minute

// authed checks the Authorization header (OAuth 1.0a TBA or an M2M bearer
// token) before h runs.
func (s *Server) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		var ok bool
		scheme := "OAuth"
		switch {
		case strings.HasPrefix(auth, "OAuth "):
			ok = s.verifyTBA(r, auth)
		case strings.HasPrefix(auth, "Bearer "):
			scheme = "Bearer"
			ok = s.verifyBearer(strings.TrimPrefix(auth, "Bearer "))
		}
		if !ok {
			s.mu.Lock()
			s.badAuth++
			s.mu.Unlock()
			if scheme == "Bearer" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+s.AccountID+`", error="invalid_token", error_description="Invalid login attempt."`)
			} else {
				w.Header().Set("WWW-Authenticate", `OAuth realm="`+s.AccountID+`", error="token_rejected", error_description="Invalid login attempt."`)
			}
			writeError(w, http.StatusUnauthorized, "INVALID_LOGIN", "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at Setup > Users/Roles > User Management > View Login Audit Trail.", "")
			return
		}
		h(w, r)
	}
}

// parseOAuthHeader splits `OAuth k="v", k2="v2"` into decoded values.
func parseOAuthHeader(h string) (map[string]string, bool) {
	out := map[string]string{}
	for part := range strings.SplitSeq(strings.TrimPrefix(h, "OAuth "), ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			return nil, false
		}
		dv, err := url.PathUnescape(v[1 : len(v)-1])
		if err != nil {
			return nil, false
		}
		out[strings.TrimSpace(k)] = dv
	}
	return out, true
}

// pct is RFC 5849 percent-encoding. It is written again here rather than
// taken from the client, so that a bug in the client's signer cannot be
// mirrored by the emulator that tests it.
func pct(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// OAuthBaseString is the RFC 5849 base string the server expects for a
// request: METHOD & scheme://host/path & sorted parameters (the oauth_*
// header parameters except realm and oauth_signature, plus the query).
// Exported so the emulator's own algorithm is tested against Oracle's
// published vector.
func OAuthBaseString(method, baseURL string, params map[string][]string) string {
	var pairs []string
	for k, vs := range params {
		for _, v := range vs {
			pairs = append(pairs, pct(k)+"="+pct(v))
		}
	}
	// Sorting "k=v" strings orders by name then value, since "=" sorts
	// below every unreserved character.
	sort.Strings(pairs)
	return strings.ToUpper(method) + "&" + pct(baseURL) + "&" + pct(strings.Join(pairs, "&"))
}

// OAuthSignature is base64(HMAC-SHA256(pct(cs)&pct(ts), base)).
func OAuthSignature(base, consumerSecret, tokenSecret string) string {
	m := hmac.New(sha256.New, []byte(pct(consumerSecret)+"&"+pct(tokenSecret)))
	m.Write([]byte(base))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// requestBaseURL is how the server sees the URL a client signed: scheme,
// lower-case host (as the client addressed it) and path, no query.
func requestBaseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := strings.ToLower(r.Host)
	if scheme == "http" {
		host = strings.TrimSuffix(host, ":80")
	} else {
		host = strings.TrimSuffix(host, ":443")
	}
	return scheme + "://" + host + r.URL.EscapedPath()
}

func (s *Server) verifyTBA(r *http.Request, header string) bool {
	p, ok := parseOAuthHeader(header)
	if !ok {
		return false
	}
	if !strings.EqualFold(p["realm"], s.AccountID) || p["oauth_consumer_key"] != s.ConsumerKey || p["oauth_token"] != s.TokenID ||
		p["oauth_signature_method"] != "HMAC-SHA256" || (p["oauth_version"] != "" && p["oauth_version"] != "1.0") || p["oauth_nonce"] == "" {
		return false
	}
	params := map[string][]string{}
	for k, vs := range r.URL.Query() {
		params[k] = vs
	}
	for k, v := range p {
		if k != "realm" && k != "oauth_signature" {
			params[k] = append(params[k], v)
		}
	}
	want := OAuthSignature(OAuthBaseString(r.Method, requestBaseURL(r), params), s.ConsumerSecret, s.TokenSecret)
	if !hmac.Equal([]byte(want), []byte(p["oauth_signature"])) {
		return false
	}
	ts, err := strconv.ParseInt(p["oauth_timestamp"], 10, 64)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if d := now.Sub(time.Unix(ts, 0)); d > timestampWindow || d < -timestampWindow {
		return false
	}
	// A nonce may be used once: a replayed request is refused.
	if _, seen := s.nonces[p["oauth_nonce"]]; seen {
		return false
	}
	if len(s.nonces) > 100_000 {
		for n, t := range s.nonces {
			if now.Sub(t) > 2*timestampWindow {
				delete(s.nonces, n)
			}
		}
	}
	s.nonces[p["oauth_nonce"]] = now
	return true
}

func (s *Server) verifyBearer(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.tokens[tok]
	return ok && s.now().Before(exp)
}

// ExpireTokens makes every issued M2M access token invalid, as if an hour
// had passed or the integration had been revoked.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// oauthError is the OAuth 2.0 error answer of the token endpoint.
// UNCONFIRMED: NetSuite documents invalid_grant for an expired assertion;
// which status and code it gives each other failure is not published. We
// answer 400 invalid_request / unsupported_grant_type for a malformed
// request, 401 invalid_client for an unknown client or certificate, and
// 400 invalid_grant for an assertion that fails verification.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, "application/json", map[string]string{"error": code, "error_description": desc})
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, 400, "invalid_request", "malformed form body")
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		oauthError(w, 400, "unsupported_grant_type", "grant_type must be client_credentials")
		return
	}
	if r.PostForm.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" || r.PostForm.Get("client_assertion") == "" {
		oauthError(w, 400, "invalid_request", "a jwt-bearer client_assertion is required")
		return
	}
	s.mu.Lock()
	clock := s.clock
	s.mu.Unlock()
	claims := jwt.MapClaims{}
	t, err := jwt.ParseWithClaims(r.PostForm.Get("client_assertion"), claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != s.CertificateID {
			return nil, fmt.Errorf("unknown certificate id")
		}
		return s.publicKey, nil
	},
		// NetSuite accepts PS* and ES*, not RS256.
		jwt.WithValidMethods([]string{"PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}),
		jwt.WithTimeFunc(clock),
		jwt.WithAudience(requestBaseURL(r)),
		jwt.WithIssuer(s.ClientID),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	)
	if err != nil || !t.Valid {
		if t != nil && t.Header["kid"] != s.CertificateID {
			oauthError(w, 401, "invalid_client", "unknown certificate id")
			return
		}
		oauthError(w, 400, "invalid_grant", "the client assertion was rejected")
		return
	}
	iat, _ := claims.GetIssuedAt()
	exp, _ := claims.GetExpirationTime()
	if iat == nil || exp.Sub(iat.Time) > time.Hour {
		oauthError(w, 400, "invalid_grant", "exp must be at most one hour after iat")
		return
	}
	if !hasScope(claims["scope"], "rest_webservices") {
		oauthError(w, 400, "invalid_scope", "the rest_webservices scope is required")
		return
	}
	tok := randomHex(32)
	s.mu.Lock()
	s.tokens[tok] = s.now().Add(time.Hour)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, "application/json", map[string]any{"access_token": tok, "expires_in": 3600, "token_type": "Bearer"})
}

// hasScope accepts the scope claim as a comma-separated string or an array,
// the two forms Oracle's docs show.
func hasScope(claim any, want string) bool {
	switch v := claim.(type) {
	case string:
		return slices.Contains(strings.Split(v, ","), want)
	case []any:
		for _, x := range v {
			if x == want {
				return true
			}
		}
	}
	return false
}
