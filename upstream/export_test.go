package upstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/internal/testlog"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// exportAll runs an export of [from, to) and returns its jobs in order.
func exportAll(ctx context.Context, c *upstream.Client, from, to time.Time) ([]upstream.Job, error) {
	var got []upstream.Job
	err := c.ExportJobs(ctx, from, to, func(j upstream.Job) error {
		got = append(got, j)
		return nil
	})
	return got, err
}

// normal is a job object decoded for comparison, without the fields an export does not carry: error_code,
// and v2's api_key_id, api_key_name and nsfw.
func normal(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	for _, k := range []string{"error_code", "api_key_id", "api_key_name", "nsfw"} {
		delete(m, k)
	}
	return m
}

// TestExportJobsAsGetJob: every job of an export is what GET /job/{id} returns for the fields the row
// carries, Raw included (byte for byte in v1, where GET /job has nothing more; after dropping error_code
// and v2's own fields otherwise), for prompt passed and rejected, image, video, failed and queued jobs,
// in both contracts. The export is one call, newest first; the prompt, commas, quotes and newlines and
// all, breaks no row and is neither kept nor logged.
func TestExportJobsAsGetJob(t *testing.T) {
	const secret = "secret prompt, with \"quotes\",\nand a newline"
	for _, contract := range []string{simulator.ContractV1, simulator.ContractV2} {
		t.Run(contract, func(t *testing.T) {
			sim := simtest.Run(t, simulator.Config{QueueDelay: time.Hour}, simtest.WithContract(contract))
			var logs testlog.Buffer
			c := simtest.Client(t, sim, func(cfg *upstream.Config) {
				cfg.Contract = contract
				cfg.Log = zerolog.New(&logs).Level(zerolog.DebugLevel)
			})
			ctx := natstest.Ctx(t)
			img, vid := map[string]string{"image_url": "https://cdn.example.com/a.png"}, map[string]string{"video_url": "https://cdn.example.com/v.mp4"}
			cases := []struct {
				name     string
				modality string
				fields   map[string]string
				outcome  *simulator.Outcome // nil: stays queued
			}{
				{"prompt passed", "prompt", map[string]string{"prompt": "hello"}, &simulator.Outcome{}},
				{"prompt rejected", "prompt", map[string]string{"prompt": secret}, &simulator.Outcome{Prohibited: true, Reason: "a <reason>, \"quoted\""}},
				{"image passed", "image", img, &simulator.Outcome{}},
				{"video rejected", "video", vid, &simulator.Outcome{Categories: map[string]bool{"nsfw": true, "underage": true}}},
				{"image failed", "image", img, &simulator.Outcome{Failed: true}},
				{"prompt queued", "prompt", map[string]string{"prompt": secret}, nil},
				{"video queued", "video", vid, nil},
			}
			from := time.Now().Add(-time.Minute)
			ids := make([]string, len(cases))
			for i, tc := range cases {
				s, err := c.Submit(ctx, tc.modality, tc.fields, "")
				if err != nil {
					t.Fatal(err)
				}
				ids[i] = s.JobID
				if tc.outcome != nil {
					if err := sim.CompleteJob(s.JobID, *tc.outcome); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, err := exportAll(ctx, c, from, time.Now().Add(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if n := sim.CallCount(simulator.EndpointExport); n != 1 || len(got) != len(cases) {
				t.Fatalf("%d export calls, %d jobs; want 1 call, %d jobs", n, len(got), len(cases))
			}
			for i, e := range got {
				k := len(cases) - 1 - i // newest first
				g, err := c.GetJob(ctx, ids[k], upstream.ClassPoll)
				if err != nil {
					t.Fatal(err)
				}
				name := cases[k].name
				typed := e
				typed.Raw, g.Raw, g.ErrorCode = nil, nil, ""
				if !reflect.DeepEqual(typed, g) {
					t.Fatalf("%s: exported %+v\nGET /job  %+v", name, typed, g)
				}
				direct := getRaw(t, sim, ids[k])
				if !reflect.DeepEqual(normal(t, e.Raw), normal(t, direct)) {
					t.Fatalf("%s: exported Raw %s\nGET /job %s", name, e.Raw, direct)
				}
				if contract == simulator.ContractV1 && cases[k].outcome != nil && !cases[k].outcome.Failed && !bytes.Equal(e.Raw, direct) {
					t.Fatalf("%s: exported Raw %s\nnot byte for byte GET /job's %s", name, e.Raw, direct)
				}
			}
			for _, s := range []string{"secret prompt", "newline"} {
				for _, j := range got {
					if strings.Contains(fmt.Sprintf("%+v", j), s) || strings.Contains(string(j.Raw), s) {
						t.Fatalf("the prompt (%q) was kept: %+v %s", s, j, j.Raw)
					}
				}
				if strings.Contains(logs.String(), s) {
					t.Fatalf("the prompt (%q) was logged", s)
				}
			}
		})
	}
}

// getRaw is the body of GET /job/{id} as the simulator sends it.
func getRaw(t *testing.T, sim *simulator.Simulator, id string) []byte {
	t.Helper()
	req, _ := http.NewRequestWithContext(natstest.Ctx(t), http.MethodGet, sim.URL()+"/job/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+simulator.DefaultKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// TestExportJobsWindow: from inclusive, to exclusive; a window over ExportWindowMax, or to not after
// from, is refused without a call; an error answer is the usual *Error.
func TestExportJobsWindow(t *testing.T) {
	t0 := time.Date(2026, 5, 19, 12, 0, 0, 0, time.UTC)
	var at atomic.Int64
	sim := simtest.Run(t, simulator.Config{QueueDelay: time.Hour, Now: func() time.Time { return time.Unix(0, at.Load()) },
		Keys: []simulator.Key{
			{Token: simulator.DefaultKey, Account: "a", Scopes: simulator.DefaultScopes},
			{Token: "k_noread", Account: "a", Scopes: []string{simulator.ScopePrompt}},
		}})
	c := simtest.Client(t, sim)
	ctx := natstest.Ctx(t)
	var ids []string // created at t0, t0+1h, t0+2h
	for i := range 3 {
		at.Store(t0.Add(time.Duration(i) * time.Hour).UnixNano())
		s, err := c.Submit(ctx, "prompt", map[string]string{"prompt": "x"}, "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.JobID)
	}
	got, err := exportAll(ctx, c, t0.Add(time.Hour), t0.Add(2*time.Hour))
	if err != nil || len(got) != 1 || got[0].JobID != ids[1] {
		t.Fatalf("export of [t0+1h, t0+2h) = %+v, %v; want only %s", got, err, ids[1])
	}
	if got, err := exportAll(ctx, c, t0.Add(3*time.Hour).Add(-upstream.ExportWindowMax), t0.Add(3*time.Hour)); err != nil || len(got) != 3 {
		t.Fatalf("export of the longest window = %d jobs, %v; want 3", len(got), err)
	}
	calls := sim.CallCount(simulator.EndpointExport)
	for _, w := range []struct{ from, to time.Time }{
		{t0, t0}, {t0.Add(time.Hour), t0}, {t0, t0.Add(upstream.ExportWindowMax + time.Millisecond)},
	} {
		if _, err := exportAll(ctx, c, w.from, w.to); !errors.Is(err, upstream.ErrInvalidArgument) {
			t.Fatalf("export of [%v, %v) = %v, want ErrInvalidArgument", w.from, w.to, err)
		}
	}
	if err := c.ExportJobs(ctx, t0, t0.Add(time.Hour), nil); !errors.Is(err, upstream.ErrInvalidArgument) {
		t.Fatalf("export without each = %v, want ErrInvalidArgument", err)
	}
	if n := sim.CallCount(simulator.EndpointExport); n != calls {
		t.Fatalf("%d calls for refused exports", n-calls)
	}
	sim.SetFault(simulator.EndpointExport, simulator.Fault{ErrorRate: 1})
	_, err = exportAll(ctx, c, t0, t0.Add(time.Hour))
	if ue := asError(t, err); ue.Status != 503 || ue.Endpoint != "GET /jobs/export" || !ue.Retryable() {
		t.Fatalf("injected 503: %+v", ue)
	}
	sim.SetFault(simulator.EndpointExport, simulator.Fault{})
	_, err = exportAll(ctx, simtest.Client(t, sim, func(cfg *upstream.Config) { cfg.APIKey = "k_noread" }), t0, t0.Add(time.Hour))
	if ue := asError(t, err); ue.Status != 403 || !errors.Is(err, upstream.ErrForbidden) {
		t.Fatalf("without job:read: %v", err)
	}
}

// TestExportJobsStops: an error of each stops the export and comes back as it is; a body over
// MaxExportBytes is an error naming the bound, not retryable. A body longer than MaxExportRow, of rows
// within it, is read to the end.
func TestExportJobsStops(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{QueueDelay: time.Hour})
	ctx := natstest.Ctx(t)
	c := simtest.Client(t, sim)
	from := time.Now().Add(-time.Minute)
	for range 40 {
		if _, err := c.Submit(ctx, "prompt", map[string]string{"prompt": strings.Repeat("p", 30_000)}, ""); err != nil {
			t.Fatal(err)
		}
	}
	to := time.Now().Add(time.Minute)
	errStop := errors.New("enough")
	n := 0
	err := c.ExportJobs(ctx, from, to, func(upstream.Job) error {
		if n++; n == 2 {
			return errStop
		}
		return nil
	})
	if err != errStop || n != 2 {
		t.Fatalf("each stopped at job %d: err %v, want %v at 2", n, err, errStop)
	}

	small := simtest.Client(t, sim, func(cfg *upstream.Config) { cfg.MaxExportBytes = 100_000 })
	got, err := exportAll(ctx, small, from, to)
	if !errors.Is(err, upstream.ErrAnswerTooLarge) || !errors.Is(err, upstream.ErrBadResponse) || !strings.Contains(err.Error(), "100000") {
		t.Fatalf("export over 100000 bytes: %v, want ErrAnswerTooLarge naming 100000", err)
	}
	if asError(t, err).Retryable() || len(got) == 0 || len(got) >= 40 {
		t.Fatalf("export over the bound: retryable %v, %d jobs before it", asError(t, err).Retryable(), len(got))
	}
	if got, err := exportAll(ctx, c, from, to); err != nil || len(got) != 40 {
		t.Fatalf("export of 1.2 MB within the bound: %d jobs, %v", len(got), err)
	}
}

// TestExportJobsLegacyType: jobs of the legacy types pre and post keep their type.
func TestExportJobsLegacyType(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{QueueDelay: -1, ProcessDelay: -1,
		Modalities: map[string]string{"pre": "prompt", "post": "video_url"}})
	c := simtest.Client(t, sim)
	ctx := natstest.Ctx(t)
	from := time.Now().Add(-time.Minute)
	for _, sub := range []struct{ m, f, v string }{{"pre", "prompt", "x"}, {"post", "video_url", "https://cdn.example.com/v.mp4"}} {
		if _, err := c.Submit(ctx, sub.m, map[string]string{sub.f: sub.v}, ""); err != nil {
			t.Fatal(err)
		}
	}
	got, err := exportAll(ctx, c, from, time.Now().Add(time.Minute))
	if err != nil || len(got) != 2 || got[0].Type != "post" || got[1].Type != "pre" {
		t.Fatalf("export %+v, %v; want a post and a pre job", got, err)
	}
	for _, j := range got {
		if g, err := c.GetJob(ctx, j.JobID, upstream.ClassPoll); err != nil || !reflect.DeepEqual(normal(t, j.Raw), normal(t, g.Raw)) {
			t.Fatalf("exported %s\nGET /job %s (%v)", j.Raw, g.Raw, err)
		}
	}
}

// TestExportJobsContract: what an upstream's CSV may do wrong. The columns changing is contract drift;
// a row over MaxExportRow, a row of another width or a bad boolean is a bad response; a missing BOM is
// tolerated. These bodies no simulator sends, so a handler serves them.
func TestExportJobsContract(t *testing.T) {
	header := strings.Join(upstream.ExportColumns, ",") + "\n"
	row := func(prompt string) string {
		return "0B9D7C4E-0000-4000-8000-000000000001,image,completed,false,2026-05-19T12:00:00.000Z,2026-05-19T12:00:05.000Z," +
			prompt + ",,false,false,false\n"
	}
	tests := []struct {
		name, body string
		want       error // nil: succeeds with one job
		mention    string
	}{
		{"well formed", "\uFEFF" + header + row("x"), nil, ""},
		{"no BOM", header + row("x"), nil, ""},
		{"columns swapped", "\uFEFFjob_id,status,type" + header[len("job_id,type,status"):] + row("x"), upstream.ErrBadResponse, "contract drift"},
		{"column added", "\uFEFF" + strings.TrimSuffix(header, "\n") + ",category_violence\n" + row("x"), upstream.ErrBadResponse, "contract drift"},
		{"column renamed", "\uFEFF" + strings.Replace(header, "prompt", "text", 1) + row("x"), upstream.ErrBadResponse, "contract drift"},
		{"empty", "", upstream.ErrBadResponse, "header"},
		{"row too long", "\uFEFF" + header + row(strings.Repeat("a", upstream.MaxExportRow)), upstream.ErrAnswerTooLarge, "1048576"},
		{"row too wide", "\uFEFF" + header + strings.TrimSuffix(row("x"), "\n") + ",x\n", upstream.ErrBadResponse, "row 1"},
		{"bad boolean", "\uFEFF" + header + strings.Replace(row("x"), ",false,", ",maybe,", 1), upstream.ErrBadResponse, "is_prohibited"},
		{"unterminated quote", "\uFEFF" + header + row(`"open`), upstream.ErrBadResponse, "row 1"},
	}
	var body atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		io.WriteString(w, body.Load().(string)) //nolint:errcheck // the test reads what came
	}))
	t.Cleanup(srv.Close)
	c, err := upstream.New(upstream.Config{BaseURL: srv.URL + "/api/v1", APIKey: "k", Limiter: budget.Unlimited{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body.Store(tt.body)
			got, err := exportAll(natstest.Ctx(t), c, time.Now().Add(-time.Hour), time.Now())
			if tt.want == nil {
				if err != nil || len(got) != 1 || got[0].JobID != "0b9d7c4e-0000-4000-8000-000000000001" ||
					!strings.Contains(string(got[0].Raw), `"job_id":"0B9D7C4E-`) {
					t.Fatalf("export = %+v, %v; want the one job, its id lower case, Raw's as sent", got, err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tt.want, tt.mention)
			}
		})
	}
}

// TestExportJobsTimeout: Config.Timeout bounds each wait for the upstream, not the export: an each slower
// than Timeout is the caller's time (the upstream sends the next row only after it), an upstream that
// stops sending is a timeout of its own, long before the ctx's deadline.
func TestExportJobsTimeout(t *testing.T) {
	header := "\uFEFF" + strings.Join(upstream.ExportColumns, ",") + "\n"
	row := "0b9d7c4e-0000-4000-8000-000000000001,prompt,queued,,2026-05-19T12:00:00.000Z,,,,,,\n"
	next := make(chan struct{}, 1) // each has returned: the upstream may send the next row
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, header+row)         //nolint:errcheck // the test reads what came
		http.NewResponseController(w).Flush() //nolint:errcheck // as above
		select {
		case <-next:
			io.WriteString(w, row) //nolint:errcheck // as above
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	c, err := upstream.New(upstream.Config{BaseURL: srv.URL + "/api/v1", APIKey: "k", Limiter: budget.Unlimited{},
		Timeout: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := natstest.CtxWithin(t, 20*time.Second)
	n := 0
	err = c.ExportJobs(ctx, time.Now().Add(-time.Hour), time.Now(), func(upstream.Job) error {
		n++
		time.Sleep(750 * time.Millisecond) // a slow consumer, three times Timeout
		if n == 1 {
			next <- struct{}{}
		}
		return nil
	})
	if err != nil || n != 2 {
		t.Fatalf("slow each: %d jobs, %v; want 2 and no error", n, err)
	}
	got, err := exportAll(ctx, c, time.Now().Add(-time.Hour), time.Now()) // nobody lets the upstream go on
	if !errors.Is(err, upstream.ErrTimeout) || !strings.Contains(err.Error(), "sent nothing for 250ms") || len(got) != 1 {
		t.Fatalf("stalled upstream: %d jobs, %v; want one job, then the client's own timeout", len(got), err)
	}
}
