package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeNATSContext stores a nats CLI context under dir/nats (as the nats CLI does) and, when sel, selects it.
func writeNATSContext(t *testing.T, dir, name, body string, sel bool) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "nats", "context"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nats", "context", name+".json"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if sel {
		if err := os.WriteFile(filepath.Join(dir, "nats", "context.txt"), []byte(name+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpsConnPrecedence checks where the operator commands connect: flag > BRIDGE_NATS_URL > NATS_URL >
// the selected nats context > the embedded server at BRIDGE_NATS_LISTEN, and the same for credentials.
func TestOpsConnPrecedence(t *testing.T) {
	xdg := t.TempDir()
	writeNATSContext(t, xdg, "prod", `{"url":"nats://ctx:4222","creds":"/ctx.creds","cert":"/c.pem","key":"/k.pem","ca":"/ca.pem","description":"x"}`, true)
	writeNATSContext(t, xdg, "dev", `{"url":"nats://dev:4222"}`, false)
	home := t.TempDir()
	writeNATSContext(t, filepath.Join(home, ".config"), "homectx", `{"url":"nats://home:4222"}`, true)

	tests := []struct {
		name      string
		env       map[string]string
		flags     natsFlags
		wantURL   string
		wantCreds string
	}{
		{"flag", map[string]string{"XDG_CONFIG_HOME": xdg, "BRIDGE_NATS_URL": "nats://b:4222", "NATS_URL": "nats://n:4222"},
			natsFlags{server: "nats://flag:4222", creds: "/flag.creds"}, "nats://flag:4222", "/flag.creds"},
		{"BRIDGE_NATS_URL", map[string]string{"XDG_CONFIG_HOME": xdg, "BRIDGE_NATS_URL": "nats://b:4222", "NATS_URL": "nats://n:4222",
			"BRIDGE_NATS_CREDS": "/b.creds", "NATS_CREDS": "/n.creds"}, natsFlags{}, "nats://b:4222", "/b.creds"},
		{"NATS_URL", map[string]string{"XDG_CONFIG_HOME": xdg, "NATS_URL": "nats://n:4222", "NATS_CREDS": "/n.creds"},
			natsFlags{}, "nats://n:4222", "/n.creds"},
		{"selected context", map[string]string{"XDG_CONFIG_HOME": xdg}, natsFlags{}, "nats://ctx:4222", "/ctx.creds"},
		{"named context", map[string]string{"XDG_CONFIG_HOME": xdg}, natsFlags{context: "dev"}, "nats://dev:4222", ""},
		{"NATS_CONTEXT", map[string]string{"XDG_CONFIG_HOME": xdg, "NATS_CONTEXT": "dev"}, natsFlags{}, "nats://dev:4222", ""},
		{"context under HOME", map[string]string{"HOME": home}, natsFlags{}, "nats://home:4222", ""},
		{"default", map[string]string{"HOME": t.TempDir(), "BRIDGE_NATS_LISTEN": "0.0.0.0:4333"}, natsFlags{}, "nats://127.0.0.1:4333", ""},
		// A variable the operator commands do not use cannot break them.
		{"bad unrelated variable", map[string]string{"BRIDGE_TIMEOUT_VIDEO": "soon", "BRIDGE_API_URL": "ftp://x", "NATS_URL": "nats://n:4222"},
			natsFlags{}, "nats://n:4222", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := resolveOpsConn(tt.env, tt.flags)
			if err != nil {
				t.Fatal(err)
			}
			if c.URL != tt.wantURL || c.NATSCreds != tt.wantCreds {
				t.Errorf("url %q creds %q, want %q %q", c.URL, c.NATSCreds, tt.wantURL, tt.wantCreds)
			}
		})
	}
	// BRIDGE_API_RPM=auto is a bridge's valid setting, so the operator commands read it too.
	if c, err := resolveOpsConn(map[string]string{"BRIDGE_API_RPM": "auto", "NATS_URL": "nats://n:4222"}, natsFlags{}); err != nil ||
		c.APIRPM == nil || *c.APIRPM != -1 {
		t.Errorf("BRIDGE_API_RPM=auto: %v %+v", err, c.APIRPM)
	}
	c, err := resolveOpsConn(map[string]string{"XDG_CONFIG_HOME": xdg}, natsFlags{})
	if err != nil || c.NATSTLSCert != "/c.pem" || c.NATSTLSKey != "/k.pem" || c.NATSTLSCA != "/ca.pem" || c.contextName != "prod" {
		t.Errorf("context TLS: %v %+v", err, c)
	}

	for _, tt := range []struct {
		name string
		env  map[string]string
		f    natsFlags
		want string
	}{
		{"missing context", map[string]string{"XDG_CONFIG_HOME": xdg}, natsFlags{context: "nope"}, "nats context nope: "},
		{"bad replicas", map[string]string{"BRIDGE_REPLICAS": "9"}, natsFlags{}, "BRIDGE_REPLICAS: must be 1 to 5"},
		{"bad rpm", map[string]string{"BRIDGE_API_RPM": "lots"}, natsFlags{}, "BRIDGE_API_RPM: invalid value"},
	} {
		if _, err := resolveOpsConn(tt.env, tt.f); err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: err %v, want it to start with %q", tt.name, err, tt.want)
		}
	}
}
