package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/bridge"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/natsx"
)

// opsEnv is the part of the bridge's configuration the operator commands read: NATS only, so a
// variable they do not use (a bad BRIDGE_TIMEOUT_VIDEO, say) cannot stop them. Field names are those of
// bridge.Config, so errors name the variable the same way.
type opsEnv struct {
	// Namespace is the bridge's (BRIDGE_NAMESPACE): the names the command reads and writes.
	Namespace string `env:"NAMESPACE"`
	// JSDomain is the bridge's JetStream domain (BRIDGE_JS_DOMAIN), ahead of the nats context's.
	JSDomain    string `env:"JS_DOMAIN"`
	NATSURL     string `env:"NATS_URL"`
	NATSCreds   string `env:"NATS_CREDS"`
	NATSTLSCert string `env:"NATS_TLS_CERT"`
	NATSTLSKey  string `env:"NATS_TLS_KEY"`
	NATSTLSCA   string `env:"NATS_TLS_CA"`
	NATSListen  string `env:"NATS_LISTEN" envDefault:"127.0.0.1:4222"`
	// DataDir is where a bridge on this machine keeps its embedded store, and the ops user's nkey seed.
	DataDir string `env:"DATA_DIR" envDefault:"./data"`
	// HTTPAddr is where bridge status finds this machine's bridge's /metrics by default.
	HTTPAddr string `env:"HTTP_ADDR" envDefault:":8080"`
	// AdminAddr, when set, serves /metrics instead of HTTPAddr.
	AdminAddr string `env:"ADMIN_ADDR"`
	// Replicas of the BRIDGE_REPLAY bucket bridge replay makes.
	Replicas int `env:"REPLICAS" envDefault:"1"`
	// APIRPM, when set to a number, overrides the limit bridge status reads from the shared budget
	// bucket; auto (or unset) takes the one the processes run with, learned from the upstream.
	APIRPM    *bridge.RPM `env:"API_RPM"`
	LogFormat string      `env:"LOG_FORMAT" envDefault:"json"`
}

// natsFlags are the connection flags every operator command takes, named as the nats CLI names them.
type natsFlags struct {
	server, creds, context, namespace string
}

func (f *natsFlags) register(fs *flagSet) {
	const serverHelp = "NATS server URLs, comma-separated (default BRIDGE_NATS_URL, NATS_URL, the selected nats context, else a bridge's embedded server at BRIDGE_NATS_LISTEN)"
	fs.StringVar(&f.server, "s", "", serverHelp)
	fs.StringVar(&f.server, "server", "", serverHelp)
	fs.StringVar(&f.creds, "creds", "", "NATS credentials file (default BRIDGE_NATS_CREDS, NATS_CREDS, the context's)")
	fs.StringVar(&f.context, "context", "", "nats CLI context to use (default NATS_CONTEXT, else the one selected with nats context select)")
	fs.StringVar(&f.namespace, "namespace", "", "the bridge's namespace (default BRIDGE_NAMESPACE; empty: none)")
}

// natsContext is a nats CLI context, as the nats CLI stores it in <config>/nats/context/<name>.json: the
// fields the operator commands use. It is read here rather than with github.com/nats-io/jsm.go/natscontext:
// that package imports jsm.go's whole management API, its schema registry and expr-lang/expr (three new
// modules, about 16 MB of binary for a program that only reads one JSON file), for the same ten fields.
type natsContext struct {
	URL             string `json:"url"`
	Creds           string `json:"creds"`
	NKey            string `json:"nkey"`
	Cert            string `json:"cert"`
	Key             string `json:"key"`
	CA              string `json:"ca"`
	User            string `json:"user"`
	Password        string `json:"password"`
	Token           string `json:"token"`
	JetStreamDomain string `json:"jetstream_domain"`
}

