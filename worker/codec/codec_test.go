package codec_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/proto"

	"github.com/optoutsync/optoutsync/worker/codec"
)

func newKey(t *testing.T, id string) codec.Key {
	t.Helper()
	k := codec.Key{ID: id, Secret: make([]byte, codec.KeySize)}
	_, err := rand.Read(k.Secret)
	require.NoError(t, err)
	return k
}

func newCodec(t *testing.T, encrypt bool, keys ...codec.Key) *codec.Codec {
	t.Helper()
	c, err := codec.New(keys, encrypt)
	require.NoError(t, err)
	return c
}

// plain is a payload as the SDK's JSON converter writes it.
func plain(t *testing.T, v any) *commonpb.Payload {
	t.Helper()
	p, err := converter.GetDefaultDataConverter().ToPayload(v)
	require.NoError(t, err)
	return p
}

type syncInput struct {
	IntegrationID string `json:"integrationId"`
	Note          string `json:"note"`
}

const secretText = "hash 9e107d9d372bb6826bd81d3542a419d6 refused"

func TestRoundTrip(t *testing.T) {
	c := newCodec(t, true, newKey(t, "k1"))
	in := []*commonpb.Payload{plain(t, syncInput{IntegrationID: "acme", Note: secretText}), plain(t, nil), plain(t, []byte{0, 1, 2})}
	enc, err := c.Encode(in)
	require.NoError(t, err)
	require.Len(t, enc, len(in))
	for i, p := range enc {
		require.Equal(t, codec.MetadataEncoding, string(p.Metadata[converter.MetadataEncoding]), "payload %d", i)
		require.Equal(t, "k1", string(p.Metadata[codec.MetadataKeyID]))
		require.Len(t, p.Metadata, 2, "the original metadata is inside the ciphertext")
		require.NotContains(t, string(p.Data), "acme")
		require.NotContains(t, string(p.Data), "9e107d9d")
	}
	dec, err := c.Decode(enc)
	require.NoError(t, err)
	for i := range in {
		require.True(t, proto.Equal(in[i], dec[i]), "payload %d: %v != %v", i, in[i], dec[i])
	}
	// A fresh nonce each time: equal plaintexts do not look equal.
	again, err := c.Encode(in[:1])
	require.NoError(t, err)
	require.NotEqual(t, enc[0].Data, again[0].Data)

	// Through the SDK's data converter, as workers and clients use it.
	dc := codec.DataConverter(c)
	p, err := dc.ToPayload(syncInput{IntegrationID: "acme", Note: secretText})
	require.NoError(t, err)
	require.Equal(t, codec.MetadataEncoding, string(p.Metadata[converter.MetadataEncoding]))
	var back syncInput
	require.NoError(t, dc.FromPayload(p, &back))
	require.Equal(t, syncInput{IntegrationID: "acme", Note: secretText}, back)
}

// TestKeyRotation: a codec with a new current key still opens what the old
// key sealed, and seals with the new one; the old codec alone cannot open
// the new key's payloads and says which key it lacks.
func TestKeyRotation(t *testing.T) {
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	before := newCodec(t, true, k1)
	after := newCodec(t, true, k2, k1)
	require.Equal(t, []string{"k2", "k1"}, after.KeyIDs())

	old, err := before.Encode([]*commonpb.Payload{plain(t, "written before the rotation")})
	require.NoError(t, err)
	dec, err := after.Decode(old)
	require.NoError(t, err)
	require.True(t, proto.Equal(plain(t, "written before the rotation"), dec[0]))

	fresh, err := after.Encode([]*commonpb.Payload{plain(t, "written after")})
	require.NoError(t, err)
	require.Equal(t, "k2", string(fresh[0].Metadata[codec.MetadataKeyID]))
	_, err = before.Decode(fresh)
	require.EqualError(t, err, `codec: payload is encrypted with key "k2", which is not among the configured keys (k1): add it to OPTOUT_CODEC_KEYS`)

	// Without any key, the error names the variable to set.
	none := newCodec(t, false)
	_, err = none.Decode(fresh)
	require.EqualError(t, err, `codec: payload is encrypted with key "k2", and no codec key is configured: set OPTOUT_CODEC_KEYS (or OPTOUT_CODEC_KEYS_FILE)`)
}

