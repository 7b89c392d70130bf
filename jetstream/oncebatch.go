package jetstream

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Limits of one group of [OncePublisher]: nats-server allows 1000 messages in an atomic batch and 50
// batches in flight per stream.
const (
	onceGroupMax      = 64      // fenced messages (128 stored messages) per atomic batch
	onceGroupMaxBytes = 4 << 20 // payload bytes per atomic batch
	onceGroupTimeout  = 10 * time.Second
)

// OncePublisher is [PublishOnce] with group commit: publishes that arrive while a batch is in flight are
// sent together, as the next single atomic batch of [fence, msg] pairs. Each pair keeps PublishOnce's
// guarantee, since a batch is stored whole or not at all: a message is stored only with its fence, and
// only if its fence subject was empty. When a group is refused (one of its fences or message ids is
// there already) or its outcome is unknown, each of its pairs is published again on its own, so a
// caller gets exactly what PublishOnce would have answered.
//
// Why: on a single node with file storage, nats-server stages every atomic batch in a file store of its
// own (created, synced and removed per batch, one batch at a time per stream), so the batch, not the
// message, is the cost; grouping spreads it over every result in flight. An idle publisher sends a
// lone publish at once: grouping never waits for company. Safe for concurrent use.
type OncePublisher struct {
	nc *nats.Conn

	mu      sync.Mutex // mu guards queue and running
	queue   []*onceItem
	running bool // a goroutine is sending the queue
}

type onceItem struct {
	fence   string
	headers nats.Header
	msg     *nats.Msg
	done    chan struct{}
	seq     uint64
	err     error
}

// NewOncePublisher returns a publisher on nc.
func NewOncePublisher(nc *nats.Conn) *OncePublisher { return &OncePublisher{nc: nc} }

// Publish is [PublishOnce] through the publisher's groups: it returns msg's stream sequence, or
// [ErrAlreadyPublished]. When ctx ends first it returns ctx's error, and the publish may still be
// stored afterwards (as with a lost acknowledgement): a retry then gets ErrAlreadyPublished.
func (p *OncePublisher) Publish(ctx context.Context, fenceSubject string, fenceHeaders nats.Header, msg *nats.Msg) (uint64, error) {
	it := &onceItem{fence: fenceSubject, headers: fenceHeaders, msg: msg, done: make(chan struct{})}
	p.mu.Lock()
	p.queue = append(p.queue, it)
	start := !p.running
	p.running = true
	p.mu.Unlock()
	if start {
		go p.run()
	}
	select {
	case <-it.done:
		return it.seq, it.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run sends the queue, one group at a time, until it is empty.
func (p *OncePublisher) run() {
	for {
		p.mu.Lock()
		n, size := 0, 0
		for n < len(p.queue) && n < onceGroupMax {
			size += len(p.queue[n].msg.Data)
			if n > 0 && size > onceGroupMaxBytes {
				break
			}
			n++
		}
		if n == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		group := p.queue[:n:n]
		p.queue = p.queue[n:]
		p.mu.Unlock()
		p.send(group)
	}
}

// send publishes a group as one atomic batch, or its pairs one by one when that is refused or fails.
func (p *OncePublisher) send(group []*onceItem) {
	ctx, cancel := context.WithTimeout(context.Background(), onceGroupTimeout)
	defer cancel()
	if len(group) > 1 {
		if last, _, err := publishGroup(ctx, p.nc, group); err == nil {
			first := last - uint64(2*len(group)) + 1 // fence1, msg1, fence2, ... msgN=last
			for i, it := range group {
				it.seq = first + uint64(2*i) + 1
				close(it.done)
			}
			return
		}
	}
	// A few at a time: the server allows 50 atomic batches in flight per stream.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, it := range group {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			it.seq, it.err = PublishOnce(ctx, p.nc, it.fence, it.headers, it.msg)
			close(it.done)
		})
	}
	wg.Wait()
}

// publishGroup sends [fence1, msg1, ..., fenceN, msgN] as one atomic batch, each fence only if its
// subject holds no message yet, and reads the commit's acknowledgement: the sequence of msgN, or the
// server's error code and the error.
func publishGroup(ctx context.Context, nc *nats.Conn, group []*onceItem) (uint64, int, error) {
	id := nuid.Next()
	n := 0
	next := func(m *nats.Msg) *nats.Msg {
		n++
		out := nats.NewMsg(m.Subject)
		out.Data = m.Data
		for k, v := range m.Header {
			out.Header[k] = v
		}
		out.Header.Set("Nats-Batch-Id", id)
		out.Header.Set("Nats-Batch-Sequence", strconv.Itoa(n))
		return out
	}
	var commit *nats.Msg
	for i, it := range group {
		fence := next(&nats.Msg{Subject: it.fence, Header: it.headers})
		fence.Header.Set(headerExpectedLastSubjSeq, "0")
		if err := nc.PublishMsg(fence); err != nil {
			return 0, 0, fmt.Errorf("publish fence %s: %w", it.fence, err)
		}
		m := next(it.msg)
		if i == len(group)-1 {
			m.Header.Set("Nats-Batch-Commit", "1")
			commit = m
			break
		}
		if err := nc.PublishMsg(m); err != nil {
			return 0, 0, fmt.Errorf("publish %s: %w", it.msg.Subject, err)
		}
	}
	what := commit.Subject
	if len(group) > 1 {
		what = fmt.Sprintf("batch of %d", len(group))
	}
	resp, err := nc.RequestMsgWithContext(ctx, commit)
	if err != nil {
		return 0, 0, fmt.Errorf("publish %s: %w", what, err)
	}
	var ack struct {
		Seq   uint64 `json:"seq"`
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, 0, fmt.Errorf("publish %s: acknowledgement %q: %w", what, resp.Data, err)
	}
	if ack.Error != nil {
		if ack.Error.ErrCode == errCodeAtomicPublishOff {
			return 0, ack.Error.ErrCode, fmt.Errorf("publish %s: %s (the stream must allow atomic publish: run the bridge once to provision it, nats-server 2.12 or later)",
				what, ack.Error.Description)
		}
		return 0, ack.Error.ErrCode, fmt.Errorf("publish %s: %s (%d)", what, ack.Error.Description, ack.Error.ErrCode)
	}
	return ack.Seq, 0, nil
}