// opsConn is where and how an operator command connects, and the rest of what it reads.
type opsConn struct {
	opsEnv
	// URL is the servers to dial; from names where it came from, for errors.
	URL, from string
	ctx       natsContext
	// contextName is the nats context used, "" when none.
	contextName string
	// names are the bridge's, in its namespace (-namespace, else BRIDGE_NAMESPACE).
	names contract.Names
}

// resolveOpsConn applies the precedence flag > BRIDGE_NATS_* > NATS_URL/NATS_CREDS > nats context >
// default (the embedded server of a bridge on this machine at BRIDGE_NATS_LISTEN), field by field.
func resolveOpsConn(envMap map[string]string, f natsFlags) (opsConn, error) {
	e, err := bridge.ParseEnv[opsEnv](envMap)
	if err != nil {
		return opsConn{}, err
	}
	if e.Replicas < 1 || e.Replicas > 5 {
		return opsConn{}, fmt.Errorf("%sREPLICAS: must be 1 to 5; got %d", envPrefix, e.Replicas)
	}
	c := opsConn{opsEnv: e}
	if f.namespace != "" {
		c.Namespace = f.namespace
	}
	if c.names, err = contract.NamesFor(c.Namespace); err != nil {
		return opsConn{}, fmt.Errorf("%sNAMESPACE: %w", envPrefix, err)
	}
	name := first(f.context, envMap["NATS_CONTEXT"])
	c.ctx, c.contextName, err = loadNATSContext(envMap, name)
	if err != nil {
		return opsConn{}, err
	}
	pick := func(vals ...[2]string) (string, string) {
		for _, v := range vals {
			if v[0] != "" {
				return v[0], v[1]
			}
		}
		return "", ""
	}
	ctxFrom := "nats context " + c.contextName
	c.URL, c.from = pick([2]string{f.server, "-s"}, [2]string{e.NATSURL, envPrefix + "NATS_URL"},
		[2]string{envMap["NATS_URL"], "NATS_URL"}, [2]string{c.ctx.URL, ctxFrom},
		[2]string{"nats://" + loopback(e.NATSListen), envPrefix + "NATS_LISTEN"})
	c.NATSCreds, _ = pick([2]string{f.creds}, [2]string{e.NATSCreds}, [2]string{envMap["NATS_CREDS"]}, [2]string{c.ctx.Creds})
	c.NATSTLSCert, _ = pick([2]string{e.NATSTLSCert}, [2]string{c.ctx.Cert})
	c.NATSTLSKey, _ = pick([2]string{e.NATSTLSKey}, [2]string{c.ctx.Key})
	c.NATSTLSCA, _ = pick([2]string{e.NATSTLSCA}, [2]string{c.ctx.CA})
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		return opsConn{}, fmt.Errorf("%sNATS_TLS_CERT: %sNATS_TLS_CERT and %sNATS_TLS_KEY go together", envPrefix, envPrefix, envPrefix)
	}
	return c, nil
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// natsConfigDir is where the nats CLI keeps its configuration: $XDG_CONFIG_HOME/nats, else
// $HOME/.config/nats.
func natsConfigDir(envMap map[string]string) string {
	if x := envMap["XDG_CONFIG_HOME"]; x != "" {
		return filepath.Join(x, "nats")
	}
	if h := envMap["HOME"]; h != "" {
		return filepath.Join(h, ".config", "nats")
	}
	return ""
}

