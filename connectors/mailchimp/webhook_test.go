package mailchimp_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
)

const hookToken = "0123456789abcdef0123456789abcdef"

func hookClient(t *testing.T, s *mailchimptest.Server, secret string) *mailchimp.Client {
	t.Helper()
	c, err := mailchimp.New(mailchimp.Options{APIKey: s.APIKey, BaseURL: s.URL, RetryMax: 1,
		Webhook: &mailchimp.WebhookOptions{Audience: "L1", Token: hookToken, SigningSecret: secret}})
	require.NoError(t, err)
	return c
}

func form(kv ...string) []byte {
	v := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return []byte(v.Encode())
}

var formHeader = http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}

func TestParseWebhookEvents(t *testing.T) {
	s, _, _ := newEnv(t, mailchimptest.Options{})
	c := hookClient(t, s, "")
	fired := time.Date(2009, 3, 26, 21, 40, 57, 0, time.UTC)
	for _, tc := range []struct {
		body []byte
		want connectors.Event
	}{
		{form("type", "unsubscribe", "fired_at", "2009-03-26 21:40:57", "data[action]", "unsub", "data[reason]", "manual",
			"data[id]", "8a25ff1d98", "data[list_id]", "L1", "data[email]", "api+unsub@mailchimp.com", "data[merges][FNAME]", "Ann"),
			connectors.Event{Type: connectors.EventUnsubscribe, Audience: "L1", Email: "api+unsub@mailchimp.com", FiredAt: fired, Action: "unsub", Reason: "manual"}},
		{form("type", "cleaned", "fired_at", "2009-03-26 21:40:57", "data[list_id]", "L1", "data[email]", "b@x.com", "data[reason]", "hard"),
			connectors.Event{Type: connectors.EventCleaned, Audience: "L1", Email: "b@x.com", FiredAt: fired, Reason: "hard"}},
		{form("type", "upemail", "fired_at", "2009-03-26T21:40:57Z", "data[list_id]", "L1", "data[new_email]", "new@x.com", "data[old_email]", "old@x.com"),
			connectors.Event{Type: connectors.EventAddressChange, Audience: "L1", Email: "new@x.com", OldEmail: "old@x.com", FiredAt: fired}},
		{form("type", "subscribe", "fired_at", "2009-03-26 21:40:57", "data[list_id]", "L1", "data[email]", "c@x.com"),
			connectors.Event{Type: connectors.EventSubscribe, Audience: "L1", Email: "c@x.com", FiredAt: fired}},
	} {
		evs, err := c.ParseWebhook(formHeader, tc.body, time.Now())
		require.NoError(t, err)
		require.Equal(t, []connectors.Event{tc.want}, evs)
	}
}

func TestParseWebhookRejects(t *testing.T) {
	s, _, _ := newEnv(t, mailchimptest.Options{})
	signed := hookClient(t, s, "sekret")
	plain := hookClient(t, s, "")
	now := time.Unix(1_700_000_000, 0)
	good := form("type", "unsubscribe", "fired_at", "2009-03-26 21:40:57", "data[list_id]", "L1", "data[email]", "a@x.com")
	sig := func(secret string, at time.Time, body []byte) http.Header {
		return http.Header{"Content-Type": {"application/x-www-form-urlencoded"},
			mailchimp.SignatureHeader: {"t=" + strconv.FormatInt(at.Unix(), 10) + ",v1=" + mailchimp.Sign(secret, at.Unix(), body)}}
	}
	_, err := signed.ParseWebhook(sig("sekret", now, good), good, now)
	require.NoError(t, err, "a well-signed delivery passes")

	for name, tc := range map[string]struct {
		c    *mailchimp.Client
		h    http.Header
		body []byte
		want string
	}{
		"unsigned":         {signed, formHeader, good, "missing"},
		"wrong secret":     {signed, sig("other", now, good), good, "does not match"},
		"tampered body":    {signed, sig("sekret", now, good), append(append([]byte{}, good...), "&x=1"...), "does not match"},
		"stale":            {signed, sig("sekret", now.Add(-6*time.Minute), good), good, "tolerance"},
		"future":           {signed, sig("sekret", now.Add(6*time.Minute), good), good, "tolerance"},
		"json":             {plain, http.Header{"Content-Type": {"application/json"}}, good, "content type"},
		"other audience":   {plain, formHeader, form("type", "unsubscribe", "fired_at", "2009-03-26 21:40:57", "data[list_id]", "L2", "data[email]", "a@x.com"), "audience"},
		"no type":          {plain, formHeader, form("data[list_id]", "L1", "data[email]", "a@x.com"), "no type"},
		"campaign":         {plain, formHeader, form("type", "campaign", "data[list_id]", "L1"), "not a member event"},
		"bad address":      {plain, formHeader, form("type", "unsubscribe", "fired_at", "2009-03-26 21:40:57", "data[list_id]", "L1", "data[email]", "nope"), "valid address"},
		"bad time":         {plain, formHeader, form("type", "unsubscribe", "fired_at", "yesterday", "data[list_id]", "L1", "data[email]", "a@x.com"), "not a time"},
		"repeated field":   {plain, formHeader, []byte(string(good) + "&type=subscribe"), "no type"},
		"oversized":        {plain, formHeader, append(append([]byte{}, good...), ("&data[merges][X]=" + strings.Repeat("a", mailchimp.MaxWebhookBody))...), "over"},
		"upemail no old":   {plain, formHeader, form("type", "upemail", "fired_at", "2009-03-26 21:40:57", "data[list_id]", "L1", "data[new_email]", "a@x.com"), "old_email"},
		"too many fields":  {plain, formHeader, []byte(strings.Repeat("a=1&", 3000)), "form fields"},
		"not form-encoded": {plain, formHeader, []byte("%zz"), "form-encoded"},
	} {
		_, err := tc.c.ParseWebhook(tc.h, tc.body, now)
		require.ErrorIs(t, err, connectors.ErrWebhookRejected, name)
		require.ErrorContains(t, err, tc.want, name)
		require.NotContains(t, err.Error(), "a@x.com", name)
	}
}

