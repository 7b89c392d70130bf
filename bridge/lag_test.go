package bridge

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
)

// gatherLines renders the registry's samples as "name{l=v,...} value" lines, sorted.
func gatherLines(t *testing.T, g prometheus.Gatherer, prefix string) []string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), prefix) {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out = append(out, fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(ls, ","), v))
		}
	}
	sort.Strings(out)
	return out
}

// TestLagCollectorReportsConsumerBacklog stores three webhooks nobody consumes: the verify consumer's
// lag is 3, verify-unknown (not made yet) is left out, and a server that is gone is counted as an error.
func TestLagCollectorReportsConsumerBacklog(t *testing.T) {
	nc, js := testworld.New(t).Connect(nats.MaxReconnects(0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateConsumer(ctx, contract.Default.StreamWebhooks, jetstream.ConsumerConfig{
		Durable: contract.Default.ConsumerVerify, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, contract.Default.WebhookSubject("prompt"), fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newLagCollector(js, contract.Default, zerolog.Nop()))
	got := strings.Join(gatherLines(t, reg, "bridge_consumer_"), "\n")
	want := strings.Join([]string{
		"bridge_consumer_ack_pending_messages{consumer=verify,stream=WEBHOOKS} 0",
		"bridge_consumer_info_errors_total{} 0",
		"bridge_consumer_pending_messages{consumer=verify,stream=WEBHOOKS} 3",
	}, "\n")
	if got != want {
		t.Fatalf("metrics:\n%s\nwant:\n%s", got, want)
	}

	nc.Close()
	got = strings.Join(gatherLines(t, reg, "bridge_consumer_"), "\n")
	if want := "bridge_consumer_info_errors_total{} 2"; got != want {
		t.Fatalf("without NATS:\n%s\nwant:\n%s", got, want)
	}
}
