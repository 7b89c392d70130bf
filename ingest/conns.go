package ingest

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// connLimiter bounds the open connections of a [Server] without ever refusing a connection outright: past
// the bound it closes the connection that has waited longest without a request in a handler (a keep-alive
// connection gone idle, a new one that has sent nothing, or one still trickling its headers). Connections
// whose request is in the handler are never closed, so thousands of idle or slow clients cannot crowd out a
// real webhook, nor exhaust the process's file descriptors.
type connLimiter struct {
	max     int
	evicted atomic.Uint64

	mu sync.Mutex // mu guards the fields below and those of every trackedConn
	// open counts connections not yet closed and not evicted.
	open int
	// waiting holds the connections without a request in a handler, oldest first: an intrusive list, so
	// that a request moving its connection out and back in allocates nothing.
	waiting connList
	conns   map[net.Conn]*trackedConn
}

type trackedConn struct {
	c net.Conn
	// prev and next link the connection into waiting; inWaiting says it is there.
	prev, next *trackedConn
	inWaiting  bool
	// handlers counts requests of the connection in a handler (more than one only with HTTP/2).
	handlers int
	evicted  bool
}

// connList is a doubly linked list of *trackedConn with a sentinel root.
type connList struct {
	root trackedConn
	n    int
}

func (l *connList) init() { l.root.prev, l.root.next = &l.root, &l.root }

func (l *connList) pushBack(tc *trackedConn) {
	tc.prev, tc.next = l.root.prev, &l.root
	tc.prev.next, l.root.prev = tc, tc
	tc.inWaiting = true
	l.n++
}

func (l *connList) remove(tc *trackedConn) {
	if !tc.inWaiting {
		return
	}
	tc.prev.next, tc.next.prev = tc.next, tc.prev
	tc.prev, tc.next, tc.inWaiting = nil, nil, false
	l.n--
}

// front is the oldest waiting connection; nil when none.
func (l *connList) front() *trackedConn {
	if l.n == 0 {
		return nil
	}
	return l.root.next
}

// connKey is the context key of the request's *trackedConn.
type connKey struct{}

func newConnLimiter(maxConns int) *connLimiter {
	l := &connLimiter{max: maxConns, conns: make(map[net.Conn]*trackedConn)}
	l.waiting.init()
	return l
}

// connContext is the http.Server's ConnContext, called before StateNew: it tracks the connection and lets
// a handler find it without a look-up.
func (l *connLimiter) connContext(ctx context.Context, c net.Conn) context.Context {
	tc := &trackedConn{c: c}
	l.mu.Lock()
	l.conns[c] = tc
	l.mu.Unlock()
	return context.WithValue(ctx, connKey{}, tc)
}

// connState is the http.Server's ConnState hook.
func (l *connLimiter) connState(c net.Conn, state http.ConnState) {
	if state == http.StateActive {
		return // wrap takes the connection out of waiting when its request reaches the handler
	}
	var victims []net.Conn
	l.mu.Lock()
	switch state {
	case http.StateNew:
		tc := l.conns[c]
		if tc == nil { // not seen by connContext: track it now
			tc = &trackedConn{c: c}
			l.conns[c] = tc
		}
		l.open++
		l.waiting.pushBack(tc)
		for l.open > l.max && l.waiting.n > 0 {
			v := l.waiting.front()
			l.waiting.remove(v)
			v.evicted = true
			l.open--
			victims = append(victims, v.c)
		}
	case http.StateIdle:
		if tc := l.conns[c]; tc != nil && !tc.evicted && tc.handlers == 0 {
			l.waiting.remove(tc)
			l.waiting.pushBack(tc)
		}
	case http.StateClosed, http.StateHijacked:
		if tc := l.conns[c]; tc != nil {
			l.waiting.remove(tc)
			if !tc.evicted {
				l.open--
			}
			delete(l.conns, c)
		}
	}
	l.mu.Unlock()
	for _, v := range victims {
		l.evicted.Add(1)
		_ = v.Close()
	}
}

// wrap marks the request's connection busy while h serves it, so it is not evicted.
func (l *connLimiter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tc, _ := r.Context().Value(connKey{}).(*trackedConn)
		if tc != nil {
			l.mu.Lock()
			tc.handlers++
			l.waiting.remove(tc)
			l.mu.Unlock()
			defer func() {
				l.mu.Lock()
				tc.handlers--
				l.mu.Unlock()
			}()
		}
		h.ServeHTTP(w, r)
	})
}