// loadNATSContext reads the nats context name, or, when name is empty, the one selected in
// context.txt. No selected context is not an error; a named one that cannot be read is.
func loadNATSContext(envMap map[string]string, name string) (natsContext, string, error) {
	dir := natsConfigDir(envMap)
	if dir == "" {
		if name != "" {
			return natsContext{}, "", fmt.Errorf("nats context %s: no HOME or XDG_CONFIG_HOME to find it in", name)
		}
		return natsContext{}, "", nil
	}
	if name == "" {
		b, err := os.ReadFile(filepath.Join(dir, "context.txt"))
		if name = strings.TrimSpace(string(b)); err != nil || name == "" {
			return natsContext{}, "", nil
		}
	}
	if strings.ContainsAny(name, `/\`) || name == ".." {
		return natsContext{}, "", fmt.Errorf("nats context %q: not a context name", name)
	}
	b, err := os.ReadFile(filepath.Join(dir, "context", name+".json"))
	if err != nil {
		return natsContext{}, "", fmt.Errorf("nats context %s: %w", name, err)
	}
	var c natsContext
	if err := json.Unmarshal(b, &c); err != nil {
		return natsContext{}, "", fmt.Errorf("nats context %s: %w", name, err)
	}
	return c, name, nil
}

// refusedError is NATS's refusal of an operation a command asked for: the user it connected as lacks the
// permission.
type refusedError struct{ err error }

func (e refusedError) Error() string {
	return fmt.Sprintf("NATS refused the command: %v: the user it connects as lacks this permission (the "+
		"status, deadletter, replay, upgrade and provision commands need the ops user, submit and job the downstream "+
		"user or ops: docs/SECURITY.md)", e.err)
}

func (e refusedError) Unwrap() error { return e.err }

// options are the nats.go options of the connection. A server refuses a denied request without an answer,
// so refuse is called with the refusal as soon as it arrives, and the command ends then rather than at its
// deadline.
func (c opsConn) options(refuse context.CancelCauseFunc) ([]nats.Option, error) {
	opts := []nats.Option{nats.Name("bridge-ops"), nats.Timeout(5 * time.Second), nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				refuse(refusedError{err})
			}
		})}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	if c.ctx.NKey != "" && c.NATSCreds == "" {
		o, err := nats.NkeyOptionFromSeed(c.ctx.NKey)
		if err != nil {
			return nil, fmt.Errorf("nats context %s: nkey: %w", c.contextName, err)
		}
		opts = append(opts, o)
	}
	if o := c.embeddedOps(); o != nil {
		opts = append(opts, o)
	}
	if c.ctx.User != "" {
		opts = append(opts, nats.UserInfo(c.ctx.User, c.ctx.Password))
	}
	if c.ctx.Token != "" {
		opts = append(opts, nats.Token(c.ctx.Token))
	}
	if c.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(c.NATSTLSCert, c.NATSTLSKey))
	}
	if c.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(c.NATSTLSCA))
	}
	return opts, nil
}

// embeddedOps is the ops user of a bridge's embedded server on this machine (its seed in BRIDGE_DATA_DIR),
// when the command connects there (BRIDGE_NATS_LISTEN) with no credentials of its own; nil otherwise.
func (c opsConn) embeddedOps() nats.Option {
	if c.from != envPrefix+"NATS_LISTEN" || c.NATSCreds != "" || c.ctx.NKey != "" || c.ctx.User != "" || c.ctx.Token != "" {
		return nil
	}
	o, err := natsx.OpsIdentity(filepath.Join(c.DataDir, natsx.OpsSeedFile))
	if err != nil {
		return nil // no bridge here, or another user's: connect as anyone would
	}
	return o
}

// opsConnect connects for an operator command; unlike the bridge it fails fast when NATS is down, and
// when NATS refuses it an operation (the command's context ends then, and run reports the refusal).
func opsConnect(ctx context.Context, cl *cli, f natsFlags) (*nats.Conn, jetstream.JetStream, opsConn, error) {
	c, err := resolveOpsConn(cl.env, f)
	if err != nil {
		return nil, nil, opsConn{}, usageError{err}
	}
	opts, err := c.options(cl.refuse)
	if err != nil {
		return nil, nil, opsConn{}, usageError{err}
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, nil, opsConn{}, fmt.Errorf("connect to NATS at %s (from %s; set -s, %sNATS_URL or NATS_URL): %w",
			natsx.Redact(c.URL), c.from, envPrefix, err)
	}
	js, err := natsx.NewJetStream(nc, first(c.JSDomain, c.ctx.JetStreamDomain))
	if err != nil {
		nc.Close()
		return nil, nil, opsConn{}, err
	}
	return nc, js, c, nil
}
