package connectors

import (
	"errors"
	"fmt"
	"time"
)

// The kinds of API failure every connector maps its vendor's errors onto.
// Test them with errors.Is on the error a connector returns.
var (
	// ErrUnauthorized: the credentials were rejected (Mailchimp "API Key
	// Invalid", NetSuite INVALID_LOGIN, Salesforce INVALID_SESSION_ID after
	// a refresh). Retrying cannot fix it.
	ErrUnauthorized = errors.New("credentials rejected")
	// ErrForbidden: the credentials are valid but lack a permission.
	ErrForbidden = errors.New("permission denied")
	// ErrNotFound: the resource (audience, record) does not exist.
	ErrNotFound = errors.New("resource not found")
	// ErrInvalid: the request was rejected as malformed or invalid.
	ErrInvalid = errors.New("request rejected as invalid")
	// ErrCompliance: the write was refused because the person opted out,
	// bounced or was permanently deleted. Final: never retried.
	ErrCompliance = errors.New("refused by compliance state")
	// ErrRateLimited: too many requests (429); retry after RetryAfter.
	ErrRateLimited = errors.New("rate limited")
	// ErrQuotaExhausted: a daily API budget is spent (Salesforce
	// REQUEST_LIMIT_EXCEEDED); retrying before the window clears only burns calls.
	ErrQuotaExhausted = errors.New("API request budget exhausted")
	// ErrServer: the vendor failed (5xx); retryable.
	ErrServer = errors.New("server error")
)

// APIError is a classified error answer from a vendor API.
type APIError struct {
	System string // "mailchimp", "netsuite", "salesforce"
	Status int    // HTTP status
	Kind   error  // one of the Err* kinds above
	Code   string // vendor code or title, e.g. "Member In Compliance State", "INVALID_LOGIN"
	Detail string // vendor message (no secrets; may name the record)
	// RetryAfter is how long the API asked the caller to wait, when it said.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s: %d %s", e.System, e.Status, e.Code)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Unwrap lets errors.Is(err, connectors.ErrUnauthorized) and friends work.
func (e *APIError) Unwrap() error { return e.Kind }

// Permanent reports whether retrying the same call cannot succeed: bad
// credentials or permissions, a missing resource, an invalid request, a
// compliance refusal or a spent daily budget. Network errors, 429s and 5xx
// are not permanent.
func Permanent(err error) bool {
	for _, kind := range []error{ErrUnauthorized, ErrForbidden, ErrNotFound, ErrInvalid, ErrCompliance, ErrQuotaExhausted} {
		if errors.Is(err, kind) {
			return true
		}
	}
	return false
}
