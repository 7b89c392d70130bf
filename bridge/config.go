package bridge

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/ingest"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/verify"
)

// Role names for BRIDGE_ROLES.
const (
	RoleIngest    = "ingest"
	RoleVerify    = "verify"
	RoleReconcile = "reconcile"
	RoleSubmit    = "submit"
)

// MaxShutdownDelay is the longest BRIDGE_SHUTDOWN_DELAY: load balancers take seconds, not minutes, to stop
// routing to a terminating process.
const MaxShutdownDelay = time.Minute

// Names are the names of everything the bridge owns, in its namespace (BRIDGE_NAMESPACE); Validate
// checked it.
func (c *Config) Names() contract.Names {
	n, err := contract.NamesFor(c.Namespace)
	if err != nil {
		return contract.Default
	}
	return n
}

// Account names the upstream account in the shared budget: BRIDGE_BUDGET_ACCOUNT, else a hash of the API
// key ([budget.AccountOf]).
func (c *Config) Account() string {
	if c.BudgetAccount != "" {
		return c.BudgetAccount
	}
	return budget.AccountOf(c.APIKey)
}

// allRoles are the roles in BRIDGE_ROLES' default order.
var allRoles = [...]string{RoleIngest, RoleVerify, RoleReconcile, RoleSubmit}

