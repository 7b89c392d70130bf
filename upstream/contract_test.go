package upstream_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestContractAutoBillsNoProbe: an auto client decides at the first submission. Against v2, a prompt
// goes to the retired /moderate/prompt (410, no job) and then to /moderate/text; against v1 it goes once.
// A first image submission is preceded by an empty probe that creates no job in either contract. The
// simulator's counts are the proof: submit calls, and jobs created.
func TestContractAutoBillsNoProbe(t *testing.T) {
	tests := []struct {
		name, simContract, modality string
		fields                      map[string]string
		wantContract, wantEndpoint  string
		wantCalls                   int // submit calls of the first submission
	}{
		{"v2 prompt", simulator.ContractV2, "prompt", map[string]string{"prompt": "hi"}, upstream.ContractV2, "/moderate/text", 2},
		{"v2 chat", simulator.ContractV2, "chat", map[string]string{"prompt": "hi"}, upstream.ContractV2, "/moderate/text", 2},
		{"v2 image", simulator.ContractV2, "image", map[string]string{"image_url": "https://cdn.example.com/a.png"}, upstream.ContractV2, "/moderate/image", 2},
		{"v1 prompt", simulator.ContractV1, "prompt", map[string]string{"prompt": "hi"}, upstream.ContractV1, "/moderate/prompt", 1},
		{"v1 image", simulator.ContractV1, "image", map[string]string{"image_url": "https://cdn.example.com/a.png"}, upstream.ContractV1, "/moderate/image", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := simtest.Run(t, simulator.Config{QueueDelay: -1, ProcessDelay: -1}, simtest.WithContract(tt.simContract))
			c := simtest.Client(t, sim, func(c *upstream.Config) { c.Contract = upstream.ContractAuto })
			if got := c.Contract(); got != upstream.ContractAuto {
				t.Fatalf("contract before any submission %q, want auto", got)
			}
			s, err := c.Submit(natstest.Ctx(t), tt.modality, tt.fields, "")
			if err != nil {
				t.Fatal(err)
			}
			if c.Contract() != tt.wantContract || s.Endpoint != tt.wantEndpoint {
				t.Fatalf("contract %q endpoint %q, want %q %q", c.Contract(), s.Endpoint, tt.wantContract, tt.wantEndpoint)
			}
			if n := sim.CallCount(simulator.EndpointSubmit); n != tt.wantCalls {
				t.Fatalf("%d submit calls, want %d", n, tt.wantCalls)
			}
			if jobs := sim.Jobs(); len(jobs) != 1 || jobs[0].ID != s.JobID {
				t.Fatalf("jobs at the simulator %+v, want only %s: a probe was billed", jobs, s.JobID)
			}
			// Decided: the next submission is one call.
			if _, err := c.Submit(natstest.Ctx(t), tt.modality, tt.fields, ""); err != nil {
				t.Fatal(err)
			}
			if n := sim.CallCount(simulator.EndpointSubmit); n != tt.wantCalls+1 {
				t.Fatalf("%d submit calls after the second submission, want %d", n, tt.wantCalls+1)
			}
		})
	}
}

// TestContractV2RoutesRetiredPaths: a v2 client sends prompt and chat to /moderate/text with the field
// text, and the v1 media fields under their v2 names; the jobs are text and image jobs.
func TestContractV2RoutesRetiredPaths(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{QueueDelay: -1, ProcessDelay: -1}, simtest.WithContract(simulator.ContractV2))
	c := simtest.Client(t, sim, func(c *upstream.Config) { c.Contract = upstream.ContractV2 })
	for _, tc := range []struct {
		modality, field, value, wantType, wantEndpoint string
	}{
		{"prompt", "prompt", "hello", "text", "/moderate/text"},
		{"chat", "prompt", "hello", "text", "/moderate/text"},
		{"text", "text", "hello", "text", "/moderate/text"},
		{"image", "image_url", "https://cdn.example.com/a.png", "image", "/moderate/image"},
		{"video", "video_url", "https://cdn.example.com/a.mp4", "video", "/moderate/video"},
		{"audio", "audio", "https://cdn.example.com/a.mp3", "audio", "/moderate/audio"},
	} {
		s, err := c.Submit(natstest.Ctx(t), tc.modality, map[string]string{tc.field: tc.value}, "")
		if err != nil {
			t.Fatalf("%s: %v", tc.modality, err)
		}
		j, _ := sim.Job(s.JobID)
		if j.Type != tc.wantType || s.Endpoint != tc.wantEndpoint {
			t.Fatalf("%s: job type %q endpoint %q, want %q %q", tc.modality, j.Type, s.Endpoint, tc.wantType, tc.wantEndpoint)
		}
	}
	if n := sim.CallCount(simulator.EndpointSubmit); n != 6 {
		t.Fatalf("%d submit calls, want 6 (no retired path tried)", n)
	}
	_, err := c.Submit(natstest.Ctx(t), "prompt", map[string]string{"prompt": "a", "text": "b"}, "")
	if !errors.Is(err, upstream.ErrInvalidArgument) {
		t.Fatalf("prompt and text together: %v, want ErrInvalidArgument", err)
	}
}

