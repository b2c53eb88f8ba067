package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// serveEmulators runs only the vendor emulators, seeded with the demo
// data, until SIGINT or SIGTERM, and prints their base URLs and
// credentials so that a person or another client can talk to them.
func serveEmulators(w io.Writer) int {
	cfg := DemoConfig()
	e := StartEmulators(cfg)
	defer e.Close()
	if err := e.Resolve(cfg); err != nil {
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
	if s := e.Mailchimp; s != nil {
		fmt.Fprintf(w, "\nMailchimp Marketing API  %s\n  API key (HTTP Basic password or Bearer)  %s\n  audiences  %s, %s\n",
			s.URL, s.APIKey, demoNetSuiteAudience, demoSalesforceAudience)
		fmt.Fprintf(w, "  try: curl -u any:%s '%s/lists/%s/members?status=unsubscribed'\n", s.APIKey, s.URL, demoNetSuiteAudience)
	}
	if s := e.NetSuite; s != nil {
		fmt.Fprintf(w, "\nNetSuite SuiteTalk REST  %s\n  account (OAuth realm)  %s\n  TBA consumer key %s\n      consumer secret %s\n      token id %s\n      token secret %s\n  saved search  %s\n",
			s.URL, s.AccountID, s.ConsumerKey, s.ConsumerSecret, s.TokenID, s.TokenSecret, demoSavedSearch)
	}
	if s := e.Salesforce; s != nil {
		fmt.Fprintf(w, "\nSalesforce REST  %s (My Domain and instance_url)\n  client id %s\n  client secret %s\n  JWT username %s\n  campaign  %s\n",
			s.URL, s.ClientID, s.ClientSecret, s.Username, e.CampaignID)
		fmt.Fprintf(w, "  try: curl -d grant_type=client_credentials -d client_id=%s -d client_secret=%s %s/services/oauth2/token\n",
			s.ClientID, s.ClientSecret, s.URL)
	}
	names := make([]string, 0, len(e.Env))
	for k := range e.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "\nThe same credentials as environment variables, for a worker configuration:")
	for _, k := range names {
		fmt.Fprintf(w, "  export %s=%s\n", k, e.Env[k])
	}
}
