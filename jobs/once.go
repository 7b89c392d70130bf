package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/retry"
	"github.com/evershield/bridge/natsx"
)

// ErrAlreadyPublished is matched (errors.Is) by the [*AlreadyPublishedError] that [OncePublisher.Publish]
// returns when the job's result was stored before, by another publish: nothing was stored this time.
var ErrAlreadyPublished = errors.New("already published")

// AlreadyPublishedError says where the one result of a fence is: its stream sequence and its
// Bridge-Source. It matches [ErrAlreadyPublished].
type AlreadyPublishedError struct {
	Seq    uint64
	Source string
}

func (e *AlreadyPublishedError) Error() string {
	return fmt.Sprintf("already published (seq %d, source %q)", e.Seq, e.Source)
}

// Is makes errors.Is(err, ErrAlreadyPublished) true.
func (e *AlreadyPublishedError) Is(target error) bool { return target == ErrAlreadyPublished }

// DefaultTakeoverAfter is how old a claim without its done message must be before another publisher
// takes it over: long enough for a live owner to store its result and write done (milliseconds), short
// enough that a job whose owner crashed is not held up for long.
const DefaultTakeoverAfter = 2 * time.Second

// defaultScanByGet: a takeover reads up to this many stream messages after the fence's first claim one
// by one; more through a consumer.
const defaultScanByGet = 256

const (
	headerExpectedLastSubjSeq = "Nats-Expected-Last-Subject-Sequence"
	// nats-server error codes of a refused expectation: the fence's last message is not the expected one
	// (10071), or, on a clustered stream, another write on the fence is in flight (10164).
	errCodeWrongLastSequence = jetstream.JSErrCodeStreamWrongLastSequence
	errCodeWrongLastSeqR3    = jetstream.JSErrCodeStreamWrongLastSequenceConstant
)

// OncePublisher stores a job's result once for ever, fenced by a subject of its own in the same stream
// (bridge.result.<job_id>), with three ordinary publishes and no atomic batch:
//
//  1. claim: an empty message on the fence with Bridge-Fence: claim, stored only while the fence is
//     empty (Nats-Expected-Last-Subject-Sequence: 0); its sequence c is the claimant's token.
//  2. result: the message itself, stored only while the fence's last message is still c
//     (Nats-Expected-Last-Subject-Sequence: c with Nats-Expected-Last-Subject-Sequence-Subject: the
//     fence). Once anything else is written on the fence, a claimant that was paused or lost its
//     acknowledgement can never store a result again, however late it comes.
//  3. done: an empty message on the fence with Bridge-Fence: done, Bridge-Result-Seq and the result's
//     Bridge-Source, expecting c: whoever finds the fence later reads where the result is. It is sent
//     without waiting for its acknowledgement (a lost one costs a later reader a takeover, nothing
//     more), so a result costs two synchronous publishes.
//
// A publisher that finds the fence taken reads its last message. Done: the result is out, and it
// returns an [*AlreadyPublishedError] naming it. A claim: its owner is given until the claim is
// [DefaultTakeoverAfter] old to write done; then the claim is taken over: a new claim expecting the old
// one moves the fence, so no result can be stored with an older token any more, and the messages since
// the fence's first claim are read for a result with the same Nats-Msg-Id (the old owner may have stored
// it and stopped before done; after the duplicate window only this read finds it). The one found, or
// else this publisher's own result stored with the new token, gets the done message.
//
// A fence message without Bridge-Fence was written by the earlier design (the fence and the result as
// one atomic batch): it counts as done, with the result at the next sequence.
//
// Safe for concurrent use.
type OncePublisher struct {
	js            jetstream.JetStream
	names         contract.Names
	takeoverAfter time.Duration

	mu     sync.Mutex
	stream jetstream.Stream // RESULTS, looked up once
	scans  chan struct{}    // long searches in flight (findResult)
	// abandoned holds this publisher's claims whose publish failed (fence -> claim): when the job comes
	// back (a retry), the claim is taken over at once instead of waited on. Guarded by mu.
	abandoned map[string]uint64
	scanByGet uint64 // defaultScanByGet

	// check is the [ClaimCheck] of WithCheck, or nil.
	check ClaimCheck

	// Test hooks (export_test.go): afterClaim runs between the claim and the result; skipDone leaves
	// the done message out, as a publisher that stopped right after its result would.
	afterClaim func(fence string, claim uint64)
	skipDone   bool
}