func TestTamperDetection(t *testing.T) {
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	c := newCodec(t, true, k1, k2)
	enc, err := c.Encode([]*commonpb.Payload{plain(t, syncInput{IntegrationID: "acme"})})
	require.NoError(t, err)
	for name, mutate := range map[string]func(p *commonpb.Payload){
		"a flipped ciphertext bit": func(p *commonpb.Payload) { p.Data[len(p.Data)/2] ^= 1 },
		"a flipped nonce bit":      func(p *commonpb.Payload) { p.Data[0] ^= 0x80 },
		"a flipped tag bit":        func(p *commonpb.Payload) { p.Data[len(p.Data)-1] ^= 1 },
		// Both keys are known: the id is bound to the ciphertext, so a
		// relabelled payload fails rather than being opened under k2.
		"the key id relabelled": func(p *commonpb.Payload) { p.Metadata[codec.MetadataKeyID] = []byte("k2") },
		"a truncated payload":   func(p *commonpb.Payload) { p.Data = p.Data[:20] },
	} {
		t.Run(name, func(t *testing.T) {
			p := proto.Clone(enc[0]).(*commonpb.Payload)
			mutate(p)
			_, err := c.Decode([]*commonpb.Payload{p})
			require.Error(t, err)
			require.Regexp(t, `codec: payload encrypted with key "k[12]" (does not authenticate|is truncated)`, err.Error())
		})
	}
	_, err = c.Decode(enc)
	require.NoError(t, err, "the original still opens")

	// The same ciphertext under another key with the same id does not open.
	other := newCodec(t, true, newKey(t, "k1"))
	_, err = other.Decode(enc)
	require.EqualError(t, err, `codec: payload encrypted with key "k1" does not authenticate: it was altered, or "k1" is not the key it was encrypted with`)
}

// TestPlaintextPassesThrough: histories written before encryption was on
// stay readable, and a codec with encryption off writes plaintext.
func TestPlaintextPassesThrough(t *testing.T) {
	in := []*commonpb.Payload{plain(t, syncInput{IntegrationID: "acme"}), plain(t, nil), {Data: []byte("no metadata at all")}}
	for _, c := range []*codec.Codec{newCodec(t, true, newKey(t, "k1")), newCodec(t, false, newKey(t, "k1")), newCodec(t, false)} {
		dec, err := c.Decode(in)
		require.NoError(t, err)
		for i := range in {
			require.Same(t, in[i], dec[i])
		}
	}
	off := newCodec(t, false, newKey(t, "k1"))
	require.False(t, off.Encrypts())
	enc, err := off.Encode(in)
	require.NoError(t, err)
	require.Equal(t, in, enc)
	// A codec that would encrypt needs a key.
	_, err = codec.New(nil, true)
	require.ErrorContains(t, err, "set OPTOUT_CODEC_KEYS (or OPTOUT_CODEC_KEYS_FILE)")
}

func b64(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// TestParseKeysErrors: each mistake is named, with its source and key id,
// and no error shows key material.
func TestParseKeysErrors(t *testing.T) {
	good, other, short := b64(32), b64(32), b64(16)
	urlSafe := strings.NewReplacer("+", "-", "/", "_").Replace(good)
	if urlSafe == good {
		urlSafe = "!" + good[1:]
	}
	for _, tc := range []struct {
		name, text, want string
		secrets          []string
	}{
		{"empty", " , ", `OPTOUT_CODEC_KEYS: no key (expected id:base64key, e.g. k1:$(openssl rand -base64 32))`, nil},
		{"wrong length", "k1:" + short, `OPTOUT_CODEC_KEYS: key "k1" is 16 bytes; AES-256 needs exactly 32 (openssl rand -base64 32)`, []string{short}},
		{"duplicate id", "k1:" + good + ",k1:" + other, `OPTOUT_CODEC_KEYS: key id "k1" is given twice`, []string{good, other}},
		{"same key twice", "k2:" + good + ",k1:" + good, `OPTOUT_CODEC_KEYS: keys "k2" and "k1" are the same key`, []string{good}},
		{"bad base64", "k1:" + urlSafe, `OPTOUT_CODEC_KEYS: key "k1" is not standard base64 (generate one with openssl rand -base64 32)`, []string{urlSafe}},
		{"no id", good, `OPTOUT_CODEC_KEYS: entry 1 is not id:base64key (the entry is not shown)`, []string{good}},
		{"key pasted as the id", "k1:" + good + "," + good + ":" + other, `OPTOUT_CODEC_KEYS: entry 2: the key id must be 1 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit (the id is not shown)`, []string{good, other}},
		{"several at once", "k1:" + short + "\nk2:%%%", "OPTOUT_CODEC_KEYS: key \"k1\" is 16 bytes; AES-256 needs exactly 32 (openssl rand -base64 32)\nOPTOUT_CODEC_KEYS: key \"k2\" is not standard base64 (generate one with openssl rand -base64 32)", []string{short}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := codec.ParseKeys(codec.KeysEnv, tc.text)
			require.EqualError(t, err, tc.want)
			for _, s := range tc.secrets {
				require.NotContains(t, err.Error(), s)
				require.NotContains(t, err.Error(), s[:12], "not even a part of a key")
			}
		})
	}
	keys, err := codec.ParseKeys(codec.KeysEnv, "k2:"+good+",\n k1:"+other+"\n")
	require.NoError(t, err)
	require.Equal(t, []string{"k2", "k1"}, []string{keys[0].ID, keys[1].ID})
}

