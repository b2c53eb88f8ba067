package httpx

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// BaseURL parses an API or token base address to its scheme and host: it
// must be absolute and https, except plain http on a loopback host (an
// emulator), so that a credential is never sent in clear elsewhere.
func BaseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("is required")
	}
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute URL", raw)
	}
	if !Secure(u) {
		return nil, fmt.Errorf("%q must use https", raw)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// Secure reports whether u may carry a credential: https, or http to a
// loopback host.
func Secure(u *url.URL) bool {
	return u.Scheme == "https" || u.Scheme == "http" && isLoopback(u.Hostname())
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
