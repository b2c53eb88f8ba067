package devserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	namespacepb "go.temporal.io/api/namespace/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"google.golang.org/protobuf/types/known/durationpb"
)

// readyTimeout caps the wait for a fresh server to answer when the caller's ctx has no
// deadline: a server that is not ready in this long will not become ready. Two minutes,
// because a 2-core machine building and testing in parallel was seen to need more than one.
const readyTimeout = 2 * time.Minute

// configureNamespace waits for the frontend to answer and then makes the namespace match
// opts: search attributes present (registering the missing ones, as
// `temporal operator search-attribute create` would) and retention as asked. Doing it
// through the API on every start makes it idempotent and lets a DataDir made by an older
// build pick up search attributes added since.
func (s *Server) configureNamespace(ctx context.Context, opts Options) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, readyTimeout)
		defer cancel()
	}
	c, err := client.DialContext(ctx, client.Options{
		HostPort:  s.frontend,
		Namespace: s.namespace,
		Logger:    sdklog.NewStructuredLogger(slog.New(minLevel{opts.Logger.Handler(), opts.LogLevel})),
	})
	if err != nil {
		return fmt.Errorf("devserver: frontend %s does not answer: %w", s.frontend, err)
	}
	defer c.Close()

	if err := retryUnready(ctx, func() error {
		return ensureSearchAttributes(ctx, c.OperatorService(), s.namespace, opts.SearchAttributes)
	}); err != nil {
		return fmt.Errorf("devserver: registering search attributes in %q: %w", s.namespace, err)
	}
	if opts.Retention > 0 {
		if err := retryUnready(ctx, func() error {
			return ensureRetention(ctx, c.WorkflowService(), s.namespace, opts.Retention)
		}); err != nil {
			return fmt.Errorf("devserver: setting retention of %q: %w", s.namespace, err)
		}
	}
	return nil
}

// ensureSearchAttributes adds the wanted attributes that the namespace lacks, in one call.
func ensureSearchAttributes(ctx context.Context, op operatorservice.OperatorServiceClient, ns string,
	want map[string]enumspb.IndexedValueType,
) error {
	resp, err := op.ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: ns})
	if err != nil {
		return err
	}
	missing := map[string]enumspb.IndexedValueType{}
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	sort.Strings(names) // stable error messages
	for _, name := range names {
		typ := want[name]
		have, ok := resp.GetCustomAttributes()[name]
		if !ok {
			have, ok = resp.GetSystemAttributes()[name]
		}
		switch {
		case !ok:
			missing[name] = typ
		case have != typ:
			return fmt.Errorf("search attribute %q exists as %v, want %v", name, have, typ)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	_, err = op.AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace:        ns,
		SearchAttributes: missing,
	})
	var exists *serviceerror.AlreadyExists
	if errors.As(err, &exists) {
		// Another process registered them between our list and add: same end state.
		return nil
	}
	return err
}

func ensureRetention(ctx context.Context, ws workflowservice.WorkflowServiceClient, ns string, retention time.Duration) error {
	desc, err := ws.DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: ns})
	if err != nil {
		return err
	}
	if desc.GetConfig().GetWorkflowExecutionRetentionTtl().AsDuration() == retention {
		return nil
	}
	_, err = ws.UpdateNamespace(ctx, &workflowservice.UpdateNamespaceRequest{
		Namespace: ns,
		Config:    &namespacepb.NamespaceConfig{WorkflowExecutionRetentionTtl: durationpb.New(retention)},
	})
	return err
}

// retryUnready retries f while the server answers that it is not ready yet: right after
// Start the frontend may still be loading the namespace cache or waiting for history.
func retryUnready(ctx context.Context, f func() error) error {
	delay := 50 * time.Millisecond
	for {
		err := f()
		if err == nil || !isUnready(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

func isUnready(err error) bool {
	var (
		unavailable *serviceerror.Unavailable
		notFound    *serviceerror.NamespaceNotFound
		exhausted   *serviceerror.ResourceExhausted
		deadline    *serviceerror.DeadlineExceeded
	)
	return errors.As(err, &unavailable) || errors.As(err, &notFound) ||
		errors.As(err, &exhausted) || errors.As(err, &deadline)
}

// minLevel drops records below a level before they reach the wrapped handler; it quiets the
// SDK client the server uses for its own set-up the same way serverLogger quiets the server.
type minLevel struct {
	slog.Handler
	min slog.Leveler
}

func (h minLevel) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= h.min.Level() && h.Handler.Enabled(ctx, level)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(attrs), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}
