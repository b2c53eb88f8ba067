package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/fx"

	"github.com/optoutsync/optoutsync/worker/codec"
)

// CodecSettings is the "codec:" block: payload encryption, and the codec
// server the Web UI and the temporal CLI decode histories through. The
// keys and the token are never in the file: they are read from
// $OPTOUT_CODEC_KEYS and $OPTOUT_CODEC_TOKEN (or their _FILE variants),
// the same variables the starter reads.
type CodecSettings struct {
	// Encryption is "on" (the default: the worker refuses to start without
	// a key) or "off" (payloads are written in clear; configured keys
	// still decrypt what was written while it was on).
	Encryption string `yaml:"encryption"`
	// Listen is the codec server's address, e.g. "127.0.0.1:8234"; "" runs none.
	Listen string `yaml:"listen"`
	// CORSOrigins are the Web UI origins allowed to call the codec server
	// from a browser, e.g. "https://temporal.example.com".
	CORSOrigins []string `yaml:"corsOrigins"`

	// keysOptional turns encryption on only when a key is given: the
	// built-in demo's rule, which no configuration file can ask for.
	keysOptional bool
}

const (
	encryptionOn  = "on"
	encryptionOff = "off"
)

// validate checks the block, naming the field of each problem.
func (s CodecSettings) validate() []string {
	var p []string
	switch s.Encryption {
	case "", encryptionOn, encryptionOff:
	default:
		p = append(p, fmt.Sprintf("codec.encryption: %q must be on or off", s.Encryption))
	}
	p = append(p, checkListen("codec.listen", s.Listen, "8234")...)
	if len(s.CORSOrigins) > 0 && s.Listen == "" {
		p = append(p, "codec.corsOrigins: given without codec.listen, which turns the codec server on")
	}
	for i, o := range s.CORSOrigins {
		key := fmt.Sprintf("codec.corsOrigins[%d]", i)
		u, err := url.Parse(o)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Scheme+"://"+u.Host != o:
			p = append(p, fmt.Sprintf("%s: %q is not an origin such as https://temporal.example.com (a scheme and a host, with no path)", key, o))
		case strings.ToLower(o) != o:
			p = append(p, fmt.Sprintf("%s: %q must be lower-case, as browsers send it", key, o))
		case slices.Index(s.CORSOrigins, o) < i:
			p = append(p, fmt.Sprintf("%s: %q is given twice", key, o))
		}
	}
	return p
}

// CodecSetup is the payload codec of every Temporal client of the process
// and its codec server's settings, resolved from the configuration and the
// environment.
type CodecSetup struct {
	Codec *codec.Codec
	// Listen, Origins and Token are the codec server's; Listen "" runs none.
	Listen  string
	Origins []string
	Token   string
}

// ResolveCodec reads the keys and the token the codec settings need from
// env. Its errors name the variable and never show its value.
func (s CodecSettings) ResolveCodec(env LookupEnv) (CodecSetup, error) {
	keys, err := codec.LoadKeys(env)
	if err != nil {
		return CodecSetup{}, configErr(strings.Split(err.Error(), "\n"))
	}
	token, err := codec.LoadToken(env)
	if err != nil {
		return CodecSetup{}, configErr([]string{err.Error()})
	}
	encrypt := s.Encryption != encryptionOff && (!s.keysOptional || len(keys) > 0)
	switch {
	case encrypt && len(keys) == 0:
		return CodecSetup{}, configErr([]string{fmt.Sprintf("codec.encryption: payloads are encrypted unless the configuration "+
			"turns it off, and no key is set: set %s (or %s) to id:base64key, e.g. k1:$(openssl rand -base64 32), "+
			"or write codec.encryption: off to store payloads in clear", codec.KeysEnv, codec.KeysFileEnv)})
	case s.Listen != "" && len(keys) == 0:
		return CodecSetup{}, configErr([]string{fmt.Sprintf("codec.listen: the codec server needs a key: set %s (or %s)",
			codec.KeysEnv, codec.KeysFileEnv)})
	}
	c, err := codec.New(keys, encrypt)
	if err != nil {
		return CodecSetup{}, configErr([]string{err.Error()})
	}
	return CodecSetup{Codec: c, Listen: s.Listen, Origins: slices.Clone(s.CORSOrigins), Token: token}, nil
}

// CodecModule is the payload codec every Temporal client of the worker
// uses (see provideClientOptions), and its codec server.
var CodecModule = fx.Module("codec",
	fx.Provide(
		provideCodecSetup,
		func(s CodecSetup) *codec.Codec { return s.Codec },
		provideCodecServer,
	),
	// The server exists (and listens at start) even when nothing else asks for it.
	fx.Invoke(func(*CodecServer) {}),
)

func provideCodecSetup(cfg *Config, env LookupEnv, log *slog.Logger) (CodecSetup, error) {
	s, err := cfg.Codec.ResolveCodec(env)
	if err != nil {
		return CodecSetup{}, err
	}
	switch ids := s.Codec.KeyIDs(); {
	case s.Codec.Encrypts():
		log.Info("payload encryption on", "key", ids[0], "keys", strings.Join(ids, ","))
	case cfg.Codec.keysOptional:
		log.Info("payload encryption off (the demo; set " + codec.KeysEnv + " to turn it on)")
	default:
		log.Warn("payload encryption off (codec.encryption: off): payloads are stored in clear", "decryptKeys", strings.Join(ids, ","))
	}
	return s, nil
}

// CodecServer serves the payload codec over HTTP when codec.listen is
// set; otherwise it does nothing and its URL is "".
type CodecServer struct {
	url string
}

// URL is the server's base URL once started (loopback when it listens on
// every interface), or "".
func (s *CodecServer) URL() string { return s.url }

// provideCodecServer listens at start (synchronously, so a taken port
// fails the start) and serves in a goroutine.
func provideCodecServer(lc fx.Lifecycle, s CodecSetup, log *slog.Logger) *CodecServer {
	cs := &CodecServer{}
	if s.Listen == "" {
		return cs
	}
	log = log.With("component", "codec-server")
	srv := &http.Server{
		Handler:           codec.Handler(s.Codec, codec.HandlerOptions{Origins: s.Origins, Token: s.Token, Logger: log}),
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
	}
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			ln, err := net.Listen("tcp", s.Listen)
			if err != nil {
				return fmt.Errorf("codec server: %w", err)
			}
			addr := ln.Addr().(*net.TCPAddr)
			host := addr.IP.String()
			if addr.IP.IsUnspecified() {
				host = "127.0.0.1"
			}
			cs.url = "http://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
			go func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					log.Error("codec server stopped", "error", err)
				}
			}()
			log.Info("codec server listening", "addr", addr.String(), "origins", strings.Join(s.Origins, ","), "token", s.Token != "")
			if s.Token == "" && !addr.IP.IsLoopback() {
				log.Warn("the codec server decrypts for anyone who reaches it: set " + codec.TokenEnv +
					", or keep it on a private network behind a proxy that authenticates")
			}
			return nil
		},
		OnStop: srv.Shutdown,
	})
	return cs
}
