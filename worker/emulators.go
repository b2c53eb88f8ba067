//go:build !nodev

package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// serveEmulators runs only the vendor emulators, seeded with the demo
// data, until SIGINT or SIGTERM, and prints their base URLs and
// credentials so that a person or another client can talk to them.
func serveEmulators(w io.Writer) int {
	e := NewEmulators()
	defer e.Close()
	if err := e.Resolve(DemoConfig()); err != nil {
		fmt.Fprintln(os.Stderr, "worker: emulators:", err)
		return 1
	}
	printEmulators(w, e)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	return 0
}

// printEmulators writes where each emulator listens and how to sign in.
// The credentials are the emulators' own, generated at start: printing
// them is the point.
func printEmulators(w io.Writer, e *Emulators) {
	fmt.Fprintln(w, "optout-sync emulators (seeded with the demo data; Ctrl-C stops them)")
	fmt.Fprint(w, e.Describe())
	fmt.Fprintln(w, "\nThe same credentials as environment variables, for a worker configuration:")
	for _, k := range sortedKeys(e.Env) {
		fmt.Fprintf(w, "  export %s=%s\n", k, e.Env[k])
	}
}
