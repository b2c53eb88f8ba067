package devserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/temporalio/ui-server/v2/server/api"
	"github.com/temporalio/ui-server/v2/server/auth"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	"github.com/temporalio/ui-server/v2/server/cors"
	"github.com/temporalio/ui-server/v2/server/csrf"
	"github.com/temporalio/ui-server/v2/server/headers"
	"github.com/temporalio/ui-server/v2/server/route"
	"github.com/temporalio/ui-server/v2/ui"
	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc"
)

// uiServer is the Temporal Web UI (github.com/temporalio/ui-server/v2, which embeds the built
// UI) served from our own listener.
//
// Why not ui-server's server.NewServer + Start, as the CLI does: Start listens by itself on
// a host:port given in advance, so a free port can only be guessed (racy when tests start
// several servers), and a failed listen ends in echo's Logger.Fatal, which exits the whole
// process. It also opens a gRPC connection to the frontend that nothing closes. So
// newUIHandler assembles the same echo app from ui-server's exported pieces, in the order
// server.NewServer (v2.55.0) uses; re-check it against server/server.go and
// route.SetAPIRoutes when upgrading ui-server.
type uiServer struct {
	url  string
	http *http.Server
	conn *grpc.ClientConn
	cfg  *uiconfig.ConfigProviderWithRefresh
	done chan struct{}
}

// listenUI takes the UI's port before the server starts, so a busy port fails fast,
// before the seconds a server start costs.
func listenUI(opts Options) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(opts.IP, strconv.Itoa(opts.UIPort)))
	if err != nil {
		return nil, fmt.Errorf("devserver: UI port %d is not available (is another Temporal server running?): %w",
			opts.UIPort, err)
	}
	return ln, nil
}

// serveUI starts serving the UI on ln. It must run after the frontend listens: the UI's gRPC
// connection dials at once, and a refused first dial puts it in reconnect backoff, so the
// UI would answer 503 for its first seconds. It takes ownership of ln.
func serveUI(ln net.Listener, opts Options, frontend, host string) (*uiServer, error) {
	port := ln.Addr().(*net.TCPAddr).Port
	cfg := &uiconfig.Config{
		TemporalGRPCAddress: frontend,
		Host:                opts.IP,
		Port:                port,
		EnableUI:            true,
		DefaultNamespace:    opts.Namespace,
		// The UI is served over plain HTTP, so its CSRF cookie must not be Secure or the
		// browser drops it and every write (trigger a schedule, start a workflow like this
		// one) is refused; the CLI sets the same.
		CORS:     uiconfig.CORS{CookieInsecure: true},
		HideLogs: true,
		// The machine may have no internet; the UI's news and release checks would only fail.
		DisableNewsFetch:   true,
		NotifyOnNewVersion: false,
		Codec:              uiconfig.Codec{Endpoint: opts.CodecEndpoint},
	}
	if err := cfg.Validate(); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("devserver: UI config: %w", err)
	}
	provider, err := uiconfig.NewConfigProviderWithRefresh(cfg)
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("devserver: UI config: %w", err)
	}
	h, conn, err := newUIHandler(provider)
	if err != nil {
		_ = ln.Close()
		provider.Close()
		return nil, err
	}

	u := &uiServer{
		url:  "http://" + net.JoinHostPort(host, strconv.Itoa(port)),
		http: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		conn: conn,
		cfg:  provider,
		done: make(chan struct{}),
	}
	go func() {
		defer close(u.done)
		if err := u.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			opts.Logger.Error("devserver: UI server stopped", "error", err)
		}
	}()
	return u, nil
}

// newUIHandler builds what ui-server's server.NewServer builds, minus the listening.
func newUIHandler(provider *uiconfig.ConfigProviderWithRefresh) (http.Handler, *grpc.ClientConn, error) {
	cfg, err := provider.GetConfig()
	if err != nil {
		return nil, nil, err
	}
	apiMiddleware := []api.Middleware{
		headers.WithForwardHeaders([]string{auth.AuthorizationExtrasHeader, "Caller-Type"}),
	}

	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.Use(middleware.Recover())
	e.Use(middleware.Gzip())
	e.Use(cors.CORSMiddleware(cors.CORSConfig{
		AllowHeaders: []string{
			echo.HeaderOrigin, echo.HeaderContentType, echo.HeaderAccept,
			echo.HeaderXCSRFToken, echo.HeaderAuthorization, auth.AuthorizationExtrasHeader,
			"Caller-Type",
		},
		AllowCredentials: true,
		ConfigProvider:   provider,
	}))
	e.Use(middleware.Secure())
	cookieSecure := !cfg.CORS.CookieInsecure
	e.Use(csrf.EnsureTokenCookie(cookieSecure))
	e.Use(middleware.CSRFWithConfig(csrf.MiddlewareConfig(provider, cookieSecure)))
	e.Pre(route.PublicPath(cfg.PublicPath))
	route.SetHealthRoute(e)

	// route.SetAPIRoutes, keeping hold of the gRPC connection so Stop can close it.
	conn, err := api.CreateGRPCConnection(provider)
	if err != nil {
		return nil, nil, fmt.Errorf("devserver: UI gRPC connection: %w", err)
	}
	g := e.Group("/api/v1")
	g.GET("/settings", api.GetSettings(provider))
	g.GET("/releases", api.GetLatestReleases(provider, api.NewReleaseChecker()))
	g.GET("/ui-extensions", api.GetUIExtensions(provider, api.TemporalAccessCheck(conn, apiMiddleware)))
	writeControl := route.DisableWriteMiddleware(provider)
	g.GET(api.WorkflowRawHistoryUrl, api.WorkflowRawHistoryHandler(workflowservice.NewWorkflowServiceClient(conn)), writeControl)
	g.Match([]string{"GET", "POST", "PUT", "PATCH", "DELETE"}, "/*",
		api.TemporalAPIHandler(provider, apiMiddleware, conn), writeControl)

	route.SetAuthRoutes(e, provider)

	assets, err := ui.Assets()
	if err == nil {
		assets, err = fs.Sub(assets, "local") // "cloud" is Temporal Cloud's variant
	}
	if err == nil {
		err = route.SetUIRoutes(e, cfg.PublicPath, assets, provider)
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("devserver: UI assets: %w", err)
	}
	route.SetRenderRoute(e, cfg.PublicPath)
	return e, conn, nil
}

func (u *uiServer) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := u.http.Shutdown(ctx)
	if err != nil {
		// Long-lived requests (the UI polls) must not hold Stop up.
		err = u.http.Close()
	}
	<-u.done
	u.cfg.Close()
	if cerr := u.conn.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("stopping UI: %w", err)
	}
	return nil
}
