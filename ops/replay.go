package ops

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/retry"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
)

// Selection says which messages of a stream a replay takes. Every set criterion must hold.
type Selection struct {
	// Stream is the bridge's RESULTS or WEBHOOKS (with a namespace, NS_RESULTS or NS_WEBHOOKS).
	Stream string `json:"stream"`
	// Subjects filter the stream (wildcards allowed); empty takes every subject.
	Subjects []string `json:"subjects,omitempty"`
	// FromSeq and ToSeq bound the stream sequence, inclusive; zero is open.
	FromSeq uint64 `json:"from_seq,omitempty"`
	ToSeq   uint64 `json:"to_seq,omitempty"`
	// Since and Until bound the time the message was stored, inclusive; zero is open.
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	// JobIDs keeps only messages of these jobs: the Nats-Msg-Id is the job id, or starts with it and a dot
	// (late results, redriven and re-verified webhooks).
	JobIDs []string `json:"job_ids,omitempty"`
}

// validate checks the selection of the bridge of names.
func (s Selection) validate(names contract.Names) error {
	switch {
	case s.Stream != names.StreamResults && s.Stream != names.StreamWebhooks:
		return fmt.Errorf("%w: stream %q: want %s or %s", ErrInvalid, s.Stream, names.StreamResults, names.StreamWebhooks)
	case s.ToSeq > 0 && s.FromSeq > s.ToSeq:
		return fmt.Errorf("%w: sequence range %d-%d is empty", ErrInvalid, s.FromSeq, s.ToSeq)
	case !s.Since.IsZero() && !s.Until.IsZero() && s.Until.Before(s.Since):
		return fmt.Errorf("%w: time window ends (%s) before it starts (%s)", ErrInvalid, s.Until.Format(time.RFC3339), s.Since.Format(time.RFC3339))
	}
	for _, subj := range s.Subjects {
		if subj == "" || strings.ContainsAny(subj, " \t\r\n") {
			return fmt.Errorf("%w: subject filter %q", ErrInvalid, subj)
		}
	}
	return nil
}

// matches reports whether a message passes the time and job filters; the subject and sequence filters
// are applied by the consumer and the loop.
func (s Selection) matches(stored time.Time, msgID string) bool {
	if !s.Since.IsZero() && stored.Before(s.Since) {
		return false
	}
	if !s.Until.IsZero() && stored.After(s.Until) {
		return false
	}
	if len(s.JobIDs) == 0 {
		return true
	}
	for _, id := range s.JobIDs {
		if msgID == id || strings.HasPrefix(msgID, id+".") {
			return true
		}
	}
	return false
}

// ReplayConfig configures [Replay]. JS, Name and Selection are required.
type ReplayConfig struct {
	// JS reads the source stream, publishes, and holds the progress bucket. Core NATS publishes (a
	// target no stream stores) go through JS.Conn().
	JS jetstream.JetStream
	// Log receives one line per start, resume and stop, tagged component=replay.
	Log zerolog.Logger
	// Now is the clock of the progress record; default time.Now.
	Now func() time.Time
	// Names are the bridge's names (its namespace's); the zero Names means contract.Default.
	Names contract.Names

	// Name is the replay's key in the replay bucket (BRIDGE_REPLAY); a letter or digit followed by letters, digits, '-'
	// and '_'.
	Name string
	// Key is the identity of the request as the operator gave it (flags before relative times were
	// resolved). A stored replay of the same Name with another Key is [ErrReplayConflict]. Default: the
	// selection and target.
	Key string
	// Selection is what to replay. When a stored replay is resumed, the stored selection is used.
	Selection Selection
	// Prefix is put before each original subject; default Names.SubjectReplayPrefix. Ignored with Reverify.
	Prefix string
	// Reverify (WEBHOOKS only) republishes each raw webhook on its own subject into WEBHOOKS, with
	// Nats-Msg-Id <job_id>.reverify.<name>, so the running verifier checks it again. A job whose result
	// is out is acknowledged by the verifier without an upstream call and is not published twice.
	Reverify bool
	// DryRun reads and counts but publishes nothing and stores no progress.
	DryRun bool
	// Rate caps publishes per second; zero is unlimited.
	Rate float64
	// Max stops this run after publishing Max messages (zero: no cap); the replay resumes from there.
	Max int
	// Restart forgets stored progress of Name and starts over.
	Restart bool
	// Checkpoint is how many scanned messages pass between progress saves; default 100. Progress is also
	// saved when the run stops for any reason.
	Checkpoint int
	// Replicas of the replay bucket when this call creates it; default 1.
	Replicas int
	// Idle is how long to wait for the next message before asking the server whether any is left;
	// default 2s.
	Idle time.Duration
	// Progress, when set, is called after every scanned message and once at the end.
	Progress func(ReplayProgress)
}

