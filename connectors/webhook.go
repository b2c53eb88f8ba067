package connectors

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// EventType is what a pushed marketing event says happened to a member.
// The values are Mailchimp's webhook types.
type EventType string

// The event types a marketing platform pushes.
const (
	// EventUnsubscribe: the member unsubscribed (or was deleted by the
	// person's request).
	EventUnsubscribe EventType = "unsubscribe"
	// EventCleaned: the address bounced; not an opt-out.
	EventCleaned EventType = "cleaned"
	// EventSubscribe: the member subscribed (again).
	EventSubscribe EventType = "subscribe"
	// EventProfile: the member changed a profile field; no status change.
	EventProfile EventType = "profile"
	// EventAddressChange: the member changed address (Mailchimp's upemail).
	EventAddressChange EventType = "upemail"
)

// Event is one member change the platform pushed.
type Event struct {
	Type     EventType
	Audience string
	// Email is the member's address; for an address change, the new one.
	Email string
	// OldEmail is the earlier address of an address change.
	OldEmail string
	// FiredAt is when the platform says the change happened.
	FiredAt time.Time
	// Action is an unsubscribe's action: "unsub" (the person's), or
	// "delete" (the member was deleted from the audience).
	Action string
	// Reason is the platform's reason, where it gives one ("manual",
	// "abuse", "hard").
	Reason string
}

// ErrWebhookRejected marks a delivery that is not genuine or not well
// formed: it is answered with a 4xx and changes nothing.
var ErrWebhookRejected = errors.New("webhook delivery rejected")

// Webhooks is a marketing connector that receives the platform's pushed
// events for its integration's audience. The worker serves one endpoint per
// integration whose connector has a WebhookToken.
type Webhooks interface {
	// WebhookToken is the secret path token of the integration's endpoint,
	// or "" when the integration receives no webhooks.
	WebhookToken() string
	// ParseWebhook checks one delivery (its content type, signature and
	// audience) and returns its events; an error wrapping
	// ErrWebhookRejected says why it is refused, without the body.
	ParseWebhook(header http.Header, body []byte, now time.Time) ([]Event, error)
	// RegisterWebhook makes the audience's webhook for url exist, with the
	// events and sources the product needs (idempotent); it reports whether
	// it created or changed one, and the signing secret the platform gave
	// a webhook it created.
	RegisterWebhook(ctx context.Context, url string) (WebhookRegistration, error)
	// UseSigningSecret gives the secret the platform gave the webhook
	// when it was created (kept by the worker): deliveries that carry a
	// signature must match it. A secret in the configuration takes
	// precedence and is required on every delivery.
	UseSigningSecret(secret string)
}

// WebhookRegistration is what RegisterWebhook did.
type WebhookRegistration struct {
	// Changed: a webhook was created, updated or removed.
	Changed bool
	// SigningSecret is the secret a created webhook signs deliveries
	// with, where the platform answers one (only on creation); "" otherwise.
	SigningSecret string
}

// WebhookConfig is a marketing configuration that can turn on the
// integration's webhook endpoint.
type WebhookConfig interface {
	// ReceivesWebhooks reports whether the endpoint is configured.
	ReceivesWebhooks() bool
}
