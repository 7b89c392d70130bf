package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	bjs "github.com/evershield/bridge/jetstream"
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
		{"replicas", map[string]string{"BRIDGE_REPLICAS": "7"}, `BRIDGE_REPLICAS: must be 1 to 5`},
		{"log format", map[string]string{"BRIDGE_LOG_FORMAT": "xml"}, `BRIDGE_LOG_FORMAT: want json or console`},
		{"tls pair", map[string]string{"BRIDGE_TLS_CERT_FILE": "c.pem"}, `BRIDGE_TLS_CERT_FILE: BRIDGE_TLS_CERT_FILE and BRIDGE_TLS_KEY_FILE go together`},
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

// TestReadmeConfigTableMatchesStruct keeps README.md's configuration table and Config in step: every
// variable appears once, with its default.
func TestReadmeConfigTableMatchesStruct(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(BRIDGE_[A-Z0-9_]+)` \\| (.*) \\| (.*) \\|$")
	inReadme := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		inReadme[m[1]] = strings.Trim(strings.TrimSpace(m[3]), "`")
	}
	typ := reflect.TypeFor[Config]()
	for f := range typ.Fields() {
		key := envPrefix + strings.Split(f.Tag.Get("env"), ",")[0]
		def, ok := inReadme[key]
		if !ok {
			t.Errorf("README.md has no row for %s", key)
			continue
		}
		delete(inReadme, key)
		if want := f.Tag.Get("envDefault"); want != "" && def != want {
			t.Errorf("README.md default of %s is %q, struct says %q", key, def, want)
		}
	}
	for k := range inReadme {
		t.Errorf("README.md lists %s, which Config does not have", k)
	}
}

// TestConfigTimeoutsFollowTheModalityTable: every modality of the contract's table has its
// BRIDGE_TIMEOUT_<MODALITY>, whose default is the table's deadline, and no other modality has one.
func TestConfigTimeoutsFollowTheModalityTable(t *testing.T) {
	var cfg Config
	if got, want := len(cfg.timeouts()), len(bjs.Modalities()); got != want {
		t.Fatalf("%d timeouts, want one per modality (%d)", got, want)
	}
	defaults := map[string]string{}
	for f := range reflect.TypeFor[Config]().Fields() {
		defaults[envKey(f)] = f.Tag.Get("envDefault")
	}
	for _, m := range bjs.Modalities() {
		if _, ok := cfg.timeouts()[m.Name]; !ok {
			t.Errorf("modality %s has no timeout", m.Name)
		}
		def, ok := defaults[envPrefix+timeoutVar(m.Name)]
		if !ok {
			t.Errorf("no variable %s%s", envPrefix, timeoutVar(m.Name))
			continue
		}
		if d, err := time.ParseDuration(def); err != nil || d != m.Deadline {
			t.Errorf("%s%s defaults to %q, want %v", envPrefix, timeoutVar(m.Name), def, m.Deadline)
		}
	}
}