func (c *ReplayConfig) setDefaults() {
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Names = c.Names.OrDefault()
	if c.Prefix == "" {
		c.Prefix = c.Names.SubjectReplayPrefix
	}
	if !strings.HasSuffix(c.Prefix, ".") {
		c.Prefix += "."
	}
	if c.Checkpoint <= 0 {
		c.Checkpoint = 100
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Idle <= 0 {
		c.Idle = 2 * time.Second
	}
	for i, id := range c.Selection.JobIDs {
		if canon, ok := jobs.CanonicalID(id); ok {
			c.Selection.JobIDs[i] = canon
		}
	}
	if c.Selection.Stream == c.Names.StreamResults && len(c.Selection.Subjects) == 0 {
		// Every result, not the fences that keep them single (Names.SubjectResultFence).
		c.Selection.Subjects = []string{c.Names.SubjectResults + ">"}
	}
	if c.Key == "" {
		c.Key = c.identity()
	}
}

func (c *ReplayConfig) validate() error {
	if c.JS == nil {
		return fmt.Errorf("%w: replay: JS required", ErrInvalid)
	}
	if !validName(c.Name) {
		return fmt.Errorf("%w: replay name %q: want a letter or digit, then letters, digits, '-' or '_' (at most 64)", ErrInvalid, c.Name)
	}
	if err := c.Selection.validate(c.Names); err != nil {
		return err
	}
	if c.Reverify && c.Selection.Stream != c.Names.StreamWebhooks {
		return fmt.Errorf("%w: re-verification replays %s, not %s", ErrInvalid, c.Names.StreamWebhooks, c.Selection.Stream)
	}
	if strings.ContainsAny(c.Prefix, "*> \t\r\n") || strings.HasPrefix(c.Prefix, ".") || strings.Contains(c.Prefix, "..") {
		return fmt.Errorf("%w: prefix %q: want subject tokens such as replay. or audit.replay.", ErrInvalid, c.Prefix)
	}
	if c.Rate < 0 || c.Max < 0 {
		return fmt.Errorf("%w: rate and max must not be negative", ErrInvalid)
	}
	return nil
}

// identity is the default Key: the selection and the target.
func (c *ReplayConfig) identity() string {
	b, _ := json.Marshal(struct {
		Sel      Selection
		Prefix   string
		Reverify bool
	}{c.Selection, c.Prefix, c.Reverify})
	return string(b)
}

// NameFor is a replay name derived from a request key: the same request gets the same name, so running
// an interrupted command again resumes it.
func NameFor(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "replay-" + hex.EncodeToString(sum[:6])
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case i > 0 && (r == '-' || r == '_'):
		default:
			return false
		}
	}
	return true
}

// ReplayProgress is where a running replay stands.
type ReplayProgress struct {
	Name string
	// StartSeq is the first sequence of this run, EndSeq the last sequence the replay may take, Seq the
	// last scanned.
	StartSeq, EndSeq, Seq uint64
	// Scanned counts messages read this run; Published those republished (or, in a dry run, that would
	// be); Duplicates those the target stream had stored already (a resumed replay repeating what it did
	// before an interruption).
	Scanned, Published, Duplicates int
	Done                           bool
}

