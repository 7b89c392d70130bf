package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/ops"
)

var deadletterCommand = &command{
	name: "deadletter", summary: "inspect and re-drive webhooks that could not be verified (DEADLETTER)",
	subs: []*command{
		{name: "list", args: "[-reason R] [-job ID] [-since T]", summary: "dead letters oldest first, with the job's state in JOBS", run: runDeadletterList},
		{name: "show", args: "SEQ...", summary: "headers and body of dead letters", run: runDeadletterShow},
		{name: "redrive", args: "(SEQ... | -reason R | -all)", summary: "put dead letters back into WEBHOOKS for the verifier", run: runDeadletterRedrive},
	},
}

const (
	deadletterListUsage = `bridge deadletter list [-reason R] [-job ID] [-since T] [-from-seq N] [-limit N] [-json]

Lists dead letters oldest first, with the job's state in JOBS (a dead letter whose job has been delivered
since shows as resolved).`
	deadletterShowUsage = `bridge deadletter show SEQ... [-json]

Prints the headers and body of dead letters.`
	deadletterRedriveUsage = `bridge deadletter redrive (SEQ... | -reason R | -job ID | -since T | -from-seq N | -all) [-dry-run] [-force] [-delete] [-rate N] [-json]

Puts dead letters back into WEBHOOKS for the verifier, under Nats-Msg-Id <job_id>.redrive.<seq>; a job
whose result is out is skipped (-force redrives it anyway: the verifier acks it without an upstream
call). -delete removes what is resolved from DEADLETTER.`
)

// dlFilterFlags are the selection flags of deadletter list and redrive.
type dlFilterFlags struct {
	reasons, jobIDs listFlag
	since           timeFlag
	fromSeq         *uint64
	limit           *int
}

func (d *dlFilterFlags) register(fs *flagSet) {
	d.since = timeFlag{now: time.Now}
	fs.Var(&d.reasons, "reason", "only these reasons: not_found, attempts_exhausted, malformed, unknown_job, upstream_<status> (repeatable)")
	fs.Var(&d.jobIDs, "job", "only dead letters of these job ids (repeatable)")
	fs.Var(&d.since, "since", "only dead letters stored at or after: RFC 3339 time or a duration ago (90m)")
	d.fromSeq = fs.Uint64("from-seq", 0, "start at this DEADLETTER sequence")
	d.limit = fs.Int("limit", 1000, "at most this many dead letters")
}

func (d *dlFilterFlags) filter(names contract.Names, seqs []uint64) ops.DeadLetterFilter {
	return ops.DeadLetterFilter{Names: names, Seqs: seqs, Reasons: d.reasons, JobIDs: d.jobIDs, Since: d.since.t, FromSeq: *d.fromSeq, Limit: *d.limit}
}

// selects reports whether any selection was given besides sequences.
func (d *dlFilterFlags) selects() bool {
	return len(d.reasons) > 0 || len(d.jobIDs) > 0 || d.since.raw != "" || *d.fromSeq != 0
}

// runDeadletterList is bridge deadletter list.
func runDeadletterList(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet("bridge deadletter list", deadletterListUsage, c)
	var nf natsFlags
	nf.register(fs)
	var sel dlFilterFlags
	sel.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.noArgs(args); err != nil {
		return err
	}
	nc, js, conn, err := opsConnect(ctx, c, nf)
	if err != nil {
		return err
	}
	defer nc.Close()
	sum, err := ops.SummarizeDeadLetters(ctx, js, conn.names)
	if err != nil {
		return err
	}
	dls, err := ops.ListDeadLetters(ctx, js, sel.filter(conn.names, nil))
	if err != nil {
		return opsError(err)
	}
	if *asJSON {
		return writeJSON(c.stdout, struct {
			Summary     ops.DeadLetterSummary `json:"summary"`
			DeadLetters []ops.DeadLetter      `json:"dead_letters"`
		}{sum, nonNil(dls)})
	}
	fmt.Fprintf(c.stdout, "%d dead letters%s\n", sum.Total, byReason(sum.ByReason))
	if len(dls) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tREASON\tATTEMPTS\tJOB_ID\tFROM\tJOB_STATE")
	for _, d := range dls {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", d.Seq, d.Time.Local().Format(time.DateTime), d.Reason, d.Attempts,
			dash(d.JobID), dash(d.OriginalSubject), dash(d.JobState))
	}
	return tw.Flush()
}

