package codec

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"go.temporal.io/sdk/converter"
)

// MaxRequestBody bounds a request to the codec server: Temporal refuses a
// payload over 2 MB, and the Web UI and the CLI send one event's payloads
// at a time.
const MaxRequestBody = 32 << 20

// HandlerOptions configure Handler.
type HandlerOptions struct {
	// Origins are the Web UI origins ("https://temporal.example.com") that
	// may call the server from a browser. A request carrying another
	// Origin is refused.
	Origins []string
	// Token, when set, must come as "Authorization: Bearer <token>".
	Token string
	// Logger receives refused requests (never a body).
	Logger *slog.Logger
}

// Handler serves c over Temporal's codec-server protocol: POST .../encode
// and .../decode with a JSON {"payloads": [...]} body (the X-Namespace
// header is accepted and not needed: the keys are the same for every
// namespace), with CORS for the configured origins, credentials included,
// as the Web UI's codec setting needs, and an optional bearer token.
func Handler(c *Codec, opts HandlerOptions) http.Handler {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var digest []byte
	if opts.Token != "" {
		d := sha256.Sum256([]byte(opts.Token))
		digest = d[:]
	}
	return &handler{
		codec:   converter.NewPayloadCodecHTTPHandler(c),
		origins: slices.Clone(opts.Origins),
		token:   digest,
		log:     log,
	}
}

type handler struct {
	codec   http.Handler
	origins []string
	token   []byte // SHA-256 of the token; nil: no token
	log     *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin != "" {
		if !slices.Contains(h.origins, origin) {
			h.refuse(w, r, http.StatusForbidden, "origin not allowed")
			return
		}
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Set("Access-Control-Allow-Credentials", "true")
	}
	w.Header().Add("Vary", "Origin")
	if r.Method == http.MethodOptions {
		// A preflight carries no credentials: it is answered without the token.
		if origin == "" {
			h.refuse(w, r, http.StatusBadRequest, "preflight without Origin")
			return
		}
		w.Header().Set("Access-Control-Allow-Methods", "POST, OPTIONS")
		w.Header().Set("Access-Control-Allow-Headers", "Content-Type,X-Namespace,Authorization")
		w.Header().Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if h.token != nil && !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="optout-sync codec"`)
		h.refuse(w, r, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST, OPTIONS")
		h.refuse(w, r, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	if p := r.URL.Path; !strings.HasSuffix(p, "/encode") && !strings.HasSuffix(p, "/decode") {
		h.refuse(w, r, http.StatusNotFound, "not /encode or /decode")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBody)
	h.codec.ServeHTTP(w, r)
}

// authorized compares digests in constant time, so that neither the
// token's bytes nor its length show in the time an answer takes.
func (h *handler) authorized(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	d := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(d[:], h.token) == 1
}

func (h *handler) refuse(w http.ResponseWriter, r *http.Request, status int, reason string) {
	h.log.Warn("codec server refused a request", "status", status, "reason", reason,
		"method", bounded(r.Method), "path", bounded(r.URL.Path), "origin", bounded(r.Header.Get("Origin")), "remote", r.RemoteAddr)
	http.Error(w, http.StatusText(status), status)
}

// bounded cuts unauthenticated text to a length a log line can hold.
func bounded(s string) string {
	const max = 200
	if len(s) > max {
		return strings.ToValidUTF8(s[:max], "") + "…"
	}
	return s
}