// ReplayResult is what a call to [Replay] did.
type ReplayResult struct {
	Name   string `json:"name"`
	Stream string `json:"stream"`
	// Target describes where messages went: "prefix replay." with the storing stream or "core NATS", or
	// "reverify".
	Target string `json:"target"`
	DryRun bool   `json:"dry_run"`
	// Resumed is set when stored progress was picked up; ResumedAfter is the last sequence done before.
	Resumed      bool   `json:"resumed"`
	ResumedAfter uint64 `json:"resumed_after,omitempty"`
	// EndSeq is the last stream sequence the replay takes (the stream's last at the first start, or
	// ToSeq); LastSeq the last sequence done.
	EndSeq  uint64 `json:"end_seq"`
	LastSeq uint64 `json:"last_seq"`
	// Scanned, Published and Duplicates count this run (see [ReplayProgress]).
	Scanned    int `json:"scanned"`
	Published  int `json:"published"`
	Duplicates int `json:"duplicates"`
	// TotalPublished counts every run of this replay.
	TotalPublished int `json:"total_published"`
	// Done is set when the whole selection has been replayed.
	Done    bool          `json:"done"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// replayState is the value of a replay in contract.BucketReplay.
type replayState struct {
	Name           string    `json:"name"`
	Key            string    `json:"key"`
	Selection      Selection `json:"selection"`
	Prefix         string    `json:"prefix,omitempty"`
	Reverify       bool      `json:"reverify,omitempty"`
	EndSeq         uint64    `json:"end_seq"`
	LastSeq        uint64    `json:"last_seq"`
	TotalPublished int       `json:"total_published"`
	Done           bool      `json:"done"`
	StartedAt      time.Time `json:"started_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// Replay republishes the selected messages, in stream order, to cfg.Prefix + the original subject (or
// back into WEBHOOKS with cfg.Reverify), and returns what it did. It blocks until the selection is done,
// cfg.Max messages are published, or ctx ends; progress is saved in every case, so the same call resumes
// where this one stopped. ctx ending returns the result so far and ctx's error.
//
// Each message is published once per replay: progress is checkpointed every cfg.Checkpoint messages, and
// the messages of a replay carry Nats-Msg-Id <name>:<stream>:<seq> (re-verification: <job_id>.reverify.<name>),
// so a target stream with a duplicate window drops what a crashed run published after its last
// checkpoint. A target that no stream stores gets core NATS publishes, flushed before every checkpoint;
// only a crash (not an interruption) can repeat up to cfg.Checkpoint of those.
func Replay(ctx context.Context, cfg ReplayConfig) (ReplayResult, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return ReplayResult{}, err
	}
	r := &replayer{cfg: cfg, log: cfg.Log.With().Str("component", "replay").Str("replay", cfg.Name).Logger(),
		targets: map[string]string{}}
	return r.run(ctx)
}

type replayer struct {
	cfg     ReplayConfig
	log     zerolog.Logger
	kv      jetstream.KeyValue
	rev     uint64
	st      replayState
	res     ReplayResult
	core    bool              // some message went out over core NATS since the last flush
	targets map[string]string // target subject -> storing stream ("" = none)
	start   time.Time
	prog    ReplayProgress
	// pace spaces the publishes at cfg.Rate; nil is no pacing.
	pace *rate.Limiter
	// sinceSave counts the messages handled since the last checkpoint.
	sinceSave int
	// waiting is since when the consumer has delivered nothing while the server said messages wait for
	// it; zero once one came.
	waiting time.Time
}

// run is one replay: load or start its state, replay from where it stopped, and finish, which saves
// the progress whatever happened.
func (r *replayer) run(ctx context.Context) (ReplayResult, error) {
	r.start = time.Now()
	stream, err := r.cfg.JS.Stream(ctx, r.cfg.Selection.Stream)
	if err != nil {
		return ReplayResult{}, fmt.Errorf("stream %s: %w", r.cfg.Selection.Stream, err)
	}
	if err := r.loadState(ctx, stream.CachedInfo().State.LastSeq); err != nil {
		return ReplayResult{}, err
	}
	startSeq := r.begin()
	return r.finish(ctx, r.replayFrom(ctx, stream, startSeq))
}

// begin fills the result and progress from the loaded state and returns the first sequence to read.
func (r *replayer) begin() uint64 {
	r.res = ReplayResult{Name: r.cfg.Name, Stream: r.st.Selection.Stream, DryRun: r.cfg.DryRun, EndSeq: r.st.EndSeq,
		LastSeq: r.st.LastSeq, TotalPublished: r.st.TotalPublished}
	r.res.Target = "prefix " + r.st.Prefix
	if r.st.Reverify {
		r.res.Target = "reverify into " + r.cfg.Names.StreamWebhooks
	}
	if r.res.Resumed = r.st.LastSeq > 0; r.res.Resumed {
		r.res.ResumedAfter = r.st.LastSeq
	}
	if r.cfg.Rate > 0 {
		r.pace = newPacer(r.cfg.Rate)
	}
	startSeq := max(r.st.Selection.FromSeq, r.st.LastSeq+1, 1)
	r.prog = ReplayProgress{Name: r.cfg.Name, StartSeq: startSeq, EndSeq: r.st.EndSeq, Seq: r.st.LastSeq}
	return startSeq
}

