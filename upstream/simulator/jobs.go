package simulator

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/evershield/bridge/upstream"
)

// Job statuses.
const (
	statusQueued     = "queued"
	statusProcessing = "processing"
	statusCompleted  = "completed"
	statusFailed     = "failed"
)

// Default values of an [Outcome].
const (
	DefaultErrorCode = "PROCESSING_FAILED"
	DefaultReason    = "Content violates the moderation policy"
)

// builtins are the built-in categories of media jobs, all enabled in the simulator: upstream's, sorted,
// because a plan draws its flagged category by index and the n-th job of a seed must keep its fate.
var builtins = slices.Sorted(slices.Values(upstream.BuiltinCategories))

// plan is a job's fate, drawn when it is created.
type plan struct {
	neverFinish, fail, prohibited, drop, duplicate bool
	category                                       string   // the built-in flagged on a prohibited media job
	custom                                         []string // custom categories marked true (MarkerCustom)
}

// job is one simulated job; its fields are guarded by Simulator.mu.
type job struct {
	id, account, typ string
	prompt           string // the submitted text; empty for media jobs
	key              *Key   // that submitted it
	media            bool   // image or video: has built-in categories
	status           string
	created          time.Time
	completed        time.Time
	prohibited       bool
	reason           string
	errorCode        string
	categories       map[string]bool // built-ins of a completed media job
	custom           map[string]bool // custom categories of a completed job; nil when none was set
	webhookURL       string
	plan             plan
	held             bool
	webhooks         []Webhook
}

// Outcome is how a test ends a job with [Simulator.CompleteJob]. The zero value completes it as passed.
type Outcome struct {
	// Failed ends the job failed with ErrorCode (default DefaultErrorCode).
	Failed    bool
	ErrorCode string
	// Prohibited rejects it; Reason (default DefaultReason) is set for text jobs.
	Prohibited bool
	Reason     string
	// Categories overrides built-in categories of a media job (others are false).
	Categories map[string]bool
	// Custom sets custom categories (those set by [Simulator.SetCustomCategories]; others are false, and
	// slugs not set are ignored). A true one rejects the job.
	Custom map[string]bool
}

// newJob is what a submission asks of a job: its type, whether it is media, the webhook URL, the sim:
// marks of its text, and the text itself (prompt; empty for media).
type newJob struct {
	typ         string
	media       bool
	hook, marks string
	prompt      string
}

// create registers a new queued job and starts its clock.
func (s *Simulator) create(key *Key, nj newJob) *job {
	acct := key.Account
	s.mu.Lock()
	s.seq++
	r := rand.New(rand.NewPCG(s.seed, s.seq))
	c := s.cfg
	// Always draw every value, so the n-th job's fate does not depend on the rates of the others.
	p := plan{
		neverFinish: r.Float64() < c.NeverFinishRate,
		fail:        r.Float64() < c.FailRate,
		prohibited:  r.Float64() < c.ProhibitedRate,
		drop:        r.Float64() < c.DropRate,
		duplicate:   r.Float64() < c.DuplicateRate,
		category:    builtins[r.IntN(len(builtins))],
	}
	p.prohibited = p.prohibited || strings.Contains(nj.marks, "sim:reject")
	p.fail = p.fail || strings.Contains(nj.marks, "sim:fail")
	p.drop = p.drop || strings.Contains(nj.marks, "sim:drop")
	p.custom = markedCustom(nj.marks)
	j := &job{
		id: newID(), account: acct, key: key, typ: nj.typ, prompt: nj.prompt, media: nj.media, status: statusQueued,
		created: s.cfg.Now().UTC(), webhookURL: nj.hook, plan: p,
		held: s.holdNew || strings.Contains(nj.marks, "sim:hold"),
	}
	s.jobs[j.id] = j
	a := s.accounts[acct]
	a.jobs = append(a.jobs, j)
	if c.JobRetention > 0 && s.seq%evictEvery == 0 {
		s.evictLocked(j.created.Add(-c.JobRetention))
	}
	s.mu.Unlock()
	s.after(c.QueueDelay, func() { s.process(j) })
	return j
}

// evictEvery is how many creations pass between two evictions of old jobs.
const evictEvery = 1024

