package natsx

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/evershield/bridge/internal/testcert"
)

// authOptions are the embedded server's options on listen, with the configuration file conf (none when
// empty) and BRIDGE_NATS_ACCOUNT account, and the bridge's identity.
func authOptions(t *testing.T, listen, conf, account string) (*server.Options, *Identity, error) {
	t.Helper()
	dir := t.TempDir()
	file := ""
	if conf != "" {
		file = filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	bridge, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	opts, err := serverOptions(ServerConfig{Listen: listen, StoreDir: dir, Auth: &AuthConfig{ConfigFile: file,
		Account: account, OpsSeed: filepath.Join(dir, OpsSeedFile), Bridge: bridge}})
	return opts, bridge, err
}

// accountOfNkey is the name of the account of the nkey user pub in opts ("" for the global account);
// false when opts has no such user.
func accountOfNkey(opts *server.Options, pub string) (string, bool) {
	for _, u := range opts.Nkeys {
		if u.Nkey == pub {
			if u.Account == nil {
				return "", true
			}
			return u.Account.Name, true
		}
	}
	return "", false
}

// TestApplyAuthBeyondLoopback: beyond loopback, a password without TLS would cross the network in clear
// and stops start-up with one line naming the user; with TLS, or with nkey users, the server starts with
// the bridge's and the ops users added and no anonymous user.
func TestApplyAuthBeyondLoopback(t *testing.T) {
	t.Parallel()
	_, _, err := authOptions(t, "0.0.0.0:4222", "authorization { users = [ { user: alice, password: s3cret } ] }\n", "")
	want := `the embedded NATS server would be open to the network: user "alice" has a password, which would cross the network in clear on 0.0.0.0:4222: add TLS to BRIDGE_NATS_CONFIG, or use nkeys`
	if !errors.Is(err, ErrUnprotected) || err.Error() != want {
		t.Errorf("password without TLS: %v, want %q", err, want)
	}

	certs := testcert.New(t)
	withTLS := "tls { cert_file: \"" + certs.ServerCert + "\", key_file: \"" + certs.ServerKey + "\" }\n" +
		"authorization { users = [ { user: alice, password: s3cret } ] }\n"
	user, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	withNkeys := "authorization { users = [ { nkey: " + user.Public() + " } ] }\n"
	for _, c := range []struct{ name, conf, configured string }{
		{"password with TLS", withTLS, ""}, {"nkeys", withNkeys, user.Public()},
	} {
		opts, bridge, err := authOptions(t, "0.0.0.0:4222", c.conf, "")
		if err != nil {
			t.Errorf("%s: %v, want accepted", c.name, err)
			continue
		}
		for _, pub := range []string{bridge.Public(), c.configured} {
			if _, ok := accountOfNkey(opts, pub); pub != "" && !ok {
				t.Errorf("%s: no nkey user %s", c.name, pub)
			}
		}
		if opts.NoAuthUser != "" {
			t.Errorf("%s: anonymous user %q beyond loopback, want none", c.name, opts.NoAuthUser)
		}
	}
}

// TestApplyAuthAccounts: with accounts in BRIDGE_NATS_CONFIG, the bridge's, the ops and the anonymous
// (downstream) users land in the account BRIDGE_NATS_ACCOUNT names; an account the file does not define,
// or one named without accounts, stops start-up with one line naming the variable.
func TestApplyAuthAccounts(t *testing.T) {
	t.Parallel()
	other, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	conf := "accounts {\n  BRIDGE { jetstream: enabled }\n  OTHER { users = [ { nkey: " + other.Public() + " } ] }\n}\n"
	opts, bridge, err := authOptions(t, "127.0.0.1:4222", conf, "BRIDGE")
	if err != nil {
		t.Fatal(err)
	}
	if acct, ok := accountOfNkey(opts, bridge.Public()); !ok || acct != "BRIDGE" {
		t.Errorf("the bridge's user in account %q (%v), want BRIDGE", acct, ok)
	}
	if acct, _ := accountOfNkey(opts, other.Public()); acct != "OTHER" {
		t.Errorf("OTHER's user moved to account %q", acct)
	}
	n := 0
	for _, u := range opts.Nkeys {
		if u.Account != nil && u.Account.Name == "BRIDGE" {
			n++ // the bridge's and the ops user
		}
	}
	if n != 2 {
		t.Errorf("%d nkey users in BRIDGE, want 2 (the bridge's and ops)", n)
	}
	for _, u := range opts.Users {
		if u.Username == "downstream" && (u.Account == nil || u.Account.Name != "BRIDGE") {
			t.Errorf("the anonymous user's account: %v, want BRIDGE", u.Account)
		}
	}
	if opts.NoAuthUser != "downstream" {
		t.Errorf("no_auth_user %q, want downstream", opts.NoAuthUser)
	}

	for _, c := range []struct{ conf, account, want string }{
		{conf, "NOPE", `BRIDGE_NATS_ACCOUNT: "NOPE" is not one of the accounts BRIDGE_NATS_CONFIG defines (name the bridge's)`},
		{"authorization { users = [ { nkey: " + other.Public() + " } ] }\n", "BRIDGE",
			`BRIDGE_NATS_ACCOUNT: "BRIDGE", but BRIDGE_NATS_CONFIG defines no accounts`},
	} {
		if _, _, err := authOptions(t, "127.0.0.1:4222", c.conf, c.account); err == nil || err.Error() != c.want ||
			strings.Contains(err.Error(), "\n") {
			t.Errorf("account %s: %v, want %q", c.account, err, c.want)
		}
	}
}
