package httpx

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBaseURLAllowsPlainHTTPOnlyOnLoopback(t *testing.T) {
	for raw, want := range map[string]string{
		"https://acme.crm.dynamics.com/": "https://acme.crm.dynamics.com",
		"https://x.my.salesforce.com/a":  "https://x.my.salesforce.com",
		"http://127.0.0.1:8080":          "http://127.0.0.1:8080",
		"http://localhost:9":             "http://localhost:9",
		"http://[::1]:9":                 "http://[::1]:9",
	} {
		u, err := BaseURL(raw)
		require.NoError(t, err, raw)
		require.Equal(t, want, u.String(), raw)
	}
	for raw, msg := range map[string]string{
		"":                      "is required",
		"acme.example.com":      "not an absolute URL",
		"http://acme.example":   "must use https",
		"ftp://acme.example":    "must use https",
		"http://10.0.0.1:80/x":  "must use https",
		"http://localhost.evil": "must use https",
	} {
		_, err := BaseURL(raw)
		require.ErrorContains(t, err, msg, raw)
	}
}
