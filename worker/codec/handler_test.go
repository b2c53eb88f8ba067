package codec_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/optoutsync/optoutsync/worker/codec"
)

const (
	uiOrigin = "https://temporal.example.com"
	token    = "0123456789abcdef0123456789abcdef"
)

// PostPayloads sends payloads to the codec server as the Web UI does and
// returns the answer's status, headers and payloads.
func postPayloads(t *testing.T, url string, hdr map[string]string, payloads []*commonpb.Payload) (*http.Response, []*commonpb.Payload) {
	t.Helper()
	body, err := protojson.Marshal(&commonpb.Payloads{Payloads: payloads})
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode != http.StatusOK {
		return resp, nil
	}
	var out commonpb.Payloads
	require.NoError(t, protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, &out), "%s", b)
	return resp, out.Payloads
}

func TestHandler(t *testing.T) {
	c := newCodec(t, true, newKey(t, "k2"), newKey(t, "k1"))
	srv := httptest.NewServer(codec.Handler(c, codec.HandlerOptions{Origins: []string{uiOrigin}, Token: token}))
	t.Cleanup(srv.Close)
	auth := map[string]string{"Authorization": "Bearer " + token, "X-Namespace": "default", "Origin": uiOrigin}

	in := []*commonpb.Payload{plain(t, syncInput{IntegrationID: "acme", Note: secretText}), plain(t, 42)}
	resp, enc := postPayloads(t, srv.URL+"/encode", auth, in)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, uiOrigin, resp.Header.Get("Access-Control-Allow-Origin"))
	require.Equal(t, "true", resp.Header.Get("Access-Control-Allow-Credentials"))
	require.Len(t, enc, 2)
	require.Equal(t, codec.MetadataEncoding, string(enc[0].Metadata["encoding"]))
	require.Equal(t, "k2", string(enc[0].Metadata[codec.MetadataKeyID]))

	resp, dec := postPayloads(t, srv.URL+"/decode", auth, enc)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for i := range in {
		require.True(t, proto.Equal(in[i], dec[i]))
	}
	// Under a path prefix, as behind a proxy.
	resp, dec = postPayloads(t, srv.URL+"/codec/decode", auth, enc)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, proto.Equal(in[0], dec[0]))

	// A payload sealed with a key the server does not hold: a 400 that
	// names the key and what to do, never a key.
	foreign, err := newCodec(t, true, newKey(t, "k0")).Encode(in[:1])
	require.NoError(t, err)
	req := func(method, path string, hdr map[string]string, body string) (*http.Response, string) {
		t.Helper()
		r, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(r)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, string(b)
	}
	fb, err := protojson.Marshal(&commonpb.Payloads{Payloads: foreign})
	require.NoError(t, err)
	resp, body := req(http.MethodPost, "/decode", auth, string(fb))
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, `payload is encrypted with key "k0", which is not among the configured keys (k2, k1)`)

	t.Run("preflight", func(t *testing.T) {
		resp, _ := req(http.MethodOptions, "/decode", map[string]string{
			"Origin": uiOrigin, "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "content-type,x-namespace,authorization",
		}, "")
		require.Equal(t, http.StatusNoContent, resp.StatusCode, "no token needed: a browser sends none in a preflight")
		require.Equal(t, uiOrigin, resp.Header.Get("Access-Control-Allow-Origin"))
		require.Equal(t, "Content-Type,X-Namespace,Authorization", resp.Header.Get("Access-Control-Allow-Headers"))
		require.Equal(t, "true", resp.Header.Get("Access-Control-Allow-Credentials"))
		require.Contains(t, resp.Header.Get("Access-Control-Allow-Methods"), "POST")
		require.Contains(t, resp.Header.Values("Vary"), "Origin")

		resp, _ = req(http.MethodOptions, "/decode", map[string]string{"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"}, "")
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
		require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
		// The origin of another port is another origin.
		resp, _ = req(http.MethodOptions, "/decode", map[string]string{"Origin": uiOrigin + ":8443", "Access-Control-Request-Method": "POST"}, "")
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
	})

	t.Run("token", func(t *testing.T) {
		for name, value := range map[string]string{
			"missing":        "",
			"wrong":          "Bearer " + strings.Repeat("x", len(token)),
			"a prefix of it": "Bearer " + token[:len(token)-1],
			"longer":         "Bearer " + token + "0",
			"another scheme": "Basic " + token,
			"no scheme":      token,
		} {
			hdr := map[string]string{"Origin": uiOrigin, "Authorization": value}
			resp, _ := req(http.MethodPost, "/decode", hdr, string(fb))
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, name)
			require.Equal(t, uiOrigin, resp.Header.Get("Access-Control-Allow-Origin"), "%s: the UI can read the refusal", name)
			require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Bearer")
		}
		resp, _ := req(http.MethodPost, "/decode", map[string]string{"Authorization": "bearer " + token}, `{"payloads":[]}`)
		require.Equal(t, http.StatusOK, resp.StatusCode, "the scheme is case-insensitive; no Origin: not a browser")
	})

	t.Run("refused", func(t *testing.T) {
		resp, _ := req(http.MethodPost, "/decode", map[string]string{"Authorization": "Bearer " + token, "Origin": "https://evil.example.com"}, `{"payloads":[]}`)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "a page of another origin cannot use the server, even with a simple request")
		resp, _ = req(http.MethodGet, "/decode", auth, "")
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
		resp, _ = req(http.MethodPost, "/other", auth, `{"payloads":[]}`)
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
		resp, _ = req(http.MethodPost, "/decode", auth, "not json")
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		resp, _ = req(http.MethodPost, "/decode", auth, `{"payloads":[{"data":"`+strings.Repeat("A", codec.MaxRequestBody)+`"}]}`)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "a body over the bound")
	})
}

