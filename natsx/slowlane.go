package natsx

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/retry"
)

// oldLaneSubject is where the slow lane was before SLOWLANE: DEADLETTER's deadletter.unknown_job, drained
// by the consumer verify-unknown on DEADLETTER.
var oldLaneSubject = contract.Default.DeadLetterSubject("unknown_job")

// MoveOldSlowLane upgrades a store of the earlier layout, whose slow lane was deadletter.unknown_job in
// DEADLETTER with the consumer verify-unknown there: it moves every webhook still waiting on that consumer
// to SLOWLANE (contract.Default.SubjectUnknownLane), then removes the consumer. Without the consumer it returns
// nil at once. It runs until the consumer is gone or ctx ends (then nil too), retrying NATS trouble, and
// is safe to run in every process at once. Only a bridge without a namespace had the earlier layout: the
// names here are contract.Default's, and a namespaced bridge never runs it.
//
// The consumer's own deliveries say what waits: each message it has not acknowledged is published to the
// lane with its Nats-Msg-Id and headers (Bridge-Reason dropped: it is no dead letter), deleted from
// DEADLETTER, and only then acknowledged. An interrupted move is taken up again at the message's
// redelivery, in this process or another: the copy published again collapses in SLOWLANE's duplicate
// window, so nothing is lost or doubled. Webhooks the earlier lane parked (a delayed nak) come when their
// delay is out. Once nothing is pending or unacknowledged, the messages the consumer handled, which
// DEADLETTER kept although they were no dead letters, are purged and the consumer deleted.
func MoveOldSlowLane(ctx context.Context, js jetstream.JetStream, log zerolog.Logger) error {
	log = log.With().Str("component", "natsx").Str("consumer", contract.Default.ConsumerVerifyUnknown).Logger()
	b := retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for ctx.Err() == nil {
		done, err := moveOldLaneRound(ctx, js, log)
		switch {
		case done:
			return nil
		case err != nil && ctx.Err() == nil:
			log.Warn().Err(err).Msg("move the earlier slow lane to " + contract.Default.StreamSlowLane)
			_ = b.Wait(ctx)
		default:
			b.Reset()
		}
	}
	return nil
}

// moveOldLaneRound moves what the old consumer delivers within a few seconds, and reports done once the
// consumer is gone.
func moveOldLaneRound(ctx context.Context, js jetstream.JetStream, log zerolog.Logger) (done bool, err error) {
	cons, err := js.Consumer(ctx, contract.Default.StreamDeadLetter, contract.Default.ConsumerVerifyUnknown)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	dl, err := js.Stream(ctx, contract.Default.StreamDeadLetter)
	if err != nil {
		return false, err
	}
	if info := cons.CachedInfo(); info.NumPending == 0 && info.NumAckPending == 0 {
		// Every message up to the last delivered one was handled, by the earlier lane or moved.
		err := dl.Purge(ctx, jetstream.WithPurgeSubject(oldLaneSubject), jetstream.WithPurgeSequence(info.Delivered.Stream+1))
		if err == nil {
			err = js.DeleteConsumer(ctx, contract.Default.StreamDeadLetter, contract.Default.ConsumerVerifyUnknown)
		}
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return false, fmt.Errorf("remove the earlier slow lane: %w", err)
		}
		log.Info().Msg("the earlier slow lane in " + contract.Default.StreamDeadLetter + " is moved and removed")
		return true, nil
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	batch, err := cons.Fetch(64, jetstream.FetchContext(fctx))
	if err != nil {
		return false, err
	}
	for msg := range batch.Messages() {
		if err := moveToLane(ctx, js, dl, msg); err != nil {
			return false, err
		}
		log.Debug().Str("subject", msg.Subject()).Msg("waiting webhook moved to " + contract.Default.StreamSlowLane)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		return false, err
	}
	return false, nil
}

// moveToLane publishes msg, a webhook waiting in the earlier slow lane, to SLOWLANE, deletes it from
// DEADLETTER and acknowledges it. A failed delete leaves only a handled message, which the purge at the
// end removes.
func moveToLane(ctx context.Context, js jetstream.JetStream, dl jetstream.Stream, msg jetstream.Msg) error {
	meta, err := msg.Metadata()
	if err != nil {
		return err
	}
	out := nats.NewMsg(contract.Default.SubjectUnknownLane)
	out.Data = msg.Data()
	out.Header = maps.Clone(msg.Headers())
	out.Header.Del(contract.HeaderReason)
	if _, err := PublishMsg(ctx, js, out); err != nil {
		return fmt.Errorf("move %s seq %d: %w", contract.Default.StreamDeadLetter, meta.Sequence.Stream, err)
	}
	_ = dl.DeleteMsg(ctx, meta.Sequence.Stream)
	return msg.DoubleAck(ctx)
}
