// Package codec encrypts Temporal payloads with AES-256-GCM, so that the
// inputs, results, signals and failure texts of optout-sync's workflows are
// ciphertext in Temporal's database (or in a Temporal Cloud namespace).
//
// Each encrypted payload names the key it was sealed with, so keys rotate:
// the first configured key encrypts, every configured key decrypts. A
// payload without the encryption metadata passes through unchanged, so
// histories written before encryption was turned on stay readable. The keys
// come from the environment ($OPTOUT_CODEC_KEYS or a file named by
// $OPTOUT_CODEC_KEYS_FILE), never from a configuration file or a workflow
// input. Handler serves the codec over Temporal's codec-server protocol, for
// the Web UI and `temporal workflow show --codec-endpoint`.
package codec

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/proto"

	"github.com/optoutsync/optoutsync/connectors"
)

// The environment variables the keys and the codec server's token are read
// from; a _FILE variable names a file holding the same text (a Docker or
// Kubernetes secret).
const (
	KeysEnv      = "OPTOUT_CODEC_KEYS"
	KeysFileEnv  = "OPTOUT_CODEC_KEYS_FILE"
	TokenEnv     = "OPTOUT_CODEC_TOKEN"
	TokenFileEnv = "OPTOUT_CODEC_TOKEN_FILE"
)

// The metadata of an encrypted payload. The encoding is the one Temporal's
// encryption samples use, which tools that know codecs recognise.
const (
	MetadataEncoding = "binary/encrypted"
	MetadataKeyID    = "encryption-key-id"
)

const (
	// KeySize is an AES-256 key's length in bytes.
	KeySize = 32
	// MinTokenLen bounds the codec server's bearer token from below.
	MinTokenLen = 16
	maxKeys     = 64
)

// keyIDPattern bounds key ids to 32 characters: an id is printed in errors,
// and a base64 key (43 or 44 characters) pasted in its place must not be.
var keyIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)

// Key is one named AES-256 key.
type Key struct {
	ID     string
	Secret []byte
}

// ParseKeys reads keys written as "id:base64key", separated by commas or
// white space; the first is the current key. source names where the text
// came from in errors ("OPTOUT_CODEC_KEYS"); no error shows key material.
func ParseKeys(source, text string) ([]Key, error) {
	entries := strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
	if len(entries) == 0 {
		return nil, fmt.Errorf("%s: no key (expected id:base64key, e.g. k1:$(openssl rand -base64 32))", source)
	}
	if len(entries) > maxKeys {
		return nil, fmt.Errorf("%s: %d keys; at most %d", source, len(entries), maxKeys)
	}
	var errs []error
	var keys []Key
	for i, e := range entries {
		id, b64, ok := strings.Cut(e, ":")
		switch {
		case !ok:
			// The entry is not shown: it may be a key without its id.
			errs = append(errs, fmt.Errorf("%s: entry %d is not id:base64key (the entry is not shown)", source, i+1))
			continue
		case !keyIDPattern.MatchString(id):
			errs = append(errs, fmt.Errorf("%s: entry %d: the key id must be 1 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit (the id is not shown)", source, i+1))
			continue
		}
		secret, err := base64.StdEncoding.Strict().DecodeString(b64)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: key %q is not standard base64 (generate one with openssl rand -base64 32)", source, id))
			continue
		case len(secret) != KeySize:
			errs = append(errs, fmt.Errorf("%s: key %q is %d bytes; AES-256 needs exactly %d (openssl rand -base64 32)", source, id, len(secret), KeySize))
			continue
		}
		for _, k := range keys {
			switch {
			case k.ID == id:
				errs = append(errs, fmt.Errorf("%s: key id %q is given twice", source, id))
			case bytes.Equal(k.Secret, secret):
				errs = append(errs, fmt.Errorf("%s: keys %q and %q are the same key", source, k.ID, id))
			}
		}
		keys = append(keys, Key{ID: id, Secret: secret})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return keys, nil
}

// LoadKeys reads the keys from $OPTOUT_CODEC_KEYS, or from the file
// $OPTOUT_CODEC_KEYS_FILE names. No keys (neither is set, or both are
// blank) is nil, nil: whether that is allowed is the caller's decision.
func LoadKeys(lookup func(string) (string, bool)) ([]Key, error) {
	text, source, err := secret(lookup, KeysEnv, KeysFileEnv)
	if err != nil || text == "" {
		return nil, err
	}
	return ParseKeys(source, text)
}

// LoadToken reads the codec server's bearer token from $OPTOUT_CODEC_TOKEN,
// or from the file $OPTOUT_CODEC_TOKEN_FILE names; "" when neither is set.
func LoadToken(lookup func(string) (string, bool)) (string, error) {
	token, source, err := secret(lookup, TokenEnv, TokenFileEnv)
	switch {
	case err != nil:
		return "", err
	case token != "" && len(token) < MinTokenLen:
		return "", fmt.Errorf("%s: the token must be at least %d characters (e.g. openssl rand -hex 32)", source, MinTokenLen)
	case strings.ContainsAny(token, " \t\r\n"):
		return "", fmt.Errorf("%s: the token must not contain white space", source)
	}
	return token, nil
}