// NewOncePublisher returns a publisher into the RESULTS of names (the zero Names: contract.Default's)
// through js.
func NewOncePublisher(js jetstream.JetStream, names contract.Names) *OncePublisher {
	return &OncePublisher{js: js, names: names.OrDefault(), takeoverAfter: DefaultTakeoverAfter, scans: make(chan struct{}, 4),
		scanByGet: defaultScanByGet}
}

// ClaimCheck is asked, after each claim on fence is stored and before the result, whether the result
// may still be stored: an error abandons the publish, stores nothing, and is what Publish returns. It
// sees the fence's state as it is once the claim holds it (a claim on a fence emptied by a purge, say).
type ClaimCheck func(ctx context.Context, fence string) error

// WithCheck makes p run check after every claim it stores (see [ClaimCheck]) and returns p. Call it
// before p's first Publish.
func (p *OncePublisher) WithCheck(check ClaimCheck) *OncePublisher {
	p.check = check
	return p
}

// Publish stores msg (which carries Nats-Msg-Id and Bridge-Source) into RESULTS once for ever under
// fenceSubject, and returns its stream sequence; or, when a result of the fence was stored before, an
// [*AlreadyPublishedError] with that result's sequence and source. Any other error leaves the outcome
// unknown (as with a lost acknowledgement): a later call finds out and never stores a second result.
func (p *OncePublisher) Publish(ctx context.Context, fenceSubject string, msg *nats.Msg) (uint64, error) {
	source := msg.Header.Get(contract.HeaderBridgeSource)
	var expect uint64 // the fence's last sequence our claim expects: 0, or the claim we take over
	for {
		claim, err := p.claim(ctx, fenceSubject, expect, source)
		if err == nil {
			seq, err := p.own(ctx, ownClaim{fence: fenceSubject, seq: claim, takeover: expect != 0}, msg)
			if !errors.Is(err, errTokenLost) {
				p.remember(fenceSubject, claim, err != nil && !errors.Is(err, ErrAlreadyPublished))
				return seq, err
			}
		} else if !isWrongLast(err) {
			return 0, fmt.Errorf("claim %s: %w", fenceSubject, err)
		}
		// The fence is someone else's (or moving): wait for its done, or take it over.
		if expect, err = p.await(ctx, fenceSubject); err != nil {
			return 0, err
		}
	}
}

// errTokenLost: our claim is no longer the fence's last message; nothing of ours was stored.
var errTokenLost = errors.New("fence claim taken over")

// ownClaim is our claim on a fence: its sequence, and whether it took over an earlier claim.
type ownClaim struct {
	fence    string
	seq      uint64
	takeover bool
}

