package upstream

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/clock"
)

// NoLimit as Config.RPM disables the budget entirely: no rate, no queue and no pause on 429. It is for
// tests and benchmarks against the simulator.
const NoLimit = -1

// Config configures a [Client].
type Config struct {
	// BaseURL is the upstream's base URL including the version path, e.g. https://api.evershield.ai/api/v1.
	BaseURL string
	// APIKey is the bearer key. It is never logged.
	APIKey string
	// Contract is the upstream contract: ContractV1, ContractV2 or ContractAuto (decide at the first
	// submission, see [Client.Submit]). Default ContractV1.
	Contract string
	// RPM is the request budget per minute, shared by every call. Default 60; [NoLimit] disables it.
	RPM int
	// Burst is how many requests the budget may spend at once. Default 5 seconds' worth of RPM (RPM/12),
	// at least 1.
	Burst int
	// Limiter is the request budget; nil gives the client its own process-local token bucket of RPM and
	// Burst. Bridge processes pass the account-wide budget they share through NATS (package budget).
	Limiter Limiter
	// SubmitWait is the longest a submission waits for the local budget before it is refused with a
	// *BusyError; default DefaultSubmitWait. (A Limiter given in Limiter has its own.)
	SubmitWait time.Duration
	// Timeout bounds each HTTP exchange (not the wait for budget). Default 10s.
	Timeout time.Duration
	// HTTP is the client used for requests. Default: a client with keep-alive pooling sized for the
	// bridge. Its own Timeout, if any, applies on top of Timeout.
	HTTP *http.Client
	// Log receives call records at debug level and rate-limit events at warn level.
	Log zerolog.Logger
	// Metrics registers the bridge_upstream_* collectors; nil registers nothing.
	Metrics prometheus.Registerer
	// Now is the clock of the budget; default time.Now. The budget's wake-up timers always run on
	// real time.
	Now func() time.Time

	// clock replaces Now and the timers in tests (see export_test.go).
	clock clock.Clock
}

func (c *Config) setDefaults() {
	if c.Contract == "" {
		c.Contract = ContractV1
	}
	if c.RPM == 0 {
		c.RPM = 60
	}
	if c.Burst == 0 && c.RPM > 0 {
		c.Burst = max(1, c.RPM/12)
	}
	if c.SubmitWait == 0 {
		c.SubmitWait = DefaultSubmitWait
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.HTTP == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = 256
		t.MaxIdleConnsPerHost = 64
		c.HTTP = &http.Client{Transport: t}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.clock == nil {
		c.clock = clock.Real{NowFunc: c.Now}
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
	case c.RPM < NoLimit:
		return fmt.Errorf("%w: RPM %d: must be positive (or NoLimit)", ErrInvalidConfig, c.RPM)
	case c.Burst < 0:
		return fmt.Errorf("%w: Burst %d: must not be negative", ErrInvalidConfig, c.Burst)
	case c.Contract != ContractV1 && c.Contract != ContractV2 && c.Contract != ContractAuto:
		return fmt.Errorf("%w: Contract %q: must be %s, %s or %s", ErrInvalidConfig, c.Contract, ContractV1, ContractV2, ContractAuto)
	case c.Timeout < 0:
		return fmt.Errorf("%w: Timeout %v: must not be negative", ErrInvalidConfig, c.Timeout)
	}
	return nil
}