func TestLoadKeysAndToken(t *testing.T) {
	good, other := b64(32), b64(32)
	env := func(kv ...string) func(string) (string, bool) {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	keys, err := codec.LoadKeys(env())
	require.NoError(t, err)
	require.Nil(t, keys, "no variable: no keys, the caller decides")
	keys, err = codec.LoadKeys(env(codec.KeysEnv, "  "))
	require.NoError(t, err)
	require.Nil(t, keys, "blank, as an env file leaves it, is not set")

	keys, err = codec.LoadKeys(env(codec.KeysEnv, "k1:"+good))
	require.NoError(t, err)
	require.Equal(t, "k1", keys[0].ID)

	path := filepath.Join(t.TempDir(), "codec-keys")
	require.NoError(t, os.WriteFile(path, []byte("k2:"+other+"\nk1:"+good+"\n"), 0o600))
	keys, err = codec.LoadKeys(env(codec.KeysFileEnv, path))
	require.NoError(t, err)
	require.Equal(t, []string{"k2", "k1"}, []string{keys[0].ID, keys[1].ID})

	_, err = codec.LoadKeys(env(codec.KeysEnv, "k1:"+good, codec.KeysFileEnv, path))
	require.EqualError(t, err, "OPTOUT_CODEC_KEYS and OPTOUT_CODEC_KEYS_FILE are both set; set only one")
	require.NoError(t, os.WriteFile(path, []byte("k1:"+good[:20]), 0o600))
	_, err = codec.LoadKeys(env(codec.KeysFileEnv, path))
	require.EqualError(t, err, fmt.Sprintf(`OPTOUT_CODEC_KEYS_FILE (%s): key "k1" is 15 bytes; AES-256 needs exactly 32 (openssl rand -base64 32)`, path))
	require.NotContains(t, err.Error(), good[:20])
	_, err = codec.LoadKeys(env(codec.KeysFileEnv, filepath.Join(t.TempDir(), "missing")))
	require.ErrorContains(t, err, "OPTOUT_CODEC_KEYS_FILE: ")

	token, err := codec.LoadToken(env())
	require.NoError(t, err)
	require.Empty(t, token)
	_, err = codec.LoadToken(env(codec.TokenEnv, "short-secret"))
	require.EqualError(t, err, "OPTOUT_CODEC_TOKEN: the token must be at least 16 characters (e.g. openssl rand -hex 32)")
	require.NotContains(t, err.Error(), "short-secret")
	_, err = codec.LoadToken(env(codec.TokenEnv, "a token with spaces in it"))
	require.EqualError(t, err, "OPTOUT_CODEC_TOKEN: the token must not contain white space")
	token, err = codec.LoadToken(env(codec.TokenEnv, " 0123456789abcdef0123 "))
	require.NoError(t, err)
	require.Equal(t, "0123456789abcdef0123", token)
}

// TestEncodedPayloadHoldsNoPlaintext is the property the history test
// relies on: the ciphertext holds no run of the plaintext.
func TestEncodedPayloadHoldsNoPlaintext(t *testing.T) {
	c := newCodec(t, true, newKey(t, "k1"))
	p := plain(t, strings.Repeat(secretText+" ", 50))
	enc, err := c.Encode([]*commonpb.Payload{p})
	require.NoError(t, err)
	raw, err := proto.Marshal(enc[0])
	require.NoError(t, err)
	require.False(t, bytes.Contains(raw, []byte("9e107d9d")))
	require.False(t, bytes.Contains(raw, []byte("json/plain")), "the original encoding is inside the ciphertext too")
}
