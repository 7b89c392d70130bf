package ingest

import (
	"container/list"
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

	mu sync.Mutex // mu guards the fields below
	// open counts connections not yet closed and not evicted.
	open int
	// waiting holds the *trackedConn without a request in a handler, oldest first.
	waiting list.List
	conns   map[net.Conn]*trackedConn
}

type trackedConn struct {
	c net.Conn
	// elem is the connection's place in waiting; nil while a handler serves it.
	elem *list.Element
	// handlers counts requests of the connection in a handler (more than one only with HTTP/2).
	handlers int
	evicted  bool
}

// connKey is the context key of the request's net.Conn.
type connKey struct{}

func newConnLimiter(maxConns int) *connLimiter {
	return &connLimiter{max: maxConns, conns: make(map[net.Conn]*trackedConn)}
}

// connContext is the http.Server's ConnContext: it lets a handler find its connection.
func (l *connLimiter) connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// connState is the http.Server's ConnState hook.
func (l *connLimiter) connState(c net.Conn, state http.ConnState) {
	var victims []net.Conn
	l.mu.Lock()
	switch state {
	case http.StateNew:
		tc := &trackedConn{c: c}
		l.conns[c] = tc
		l.open++
		tc.elem = l.waiting.PushBack(tc)
		for l.open > l.max && l.waiting.Len() > 0 {
			v := l.waiting.Remove(l.waiting.Front()).(*trackedConn)
			v.elem, v.evicted = nil, true
			l.open--
			victims = append(victims, v.c)
		}
	case http.StateIdle:
		if tc := l.conns[c]; tc != nil && !tc.evicted && tc.handlers == 0 {
			if tc.elem != nil {
				l.waiting.Remove(tc.elem)
			}
			tc.elem = l.waiting.PushBack(tc)
		}
	case http.StateClosed, http.StateHijacked:
		if tc := l.conns[c]; tc != nil {
			if tc.elem != nil {
				l.waiting.Remove(tc.elem)
			}
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
		c, _ := r.Context().Value(connKey{}).(net.Conn)
		l.mu.Lock()
		tc := l.conns[c]
		if tc != nil {
			tc.handlers++
			if tc.elem != nil {
				l.waiting.Remove(tc.elem)
				tc.elem = nil
			}
		}
		l.mu.Unlock()
		defer func() {
			if tc == nil {
				return
			}
			l.mu.Lock()
			tc.handlers--
			l.mu.Unlock()
		}()
		h.ServeHTTP(w, r)
	})
}
