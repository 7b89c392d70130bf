package ingest

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
)

// Defaults and limits of [Config].
const (
	// DefaultMaxBody is the largest webhook body accepted unless Config.MaxBody says otherwise.
	DefaultMaxBody = 64 << 10
	// DefaultMaxHeaderBytes bounds the request line and headers unless Config.MaxHeaderBytes says otherwise.
	DefaultMaxHeaderBytes = 16 << 10
	// DefaultPublishTimeout bounds the wait for the JetStream acknowledgement.
	DefaultPublishTimeout = 5 * time.Second
	// MaxPublishTimeout is the largest PublishTimeout allowed: the answer must reach the upstream well inside
	// its 10 s client timeout.
	MaxPublishTimeout = 5 * time.Second
	// DefaultMaxInFlight is the default number of webhooks handled at once.
	DefaultMaxInFlight = 1024
	// DefaultRetryAfter is the default Retry-After of a 503.
	DefaultRetryAfter = time.Second
)

// DefaultModalities are the path modalities accepted by default: the names of the modalities of both
// contracts ([contract.ModalitiesFor] auto: prompt, image, video, chat, text, audio). The slice is the
// caller's own.
func DefaultModalities() []string {
	var names []string
	for _, m := range contract.ModalitiesFor(contract.ContractAuto) {
		names = append(names, m.Name)
	}
	return names
}

