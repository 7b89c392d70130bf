package simulator_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// exportHeader is the documented header row of GET /jobs/export (upstream-api.md §2.7), spelled out here
// rather than taken from upstream.ExportColumns, so a change there fails this test.
var exportHeader = []string{"job_id", "type", "status", "is_prohibited", "created_at", "completed_at", "prompt",
	"reason", "category_ai_adult_general", "category_underage", "category_nsfw"}

// getExport sends GET /jobs/export?query with key and returns the answer with its body read.
func getExport(t *testing.T, sim *simulator.Simulator, key, query string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(natstest.Ctx(t), http.MethodGet, sim.URL()+"/jobs/export?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// window is the export query of [from, to).
func window(from, to time.Time) string {
	return url.Values{"from": {from.Format(time.RFC3339Nano)}, "to": {to.Format(time.RFC3339Nano)}}.Encode()
}

// exportRows checks the BOM and the header row of an export body and returns its rows.
func exportRows(t *testing.T, body []byte) [][]string {
	t.Helper()
	rest, ok := bytes.CutPrefix(body, []byte("\xEF\xBB\xBF"))
	if !ok {
		t.Fatalf("export does not start with a UTF-8 BOM: %q", body[:min(len(body), 16)])
	}
	rows, err := csv.NewReader(bytes.NewReader(rest)).ReadAll()
	if err != nil {
		t.Fatalf("export is not CSV: %v", err)
	}
	if len(rows) == 0 || !slices.Equal(rows[0], exportHeader) {
		t.Fatalf("header %v, want %v", rows, exportHeader)
	}
	return rows[1:]
}

// exportCase is one job of TestExportRows: what is submitted, and how it ends (nil: it stays queued).
type exportCase struct {
	name, modality, field, value string
	outcome                      *simulator.Outcome
	prompt                       string // the export's prompt column
}

func exportCases(contract string) []exportCase {
	text, tf, img, imgf, vid, vidf := "prompt", "prompt", "image", "image_url", "video", "video_url"
	if contract == simulator.ContractV2 {
		text, tf, imgf, vidf = "text", "text", "image", "video"
	}
	tricky := "a, \"quoted\" prompt\nover two lines, with \"\"double\"\" quotes,,"
	return []exportCase{
		{"text passed", text, tf, "hello", &simulator.Outcome{}, "hello"},
		{"text rejected", text, tf, "bad words", &simulator.Outcome{Prohibited: true, Reason: "has, \"commas\"\nand lines"}, "bad words"},
		{"text with commas quotes newlines", text, tf, tricky, &simulator.Outcome{}, tricky},
		{"image passed", img, imgf, "https://cdn.example.com/a.png", &simulator.Outcome{}, ""},
		{"video rejected", vid, vidf, "https://cdn.example.com/v.mp4", &simulator.Outcome{Categories: map[string]bool{"underage": true}}, ""},
		{"image failed", img, imgf, "https://cdn.example.com/b.png", &simulator.Outcome{Failed: true}, ""},
		{"text queued", text, tf, "later", nil, "later"},
		{"image queued", img, imgf, "https://cdn.example.com/c.png", nil, ""},
	}
}

// TestExportRows: the export of both contracts is text/csv with a BOM and the documented header, one row
// per job of the account, newest first, each row saying what GET /job says of the same fields, and the
// prompt as submitted even with commas, quotes and newlines in it. It is streamed (chunked).
func TestExportRows(t *testing.T) {
	for _, contract := range []string{simulator.ContractV1, simulator.ContractV2} {
		t.Run(contract, func(t *testing.T) {
			sim := simtest.Run(t, simulator.Config{QueueDelay: time.Hour, Keys: []simulator.Key{
				{Token: simulator.DefaultKey, Account: "a", Scopes: append(slices.Clone(simulator.DefaultScopes), simulator.ScopeText)},
				{Token: "k_other", Account: "b", Scopes: append(slices.Clone(simulator.DefaultScopes), simulator.ScopeText)},
			}}, simtest.WithContract(contract))
			c := simtest.Client(t, sim, func(cfg *upstream.Config) { cfg.Contract = contract })
			other := simtest.Client(t, sim, func(cfg *upstream.Config) { cfg.Contract = contract; cfg.APIKey = "k_other" })
			ctx := natstest.Ctx(t)
			from := time.Now().Add(-time.Minute)
			cases := exportCases(contract)
			if _, err := other.Submit(ctx, cases[0].modality, map[string]string{cases[0].field: "x"}, ""); err != nil {
				t.Fatal(err)
			}
			ids := make([]string, len(cases))
			for i, tc := range cases {
				s, err := c.Submit(ctx, tc.modality, map[string]string{tc.field: tc.value}, "")
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				ids[i] = s.JobID
				if tc.outcome != nil {
					if err := sim.CompleteJob(s.JobID, *tc.outcome); err != nil {
						t.Fatal(err)
					}
				}
			}
			resp, body := getExport(t, sim, simulator.DefaultKey, window(from, time.Now().Add(time.Minute)))
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" {
				t.Fatalf("export answered %d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			if !slices.Contains(resp.TransferEncoding, "chunked") {
				t.Fatalf("export not streamed: transfer encoding %v, length %d", resp.TransferEncoding, resp.ContentLength)
			}
			rows := exportRows(t, body)
			if len(rows) != len(cases) {
				t.Fatalf("%d rows, want %d (the other account's job must not show): %q", len(rows), len(cases), rows)
			}
			for i, row := range rows {
				k := len(cases) - 1 - i // newest first
				if row[0] != ids[k] || row[6] != cases[k].prompt {
					t.Fatalf("row %d: job %s prompt %q, want %s (%s) prompt %q", i, row[0], row[6], ids[k], cases[k].name, cases[k].prompt)
				}
				j, err := c.GetJob(ctx, ids[k], upstream.ClassPoll)
				if err != nil {
					t.Fatal(err)
				}
				want := rowOfJob(t, j.Raw)
				want[6] = cases[k].prompt
				if !slices.Equal(row, want) {
					t.Fatalf("%s: row\n%q\nwant what GET /job says\n%q", cases[k].name, row, want)
				}
			}
		})
	}
}

// rowOfJob is the export row a GET /job object calls for, prompt column left empty.
func rowOfJob(t *testing.T, raw []byte) []string {
	t.Helper()
	var j struct {
		JobID        string  `json:"job_id"`
		Type         string  `json:"type"`
		Status       string  `json:"status"`
		IsProhibited *bool   `json:"is_prohibited"`
		CreatedAt    string  `json:"created_at"`
		CompletedAt  *string `json:"completed_at"`
		Reason       string  `json:"reason"`
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		t.Fatal(err)
	}
	var cats struct {
		Categories map[string]json.RawMessage `json:"categories"`
	}
	json.Unmarshal(raw, &cats) //nolint:errcheck // decoded above
	opt := func(b *bool) string {
		if b == nil {
			return ""
		}
		return strconv.FormatBool(*b)
	}
	row := []string{j.JobID, j.Type, j.Status, opt(j.IsProhibited), j.CreatedAt, "", "", j.Reason}
	if j.CompletedAt != nil {
		row[5] = *j.CompletedAt
	}
	for _, c := range []string{"ai_adult_general", "underage", "nsfw"} {
		cell := ""
		if v, ok := cats.Categories[c]; ok {
			cell = string(v)
		}
		row = append(row, cell)
	}
	return row
}

// TestExportWindow: from is inclusive, to exclusive, on created_at.
func TestExportWindow(t *testing.T) {
	t0 := time.Date(2026, 5, 19, 12, 0, 0, 0, time.UTC)
	var at atomic.Int64
	at.Store(t0.UnixNano())
	sim := simtest.Run(t, simulator.Config{QueueDelay: time.Hour, Now: func() time.Time { return time.Unix(0, at.Load()).UTC() }})
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
	tests := []struct {
		name     string
		from, to time.Time
		want     []string
	}{
		{"from inclusive, to exclusive", t0.Add(time.Hour), t0.Add(2 * time.Hour), ids[1:2]},
		{"a millisecond past from", t0.Add(time.Hour + time.Millisecond), t0.Add(2*time.Hour + time.Millisecond), ids[2:3]},
		{"all, newest first", t0, t0.Add(3 * time.Hour), []string{ids[2], ids[1], ids[0]}},
		{"none", t0.Add(-time.Hour), t0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := getExport(t, sim, simulator.DefaultKey, window(tt.from, tt.to))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			var got []string
			for _, row := range exportRows(t, body) {
				got = append(got, row[0])
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("jobs %v, want %v", got, tt.want)
			}
		})
	}
}

// TestExportRefusals: from and to are required ISO 8601 date-times, to after from, at most 366 days apart;
// the export needs job:read; an injected fault reaches it.
func TestExportRefusals(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{Keys: []simulator.Key{
		{Token: "k_a", Account: "a", Scopes: simulator.DefaultScopes},
		{Token: "k_noread", Account: "a", Scopes: []string{simulator.ScopePrompt}},
	}})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	tests := []struct {
		name, key, query string
		status           int
		code             string
	}{
		{"no from", "k_a", "to=2026-01-02T00:00:00Z", 400, "INVALID_REQUEST"},
		{"no to", "k_a", "from=2026-01-01T00:00:00Z", 400, "INVALID_REQUEST"},
		{"neither", "k_a", "", 400, "INVALID_REQUEST"},
		{"bad from", "k_a", "from=yesterday&to=2026-01-02T00:00:00Z", 400, "INVALID_REQUEST"},
		{"date only", "k_a", "from=2026-01-01&to=2026-01-02", 400, "INVALID_REQUEST"},
		{"to before from", "k_a", window(t0.Add(day), t0), 400, "INVALID_REQUEST"},
		{"to equals from", "k_a", window(t0, t0), 400, "INVALID_REQUEST"},
		{"over 366 days", "k_a", window(t0, t0.Add(366*day+time.Millisecond)), 400, "INVALID_REQUEST"},
		{"366 days", "k_a", window(t0, t0.Add(366*day)), 200, ""},
		{"no job:read", "k_noread", window(t0, t0.Add(day)), 403, "FORBIDDEN"},
		{"no key", "nope", window(t0, t0.Add(day)), 401, "UNAUTHORIZED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := getExport(t, sim, tt.key, tt.query)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if tt.code == "" {
				exportRows(t, body)
				return
			}
			var e map[string]any
			if err := json.Unmarshal(body, &e); err != nil || e["error"] != tt.code || e["statusCode"] != float64(tt.status) ||
				e["message"] == "" {
				t.Fatalf("error body %s, want %s", body, tt.code)
			}
		})
	}
	sim.SetFault(simulator.EndpointExport, simulator.Fault{ErrorRate: 1})
	if resp, body := getExport(t, sim, "k_a", window(t0, t0.Add(day))); resp.StatusCode != 503 {
		t.Fatalf("injected fault: %d %s", resp.StatusCode, body)
	}
	if n := sim.CallCount(simulator.EndpointExport); n != len(tests)+1 {
		t.Fatalf("CallCount(export) = %d, want %d", n, len(tests)+1)
	}
}

