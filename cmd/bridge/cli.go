package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// version and commit are set at build time with -ldflags "-X main.version=... -X main.commit=..."
// (scripts/images.sh does); without them they come from the module's build information.
var version, commit = "", ""

// usageError is a command-line or configuration error: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if err == nil {
		return 0
	}
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

// versionString is what bridge version prints: the version, the commit and the Go toolchain, one a line.
func versionString() string {
	return fmt.Sprintf("bridge %s\ncommit %s\n%s %s/%s", buildVersion(), buildCommit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// buildCommit is the commit this binary was built from: set at build time, else the VCS revision Go
// recorded (with "-dirty" for a modified tree), else "unknown" (go install of a module, say).
func buildCommit() string {
	if commit != "" {
		return commit
	}
	rev, dirty := "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	switch {
	case rev == "":
		return "unknown"
	case dirty:
		return rev + "-dirty"
	}
	return rev
}

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