// own publishes msg under our claim c, and then the done message. With c.takeover, it first looks for
// a result an earlier claimant stored without writing done.
func (p *OncePublisher) own(ctx context.Context, c ownClaim, msg *nats.Msg) (uint64, error) {
	fence, claim := c.fence, c.seq
	if p.afterClaim != nil {
		p.afterClaim(fence, claim)
	}
	if p.check != nil {
		if err := p.check(ctx, fence); err != nil {
			return 0, err
		}
	}
	msgID := msg.Header.Get(jetstream.MsgIDHeader)
	if c.takeover {
		seq, source, err := p.findResult(ctx, fence, msgID, claim)
		if err != nil {
			return 0, err
		}
		if seq != 0 {
			p.done(fence, claim, seq, source)
			return 0, &AlreadyPublishedError{Seq: seq, Source: source}
		}
	}
	out := nats.NewMsg(msg.Subject)
	out.Data = msg.Data
	for k, v := range msg.Header {
		out.Header[k] = v
	}
	for wait := 5 * time.Millisecond; ; wait *= 2 {
		ack, err := natsx.PublishMsg(ctx, p.js, out, jetstream.WithExpectLastSequenceForSubject(claim, fence))
		switch {
		case err == nil && ack.Duplicate:
			// A result with this Nats-Msg-Id is in the duplicate window: that one is the result.
			source, err := p.sourceOf(ctx, ack.Sequence)
			if err != nil {
				return 0, err
			}
			p.done(fence, claim, ack.Sequence, source)
			return 0, &AlreadyPublishedError{Seq: ack.Sequence, Source: source}
		case err == nil:
			p.done(fence, claim, ack.Sequence, msg.Header.Get(contract.HeaderBridgeSource))
			return ack.Sequence, nil
		case !isWrongLast(err):
			return 0, fmt.Errorf("publish %s: %w", msg.Subject, err)
		}
		// Refused, so not stored. Unless the fence still ends with our claim (a clustered stream's 10164
		// for another write in flight on it, which then failed), the claim is lost.
		last, rerr := p.last(ctx, fence)
		if rerr != nil {
			return 0, rerr
		}
		if last == nil || last.Sequence != claim || wait > time.Second {
			return 0, errTokenLost
		}
		if err := retry.Sleep(ctx, wait); err != nil {
			return 0, err
		}
	}
}

// done writes the fence's done message (expecting our claim) without waiting for its acknowledgement:
// the result is stored already, and a done message that is lost (or refused: the claim was taken
// over) only means that whoever finds the claim without it takes it over and finds the result. Sent
// after the result's acknowledgement on the same connection, it is stored before anything this
// publisher sends next; a reader that comes in between waits for it (await).
func (p *OncePublisher) done(fence string, claim, resultSeq uint64, source string) {
	if p.skipDone {
		return
	}
	m := fenceMsg(fence, claim, contract.FenceDone, source)
	m.Header.Set(contract.HeaderResultSeq, strconv.FormatUint(resultSeq, 10))
	_, _ = p.js.PublishMsgAsync(m)
}

