package ingest

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// connLimiter tracks the open connections of a [Server] and bounds them (when max > 0) without ever refusing
// a connection outright: past the bound it closes the connection that has waited longest without a request
// in a handler (a keep-alive connection gone idle, a new one that has sent nothing, or one still trickling
// its request). Connections whose request is in the handler are never closed, so thousands of idle or slow
// clients cannot crowd out a real webhook, nor exhaust the process's file descriptors.
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
	// handlers counts requests of the connection in a handler (0 or 1 under HTTP/1.1).
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

// connState is the fasthttp.Server's ConnState hook.
func (l *connLimiter) connState(c net.Conn, state fasthttp.ConnState) {
	if state == fasthttp.StateActive {
		return // wrap takes the connection out of waiting when its request reaches the handler
	}
	var victims []net.Conn
	l.mu.Lock()
	switch state {
	case fasthttp.StateNew:
		tc := &trackedConn{c: c}
		l.conns[c] = tc
		l.open++
		l.waiting.pushBack(tc)
		for l.max > 0 && l.open > l.max && l.waiting.n > 0 {
			v := l.waiting.front()
			l.waiting.remove(v)
			v.evicted = true
			l.open--
			victims = append(victims, v.c)
		}
	case fasthttp.StateIdle:
		if tc := l.conns[c]; tc != nil && !tc.evicted && tc.handlers == 0 {
			l.waiting.remove(tc)
			l.waiting.pushBack(tc)
		}
	case fasthttp.StateClosed, fasthttp.StateHijacked:
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
func (l *connLimiter) wrap(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		l.mu.Lock()
		tc := l.conns[ctx.Conn()]
		if tc != nil {
			tc.handlers++
			l.waiting.remove(tc)
		}
		l.mu.Unlock()
		if tc != nil {
			defer func() {
				l.mu.Lock()
				tc.handlers--
				l.mu.Unlock()
			}()
		}
		h(ctx)
	}
}

// closeAll closes every open connection, cutting off the requests in flight.
func (l *connLimiter) closeAll() {
	l.mu.Lock()
	all := make([]net.Conn, 0, len(l.conns))
	for c := range l.conns {
		all = append(all, c)
	}
	l.mu.Unlock()
	for _, c := range all {
		_ = c.Close()
	}
}