// Config is what [New] needs. Only Publisher is required.
type Config struct {
	// Publisher stores webhooks in JetStream (a jetstream.JetStream will do). Required.
	Publisher jetstream.Publisher
	// Names are the bridge's names (its namespace's): WEBHOOKS and its subjects. The zero Names means
	// contract.Default.
	Names contract.Names
	// Log receives the handler's events; it is tagged component=ingest.
	Log zerolog.Logger
	// Metrics registers the bridge_ingest_* collectors; nil uses a private registry.
	Metrics prometheus.Registerer
	// Gatherer is served on GET /metrics; nil uses Metrics when it is also a Gatherer (a *prometheus.Registry),
	// else /metrics answers 404.
	Gatherer prometheus.Gatherer
	// MaxBody is the largest body accepted, in bytes; 0 means DefaultMaxBody. A body declared larger is
	// refused 413 unread; one that turns out larger is cut off at the bound. Give the [Server] the same
	// bound (ServerConfig.MaxBody), from which it bounds its connections.
	MaxBody int64
	// MaxHeaderBytes bounds the request line and headers of a webhook: larger ones are answered 431. 0 means
	// DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// Token, when set, must be given as ?token= on every webhook (constant-time check). It is never logged.
	Token string
	// PreviousToken, when set, is accepted as ?token= as well as Token, during a rotation: jobs submitted
	// before it carry the old token in their webhook URL for their whole life. Both are compared in
	// constant time, always both. It requires Token, and is never logged.
	PreviousToken string
	// Secret, when set, makes every webhook carry a valid Standard Webhooks signature (headers webhook-id,
	// webhook-timestamp, webhook-signature: HMAC-SHA256 of "id.timestamp.body"), as the newer upstream
	// contract sends; a missing or wrong one is answered 401 and nothing is published. "whsec_<base64>" is
	// the base64-decoded key, any other value the key itself. It is never logged. Empty: signatures are
	// ignored (the documented upstream does not sign).
	Secret string
	// PreviousSecret, when set, is accepted as well as Secret, during a rotation: a webhook is valid when one
	// of its v1 signatures matches either (the upstream signs with the new secret, but retries of webhooks
	// signed before may carry the old one). Same forms as Secret; it requires Secret, and is never logged.
	PreviousSecret string
	// SignatureTolerance is how far webhook-timestamp may be from Now, either way; 0 means
	// DefaultSignatureTolerance.
	SignatureTolerance time.Duration
	// PublishTimeout bounds the wait for the JetStream acknowledgement; 0 means DefaultPublishTimeout, and
	// it may not exceed MaxPublishTimeout, so that with the server's ReadTimeout the answer reaches the
	// upstream inside its 10 s.
	PublishTimeout time.Duration
	// MaxInFlight bounds the webhooks handled at once; past it the answer is 503 at once, nothing queues.
	// 0 means DefaultMaxInFlight.
	MaxInFlight int
	// RetryAfter is the Retry-After of a 503, rounded up to whole seconds; 0 means DefaultRetryAfter.
	RetryAfter time.Duration
	// Modalities are the path modalities accepted in POST /webhook/{modality}; nil means
	// [DefaultModalities]. Each must be a single subject token and not "unknown".
	Modalities []string
	// Ready reports whether NATS is usable. When nil and Publisher has a Conn() *nats.Conn method (as
	// jetstream.JetStream does), it is that connection's IsConnected; otherwise it is always true.
	Ready func() bool
	// Serving, when set, must also be true for /readyz to answer 200: the application's other parts
	// (consumers, services, watchers) serve. Webhooks do not wait for it, only for Ready.
	Serving func() bool
	// Overloaded, when set and true, refuses every webhook with 503 and Retry-After before its body is
	// checked, instead of storing it: backpressure for an upstream that retries webhooks (the v2 contract).
	// The application sets it only under v2, when WEBHOOKS is near its limit ([Pressure]); nil never
	// refuses.
	Overloaded func() bool
	// Known reports whether a job id is one the bridge tracks (a pending JOBS record; jobs.Watcher);
	// with UnprovenFull it bounds what webhooks without provenance may occupy.
	Known func(id string) bool
	// UnprovenFull, when set and true, refuses with 503 and Retry-After a webhook that has no provenance
	// (no token or signature configured, so none is checked) and whose job is not Known: a flood of
	// forged ids then cannot fill JetStream storage, while webhooks of known jobs are still taken. The
	// application sets it from the slow lane's backlog against BRIDGE_UNKNOWN_BACKLOG; nil never refuses.
	UnprovenFull func() bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// setDefaults fills in the zero fields.
func (c *Config) setDefaults() {
	c.Names = c.Names.OrDefault()
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if c.SignatureTolerance == 0 {
		c.SignatureTolerance = DefaultSignatureTolerance
	}
	if c.Modalities == nil {
		c.Modalities = DefaultModalities()
	}
	if c.Metrics == nil {
		c.Metrics = prometheus.NewRegistry()
	}
	if c.Gatherer == nil {
		if g, ok := c.Metrics.(prometheus.Gatherer); ok {
			c.Gatherer = g
		}
	}
	if c.Ready == nil {
		if cp, ok := c.Publisher.(interface{ Conn() *nats.Conn }); ok && cp.Conn() != nil {
			nc := cp.Conn()
			c.Ready = nc.IsConnected
		} else {
			c.Ready = func() bool { return true }
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports the first field out of range, naming it.
func (c *Config) Validate() error {
	switch {
	case c.Publisher == nil:
		return fmt.Errorf("%w: Publisher: required", ErrInvalidConfig)
	case c.MaxBody < 0:
		return fmt.Errorf("%w: MaxBody: %d is negative", ErrInvalidConfig, c.MaxBody)
	case c.MaxHeaderBytes < 0:
		return fmt.Errorf("%w: MaxHeaderBytes: %d is negative", ErrInvalidConfig, c.MaxHeaderBytes)
	case c.PublishTimeout < 0:
		return fmt.Errorf("%w: PublishTimeout: %v is negative", ErrInvalidConfig, c.PublishTimeout)
	case c.PublishTimeout > MaxPublishTimeout:
		return fmt.Errorf("%w: PublishTimeout: %v is over the %v maximum", ErrInvalidConfig, c.PublishTimeout, MaxPublishTimeout)
	case c.MaxInFlight < 0:
		return fmt.Errorf("%w: MaxInFlight: %d is negative", ErrInvalidConfig, c.MaxInFlight)
	case c.RetryAfter < 0:
		return fmt.Errorf("%w: RetryAfter: %v is negative", ErrInvalidConfig, c.RetryAfter)
	case c.SignatureTolerance < time.Second:
		return fmt.Errorf("%w: SignatureTolerance: %v is under 1s", ErrInvalidConfig, c.SignatureTolerance)
	}
	if _, err := ParseSecret(c.Secret); err != nil {
		return fmt.Errorf("%w: Secret: %v", ErrInvalidConfig, err)
	}
	if _, err := ParseSecret(c.PreviousSecret); err != nil {
		return fmt.Errorf("%w: PreviousSecret: %v", ErrInvalidConfig, err)
	}
	// A previous value alone would let the old secret in while the new one is refused: a half-done
	// rotation, not a configuration.
	if c.PreviousToken != "" && c.Token == "" {
		return fmt.Errorf("%w: PreviousToken: set without Token", ErrInvalidConfig)
	}
	if c.PreviousSecret != "" && c.Secret == "" {
		return fmt.Errorf("%w: PreviousSecret: set without Secret", ErrInvalidConfig)
	}
	for _, m := range c.Modalities {
		if m == "" || m == contract.ModalityUnknown || strings.ContainsAny(m, ".*>/ \t\r\n") {
			return fmt.Errorf("%w: Modalities: %q is not a usable modality", ErrInvalidConfig, m)
		}
	}
	return nil
}
