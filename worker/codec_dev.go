//go:build !nodev

package main

import (
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"

	"github.com/optoutsync/optoutsync/worker/codec"
)

// devCodecSetup serves the codec, when there is a key, for the embedded
// Web UI: on 127.0.0.1:-codec-port unless codec.listen is set, with the
// UI's origins allowed.
func devCodecSetup(s CodecSetup, f Flags) CodecSetup {
	if len(s.Codec.KeyIDs()) == 0 {
		return s
	}
	if s.Listen == "" {
		s.Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(f.CodecPort))
	}
	if f.UIPort != -1 {
		for _, host := range []string{"127.0.0.1", "localhost"} {
			if o := "http://" + net.JoinHostPort(host, strconv.Itoa(f.UIPort)); !slices.Contains(s.Origins, o) {
				s.Origins = append(s.Origins, o)
			}
		}
	}
	return s
}

// printCodecBanner says, in the dev mode's banner, whether payloads are
// encrypted and where the codec server is.
func printCodecBanner(w io.Writer, s CodecSetup, cs *CodecServer) {
	if !s.Codec.Encrypts() {
		fmt.Fprintf(w, "Payload encryption is off (set %s to turn it on; see the README's Operations section).\n\n", codec.KeysEnv)
		return
	}
	fmt.Fprintf(w, "Payloads are encrypted (key %s); the Web UI decodes them through the codec server %s:\n", s.Codec.KeyIDs()[0], cs.URL())
	fmt.Fprintf(w, "  temporal workflow show --workflow-id <id> --codec-endpoint %s\n\n", cs.URL())
}