// runDeadletterShow is bridge deadletter show.
func runDeadletterShow(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet("bridge deadletter show", deadletterShowUsage, c)
	var nf natsFlags
	nf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	seqs, err := parseSeqs(pos)
	if err != nil {
		return fs.fail(fmt.Errorf("bridge deadletter show: %w", err))
	}
	if len(seqs) == 0 {
		return fs.fail(fmt.Errorf("bridge deadletter show: give one or more sequences (see bridge deadletter list)"))
	}
	nc, js, conn, err := opsConnect(ctx, c, nf)
	if err != nil {
		return err
	}
	defer nc.Close()
	dls, err := ops.ListDeadLetters(ctx, js, ops.DeadLetterFilter{Names: conn.names, Seqs: seqs})
	if err != nil {
		return opsError(err)
	}
	if *asJSON {
		return writeJSON(c.stdout, dls)
	}
	for i, d := range dls {
		if i > 0 {
			fmt.Fprintln(c.stdout)
		}
		printDeadLetter(c.stdout, d)
	}
	return nil
}

func printDeadLetter(w io.Writer, d ops.DeadLetter) {
	fmt.Fprintf(w, "seq %d  %s  %s\n", d.Seq, d.Time.Format(time.RFC3339Nano), d.Subject)
	fmt.Fprintf(w, "reason %s, %d attempts, job %s (JOBS: %s)\n", d.Reason, d.Attempts, dash(d.JobID), dash(d.JobState))
	for _, k := range slices.Sorted(maps.Keys(d.Headers)) {
		fmt.Fprintf(w, "  %s: %s\n", k, strings.Join(d.Headers[k], ", "))
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, d.Body, "  ", "  ") == nil {
		fmt.Fprintf(w, "  %s\n", pretty.String())
	} else {
		fmt.Fprintf(w, "  %s\n", d.Body)
	}
}

// runDeadletterRedrive is bridge deadletter redrive.
func runDeadletterRedrive(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet("bridge deadletter redrive", deadletterRedriveUsage, c)
	var nf natsFlags
	nf.register(fs)
	var sel dlFilterFlags
	sel.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	dryRun := fs.Bool("dry-run", false, "decide and print, publish nothing")
	force := fs.Bool("force", false, "redrive also dead letters whose job's result is out")
	del := fs.Bool("delete", false, "delete resolved dead letters: result out, or redriven (a repeat failure is dead-lettered anew)")
	all := fs.Bool("all", false, "redrive every dead letter (needed when no sequence or filter is given)")
	rate := fs.Float64("rate", 0, "redrives per second (0 = unlimited)")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	seqs, err := parseSeqs(pos)
	if err != nil {
		return fs.fail(fmt.Errorf("bridge deadletter redrive: %w", err))
	}
	if len(seqs) == 0 && !sel.selects() && !*all {
		return fs.fail(fmt.Errorf("bridge deadletter redrive: select what to redrive (sequences, -reason, -job, -since, -from-seq) or say -all"))
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
	items, err := ops.Redrive(ctx, ops.RedriveConfig{JS: js, Log: log, Filter: sel.filter(cfg.names, seqs), DryRun: *dryRun, Force: *force, Delete: *del, Rate: *rate})
	if *asJSON {
		if jerr := writeJSON(c.stdout, nonNil(items)); jerr != nil {
			return jerr
		}
	} else {
		printRedrive(c.stdout, items, *dryRun)
	}
	if err != nil {
		return opsError(fmt.Errorf("bridge deadletter redrive: %w", err))
	}
	return nil
}

// printRedrive prints what redrive did with each dead letter, and the counts.
func printRedrive(w io.Writer, items []ops.RedriveItem, dryRun bool) {
	counts := map[string]int{}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tJOB_ID\tREASON\tACTION\tNOTE")
	for _, it := range items {
		counts[it.Action]++
		note := it.Why
		if it.MsgID != "" && it.Why == "" {
			note = it.Subject + " as " + it.MsgID
		}
		if it.Deleted {
			note += " (deleted from DEADLETTER)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", it.Seq, dash(it.JobID), it.Reason, it.Action, note)
	}
	if len(items) > 0 {
		tw.Flush()
	}
	fmt.Fprintf(w, "%d selected: %d redriven, %d already redriven (duplicate window), %d skipped", len(items),
		counts[ops.ActionRedriven], counts[ops.ActionDuplicate], counts[ops.ActionSkipped])
	if dryRun {
		fmt.Fprintf(w, ", %d would be redriven (dry run)", counts[ops.ActionWould])
	}
	fmt.Fprintln(w)
}

func byReason(m map[string]uint64) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return ": " + strings.Join(parts, ", ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
