package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/evershield/bridge/ops"
)

// The operator commands: thin glue over package ops. They read a NATS-only configuration (natsconfig.go)
// and never need BRIDGE_API_URL.

// loopback turns a listen address into one a local client can dial (":8080", "0.0.0.0:8080" and
// "[::]:8080" become 127.0.0.1:8080).
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// listFlag is a repeatable flag that also takes comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for p := range strings.SplitSeq(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// timeFlag is a time given as RFC 3339 or as a duration before now ("90m").
type timeFlag struct {
	raw string
	t   time.Time
	now func() time.Time
}

func (f *timeFlag) String() string { return f.raw }
func (f *timeFlag) Set(v string) error {
	f.raw = v
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		f.t = t
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("want an RFC 3339 time or a duration ago such as 90m; got %q", v)
	}
	f.t = f.now().Add(-d)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// progressPrinter shows a replay's progress on stderr: a bar redrawn in place on a terminal, otherwise
// a plain line every few seconds.
type progressPrinter struct {
	w     io.Writer
	tty   bool
	every time.Duration
	last  time.Time
	start time.Time
	ended bool
}

func newProgressPrinter(w io.Writer) *progressPrinter {
	p := &progressPrinter{w: w, tty: isTerminal(w), every: 5 * time.Second, start: time.Now()}
	if p.tty {
		p.every = 100 * time.Millisecond
	}
	return p
}

func (p *progressPrinter) update(pr ops.ReplayProgress) {
	now := time.Now()
	if !pr.Done && now.Sub(p.last) < p.every {
		return
	}
	p.last = now
	span := float64(max(pr.EndSeq, pr.StartSeq) - pr.StartSeq + 1)
	frac := 1.0
	if pr.Seq >= pr.StartSeq && span > 0 && !pr.Done {
		frac = min(1, float64(pr.Seq-pr.StartSeq+1)/span)
	} else if !pr.Done {
		frac = 0
	}
	rate := float64(pr.Published) / max(now.Sub(p.start).Seconds(), 0.001)
	if !p.tty {
		fmt.Fprintf(p.w, "replay %s: seq %d/%d (%.0f%%), %d published, %d scanned, %.0f msgs/s\n",
			pr.Name, pr.Seq, pr.EndSeq, frac*100, pr.Published, pr.Scanned, rate)
		return
	}
	const width = 30
	filled := int(frac * width)
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	fmt.Fprintf(p.w, "\r[%s] %3.0f%%  seq %d/%d  %d published  %.0f msgs/s ", bar, frac*100, pr.Seq, pr.EndSeq, pr.Published, rate)
	if pr.Done {
		fmt.Fprintln(p.w)
		p.ended = true
	}
}

func (p *progressPrinter) finish() {
	if p.tty && !p.last.IsZero() && !p.ended {
		fmt.Fprintln(p.w)
	}
}

// parseSeqs reads sequence arguments.
func parseSeqs(args []string) ([]uint64, error) {
	var out []uint64
	for _, a := range args {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a stream sequence", a)
		}
		out = append(out, n)
	}
	return out, nil
}

// opsError turns an ops error into a usage error where the operator asked for something impossible.
func opsError(err error) error {
	if errors.Is(err, ops.ErrInvalid) || errors.Is(err, ops.ErrReplayConflict) || errors.Is(err, ops.ErrTargetIsBridgeStream) {
		return usageError{err}
	}
	return err
}
