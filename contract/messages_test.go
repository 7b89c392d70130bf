package contract

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// TestMsgIDs pins the Nats-Msg-Id formats to DESIGN.md's Headers table, and the result fences to theirs.
func TestMsgIDs(t *testing.T) {
	const id = "0b7e2c4a-1d2f-4e5a-9b8c-7d6e5f4a3b2c"
	tests := []struct{ name, got, want string }{
		{"result", ResultMsgID(id, false), id},
		{"late result", ResultMsgID(id, true), id + ".late"},
		{"dead letter", DeadLetterMsgID(id, "not_found", "WEBHOOKS", 42), id + ".not_found.WEBHOOKS.42"},
		{"dead letter without metadata", DeadLetterMsgID(id, "not_found", "", 0), id + ".not_found"},
		{"redrive", RedriveMsgID(id, 7), id + ".redrive.7"},
		{"reverify", ReverifyMsgID(id, "monday"), id + ".reverify.monday"},
		{"replay", ReplayMsgID("monday", "RESULTS", 9), "monday:RESULTS:9"},
		{"result fence", Default.ResultFenceSubject(id, false), "bridge.result." + id},
		{"late result fence", Default.ResultFenceSubject(id, true), "bridge.result." + id + ".late"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

// TestCopyWebhookHeaders: ingest's seven headers travel, the server's directives and the dead letter's
// own headers do not.
func TestCopyWebhookHeaders(t *testing.T) {
	src := nats.Header{}
	want := map[string]string{"Bridge-Received-At": "2026-12-01T10:00:00Z", "Bridge-Remote-Addr": "203.0.113.7:4711",
		"Bridge-Modality": "prompt", "Bridge-Authenticated": "signature", "Bridge-Delivery-Id": "wh_1",
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=x"}
	for k, v := range want {
		src.Set(k, v)
	}
	src.Set("Nats-Msg-Id", "x.not_found.WEBHOOKS.1")
	src.Set("Bridge-Reason", "not_found")
	dst := nats.Header{}
	CopyWebhookHeaders(dst, src)
	if len(dst) != len(want) {
		t.Fatalf("copied %v, want %v", dst, want)
	}
	for k, v := range want {
		if dst.Get(k) != v {
			t.Errorf("%s: %q, want %q", k, dst.Get(k), v)
		}
	}
}
