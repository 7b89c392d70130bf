package contract

import (
	"strconv"

	"github.com/nats-io/nats.go"
)

// webhookHeaders are the headers ingest stores with a webhook besides the server's directives: what
// travels with it when it is dead-lettered, moved to the slow lane or redriven.
var webhookHeaders = [...]string{HeaderReceivedAt, HeaderRemoteAddr, HeaderModality, HeaderAuthenticated, HeaderDeliveryID,
	HeaderTraceParent, HeaderTraceState}

// CopyWebhookHeaders sets on dst, with its first value, each webhook header src has: received-at,
// remote address, modality, provenance, delivery id and trace context.
func CopyWebhookHeaders(dst, src nats.Header) {
	for _, h := range webhookHeaders {
		if v := src.Get(h); v != "" {
			dst.Set(h, v)
		}
	}
}

// ReplayRedrive is the Bridge-Replay value of a webhook `bridge deadletter redrive` put back into WEBHOOKS.
const ReplayRedrive = "redrive"

// ResultMsgID is the Nats-Msg-Id of a job's result, the job_id (as of its webhook); with late, of its
// late result: <job_id>.late.
func ResultMsgID(jobID string, late bool) string {
	if late {
		return jobID + LateSuffix
	}
	return jobID
}

// DeadLetterMsgID is the Nats-Msg-Id of a dead letter, <job_id>.<reason>.<stream>.<seq>: it names the
// message dead-lettered, so a redelivery of it collapses while a redriven copy (a new WEBHOOKS message)
// that fails again is stored again. Without a stream (no metadata) it is <job_id>.<reason>.
func DeadLetterMsgID(jobID, reason, stream string, seq uint64) string {
	if stream == "" {
		return jobID + "." + reason
	}
	return jobID + "." + reason + "." + stream + "." + strconv.FormatUint(seq, 10)
}

// RedriveMsgID is the Nats-Msg-Id of a redriven webhook: <job_id>.redrive.<dead letter seq>.
func RedriveMsgID(jobID string, seq uint64) string {
	return jobID + ".redrive." + strconv.FormatUint(seq, 10)
}

// ReverifyMsgID is the Nats-Msg-Id of a webhook the replay named replay puts back: <job_id>.reverify.<replay>.
func ReverifyMsgID(jobID, replay string) string { return jobID + ".reverify." + replay }

// ReplayMsgID is the Nats-Msg-Id of the replay's copy of stream's message at seq: <replay>:<stream>:<seq>.
func ReplayMsgID(replay, stream string, seq uint64) string {
	return replay + ":" + stream + ":" + strconv.FormatUint(seq, 10)
}
