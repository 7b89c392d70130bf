package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/ops"
)

var replayCommand = &command{
	name: "replay", args: "[flags]", summary: "republish RESULTS or WEBHOOKS by time, sequence, subject or job (resumable)",
	run: runReplay,
}

const replaySynopsis = `bridge replay [flags]

Republishes RESULTS (or WEBHOOKS) messages, in stream order, each selected message once:
  to a subject prefix (default replay.<original subject>, so live subscribers of results.> see nothing twice),
  or, with -reverify, back into WEBHOOKS so the running verifier checks them again (results stay single).
Progress is kept in the KV bucket BRIDGE_REPLAY under -name: run the same command again to resume an
interrupted replay. Without -name, the name is derived from the selection and target.`

// runReplay is bridge replay.
func runReplay(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet("bridge replay", replaySynopsis, c)
	var nf natsFlags
	nf.register(fs)
	now := time.Now
	var subjects, jobIDs listFlag
	since, until := timeFlag{now: now}, timeFlag{now: now}
	stream := fs.String("stream", contract.Default.StreamResults, "stream to replay: RESULTS or WEBHOOKS (in the bridge's namespace)")
	fs.Var(&subjects, "subject", "subject filter, e.g. results.prompt or results.late.> (repeatable, comma list)")
	fromSeq := fs.Uint64("from-seq", 0, "first stream sequence (inclusive)")
	toSeq := fs.Uint64("to-seq", 0, "last stream sequence (inclusive); default the stream's last at the first start")
	fs.Var(&since, "since", "only messages stored at or after: RFC 3339 time or a duration ago (90m)")
	fs.Var(&until, "until", "only messages stored at or before: RFC 3339 time or a duration ago")
	fs.Var(&jobIDs, "job", "only messages of these job ids (repeatable, comma list)")
	prefix := fs.String("prefix", "", "target subject prefix put before the original subject (default replay., in the bridge's namespace)")
	reverify := fs.Bool("reverify", false, "WEBHOOKS only: put the webhooks back into WEBHOOKS for the verifier")
	name := fs.String("name", "", "replay name, the key of its progress; default derived from the flags")
	restart := fs.Bool("restart", false, "forget stored progress of -name and start over")
	dryRun := fs.Bool("dry-run", false, "count what would be replayed; publish nothing, store no progress")
	rate := fs.Float64("rate", 0, "publishes per second (0 = unlimited)")
	maxN := fs.Int("max", 0, "stop after this many publishes (resume later)")
	asJSON := fs.Bool("json", false, "print the closing count as JSON")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fs.fail(fmt.Errorf("bridge replay: unexpected argument %q", pos[0]))
	}
	*stream = strings.ToUpper(*stream)
	if *reverify && *stream != contract.Default.StreamWebhooks {
		return usageError{fmt.Errorf("bridge replay: -reverify replays %s; add -stream %s", contract.Default.StreamWebhooks, contract.Default.StreamWebhooks)}
	}
	// The request as typed (times unresolved) identifies the replay, so a command run again resumes.
	key := strings.Join([]string{*stream, subjects.String(), fmt.Sprint(*fromSeq), fmt.Sprint(*toSeq), since.raw, until.raw,
		jobIDs.String(), *prefix, fmt.Sprint(*reverify)}, "|")
	if *name == "" {
		*name = ops.NameFor(key)
	}

	nc, js, cfg, err := opsConnect(ctx, c, nf)
	if err != nil {
		return err
	}
	defer nc.Close()
	log, err := newLogger("warn", cfg.LogFormat, c.stderr)
	if err != nil {
		return usageError{err}
	}
	progress := newProgressPrinter(c.stderr)
	if *stream == contract.Default.StreamWebhooks {
		*stream = cfg.names.StreamWebhooks
	} else if *stream == contract.Default.StreamResults {
		*stream = cfg.names.StreamResults
	}
	res, err := ops.Replay(ctx, ops.ReplayConfig{
		JS: js, Log: log, Names: cfg.names, Name: *name, Key: key, Prefix: *prefix, Reverify: *reverify, DryRun: *dryRun,
		Rate: *rate, Max: *maxN, Restart: *restart, Replicas: cfg.Replicas, Progress: progress.update,
		Selection: ops.Selection{Stream: *stream, Subjects: subjects, FromSeq: *fromSeq, ToSeq: *toSeq,
			Since: since.t, Until: until.t, JobIDs: jobIDs},
	})
	progress.finish()
	if err != nil && res.Name == "" {
		return opsError(fmt.Errorf("bridge replay %s: %w", *name, err))
	}
	if *asJSON {
		if jerr := writeJSON(c.stdout, res); jerr != nil {
			return jerr
		}
	} else {
		printReplay(c.stdout, res)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("bridge replay %s interrupted; progress saved", res.Name)
		}
		return opsError(fmt.Errorf("bridge replay %s: %w", res.Name, err))
	}
	return nil
}

// printReplay prints the closing count of a replay.
func printReplay(w io.Writer, res ops.ReplayResult) {
	verb := "published"
	if res.DryRun {
		verb = "would publish"
	}
	fmt.Fprintf(w, "replay %s (%s, %s): %s %d of %d scanned", res.Name, res.Stream, res.Target, verb, res.Published, res.Scanned)
	if res.Duplicates > 0 {
		fmt.Fprintf(w, " (%d already in the target from an earlier run)", res.Duplicates)
	}
	if res.Resumed {
		fmt.Fprintf(w, ", resumed after seq %d", res.ResumedAfter)
	}
	fmt.Fprintf(w, ", in %.1fs\n", res.Elapsed.Seconds())
	switch {
	case res.DryRun:
	case res.Done:
		fmt.Fprintf(w, "done: %d published in all, through seq %d\n", res.TotalPublished, res.EndSeq)
	default:
		fmt.Fprintf(w, "stopped at seq %d of %d; run the same command (or -name %s) to resume\n", res.LastSeq, res.EndSeq, res.Name)
	}
}
