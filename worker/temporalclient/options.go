// Package temporalclient builds the Temporal client options of every
// optout-sync process, the worker's and the starter's: one place, so that
// both reach the same cluster and read and write payloads the same way.
package temporalclient

import (
	"fmt"
	"log/slog"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"
	"go.temporal.io/sdk/temporal"

	"github.com/optoutsync/optoutsync/worker/codec"
)

// Options loads the connection the way the temporal CLI does
// (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TLS_*, TEMPORAL_API_KEY,
// TEMPORAL_PROFILE and the temporal.toml profile), so one binary runs
// against a dev server, a self-hosted cluster or Temporal Cloud unchanged,
// and applies the payload codec c to every payload and failure. log may be
// nil (the SDK's default logger).
func Options(log *slog.Logger, c *codec.Codec) (client.Options, error) {
	opts, err := envconfig.LoadDefaultClientOptions()
	if err != nil {
		return client.Options{}, fmt.Errorf("temporal client configuration: %w", err)
	}
	if opts.HostPort == "" {
		opts.HostPort = client.DefaultHostPort
	}
	if opts.Namespace == "" {
		opts.Namespace = client.DefaultNamespace
	}
	if log != nil {
		opts.Logger = log
	}
	if c != nil {
		WithCodec(&opts, c)
	}
	return opts, nil
}

// WithCodec applies c to opts' payloads and, when c encrypts, to failure
// messages and stack traces too (they are moved into an encrypted payload;
// the history then shows "Encoded failure" until decoded): an activity's
// failure text can name address hashes.
func WithCodec(opts *client.Options, c *codec.Codec) {
	dc := codec.DataConverter(c)
	opts.DataConverter = dc
	opts.FailureConverter = temporal.NewDefaultFailureConverter(temporal.DefaultFailureConverterOptions{
		DataConverter:          dc,
		EncodeCommonAttributes: c.Encrypts(),
	})
}
