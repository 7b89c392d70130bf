package ingest

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestConnLimiterEvictsLongestWaiting drives the limiter's hooks as fasthttp calls them: a connection that
// served a request goes to the back of the waiting list, so the one that waited longest is evicted, and a
// connection with a request in the handler is never evicted.
func TestConnLimiterEvictsLongestWaiting(t *testing.T) {
	l := newConnLimiter(2)
	type conn struct{ c net.Conn }
	open := func() conn {
		c, peer := net.Pipe()
		t.Cleanup(func() { c.Close(); peer.Close() })
		l.connState(c, fasthttp.StateNew)
		return conn{c}
	}
	// closed reports whether c was closed: a write past its deadline fails at once, with ErrClosedPipe
	// only when closed (nobody reads the peer, so the write never succeeds).
	closed := func(c conn) bool {
		_ = c.c.SetWriteDeadline(time.Unix(1, 0))
		_, err := c.c.Write([]byte{0})
		return errors.Is(err, io.ErrClosedPipe)
	}
	// serve runs one request of c through wrap; during calls inside the handler.
	serve := func(c conn, during func()) {
		l.connState(c.c, fasthttp.StateActive)
		h := l.wrap(func(*fasthttp.RequestCtx) {
			if during != nil {
				during()
			}
		})
		var ctx fasthttp.RequestCtx
		ctx.Init2(c.c, nil, false)
		h(&ctx)
		l.connState(c.c, fasthttp.StateIdle)
	}

	c1, c2 := open(), open()
	serve(c1, nil) // waiting: c2, c1
	c3 := open()   // over the bound: c2 waited longest
	if !closed(c2) || closed(c1) || l.evicted.Load() != 1 {
		t.Fatalf("after c3: c1 closed %v, c2 closed %v, evicted %d; want only c2 evicted", closed(c1), closed(c2), l.evicted.Load())
	}
	// c1 in the handler while c4 arrives: c3 (waiting) goes, c1 stays.
	serve(c1, func() {
		open()
		if !closed(c3) || closed(c1) {
			t.Errorf("c4 during c1's request: c1 closed %v, c3 closed %v; want c3 evicted, c1 kept", closed(c1), closed(c3))
		}
	})
	l.connState(c1.c, fasthttp.StateClosed)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open != 1 || l.waiting.n != 1 || len(l.conns) != 3 {
		t.Errorf("open %d, waiting %d, tracked %d; want 1, 1, 3 (c4 open; c2, c3 evicted and not yet closed by fasthttp)",
			l.open, l.waiting.n, len(l.conns))
	}
}
