package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/evershield/bridge/bridge"
	"github.com/evershield/bridge/internal/text"
	"github.com/evershield/bridge/ops"
)

var statusCommand = &command{
	name: "status", args: "[-json]", summary: "what is pending, stuck and why: streams, consumers, jobs, budget, dead letters",
	run: runStatus,
}

const statusSynopsis = `bridge status [-json] [-metrics-url URL]... [-sample D] [-max-jobs N] [-near D]

One screen: NATS servers and stream health, consumer lag, pending jobs per modality with the oldest age,
jobs near their deadline, dead letters, and, from running bridges' /metrics, readiness, upstream budget
use and recent 429s. Ends with what needs attention.`

// runStatus is bridge status.
func runStatus(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet("bridge status", statusSynopsis, c)
	var nf natsFlags
	nf.register(fs)
	var urls listFlag
	fs.Var(&urls, "metrics-url", "a bridge's /metrics (repeatable; \"none\" skips); default http://127.0.0.1:<port of BRIDGE_ADMIN_ADDR, else BRIDGE_HTTP_ADDR>/metrics")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	sample := fs.Duration("sample", 2*time.Second, "scrape metrics twice this far apart for rates (0 = once, totals only)")
	maxJobs := fs.Int("max-jobs", 100_000, "read at most this many JOBS records")
	near := fs.Duration("near", time.Minute, "list pending jobs this close to their deadline")
	nearList := fs.Int("near-list", 10, "list at most this many near-deadline jobs")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fs.fail(fmt.Errorf("bridge status: unexpected argument %q", pos[0]))
	}
	nc, js, cfg, err := opsConnect(ctx, c, nf)
	if err != nil {
		return err
	}
	defer nc.Close()
	if len(urls) == 0 {
		urls = listFlag{"http://" + loopback(first(cfg.AdminAddr, cfg.HTTPAddr)) + "/metrics"}
	}
	rpm := 0 // the limit in the shared budget bucket: the configured one, or under auto the learned one
	if cfg.APIRPM != nil && *cfg.APIRPM != bridge.RPMAuto {
		rpm = int(*cfg.APIRPM)
	}
	if len(urls) == 1 && urls[0] == "none" {
		urls = nil
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second+*sample)
	defer cancel()
	rep, err := ops.Status(ctx, ops.StatusConfig{JS: js, Names: cfg.names, MetricsURLs: urls, Sample: *sample, RPM: rpm,
		MaxJobs: *maxJobs, Near: *near, NearList: *nearList})
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(c.stdout, rep)
	}
	printStatus(c.stdout, rep)
	return nil
}

func printStatus(w io.Writer, rep ops.Report) {
	fmt.Fprintf(w, "bridge status at %s\n\n", rep.At.Local().Format(time.DateTime))
	printNATS(w, rep.NATS)
	printBudget(w, rep.Budget)
	printStreams(w, rep)
	printJobs(w, rep.Jobs)
	d := rep.DeadLetters
	fmt.Fprintf(w, "\nDEAD LETTERS  %d%s", d.Total, byReason(d.ByReason))
	if d.Total > 0 {
		fmt.Fprintf(w, " (newest %s ago)", ago(rep.At.Sub(d.LastTime)))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "SLOW LANE  %d webhooks of unknown jobs waiting for verification\n", rep.SlowLane)
	printBridges(w, rep.Bridges)
	fmt.Fprintln(w)
	if len(rep.Attention) == 0 {
		fmt.Fprintln(w, "All clear: nothing stuck.")
		return
	}
	fmt.Fprintln(w, "ATTENTION")
	for _, a := range rep.Attention {
		fmt.Fprintf(w, "  ! %s\n", a)
	}
}