// report hands the progress to cfg.Progress.
func (r *replayer) report() {
	r.prog.Scanned, r.prog.Published, r.prog.Duplicates, r.prog.Done = r.res.Scanned, r.res.Published, r.res.Duplicates, r.res.Done
	if r.cfg.Progress != nil {
		r.cfg.Progress(r.prog)
	}
}

// finished marks the replay done: every message through EndSeq is handled.
func (r *replayer) finished() {
	r.res.Done, r.st.Done = true, true
	r.st.LastSeq = r.st.EndSeq
}

// finish saves the progress (even when ctx has ended), reports and logs it, and returns the result.
func (r *replayer) finish(ctx context.Context, runErr error) (ReplayResult, error) {
	r.res.LastSeq = r.st.LastSeq
	r.res.TotalPublished = r.st.TotalPublished
	r.res.Elapsed = time.Since(r.start)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.save(sctx); err != nil {
		runErr = errors.Join(runErr, err)
	}
	r.report()
	ev := r.log.Info()
	if runErr != nil {
		ev = r.log.Warn().Err(runErr)
	}
	ev.Uint64("last_seq", r.st.LastSeq).Int("published", r.res.Published).Bool("done", r.res.Done).Msg("replay stopped")
	return r.res, runErr
}

// replayFrom replays the selection from startSeq until it is done, cfg.Max is reached, or ctx ends.
func (r *replayer) replayFrom(ctx context.Context, stream jetstream.Stream, startSeq uint64) error {
	sel := r.st.Selection
	if r.st.EndSeq == 0 || startSeq > r.st.EndSeq {
		r.res.Done, r.st.Done = true, true
		return nil
	}
	if empty, err := r.nothingFrom(ctx, stream, sel, startSeq); err != nil || empty {
		if empty {
			r.finished()
		}
		return err
	}
	cons, it, err := r.open(ctx, startSeq)
	if err != nil {
		return err
	}
	defer func() { it.Stop() }()
	r.log.Info().Uint64("from_seq", startSeq).Uint64("end_seq", r.st.EndSeq).Bool("resumed", r.res.Resumed).
		Bool("dry_run", r.cfg.DryRun).Str("target", r.res.Target).Msg("replay started")
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		msg, stop, err := r.next(ctx, cons, it)
		if errors.Is(err, errReplayStalled) {
			it.Stop()
			from := max(startSeq, r.st.LastSeq+1)
			r.log.Warn().Uint64("from_seq", from).Msg("replay consumer delivered nothing while messages waited: made again")
			if cons, it, err = r.open(ctx, from); err != nil {
				return err
			}
			continue
		}
		if stop || err != nil {
			return err
		}
		if msg == nil {
			continue
		}
		if stop, err := r.handle(ctx, msg); stop || err != nil {
			return err
		}
		r.report()
	}
}

// replayStall is how long the server may report messages waiting for the replay's consumer while none
// comes, before the replay makes its consumer again from the last sequence done. nats.go finds a lost
// pull request by missed heartbeats only within one Next call at least two heartbeats long (30 s by
// default), and the replay waits Idle at a time: on a loaded 3-node cluster a pull was lost (the consumer
// just made, not yet known to the server the command was on) and a replay waited out its command's
// deadline.
const replayStall = 2 * time.Second

// errReplayStalled is next's report that the consumer has not delivered for replayStall.
var errReplayStalled = errors.New("replay consumer stalled")

