// Package webhooks is the worker's webhook receiver: it takes a marketing
// platform's pushed member events for each integration that receives them,
// checks that each delivery is genuine, and makes it durable in Temporal
// (signal-with-start of the integration's EventsWorkflow) before it
// answers 200. When Temporal cannot take a delivery the answer is a 503,
// so that the platform retries it: nothing is acknowledged that could be
// lost. Addresses cross into Temporal only sealed by the ledger's key.
package webhooks

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/workflows"
)

// PathPrefix starts every endpoint's path: PathPrefix + integration + "/" + token.
const PathPrefix = "/webhooks/"

// MaxBody bounds a delivery read from the wire.
const MaxBody = 64 << 10

// Sealer is what the receiver needs of the consent ledger: the keyed hash
// naming a person and the sealing of an address.
type Sealer interface {
	Person(email string) string
	Seal(email string) (string, error)
}

// SecretStore keeps each integration's webhook signing secret, sealed
// (the ledger implements it).
type SecretStore interface {
	WebhookSecret(ctx context.Context, integration string) (string, error)
	SaveWebhookSecret(ctx context.Context, integration, secret string) error
}

// Endpoint is one integration's webhook endpoint.
type Endpoint struct {
	Integration string
	Hooks       connectors.Webhooks
}

// Options configures a Receiver.
type Options struct {
	Client client.Client
	Ledger Sealer
	// Secrets keeps the signing secrets the platform gives webhooks the
	// receiver creates; nil keeps none.
	Secrets   SecretStore
	Endpoints []Endpoint
	Logger    *slog.Logger
	// Now is the clock signatures are checked against; nil means time.Now.
	Now func() time.Time
	// SignalTimeout bounds the wait for Temporal to take a delivery; 0
	// means 10 seconds (the platform's own timeout).
	SignalTimeout time.Duration
	// TaskQueue is the workers' task queue; "" means workflows.TaskQueue.
	TaskQueue string
	// Run overrides the events workflow's input fields other than the
	// integration and its state (tests shorten the batch window).
	Run workflows.EventsRun
}

// Receiver is the http.Handler of every integration's endpoint.
type Receiver struct {
	o         Options
	endpoints map[string]*endpoint
	log       *slog.Logger
}

// endpoint gathers concurrent deliveries into one signal (group commit):
// a burst costs a few history events, not one per delivery.
type endpoint struct {
	Endpoint
	token string
	queue chan *delivery
	once  sync.Once
}

type delivery struct {
	events []activities.Event
	done   chan error
}

// signallers is how many signals of one integration may be in flight.
const signallers = 4

// New builds a Receiver.
func New(o Options) *Receiver {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.TaskQueue == "" {
		o.TaskQueue = workflows.TaskQueue
	}
	if o.SignalTimeout <= 0 {
		o.SignalTimeout = 10 * time.Second
	}
	r := &Receiver{o: o, endpoints: map[string]*endpoint{}, log: o.Logger}
	for _, e := range o.Endpoints {
		if t := e.Hooks.WebhookToken(); t != "" {
			r.endpoints[e.Integration] = &endpoint{Endpoint: e, token: t, queue: make(chan *delivery, 1024)}
		}
	}
	return r
}

// Path is the path of an integration's endpoint (it holds the secret
// token: never log it).
func (r *Receiver) Path(integration string) (string, bool) {
	e, ok := r.endpoints[integration]
	if !ok {
		return "", false
	}
	return PathPrefix + integration + "/" + e.token, true
}

// Integrations lists the integrations with an endpoint.
func (r *Receiver) Integrations() []string {
	var out []string
	for _, e := range r.o.Endpoints {
		if _, ok := r.endpoints[e.Integration]; ok {
			out = append(out, e.Integration)
		}
	}
	return out
}

// Register makes each endpoint's webhook exist at publicURL (the address
// the platform reaches this receiver at, up to PathPrefix), logging the
// URL without its token. A failure is logged and returned; the poll goes
// on without the webhook.
func (r *Receiver) Register(ctx context.Context, publicURL string) error {
	var errs []error
	for _, id := range r.Integrations() {
		p, _ := r.Path(id)
		u := strings.TrimSuffix(publicURL, "/") + p
		shown := strings.TrimSuffix(publicURL, "/") + PathPrefix + id + "/…"
		hooks := r.endpoints[id].Hooks
		reg, err := hooks.RegisterWebhook(ctx, u)
		if err != nil {
			r.log.Error("webhook not registered; the scheduled sync still polls", "integration", id, "url", shown, "error", err)
			errs = append(errs, fmt.Errorf("integration %q: registering its webhook: %w", id, err))
			continue
		}
		if reg.SigningSecret != "" {
			// Answered once: kept, so that a restarted worker checks the
			// signatures too.
			hooks.UseSigningSecret(reg.SigningSecret)
			if r.o.Secrets != nil {
				if err := r.o.Secrets.SaveWebhookSecret(ctx, id, reg.SigningSecret); err != nil {
					r.log.Error("webhook signing secret not kept; signatures are checked until the worker restarts", "integration", id, "error", err)
					errs = append(errs, fmt.Errorf("integration %q: keeping its webhook signing secret: %w", id, err))
				}
			}
		}
		r.log.Info("webhook registered", "integration", id, "url", shown, "changed", reg.Changed, "signed", reg.SigningSecret != "")
	}
	return errors.Join(errs...)
}

