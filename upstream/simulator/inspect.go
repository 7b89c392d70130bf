package simulator

import (
	"sync"
	"time"
)

// Webhook outcomes.
const (
	WebhookDelivered = "delivered" // a 2xx answer
	WebhookFailed    = "failed"    // non-2xx, timeout, connection error, or the send queue was full
	WebhookDropped   = "dropped"   // the job's fate was to lose its webhook: never sent
)

// Webhook is one webhook attempt of a job.
type Webhook struct {
	At  time.Time `json:"at"`
	URL string    `json:"url"`
	// ID is the webhook-id sent (v2, or v1 with a WebhookSecret): the same on every attempt of a job.
	ID string `json:"id,omitempty"`
	// Attempt counts the attempts of this webhook from 1; only v2 makes more than one.
	Attempt int `json:"attempt"`
	// Outcome is WebhookDelivered, WebhookFailed or WebhookDropped.
	Outcome string `json:"outcome"`
	// Duplicate marks the second copy of a duplicated webhook.
	Duplicate bool   `json:"duplicate,omitempty"`
	Status    int    `json:"status,omitempty"`
	Err       string `json:"err,omitempty"`
}

// Call is one request the simulator answered.
type Call struct {
	At      time.Time `json:"at"`
	Method  string    `json:"method"`
	Path    string    `json:"path"` // path and query
	Status  int       `json:"status"`
	Account string    `json:"account,omitempty"`
}

// callLog counts the calls of one endpoint and keeps the most recent max of them.
type callLog struct {
	max   int
	mu    sync.Mutex // mu guards the fields below
	n     int
	calls []Call // ring once full; next is the oldest
	next  int
}

func (l *callLog) add(c Call) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if l.max == 0 {
		return
	}
	if len(l.calls) < l.max {
		l.calls = append(l.calls, c)
		return
	}
	l.calls[l.next] = c
	l.next = (l.next + 1) % l.max
}

func (l *callLog) snapshot() []Call {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Call, 0, len(l.calls))
	out = append(out, l.calls[l.next:]...)
	return append(out, l.calls[:l.next]...)
}

func (l *callLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// Calls returns the kept calls of an endpoint (an Endpoint… constant), oldest first.
func (s *Simulator) Calls(endpoint string) []Call {
	if l := s.calls[endpoint]; l != nil {
		return l.snapshot()
	}
	return nil
}

// CallCount is the number of calls an endpoint answered.
func (s *Simulator) CallCount(endpoint string) int {
	if l := s.calls[endpoint]; l != nil {
		return l.count()
	}
	return 0
}

// JobInfo is a snapshot of one job, for inspection.
type JobInfo struct {
	ID          string    `json:"job_id"`
	Account     string    `json:"account"`
	Type        string    `json:"type"`
	Status      string    `json:"status"`
	Prohibited  *bool     `json:"is_prohibited"`
	ErrorCode   string    `json:"error_code,omitempty"`
	Held        bool      `json:"held,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	CompletedAt time.Time `json:"completed_at,omitzero"`
	WebhookURL  string    `json:"webhook_url,omitempty"`
	Webhooks    []Webhook `json:"webhooks,omitempty"`
}

func (j *job) info() JobInfo {
	return JobInfo{ID: j.id, Account: j.account, Type: j.typ, Status: j.status, Prohibited: j.decision(),
		ErrorCode: j.errorCode, Held: j.held, CreatedAt: j.created, CompletedAt: j.completed,
		WebhookURL: j.webhookURL, Webhooks: append([]Webhook(nil), j.webhooks...)}
}

// Job returns a snapshot of one job.
func (s *Simulator) Job(id string) (JobInfo, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	j := s.jobs[id]
	if j == nil {
		return JobInfo{}, false
	}
	return j.info(), true
}

// Jobs returns snapshots of every job, oldest first per account.
func (s *Simulator) Jobs() []JobInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]JobInfo, 0, len(s.jobs))
	for _, a := range s.accounts {
		for _, j := range a.jobs {
			out = append(out, j.info())
		}
	}
	return out
}

// Webhooks returns the webhook attempts of one job, in order.
func (s *Simulator) Webhooks(id string) []Webhook {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if j := s.jobs[id]; j != nil {
		return append([]Webhook(nil), j.webhooks...)
	}
	return nil
}

// Stats is the summary served at GET /_sim/stats.
type Stats struct {
	Seed     uint64         `json:"seed"`
	Contract string         `json:"contract"`
	Calls    map[string]int `json:"calls"`
	// Jobs counts jobs by status; Held counts held ones.
	Jobs     map[string]int `json:"jobs"`
	Held     int            `json:"held"`
	Webhooks WebhookStats   `json:"webhooks"`
}

// WebhookStats counts webhook attempts by outcome; Duplicated counts second copies sent (whatever their
// outcome), the others first copies, retries included (so in v2 Delivered+Failed is every attempt).
// Retries counts the v2 attempts after the first, Exhausted the v2 webhooks that failed every attempt.
type WebhookStats struct {
	Delivered  int64 `json:"delivered"`
	Failed     int64 `json:"failed"`
	Dropped    int64 `json:"dropped"`
	Duplicated int64 `json:"duplicated"`
	Retries    int64 `json:"retries"`
	Exhausted  int64 `json:"exhausted"`
}

// Stats returns the current summary.
func (s *Simulator) Stats() Stats {
	st := Stats{Seed: s.seed, Contract: s.cfg.Contract, Calls: make(map[string]int, len(s.calls)), Jobs: make(map[string]int, 4),
		Webhooks: WebhookStats{Delivered: s.delivered.Load(), Failed: s.failed.Load(),
			Dropped: s.dropped.Load(), Duplicated: s.duplicated.Load(), Retries: s.retries.Load(),
			Exhausted: s.exhausted.Load()}}
	for ep, l := range s.calls {
		st.Calls[ep] = l.count()
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, j := range s.jobs {
		st.Jobs[j.status]++
		if j.held {
			st.Held++
		}
	}
	return st
}