// open makes the ordered consumer that reads the selection from startSeq (or from Since on a first run).
func (r *replayer) open(ctx context.Context, startSeq uint64) (jetstream.Consumer, jetstream.MessagesContext, error) {
	sel := r.st.Selection
	occ := jetstream.OrderedConsumerConfig{FilterSubjects: sel.Subjects, InactiveThreshold: time.Minute}
	switch {
	case startSeq > 1 || sel.Since.IsZero():
		occ.DeliverPolicy, occ.OptStartSeq = jetstream.DeliverByStartSequencePolicy, startSeq
	default:
		since := sel.Since
		occ.DeliverPolicy, occ.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := r.cfg.JS.OrderedConsumer(ctx, sel.Stream, occ)
	if err != nil {
		return nil, nil, fmt.Errorf("consumer on %s: %w", sel.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", sel.Stream, err)
	}
	return cons, it, nil
}

// next waits up to cfg.Idle for the next message. With none, it stops when the server has nothing left
// for the consumer (the replay is finished), and otherwise returns no message and no stop: wait again.
func (r *replayer) next(ctx context.Context, cons jetstream.Consumer, it jetstream.MessagesContext) (jetstream.Msg, bool, error) {
	nctx, cancel := context.WithTimeout(ctx, r.cfg.Idle)
	msg, err := it.Next(jetstream.NextContext(nctx))
	cancel()
	switch {
	case err == nil:
		r.waiting = time.Time{}
		return msg, false, nil
	case ctx.Err() != nil:
		return nil, true, ctx.Err()
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		// Nothing came for a while: finished if the server has nothing left for us.
		ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
		ci, ierr := cons.Info(ictx)
		icancel()
		if ierr == nil && ci.NumPending == 0 {
			r.finished()
			return nil, true, nil
		}
		if r.waiting.IsZero() {
			r.waiting = time.Now()
		} else if time.Since(r.waiting) >= replayStall {
			r.waiting = time.Time{}
			return nil, false, errReplayStalled
		}
		return nil, false, nil
	}
	return nil, true, fmt.Errorf("read %s: %w", r.st.Selection.Stream, err)
}

// handle replays one message if the selection matches it, records it as done, and checkpoints. It
// reports stop when the replay is finished or cfg.Max is reached.
func (r *replayer) handle(ctx context.Context, msg jetstream.Msg) (stop bool, err error) {
	meta, err := msg.Metadata()
	if err != nil {
		return true, fmt.Errorf("message metadata: %w", err)
	}
	sel := r.st.Selection
	seq := meta.Sequence.Stream
	if seq > r.st.EndSeq || (!sel.Until.IsZero() && meta.Timestamp.After(sel.Until)) {
		r.finished()
		return true, nil
	}
	r.res.Scanned++
	if sel.matches(meta.Timestamp, msg.Headers().Get(jetstream.MsgIDHeader)) {
		if err := r.replayOne(ctx, msg, seq); err != nil {
			return true, err // progress stays before this message: it is replayed on resume
		}
	}
	r.st.LastSeq = seq
	r.prog.Seq = seq
	switch {
	case meta.NumPending == 0 || seq == r.st.EndSeq:
		r.finished()
		return true, nil
	case r.cfg.Max > 0 && r.res.Published >= r.cfg.Max:
		return true, nil
	}
	if r.sinceSave++; r.sinceSave >= r.cfg.Checkpoint {
		r.sinceSave = 0
		if err := r.save(ctx); err != nil {
			return true, err
		}
	}
	return false, nil
}

// replayOne publishes a selected message (paced), or only counts it in a dry run.
func (r *replayer) replayOne(ctx context.Context, msg jetstream.Msg, seq uint64) error {
	if !r.cfg.DryRun {
		if err := pace(ctx, r.pace); err != nil {
			return err
		}
		dup, err := r.publish(ctx, msg, seq)
		if err != nil {
			return err
		}
		if dup {
			r.res.Duplicates++
		}
		r.st.TotalPublished++
	}
	r.res.Published++
	return nil
}

// nothingFrom reports whether no message of the selection's subjects is stored from seq to EndSeq: a
// cheap check (direct gets by subject) that spares waiting Idle on an empty selection.
func (r *replayer) nothingFrom(ctx context.Context, stream jetstream.Stream, sel Selection, seq uint64) (bool, error) {
	subjects := sel.Subjects
	if len(subjects) == 0 {
		subjects = []string{">"}
	}
	for _, subj := range subjects {
		m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("look up %s from seq %d: %w", subj, seq, err)
		}
		if m.Sequence <= r.st.EndSeq {
			return false, nil
		}
	}
	return true, nil
}

// loadState reads or creates the replay's record; lastSeq is the stream's last sequence now.
func (r *replayer) loadState(ctx context.Context, lastSeq uint64) error {
	cfg := r.cfg
	fresh := replayState{Name: cfg.Name, Key: cfg.Key, Selection: cfg.Selection, Prefix: cfg.Prefix,
		Reverify: cfg.Reverify, EndSeq: lastSeq, StartedAt: cfg.Now().UTC()}
	if cfg.Selection.ToSeq > 0 && cfg.Selection.ToSeq < lastSeq {
		fresh.EndSeq = cfg.Selection.ToSeq
	}
	var kv jetstream.KeyValue
	var err error
	if cfg.DryRun { // a dry run creates nothing
		kv, err = cfg.JS.KeyValue(ctx, cfg.Names.BucketReplay)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			r.st = fresh
			return nil
		}
		if err != nil {
			return fmt.Errorf("bucket %s: %w", cfg.Names.BucketReplay, err)
		}
	} else if kv, err = natsx.EnsureReplayBucket(ctx, cfg.JS, cfg.Names, cfg.Replicas); err != nil {
		return err
	}
	r.kv = kv
	var e jetstream.KeyValueEntry
	err = untilHeard(ctx, func() (err error) { e, err = kv.Get(ctx, cfg.Name); return err })
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		r.st = fresh
		return nil
	}
	if err != nil {
		return fmt.Errorf("replay %s: %w", cfg.Name, err)
	}
	r.rev = e.Revision()
	var st replayState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return fmt.Errorf("replay %s: decode progress: %w", cfg.Name, err)
	}
	switch {
	case cfg.Restart:
		r.st = fresh
	case st.Key != cfg.Key:
		return fmt.Errorf("%w: %s was started %s for %s; pick another name or restart it", ErrReplayConflict,
			cfg.Name, st.StartedAt.Format(time.RFC3339), describe(st))
	case st.Done:
		return fmt.Errorf("%w: %s replayed %d messages up to seq %d (finished %s); restart it to replay again",
			ErrReplayDone, cfg.Name, st.TotalPublished, st.LastSeq, st.UpdatedAt.Format(time.RFC3339))
	default:
		r.st = st
	}
	return nil
}

