package mailchimp

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// Webhook deliveries (api-wire-facts §1.9): a form-encoded POST with
// PHP-style bracket keys ("data[email]"), optionally signed with
// "X-Mailchimp-Signature: t=<unix>,v1=<hex HMAC-SHA256 of t.body>".

// MaxWebhookBody bounds a delivery: one member's event with its merge
// fields is a few kilobytes.
const MaxWebhookBody = 64 << 10

// maxWebhookKeys bounds the form keys of one delivery: far more than an
// audience's merge fields and groups, well under what 64 KiB could carry.
const maxWebhookKeys = 2000

// SignatureTolerance is how far a signed delivery's timestamp may be from
// the receiver's clock.
const SignatureTolerance = 5 * time.Minute

// SignatureHeader carries a delivery's signature.
const SignatureHeader = "X-Mailchimp-Signature"

// tokenPattern: a path token is long enough not to be guessed (at least
// 128 bits as base64url or hex) and fits a URL path segment unescaped.
var tokenPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{32,128}$`)

// webhook is what a Client needs to receive its integration's deliveries:
// secret is the configured signing secret, learned the one the platform
// gave the webhook on creation.
type webhook struct {
	audience, token, secret string
	learned                 atomic.Pointer[string]
}

// UseSigningSecret sets the signing secret learned when the webhook was
// created. Unlike a configured one, which every delivery must match, it is
// checked on the deliveries that carry a signature: whether the platform
// signs every delivery is not documented (api-wire-facts §1.9), and the
// path token authenticates a delivery without one.
func (c *Client) UseSigningSecret(secret string) {
	if c.hook != nil && secret != "" {
		c.hook.learned.Store(&secret)
	}
}

var _ connectors.Webhooks = (*Client)(nil)

// WebhookToken is the secret path token of the integration's endpoint, ""
// when the integration receives no webhooks.
func (c *Client) WebhookToken() string {
	if c.hook == nil {
		return ""
	}
	return c.hook.token
}

func rejected(format string, args ...any) error {
	return fmt.Errorf("%w: %s", connectors.ErrWebhookRejected, fmt.Sprintf(format, args...))
}

// ParseWebhook checks one delivery for the client's audience and returns
// its event. A delivery for another audience, unsigned or badly signed
// when a signing secret is set, stale, or not a member event is refused
// with an error wrapping connectors.ErrWebhookRejected.
func (c *Client) ParseWebhook(h http.Header, body []byte, now time.Time) ([]connectors.Event, error) {
	if c.hook == nil {
		return nil, rejected("this integration receives no webhooks")
	}
	secret, sig := c.hook.secret, h.Get(SignatureHeader)
	if l := c.hook.learned.Load(); secret == "" && l != nil && sig != "" {
		secret = *l
	}
	if err := CheckSignature(sig, body, secret, now); err != nil {
		return nil, err
	}
	if mt, _, err := mime.ParseMediaType(h.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, rejected("content type %q is not application/x-www-form-urlencoded", h.Get("Content-Type"))
	}
	ev, err := ParseWebhookBody(body)
	if err != nil {
		return nil, err
	}
	if ev.Audience != c.hook.audience {
		return nil, rejected("data[list_id] is not the integration's audience")
	}
	return []connectors.Event{ev}, nil
}

// CheckSignature verifies header against body under secret; with no
// secret, any header passes (the path token authenticates the delivery).
func CheckSignature(header string, body []byte, secret string, now time.Time) error {
	if secret == "" {
		return nil
	}
	if header == "" {
		return rejected("%s missing", SignatureHeader)
	}
	var ts string
	var sigs []string
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return rejected("%s has no timestamp", SignatureHeader)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > SignatureTolerance || d < -SignatureTolerance {
		return rejected("%s timestamp is %s away from now (tolerance %s)", SignatureHeader, d.Round(time.Second), SignatureTolerance)
	}
	want := Sign(secret, sec, body)
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return rejected("%s does not match", SignatureHeader)
}

// Sign is the v1 signature of body at unix time t: hex HMAC-SHA256 of
// "<t>.<body>" under secret.
func Sign(secret string, t int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(t, 10) + "."))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// firedAtLayout is fired_at's format ("2009-03-26 21:40:57"); its time
// zone is not documented: taken as UTC (UNCONFIRMED).
const firedAtLayout = "2006-01-02 15:04:05"

// ParseWebhookBody parses a form-encoded delivery into an event. It
// accepts the member events (unsubscribe, cleaned, subscribe, profile,
// upemail); anything else, or one without the fields it needs, is refused.
func ParseWebhookBody(body []byte) (connectors.Event, error) {
	if len(body) > MaxWebhookBody {
		return connectors.Event{}, rejected("body over %d bytes", MaxWebhookBody)
	}
	if strings.Count(string(body), "&") >= maxWebhookKeys {
		return connectors.Event{}, rejected("more than %d form fields", maxWebhookKeys)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return connectors.Event{}, rejected("body is not form-encoded")
	}
	one := func(k string) string {
		if v := form[k]; len(v) == 1 {
			return strings.TrimSpace(v[0])
		}
		return ""
	}
	ev := connectors.Event{Type: connectors.EventType(one("type")), Audience: one("data[list_id]"), Reason: one("data[reason]")}
	if ev.Type == connectors.EventUnsubscribe {
		ev.Action = one("data[action]")
	}
	switch ev.Type {
	case connectors.EventUnsubscribe, connectors.EventCleaned, connectors.EventSubscribe, connectors.EventProfile:
		ev.Email = one("data[email]")
	case connectors.EventAddressChange:
		// upemail's field names are UNCONFIRMED (api-wire-facts §5.3):
		// data[new_email] and data[old_email], as the old documentation had.
		ev.Email, ev.OldEmail = one("data[new_email]"), one("data[old_email]")
		if _, ok := connectors.NormalizeEmail(ev.OldEmail); !ok {
			return connectors.Event{}, rejected("upemail without a valid data[old_email]")
		}
	case "":
		return connectors.Event{}, rejected("no type")
	default:
		return connectors.Event{}, rejected("type %q is not a member event", truncate(string(ev.Type), 40))
	}
	if _, ok := connectors.NormalizeEmail(ev.Email); !ok {
		return connectors.Event{}, rejected("%s without a valid address", ev.Type)
	}
	if ev.Audience == "" || !audiencePattern.MatchString(ev.Audience) {
		return connectors.Event{}, rejected("no valid data[list_id]")
	}
	fired := one("fired_at")
	t, err := time.Parse(firedAtLayout, fired)
	if err != nil {
		if t, err = time.Parse(time.RFC3339, fired); err != nil {
			return connectors.Event{}, rejected("fired_at %q is not a time", truncate(fired, 40))
		}
	}
	ev.FiredAt = t.UTC()
	return ev, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// webhookDoc is a list webhook as the API reads and writes it.
type webhookDoc struct {
	ID      string          `json:"id,omitempty"`
	URL     string          `json:"url"`
	Events  map[string]bool `json:"events"`
	Sources map[string]bool `json:"sources"`
	ListID  string          `json:"list_id,omitempty"`
	// SigningSecret is answered once, when the webhook is created.
	SigningSecret string `json:"signing_secret,omitempty"`
}

// The events and sources the product registers: member events only, and
// the person's and the account users' changes, never the API's: the
// product's own writes must not come back as new events (the poll covers
// other API clients).
var (
	hookEvents = map[string]bool{
		"subscribe": true, "unsubscribe": true, "profile": true, "cleaned": true, "upemail": true, "campaign": false,
	}
	hookSources = map[string]bool{"user": true, "admin": true, "api": false}
)

// RegisterWebhook makes one webhook of the audience point at u with the
// product's events and sources. A webhook whose URL has u's path up to
// its last segment (the token) is the integration's: it is updated in
// place (a new host or token), further ones are deleted; with none, one is
// created (Mailchimp then validates u with a GET).
func (c *Client) RegisterWebhook(ctx context.Context, u string) (connectors.WebhookRegistration, error) {
	var reg connectors.WebhookRegistration
	if c.hook == nil {
		return reg, fmt.Errorf("mailchimp: this integration receives no webhooks")
	}
	base := "/lists/" + url.PathEscape(c.hook.audience) + "/webhooks"
	var list struct {
		Webhooks []webhookDoc `json:"webhooks"`
	}
	if _, err := c.do(ctx, http.MethodGet, base, nil, nil, &list); err != nil {
		return reg, err
	}
	// Matched by path, not host: a new public address moves the webhook.
	mine := endpointOf(u)
	var ours []webhookDoc
	for _, w := range list.Webhooks {
		if endpointOf(w.URL) == mine {
			ours = append(ours, w)
		}
	}
	want := webhookDoc{URL: u, Events: hookEvents, Sources: hookSources}
	if len(ours) == 0 {
		var created webhookDoc
		if _, err := c.do(ctx, http.MethodPost, base, nil, want, &created); err != nil {
			return reg, err
		}
		return connectors.WebhookRegistration{Changed: true, SigningSecret: created.SigningSecret}, nil
	}
	for _, extra := range ours[1:] {
		if _, err := c.do(ctx, http.MethodDelete, base+"/"+url.PathEscape(extra.ID), nil, nil, nil); err != nil {
			return reg, err
		}
	}
	w := ours[0]
	reg.Changed = len(ours) > 1
	if w.URL == u && same(w.Events, hookEvents) && same(w.Sources, hookSources) {
		return reg, nil
	}
	if _, err := c.do(ctx, http.MethodPatch, base+"/"+url.PathEscape(w.ID), nil, want, nil); err != nil {
		return reg, err
	}
	reg.Changed = true
	return reg, nil
}

// endpointOf is a webhook URL's path without its last segment (the token).
func endpointOf(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return path.Dir(strings.TrimSuffix(p.Path, "/"))
}

func same(got, want map[string]bool) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}
