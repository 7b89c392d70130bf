package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/internal/testcert"
	"github.com/evershield/bridge/internal/testlog"
	"github.com/evershield/bridge/upstream/simulator"
	"github.com/evershield/bridge/verify"
)

// startRun runs bridge run with env until the test ends and returns its log output and a stop func that
// returns run's error.
func startRun(t *testing.T, env map[string]string) (logs *testlog.Buffer, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs = &testlog.Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run"}, env, &bytes.Buffer{}, logs) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = fmt.Errorf("run did not return within 30s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return logs, stop
}

// waitReady waits until GET base/readyz answers 200 through client.
func waitReady(t *testing.T, client *http.Client, base string) {
	t.Helper()
	natstest.WaitFor(t, 30*time.Second, func() error {
		resp, err := client.Get(base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
}

// TestHTTPSWebhookListener: with BRIDGE_TLS_CERT_FILE and BRIDGE_TLS_KEY_FILE the listener speaks HTTPS only.
func TestHTTPSWebhookListener(t *testing.T) {
	certs := testcert.New(t)
	httpAddr := freeAddr(t)
	_, stop := startRun(t, map[string]string{
		"BRIDGE_ROLES": "ingest", "BRIDGE_DATA_DIR": t.TempDir(), "BRIDGE_NATS_LISTEN": freeAddr(t),
		"BRIDGE_HTTP_ADDR": httpAddr, "BRIDGE_TLS_CERT_FILE": certs.ServerCert, "BRIDGE_TLS_KEY_FILE": certs.ServerKey,
	})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: certs.ClientTLS()}, Timeout: 20 * time.Second}
	base := "https://" + httpAddr
	waitReady(t, client, base)
	resp, err := client.Post(base+"/webhook/image", "application/json",
		strings.NewReader(`{"job_id":"`+uuid.NewString()+`","status":"completed"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("webhook over HTTPS: %d (tls %v), want 200 over TLS", resp.StatusCode, resp.TLS != nil)
	}
	// Plain HTTP on the same port is refused.
	if resp, err := (&http.Client{Timeout: 20 * time.Second}).Get("http://" + httpAddr + "/readyz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP answered 200 on the HTTPS listener")
		}
	}
	// A client that does not trust the CA cannot connect.
	if _, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}}).Get(base + "/healthz"); err == nil {
		t.Fatal("a client without the CA connected")
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestBadTLSKeyPairStopsStartup(t *testing.T) {
	certs := testcert.New(t)
	err := run(context.Background(), []string{"run"}, map[string]string{
		"BRIDGE_ROLES": "ingest", "BRIDGE_DATA_DIR": t.TempDir(), "BRIDGE_NATS_LISTEN": freeAddr(t),
		"BRIDGE_HTTP_ADDR": freeAddr(t), "BRIDGE_TLS_CERT_FILE": certs.ServerCert, "BRIDGE_TLS_KEY_FILE": certs.ClientKey,
	}, &bytes.Buffer{}, &testlog.Buffer{})
	if err == nil || !strings.HasPrefix(err.Error(), "BRIDGE_TLS_CERT_FILE") {
		t.Fatalf("run with a mismatched key pair = %v, want a TLS start-up error", err)
	}
}

func TestSecurityConfig(t *testing.T) {
	base := map[string]string{"BRIDGE_API_URL": "http://127.0.0.1:1/api/v1", "BRIDGE_API_KEY": "k"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tt := range []struct {
		name string
		env  map[string]string
		want int
	}{
		{"default a tenth of the budget", with(), 6},
		{"default at least one", with("BRIDGE_API_RPM", "5"), 1},
		{"explicit", with("BRIDGE_UNKNOWN_JOB_RPM", "3"), 3},
		{"zero is off", with("BRIDGE_UNKNOWN_JOB_RPM", "0"), verify.UnknownOff},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.UnknownRPM(); got != tt.want {
				t.Fatalf("unknownJobRPM = %d, want %d", got, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"negative unknown rpm", with("BRIDGE_UNKNOWN_JOB_RPM", "-1"), "BRIDGE_UNKNOWN_JOB_RPM: must not be negative"},
		{"bad whsec secret", with("BRIDGE_WEBHOOK_SECRET", "whsec_%%%secret%%%"), "BRIDGE_WEBHOOK_SECRET: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(tt.env)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to start %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "%%%secret%%%") {
				t.Fatalf("error shows the secret: %v", err)
			}
		})
	}
}

// TestSecretsNeverInLogsOrErrors runs every role at debug level against the simulator, which signs its
// webhooks, behind an upstream that later refuses the key and echoes it and the webhook_url back; traffic
// includes a good job, webhooks with a wrong token and bad signatures, an upstream 401 on submit and on
// verify. Neither the full log output nor any error the bridge returned contains the API key, the webhook
// token, the webhook secret or the NATS password.
func TestSecretsNeverInLogsOrErrors(t *testing.T) {
	const (
		apiKey   = "sk_live_REDACTME_api_0123456789abcdef"
		token    = "tok-REDACTME-webhook+/42"
		natsUser = "bridge"
		natsPass = "natspass-REDACTME-77"
	)
	signingKey := []byte("REDACTME-signing-key-bytes-0123")
	secret := "whsec_" + base64.StdEncoding.EncodeToString(signingKey)
	secrets := []string{apiKey, token, url.QueryEscape(token), secret, strings.TrimPrefix(secret, "whsec_"),
		string(signingKey), natsPass}

	sim := simtest.Run(t, simulator.Config{
		Keys:          []simulator.Key{{Token: apiKey, Account: "acct", Scopes: simulator.DefaultScopes}},
		WebhookSecret: secret,
		Log:           zerolog.Nop(), // the upstream's own logs are not the bridge's
	})
	// The upstream, behind a proxy that can start refusing the key, echoing it and the webhook_url back.
	var revoked atomic.Bool
	target, _ := url.Parse(sim.URL())
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: target.Scheme, Host: target.Host})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !revoked.Load() {
			proxy.ServeHTTP(w, r)
			return
		}
		_ = r.ParseMultipartForm(1 << 20)
		msg := fmt.Sprintf("key %q is not valid (webhook_url %s)", r.Header.Get("Authorization"), r.FormValue("webhook_url"))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": "UNAUTHORIZED", "message": msg, "statusCode": 401})
	}))
	t.Cleanup(front.Close)

	n := natstest.RunServer(t, natstest.WithOptions(func(o *server.Options) { o.Username, o.Password = natsUser, natsPass }))
	natsURL := "nats://" + natsUser + ":" + natsPass + "@" + strings.TrimPrefix(n.ClientURL(), "nats://")
	httpAddr := freeAddr(t)
	logs, stop := startRun(t, map[string]string{
		"BRIDGE_NATS_URL": natsURL, "BRIDGE_HTTP_ADDR": httpAddr, "BRIDGE_PUBLIC_URL": "http://" + httpAddr,
		"BRIDGE_API_URL": front.URL + "/api/v1", "BRIDGE_API_KEY": apiKey, "BRIDGE_API_RPM": "6000",
		"BRIDGE_WEBHOOK_TOKEN": token, "BRIDGE_WEBHOOK_SECRET": secret, "BRIDGE_LOG_LEVEL": "debug",
	})
	var errs []string // every error text the bridge handed back
	base := "http://" + httpAddr
	client := &http.Client{Timeout: 20 * time.Second}
	waitReady(t, client, base)

	nc, js := natstest.Connect(t, natsURL)
	natstest.WaitFor(t, 30*time.Second, func() error {
		_, err := nc.Request("$SRV.PING."+contract.Default.ServiceName, nil, time.Second)
		return err
	})
	submit := func(prompt string) *nats.Msg {
		t.Helper()
		reply, err := nc.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{"prompt":"`+prompt+`"}`), 20*time.Second)
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		if desc := reply.Header.Get(micro.ErrorHeader); desc != "" {
			errs = append(errs, desc)
		}
		return reply
	}

	// A good job: the simulator's signed webhook passes token and signature checks and is verified.
	reply := submit("hello")
	var sr struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal(reply.Data, &sr); err != nil || sr.JobID == "" {
		t.Fatalf("submit reply %q %v", reply.Data, reply.Header)
	}
	natstest.WaitFor(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, contract.Default.StreamResults)
		if err != nil {
			return err
		}
		m, err := s.GetLastMsgForSubject(ctx, contract.Default.ResultSubject("prompt"))
		if err != nil {
			return err
		}
		if src := m.Header.Get(contract.HeaderBridgeSource); src != contract.SourceWebhook {
			return fmt.Errorf("result source %q, want webhook", src)
		}
		return nil
	})

	// Webhooks that must be refused: wrong token, no signature, bad signature, wrong secret.
	post := func(path string, hdr map[string]string, body string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 400 {
			errs = append(errs, string(b))
		}
		return resp.StatusCode
	}
	signed := func(key []byte, body string) map[string]string {
		id, ts := "msg_"+uuid.NewString(), strconv.FormatInt(time.Now().Unix(), 10)
		m := hmac.New(sha256.New, key)
		m.Write([]byte(id + "." + ts + "." + body))
		return map[string]string{"webhook-id": id, "webhook-timestamp": ts,
			"webhook-signature": "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))}
	}
	hook := "/webhook/prompt?token=" + url.QueryEscape(token)
	body := `{"job_id":"` + uuid.NewString() + `","status":"completed"}`
	for name, st := range map[string]int{
		"wrong token":   post("/webhook/prompt?token=nope", signed(signingKey, body), body),
		"no signature":  post(hook, nil, body),
		"bad signature": post(hook, map[string]string{"webhook-id": "x", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}, body),
		"wrong secret":  post(hook, signed([]byte("other key"), body), body),
	} {
		if st != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, st)
		}
	}

	// The upstream refuses the key from now on, and echoes it and the webhook_url in its messages.
	revoked.Store(true)
	reply = submit("after revocation")
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "401" {
		t.Fatalf("submit after revocation: code %q (%s), want 401", code, reply.Header.Get(micro.ErrorHeader))
	}
	// A signed webhook for a job the bridge does not know: verification gets 401 and pauses (the key is
	// wrong for every job), keeping the webhook.
	body = `{"job_id":"` + uuid.NewString() + `","status":"completed"}`
	if st := post(hook, signed(signingKey, body), body); st != http.StatusOK {
		t.Fatalf("signed webhook: %d, want 200", st)
	}
	natstest.WaitFor(t, 30*time.Second, func() error {
		if !strings.Contains(logs.String(), "upstream refused the API key") {
			return errors.New("verification has not met the refused key yet")
		}
		return nil
	})

	if err := stop(); err != nil {
		errs = append(errs, err.Error())
		t.Errorf("run: %v", err)
	}
	out := logs.String()
	for _, want := range []string{`"level":"debug"`, "upstream call failed", "webhook rejected", "invalid_signature"} {
		if !strings.Contains(out, want) && !strings.Contains(strings.Join(errs, "\n"), want) {
			t.Errorf("logs and errors lack %q: the test did not drive the traffic it meant to", want)
		}
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			i := strings.Index(out, s)
			t.Errorf("logs contain secret %q: ...%s...", s, out[max(0, i-200):min(len(out), i+len(s)+50)])
		}
		for _, e := range errs {
			if strings.Contains(e, s) {
				t.Errorf("error contains secret %q: %s", s, e)
			}
		}
	}
}
