package mailchimptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/optoutsync/optoutsync/connectors/mailchimp"
)

// Webhooks (api-wire-facts §1.9): POST /lists/{list_id}/webhooks creates
// one after the URL answers a validating GET with a 2xx; member changes are
// then delivered as form-encoded POSTs, retried with backoff when the
// receiver does not answer a 2xx within 10 seconds, and signed
// ("X-Mailchimp-Signature: t=<unix>,v1=<hex>") with the webhook's signing
// secret.

// The sources of a change: the person (a form or an unsubscribe link), an
// account user in the web app, or the API.
const (
	SourceUser  = "user"
	SourceAdmin = "admin"
	SourceAPI   = "api"
)

// defaultRetries are the waits before each retry of a failed delivery:
// increasing intervals over about 75 minutes, as Mailchimp documents.
var defaultRetries = []time.Duration{
	time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 15 * time.Minute, 20 * time.Minute, 25 * time.Minute,
}

// hookState is one registered webhook.
type hookState struct {
	ID      string          `json:"id"`
	URL     string          `json:"url"`
	Events  map[string]bool `json:"events"`
	Sources map[string]bool `json:"sources"`
	ListID  string          `json:"list_id"`
	secret  string
}

// Delivery is one delivery attempt as the emulator saw its answer.
type Delivery struct {
	Type    string
	Attempt int
	Status  int // 0: no answer (error or timeout)
}

// WebhookStats counts deliveries: events queued, attempts made, events
// delivered (a 2xx), and events given up on after the last retry.
type WebhookStats struct {
	Queued, Attempts, Delivered, GaveUp, Pending int
}

// hooks is the emulator's webhook state; its own lock, because
// deliveries run outside the server's.
type hooks struct {
	mu      sync.Mutex
	byList  map[string][]*hookState
	next    int
	stats   WebhookStats
	retries []time.Duration
	client  *http.Client
	now     func() time.Time
	sem     chan struct{}
	wg      sync.WaitGroup
	closed  bool
	log     []Delivery
}

func newHooks(now func() time.Time, retries []time.Duration) *hooks {
	if retries == nil {
		retries = defaultRetries
	}
	return &hooks{
		byList: map[string][]*hookState{}, retries: retries, now: now,
		client: &http.Client{Timeout: 10 * time.Second},
		sem:    make(chan struct{}, 64),
	}
}

// SetWebhookRetries replaces the waits between delivery attempts (tests
// shorten Mailchimp's 75 minutes).
func (s *Server) SetWebhookRetries(waits ...time.Duration) {
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	s.hooks.retries = waits
}

// WebhookStats returns the delivery counters.
func (s *Server) WebhookStats() WebhookStats {
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	return s.hooks.stats
}

// Deliveries returns every delivery attempt so far, in order.
func (s *Server) Deliveries() []Delivery {
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	return append([]Delivery(nil), s.hooks.log...)
}