// TestContractV2MediaErrors: 413, 415 and 422 of the newer contract reach the caller as *Error with the
// upstream's status and code, match their sentinels, and are not retryable.
func TestContractV2MediaErrors(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{}, simtest.WithContract(simulator.ContractV2))
	c := simtest.Client(t, sim, func(c *upstream.Config) { c.Contract = upstream.ContractV2 })
	for _, tc := range []struct {
		url    string
		status int
		code   string
		want   error
	}{
		{"https://cdn.example.com/sim:too-large.png", 413, "PAYLOAD_TOO_LARGE", upstream.ErrPayloadTooLarge},
		{"https://cdn.example.com/index.html", 415, "UNSUPPORTED_MEDIA", upstream.ErrUnsupportedMedia},
		{"https://media.invalid/a.png", 422, "MEDIA_UNREACHABLE", upstream.ErrMediaUnreachable},
	} {
		_, err := c.Submit(natstest.Ctx(t), "image", map[string]string{"image_url": tc.url}, "")
		ue := asError(t, err)
		if ue.Status != tc.status || ue.Code != tc.code || !errors.Is(err, tc.want) || ue.Retryable() {
			t.Fatalf("%s: %v (status %d code %q retryable %v), want %d %s", tc.url, err, ue.Status, ue.Code, ue.Retryable(), tc.status, tc.code)
		}
	}
	if n := len(sim.Jobs()); n != 0 {
		t.Fatalf("%d jobs, want none", n)
	}
}

// TestHeaderObserverHearsEveryAnswer: a Limiter that implements HeaderObserver is told the v2
// simulator's x-ratelimit-* on each answer.
func TestHeaderObserverHearsEveryAnswer(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{RPM: 20, QueueDelay: -1, ProcessDelay: -1}, simtest.WithContract(simulator.ContractV2))
	lim := &recordingLimiter{}
	c := simtest.Client(t, sim, func(c *upstream.Config) { c.Contract = upstream.ContractV2; c.Limiter = lim })
	s, err := c.Submit(natstest.Ctx(t), "prompt", map[string]string{"prompt": "hi"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetJob(natstest.Ctx(t), s.JobID, upstream.ClassPoll); err != nil {
		t.Fatal(err)
	}
	got := lim.seen()
	if len(got) != 2 {
		t.Fatalf("observed %d answers, want 2: %+v", len(got), got)
	}
	first, second := got[0], got[1]
	if first.Limit != 20 || first.Remaining != 19 || second.Remaining != 18 {
		t.Fatalf("observed %+v", got)
	}
	if first.Reset <= 0 || first.Reset > time.Minute {
		t.Fatalf("reset %v, want within the minute", first.Reset)
	}
}

// recordingLimiter never waits and records what it observes.
type recordingLimiter struct {
	mu  sync.Mutex
	got []upstream.RateLimit
}

func (l *recordingLimiter) Wait(context.Context, upstream.Class) error { return nil }
func (l *recordingLimiter) RateLimited(time.Duration) time.Duration    { return 0 }
func (l *recordingLimiter) Succeeded()                                 {}
func (l *recordingLimiter) ObserveLimit(rl upstream.RateLimit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, rl)
}

func (l *recordingLimiter) seen() []upstream.RateLimit {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]upstream.RateLimit(nil), l.got...)
}
