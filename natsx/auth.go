package natsx

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/evershield/bridge/access"
	"github.com/evershield/bridge/contract"
)

// ErrUnprotected means the embedded server would listen beyond loopback without users, or with passwords
// that would cross the network in clear.
var ErrUnprotected = errors.New("the embedded NATS server would be open to the network")

// Identity is an nkey user: the bridge's own, made afresh at each start, or the operator's.
type Identity struct {
	kp  nkeys.KeyPair
	pub string
}

// NewIdentity makes a fresh nkey user.
func NewIdentity() (*Identity, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	return identityOf(kp)
}

func identityOf(kp nkeys.KeyPair) (*Identity, error) {
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	return &Identity{kp: kp, pub: pub}, nil
}

// Public is the user's public nkey.
func (id *Identity) Public() string { return id.pub }

// Option signs the server's nonce with the identity's key.
func (id *Identity) Option() nats.Option { return nats.Nkey(id.pub, id.kp.Sign) }

// OpsSeedFile is the name of the file, in the data directory, that keeps the nkey seed of the ops user
// of the embedded server: the operator's commands on the same machine read it (mode 0600).
const OpsSeedFile = "ops.nk"

// loadOrCreateSeed reads the nkey user seed in path, or makes one and writes it there (0600).
func loadOrCreateSeed(path string) (*Identity, error) {
	id, err := readSeed(path)
	if !errors.Is(err, os.ErrNotExist) {
		return id, err
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("write nkey seed %s: %w", path, err)
	}
	return identityOf(kp)
}

// readSeed reads the nkey user seed in path.
func readSeed(path string) (*Identity, error) {
	seed, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return nil, fmt.Errorf("nkey seed %s: %w", path, err)
	}
	return identityOf(kp)
}

// AuthConfig is the embedded server's authorization.
type AuthConfig struct {
	// ConfigFile is a nats-server configuration file (BRIDGE_NATS_CONFIG): its users, nkeys, accounts,
	// TLS and limits are the server's; the listener, JetStream and store are the bridge's. Empty: none.
	ConfigFile string
	// Account names the account of the bridge's, the operator's and the anonymous users when ConfigFile
	// defines accounts (BRIDGE_NATS_ACCOUNT); empty: the global account.
	Account string
	// OpsSeed is the file that keeps the ops user's nkey seed, made on first start.
	OpsSeed string
	// Names are the bridge's, for the permissions of the ops and anonymous (downstream) users.
	Names contract.Names
	// Bridge is the bridge's own user, which may do everything in its account.
	Bridge *Identity
}

// loopbackListen reports whether the client address listens on loopback only.
func loopbackListen(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// applyAuth sets the server's authorization: the operator's configuration if any, the bridge's own user,
// the ops user, and on a loopback listener without a configured anonymous user, anonymous clients as
// downstream. A listener beyond loopback needs configured users, and TLS for any password.
func applyAuth(opts *server.Options, cfg *AuthConfig, listen string) error {
	acct, err := accountOf(opts, cfg.Account)
	if err != nil {
		return err
	}
	configured := len(opts.Users) > 0 || len(opts.Nkeys) > 0
	if !loopbackListen(opts.Host) {
		if !configured {
			return fmt.Errorf("%w: it listens on %s, beyond loopback, and has no users: give it users with BRIDGE_NATS_CONFIG (a nats-server configuration: nkeys, or passwords with TLS), or listen on 127.0.0.1",
				ErrUnprotected, listen)
		}
		for _, u := range opts.Users {
			if u.Password != "" && opts.TLSConfig == nil {
				return fmt.Errorf("%w: user %q has a password, which would cross the network in clear on %s: add TLS to BRIDGE_NATS_CONFIG, or use nkeys",
					ErrUnprotected, u.Username, listen)
			}
		}
	}
	opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: cfg.Bridge.Public(), Account: acct})
	ops, err := loadOrCreateSeed(cfg.OpsSeed)
	if err != nil {
		return fmt.Errorf("ops user: %w", err)
	}
	opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: ops.Public(), Account: acct,
		Permissions: ServerPermissions(access.For(access.Ops, cfg.Names))})
	if loopbackListen(opts.Host) && opts.NoAuthUser == "" {
		password, err := unusablePassword()
		if err != nil {
			return err
		}
		opts.Users = append(opts.Users, &server.User{Username: string(access.Downstream), Password: password,
			Account: acct, Permissions: ServerPermissions(access.For(access.Downstream, cfg.Names))})
		opts.NoAuthUser = string(access.Downstream)
	}
	return nil
}

// unusablePassword is a random password nobody learns: the anonymous user's, which clients reach only
// without credentials (no_auth_user). It cannot be a bcrypt hash, which would spare the server's warning
// of a plaintext password at start: the server signs anonymous clients in with the password as it has it.
func unusablePassword() (string, error) {
	password := make([]byte, 24)
	if _, err := rand.Read(password); err != nil {
		return "", err
	}
	return hex.EncodeToString(password), nil
}

// accountOf finds the account named name among those the configuration defines; nil (the global
// account) when it defines none.
func accountOf(opts *server.Options, name string) (*server.Account, error) {
	if len(opts.Accounts) == 0 {
		if name != "" {
			return nil, fmt.Errorf("BRIDGE_NATS_ACCOUNT: %q, but BRIDGE_NATS_CONFIG defines no accounts", name)
		}
		return nil, nil
	}
	for _, a := range opts.Accounts {
		if a.Name == name {
			return a, nil
		}
	}
	return nil, fmt.Errorf("BRIDGE_NATS_ACCOUNT: %q is not one of the accounts BRIDGE_NATS_CONFIG defines (name the bridge's)", name)
}

// ServerPermissions turns p into the server's form: for the users of a nats-server configured in Go (the
// embedded one, a test cluster). A user with Responses may answer each request it receives once, within a
// minute.
func ServerPermissions(p access.Permissions) *server.Permissions {
	sp := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: p.PublishAllow, Deny: p.PublishDeny},
		Subscribe: &server.SubjectPermission{Allow: p.SubscribeAllow, Deny: p.SubscribeDeny},
	}
	if p.Responses {
		sp.Response = &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	}
	return sp
}

// OpsIdentity reads the ops user's nkey seed file, for the operator's commands; an error when it is
// missing or unreadable.
func OpsIdentity(path string) (nats.Option, error) {
	id, err := readSeed(path)
	if err != nil {
		return nil, err
	}
	return id.Option(), nil
}
