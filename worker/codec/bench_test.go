package codec_test

import (
	"fmt"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"

	"github.com/optoutsync/optoutsync/worker/codec"
)

// BenchmarkCodec measures a payload's encryption and decryption, at the
// sizes of a run's input (1 KiB), a page of results (64 KiB) and
// Temporal's payload limit (2 MiB).
func BenchmarkCodec(b *testing.B) {
	c, err := codec.New([]codec.Key{{ID: "k1", Secret: make([]byte, codec.KeySize)}}, true)
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1 << 10, 64 << 10, 2 << 20} {
		p := &commonpb.Payload{Metadata: map[string][]byte{converter.MetadataEncoding: []byte("json/plain")}, Data: make([]byte, size)}
		b.Run(fmt.Sprintf("encode/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := c.Encode([]*commonpb.Payload{p}); err != nil {
					b.Fatal(err)
				}
			}
		})
		enc, err := c.Encode([]*commonpb.Payload{p})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("decode/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := c.Decode(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
