package activities

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/optoutsync/optoutsync/connectors"
)

// A rejected credential is final and names the integration, whichever
// connector answered; a rate limit stays retryable.
func TestClassifyNamesTheIntegration(t *testing.T) {
	err := classify(&connectors.APIError{System: "dynamics", Status: 401, Kind: connectors.ErrUnauthorized}, "acme", "reading CRM opt-outs")
	var ae *temporal.ApplicationError
	require.True(t, errors.As(err, &ae))
	require.True(t, ae.NonRetryable())
	require.Equal(t, ErrTypeUnauthorized, ae.Type())
	require.Contains(t, err.Error(), `integration "acme": reading CRM opt-outs`)

	err = classify(&connectors.APIError{System: "bullhorn", Status: 429, Kind: connectors.ErrRateLimited}, "acme", "setting the CRM opt-out")
	require.True(t, errors.As(err, &ae))
	require.False(t, ae.NonRetryable())
	require.Contains(t, err.Error(), `integration "acme"`)
}
