package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestConfigDefaults(t *testing.T) {
	cfg, err := parseConfig(map[string]string{"BRIDGE_API_URL": "http://127.0.0.1:1/api/v1", "BRIDGE_API_KEY": "k"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATSListen != "127.0.0.1:4222" || cfg.HTTPAddr != ":8080" || cfg.APIRPM != 60 || cfg.MaxBody != 64<<10 ||
		cfg.DuplicateWindow != 20*time.Minute || cfg.TimeoutVideo != 15*time.Minute || len(cfg.Roles) != 4 {
		t.Errorf("unexpected defaults: %+v", cfg)
	}
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	base := map[string]string{"BRIDGE_API_URL": "http://127.0.0.1:1/api/v1", "BRIDGE_API_KEY": "k"}
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"bad duration", map[string]string{"BRIDGE_POLL_INTERVAL": "soon"}, `BRIDGE_POLL_INTERVAL: invalid value`},
		{"bad int", map[string]string{"BRIDGE_API_RPM": "many"}, `BRIDGE_API_RPM: invalid value`},
		{"zero rpm", map[string]string{"BRIDGE_API_RPM": "0"}, `BRIDGE_API_RPM: must be at least 1`},
		{"bad size", map[string]string{"BRIDGE_MAX_BODY": "huge"}, `BRIDGE_MAX_BODY: invalid value`},
		{"bad sync", map[string]string{"BRIDGE_NATS_SYNC": "sometimes"}, `BRIDGE_NATS_SYNC: invalid value`},
		{"unknown role", map[string]string{"BRIDGE_ROLES": "ingest,verfy"}, `BRIDGE_ROLES: unknown role "verfy"`},
		{"api url missing", map[string]string{"BRIDGE_API_URL": ""}, `BRIDGE_API_URL: required by the verify`},
		{"api key missing", map[string]string{"BRIDGE_API_KEY": ""}, `BRIDGE_API_KEY: required with BRIDGE_API_URL`},
		{"bad api url", map[string]string{"BRIDGE_API_URL": "ftp://x"}, `BRIDGE_API_URL: want an http or https URL`},
		{"window too short", map[string]string{"BRIDGE_DUPLICATE_WINDOW": "10m"}, `BRIDGE_DUPLICATE_WINDOW: 10m0s must be longer than the longest job deadline`},
		// Short retentions are accepted (a whole job life in a trial), down to the duplicate window.
		{"retention too short", map[string]string{"BRIDGE_RETENTION": "15m"}, `BRIDGE_RETENTION: 15m0s is too short: the least it accepts is BRIDGE_DUPLICATE_WINDOW, 20m0s`},
		{"replicas", map[string]string{"BRIDGE_REPLICAS": "7"}, `BRIDGE_REPLICAS: must be 1 to 5`},
		{"log format", map[string]string{"BRIDGE_LOG_FORMAT": "xml"}, `BRIDGE_LOG_FORMAT: want json or console`},
		{"tls pair", map[string]string{"BRIDGE_TLS_CERT_FILE": "c.pem"}, `BRIDGE_TLS_CERT_FILE: BRIDGE_TLS_CERT_FILE and BRIDGE_TLS_KEY_FILE go together`},
		{"namespace upper case", map[string]string{"BRIDGE_NAMESPACE": "Prod"}, `BRIDGE_NAMESPACE: namespace must be 1 to 32 of a-z, 0-9 and _; got "Prod"`},
		{"namespace dot", map[string]string{"BRIDGE_NAMESPACE": "prod.eu"}, `BRIDGE_NAMESPACE: namespace must be 1 to 32 of a-z, 0-9 and _; got "prod.eu"`},
		{"namespace too long", map[string]string{"BRIDGE_NAMESPACE": strings.Repeat("a", 33)}, `BRIDGE_NAMESPACE: namespace must be 1 to 32`},
		{"budget account", map[string]string{"BRIDGE_BUDGET_ACCOUNT": "a.b"}, `BRIDGE_BUDGET_ACCOUNT: want 1 to 64 of A-Z, a-z, 0-9, _ and -; got "a.b"`},
		{"shutdown delay", map[string]string{"BRIDGE_SHUTDOWN_DELAY": "2m"}, `BRIDGE_SHUTDOWN_DELAY: must be between 0s and 1m0s; got 2m0s`},
		// The slow lane must drain before retention could age a waiting webhook out (issue 11): 10,000 at
		// 6/min take about 27h47m, more than half of a 24h retention.
		// A rotation keeps the old value as _PREVIOUS next to the new one, never alone.
		{"previous token alone", map[string]string{"BRIDGE_WEBHOOK_TOKEN_PREVIOUS": "old-token"},
			`BRIDGE_WEBHOOK_TOKEN_PREVIOUS: set without BRIDGE_WEBHOOK_TOKEN: a rotation puts the new value in BRIDGE_WEBHOOK_TOKEN and keeps the old one here`},
		{"previous secret alone", map[string]string{"BRIDGE_WEBHOOK_SECRET_PREVIOUS": "whsec_b2xkLXNlY3JldA=="},
			`BRIDGE_WEBHOOK_SECRET_PREVIOUS: set without BRIDGE_WEBHOOK_SECRET: a rotation puts the new value in BRIDGE_WEBHOOK_SECRET and keeps the old one here`},
		{"previous secret not base64", map[string]string{"BRIDGE_WEBHOOK_SECRET": "whsec_bmV3LXNlY3JldA==", "BRIDGE_WEBHOOK_SECRET_PREVIOUS": "whsec_%%%old%%%"},
			`BRIDGE_WEBHOOK_SECRET_PREVIOUS: a whsec_ secret must be followed by standard base64`},
		{"unknown backlog outlives retention", map[string]string{"BRIDGE_RETENTION": "24h", "BRIDGE_UNKNOWN_BACKLOG": "10000"},
			`BRIDGE_UNKNOWN_BACKLOG: 10000 webhooks at 6/min take 27h47m0s to verify`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tt.env {
				env[k] = v
			}
			_, err := parseConfig(env)
			if err == nil {
				t.Fatalf("want an error containing %q", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if !strings.HasPrefix(lines[0], tt.want) {
				t.Errorf("error %q, want first line starting %q", err, tt.want)
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, envPrefix) {
					t.Errorf("line %q does not start with the variable name", l)
				}
			}
		})
	}
}

