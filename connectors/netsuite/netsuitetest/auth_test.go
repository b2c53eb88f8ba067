package netsuitetest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The emulator's verifier is its own implementation; it must agree with
// Oracle's published example too.
func TestOAuthVerifierMatchesOracleVector(t *testing.T) {
	params := map[string][]string{
		"oauth_consumer_key":     {"ef40afdd8abaac111b13825dd5e5e2ddddb44f86d5a0dd6dcf38c20aae6b67e4"},
		"oauth_nonce":            {"fjaLirsIcCGVZWzBX0pg"},
		"oauth_signature_method": {"HMAC-SHA256"},
		"oauth_timestamp":        {"1508242306"},
		"oauth_token":            {"2b0ce516420110bcbd36b69e99196d1b7f6de3c6234c5afb799b73d87569f5cc"},
		"oauth_version":          {"1.0"},
	}
	base := OAuthBaseString("GET", "https://123456.suitetalk.api.netsuite.com/services/rest/record/v1/employee/40", params)
	require.Equal(t, "GET&https%3A%2F%2F123456.suitetalk.api.netsuite.com%2Fservices%2Frest%2Frecord%2Fv1%2Femployee%2F40&"+
		"oauth_consumer_key%3Def40afdd8abaac111b13825dd5e5e2ddddb44f86d5a0dd6dcf38c20aae6b67e4%26"+
		"oauth_nonce%3DfjaLirsIcCGVZWzBX0pg%26oauth_signature_method%3DHMAC-SHA256%26oauth_timestamp%3D1508242306%26"+
		"oauth_token%3D2b0ce516420110bcbd36b69e99196d1b7f6de3c6234c5afb799b73d87569f5cc%26oauth_version%3D1.0", base)
	sig := OAuthSignature(base, "d26ad321a4b2f23b0741c8d38392ce01c3e23e109df6c96eac6d099e9ab9e8b5", "c29a677df7d5439a458c063654187e3d678d73aca8e3c9d8bea1478a3eb0d295")
	require.Equal(t, "B5OIWznZ2YP0OB7VrJrGkYsTh%2B8H%2B5T9Hag%2Bo92q0zY%3D", pct(sig))
}
