package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/bridge"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// usageError is a command-line or configuration error: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func environ() map[string]string {
	m := make(map[string]string)
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

const usage = `bridge: a durable, verifying bridge from the moderation API's webhooks to NATS JetStream.

Usage:
  bridge [run]              run the roles in BRIDGE_ROLES (default all) with config from BRIDGE_* variables
  bridge demo [flags]       run everything in-process against the simulator with faults, print a table
  bridge simulate [flags]   run the upstream API simulator
  bridge bench [flags]      drive webhooks or submissions at a bridge and measure (in-process by default)
  bridge status [--json]    what is pending, stuck and why: streams, consumers, jobs, budget, dead letters
  bridge replay [flags]     republish RESULTS or WEBHOOKS by time, sequence, subject or job (resumable)
  bridge deadletter list|show|redrive
                            inspect and re-drive webhooks that could not be verified
  bridge submit <modality> [value]
                            submit a job over moderate.<modality>
  bridge job <id>           a job's JOBS record and result, over jobs.status
  bridge version            print the version
  bridge help [config]      this text, or the table of BRIDGE_* variables

Configuration is read from the environment; see README.md for every BRIDGE_* variable.
`

// run is the whole program; tests call it too.
func run(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		if len(args) > 0 {
			return usageError{fmt.Errorf("bridge run takes no arguments; configure it with BRIDGE_* variables")}
		}
		cfg, err := parseConfig(env)
		if err != nil {
			return usageError{err}
		}
		log, err := newLogger(cfg.LogLevel, cfg.LogFormat, stderr)
		if err != nil {
			return usageError{err}
		}
		a, err := bridge.New(ctx, cfg, log, bridge.WithVersion(buildVersion()))
		if err != nil {
			return err
		}
		return a.Run(ctx)
	case "demo":
		return runDemo(ctx, args, stdout, stderr)
	case "simulate":
		return runSimulate(ctx, args, stdout, stderr)
	case "replay":
		return runReplay(ctx, args, env, stdout, stderr)
	case "deadletter":
		return runDeadletter(ctx, args, env, stdout, stderr)
	case "status":
		return runStatus(ctx, args, env, stdout, stderr)
	case "submit":
		return runSubmitClient(ctx, args, env, stdout, stderr)
	case "job":
		return runJobClient(ctx, args, env, stdout, stderr)
	case "bench":
		return runBench(ctx, args, env, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help", "--help", "-h":
		if len(args) > 0 && args[0] == "config" {
			writeConfigTable(stdout)
			return nil
		}
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q; see bridge --help", cmd)}
}

func versionString() string { return "bridge " + buildVersion() }

// buildVersion is the version set at build time, else the module's version and VCS revision.
func buildVersion() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "" {
		v = bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " " + s.Value[:12]
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	return v
}

func newLogger(level, format string, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Logger{}, fmt.Errorf("%sLOG_LEVEL: want trace, debug, info, warn or error; got %q", envPrefix, level)
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).Level(lvl).Hook(timeHook{}), nil
}

// logTimeFormat is RFC 3339 with milliseconds: events of one second stay in order across processes.
const logTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// timeHook stamps each event with the time in logTimeFormat. zerolog's own Timestamp() reads the
// package-level TimeFieldFormat, and setting that would change every logger of the process.
type timeHook struct{}

func (timeHook) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Str(zerolog.TimestampFieldName, time.Now().UTC().Format(logTimeFormat))
}
