//go:build nodev

package main

import (
	"errors"
	"fmt"
	"io"

	"go.uber.org/fx"
)

// The production build (go build -tags nodev ./worker) leaves out the
// dev mode: the embedded Temporal server and Web UI, and the vendor
// emulators. The worker is then a third of the size, and a third of the
// memory is its own pages (see README, "Operations").

// errNoDev is what -dev and -emulators answer in the production build.
var errNoDev = errors.New("this worker was built without the dev mode (-tags nodev); build it without the tag for -dev and -emulators")

// DevOptions fail the start: there is no dev mode to overlay.
var DevOptions = fx.Error(errNoDev)

func serveEmulators(w io.Writer) int {
	fmt.Fprintln(w, "worker:", errNoDev)
	return 2
}
