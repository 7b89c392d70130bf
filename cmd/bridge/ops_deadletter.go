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

	"github.com/evershield/bridge/ops"
)

const deadletterSynopsis = `bridge deadletter list|show|redrive [flags]

  list [-reason R] [-job ID] [-since T] [-from-seq N] [-limit N] [-json]
        dead letters oldest first, with the job's state in JOBS
  show SEQ... [-json]
        headers and body of dead letters
  redrive (SEQ... | -reason R | -job ID | -since T | -all) [-dry-run] [-force] [-delete] [-rate N] [-json]
        put dead letters back into WEBHOOKS for the verifier, under Nats-Msg-Id <job_id>.redrive.<seq>;
        a job whose result is out is skipped (-force redrives it anyway: the verifier acks it without an
        upstream call). -delete removes what is resolved from DEADLETTER.`

// runDeadletter is bridge deadletter.
func runDeadletter(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(stderr, "Usage: %s\n", deadletterSynopsis)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			return nil
		}
		return usageError{fmt.Errorf("bridge deadletter: want list, show or redrive")}
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("bridge deadletter "+sub, deadletterSynopsis, stderr)
	var reasons, jobIDs listFlag
	since := timeFlag{now: time.Now}
	asJSON := fs.Bool("json", false, "print JSON")
	var limit *int
	var fromSeq *uint64
	var dryRun, force, del, all *bool
	var rate *float64
	switch sub {
	case "list", "redrive":
		fs.Var(&reasons, "reason", "only these reasons: not_found, attempts_exhausted, malformed, unknown_job, upstream_<status> (repeatable)")
		fs.Var(&jobIDs, "job", "only dead letters of these job ids (repeatable)")
		fs.Var(&since, "since", "only dead letters stored at or after: RFC 3339 time or a duration ago (90m)")
		fromSeq = fs.Uint64("from-seq", 0, "start at this DEADLETTER sequence")
		limit = fs.Int("limit", 1000, "at most this many dead letters")
		if sub == "redrive" {
			dryRun = fs.Bool("dry-run", false, "decide and print, publish nothing")
			force = fs.Bool("force", false, "redrive also dead letters whose job's result is out")
			del = fs.Bool("delete", false, "delete resolved dead letters: result out, or redriven (a repeat failure is dead-lettered anew)")
			all = fs.Bool("all", false, "redrive every dead letter (needed when no sequence or filter is given)")
			rate = fs.Float64("rate", 0, "redrives per second (0 = unlimited)")
		}
	case "show":
	default:
		return usageError{fmt.Errorf("bridge deadletter: unknown sub-command %q; want list, show or redrive", sub)}
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return usageError{err}
	}
	seqs, err := parseSeqs(pos)
	if err != nil {
		return usageError{fmt.Errorf("bridge deadletter %s: %w", sub, err)}
	}
	if sub == "list" && len(seqs) > 0 {
		return usageError{fmt.Errorf("bridge deadletter list takes no sequences; use show")}
	}
	if sub == "show" && len(seqs) == 0 {
		return usageError{fmt.Errorf("bridge deadletter show: give one or more sequences (see bridge deadletter list)")}
	}
	filter := ops.DeadLetterFilter{Seqs: seqs, Reasons: reasons, JobIDs: jobIDs, Since: since.t}
	if fromSeq != nil {
		filter.FromSeq, filter.Limit = *fromSeq, *limit
	}
	if sub == "redrive" && len(seqs) == 0 && len(reasons) == 0 && len(jobIDs) == 0 && since.raw == "" && *fromSeq == 0 && !*all {
		return usageError{fmt.Errorf("bridge deadletter redrive: select what to redrive (sequences, -reason, -job, -since, -from-seq) or say -all")}
	}

	nc, js, cfg, err := opsConnect(ctx, env)
	if err != nil {
		return err
	}
	defer nc.Close()

	switch sub {
	case "list":
		sum, err := ops.SummarizeDeadLetters(ctx, js)
		if err != nil {
			return err
		}
		dls, err := ops.ListDeadLetters(ctx, js, filter)
		if err != nil {
			return opsError(err)
		}
		if *asJSON {
			return writeJSON(stdout, struct {
				Summary     ops.DeadLetterSummary `json:"summary"`
				DeadLetters []ops.DeadLetter      `json:"dead_letters"`
			}{sum, nonNil(dls)})
		}
		fmt.Fprintf(stdout, "%d dead letters%s\n", sum.Total, byReason(sum.ByReason))
		if len(dls) == 0 {
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tREASON\tATTEMPTS\tJOB_ID\tFROM\tJOB_STATE")
		for _, d := range dls {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", d.Seq, d.Time.Local().Format(time.DateTime), d.Reason, d.Attempts,
				dash(d.JobID), dash(d.OriginalSubject), dash(d.JobState))
		}
		return tw.Flush()
	case "show":
		dls, err := ops.ListDeadLetters(ctx, js, filter)
		if err != nil {
			return opsError(err)
		}
		if *asJSON {
			return writeJSON(stdout, dls)
		}
		for i, d := range dls {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			fmt.Fprintf(stdout, "seq %d  %s  %s\n", d.Seq, d.Time.Format(time.RFC3339Nano), d.Subject)
			fmt.Fprintf(stdout, "reason %s, %d attempts, job %s (JOBS: %s)\n", d.Reason, d.Attempts, dash(d.JobID), dash(d.JobState))
			for _, k := range slices.Sorted(maps.Keys(d.Headers)) {
				fmt.Fprintf(stdout, "  %s: %s\n", k, strings.Join(d.Headers[k], ", "))
			}
			var pretty bytes.Buffer
			if json.Indent(&pretty, d.Body, "  ", "  ") == nil {
				fmt.Fprintf(stdout, "  %s\n", pretty.String())
			} else {
				fmt.Fprintf(stdout, "  %s\n", d.Body)
			}
		}
		return nil
	}

	log, err := newLogger("warn", cfg.LogFormat, stderr)
	if err != nil {
		return usageError{err}
	}
	items, err := ops.Redrive(ctx, ops.RedriveConfig{JS: js, Log: log, Filter: filter, DryRun: *dryRun, Force: *force, Delete: *del, Rate: *rate})
	if *asJSON {
		if jerr := writeJSON(stdout, nonNil(items)); jerr != nil {
			return jerr
		}
	} else {
		counts := map[string]int{}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
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
		fmt.Fprintf(stdout, "%d selected: %d redriven, %d already redriven (duplicate window), %d skipped", len(items),
			counts[ops.ActionRedriven], counts[ops.ActionDuplicate], counts[ops.ActionSkipped])
		if *dryRun {
			fmt.Fprintf(stdout, ", %d would be redriven (dry run)", counts[ops.ActionWould])
		}
		fmt.Fprintln(stdout)
	}
	if err != nil {
		return opsError(fmt.Errorf("bridge deadletter redrive: %w", err))
	}
	return nil
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
