package netsuite

import (
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Oracle's published TBA example (NetSuite help, "The Signature" for REST
// web services).
var oracleVector = struct {
	url, method, realm, nonce, timestamp string
	creds                                TBA
	base, signature                      string
}{
	url:       "https://123456.suitetalk.api.netsuite.com/services/rest/record/v1/employee/40",
	method:    "GET",
	realm:     "123456",
	nonce:     "fjaLirsIcCGVZWzBX0pg",
	timestamp: "1508242306",
	creds: TBA{
		ConsumerKey:    "ef40afdd8abaac111b13825dd5e5e2ddddb44f86d5a0dd6dcf38c20aae6b67e4",
		ConsumerSecret: "d26ad321a4b2f23b0741c8d38392ce01c3e23e109df6c96eac6d099e9ab9e8b5",
		TokenID:        "2b0ce516420110bcbd36b69e99196d1b7f6de3c6234c5afb799b73d87569f5cc",
		TokenSecret:    "c29a677df7d5439a458c063654187e3d678d73aca8e3c9d8bea1478a3eb0d295",
	},
	base: "GET&https%3A%2F%2F123456.suitetalk.api.netsuite.com%2Fservices%2Frest%2Frecord%2Fv1%2Femployee%2F40&" +
		"oauth_consumer_key%3Def40afdd8abaac111b13825dd5e5e2ddddb44f86d5a0dd6dcf38c20aae6b67e4%26" +
		"oauth_nonce%3DfjaLirsIcCGVZWzBX0pg%26oauth_signature_method%3DHMAC-SHA256%26oauth_timestamp%3D1508242306%26" +
		"oauth_token%3D2b0ce516420110bcbd36b69e99196d1b7f6de3c6234c5afb799b73d87569f5cc%26oauth_version%3D1.0",
	signature: "B5OIWznZ2YP0OB7VrJrGkYsTh%2B8H%2B5T9Hag%2Bo92q0zY%3D",
}

func TestSignatureMatchesOracleVector(t *testing.T) {
	v := oracleVector
	params := url.Values{
		"oauth_consumer_key":     {v.creds.ConsumerKey},
		"oauth_nonce":            {v.nonce},
		"oauth_signature_method": {"HMAC-SHA256"},
		"oauth_timestamp":        {v.timestamp},
		"oauth_token":            {v.creds.TokenID},
		"oauth_version":          {"1.0"},
	}
	u, err := url.Parse(v.url)
	require.NoError(t, err)
	base := SignatureBaseString(v.method, BaseURL(u), params)
	require.Equal(t, v.base, base)
	require.Equal(t, v.signature, PercentEncode(Signature(base, v.creds.ConsumerSecret, v.creds.TokenSecret)))

	h := AuthorizationHeader(v.method, u, v.realm, v.creds, v.nonce, v.timestamp)
	require.True(t, strings.HasPrefix(h, `OAuth realm="123456", oauth_token="2b0ce5`), h)
	require.Contains(t, h, `oauth_signature="`+v.signature+`"`)
}

func TestSignatureIncludesQueryParameters(t *testing.T) {
	u, err := url.Parse("https://1234567-sb1.suitetalk.api.netsuite.com/services/rest/query/v1/suiteql?limit=10&offset=20")
	require.NoError(t, err)
	c := oracleVector.creds
	withQuery := AuthorizationHeader("POST", u, "1234567_SB1", c, "n", "1")
	u.RawQuery = ""
	without := AuthorizationHeader("POST", u, "1234567_SB1", c, "n", "1")
	require.NotEqual(t, withQuery, without, "query parameters are signed")

	// The realm is in the header but not in the signature.
	a := AuthorizationHeader("POST", u, "1234567_SB1", c, "n", "1")
	b := AuthorizationHeader("POST", u, "OTHER", c, "n", "1")
	sig := func(h string) string { return h[strings.Index(h, "oauth_signature="):] }
	require.Equal(t, sig(a), sig(b))
}

func TestPercentEncode(t *testing.T) {
	require.Equal(t, "a%20b~c-d._%2B%2F%3D%26%C3%A9", PercentEncode("a b~c-d._+/=&é"))
}
