package bridge

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestConfigFromEnv parses an environment as a library caller would: the variables given, the defaults of
// the rest, validated; a bad variable is named on its own line.
func TestConfigFromEnv(t *testing.T) {
	cfg, err := ConfigFromEnv(map[string]string{"BRIDGE_API_URL": "http://127.0.0.1:1/api/v1", "BRIDGE_API_KEY": "k",
		"BRIDGE_ROLES": "ingest, verify", "BRIDGE_POLL_INTERVAL": "5s", "PATH": "/bin"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.APIURL != "http://127.0.0.1:1/api/v1" || cfg.PollInterval != 5*time.Second ||
		!reflect.DeepEqual(cfg.Roles, []string{"ingest", "verify"}) || cfg.HTTPAddr != ":8080" || cfg.APIRPM != 60 {
		t.Errorf("ConfigFromEnv = %+v", cfg)
	}

	_, err = ConfigFromEnv(map[string]string{"BRIDGE_API_URL": "http://127.0.0.1:1/api/v1", "BRIDGE_API_KEY": "k",
		"BRIDGE_POLL_INTERVAL": "soon", "BRIDGE_MAX_BODY": "huge"})
	want := "BRIDGE_POLL_INTERVAL: invalid value: time: invalid duration \"soon\"\n" +
		"BRIDGE_MAX_BODY: invalid value: want a positive size such as 65536 or 64KiB; got \"huge\""
	if err == nil || err.Error() != want {
		t.Errorf("ConfigFromEnv with two bad variables: %v, want\n%s", err, want)
	}
}

// TestDefaultConfigIsTheEmptyEnvironment: DefaultConfig holds the tags' defaults and never the process's
// environment, and with the upstream's URL and key it is valid.
func TestDefaultConfigIsTheEmptyEnvironment(t *testing.T) {
	t.Setenv("BRIDGE_HTTP_ADDR", "127.0.0.1:9999") // must not leak in
	cfg := DefaultConfig()
	if cfg.HTTPAddr != ":8080" || cfg.NATSListen != "127.0.0.1:4222" || cfg.DataDir != "./data" || cfg.APIRPM != 60 ||
		cfg.MaxBody != 64<<10 || cfg.DuplicateWindow != 20*time.Minute || cfg.TimeoutVideo != 15*time.Minute ||
		strings.Join(cfg.Roles, ",") != "ingest,verify,reconcile,submit" || cfg.APIContract != "auto" || cfg.LogFormat != "json" {
		t.Errorf("DefaultConfig = %+v", cfg)
	}
	if err := cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), "BRIDGE_API_URL: required") {
		t.Errorf("DefaultConfig().Validate() = %v, want BRIDGE_API_URL required", err)
	}
	cfg.APIURL, cfg.APIKey = "http://127.0.0.1:1/api/v1", "k"
	if err := cfg.Validate(); err != nil {
		t.Errorf("DefaultConfig with the upstream's URL and key: %v", err)
	}
	parsed, err := ConfigFromEnv(map[string]string{"BRIDGE_API_URL": "http://127.0.0.1:1/api/v1", "BRIDGE_API_KEY": "k"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, parsed) {
		t.Errorf("DefaultConfig, filled in by hand and validated:\n%+v\ndiffers from the parsed environment:\n%+v", cfg, parsed)
	}
}
