package mailchimptest

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAppendJSONEncodesAsEncodingJSON: the emulator's own encoder writes
// the same bytes as encoding/json without HTML escaping, for the values
// the handlers build (members among them) and for strings that need
// escaping.
func TestAppendJSONEncodesAsEncodingJSON(t *testing.T) {
	std := func(v any) []byte {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		require.NoError(t, enc.Encode(v))
		return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	}
	s := NewServer(Options{})
	defer s.Close()
	s.AddList("l1", "List", "FNAME")
	require.NoError(t, s.Generate("l1", 3, func(i int) MemberSeed {
		return MemberSeed{Email: []string{"a@example.com", "zoë+tag&x@example.com", "o'brien@example.com"}[i],
			Status: []string{"subscribed", "unsubscribed", "cleaned"}[i], MergeFields: map[string]string{"FNAME": "Ann \\ \u2028 \x01 \xff"}}
	}))
	l := s.lists["l1"]
	r := httptest.NewRequest("GET", "http://mc.test/3.0/lists/l1/members", nil)
	var members []any
	for i := range l.members {
		members = append(members, l.memberJSON(int32(i), r, nil))
	}
	values := []any{
		nil, "", "plain", "quote\" back\\slash", "ctl \n\r\t\b\f \x00 \x1f", "<html>&amp;", "ünï \u2028\u2029", "bad \xff utf8",
		true, false, 0, -7, int64(1) << 40, int32(-3), 0.5, 1e21, 3.0,
		map[string]any{}, map[string]any(nil), map[string]any{"b": 1, "a": []any{"x", nil, map[string]any{"z": true, "y": 2.25}}},
		map[string]string{"k": "v", "a": "<"}, map[string]string(nil), []any{}, []any(nil), []map[string]any{{"a": 1}}, []map[string]any(nil),
		[]string{"s"}, struct {
			A string `json:"a"`
		}{"<x>"},
		map[string]any{"members": members, "total_items": len(members)},
	}
	for _, v := range values {
		require.Equal(t, string(std(v)), string(appendJSON(nil, v)), "%#v", v)
	}
}