func describe(st replayState) string {
	var b strings.Builder
	b.WriteString(st.Selection.Stream)
	if len(st.Selection.Subjects) > 0 {
		b.WriteString(" " + strings.Join(st.Selection.Subjects, ","))
	}
	if st.Reverify {
		b.WriteString(" (reverify)")
	} else {
		b.WriteString(" to " + st.Prefix)
	}
	return b.String()
}

// save stores the progress (after flushing core publishes, so a saved sequence is never ahead of what
// the server has). A dry run saves nothing.
func (r *replayer) save(ctx context.Context) error {
	if r.cfg.DryRun || r.kv == nil {
		return nil
	}
	if r.core {
		if err := r.cfg.JS.Conn().FlushWithContext(ctx); err != nil {
			return fmt.Errorf("flush replayed messages: %w", err)
		}
		r.core = false
	}
	r.st.UpdatedAt = r.cfg.Now().UTC()
	b, err := json.Marshal(r.st)
	if err != nil {
		return err
	}
	var rev uint64
	if r.rev == 0 {
		rev, err = r.kv.Create(ctx, r.cfg.Name, b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%w: %s was started by someone else meanwhile", ErrReplayConflict, r.cfg.Name)
		}
	} else {
		rev, err = r.kv.Update(ctx, r.cfg.Name, b, r.rev)
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("%w: %s is being run by someone else too", ErrReplayConflict, r.cfg.Name)
		}
	}
	if err != nil {
		return fmt.Errorf("save replay progress %s: %w", r.cfg.Name, err)
	}
	r.rev = rev
	return nil
}

