package main

import (
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/worker/codec"
)

const codecKeyMissing = `codec.encryption: payloads are encrypted unless the configuration turns it off, and no key is set: ` +
	`set OPTOUT_CODEC_KEYS (or OPTOUT_CODEC_KEYS_FILE) to id:base64key, e.g. k1:$(openssl rand -base64 32), ` +
	`or write codec.encryption: off to store payloads in clear`

func TestCodecConfigErrors(t *testing.T) {
	base := one(`{kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY}`, nsTBA+`}`, "")
	for _, tc := range []struct{ codec, want string }{
		{`{encryption: maybe}`, `codec.encryption: "maybe" must be on or off`},
		{`{encryption: false}`, `codec.encryption: "false" must be on or off`},
		{`{listen: nope}`, `codec.listen: "nope" is not a listen address such as :8234 or 127.0.0.1:8234`},
		{`{corsOrigins: ["https://ui.example.com"]}`, `codec.corsOrigins: given without codec.listen, which turns the codec server on`},
		{`{listen: ":8234", corsOrigins: ["https://ui.example.com/"]}`, `codec.corsOrigins[0]: "https://ui.example.com/" is not an origin such as https://temporal.example.com (a scheme and a host, with no path)`},
		{`{listen: ":8234", corsOrigins: ["ui.example.com"]}`, `codec.corsOrigins[0]: "ui.example.com" is not an origin such as https://temporal.example.com (a scheme and a host, with no path)`},
		{`{listen: ":8234", corsOrigins: ["*"]}`, `codec.corsOrigins[0]: "*" is not an origin such as https://temporal.example.com (a scheme and a host, with no path)`},
		{`{listen: ":8234", corsOrigins: ["https://UI.example.com"]}`, `codec.corsOrigins[0]: "https://UI.example.com" must be lower-case, as browsers send it`},
		{`{listen: ":8234", corsOrigins: ["https://ui.example.com", "https://ui.example.com"]}`, `codec.corsOrigins[1]: "https://ui.example.com" is given twice`},
		// Keys are never configuration values.
		{`{keys: "k1:abc"}`, `codec.keys: unknown key (known: corsOrigins, encryption, listen)`},
	} {
		_, err := ParseConfig([]byte(base+"codec: "+tc.codec+"\n"), false)
		require.Error(t, err, tc.codec)
		require.Equal(t, tc.want, err.Error(), tc.codec)
	}
	cfg, err := ParseConfig([]byte(base+"codec:\n  encryption: off\n  listen: 127.0.0.1:8234\n  corsOrigins: [\"https://ui.example.com\", \"http://10.0.0.5:8080\"]\n"), false)
	require.NoError(t, err)
	require.Equal(t, CodecSettings{Encryption: "off", Listen: "127.0.0.1:8234", CORSOrigins: []string{"https://ui.example.com", "http://10.0.0.5:8080"}}, cfg.Codec)
}

func envOf(kv ...string) LookupEnv {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// TestResolveCodec: encryption is on unless the configuration turns it
// off, and then needs a key; only the built-in demo is off without one.
func TestResolveCodec(t *testing.T) {
	key := testCodecKey(t, "k1")
	for _, tc := range []struct {
		name     string
		settings CodecSettings
		env      LookupEnv
		encrypts bool
		keys     int
		err      string
	}{
		{"production without a key", CodecSettings{}, envOf(), false, 0, codecKeyMissing},
		{"production, encryption on, without a key", CodecSettings{Encryption: "on"}, envOf(codec.KeysEnv, " "), false, 0, codecKeyMissing},
		{"production with a key", CodecSettings{}, envOf(codec.KeysEnv, key), true, 1, ""},
		{"turned off", CodecSettings{Encryption: "off"}, envOf(), false, 0, ""},
		{"turned off, old key still decrypts", CodecSettings{Encryption: "off"}, envOf(codec.KeysEnv, key), false, 1, ""},
		{"codec server without a key", CodecSettings{Encryption: "off", Listen: ":8234"}, envOf(), false, 0,
			"codec.listen: the codec server needs a key: set OPTOUT_CODEC_KEYS (or OPTOUT_CODEC_KEYS_FILE)"},
		{"the demo without a key", DemoConfig().Codec, envOf(), false, 0, ""},
		{"the demo with a key", DemoConfig().Codec, envOf(codec.KeysEnv, key), true, 1, ""},
		{"a short token", CodecSettings{}, envOf(codec.KeysEnv, key, codec.TokenEnv, "tooshort"), false, 0,
			"OPTOUT_CODEC_TOKEN: the token must be at least 16 characters (e.g. openssl rand -hex 32)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.settings.ResolveCodec(tc.env)
			if tc.err != "" {
				require.EqualError(t, err, tc.err)
				var ce *ConfigError
				require.ErrorAs(t, err, &ce, "printed alone, like every configuration problem")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.encrypts, s.Codec.Encrypts())
			require.Len(t, s.Codec.KeyIDs(), tc.keys)
		})
	}
}

// productionEnv sets what testFlags' configuration needs, except the
// codec's key.
func productionEnv(t *testing.T) {
	for _, v := range []string{"MC_KEY", "NS_CK", "NS_CS", "NS_TI", "NS_TS"} {
		t.Setenv(v, "0123456789abcdef-us6")
	}
	t.Setenv("OPTOUT_LEDGER_KEY", "a test ledger key of 32 bytes!!!")
	t.Setenv(codec.KeysFileEnv, "")
	t.Chdir(t.TempDir())
}

// TestCodecKeyRequiredInProduction: the worker does not start without a
// key unless the configuration turns encryption off, and a bad key stops
// it with an error naming the variable and showing no key material.
func TestCodecKeyRequiredInProduction(t *testing.T) {
	productionEnv(t)
	log := slog.New(slog.DiscardHandler)
	t.Setenv(codec.KeysEnv, "")
	app := NewApp(testFlags(t), log)
	var ce *ConfigError
	require.ErrorAs(t, app.Err(), &ce)
	require.Equal(t, codecKeyMissing, ce.Error())

	// -dev with a configuration file follows the production rule: only the
	// built-in demo may run without a key.
	f := testFlags(t)
	f.Dev, f.DataDir = true, t.TempDir()
	app = NewApp(f, log)
	require.ErrorAs(t, app.Err(), &ce)
	require.Equal(t, codecKeyMissing, ce.Error())

	b := make([]byte, 24)
	_, err := rand.Read(b)
	require.NoError(t, err)
	short := base64.StdEncoding.EncodeToString(b)
	t.Setenv(codec.KeysEnv, "k2:"+short+","+short)
	app = NewApp(testFlags(t), log)
	require.ErrorAs(t, app.Err(), &ce)
	require.Equal(t, `OPTOUT_CODEC_KEYS: key "k2" is 24 bytes; AES-256 needs exactly 32 (openssl rand -base64 32)`+"\n"+
		`OPTOUT_CODEC_KEYS: entry 2 is not id:base64key (the entry is not shown)`, ce.Error())
	require.NotContains(t, app.Err().Error(), short[:8])

	// Turned off in the file, it starts without a key.
	t.Setenv(codec.KeysEnv, "")
	path := filepath.Join(t.TempDir(), "config.yaml")
	cfg, err := os.ReadFile(testFlags(t).ConfigPath)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, append(cfg, "codec: {encryption: off}\n"...), 0o600))
	app = NewApp(Flags{ConfigPath: path}, log)
	require.NoError(t, app.Err())
}