// evictLocked forgets finished jobs created before cutoff, so a long-running simulator keeps bounded
// memory; jobs still running (or held) stay. s.mu must be held.
func (s *Simulator) evictLocked(cutoff time.Time) {
	for _, a := range s.accounts {
		old := 0
		for old < len(a.jobs) && a.jobs[old].created.Before(cutoff) {
			old++
		}
		if old == 0 {
			continue
		}
		kept := make([]*job, 0, len(a.jobs))
		for _, j := range a.jobs[:old] {
			if (j.status == statusCompleted || j.status == statusFailed) && !j.held {
				delete(s.jobs, j.id)
				continue
			}
			kept = append(kept, j)
		}
		a.jobs = append(kept, a.jobs[old:]...)
	}
}

// after runs f after d (at once for d == 0), unless the simulator is closed by then.
func (s *Simulator) after(d time.Duration, f func()) {
	run := func() {
		if !s.closed.Load() {
			f()
		}
	}
	if d <= 0 {
		run()
		return
	}
	time.AfterFunc(d, run)
}

// process moves a queued job to processing and schedules its end.
func (s *Simulator) process(j *job) {
	s.mu.Lock()
	if j.status != statusQueued {
		s.mu.Unlock()
		return
	}
	j.status = statusProcessing
	stay := j.held || j.plan.neverFinish
	s.mu.Unlock()
	if !stay {
		s.after(s.cfg.ProcessDelay, func() { s.finish(j, nil) })
	}
}

// finish ends a job by its plan, or by o when a test forces it; then sends its webhook.
func (s *Simulator) finish(j *job, o *Outcome) error {
	s.mu.Lock()
	switch {
	case j.status == statusCompleted || j.status == statusFailed:
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrJobTerminal, j.id)
	case o == nil && j.held:
		s.mu.Unlock()
		return nil
	}
	if o == nil {
		o = j.plan.outcome(j.media)
	}
	s.settle(j, o)
	target := j.webhookURL
	if target == "" {
		target = s.accounts[j.account].webhook
	}
	body := s.webhookJSON(j)
	if s.v2() {
		body = s.webhookJSONV2(j)
	}
	p := j.plan
	if target == "" {
		s.mu.Unlock()
		return nil
	}
	if p.drop {
		j.webhooks = append(j.webhooks, Webhook{At: j.completed, URL: target, Outcome: WebhookDropped})
		s.mu.Unlock()
		s.dropped.Add(1)
		return nil
	}
	s.mu.Unlock()
	d := delivery{j: j, url: target, body: body, dup: p.duplicate, attempt: 1}
	s.after(s.cfg.WebhookDelay, func() {
		select {
		case s.whq <- d:
		default:
			s.recordWebhook(j, Webhook{At: s.cfg.Now(), URL: target, Outcome: WebhookFailed, Err: "webhook queue full"})
		}
	})
	return nil
}

// outcome is the Outcome a job's plan calls for.
func (p plan) outcome(media bool) *Outcome {
	o := &Outcome{Failed: p.fail, Prohibited: p.prohibited}
	if p.prohibited && media {
		o.Categories = map[string]bool{p.category: true}
	}
	if len(p.custom) > 0 {
		o.Custom = make(map[string]bool, len(p.custom))
		for _, slug := range p.custom {
			o.Custom[slug] = true
		}
	}
	return o
}

// settle ends the job now with o: failed, or completed with its decision, categories (built-in on media
// jobs, custom on every job while custom categories are set) and reason. Any true category rejects it.
// Called with mu held.
func (s *Simulator) settle(j *job, o *Outcome) {
	j.held = false
	j.completed = s.cfg.Now().UTC()
	if o.Failed {
		j.status, j.errorCode = statusFailed, cmp.Or(o.ErrorCode, DefaultErrorCode)
		return
	}
	j.status, j.prohibited = statusCompleted, o.Prohibited
	j.custom = s.customOf(o)
	for _, v := range j.custom {
		j.prohibited = j.prohibited || v
	}
	if j.media {
		j.categories = make(map[string]bool, len(builtins))
		for _, c := range builtins {
			j.categories[c] = o.Categories[c]
			j.prohibited = j.prohibited || o.Categories[c]
		}
	} else if j.prohibited {
		j.reason = cmp.Or(o.Reason, DefaultReason)
	}
}

