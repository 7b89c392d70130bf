package natsx

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/internal/retry"
)

// errCodeDuplicateInProcess is nats-server's JSStreamDuplicateMessageConflict; nats.go has no constant.
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

// PublishMsg publishes msg and waits for the acknowledgement, like [jetstream.Publisher.PublishMsg], with one
// difference that keeps Nats-Msg-Id semantics the same on a cluster as on a single node: while a publish
// with the same Nats-Msg-Id is still being replicated, a clustered stream answers 409 "duplicate message
// id is in process" (10158) instead of a duplicate acknowledgement. PublishMsg then retries with a short
// backoff (bounded by ctx and about 2 s in all), so the caller gets the duplicate acknowledgement with the
// sequence of the stored message.
func PublishMsg(ctx context.Context, p jetstream.Publisher, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	for wait := 10 * time.Millisecond; ; wait *= 2 {
		ack, err := p.PublishMsg(ctx, msg, opts...)
		if err == nil || !IsDuplicateInProcess(err) || wait > time.Second {
			return ack, err
		}
		if retry.Sleep(ctx, wait) != nil {
			return nil, err
		}
	}
}

// IsDuplicateInProcess reports whether err is the cluster's 10158 "duplicate message id is in process".
func IsDuplicateInProcess(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeDuplicateInProcess
}