// claim stores a claim on fence, expecting the fence's last sequence to be expect, and returns its
// sequence.
func (p *OncePublisher) claim(ctx context.Context, fence string, expect uint64, source string) (uint64, error) {
	ack, err := p.js.PublishMsg(ctx, fenceMsg(fence, expect, contract.FenceClaim, source))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// fenceMsg is an empty message on fence, of kind claim or done, expecting the fence's last sequence to
// be expect.
func fenceMsg(fence string, expect uint64, kind, source string) *nats.Msg {
	m := nats.NewMsg(fence)
	m.Header.Set(contract.HeaderFence, kind)
	if source != "" {
		m.Header.Set(contract.HeaderBridgeSource, source)
	}
	m.Header.Set(headerExpectedLastSubjSeq, strconv.FormatUint(expect, 10))
	return m
}

// await reads the fence until it is done (returning the AlreadyPublishedError), empty (0: claim it), or
// ends with a claim older than takeoverAfter (its sequence: take it over).
func (p *OncePublisher) await(ctx context.Context, fence string) (uint64, error) {
	var seen uint64
	var deadline time.Time
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		last, err := p.last(ctx, fence)
		if err != nil {
			return 0, err
		}
		if last == nil {
			// Empty: on a cluster a claim can be in flight (10164) and then be lost with a leader.
			return 0, retry.Sleep(ctx, wait)
		}
		switch last.Header.Get(contract.HeaderFence) {
		case contract.FenceDone:
			seq, err := strconv.ParseUint(last.Header.Get(contract.HeaderResultSeq), 10, 64)
			if err != nil || seq == 0 {
				return 0, fmt.Errorf("result fence %s: done message %d without a result sequence", fence, last.Sequence)
			}
			return 0, &AlreadyPublishedError{Seq: seq, Source: last.Header.Get(contract.HeaderBridgeSource)}
		case "":
			// The earlier design: the fence and its result were one atomic batch.
			return 0, &AlreadyPublishedError{Seq: last.Sequence + 1, Source: last.Header.Get(contract.HeaderBridgeSource)}
		}
		if last.Sequence != seen {
			// A claim we have not waited on yet: its owner has until the claim is takeoverAfter old,
			// unless the owner is this publisher, which gave it up.
			seen = last.Sequence
			deadline = time.Now().Add(min(p.takeoverAfter, max(0, p.takeoverAfter-time.Since(last.Time))))
			if p.gaveUp(fence, seen) {
				return seen, nil
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return seen, nil
		}
		if err := retry.Sleep(ctx, min(wait, left)); err != nil {
			return 0, err
		}
	}
}

// findResult looks for a stored message with Nats-Msg-Id msgID after the fence's first message and
// before upto (our claim, which no earlier token can pass). Its sequence and Bridge-Source, or 0.
func (p *OncePublisher) findResult(ctx context.Context, fence, msgID string, upto uint64) (uint64, string, error) {
	s, err := p.results(ctx)
	if err != nil {
		return 0, "", err
	}
	first, err := s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(fence))
	if err != nil {
		return 0, "", fmt.Errorf("result fence %s: first message: %w", fence, err)
	}
	if first.Sequence+1 >= upto {
		return 0, "", nil
	}
	if upto-first.Sequence <= p.scanByGet {
		return scanByGets(ctx, s, resultScan{fence, msgID, first.Sequence + 1, upto, p.names.SubjectResults + ">"})
	}
	return p.scanByConsumer(ctx, s, resultScan{fence, msgID, first.Sequence + 1, upto, p.names.SubjectResults + ">"})
}

// resultScan is a search of RESULTS for the result with Nats-Msg-Id msgID among the messages from
// "from" up to (not including) upto, the claim of the publisher searching.
type resultScan struct {
	fence, msgID string
	from, upto   uint64
	// results is the filter of the result subjects (results.>).
	results string
}

// scanByGets reads the results in [from, upto) one by one, for a short stretch (the usual takeover,
// soon after the claim), looking for msgID.
func scanByGets(ctx context.Context, s jetstream.Stream, r resultScan) (uint64, string, error) {
	for seq := r.from; seq < r.upto; seq++ {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(r.results))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, "", nil
		}
		if err != nil {
			return 0, "", fmt.Errorf("read results from %d: %w", seq, err)
		}
		if m.Sequence >= r.upto {
			return 0, "", nil
		}
		if m.Header.Get(jetstream.MsgIDHeader) == r.msgID {
			return m.Sequence, m.Header.Get(contract.HeaderBridgeSource), nil
		}
		seq = m.Sequence
	}
	return 0, "", nil
}

