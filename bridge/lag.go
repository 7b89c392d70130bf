package bridge

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
)

// lagCollector exports the backlog of the verifier's durable consumers, asked of the server at scrape
// time: bridge_consumer_pending_messages (stored, not yet delivered) and
// bridge_consumer_ack_pending_messages (delivered, not yet acknowledged, which includes webhooks waiting
// out a retry delay). The values are the server's, so every process that exports them reports the same:
// aggregate with max, not sum.
type lagCollector struct {
	js      jetstream.JetStream
	log     zerolog.Logger
	timeout time.Duration
	// consumers are the [stream, consumer] pairs reported.
	consumers  [][2]string
	pending    *prometheus.Desc
	ackPending *prometheus.Desc
	errors     prometheus.Counter
}

// scrapeTimeout bounds the server requests of one scrape (consumer info, stream state), so a NATS in
// trouble cannot stall /metrics.
const scrapeTimeout = 2 * time.Second

func newLagCollector(js jetstream.JetStream, names contract.Names, log zerolog.Logger) *lagCollector {
	labels := []string{"stream", "consumer"}
	return &lagCollector{
		js: js, log: log, timeout: scrapeTimeout,
		consumers: [][2]string{{names.StreamWebhooks, names.ConsumerVerify}, {names.StreamSlowLane, names.ConsumerVerifyUnknown}},
		pending: prometheus.NewDesc("bridge_consumer_pending_messages",
			"Messages of the stream the durable consumer has not yet delivered (its lag), as the server reports it at scrape time.", labels, nil),
		ackPending: prometheus.NewDesc("bridge_consumer_ack_pending_messages",
			"Messages the durable consumer delivered and that are not yet acknowledged (in work or waiting out a retry delay).", labels, nil),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bridge_consumer_info_errors_total",
			Help: "Scrapes that could not read a consumer's info from the server (within 2s); its lag is then missing.",
		}),
	}
}

// Describe implements prometheus.Collector.
func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.ackPending
	c.errors.Describe(ch)
}

// Collect implements prometheus.Collector. A consumer that does not exist (verify-unknown before the
// first verifier with an unknown-job budget made it) is left out; one that cannot be read is counted in
// bridge_consumer_info_errors_total.
func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	for _, sc := range c.consumers {
		info, err := c.info(ctx, sc[0], sc[1])
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			c.errors.Inc()
			c.log.Debug().Err(err).Str("consumer", sc[1]).Msg("consumer info for metrics")
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.NumPending), sc[0], sc[1])
		ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(info.NumAckPending), sc[0], sc[1])
	}
	c.errors.Collect(ch)
}

// info asks the server for the consumer's info: looking the consumer up is that request.
func (c *lagCollector) info(ctx context.Context, stream, consumer string) (*jetstream.ConsumerInfo, error) {
	cons, err := c.js.Consumer(ctx, stream, consumer)
	if err != nil {
		return nil, err
	}
	return cons.CachedInfo(), nil
}
