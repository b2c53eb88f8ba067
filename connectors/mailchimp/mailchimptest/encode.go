package mailchimptest

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
)

// appendJSON appends v as encoding/json encodes it without HTML escaping
// (map keys sorted), for the values the handlers build: maps, slices,
// strings, booleans and integers; anything else goes to encoding/json.
// The emulator's answers are made of these, a batch answer of 500 members
// among them, and encoding/json's reflection over maps was most of the
// emulator's CPU: in the benchmark it shares the machine with the code
// under test, which a real Mailchimp does not.
func appendJSON(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case string:
		return appendString(b, v)
	case bool:
		return strconv.AppendBool(b, v)
	case int:
		return strconv.AppendInt(b, int64(v), 10)
	case int64:
		return strconv.AppendInt(b, v, 10)
	case int32:
		return strconv.AppendInt(b, int64(v), 10)
	case map[string]any:
		if v == nil {
			return append(b, "null"...)
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendJSON(b, v[k])
		}
		return append(b, '}')
	case map[string]string:
		if v == nil {
			return append(b, "null"...)
		}
		m := make(map[string]any, len(v))
		for k, s := range v {
			m[k] = s
		}
		return appendJSON(b, m)
	case []any:
		return appendArray(b, v)
	case []map[string]any:
		return appendArray(b, v)
	}
	return appendStd(b, v)
}

func appendArray[T any](b []byte, v []T) []byte {
	if v == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, e := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSON(b, e)
	}
	return append(b, ']')
}

// appendString writes s directly when encoding/json would not escape any
// of its bytes, and leaves every other string to encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return appendStd(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendStd(b []byte, v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// The handlers build only encodable values.
		panic("mailchimptest: encoding an answer: " + err.Error())
	}
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}
