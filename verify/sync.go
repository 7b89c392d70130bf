package verify

import (
	"context"
	"sync"
	"time"
)

// keyedMutex serialises work per key. The zero value is ready to use.
type keyedMutex struct {
	// mu guards locks.
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	ch   chan struct{} // holds one token while the key is locked
	refs int
}

// Lock locks key, waiting while another holder has it or until ctx is done. The returned func unlocks.
func (k *keyedMutex) Lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = make(map[string]*keyLock)
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()

	release := func() {
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// recentSet remembers keys for a while, up to a size; the oldest are forgotten first. It is safe for
// concurrent use.
type recentSet struct {
	ttl time.Duration
	max int
	// mu guards at and order.
	mu    sync.Mutex
	at    map[string]time.Time
	order []string
}

func newRecentSet(size int, ttl time.Duration) *recentSet {
	return &recentSet{ttl: ttl, max: size, at: make(map[string]time.Time, size)}
}

// Add remembers key from now on.
func (s *recentSet) Add(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.at[key]; !ok {
		s.order = append(s.order, key)
	}
	s.at[key] = time.Now()
	for len(s.order) > s.max {
		delete(s.at, s.order[0])
		s.order = s.order[1:]
	}
}

// Has reports whether key was added within the ttl.
func (s *recentSet) Has(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.at[key]
	return ok && time.Since(t) < s.ttl
}