// TestExportIsOneRequest: an export of many rows counts as one request against the account's rate limit,
// in both contracts (a stopped clock: the v1 bucket never refills, the v2 window never moves).
func TestExportIsOneRequest(t *testing.T) {
	at := time.Date(2026, 5, 19, 12, 0, 0, 0, time.UTC)
	for _, contract := range []string{simulator.ContractV1, simulator.ContractV2} {
		t.Run(contract, func(t *testing.T) {
			sim := simtest.Run(t, simulator.Config{RPM: 1000, Burst: 1000, RateLimitHeaders: contract == simulator.ContractV1,
				QueueDelay: time.Hour, Now: func() time.Time { return at }}, simtest.WithContract(contract))
			modality, field := "prompt", "prompt"
			if contract == simulator.ContractV2 {
				modality, field = "text", "text"
			}
			for range 600 { // more rows than one batch of the stream
				if status, _, body := do(t, "POST", sim.URL()+"/moderate/"+modality, simulator.DefaultKey, urlencoded, form(field, "x")); status != 202 {
					t.Fatalf("submit: %d %v", status, body)
				}
			}
			remaining := func() int {
				_, h, _ := do(t, "GET", sim.URL()+"/jobs?limit=1", simulator.DefaultKey, "", "")
				n, err := strconv.Atoi(h.Get("X-Ratelimit-Remaining"))
				if err != nil {
					t.Fatalf("x-ratelimit-remaining %q", h.Get("X-Ratelimit-Remaining"))
				}
				return n
			}
			before := remaining()
			resp, body := getExport(t, sim, simulator.DefaultKey, window(at.Add(-time.Hour), at.Add(time.Hour)))
			if rows := exportRows(t, body); resp.StatusCode != 200 || len(rows) != 600 {
				t.Fatalf("export: %d, %d rows", resp.StatusCode, len(rows))
			}
			if got := resp.Header.Get("X-Ratelimit-Remaining"); got != strconv.Itoa(before-1) {
				t.Fatalf("export's x-ratelimit-remaining %q, want %d", got, before-1)
			}
			if after := remaining(); after != before-2 {
				t.Fatalf("remaining %d after an export and a list, want %d: the export cost %d requests", after, before-2, before-1-after)
			}
			if n := sim.CallCount(simulator.EndpointExport); n != 1 {
				t.Fatalf("CallCount(export) = %d, want 1", n)
			}
		})
	}
}

// TestExportLegacyType: a job of a legacy type (pre, post: a Modalities entry) is exported with its type.
func TestExportLegacyType(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{QueueDelay: time.Hour,
		Modalities: map[string]string{"pre": "prompt", "post": "video_url"}})
	for _, f := range []string{form("prompt", "old"), form("video_url", "https://cdn.example.com/v.mp4")} {
		m := "pre"
		if strings.Contains(f, "video") {
			m = "post"
		}
		if status, _, body := do(t, "POST", sim.URL()+"/moderate/"+m, simulator.DefaultKey, urlencoded, f); status != 202 {
			t.Fatalf("submit %s: %d %v", m, status, body)
		}
	}
	_, body := getExport(t, sim, simulator.DefaultKey, window(time.Now().Add(-time.Hour), time.Now().Add(time.Hour)))
	rows := exportRows(t, body)
	if len(rows) != 2 || rows[0][1] != "post" || rows[1][1] != "pre" || rows[0][6] != "" || rows[1][6] != "old" {
		t.Fatalf("rows %q, want a post job without prompt and a pre job with it", rows)
	}
}