// LoadSecrets gives each endpoint the signing secret kept from its
// webhook's creation, if any.
func (r *Receiver) LoadSecrets(ctx context.Context) error {
	if r.o.Secrets == nil {
		return nil
	}
	for _, id := range r.Integrations() {
		secret, err := r.o.Secrets.WebhookSecret(ctx, id)
		if err != nil {
			return fmt.Errorf("integration %q: reading its webhook signing secret: %w", id, err)
		}
		r.endpoints[id].Hooks.UseSigningSecret(secret)
	}
	return nil
}

// ServeHTTP answers the platform's validating GET with 200 and takes a
// delivery POST: 200 once Temporal holds it, 4xx when it is not genuine
// or not well formed (nothing changes), 503 when Temporal cannot take it.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rest, ok := strings.CutPrefix(req.URL.Path, PathPrefix)
	id, token, ok2 := strings.Cut(rest, "/")
	e := r.endpoints[id]
	// A wrong integration and a wrong token answer alike.
	if !ok || !ok2 || e == nil || subtle.ConstantTimeCompare([]byte(token), []byte(e.token)) != 1 {
		if e == nil && len(id) > 64 { // unauthenticated text: bounded in the log
			id = id[:64] + "…"
		}
		r.log.Warn("webhook delivery refused", "integration", id, "reason", "unknown endpoint or wrong token", "remote", req.RemoteAddr)
		http.NotFound(w, req)
		return
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		w.WriteHeader(http.StatusOK)
		return
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxBody))
	if err != nil {
		r.log.Warn("webhook delivery refused", "integration", id, "reason", "body over the limit or unreadable")
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	evs, err := e.Hooks.ParseWebhook(req.Header, body, r.o.Now())
	if err != nil {
		// The reason names no address and never the body.
		r.log.Warn("webhook delivery refused", "integration", id, "reason", err.Error())
		http.Error(w, "delivery refused", http.StatusBadRequest)
		return
	}
	sum := sha256.Sum256(append([]byte(id+"\x00"), body...))
	key := base64.RawURLEncoding.EncodeToString(sum[:12])
	out := make([]activities.Event, 0, len(evs))
	for i, ev := range evs {
		a, err := r.seal(ev)
		if err != nil {
			r.log.Error("webhook delivery not taken", "integration", id, "error", err)
			http.Error(w, "try again later", http.StatusServiceUnavailable)
			return
		}
		a.Key = key
		if i > 0 {
			a.Key = fmt.Sprintf("%s.%d", key, i)
		}
		out = append(out, a)
	}
	if err := r.submit(req.Context(), e, out); err != nil {
		r.log.Error("webhook delivery not taken; the platform will retry", "integration", id, "error", err)
		http.Error(w, "try again later", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// seal turns a platform event into the workflow's form: addresses sealed.
func (r *Receiver) seal(ev connectors.Event) (activities.Event, error) {
	out := activities.Event{Type: ev.Type, Person: r.o.Ledger.Person(ev.Email), FiredAt: ev.FiredAt, Action: ev.Action, Reason: ev.Reason}
	var err error
	if out.Sealed, err = r.o.Ledger.Seal(ev.Email); err != nil {
		return out, err
	}
	if ev.OldEmail != "" {
		if out.OldSealed, err = r.o.Ledger.Seal(ev.OldEmail); err != nil {
			return out, err
		}
	}
	return out, nil
}

// submit queues a delivery for its integration's signallers and waits
// until Temporal holds it.
func (r *Receiver) submit(ctx context.Context, e *endpoint, evs []activities.Event) error {
	e.once.Do(func() {
		for range signallers {
			go r.signaller(e)
		}
	})
	d := &delivery{events: evs, done: make(chan error, 1)}
	select {
	case e.queue <- d:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-d.done:
		return err
	case <-ctx.Done():
		// The signal may still land; the platform's retry is then a
		// duplicate the workflow drops.
		return ctx.Err()
	}
}

// maxSignalEvents bounds the events of one signal (its payload stays far
// under Temporal's 2 MB).
const maxSignalEvents = 500

// signaller sends queued deliveries, as many as are waiting in one signal.
func (r *Receiver) signaller(e *endpoint) {
	for d := range e.queue {
		batch := []*delivery{d}
		evs := append([]activities.Event(nil), d.events...)
	more:
		for len(evs) < maxSignalEvents {
			select {
			case d := <-e.queue:
				batch = append(batch, d)
				evs = append(evs, d.events...)
			default:
				break more
			}
		}
		err := r.signal(e.Integration, evs)
		for _, d := range batch {
			d.done <- err
		}
	}
}

// signal hands events to the integration's events workflow, starting it
// if it is not running.
func (r *Receiver) signal(integration string, evs []activities.Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), r.o.SignalTimeout)
	defer cancel()
	run := r.o.Run
	run.IntegrationID = integration
	_, err := r.o.Client.SignalWithStartWorkflow(ctx, workflows.EventsWorkflowID(integration), workflows.EventsSignal, evs,
		client.StartWorkflowOptions{
			TaskQueue:                r.o.TaskQueue,
			WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
			WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
			TypedSearchAttributes:    temporal.NewSearchAttributes(workflows.IntegrationKey.ValueSet(integration)),
		}, workflows.EventsWorkflow, run)
	return err
}