// publish republishes one message and reports whether the target stream had it already.
func (r *replayer) publish(ctx context.Context, msg jetstream.Msg, seq uint64) (bool, error) {
	src := msg.Headers()
	out := nats.NewMsg("")
	out.Data = msg.Data()
	for k, v := range src {
		if strings.HasPrefix(k, "Nats-") {
			continue // Nats-Msg-Id, Nats-Expected-*, TTLs: server directives of the original publish
		}
		out.Header[k] = slices.Clone(v)
	}
	origID := src.Get(jetstream.MsgIDHeader)
	out.Header.Set(contract.HeaderOriginalSubject, msg.Subject())
	out.Header.Set(contract.HeaderOriginalSeq, strconv.FormatUint(seq, 10))
	if origID != "" {
		out.Header.Set(contract.HeaderOriginalMsgID, origID)
	}
	out.Header.Set(contract.HeaderReplay, r.cfg.Name)

	if r.st.Reverify {
		// Back onto its own subject in WEBHOOKS, under an id the duplicate window has not seen: the
		// verifier takes the job id from the body, and the JOBS record keeps the result single.
		out.Subject = msg.Subject()
		out.Header.Del(contract.HeaderOriginalSubject)
		id := jobIDOf(msg.Data(), origID)
		if id == "" {
			id = fmt.Sprintf("%s.%d", r.st.Selection.Stream, seq)
		}
		out.Header.Set(jetstream.MsgIDHeader, contract.ReverifyMsgID(id, r.cfg.Name))
		return publishJS(ctx, r.cfg.JS, out)
	}
	out.Subject = r.st.Prefix + msg.Subject()
	stream, err := r.targetStream(ctx, out.Subject)
	if err != nil {
		return false, err
	}
	if stream == "" {
		if err := r.cfg.JS.Conn().PublishMsg(out); err != nil {
			return false, fmt.Errorf("publish %s: %w", out.Subject, err)
		}
		r.core = true
		return false, nil
	}
	out.Header.Set(jetstream.MsgIDHeader, contract.ReplayMsgID(r.cfg.Name, r.st.Selection.Stream, seq))
	return publishJS(ctx, r.cfg.JS, out)
}

// targetStream names the stream that stores subject, or "" for none; a bridge stream is an error.
func (r *replayer) targetStream(ctx context.Context, subject string) (string, error) {
	if s, ok := r.targets[subject]; ok {
		return s, nil
	}
	s, err := r.cfg.JS.StreamNameBySubject(ctx, subject)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = "", nil
	}
	if err != nil {
		return "", fmt.Errorf("which stream stores %s: %w", subject, err)
	}
	if contract.IsBridgeStream(s) {
		return "", fmt.Errorf("%w: %s is stored by %s; choose a prefix outside webhooks., results., deadletter. and slowlane.", ErrTargetIsBridgeStream, subject, s)
	}
	r.targets[subject] = s
	if len(r.targets) == 1 {
		where := "core NATS (no stream stores it)"
		if s != "" {
			where = "stream " + s
		}
		r.log.Info().Str("subject", subject).Str("to", where).Msg("replay target")
	}
	return s, nil
}

// publishJS publishes with acknowledgement, retrying while a clustered stream elects a leader or the
// same Nats-Msg-Id is still being replicated, and reports a duplicate acknowledgement.
func publishJS(ctx context.Context, js jetstream.JetStream, m *nats.Msg) (bool, error) {
	b := retry.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := js.PublishMsg(pctx, m)
		cancel()
		switch {
		case err == nil:
			return ack.Duplicate, nil
		case !retryable(err):
			return false, fmt.Errorf("publish %s: %w", m.Subject, err)
		}
		if werr := b.Wait(ctx); werr != nil {
			return false, fmt.Errorf("publish %s: %w (last error: %v)", m.Subject, werr, err)
		}
	}
}

// retryable reports whether a JetStream publish may succeed when tried again.
func retryable(err error) bool {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if natsx.IsDuplicateInProcess(err) {
		return true // the same Nats-Msg-Id is being replicated
	}
	apiErr, ok := errors.AsType[*jetstream.APIError](err)
	return ok && apiErr.Code == 503 // no leader right now
}

// jobIDOf returns the top-level "job_id" of a webhook body, else the job id at the head of msgID.
func jobIDOf(body []byte, msgID string) string {
	var v struct {
		JobID string `json:"job_id"`
	}
	if json.Unmarshal(body, &v) == nil {
		if id, ok := jobs.CanonicalID(v.JobID); ok {
			return id
		}
	}
	head, _, _ := strings.Cut(msgID, ".")
	id, _ := jobs.CanonicalID(head)
	return id
}

// newPacer spaces publishes at perSecond (golang.org/x/time/rate, no burst); nil when perSecond is not
// positive: no pacing.
func newPacer(perSecond float64) *rate.Limiter {
	if perSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(perSecond), 1)
}

// pace waits for the next publish's turn; a nil pacer never waits.
func pace(ctx context.Context, l *rate.Limiter) error {
	if l == nil {
		return nil
	}
	return l.Wait(ctx)
}