// scanByConsumer streams the headers of the results from "from" up to our claim at upto through a
// consumer, looking for msgID. Few at a time: on a cluster each is created through the meta leader,
// and a crash can leave many claims to take over at once.
func (p *OncePublisher) scanByConsumer(ctx context.Context, s jetstream.Stream, r resultScan) (uint64, string, error) {
	select {
	case p.scans <- struct{}{}:
		defer func() { <-p.scans }()
	case <-ctx.Done():
		return 0, "", ctx.Err()
	}
	// One filter, results.> alone: nats-server reads a consumer with several filters by intersecting
	// each block's subject tree, which holds a fence subject per job, for every message, and a scan of
	// 10,000 results took seconds (BenchmarkFenceTakeover). The read ends at our claim's sequence, or
	// when nothing more is stored.
	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     r.results,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       r.from,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return 0, "", fmt.Errorf("result fence %s: read results: %w", r.fence, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	return scanConsumer(ctx, cons, r)
}

// scanConsumer reads cons, a headers-only consumer of every result from r.from, until our claim at r.upto
// or the end of what is stored, looking for r.msgID.
func scanConsumer(ctx context.Context, cons jetstream.Consumer, r resultScan) (uint64, string, error) {
	// What the filter held from the start when the consumer was made: an empty fetch before that much
	// was read is not the end of the results, and must not read as "no result of ours".
	pending, read, unheard := cons.CachedInfo().NumPending, uint64(0), 0
	for {
		batch, err := cons.FetchNoWait(512)
		n := 0
		if err == nil {
			for m := range batch.Messages() {
				n++
				md, err := m.Metadata()
				if err != nil {
					return 0, "", err
				}
				if md.Sequence.Stream >= r.upto {
					return 0, "", nil
				}
				if m.Headers().Get(jetstream.MsgIDHeader) == r.msgID {
					return md.Sequence.Stream, m.Headers().Get(contract.HeaderBridgeSource), nil
				}
			}
			if berr := batch.Error(); !errors.Is(berr, jetstream.ErrNoMessages) {
				err = berr
			}
		}
		read += uint64(n)
		switch {
		case errors.Is(err, nats.ErrNoResponders) && n == 0 && unheard < 10:
			// On a cluster the new consumer's interest may not have reached our server yet.
			unheard++
			if err := retry.Sleep(ctx, time.Duration(unheard)*20*time.Millisecond); err != nil {
				return 0, "", err
			}
		case err != nil:
			return 0, "", fmt.Errorf("result fence %s: read results: %w", r.fence, err)
		case n == 0 && read < pending:
			return 0, "", fmt.Errorf("result fence %s: read results: ended after %d of %d", r.fence, read, pending)
		case n == 0:
			return 0, "", ctx.Err() // every stored result was read: none before our claim is ours
		}
	}
}

// sourceOf reads the Bridge-Source of the message at seq.
func (p *OncePublisher) sourceOf(ctx context.Context, seq uint64) (string, error) {
	s, err := p.results(ctx)
	if err != nil {
		return "", err
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return "", fmt.Errorf("read result %d: %w", seq, err)
	}
	return m.Header.Get(contract.HeaderBridgeSource), nil
}

// last reads the fence's last message, or nil when it has none.
func (p *OncePublisher) last(ctx context.Context, fence string) (*jetstream.RawStreamMsg, error) {
	s, err := p.results(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.GetLastMsgForSubject(ctx, fence)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read result fence %s: %w", fence, err)
	}
	return m, nil
}

// results returns the RESULTS stream handle (one lookup per publisher).
func (p *OncePublisher) results(ctx context.Context) (jetstream.Stream, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stream == nil {
		s, err := p.js.Stream(ctx, p.names.StreamResults)
		if err != nil {
			return nil, fmt.Errorf("results stream: %w", err)
		}
		p.stream = s
	}
	return p.stream, nil
}

// remember records whether our claim on fence was given up (its publish failed, outcome unknown).
func (p *OncePublisher) remember(fence string, claim uint64, abandoned bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !abandoned {
		delete(p.abandoned, fence)
		return
	}
	if p.abandoned == nil || len(p.abandoned) >= maxAbandoned {
		p.abandoned = make(map[string]uint64) // only a shortcut: forgetting costs a wait, nothing more
	}
	p.abandoned[fence] = claim
}

// gaveUp reports whether claim is one of ours whose publish failed.
func (p *OncePublisher) gaveUp(fence string, claim uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.abandoned[fence] == claim
}

// maxAbandoned bounds OncePublisher.abandoned.
const maxAbandoned = 10000

// isWrongLast reports a refused Nats-Expected-Last-Subject-Sequence.
func isWrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == errCodeWrongLastSequence || apiErr.ErrorCode == errCodeWrongLastSeqR3)
}
