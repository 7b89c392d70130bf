package bridge

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/history"
)

// stateCollector exports what the server keeps of the jobs, asked at scrape time from stream state (two
// requests, whatever the length of the history): bridge_jobs_hot_records, the records in JOBS (pending
// jobs, and delivered ones not yet compacted), and bridge_history_blocks and bridge_history_bytes, the
// history's blocks and their bytes. The values are the server's, so every process reports the same:
// aggregate with max, not sum.
type stateCollector struct {
	jobs                  jetstream.Stream
	hist                  *history.Store
	log                   zerolog.Logger
	hot, blocks, histByte *prometheus.Desc
	errors                prometheus.Counter
}

func newStateCollector(jobs jetstream.Stream, hist *history.Store, log zerolog.Logger) *stateCollector {
	return &stateCollector{
		jobs: jobs, hist: hist, log: log,
		hot: prometheus.NewDesc("bridge_jobs_hot_records",
			"Records in JOBS: pending jobs, timed-out ones still watched for a late result, and delivered ones within the duplicate window or not yet compacted.", nil, nil),
		blocks: prometheus.NewDesc("bridge_history_blocks",
			"Blocks of the history of delivered jobs (BRIDGE_HISTORY), leaves and split markers.", nil, nil),
		histByte: prometheus.NewDesc("bridge_history_bytes",
			"Bytes the server keeps for the history of delivered jobs (State.Bytes of BRIDGE_HISTORY's stream), about 32 a job.", nil, nil),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bridge_state_info_errors_total",
			Help: "Scrapes that could not read the state of JOBS or of the history from the server (within 2s); its gauges are then missing.",
		}),
	}
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.hot
	ch <- c.blocks
	ch <- c.histByte
	c.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	if info, err := c.jobs.Info(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(c.hot, prometheus.GaugeValue, float64(info.State.NumSubjects))
	} else {
		c.errors.Inc()
		c.log.Debug().Err(err).Msg("JOBS state for metrics")
	}
	if st, err := c.hist.Stats(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(c.blocks, prometheus.GaugeValue, float64(st.Blocks))
		ch <- prometheus.MustNewConstMetric(c.histByte, prometheus.GaugeValue, float64(st.Bytes))
	} else {
		c.errors.Inc()
		c.log.Debug().Err(err).Msg("history state for metrics")
	}
	c.errors.Collect(ch)
}
