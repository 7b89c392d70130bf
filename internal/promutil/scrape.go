package promutil

import (
	"context"
	"fmt"
	"io"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// maxScrape bounds the body Scrape reads: a bridge's /metrics is a few tens of kilobytes.
const maxScrape = 32 << 20

// Scrape fetches the Prometheus text exposition at u with c and parses it into metric families by name.
// It returns an error when u cannot be fetched, does not answer 200, or the body is not valid text
// format. A counter vector with no series yet is absent from the result.
func Scrape(ctx context.Context, c *http.Client, u string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, maxScrape))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", u, err)
	}
	return fams, nil
}

// Sum adds the values of the counter or gauge family name across all its label sets; an absent family
// is zero. fams are metric families by name, from [Scrape] or a registry's Gather.
func Sum(fams map[string]*dto.MetricFamily, name string) float64 {
	var s float64
	if f := fams[name]; f != nil {
		for _, m := range f.GetMetric() {
			s += value(m)
		}
	}
	return s
}

// ByLabel sums the counter or gauge family name by the value of one label; fams are metric families by
// name, from [Scrape] or a registry's Gather.
func ByLabel(fams map[string]*dto.MetricFamily, name, key string) map[string]float64 {
	out := map[string]float64{}
	if f := fams[name]; f != nil {
		for _, m := range f.GetMetric() {
			out[Label(m, key)] += value(m)
		}
	}
	return out
}

// Label is the value of m's label key, "" when m has none.
func Label(m *dto.Metric, key string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == key {
			return l.GetValue()
		}
	}
	return ""
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}