// secret reads the variable env, or the file the variable fileEnv names,
// and says which it read. Blank counts as not set, as in an env file that
// lists the variable with no value.
func secret(lookup func(string) (string, bool), env, fileEnv string) (value, source string, err error) {
	v, _ := lookup(env)
	path, _ := lookup(fileEnv)
	v, path = strings.TrimSpace(v), strings.TrimSpace(path)
	switch {
	case v != "" && path != "":
		return "", "", fmt.Errorf("%s and %s are both set; set only one", env, fileEnv)
	case v != "":
		return v, env, nil
	case path != "":
		s, err := connectors.ReadSecretFile(path)
		if err != nil {
			return "", "", fmt.Errorf("%s: %w", fileEnv, err)
		}
		return s, fileEnv + " (" + path + ")", nil
	}
	return "", "", nil
}

// Codec is a converter.PayloadCodec. The zero value is not usable; New
// makes one.
type Codec struct {
	aeads   map[string]cipher.AEAD
	ids     []string // in configured order; ids[0] is the current key
	encrypt bool
}

var _ converter.PayloadCodec = (*Codec)(nil)

// New returns a codec that decrypts with any of keys and, when encrypt is
// set, encrypts with keys[0]. Without keys it passes plaintext through and
// refuses encrypted payloads with an error naming the variable to set.
func New(keys []Key, encrypt bool) (*Codec, error) {
	if encrypt && len(keys) == 0 {
		return nil, fmt.Errorf("payload encryption needs a key: set %s (or %s) to id:base64key, e.g. k1:$(openssl rand -base64 32)", KeysEnv, KeysFileEnv)
	}
	c := &Codec{aeads: map[string]cipher.AEAD{}, encrypt: encrypt}
	for _, k := range keys {
		if len(k.Secret) != KeySize {
			return nil, fmt.Errorf("codec key %q: %d bytes; AES-256 needs exactly %d", k.ID, len(k.Secret), KeySize)
		}
		if _, dup := c.aeads[k.ID]; dup {
			return nil, fmt.Errorf("codec key id %q is given twice", k.ID)
		}
		block, err := aes.NewCipher(k.Secret)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		c.aeads[k.ID] = aead
		c.ids = append(c.ids, k.ID)
	}
	return c, nil
}

// Encrypts reports whether Encode encrypts.
func (c *Codec) Encrypts() bool { return c.encrypt }

// KeyIDs are the configured key ids, the current one first.
func (c *Codec) KeyIDs() []string { return slices.Clone(c.ids) }

// additionalData binds a ciphertext to the key id in its metadata, so that
// a payload relabelled with another id fails to open rather than being
// tried under the wrong key.
func additionalData(id string) []byte { return []byte("optout-sync payload codec v1\x00" + id) }

// Encode encrypts each payload (its data and metadata, as one protobuf)
// with the current key, or returns them unchanged when encryption is off.
func (c *Codec) Encode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	if !c.encrypt {
		return payloads, nil
	}
	id := c.ids[0]
	aead := c.aeads[id]
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		plain, err := proto.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("codec: encoding a payload: %w", err)
		}
		nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
		if _, err := rand.Read(nonce); err != nil {
			return nil, fmt.Errorf("codec: nonce: %w", err)
		}
		out[i] = &commonpb.Payload{
			Metadata: map[string][]byte{
				converter.MetadataEncoding: []byte(MetadataEncoding),
				MetadataKeyID:              []byte(id),
			},
			Data: aead.Seal(nonce, nonce, plain, additionalData(id)),
		}
	}
	return out, nil
}

// Decode decrypts each encrypted payload with the key its metadata names;
// a payload that is not encrypted is returned as it is.
func (c *Codec) Decode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		if string(p.GetMetadata()[converter.MetadataEncoding]) != MetadataEncoding {
			out[i] = p
			continue
		}
		id := string(p.GetMetadata()[MetadataKeyID])
		aead, ok := c.aeads[id]
		if !ok {
			return nil, c.unknownKey(id)
		}
		data := p.GetData()
		if len(data) < aead.NonceSize()+aead.Overhead() {
			return nil, fmt.Errorf("codec: payload encrypted with key %q is truncated", id)
		}
		plain, err := aead.Open(nil, data[:aead.NonceSize()], data[aead.NonceSize():], additionalData(id))
		if err != nil {
			return nil, fmt.Errorf("codec: payload encrypted with key %q does not authenticate: it was altered, or %q is not the key it was encrypted with", id, id)
		}
		var orig commonpb.Payload
		if err := proto.Unmarshal(plain, &orig); err != nil {
			return nil, fmt.Errorf("codec: payload encrypted with key %q: %w", id, err)
		}
		out[i] = &orig
	}
	return out, nil
}

func (c *Codec) unknownKey(id string) error {
	shown := "(not a valid key id)"
	if keyIDPattern.MatchString(id) {
		shown = strconv.Quote(id)
	}
	if len(c.ids) == 0 {
		return fmt.Errorf("codec: payload is encrypted with key %s, and no codec key is configured: set %s (or %s)", shown, KeysEnv, KeysFileEnv)
	}
	return fmt.Errorf("codec: payload is encrypted with key %s, which is not among the configured keys (%s): add it to %s", shown, strings.Join(c.ids, ", "), KeysEnv)
}

// DataConverter is Temporal's default data converter with c applied to
// every payload.
func DataConverter(c *Codec) converter.DataConverter {
	return converter.NewCodecDataConverter(converter.GetDefaultDataConverter(), c)
}

// FromEnv is the codec of a client that encrypts when a key is set and
// writes plaintext otherwise (the starter: it follows whatever keys the
// operator gives it, and its errors say which variable to set).
func FromEnv(lookup func(string) (string, bool)) (*Codec, error) {
	keys, err := LoadKeys(lookup)
	if err != nil {
		return nil, err
	}
	return New(keys, len(keys) > 0)
}
