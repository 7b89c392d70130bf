package contract

import "github.com/nats-io/nats.go"

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