// WaitDeliveries waits until no delivery is pending or ctx ends.
func (s *Server) WaitDeliveries(ctx context.Context) error {
	for {
		if s.WebhookStats().Pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Webhooks returns the webhooks of a list, for tests.
func (s *Server) Webhooks(listID string) []hookState {
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	var out []hookState
	for _, h := range s.hooks.byList[listID] {
		out = append(out, *h)
	}
	return out
}

// WebhookSecret returns the signing secret of a webhook, as Mailchimp
// shows it once on creation.
func (s *Server) WebhookSecret(listID, id string) string {
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	for _, h := range s.hooks.byList[listID] {
		if h.ID == id {
			return h.secret
		}
	}
	return ""
}

// webhookBody is the POST/PATCH body.
type webhookBody struct {
	URL     *string         `json:"url"`
	Events  map[string]bool `json:"events"`
	Sources map[string]bool `json:"sources"`
}

var (
	hookEventNames  = []string{"subscribe", "unsubscribe", "profile", "cleaned", "upemail", "campaign"}
	hookSourceNames = []string{SourceUser, SourceAdmin, SourceAPI}
)

// validate sends the validator's GET; Mailchimp requires a 2xx.
func (h *hooks) validate(u string) *problem {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return badRequest("Invalid Resource", "The resource submitted could not be validated. For field-specific details, see the 'errors' array.",
			fieldError{Field: "url", Message: "Please enter a valid URL."})
	}
	req.Header.Set("User-Agent", "MailChimp.com WebHook Validator")
	resp, err := h.client.Do(req)
	code := 0
	if err == nil {
		code = resp.StatusCode
		_ = resp.Body.Close()
	}
	if code < 200 || code > 299 {
		return badRequest("Invalid Resource", fmt.Sprintf("We couldn't verify the URL is working. Please double check and try again. HTTP Code: %d", code))
	}
	return nil
}

// serveWebhooks answers /lists/{list_id}/webhooks[/{webhook_id}]. It runs
// without the server's lock: creating one calls the receiver.
func (s *Server) serveWebhooks(w http.ResponseWriter, r *http.Request, rt route) {
	s.mu.Lock()
	_, ok := s.lists[rt.listID]
	s.mu.Unlock()
	if !ok {
		notFound(w)
		return
	}
	h := s.hooks
	find := func() (*hookState, int) {
		for i, x := range h.byList[rt.listID] {
			if x.ID == rt.key {
				return x, i
			}
		}
		return nil, -1
	}
	switch r.Method {
	case http.MethodGet:
		h.mu.Lock()
		defer h.mu.Unlock()
		if rt.key == "" {
			all := []*hookState{}
			all = append(all, h.byList[rt.listID]...)
			writeJSON(w, http.StatusOK, map[string]any{"webhooks": all, "list_id": rt.listID, "total_items": len(all)}, r)
			return
		}
		x, _ := find()
		if x == nil {
			notFound(w)
			return
		}
		writeJSON(w, http.StatusOK, x, r)
	case http.MethodDelete:
		h.mu.Lock()
		defer h.mu.Unlock()
		x, i := find()
		if x == nil {
			notFound(w)
			return
		}
		h.byList[rt.listID] = append(h.byList[rt.listID][:i:i], h.byList[rt.listID][i+1:]...)
		noContent(w)
	case http.MethodPost, http.MethodPatch:
		var b webhookBody
		if p := readJSON(r, &b); p != nil {
			p.write(w)
			return
		}
		if r.Method == http.MethodPost && (b.URL == nil || *b.URL == "") {
			invalidResource(fieldError{Field: "url", Message: "This value should not be blank."}).write(w)
			return
		}
		if b.URL != nil {
			if p := h.validate(*b.URL); p != nil {
				p.write(w)
				return
			}
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		x := &hookState{ListID: rt.listID, Events: map[string]bool{}, Sources: map[string]bool{}}
		if r.Method == http.MethodPatch {
			if x, _ = find(); x == nil {
				notFound(w)
				return
			}
		} else {
			// A new webhook gets every event and source unless told
			// otherwise (UNCONFIRMED defaults), and a signing secret.
			for _, e := range hookEventNames {
				x.Events[e] = e != "campaign"
			}
			for _, src := range hookSourceNames {
				x.Sources[src] = true
			}
			h.next++
			x.ID = fmt.Sprintf("%010x", h.next)
			x.secret = randomHex(16)
		}
		if b.URL != nil {
			x.URL = *b.URL
		}
		for k, v := range b.Events {
			x.Events[k] = v
		}
		for k, v := range b.Sources {
			x.Sources[k] = v
		}
		status := http.StatusOK
		out := map[string]any{"id": x.ID, "url": x.URL, "events": x.Events, "sources": x.Sources, "list_id": x.ListID}
		if r.Method == http.MethodPost {
			h.byList[rt.listID] = append(h.byList[rt.listID], x)
			out["signing_secret"] = x.secret
		}
		writeJSON(w, status, out, r)
	}
}

// event is one change to deliver.
type event struct {
	typ    string
	source string
	listID string
	fields url.Values
	at     time.Time
}

// emit queues the deliveries of one change of member i of l; s.mu is held.
func (s *Server) emit(l *list, typ string, i int32, old string) {
	s.hooks.mu.Lock()
	none := len(s.hooks.byList[l.id]) == 0
	s.hooks.mu.Unlock()
	if none {
		return
	}
	m := l.inspect(i)
	v := url.Values{}
	v.Set("data[list_id]", l.id)
	v.Set("data[id]", m.UniqueEmailID)
	v.Set("data[email_type]", "html")
	data := func(k, val string) { v.Set("data["+k+"]", val) }
	switch typ {
	case "upemail":
		// UNCONFIRMED field names (api-wire-facts §5.3).
		data("new_id", m.ID)
		data("new_email", m.Email)
		data("old_email", old)
	case "delete":
		typ = "unsubscribe"
		data("email", m.Email)
		data("action", "delete")
		data("reason", "manual")
	case "unsubscribe":
		data("email", m.Email)
		data("action", "unsub")
		data("reason", "manual")
		data("ip_opt", "127.0.0.1")
	case "cleaned", "complaint":
		typ = "cleaned"
		data("email", m.Email)
		data("reason", "hard")
		if old == "abuse" {
			data("reason", "abuse")
		}
	default:
		data("email", m.Email)
		data("ip_opt", "127.0.0.1")
	}
	if typ != "upemail" {
		data("merges][EMAIL", m.Email)
		for k, val := range m.MergeFields {
			data("merges]["+k, val)
		}
	}
	v.Set("type", typ)
	at := s.now().UTC()
	v.Set("fired_at", at.Format("2006-01-02 15:04:05"))
	s.hooks.queue(event{typ: typ, source: s.source, listID: l.id, fields: v, at: at})
}

// queue starts the delivery of ev to every webhook of its list that
// wants its type and source.
func (h *hooks) queue(ev event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	for _, x := range h.byList[ev.listID] {
		if !x.Events[ev.typ] || !x.Sources[ev.source] {
			continue
		}
		h.stats.Queued++
		h.stats.Pending++
		h.wg.Add(1)
		go h.deliver(x.URL, x.secret, ev, 0)
	}
}

// deliver makes one attempt and schedules the next on failure.
func (h *hooks) deliver(u, secret string, ev event, attempt int) {
	defer h.wg.Done()
	h.sem <- struct{}{}
	body := []byte(ev.fields.Encode())
	code := 0
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err == nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("User-Agent", "MailChimp.com")
		if secret != "" {
			t := h.now().Unix()
			req.Header.Set(mailchimp.SignatureHeader, "t="+strconv.FormatInt(t, 10)+",v1="+mailchimp.Sign(secret, t, body))
		}
		var resp *http.Response
		if resp, err = h.client.Do(req); err == nil {
			code = resp.StatusCode
			_ = resp.Body.Close()
		}
	}
	<-h.sem
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stats.Attempts++
	h.log = append(h.log, Delivery{Type: ev.typ, Attempt: attempt, Status: code})
	switch {
	case code >= 200 && code <= 299:
		h.stats.Delivered++
		h.stats.Pending--
	case attempt >= len(h.retries) || h.closed:
		h.stats.GaveUp++
		h.stats.Pending--
	default:
		h.wg.Add(1)
		time.AfterFunc(h.retries[attempt], func() { h.deliver(u, secret, ev, attempt+1) })
	}
}

func (h *hooks) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
}

