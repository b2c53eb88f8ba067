package dynamicstest

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCompareFoldIsCompareOfLowerCased: the emulator's ordering of text
// is strings.Compare of the lower-cased strings, ASCII or not.
func TestCompareFoldIsCompareOfLowerCased(t *testing.T) {
	words := []string{"", "a", "A", "ab", "aB", "Ab", "abc", "b", "B", "Z", "z", "[", "_", "`", "@", "p10@example.com",
		"P9@Example.com", "zoë", "ZOË", "zoe", "Zoé", "İstanbul", "istanbul", "ß", "SS", "ǅ", "ǆ", "\xff", "a\xffb"}
	for _, x := range words {
		for _, y := range words {
			require.Equal(t, strings.Compare(strings.ToLower(x), strings.ToLower(y)), compareFold(x, y), "%q %q", x, y)
		}
	}
}