// categories returns the job's categories object: custom always, built-ins on completed media jobs.
func (j *job) categoriesJSON() map[string]any {
	c := make(map[string]any, 4)
	c["custom"] = struct{}{}
	if len(j.custom) > 0 {
		c["custom"] = j.custom
	}
	for k, v := range j.categories {
		c[k] = v
	}
	return c
}

func (j *job) decision() *bool {
	if j.status != statusCompleted {
		return nil
	}
	v := j.prohibited
	return &v
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// jobJSON renders GET /job/{id}. Called with mu held (read).
func (s *Simulator) jobJSON(j *job) []byte {
	var completed *string
	if !j.completed.IsZero() {
		v := stamp(j.completed)
		completed = &v
	}
	type v1Job struct {
		JobID        string         `json:"job_id"`
		Type         string         `json:"type"`
		Status       string         `json:"status"`
		IsProhibited *bool          `json:"is_prohibited"`
		Categories   map[string]any `json:"categories"`
		Reason       string         `json:"reason,omitempty"`
		ErrorCode    string         `json:"error_code,omitempty"`
		CreatedAt    string         `json:"created_at"`
		CompletedAt  *string        `json:"completed_at"`
	}
	v1 := v1Job{j.id, j.typ, j.status, j.decision(), j.categoriesJSON(), j.reason, j.errorCode, stamp(j.created), completed}
	var b []byte
	if s.v2() {
		var nsfw *bool
		if j.media && j.status == statusCompleted {
			v := j.categories["nsfw"]
			nsfw = &v
		}
		b, _ = json.Marshal(struct {
			v1Job
			NSFW       *bool  `json:"nsfw,omitempty"`
			APIKeyID   string `json:"api_key_id"`
			APIKeyName string `json:"api_key_name"`
		}{v1, nsfw, j.key.ID, j.key.Name})
	} else {
		b, _ = json.Marshal(v1)
	}
	if len(s.extra) > 2 { // {"k":v,...}: splice in before the closing brace
		b = append(append(b[:len(b)-1], ','), s.extra[1:]...)
	}
	return b
}

// webhookJSON renders the webhook body of §5: no type, no created_at. Called with mu held.
func (s *Simulator) webhookJSON(j *job) []byte {
	b, _ := json.Marshal(struct {
		JobID        string         `json:"job_id"`
		Status       string         `json:"status"`
		IsProhibited *bool          `json:"is_prohibited"`
		Categories   map[string]any `json:"categories"`
		Reason       string         `json:"reason,omitempty"`
		ErrorCode    string         `json:"error_code,omitempty"`
		CompletedAt  string         `json:"completed_at"`
	}{j.id, j.status, j.decision(), j.categoriesJSON(), j.reason, j.errorCode, stamp(j.completed)})
	return b
}

// delivery is one webhook to send (twice when dup); attempt counts from 1 (v2 retries it).
type delivery struct {
	j       *job
	url     string
	body    []byte
	dup     bool
	attempt int
}

func (s *Simulator) webhookWorker() {
	defer s.whWG.Done()
	for {
		select {
		case <-s.whCtx.Done():
			return
		case d := <-s.whq:
			ok := s.post(d, false)
			if d.dup {
				s.post(d, true)
			}
			if !ok {
				s.retry(d)
			}
		}
	}
}

// retry schedules the next attempt of a webhook that was not delivered (v2 only), or counts it as
// exhausted after the last one.
func (s *Simulator) retry(d delivery) {
	if !s.v2() || s.whCtx.Err() != nil {
		return
	}
	sched := s.cfg.WebhookRetrySchedule
	if d.attempt > len(sched) {
		s.exhausted.Add(1)
		return
	}
	wait := time.Duration(float64(sched[d.attempt-1]) * s.cfg.WebhookRetryScale)
	d.attempt++
	d.dup = false // a duplicate is the fault of one send, not of the message
	s.after(wait, func() {
		select {
		case s.whq <- d:
		default:
			s.recordWebhook(d.j, Webhook{At: s.cfg.Now(), URL: d.url, Attempt: d.attempt, Outcome: WebhookFailed,
				Err: "webhook queue full"})
		}
	})
}

// post sends one webhook attempt and records the outcome; it reports whether it was delivered (or the
// simulator is closing, which is no outcome of the receiver).
func (s *Simulator) post(d delivery, dup bool) bool {
	rec := Webhook{At: s.cfg.Now(), URL: d.url, Attempt: d.attempt, Duplicate: dup, Outcome: WebhookFailed}
	req, err := http.NewRequestWithContext(s.whCtx, http.MethodPost, d.url, bytes.NewReader(d.body))
	if err == nil {
		req.Header.Set("Content-Type", "application/json")
		// One message id per job: a duplicate is the same message sent again, as a retry is.
		switch {
		case s.v2():
			rec.ID = webhookIDV2(d.j.id)
			req.Header.Set("X-Omnifence-Delivery-Id", rec.ID)
		case s.webhookKey != nil:
			rec.ID = "msg_" + d.j.id
		}
		if s.webhookKey != nil {
			signer(s.webhookKey).sign(req.Header, rec.ID, s.cfg.Now(), d.body) // each attempt signed anew
		}
		var resp *http.Response
		if resp, err = s.cfg.HTTP.Do(req); err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // drained for reuse
			resp.Body.Close()
			rec.Status = resp.StatusCode
			if resp.StatusCode >= 200 && resp.StatusCode < 300 {
				rec.Outcome = WebhookDelivered
			}
		}
	}
	if err != nil {
		if s.whCtx.Err() != nil {
			return true // closing: not an outcome of the receiver
		}
		rec.Err = err.Error()
	}
	if rec.Outcome != WebhookDelivered {
		s.log.Debug().Str("job_id", d.j.id).Int("attempt", d.attempt).Int("status", rec.Status).Str("err", rec.Err).
			Msg("webhook not delivered")
	}
	s.recordWebhook(d.j, rec)
	return rec.Outcome == WebhookDelivered
}