// Config is the whole process configuration. Its tags name the BRIDGE_* environment variables (env,
// with [EnvPrefix]), their defaults (envDefault) and meaning (help); [ConfigFromEnv] parses an environment
// into it, and docs/CONFIG.md is generated from it ([WriteConfigTable]). A Config made in code
// gets no defaults from the tags: start from [DefaultConfig], or set every field.
type Config struct {
	Namespace string `env:"NAMESPACE" help:"prefixes everything the bridge owns, so that several bridges share one NATS account: subjects ns.webhooks.>, ns.results.>, ns.moderate.>, ...; streams, buckets and consumers NS_WEBHOOKS, NS_JOBS, ...; the service ns_moderation. a-z, 0-9 and _, at most 32; empty keeps DESIGN.md's names. The upstream budget is shared by every namespace on one upstream account"`

	NATSURL     string       `env:"NATS_URL" help:"external NATS servers, comma-separated; empty starts an embedded nats-server with JetStream"`
	NATSCreds   string       `env:"NATS_CREDS" help:"NATS credentials file for an external cluster"`
	NATSTLSCert string       `env:"NATS_TLS_CERT" help:"client certificate for NATS TLS"`
	NATSTLSKey  string       `env:"NATS_TLS_KEY" help:"client key for NATS TLS"`
	NATSTLSCA   string       `env:"NATS_TLS_CA" help:"CA bundle to verify the NATS servers"`
	JSDomain    string       `env:"JS_DOMAIN" help:"the JetStream domain the bridge's streams and buckets live in (leaf-node and hub deployments); with the embedded server, also that server's domain"`
	Provision   Provisioning `env:"PROVISION" envDefault:"true" help:"create or update the streams and buckets at start-up; false: only check that each exists with a configuration the bridge can work with, and stop with one line naming what is missing or different (operators who own stream configuration run bridge provision, or create them as docs/DESIGN.md says)"`
	NATSConfig  string       `env:"NATS_CONFIG" help:"a nats-server configuration file for the embedded server: its users, nkeys, accounts, TLS and limits (the listener, JetStream and store stay the bridge's). Needed to listen beyond loopback: anonymous clients are then refused, and passwords need TLS. On loopback without it, clients without credentials get the downstream role (docs/SECURITY.md)"`
	NATSAccount string       `env:"NATS_ACCOUNT" help:"with a BRIDGE_NATS_CONFIG that defines accounts: the account of the bridge's streams, its own user, the ops user and anonymous clients"`
	NATSListen  string       `env:"NATS_LISTEN" envDefault:"127.0.0.1:4222" help:"client address of the embedded nats-server, for downstream services and the nats CLI"`
	DataDir     string       `env:"DATA_DIR" envDefault:"./data" help:"embedded JetStream store"`
	NATSSync    Sync         `env:"NATS_SYNC" help:"embedded JetStream disk sync: a duration, or always to sync every write (about 1/6 of the throughput); empty keeps the server default (2m)"`

	HTTPAddr    string `env:"HTTP_ADDR" envDefault:":8080" help:"webhook listener; also health and metrics unless BRIDGE_ADMIN_ADDR is set"`
	AdminAddr   string `env:"ADMIN_ADDR" help:"when set, a second listener (plain HTTP) for /metrics, /healthz and /readyz, which BRIDGE_HTTP_ADDR then no longer serves: it serves webhooks only"`
	Pprof       bool   `env:"PPROF" help:"serve Go's runtime profiles (net/http/pprof) under /debug/pprof/ on BRIDGE_ADMIN_ADDR, which it requires so that they stay off the webhook port; a CPU profile may last up to 5 minutes"`
	TLSCertFile string `env:"TLS_CERT_FILE" help:"certificate for HTTPS on the webhook listener"`
	TLSKeyFile  string `env:"TLS_KEY_FILE" help:"key for HTTPS on the webhook listener"`
	// ShutdownDelay keeps the listener serving after SIGTERM, readiness already off.
	ShutdownDelay time.Duration `env:"SHUTDOWN_DELAY" envDefault:"0s" help:"on SIGTERM, /readyz answers 503 at once and the webhook listener keeps serving this long (answers close their connections) before it closes and the roles drain, so a load balancer that still routes here for a few seconds loses no webhook; Kubernetes: 5s, with terminationGracePeriodSeconds covering it plus about 25s of drain; at most 1m"`

	APIURL string `env:"API_URL" help:"upstream base URL including /api/v1; required by the verify, reconcile and submit roles"`
	APIKey string `env:"API_KEY" help:"upstream bearer key (never logged); required with BRIDGE_API_URL"`
	// APIKeyFile holds the content of the file BRIDGE_API_KEY_FILE names (caarlos0/env's file option);
	// [Config.Validate] moves it, trimmed, into APIKey.
	APIKeyFile    string `env:"API_KEY_FILE,file" help:"a file holding BRIDGE_API_KEY (a Docker or Kubernetes secret), instead of the variable; surrounding whitespace is trimmed"`
	APIContract   string `env:"API_CONTRACT" envDefault:"auto" help:"the upstream's contract: v1 (documented: /moderate/prompt, image_url, ...), v2 (newer: /moderate/text, image, audio, signed and retried webhooks) or auto (decide at the first submission: a 404 or 410 on /moderate/prompt or /moderate/chat creates no job, so switch to v2 and resend there; no job is billed to find out)"`
	APIRPM        RPM    `env:"API_RPM" envDefault:"60" help:"the upstream account's request limit per minute, shared by every bridge process on the same NATS (they coordinate through the BRIDGE_BUDGET bucket); give every process the same value; auto learns it from the upstream's x-ratelimit-limit and paces by x-ratelimit-remaining and -reset, starting at 10 until the first answer"`
	BudgetAccount string `env:"BUDGET_ACCOUNT" help:"names the upstream account in the shared budget bucket BRIDGE_BUDGET, whose keys are <account>.account and <account>.proc.<process>: every bridge process (of any namespace) with the same account shares one budget; default a hash of BRIDGE_API_KEY (its SHA-256's first 16 hex digits), so bridges that use one API key share it and others do not. A-Z, a-z, 0-9, _ and -, at most 64"`
	APIBurst      int    `env:"API_BURST" help:"requests the account-wide budget may spend at once; default 5 s worth of BRIDGE_API_RPM"`
	// UnknownJobRPM is nil when unset: the default depends on APIRPM.
	UnknownJobRPM *int `env:"UNKNOWN_JOB_RPM" help:"the unknown-job budget: upstream calls per minute, for the whole account, for webhooks of jobs without a record and without provenance, list pages included; 0 never verifies them; default a tenth of BRIDGE_API_RPM, at least 1 (docs/DESIGN.md, Unknown jobs)"`
	// UnknownBacklog is nil when unset: the default depends on the unknown-job budget and the retention.
	UnknownBacklog *int `env:"UNKNOWN_BACKLOG" help:"without BRIDGE_WEBHOOK_TOKEN or BRIDGE_WEBHOOK_SECRET, webhooks of untracked jobs are refused (503) while this many wait in the slow lane; it must drain at BRIDGE_UNKNOWN_JOB_RPM within half of BRIDGE_RETENTION; 0 never refuses; default 10000, or less when the budget could not drain that (docs/DESIGN.md, Unknown jobs)"`
	Adopt          bool `env:"ADOPT" envDefault:"false" help:"every job of the account is the bridge's business: the reconciler adopts the account's jobs that have no record and tracks them like its own; keep it off when other integrations share the account (docs/DESIGN.md, Unknown jobs)"`

	PublicURL     string `env:"PUBLIC_URL" help:"base URL the upstream can reach this bridge at; submissions set webhook_url to <it>/webhook/<modality>. Empty is poll-only: no webhooks, and the reconciler learns results from the export; every process of a deployment must agree"`
	WebhookToken  string `env:"WEBHOOK_TOKEN" help:"when set, webhooks must carry it as ?token= (constant-time check)"`
	WebhookSecret string `env:"WEBHOOK_SECRET" help:"when set, webhooks must carry a valid Standard Webhooks signature (webhook-id, webhook-timestamp within 5 min, webhook-signature), as the newer upstream contract signs them, else 401; whsec_<base64> or the raw secret; never logged"`
	// WebhookTokenFile and WebhookSecretFile hold the content of their files, as APIKeyFile does.
	WebhookTokenFile  string `env:"WEBHOOK_TOKEN_FILE,file" help:"a file holding BRIDGE_WEBHOOK_TOKEN, instead of the variable"`
	WebhookSecretFile string `env:"WEBHOOK_SECRET_FILE,file" help:"a file holding BRIDGE_WEBHOOK_SECRET, instead of the variable"`
	// WebhookTokenPrevious and WebhookSecretPrevious are the old values during a rotation, accepted as well
	// as the current ones (docs/OPERATIONS.md, Rotating secrets); their *File fields are as APIKeyFile.
	WebhookTokenPrevious      string `env:"WEBHOOK_TOKEN_PREVIOUS" help:"during a rotation, the old BRIDGE_WEBHOOK_TOKEN: ?token= may be either (constant-time check), since jobs submitted before carry the old one in their webhook_url for their whole life; submissions use BRIDGE_WEBHOOK_TOKEN; needs it; drop it once the longest job deadline plus BRIDGE_WEBHOOK_GRACE (v2: plus the upstream's retries, about 5 h) has passed (docs/OPERATIONS.md, Rotating secrets); never logged"`
	WebhookSecretPrevious     string `env:"WEBHOOK_SECRET_PREVIOUS" help:"during a rotation, the old BRIDGE_WEBHOOK_SECRET: a webhook is valid when one of its v1 signatures matches either (retries of webhooks signed before the upstream switched carry the old one); needs BRIDGE_WEBHOOK_SECRET; drop it once the upstream's retries after its switch are over; never logged"`
	WebhookTokenPreviousFile  string `env:"WEBHOOK_TOKEN_PREVIOUS_FILE,file" help:"a file holding BRIDGE_WEBHOOK_TOKEN_PREVIOUS, instead of the variable"`
	WebhookSecretPreviousFile string `env:"WEBHOOK_SECRET_PREVIOUS_FILE,file" help:"a file holding BRIDGE_WEBHOOK_SECRET_PREVIOUS, instead of the variable"`

	TimeoutPrompt time.Duration `env:"TIMEOUT_PROMPT" envDefault:"5m" help:"deadline of prompt jobs"`
	TimeoutImage  time.Duration `env:"TIMEOUT_IMAGE" envDefault:"5m" help:"deadline of image jobs"`
	TimeoutVideo  time.Duration `env:"TIMEOUT_VIDEO" envDefault:"15m" help:"deadline of video jobs"`
	TimeoutChat   time.Duration `env:"TIMEOUT_CHAT" envDefault:"5m" help:"deadline of chat jobs"`
	TimeoutText   time.Duration `env:"TIMEOUT_TEXT" help:"deadline of text jobs (v2 contract); default BRIDGE_TIMEOUT_PROMPT"`
	TimeoutAudio  time.Duration `env:"TIMEOUT_AUDIO" help:"deadline of audio jobs (v2 contract); default BRIDGE_TIMEOUT_VIDEO"`
	PollInterval  time.Duration `env:"POLL_INTERVAL" envDefault:"30s" help:"reconciler sweep period"`
	WebhookGrace  time.Duration `env:"WEBHOOK_GRACE" envDefault:"10s" help:"how long after a job leaves the in-flight list its webhook may still come before polling fetches it"`

	MaxBody         ByteSize      `env:"MAX_BODY" envDefault:"64KiB" help:"largest webhook body accepted"`
	DuplicateWindow time.Duration `env:"DUPLICATE_WINDOW" envDefault:"20m" help:"JetStream duplicate window of WEBHOOKS, RESULTS and SLOWLANE; must exceed the longest job deadline"`
	Retention       time.Duration `env:"RETENTION" envDefault:"168h" help:"how long WEBHOOKS, RESULTS and DEADLETTER keep messages (for replay), and the longest a webhook waits in SLOWLANE"`
	StreamMaxBytes  ByteSize      `env:"STREAM_MAX_BYTES" help:"caps the size of each of WEBHOOKS, RESULTS, DEADLETTER and SLOWLANE; when full, new publishes are refused (ingest answers 503) instead of old messages being dropped; empty is unlimited"`
	Roles           []string      `env:"ROLES" envSeparator:"," envDefault:"ingest,verify,reconcile,submit" help:"comma list of ingest, verify, reconcile, submit"`
	Replicas        int           `env:"REPLICAS" envDefault:"1" help:"stream and KV replicas (3 on a cluster)"`

	LogLevel  string `env:"LOG_LEVEL" envDefault:"info" help:"zerolog level: trace, debug, info, warn, error"`
	LogFormat string `env:"LOG_FORMAT" envDefault:"json" help:"json or console"`
}

