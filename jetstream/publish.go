package jetstream

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
)

// errCodeDuplicateInProcess is nats-server's JSStreamDuplicateMessageConflict; nats.go has no constant.
const errCodeDuplicateInProcess natsjs.ErrorCode = 10158

// PublishMsg publishes msg and waits for the acknowledgement, like [natsjs.Publisher.PublishMsg], with one
// difference that keeps Nats-Msg-Id semantics the same on a cluster as on a single node: while a publish
// with the same Nats-Msg-Id is still being replicated, a clustered stream answers 409 "duplicate message
// id is in process" (10158) instead of a duplicate acknowledgement. PublishMsg then retries with a short
// backoff (bounded by ctx and about 2 s in all), so the caller gets the duplicate acknowledgement with the
// sequence of the stored message.
func PublishMsg(ctx context.Context, p natsjs.Publisher, msg *nats.Msg, opts ...natsjs.PublishOpt) (*natsjs.PubAck, error) {
	for wait := 10 * time.Millisecond; ; wait *= 2 {
		ack, err := p.PublishMsg(ctx, msg, opts...)
		if err == nil || !IsDuplicateInProcess(err) || wait > time.Second {
			return ack, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
}

// IsDuplicateInProcess reports whether err is the cluster's 10158 "duplicate message id is in process".
func IsDuplicateInProcess(err error) bool {
	var apiErr *natsjs.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeDuplicateInProcess
}

// ErrAlreadyPublished is returned by [PublishOnce] when the fence subject holds a message already (or
// the message's Nats-Msg-Id is a duplicate within the window): the result is out, and nothing was stored.
var ErrAlreadyPublished = errors.New("already published")

// nats-server error codes PublishOnce reads from its acknowledgement.
const (
	errCodeWrongLastSequence  = 10071 // the fence subject is not empty
	errCodeWrongLastSeqR3     = 10164 // the same, as a clustered stream says it
	errCodeBatchDuplicateMsg  = 10201 // the batch holds a Nats-Msg-Id already in the window
	errCodeAtomicPublishOff   = 10174
	headerExpectedLastSubjSeq = "Nats-Expected-Last-Subject-Sequence"
)

// PublishOnce stores msg together with an empty fence message on fenceSubject, as one atomic batch of
// the same stream, and only if fenceSubject holds no message yet: of all the publishes with the same
// fence, one is ever stored, whenever they come and however long a publisher was paused. It returns the
// stream sequence of msg, or [ErrAlreadyPublished]. fenceHeaders are set on the fence message (the
// publisher's source, for whoever finds the fence later). The stream must allow atomic publish.
func PublishOnce(ctx context.Context, nc *nats.Conn, fenceSubject string, fenceHeaders nats.Header, msg *nats.Msg) (uint64, error) {
	for wait := 10 * time.Millisecond; ; wait *= 2 {
		seq, code, err := publishGroup(ctx, nc, []*onceItem{{fence: fenceSubject, headers: fenceHeaders, msg: msg}})
		switch {
		case err == nil:
			return seq, nil
		case code == errCodeWrongLastSequence || code == errCodeWrongLastSeqR3 || code == errCodeBatchDuplicateMsg:
			return 0, ErrAlreadyPublished
		case code != int(errCodeDuplicateInProcess) || wait > time.Second:
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(wait):
		}
	}
}