func printNATS(w io.Writer, n ops.NATSStatus) {
	fmt.Fprintf(w, "NATS  %s (server %s, %s", n.Connected, n.ServerName, n.Version)
	if n.Cluster != "" {
		fmt.Fprintf(w, ", cluster %s", n.Cluster)
	}
	fmt.Fprintf(w, "); JetStream storage %s, %d streams, %d consumers, %d API errors\n", bytesHuman(n.Account.Storage),
		n.Account.Streams, n.Account.Consumers, n.Account.APIErrors)
	if len(n.Servers) > 0 {
		var parts []string
		for _, s := range n.Servers {
			st := "up"
			if !s.Online {
				st = "OFFLINE"
			}
			parts = append(parts, fmt.Sprintf("%s %s (leads %d)", s.Name, st, len(s.Leads)))
		}
		fmt.Fprintf(w, "      servers: %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w)
}

func printBudget(w io.Writer, b *ops.BudgetStatus) {
	if b == nil {
		return
	}
	fmt.Fprintf(w, "UPSTREAM BUDGET  limit %d/min for the account, %.1f requests in the bucket, %d leased in all, %d jobs owe a verification",
		b.RPM, b.Level, b.Leased, b.Owed)
	if b.PausedFor > 0 {
		fmt.Fprintf(w, ", PAUSED %.0fs after a 429", b.PausedFor)
	}
	if b.RateFactor < 1 {
		fmt.Fprintf(w, ", rate at %.0f%% after 429s", b.RateFactor*100)
	}
	fmt.Fprintln(w)
	for _, u := range b.Processes {
		fmt.Fprintf(w, "  process %s (%s): %d requests leased, %d submissions refused BUSY by the budget, waiting %v\n",
			u.Instance, u.Budget, u.Leased, u.Refused, u.Waiting)
	}
	fmt.Fprintln(w)
}

// printStreams prints each stream's health, then each durable consumer's lag.
func printStreams(w io.Writer, rep ops.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tMSGS\tBYTES\tLAST\tR\tLEADER\tHEALTH")
	for _, s := range rep.Streams {
		last := "-"
		if !s.LastTime.IsZero() && s.Messages > 0 {
			last = ago(rep.At.Sub(s.LastTime))
		}
		msgs := fmt.Sprint(s.Messages)
		if s.Results != nil {
			msgs += fmt.Sprintf(" (%d results)", *s.Results)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.Name, msgs, bytesHuman(s.Bytes), last, s.Replicas, dash(s.Leader), streamHealth(s))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CONSUMER\tLAG\tACK_PENDING\tREDELIVERED\tWAITING\tLEADER")
	for _, s := range rep.Streams {
		for _, c := range s.Consumers {
			fmt.Fprintf(tw, "%s/%s\t%d\t%d\t%d\t%d\t%s\n", s.Name, c.Name, c.Pending, c.AckPending, c.Redelivered, c.Waiting, dash(c.Leader))
		}
	}
	tw.Flush()
}

func streamHealth(s ops.StreamStatus) string {
	switch {
	case s.Problem != "":
		return strings.ToUpper(s.Problem)
	case !s.Healthy:
		var bad []string
		for _, p := range s.Peers {
			if p.Offline || !p.Current {
				bad = append(bad, fmt.Sprintf("%s lag %d", p.Name, p.Lag))
			}
		}
		return "DEGRADED " + strings.Join(bad, ", ")
	}
	return "ok"
}

// printJobs prints the JOBS records by state, pending jobs per modality and those near their deadline.
func printJobs(w io.Writer, j ops.JobsStatus) {
	fmt.Fprintf(w, "\nJOBS  %d records", j.Records)
	if j.Truncated {
		fmt.Fprintf(w, " (first %d read)", j.Scanned)
	}
	var states []string
	for _, k := range slices.Sorted(maps.Keys(j.ByState)) {
		states = append(states, fmt.Sprintf("%s %d", k, j.ByState[k]))
	}
	fmt.Fprintf(w, ": %s\n", strings.Join(states, ", "))
	if h := j.History; h != nil {
		fmt.Fprintf(w, "HISTORY  %d blocks, %s: delivered jobs compacted out of JOBS (layout %d)\n", h.Blocks, bytesHuman(h.Bytes), j.Layout)
	}
	if len(j.Pending) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PENDING\tJOBS\tOLDEST\tOLDEST_JOB")
		for _, p := range j.Pending {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", p.Modality, p.Count, secs(p.OldestAge), p.OldestJobID)
		}
		tw.Flush()
	}
	if len(j.NearJobs) == 0 {
		return
	}
	fmt.Fprintf(w, "\nNEAR DEADLINE  %d within the window, %d overdue\n", j.NearDeadline, j.Overdue)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB_ID\tMODALITY\tAGE\tDEADLINE\tATTEMPTS\tWEBHOOK\tLAST_STATUS\tLAST_ERROR")
	for _, b := range j.NearJobs {
		dl := "in " + secs(b.DeadlineIn)
		if b.DeadlineIn < 0 {
			dl = secs(-b.DeadlineIn) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%v\t%s\t%s\n", b.JobID, b.Modality, secs(b.Age), dl, b.Attempts, b.Webhook,
			dash(b.LastStatus), dash(text.Truncate(b.LastError, 60)))
	}
	tw.Flush()
}

// printBridges prints what each running bridge's /metrics and /readyz said.
func printBridges(w io.Writer, bridges []ops.BridgeStatus) {
	if len(bridges) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BRIDGE\tREADY\tRECONCILE\tCALLS/MIN\tBUDGET\t429s(SAMPLE)\t429s(TOTAL)\tDEAD_LETTERS")
	for _, b := range bridges {
		if b.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\n", b.URL, b.Error)
			continue
		}
		ready, leader, cpm, use, recent := "?", "-", "-", "-", "-"
		if b.Ready != nil {
			ready = map[bool]string{true: "yes", false: "NO"}[*b.Ready]
		}
		if b.ReconcileLeader != nil {
			leader = map[bool]string{true: "leader", false: "standby"}[*b.ReconcileLeader]
		}
		if b.CallsPerMinute != nil {
			cpm = fmt.Sprintf("%.1f", *b.CallsPerMinute)
			use = fmt.Sprintf("%.0f%% of %d", *b.BudgetUse*100, b.BudgetRPM)
			recent = fmt.Sprintf("%.0f in %.0fs", *b.RateLimitedRecent, b.SampleSeconds)
		}
		var dl float64
		for _, v := range b.DeadLetters {
			dl += v
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%.0f\n", b.URL, ready, leader, cpm, use, recent, b.RateLimited, dl)
	}
	tw.Flush()
}

func secs(s float64) string {
	return (time.Duration(s) * time.Second).Round(time.Second).String()
}

func ago(d time.Duration) string {
	if d < time.Second {
		return "now"
	}
	return d.Round(time.Second).String()
}

func bytesHuman(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
