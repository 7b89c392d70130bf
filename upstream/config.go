package upstream

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
)

// Config configures a [Client].
type Config struct {
	// BaseURL is the upstream's base URL including the version path, e.g. https://api.evershield.ai/api/v1.
	BaseURL string
	// APIKey is the bearer key. It is never logged.
	APIKey string
	// Contract is the upstream contract: ContractV1, ContractV2 or ContractAuto (decide at the first
	// submission, see [Client.Submit]). Default ContractV1.
	Contract string
	// Limiter is the request budget every call waits for; required. Bridge processes pass the
	// account-wide budget they share through NATS (budget.Shared); tools that need none pass
	// budget.Unlimited.
	Limiter Limiter
	// Timeout bounds each HTTP exchange (not the wait for budget). Default 10s.
	Timeout time.Duration
	// HTTP is the client used for requests. Default: a client with keep-alive pooling sized for the
	// bridge. Its own Timeout, if any, applies on top of Timeout.
	HTTP *http.Client
	// Log receives call records at debug level and rate-limit events at warn level.
	Log zerolog.Logger
	// Metrics registers the bridge_upstream_* collectors; nil registers nothing.
	Metrics prometheus.Registerer
	// MaxExportBytes bounds the body of one export ([Client.ExportJobs]); a longer one fails it. Default
	// [DefaultMaxExportBytes].
	MaxExportBytes int64
	// TracerProvider, when set, traces every exchange made inside a span (in the call's ctx): a client
	// span (otelhttp), its child, named by the endpoint, e.g. "GET /job/{id}", and the W3C traceparent
	// sent to the upstream. Exchanges outside any span are not traced. nil traces nothing and costs
	// nothing.
	TracerProvider trace.TracerProvider
}

func (c *Config) setDefaults() {
	if c.Contract == "" {
		c.Contract = ContractV1
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MaxExportBytes == 0 {
		c.MaxExportBytes = DefaultMaxExportBytes
	}
	if c.HTTP == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = 256
		t.MaxIdleConnsPerHost = 64
		c.HTTP = &http.Client{Transport: t}
	}
	if c.TracerProvider != nil {
		c.HTTP = traced(c.HTTP, c.TracerProvider)
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
}

// Validate checks the configuration after defaults are applied. Errors wrap [ErrInvalidConfig] and
// name the field; they never contain the key.
func (c *Config) Validate() error {
	u, err := url.Parse(c.BaseURL)
	switch {
	case c.BaseURL == "":
		return fmt.Errorf("%w: BaseURL: required", ErrInvalidConfig)
	case err != nil:
		return fmt.Errorf("%w: BaseURL: %v", ErrInvalidConfig, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: BaseURL %q: scheme must be http or https", ErrInvalidConfig, c.BaseURL)
	case u.Host == "":
		return fmt.Errorf("%w: BaseURL %q: no host", ErrInvalidConfig, c.BaseURL)
	case u.User != nil:
		return fmt.Errorf("%w: BaseURL: must not carry credentials", ErrInvalidConfig)
	case c.APIKey == "":
		return fmt.Errorf("%w: APIKey: required", ErrInvalidConfig)
	case strings.ContainsAny(c.APIKey, " \t\r\n"):
		return fmt.Errorf("%w: APIKey: contains white space", ErrInvalidConfig)
	case c.Contract != ContractV1 && c.Contract != ContractV2 && c.Contract != ContractAuto:
		return fmt.Errorf("%w: Contract %q: must be %s, %s or %s", ErrInvalidConfig, c.Contract, ContractV1, ContractV2, ContractAuto)
	case c.Timeout < 0:
		return fmt.Errorf("%w: Timeout %v: must not be negative", ErrInvalidConfig, c.Timeout)
	case c.MaxExportBytes < 0:
		return fmt.Errorf("%w: MaxExportBytes %d: must not be negative", ErrInvalidConfig, c.MaxExportBytes)
	case c.Limiter == nil:
		return fmt.Errorf("%w: Limiter: required", ErrInvalidConfig)
	}
	return nil
}