// RPM is BRIDGE_API_RPM: requests per minute, or [RPMAuto].
type RPM int

// RPMAuto is BRIDGE_API_RPM=auto: the budget learns the account's limit from the upstream's headers.
const RPMAuto RPM = -1

// UnmarshalText parses a positive whole number or "auto".
func (r *RPM) UnmarshalText(b []byte) error {
	v := strings.TrimSpace(string(b))
	if strings.EqualFold(v, "auto") {
		*r = RPMAuto
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("want requests per minute such as 60, or auto; got %q", v)
	}
	*r = RPM(n)
	return nil
}

// String is the number, or "auto".
func (r RPM) String() string {
	if r == RPMAuto {
		return "auto"
	}
	return strconv.Itoa(int(r))
}

// Provisioning is BRIDGE_PROVISION: whether start-up creates or updates the streams and buckets (true,
// and the zero value, so that a Config made in code provisions) or only checks them ([CheckOnly]).
type Provisioning struct{ checkOnly bool }

// CheckOnly is BRIDGE_PROVISION=false: start-up checks the streams and buckets and changes nothing.
var CheckOnly = Provisioning{checkOnly: true}

// UnmarshalText parses a boolean: true provisions, false only checks.
func (p *Provisioning) UnmarshalText(b []byte) error {
	v, err := strconv.ParseBool(string(b))
	if err != nil {
		return fmt.Errorf("want true or false; got %q", b)
	}
	p.checkOnly = !v
	return nil
}

