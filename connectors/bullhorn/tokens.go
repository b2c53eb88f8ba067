package bullhorn

import (
	"context"
	"sync"
)

// TokenStore keeps OAuth refresh tokens durably. Bullhorn's refresh tokens
// may be single-use: each refresh answers a new one and the one used stops
// working, so the new one must be kept where a restarted worker, or a
// second worker, finds it. The worker backs it with the consent ledger
// (encrypted); MemoryTokenStore is for one process.
type TokenStore interface {
	// RefreshToken returns the refresh token kept under key, or "" when
	// there is none.
	RefreshToken(ctx context.Context, key string) (string, error)
	// SaveRefreshToken keeps token under key, replacing the one before.
	SaveRefreshToken(ctx context.Context, key, token string) error
}

// TokenStoreProvider is what a connectors.Secrets given to Config.Open may
// also be, to hand the connector a durable TokenStore and the name of the
// integration it opens (which names its refresh tokens and its errors).
type TokenStoreProvider interface {
	TokenStore() TokenStore
	Integration() string
}

// MemoryTokenStore keeps refresh tokens in memory: they are lost with the
// process, after which the client logs in with the password again.
type MemoryTokenStore struct {
	mu sync.Mutex
	m  map[string]string
}

// NewMemoryTokenStore returns an empty store.
func NewMemoryTokenStore() *MemoryTokenStore { return &MemoryTokenStore{m: map[string]string{}} }

// RefreshToken implements TokenStore.
func (s *MemoryTokenStore) RefreshToken(_ context.Context, key string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[key], nil
}

// SaveRefreshToken implements TokenStore.
func (s *MemoryTokenStore) SaveRefreshToken(_ context.Context, key, token string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = token
	return nil
}