func FuzzParseWebhookBody(f *testing.F) {
	f.Add(string(form("type", "unsubscribe", "fired_at", "2009-03-26 21:40:57", "data[list_id]", "L1", "data[email]", "a@x.com")))
	f.Add(string(form("type", "upemail", "fired_at", "2009-03-26 21:40:57", "data[list_id]", "L1", "data[new_email]", "n@x.com", "data[old_email]", "o@x.com")))
	f.Add("type=unsubscribe&data[merges][INTERESTS]=a,b&data[email]=%40&fired_at=")
	f.Fuzz(func(t *testing.T, body string) {
		ev, err := mailchimp.ParseWebhookBody([]byte(body))
		if err != nil {
			if !errors.Is(err, connectors.ErrWebhookRejected) {
				t.Fatalf("error %v is not a rejection", err)
			}
			return
		}
		if _, ok := connectors.NormalizeEmail(ev.Email); !ok || ev.Audience == "" || ev.FiredAt.IsZero() {
			t.Fatalf("accepted an incomplete event %+v", ev)
		}
		if ev.Type == connectors.EventAddressChange {
			if _, ok := connectors.NormalizeEmail(ev.OldEmail); !ok {
				t.Fatalf("accepted an upemail without an old address")
			}
		}
	})
}

// receiver records what the emulator delivers.
type receiver struct {
	mu     sync.Mutex
	bodies []url.Values
	raw    [][]byte
	sigs   []string
	fail   int // answer 503 to this many deliveries first
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method == http.MethodGet {
		return
	}
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	v, _ := url.ParseQuery(string(b))
	r.bodies = append(r.bodies, v)
	r.raw = append(r.raw, b)
	r.sigs = append(r.sigs, req.Header.Get(mailchimp.SignatureHeader))
}

func TestRegisterWebhookIsIdempotentAndDeliversUserChangesOnly(t *testing.T) {
	s, _, _ := newEnv(t, mailchimptest.Options{WebhookRetries: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond}})
	rec := &receiver{fail: 1}
	hs := httptest.NewServer(rec)
	t.Cleanup(hs.Close)
	c := hookClient(t, s, "")
	for _, e := range []string{"a@x.com", "b@x.com", "c@x.com"} {
		require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, Status: "subscribed"}))
	}

	u := hs.URL + "/webhooks/acme/" + hookToken
	reg, err := c.RegisterWebhook(t.Context(), u)
	require.NoError(t, err)
	require.True(t, reg.Changed)
	hooks := s.Webhooks("L1")
	require.Len(t, hooks, 1)
	require.Equal(t, s.WebhookSecret("L1", hooks[0].ID), reg.SigningSecret, "the secret answered on creation")
	reg, err = c.RegisterWebhook(t.Context(), u)
	require.NoError(t, err)
	require.Equal(t, connectors.WebhookRegistration{}, reg, "a second registration changes nothing")
	// A new token (or host) updates the same webhook.
	u2 := hs.URL + "/webhooks/acme/" + strings.Repeat("b", 32)
	reg, err = c.RegisterWebhook(t.Context(), u2)
	require.NoError(t, err)
	require.True(t, reg.Changed)
	require.Empty(t, reg.SigningSecret, "answered only on creation")
	hooks = s.Webhooks("L1")
	require.Len(t, hooks, 1)
	require.Equal(t, u2, hooks[0].URL)
	require.False(t, hooks[0].Sources["api"], "the product's own API writes are not delivered back")
	require.True(t, hooks[0].Sources["user"] && hooks[0].Sources["admin"])
	for _, e := range []string{"subscribe", "unsubscribe", "profile", "cleaned", "upemail"} {
		require.True(t, hooks[0].Events[e], e)
	}

	// An API write is not delivered; the person's unsubscribe and address
	// change are, the first after one failed attempt.
	_, err = newClient(t, s, 0).Unsubscribe(t.Context(), "L1", []string{"c@x.com"})
	require.NoError(t, err)
	require.NoError(t, s.Act("L1", "a@x.com", "unsubscribe", mailchimptest.SourceUser))
	require.NoError(t, s.ChangeEmailAs("L1", "b@x.com", "b2@x.com", mailchimptest.SourceUser))
	require.NoError(t, s.WaitDeliveries(t.Context()))
	st := s.WebhookStats()
	require.Equal(t, mailchimptest.WebhookStats{Queued: 2, Attempts: 3, Delivered: 2}, st)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	types := map[string]url.Values{}
	for _, b := range rec.bodies {
		types[b.Get("type")] = b
	}
	require.Len(t, types, 2)
	require.Equal(t, "a@x.com", types["unsubscribe"].Get("data[email]"))
	require.Equal(t, "unsub", types["unsubscribe"].Get("data[action]"))
	require.Equal(t, "b@x.com", types["upemail"].Get("data[old_email]"))
	require.Equal(t, "b2@x.com", types["upemail"].Get("data[new_email]"))
	for _, b := range rec.bodies {
		ev, err := mailchimp.ParseWebhookBody([]byte(b.Encode()))
		require.NoError(t, err, "the emulator's deliveries parse")
		require.Equal(t, "L1", ev.Audience)
	}
}