func (s *Simulator) recordWebhook(j *job, w Webhook) {
	if w.Attempt > 1 && !w.Duplicate {
		s.retries.Add(1)
	}
	switch {
	case w.Duplicate:
		s.duplicated.Add(1)
	case w.Outcome == WebhookDelivered:
		s.delivered.Add(1)
	default:
		s.failed.Add(1)
	}
	s.mu.Lock()
	j.webhooks = append(j.webhooks, w)
	s.mu.Unlock()
}

// HoldJob keeps a queued or processing job in processing until CompleteJob or ReleaseJob.
func (s *Simulator) HoldJob(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	switch {
	case j == nil:
		return fmt.Errorf("%w: %s", ErrUnknownJob, id)
	case j.status == statusCompleted || j.status == statusFailed:
		return fmt.Errorf("%w: %s", ErrJobTerminal, id)
	}
	j.held = true
	return nil
}

// SetHoldNew makes every job created from now on held (see HoldJob) while on is true.
func (s *Simulator) SetHoldNew(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holdNew = on
}

// CompleteJob ends a job now with o (held or not), sending its webhook as any completion does
// (subject to its drop/duplicate fate and WebhookDelay).
func (s *Simulator) CompleteJob(id string, o Outcome) error {
	s.mu.RLock()
	j := s.jobs[id]
	s.mu.RUnlock()
	if j == nil {
		return fmt.Errorf("%w: %s", ErrUnknownJob, id)
	}
	return s.finish(j, &o)
}

// ReleaseJob lets a held (or never-finishing) job end by its drawn fate after ProcessDelay.
func (s *Simulator) ReleaseJob(id string) error {
	s.mu.Lock()
	j := s.jobs[id]
	switch {
	case j == nil:
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrUnknownJob, id)
	case j.status == statusCompleted || j.status == statusFailed:
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrJobTerminal, id)
	}
	j.held, j.plan.neverFinish = false, false
	processing := j.status == statusProcessing
	s.mu.Unlock()
	if processing {
		s.after(s.cfg.ProcessDelay, func() { s.finish(j, nil) }) //nolint:errcheck // a test may have completed it meanwhile
	}
	return nil
}
