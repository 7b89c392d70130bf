// Package serving tells when a part of the process has begun to serve: its subscriptions are known to the
// server, its consumers exist, its listener accepts. The application's readiness is that of all its parts.
package serving

import "sync"

// Signal is set once, when a part begins to serve. The zero value is unset and ready to use.
type Signal struct {
	mu  sync.Mutex
	ch  chan struct{}
	set bool
}

// Set marks the part as serving; later calls do nothing.
func (s *Signal) Set() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set {
		return
	}
	s.set = true
	if s.ch != nil {
		close(s.ch)
	}
}

// Done is closed once Set has been called.
func (s *Signal) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
		if s.set {
			close(s.ch)
		}
	}
	return s.ch
}

// All reports whether every channel is closed; a nil channel counts as closed.
func All(chans ...<-chan struct{}) bool {
	for _, c := range chans {
		if c == nil {
			continue
		}
		select {
		case <-c:
		default:
			return false
		}
	}
	return true
}