func TestEmulatorSignsDeliveriesAndRefusesUnreachableURLs(t *testing.T) {
	s, clk, _ := newEnv(t, mailchimptest.Options{})
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "a@x.com", Status: "subscribed"}))
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(404) }))
	t.Cleanup(down.Close)
	c := hookClient(t, s, "")
	_, err := c.RegisterWebhook(t.Context(), down.URL+"/webhooks/acme/"+hookToken)
	require.ErrorContains(t, err, "We couldn't verify the URL is working")

	rec := &receiver{}
	hs := httptest.NewServer(rec)
	t.Cleanup(hs.Close)
	_, err = c.RegisterWebhook(t.Context(), hs.URL+"/webhooks/acme/"+hookToken)
	require.NoError(t, err)
	secret := s.WebhookSecret("L1", s.Webhooks("L1")[0].ID)
	require.NotEmpty(t, secret)
	require.NoError(t, s.Act("L1", "a@x.com", "unsubscribe", mailchimptest.SourceAdmin))
	require.NoError(t, s.WaitDeliveries(t.Context()))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Len(t, rec.bodies, 1)
	body := rec.raw[0]
	h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, mailchimp.SignatureHeader: {rec.sigs[0]}}
	// The emulator signs with its own clock, as Mailchimp with its own.
	evs, err := hookClient(t, s, secret).ParseWebhook(h, body, clk.Now())
	require.NoError(t, err)
	require.Equal(t, "a@x.com", evs[0].Email)
	_, err = hookClient(t, s, "not-"+secret).ParseWebhook(h, body, clk.Now())
	require.ErrorIs(t, err, connectors.ErrWebhookRejected)
}

// A secret learned at the webhook's creation is checked on the deliveries
// that carry a signature; one from the configuration on every delivery.
func TestLearnedSigningSecretChecksSignedDeliveries(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	body := []byte(url.Values{"type": {"unsubscribe"}, "fired_at": {"2026-12-01 10:00:00"},
		"data[list_id]": {"L1"}, "data[email]": {"a@x.com"}, "data[action]": {"unsub"}}.Encode())
	header := func(sig string) http.Header {
		h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
		if sig != "" {
			h.Set(mailchimp.SignatureHeader, sig)
		}
		return h
	}
	signed := func(secret string) string {
		return "t=" + strconv.FormatInt(now.Unix(), 10) + ",v1=" + mailchimp.Sign(secret, now.Unix(), body)
	}
	s, _, _ := newEnv(t, mailchimptest.Options{})
	learned := hookClient(t, s, "")
	_, err := learned.ParseWebhook(header(signed("anything")), body, now)
	require.NoError(t, err, "no secret yet: the token authenticates")
	learned.UseSigningSecret("learned-secret")
	_, err = learned.ParseWebhook(header(signed("learned-secret")), body, now)
	require.NoError(t, err)
	_, err = learned.ParseWebhook(header(signed("forged")), body, now)
	require.ErrorIs(t, err, connectors.ErrWebhookRejected)
	_, err = learned.ParseWebhook(header(""), body, now)
	require.NoError(t, err, "an unsigned delivery: signing every delivery is not documented")

	configured := hookClient(t, s, "configured-secret")
	configured.UseSigningSecret("learned-secret")
	_, err = configured.ParseWebhook(header(signed("learned-secret")), body, now)
	require.ErrorIs(t, err, connectors.ErrWebhookRejected, "the configured secret takes precedence")
	_, err = configured.ParseWebhook(header(""), body, now)
	require.ErrorIs(t, err, connectors.ErrWebhookRejected, "a configured secret is required")
	_, err = configured.ParseWebhook(header(signed("configured-secret")), body, now)
	require.NoError(t, err)
}
