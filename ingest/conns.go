package ingest

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// connLimiter tracks the open connections of a [Server] and bounds them (when max > 0) without ever refusing
// a connection outright: past the bound it closes the connection that has waited longest without a whole
// request in a handler (a keep-alive connection gone idle, a new one that has sent nothing, or one still
// trickling its headers or body). A connection whose request has been read whole is never closed until its
// answer is written, so thousands of idle or slow clients can neither crowd out a real webhook nor exhaust
// the process's file descriptors, and the bodies held in memory stay within max × the body bound.
type connLimiter struct {
	max     int
	evicted atomic.Uint64

	mu sync.Mutex // mu guards the fields below and those of every trackedConn
	// open counts connections not yet closed and not evicted.
	open int
	// waiting holds the connections without a whole request in a handler, oldest first: an intrusive list,
	// so that a request moving its connection out and back in allocates nothing.
	waiting connList
	conns   map[net.Conn]*trackedConn
}

type trackedConn struct {
	c net.Conn
	// prev and next link the connection into waiting; inWaiting says it is there.
	prev, next *trackedConn
	inWaiting  bool
	// handlers counts requests of the connection read whole and in a handler (0 or 1 under HTTP/1.1).
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

func newConnLimiter(maxConns int) *connLimiter {
	l := &connLimiter{max: maxConns, conns: make(map[net.Conn]*trackedConn)}
	l.waiting.init()
	return l
}

// connState is the http.Server's ConnState hook.
func (l *connLimiter) connState(c net.Conn, state http.ConnState) {
	if state == http.StateActive {
		return // wrap takes the connection out of waiting once its request is read whole
	}
	var victims []net.Conn
	l.mu.Lock()
	switch state {
	case http.StateNew:
		tc := l.conns[c]
		if tc == nil { // connContext normally made it already
			tc = &trackedConn{c: c}
			l.conns[c] = tc
		}
		l.open++
		l.waiting.pushBack(tc)
		for l.max > 0 && l.open > l.max && l.waiting.n > 0 {
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

// connKey is the context key of a request's *trackedConn.
type connKey struct{}

// connContext is the http.Server's ConnContext hook: it puts the connection's record in the context of
// its requests, where wrap finds it. It runs before the StateNew hook.
func (l *connLimiter) connContext(ctx context.Context, c net.Conn) context.Context {
	l.mu.Lock()
	tc := l.conns[c]
	if tc == nil {
		tc = &trackedConn{c: c}
		l.conns[c] = tc
	}
	l.mu.Unlock()
	return context.WithValue(ctx, connKey{}, tc)
}

// wrap marks the request's connection busy, so that it is not evicted, from the moment its body has been
// read whole (at once for a request without a body) until h returns.
func (l *connLimiter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tc, _ := r.Context().Value(connKey{}).(*trackedConn)
		if tc == nil {
			h.ServeHTTP(w, r)
			return
		}
		var busy bool
		markBusy := func() {
			if busy {
				return
			}
			busy = true
			l.mu.Lock()
			tc.handlers++
			l.waiting.remove(tc)
			l.mu.Unlock()
		}
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			markBusy()
		} else {
			r.Body = &busyAtEOF{ReadCloser: r.Body, atEOF: markBusy}
		}
		defer func() {
			if busy {
				l.mu.Lock()
				tc.handlers--
				l.mu.Unlock()
			}
		}()
		h.ServeHTTP(w, r)
	})
}

// busyAtEOF calls atEOF when the body has been read to its end.
type busyAtEOF struct {
	io.ReadCloser
	atEOF func()
}

func (b *busyAtEOF) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.atEOF()
	}
	return n, err
}
