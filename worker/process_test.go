package main

import (
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Helpers for the tests that run the built worker and starter as their own
// processes (BenchmarkWorkerRSS, TestCluster).

// buildBinaries builds main packages (paths relative to this package's
// directory) as a deployment does, the production build (go build -tags
// nodev: no dev mode), into a temporary directory, and returns each
// binary's path by its name ("worker", "starter"). race adds -race: a test
// built with it then reuses the packages it compiled.
func buildBinaries(tb testing.TB, race bool, pkgs ...string) map[string]string {
	tb.Helper()
	goCmd, err := exec.LookPath("go")
	require.NoError(tb, err, "the go command must be on PATH to build the binaries")
	dir := tb.TempDir()
	args := []string{"build", "-tags", "nodev", "-o", dir + string(filepath.Separator)}
	if race {
		args = append(args, "-race")
	}
	out, err := exec.Command(goCmd, append(args, pkgs...)...).CombinedOutput()
	require.NoError(tb, err, "go build -tags nodev %s: %s", strings.Join(pkgs, " "), out)
	bins := map[string]string{}
	for _, p := range pkgs {
		abs, err := filepath.Abs(p)
		require.NoError(tb, err)
		bins[filepath.Base(abs)] = filepath.Join(dir, filepath.Base(abs))
	}
	return bins
}

// serveTLS serves each handler over TLS on loopback and writes their
// certificates to one PEM file, for a child's SSL_CERT_FILE (which Go's
// certificate loader reads on Linux). The worker outside -dev refuses
// plain http:// API addresses, so the emulators are served as the vendors
// are and the worker runs unchanged, production rules included. The URLs
// come back in the handlers' order.
func serveTLS(tb testing.TB, handlers ...http.Handler) (urls []string, certFile string) {
	tb.Helper()
	var pemCerts []byte
	for _, h := range handlers {
		srv := httptest.NewUnstartedServer(h)
		// A client killed mid-handshake (TestCluster kills a worker) is
		// expected, not worth a line on stderr.
		srv.Config.ErrorLog = log.New(io.Discard, "", 0)
		srv.StartTLS()
		tb.Cleanup(srv.Close)
		urls = append(urls, srv.URL)
		pemCerts = append(pemCerts, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})...)
	}
	certFile = filepath.Join(tb.TempDir(), "emulators.pem")
	require.NoError(tb, os.WriteFile(certFile, pemCerts, 0o600))
	return urls, certFile
}
