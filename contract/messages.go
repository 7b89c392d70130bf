package contract

import (
	"strconv"

	"github.com/nats-io/nats.go"
)

// webhookHeaders are the headers ingest stores with a webhook, besides the server's directives
// (Nats-Msg-Id, Nats-Expected-Stream): what travels with the webhook when it is dead-lettered, moved to
// the slow lane or redriven.
var webhookHeaders = [...]string{HeaderReceivedAt, HeaderRemoteAddr, HeaderModality, HeaderAuthenticated, HeaderDeliveryID}

// CopyWebhookHeaders sets on dst each webhook header that src has (ingest's: received-at, remote
// address, modality, provenance and delivery id), with its first value.
func CopyWebhookHeaders(dst, src nats.Header) {
	for _, h := range webhookHeaders {
		if v := src.Get(h); v != "" {
			dst.Set(h, v)
		}
	}
}

// ReplayRedrive is the Bridge-Replay value of a webhook `bridge deadletter redrive` put back into WEBHOOKS.
const ReplayRedrive = "redrive"

// The Nats-Msg-Id formats (DESIGN.md, Headers). A stored webhook's is its job_id.

// ResultMsgID is the Nats-Msg-Id of a job's result, its job_id; with late, of its late result:
// <job_id>.late.
func ResultMsgID(jobID string, late bool) string {
	if late {
		return jobID + LateSuffix
	}
	return jobID
}

// DeadLetterMsgID is the Nats-Msg-Id of a dead letter: <job_id>.<reason>.<stream>.<seq>, naming the
// message dead-lettered, so that a redelivery of it collapses while a redriven copy (a new WEBHOOKS
// message) that fails again is stored again. Without a stream (the message's metadata unreadable) it is
// <job_id>.<reason>.
func DeadLetterMsgID(jobID, reason, stream string, seq uint64) string {
	if stream == "" {
		return jobID + "." + reason
	}
	return jobID + "." + reason + "." + stream + "." + strconv.FormatUint(seq, 10)
}

// RedriveMsgID is the Nats-Msg-Id of a redriven webhook: <job_id>.redrive.<dead letter seq>.
func RedriveMsgID(jobID string, deadLetterSeq uint64) string {
	return jobID + "." + ReplayRedrive + "." + strconv.FormatUint(deadLetterSeq, 10)
}

// ReverifyMsgID is the Nats-Msg-Id of a webhook the replay called replay puts back into WEBHOOKS:
// <job_id>.reverify.<replay>.
func ReverifyMsgID(jobID, replay string) string { return jobID + ".reverify." + replay }

// ReplayMsgID is the Nats-Msg-Id of the copy the replay called replay makes of the message at seq of
// stream: <replay>:<stream>:<seq>.
func ReplayMsgID(replay, stream string, seq uint64) string {
	return replay + ":" + stream + ":" + strconv.FormatUint(seq, 10)
}