// CheckOnly reports whether start-up only checks the streams and buckets.
func (p Provisioning) CheckOnly() bool { return p.checkOnly }

// Sync is BRIDGE_NATS_SYNC: a duration, or "always".
type Sync struct {
	Interval time.Duration
	Always   bool
}

// UnmarshalText parses a duration or "always".
func (s *Sync) UnmarshalText(b []byte) error {
	v := strings.TrimSpace(string(b))
	switch {
	case v == "":
		*s = Sync{}
	case strings.EqualFold(v, "always"):
		*s = Sync{Always: true}
	default:
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("want a positive duration such as 1s, or always; got %q", v)
		}
		*s = Sync{Interval: d}
	}
	return nil
}

// ByteSize is a size such as 65536, 64KiB, 1MiB or 64KB.
type ByteSize int64

// UnmarshalText parses a byte size with an optional KB/KiB/MB/MiB unit.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v := strings.TrimSpace(string(text))
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"KB", 1000}, {"MB", 1000 * 1000}, {"K", 1 << 10}, {"M", 1 << 20}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(strings.ToUpper(v), strings.ToUpper(u.suffix)) {
			v, mult = strings.TrimSpace(v[:len(v)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("want a positive size such as 65536 or 64KiB; got %q", string(text))
	}
	*b = ByteSize(n * mult)
	return nil
}

// Has reports whether role r is configured.
func (c *Config) Has(r string) bool { return slices.Contains(c.Roles, r) }

// needsUpstream reports whether any configured role calls the upstream.
func (c *Config) needsUpstream() bool {
	return c.Has(RoleVerify) || c.Has(RoleReconcile) || c.Has(RoleSubmit)
}

// Validate checks ranges and combinations, after trimming the role names. Each problem is one line that
// starts with its variable.
func (c *Config) Validate() error {
	var errs []error
	bad := func(name, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", EnvPrefix, name, fmt.Sprintf(format, a...)))
	}
	c.secretsFromFiles(bad)
	if _, err := contract.NamesFor(c.Namespace); err != nil {
		bad("NAMESPACE", "%v", err)
	}
	for i, r := range c.Roles {
		c.Roles[i] = strings.TrimSpace(r)
		if !slices.Contains(allRoles[:], c.Roles[i]) {
			bad("ROLES", "unknown role %q; want a comma list of %s", r, strings.Join(allRoles[:], ", "))
		}
	}
	if len(c.Roles) == 0 {
		bad("ROLES", "no role given; want a comma list of %s", strings.Join(allRoles[:], ", "))
	}
	c.validateUpstream(bad)
	if _, err := ingest.ParseSecret(c.WebhookSecret); err != nil {
		bad("WEBHOOK_SECRET", "%v", err)
	}
	if _, err := ingest.ParseSecret(c.WebhookSecretPrevious); err != nil {
		bad("WEBHOOK_SECRET_PREVIOUS", "%v", err)
	}
	c.validateRotation(bad)
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("TLS_CERT_FILE", "BRIDGE_TLS_CERT_FILE and BRIDGE_TLS_KEY_FILE go together")
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		bad("NATS_TLS_CERT", "BRIDGE_NATS_TLS_CERT and BRIDGE_NATS_TLS_KEY go together")
	}
	c.validateDurations(bad)
	if c.Replicas < 1 || c.Replicas > 5 {
		bad("REPLICAS", "must be 1 to 5; got %d", c.Replicas)
	}
	if c.MaxBody > 8<<20 {
		bad("MAX_BODY", "%d bytes is over the 8MiB ceiling", c.MaxBody)
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		bad("LOG_FORMAT", "want json or console; got %q", c.LogFormat)
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// validateUpstream checks the upstream's settings: URL, key, contract and budget.
func (c *Config) validateUpstream(bad func(name, format string, a ...any)) {
	if c.needsUpstream() {
		if c.APIURL == "" {
			bad("API_URL", "required by the verify, reconcile and submit roles (or set BRIDGE_ROLES=ingest)")
		} else if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("API_URL", "want an http or https URL such as https://api.evershield.ai/api/v1; got %q", c.APIURL)
		}
		if c.APIKey == "" && c.APIURL != "" {
			bad("API_KEY", "required with BRIDGE_API_URL")
		}
	}
	if a := c.BudgetAccount; a != "" && (len(a) > 64 || strings.Trim(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != "") {
		bad("BUDGET_ACCOUNT", "want 1 to 64 of A-Z, a-z, 0-9, _ and -; got %q", a)
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("PUBLIC_URL", "want an http or https base URL; got %q", c.PublicURL)
		}
	}
	if c.Pprof && c.AdminAddr == "" {
		bad("PPROF", "needs BRIDGE_ADMIN_ADDR: profiles are served on the admin listener only, never on the webhook port")
	}
	if c.APIRPM < 1 && c.APIRPM != RPMAuto {
		bad("API_RPM", "must be at least 1, or auto; got %d", c.APIRPM)
	}
	switch c.APIContract {
	case "": // a Config built in Go rather than from the environment: the variable's default
		c.APIContract = contract.ContractAuto
	case contract.ContractV1, contract.ContractV2, contract.ContractAuto:
	default:
		bad("API_CONTRACT", "want v1, v2 or auto; got %q", c.APIContract)
	}
	if c.APIBurst < 0 {
		bad("API_BURST", "must not be negative; got %d", c.APIBurst)
	}
	if c.UnknownBacklog != nil && *c.UnknownBacklog < 0 {
		bad("UNKNOWN_BACKLOG", "must not be negative; got %d", *c.UnknownBacklog)
	}
	// The slow lane must drain its whole backlog, one unknown-job call each at worst, before SLOWLANE's
	// retention could age a waiting webhook out unverified.
	if rpm := c.UnknownRPM(); rpm > 0 && c.UnknownBacklog != nil && *c.UnknownBacklog > 0 && c.Retention > 0 {
		if drain := time.Duration(float64(*c.UnknownBacklog) / float64(rpm) * float64(time.Minute)); drain >= c.Retention/2 {
			bad("UNKNOWN_BACKLOG", "%d webhooks at %d/min take %v to verify, more than half of BRIDGE_RETENTION (%v): "+
				"a waiting webhook could age out unverified; lower it or raise BRIDGE_UNKNOWN_JOB_RPM or BRIDGE_RETENTION",
				*c.UnknownBacklog, rpm, drain.Round(time.Minute), c.Retention)
		}
	}
	if c.UnknownJobRPM != nil && *c.UnknownJobRPM < 0 {
		bad("UNKNOWN_JOB_RPM", "must not be negative; got %d", *c.UnknownJobRPM)
	}
}

// validateDurations checks the deadlines, intervals and windows, and how they must relate.
func (c *Config) validateDurations(bad func(name, format string, a ...any)) {
	durations := map[string]time.Duration{
		"POLL_INTERVAL": c.PollInterval, "DUPLICATE_WINDOW": c.DuplicateWindow, "RETENTION": c.Retention,
	}
	for m, d := range c.timeouts() {
		durations[timeoutVar(m)] = d
	}
	for name, d := range durations {
		if d <= 0 {
			bad(name, "must be a positive duration; got %v", d)
		}
	}
	if c.WebhookGrace < 0 {
		bad("WEBHOOK_GRACE", "must not be negative; got %v", c.WebhookGrace)
	}
	if c.ShutdownDelay < 0 || c.ShutdownDelay > MaxShutdownDelay {
		bad("SHUTDOWN_DELAY", "must be between 0s and %v; got %v", MaxShutdownDelay, c.ShutdownDelay)
	}
	if longest := c.longestDeadline(); c.DuplicateWindow <= longest {
		bad("DUPLICATE_WINDOW", "%v must be longer than the longest job deadline (%v)", c.DuplicateWindow, longest)
	}
	if c.Retention < c.DuplicateWindow {
		bad("RETENTION", "%v is too short: the least it accepts is BRIDGE_DUPLICATE_WINDOW, %v (a result must stay replayable as long as it is deduplicated)", c.Retention, c.DuplicateWindow)
	}
}

// validateRotation refuses a previous webhook token or secret without a current one: the old value would
// be let in and the new one not, a rotation half done.
func (c *Config) validateRotation(bad func(name, format string, a ...any)) {
	for _, r := range [...]struct{ name, current, previous string }{
		{"WEBHOOK_TOKEN", c.WebhookToken, c.WebhookTokenPrevious},
		{"WEBHOOK_SECRET", c.WebhookSecret, c.WebhookSecretPrevious},
	} {
		if r.previous != "" && r.current == "" {
			bad(r.name+"_PREVIOUS", "set without %s%s: a rotation puts the new value in %s%s and keeps the old one here",
				EnvPrefix, r.name, EnvPrefix, r.name)
		}
	}
}

// secretsFromFiles moves the content of each BRIDGE_*_FILE secret, trimmed, into its variable's field.
// Giving both the variable and its file is an error: which one wins would be a guess.
func (c *Config) secretsFromFiles(bad func(name, format string, a ...any)) {
	for _, s := range []struct {
		name        string
		value, file *string
	}{
		{"API_KEY", &c.APIKey, &c.APIKeyFile},
		{"WEBHOOK_TOKEN", &c.WebhookToken, &c.WebhookTokenFile},
		{"WEBHOOK_SECRET", &c.WebhookSecret, &c.WebhookSecretFile},
		{"WEBHOOK_TOKEN_PREVIOUS", &c.WebhookTokenPrevious, &c.WebhookTokenPreviousFile},
		{"WEBHOOK_SECRET_PREVIOUS", &c.WebhookSecretPrevious, &c.WebhookSecretPreviousFile},
	} {
		if *s.file == "" {
			continue
		}
		if *s.value != "" {
			bad(s.name+"_FILE", "set %s%s or %s%s_FILE, not both", EnvPrefix, s.name, EnvPrefix, s.name)
		}
		*s.value, *s.file = strings.TrimSpace(*s.file), ""
	}
}

// UnknownRPM is the verifier's UnknownRPM: BRIDGE_UNKNOWN_JOB_RPM, 0 meaning never
// ([verify.UnknownOff]), unset a tenth of BRIDGE_API_RPM (at least 1; with auto, a tenth of the
// documented 60).
func (c *Config) UnknownRPM() int {
	switch {
	case c.UnknownJobRPM == nil && c.APIRPM == RPMAuto:
		return 6
	case c.UnknownJobRPM == nil:
		return max(1, int(c.APIRPM)/10)
	case *c.UnknownJobRPM == 0:
		return verify.UnknownOff
	}
	return *c.UnknownJobRPM
}

// UnknownBacklogLimit is the backlog of webhooks without provenance past which ingest refuses more: the
// configured value, else 10,000, lowered so that the unknown-job budget drains it within 90% of half the
// retention; 0 never refuses.
func (c *Config) UnknownBacklogLimit() int {
	if c.UnknownBacklog != nil {
		return *c.UnknownBacklog
	}
	limit := 10_000
	if rpm := c.UnknownRPM(); rpm > 0 && c.Retention > 0 {
		limit = min(limit, int(0.9*float64(rpm)*(c.Retention/2).Minutes()))
	}
	return max(limit, 1)
}

func (c *Config) longestDeadline() time.Duration {
	var longest time.Duration
	for _, d := range c.timeouts() {
		longest = max(longest, d)
	}
	return longest
}

// timeouts maps each modality of both contracts ([contract.ModalitiesFor] auto) to its deadline,
// BRIDGE_TIMEOUT_<MODALITY>. The v2 modalities default to their v1 kin (text to prompt, audio to
// video), so that a deployment that tuned the v1 deadlines and the duplicate window to them stays valid.
func (c *Config) timeouts() map[string]time.Duration {
	return map[string]time.Duration{
		"prompt": c.TimeoutPrompt, "image": c.TimeoutImage, "video": c.TimeoutVideo, "chat": c.TimeoutChat,
		"text": cmp.Or(c.TimeoutText, c.TimeoutPrompt), "audio": cmp.Or(c.TimeoutAudio, c.TimeoutVideo),
	}
}

// timeoutVar is the variable (without the prefix) of a modality's deadline: TIMEOUT_<MODALITY>.
func timeoutVar(modality string) string { return "TIMEOUT_" + strings.ToUpper(modality) }

// deadlines are the job deadlines the roles use: BRIDGE_TIMEOUT_*, and prompt's for other modalities.
func (c *Config) deadlines() jobs.Deadlines {
	return jobs.Deadlines{ByModality: c.timeouts(), Default: c.TimeoutPrompt}
}