// TestHandlerWithoutToken: with no token configured, a request without
// Authorization is served.
func TestHandlerWithoutToken(t *testing.T) {
	c := newCodec(t, true, newKey(t, "k1"))
	srv := httptest.NewServer(codec.Handler(c, codec.HandlerOptions{}))
	t.Cleanup(srv.Close)
	in := []*commonpb.Payload{plain(t, "hello")}
	enc, err := c.Encode(in)
	require.NoError(t, err)
	resp, dec := postPayloads(t, srv.URL+"/decode", map[string]string{"X-Namespace": "default"}, enc)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, proto.Equal(in[0], dec[0]))
}

// TestHandlerAsRemoteCodec: the SDK's remote codec, which the temporal
// CLI's --codec-endpoint and --codec-auth and a temporal.toml codec profile
// use, decodes through the server, and is refused without the token.
func TestHandlerAsRemoteCodec(t *testing.T) {
	c := newCodec(t, true, newKey(t, "k1"))
	srv := httptest.NewServer(codec.Handler(c, codec.HandlerOptions{Token: token}))
	t.Cleanup(srv.Close)
	remote := func(auth string) converter.PayloadCodec {
		return converter.NewRemotePayloadCodec(converter.RemotePayloadCodecOptions{
			Endpoint: srv.URL,
			ModifyRequest: func(r *http.Request) error {
				r.Header.Set("X-Namespace", "default")
				r.Header.Set("Authorization", auth)
				return nil
			},
		})
	}
	in := []*commonpb.Payload{plain(t, syncInput{IntegrationID: "acme", Note: secretText})}
	enc, err := c.Encode(in)
	require.NoError(t, err)
	dec, err := remote("Bearer " + token).Decode(enc)
	require.NoError(t, err)
	require.True(t, proto.Equal(in[0], dec[0]))
	_, err = remote("Bearer wrong").Decode(enc)
	require.ErrorContains(t, err, "Unauthorized")
}
