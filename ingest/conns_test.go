package ingest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestConnLimiterEvictsLongestWaiting drives the limiter's hooks as net/http calls them: a connection that
// served a request goes to the back of the waiting list, so the one that waited longest is evicted, and a
// connection whose request is read whole and in the handler is never evicted, while one still sending its
// body may be.
func TestConnLimiterEvictsLongestWaiting(t *testing.T) {
	l := newConnLimiter(2)
	type conn struct{ c net.Conn }
	open := func() conn {
		c, peer := net.Pipe()
		t.Cleanup(func() { c.Close(); peer.Close() })
		l.connContext(context.Background(), c)
		l.connState(c, http.StateNew)
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
	serve := func(c conn, body string, during func()) {
		l.connState(c.c, http.StateActive)
		h := l.wrap(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			if during != nil {
				during()
			}
			_, _ = io.ReadAll(r.Body)
		}))
		r := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(body))
		if body == "" {
			r = httptest.NewRequest(http.MethodGet, "/healthz", nil)
		}
		h.ServeHTTP(httptest.NewRecorder(), r.WithContext(l.connContext(context.Background(), c.c)))
		l.connState(c.c, http.StateIdle)
	}

	c1, c2 := open(), open()
	serve(c1, "", nil) // waiting: c2, c1
	c3 := open()       // over the bound: c2 waited longest
	if !closed(c2) || closed(c1) || l.evicted.Load() != 1 {
		t.Fatalf("after c3: c1 closed %v, c2 closed %v, evicted %d; want only c2 evicted", closed(c1), closed(c2), l.evicted.Load())
	}
	// c1 in the handler, its body not yet read, while c4 arrives: c1 waited longest, so it goes.
	serve(c1, "{}", func() {
		open()
		if !closed(c1) || closed(c3) {
			t.Errorf("c4 during c1's unread body: c1 closed %v, c3 closed %v; want c1 evicted, c3 kept", closed(c1), closed(c3))
		}
	})
	// c3 with a request read whole (no body) while c5 arrives: c4 (waiting) goes, c3 stays.
	c4 := l.waiting.root.prev // the newest waiting connection
	serve(c3, "", func() {
		open()
		if !closed(conn{c4.c}) || closed(c3) {
			t.Errorf("c5 during c3's request: c3 closed %v, c4 closed %v; want c4 evicted, c3 kept", closed(c3), closed(conn{c4.c}))
		}
	})
	l.connState(c3.c, http.StateClosed)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open != 1 || l.waiting.n != 1 || len(l.conns) != 4 {
		t.Errorf("open %d, waiting %d, tracked %d; want 1, 1, 4 (c5 open; c1, c2, c4 evicted and not yet closed by net/http)",
			l.open, l.waiting.n, len(l.conns))
	}
}