// Act makes a change as the person (SourceUser) or an account user in the
// web app (SourceAdmin) would, so that webhooks registered for that
// source are delivered: action is "unsubscribe", "resubscribe", "clean",
// "complain" (a spam complaint) or "archive"; ChangeEmailAs changes an
// address.
func (s *Server) Act(listID, email, action, source string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.list(listID)
	if err != nil {
		return err
	}
	i, ok := l.byHash[hashOf(strings.TrimSpace(email))]
	if !ok || l.members[i].status == stForgotten {
		return fmt.Errorf("mailchimptest: %q is not a member of list %q", email, listID)
	}
	s.source = source
	defer func() { s.source = SourceAPI }()
	now := s.nowUnix()
	var p *problem
	var changed bool
	switch action {
	case "unsubscribe":
		changed, p = l.transition(i, stUnsubscribed, now)
	case "resubscribe":
		// The person's own choice, through a signup form: allowed out of
		// unsubscribed (never out of cleaned).
		if l.members[i].status == stUnsubscribed || l.members[i].status == stArchived {
			l.members[i].status = stPending
		}
		changed, p = l.transition(i, stSubscribed, now)
	case "clean":
		l.members[i].status = stSubscribed
		changed, p = l.transition(i, stCleaned, now)
	case "complain":
		// A spam complaint: Mailchimp cleans the address with reason
		// "abuse" (api-wire-facts §1.9).
		l.members[i].status = stCleaned
		changed = true
		s.emit(l, "complaint", i, "abuse")
	case "archive":
		if l.members[i].status == stArchived {
			return nil
		}
		l.members[i].status = stArchived
		changed = true
		s.emit(l, "delete", i, "")
	default:
		return fmt.Errorf("mailchimptest: unknown action %q", action)
	}
	if p != nil {
		return fmt.Errorf("mailchimptest: %s %s: %s", action, email, p.detail)
	}
	if changed {
		l.touch(i, now)
	}
	return nil
}

// ChangeEmailAs changes a member's address as the person (or an account
// user) does, delivering upemail to webhooks registered for source.
func (s *Server) ChangeEmailAs(listID, oldEmail, newEmail, source string) error {
	return s.changeEmail(listID, oldEmail, newEmail, source)
}

// serveAct is the emulator-only endpoint behind Act and ChangeEmailAs,
// for the demo: POST /emulator/lists/{list_id}/act with form fields
// email, action (unsubscribe, resubscribe, clean, archive, change-email),
// new_email and source (user by default).
func (s *Server) serveAct(w http.ResponseWriter, r *http.Request, listID string) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	src := r.Form.Get("source")
	if src == "" {
		src = SourceUser
	}
	var err error
	if a := r.Form.Get("action"); a == "change-email" {
		err = s.ChangeEmailAs(listID, r.Form.Get("email"), r.Form.Get("new_email"), src)
	} else {
		err = s.Act(listID, r.Form.Get("email"), a, src)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"result": "done"})
}
