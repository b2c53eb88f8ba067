package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"go.temporal.io/sdk/client"
	"go.uber.org/fx"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/worker/webhooks"
)

// WebhookModule serves the webhook receiver when the configuration's
// webhooks.listen is set, and registers each integration's webhook at
// start when webhooks.publicURL is.
var WebhookModule = fx.Module("webhooks", fx.Invoke(registerReceiver))

// registerReceiver listens on webhooks.listen at start (synchronously, so
// a taken port fails the start) and serves in a goroutine. In dev mode
// without a publicURL, the webhooks are registered at the listener's own
// address, which the in-process emulator reaches.
func registerReceiver(lc fx.Lifecycle, f Flags, cfg *Config, reg activities.MapRegistry, led ledger.Ledger, c client.Client, log *slog.Logger) {
	w := cfg.Webhooks
	if w.Listen == "" {
		return
	}
	var eps []webhooks.Endpoint
	for _, in := range cfg.Integrations {
		if integ := reg[in.ID]; integ != nil {
			if h, ok := integ.Marketing.(connectors.Webhooks); ok && h.WebhookToken() != "" {
				eps = append(eps, webhooks.Endpoint{Integration: in.ID, Hooks: h})
			}
		}
	}
	secrets, _ := led.(webhooks.SecretStore)
	r := webhooks.New(webhooks.Options{Client: c, Ledger: led, Secrets: secrets, Endpoints: eps, Logger: log.With("component", "webhooks")})
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	lc.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			if err := r.LoadSecrets(ctx); err != nil {
				return err
			}
			ln, err := net.Listen("tcp", w.Listen)
			if err != nil {
				return err
			}
			go func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					log.Error("webhook receiver stopped", "error", err)
				}
			}()
			log.Info("webhook receiver listening", "addr", ln.Addr().String(), "integrations", r.Integrations())
			public := w.PublicURL
			if public == "" && f.Dev {
				public = "http://" + ln.Addr().String()
			}
			if public != "" {
				// The platform validates the URL with a GET, which this
				// listener answers now that it serves.
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					_ = r.Register(ctx, public)
				}()
			}
			return nil
		},
		OnStop: srv.Shutdown,
	})
}
