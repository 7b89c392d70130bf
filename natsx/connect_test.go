package natsx_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testcert"
	"github.com/evershield/bridge/internal/testlog"
	"github.com/evershield/bridge/natsx"
)

// operatorAuth puts the server in operator (JWT) mode with one JetStream-enabled account and returns a
// .creds file of a user of that account.
func operatorAuth(t *testing.T, o *server.Options) (credsFile string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	okp, err := nkeys.CreateOperator()
	must(err)
	opub, _ := okp.PublicKey()
	skp, _ := nkeys.CreateAccount()
	spub, _ := skp.PublicKey()
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()

	oc := jwt.NewOperatorClaims(opub)
	oc.SystemAccount = spub
	ojwt, err := oc.Encode(okp)
	must(err)
	ocDecoded, err := jwt.DecodeOperatorClaims(ojwt)
	must(err)
	sjwt, err := jwt.NewAccountClaims(spub).Encode(okp)
	must(err)
	ac := jwt.NewAccountClaims(apub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(okp)
	must(err)
	resolver := &server.MemAccResolver{}
	must(resolver.Store(apub, ajwt))
	must(resolver.Store(spub, sjwt))
	o.TrustedOperators = []*jwt.OperatorClaims{ocDecoded}
	o.SystemAccount = spub
	o.AccountResolver = resolver

	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	ujwt, err := jwt.NewUserClaims(upub).Encode(akp)
	must(err)
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	must(err)
	credsFile = filepath.Join(t.TempDir(), "bridge.creds")
	must(os.WriteFile(credsFile, creds, 0o600))
	return credsFile
}

// TestConnectToSecuredCluster connects with our ConnConfig to a server that requires TLS with client
// certificates and JWT credentials: with everything it connects and provisions; without any one piece it
// fails at once with an error that says why.
func TestConnectToSecuredCluster(t *testing.T) {
	t.Parallel()
	certs := testcert.New(t)
	var creds string
	n := natstest.RunServer(t, natstest.WithOptions(func(o *server.Options) {
		o.TLSConfig = certs.ServerTLS(true)
		o.TLS, o.TLSVerify, o.TLSTimeout = true, true, 5
		creds = operatorAuth(t, o)
	}))
	full := natsx.ConnConfig{
		URLs: n.ClientURL(), CredsFile: creds, TLSCertFile: certs.ClientCert, TLSKeyFile: certs.ClientKey,
		TLSCAFile: certs.CA, ConnectWait: 5 * time.Second, Log: zerolog.New(zerolog.NewTestWriter(t)),
	}
	t.Run("creds and TLS", func(t *testing.T) {
		nc, err := natsx.Connect(full)
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		defer nc.Close()
		if !nc.TLSRequired() {
			t.Error("connection is not TLS")
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := natsx.Provision(natstest.Ctx(t), js, natsx.ProvisionConfig{Replicas: 1}); err != nil {
			t.Fatalf("Provision over creds and TLS: %v", err)
		}
	})
	for _, tt := range []struct {
		name string
		mod  func(*natsx.ConnConfig)
		want string
	}{
		{"no creds", func(c *natsx.ConnConfig) { c.CredsFile = "" }, "authorization violation"},
		{"no CA", func(c *natsx.ConnConfig) { c.TLSCAFile = "" }, "certificate"},
		{"no client certificate", func(c *natsx.ConnConfig) { c.TLSCertFile, c.TLSKeyFile = "", "" }, "tls"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := full
			tt.mod(&cfg)
			nc, err := natsx.Connect(cfg)
			if err == nil {
				nc.Close()
				t.Fatal("Connect succeeded, want an error")
			}
			if !strings.HasPrefix(err.Error(), "connect nats "+n.ClientURL()) || !strings.Contains(strings.ToLower(err.Error()), tt.want) {
				t.Fatalf("error %q, want it to name the server and say %q", err, tt.want)
			}
			t.Logf("%s: %v", tt.name, err)
		})
	}
}

// TestConnectUserPasswordRedacted: a user and password in BRIDGE_NATS_URL authenticate, and a wrong one
// fails with an error and logs that never show the password.
func TestConnectUserPasswordRedacted(t *testing.T) {
	t.Parallel()
	const user, pass = "bridge", "s3cr3t-nats-pass"
	n := natstest.RunServer(t, natstest.WithOptions(func(o *server.Options) { o.Username, o.Password = user, pass }))
	hostport := strings.TrimPrefix(n.ClientURL(), "nats://")
	logs := &testlog.Buffer{}
	log := zerolog.New(logs).Level(zerolog.DebugLevel)

	nc, err := natsx.Connect(natsx.ConnConfig{URLs: "nats://" + user + ":" + pass + "@" + hostport, ConnectWait: 5 * time.Second, Log: log})
	if err != nil {
		t.Fatalf("Connect with user and password: %v", err)
	}
	nc.Close()

	for _, urls := range []string{
		"nats://" + user + ":wrong-" + pass + "@" + hostport,
		"nats://token-" + pass + "@" + hostport,
		"nats://127.0.0.1:1,nats://" + user + ":wrong-" + pass + "@" + hostport,
	} {
		_, err := natsx.Connect(natsx.ConnConfig{URLs: urls, ConnectWait: 3 * time.Second, Log: log})
		if err == nil {
			t.Fatalf("Connect %s succeeded", urls)
		}
		if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(err.Error(), "authorization") {
			t.Errorf("error %q does not say authorization failed", err)
		}
		if strings.Contains(err.Error(), pass) {
			t.Errorf("error shows the password: %q", err)
		}
	}
	if strings.Contains(logs.String(), pass) {
		t.Errorf("logs show the password:\n%s", logs.String())
	}
}

// TestRedact: no user, password or token of a NATS URL list survives, nor a URL that does not parse.
func TestRedact(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"no secret", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"user and password", "nats://bridge:s3cr3t@host:4222", "nats://xxxxx@host:4222"},
		{"token", "nats://tok3n@host:4222", "nats://xxxxx@host:4222"},
		{"list", "nats://a:4222,tls://u:p@b:4222", "nats://a:4222,tls://xxxxx@b:4222"},
		{"unparsable", "nats://u:p@host:port%zz", "[unparsable URL]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := natsx.Redact(tt.in); got != tt.want {
				t.Fatalf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