func TestIngestOnlyNeedsNoUpstream(t *testing.T) {
	if _, err := parseConfig(map[string]string{"BRIDGE_ROLES": "ingest"}); err != nil {
		t.Fatalf("ingest alone must not need BRIDGE_API_URL: %v", err)
	}
}

// TestSecretsFromFiles reads BRIDGE_API_KEY, BRIDGE_WEBHOOK_TOKEN and BRIDGE_WEBHOOK_SECRET from the files
// their _FILE variables name (as Docker and Kubernetes mount secrets), trimmed of the trailing newline.
func TestSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := map[string]string{
		"BRIDGE_API_URL":             "http://127.0.0.1:1/api/v1",
		"BRIDGE_API_KEY_FILE":        write("key", "sk_from_file\n"),
		"BRIDGE_WEBHOOK_TOKEN_FILE":  write("token", "  tok123\n"),
		"BRIDGE_WEBHOOK_SECRET_FILE": write("secret", "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n"),
	}
	cfg, err := parseConfig(env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.APIKey != "sk_from_file" || cfg.WebhookToken != "tok123" || cfg.WebhookSecret != "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=" {
		t.Errorf("secrets %q %q %q", cfg.APIKey, cfg.WebhookToken, cfg.WebhookSecret)
	}
	if cfg.APIKeyFile != "" || cfg.WebhookTokenFile != "" || cfg.WebhookSecretFile != "" {
		t.Error("the file contents stay in the *File fields; want them moved")
	}

	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"both", map[string]string{"BRIDGE_API_KEY": "k"}, "BRIDGE_API_KEY_FILE: set BRIDGE_API_KEY or BRIDGE_API_KEY_FILE, not both"},
		{"missing file", map[string]string{"BRIDGE_API_KEY_FILE": filepath.Join(dir, "nope")}, "BRIDGE_API_KEY_FILE: cannot read the file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := maps.Clone(env)
			maps.Copy(e, tt.env)
			_, err := parseConfig(e)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to start with %q", err, tt.want)
			}
		})
	}
}

// TestRotationSecretsFromFiles reads the previous webhook token and secret from their _FILE variables as
// the current ones are read, and refuses a variable and its file together.
func TestRotationSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := map[string]string{
		"BRIDGE_ROLES": "ingest", "BRIDGE_WEBHOOK_TOKEN": "new-token", "BRIDGE_WEBHOOK_SECRET": "whsec_bmV3LXNlY3JldA==",
		"BRIDGE_WEBHOOK_TOKEN_PREVIOUS_FILE":  write("token", "old-token\n"),
		"BRIDGE_WEBHOOK_SECRET_PREVIOUS_FILE": write("secret", " whsec_b2xkLXNlY3JldA==\n"),
	}
	cfg, err := parseConfig(env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.WebhookTokenPrevious != "old-token" || cfg.WebhookSecretPrevious != "whsec_b2xkLXNlY3JldA==" {
		t.Errorf("previous %q %q, want old-token whsec_b2xkLXNlY3JldA==", cfg.WebhookTokenPrevious, cfg.WebhookSecretPrevious)
	}
	env["BRIDGE_WEBHOOK_TOKEN_PREVIOUS"] = "old-token"
	const want = "BRIDGE_WEBHOOK_TOKEN_PREVIOUS_FILE: set BRIDGE_WEBHOOK_TOKEN_PREVIOUS or BRIDGE_WEBHOOK_TOKEN_PREVIOUS_FILE, not both"
	if _, err := parseConfig(env); err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// TestLogTimesHaveMilliseconds: log lines carry RFC 3339 times with milliseconds, set on our logger
// alone (zerolog's package-level format is left as it is).
func TestLogTimesHaveMilliseconds(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger("info", "json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("hello")
	var line struct {
		Time string `json:"time"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`).MatchString(line.Time) {
		t.Errorf("time %q, want RFC 3339 with milliseconds in UTC", line.Time)
	}
	if zerolog.TimeFieldFormat != time.RFC3339 {
		t.Errorf("zerolog.TimeFieldFormat changed to %q", zerolog.TimeFieldFormat)
	}
}
