package simulator_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestModerationConfig: GET /me/moderation-config enables every built-in category and text, and its
// catalogue lists the built-in categories plus the custom ones set at the time, in both contracts. It
// needs job:read and costs one request of the rate limit.
func TestModerationConfig(t *testing.T) {
	at := time.Date(2026, 5, 19, 12, 0, 0, 0, time.UTC) // a stopped clock: the budget never refills
	for _, contract := range []string{simulator.ContractV1, simulator.ContractV2} {
		t.Run(contract, func(t *testing.T) {
			sim := simtest.Run(t, simulator.Config{RPM: 100, Burst: 100, RateLimitHeaders: contract == simulator.ContractV1,
				Now: func() time.Time { return at }, CustomCategories: []string{"brand_logos"},
				Keys: []simulator.Key{
					{Token: simulator.DefaultKey, Account: "a", Scopes: simulator.DefaultScopes},
					{Token: "k_noread", Account: "b", Scopes: []string{simulator.ScopePrompt}},
				}}, simtest.WithContract(contract))
			get := func() (map[string]bool, map[string]map[string]string, int) {
				t.Helper()
				status, h, body := do(t, "GET", sim.URL()+"/me/moderation-config", simulator.DefaultKey, "", "")
				if status != 200 {
					t.Fatalf("moderation-config: %d %v", status, body)
				}
				remaining, _ := strconv.Atoi(h.Get("X-Ratelimit-Remaining"))
				b, _ := json.Marshal(body)
				var cfg struct {
					Enabled   map[string]bool              `json:"enabled_categories"`
					Catalogue map[string]map[string]string `json:"catalogue"`
				}
				if err := json.Unmarshal(b, &cfg); err != nil {
					t.Fatalf("moderation-config %s: %v", b, err)
				}
				return cfg.Enabled, cfg.Catalogue, remaining
			}
			enabled, catalogue, before := get()
			want := map[string]bool{"ai_adult_general": true, "underage": true, "nsfw": true, "text": true}
			if !maps.Equal(enabled, want) {
				t.Fatalf("enabled_categories %v, want %v", enabled, want)
			}
			if got := slices.Sorted(maps.Keys(catalogue)); !slices.Equal(got, []string{"ai_adult_general", "brand_logos", "nsfw", "underage"}) {
				t.Fatalf("catalogue keys %v", got)
			}
			for k, e := range catalogue {
				if e["label"] == "" || e["description"] == "" || e["icon"] == "" || len(e) != 3 {
					t.Fatalf("catalogue[%s] = %v, want label, description and icon", k, e)
				}
			}
			if err := sim.SetCustomCategories("weapons", "gambling-ads"); err != nil {
				t.Fatal(err)
			}
			_, catalogue, after := get()
			if got := slices.Sorted(maps.Keys(catalogue)); !slices.Equal(got, []string{"ai_adult_general", "gambling-ads", "nsfw", "underage", "weapons"}) {
				t.Fatalf("catalogue keys after SetCustomCategories %v", got)
			}
			if after != before-1 {
				t.Fatalf("x-ratelimit-remaining %d after %d: a moderation-config call must cost one request", after, before)
			}
			if err := sim.SetCustomCategories(); err != nil {
				t.Fatal(err)
			}
			if _, catalogue, _ = get(); len(catalogue) != 3 {
				t.Fatalf("catalogue after clearing %v", catalogue)
			}
			if status, _, body := do(t, "GET", sim.URL()+"/me/moderation-config", "k_noread", "", ""); status != 403 || body["error"] != "FORBIDDEN" {
				t.Fatalf("without job:read: %d %v", status, body)
			}
			sim.SetFault(simulator.EndpointModerationConfig, simulator.Fault{ErrorRate: 1})
			if status, _, _ := do(t, "GET", sim.URL()+"/me/moderation-config", simulator.DefaultKey, "", ""); status != 503 {
				t.Fatalf("injected fault: %d", status)
			}
			if n := sim.CallCount(simulator.EndpointModerationConfig); n != 5 {
				t.Fatalf("CallCount(moderation_config) = %d, want 5", n)
			}
		})
	}
}

// TestCustomCategorySlugs: a slug must be a-z, 0-9, _ and -, not a name of the upstream's own, not twice.
func TestCustomCategorySlugs(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{CustomCategories: []string{"ok"}})
	for _, slugs := range [][]string{{""}, {"Brand"}, {"a b"}, {"nsfw"}, {"custom"}, {"text"}, {"a", "a"}, {"é"}} {
		if err := sim.SetCustomCategories(slugs...); !errors.Is(err, simulator.ErrInvalidConfig) {
			t.Fatalf("SetCustomCategories(%q) = %v, want ErrInvalidConfig", slugs, err)
		}
		if _, err := simulator.New(simulator.Config{CustomCategories: slugs}); !errors.Is(err, simulator.ErrInvalidConfig) {
			t.Fatalf("New with CustomCategories %q = %v, want ErrInvalidConfig", slugs, err)
		}
	}
}

// TestCustomCategories: jobs that complete while custom categories are set carry each in
// categories.custom, in GET /job of both contracts and in the v1 webhook; the marker sim:custom:<slug>
// makes one true, which rejects the job. Jobs completed before, and failed jobs, carry {}.
func TestCustomCategories(t *testing.T) {
	for _, contract := range []string{simulator.ContractV1, simulator.ContractV2} {
		t.Run(contract, func(t *testing.T) {
			sim := simtest.Run(t, simulator.Config{QueueDelay: -1, ProcessDelay: -1}, simtest.WithContract(contract))
			rcv := simtest.NewReceiver(t)
			c := simtest.Client(t, sim, func(cfg *upstream.Config) { cfg.Contract = contract })
			ctx := natstest.Ctx(t)
			text, img, imgField := "prompt", "image", "image_url"
			if contract == simulator.ContractV2 {
				text, imgField = "text", "image"
			}
			finish := func(modality string, fields map[string]string) upstream.Job {
				t.Helper()
				s, err := c.Submit(ctx, modality, fields, rcv.URL)
				if err != nil {
					t.Fatal(err)
				}
				return waitTerminal(t, c, s.JobID)
			}
			before := finish(text, map[string]string{"prompt": "sim:custom:weapons"})
			if err := sim.SetCustomCategories("brand_logos", "weapons"); err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				name       string
				job        upstream.Job
				custom     string
				prohibited *bool
			}{
				{"completed before", before, `{}`, new(false)},
				{"text marked", finish(text, map[string]string{"prompt": "say sim:custom:weapons"}), `{"brand_logos":false,"weapons":true}`, new(true)},
				{"text unmarked", finish(text, map[string]string{"prompt": "hello"}), `{"brand_logos":false,"weapons":false}`, new(false)},
				{"image marked", finish(img, map[string]string{imgField: "https://cdn.example.com/a.png?sim:custom:brand_logos"}),
					`{"brand_logos":true,"weapons":false}`, new(true)},
				{"image unmarked", finish(img, map[string]string{imgField: "https://cdn.example.com/b.png"}), `{"brand_logos":false,"weapons":false}`, new(false)},
				{"failed", finish(text, map[string]string{"prompt": "sim:fail sim:custom:weapons"}), `{}`, nil},
			}
			for _, tt := range tests {
				var got struct {
					IsProhibited *bool `json:"is_prohibited"`
					Reason       string
					Categories   map[string]json.RawMessage `json:"categories"`
				}
				if err := json.Unmarshal(tt.job.Raw, &got); err != nil {
					t.Fatal(err)
				}
				if string(got.Categories["custom"]) != tt.custom || fmt.Sprint(deref(got.IsProhibited)) != fmt.Sprint(deref(tt.prohibited)) {
					t.Fatalf("%s: GET /job %s, want custom %s and is_prohibited %v", tt.name, tt.job.Raw, tt.custom, deref(tt.prohibited))
				}
				if tt.name == "text marked" && got.Reason == "" {
					t.Fatalf("%s: a rejected text job without reason: %s", tt.name, tt.job.Raw)
				}
				hook := webhookOf(t, rcv, tt.job.JobID)
				var body struct {
					Categories map[string]json.RawMessage `json:"categories"`
				}
				json.Unmarshal(hook, &body) //nolint:errcheck // checked below
				switch {
				case contract == simulator.ContractV1 && string(body.Categories["custom"]) != tt.custom:
					t.Fatalf("%s: v1 webhook %s, want custom %s", tt.name, hook, tt.custom)
				case contract == simulator.ContractV2 && body.Categories != nil:
					t.Fatalf("%s: v2 webhook %s has categories", tt.name, hook)
				}
			}
			// CompleteJob sets them too.
			s, err := c.Submit(ctx, text, map[string]string{"prompt": "sim:hold"}, "")
			if err != nil {
				t.Fatal(err)
			}
			if err := sim.CompleteJob(s.JobID, simulator.Outcome{Custom: map[string]bool{"brand_logos": true, "unset": true}}); err != nil {
				t.Fatal(err)
			}
			if j := waitTerminal(t, c, s.JobID); !*j.IsProhibited || !customIs(j.Raw, `{"brand_logos":true,"weapons":false}`) {
				t.Fatalf("CompleteJob with Custom: %s", j.Raw)
			}
		})
	}
}

func deref(b *bool) any {
	if b == nil {
		return nil
	}
	return *b
}

// customIs reports whether the job's categories.custom is custom.
func customIs(raw []byte, custom string) bool {
	var j struct {
		Categories map[string]json.RawMessage `json:"categories"`
	}
	return json.Unmarshal(raw, &j) == nil && string(j.Categories["custom"]) == custom
}

// webhookOf waits for the first webhook of a job and returns its body.
func webhookOf(t *testing.T, rcv *simtest.Receiver, id string) []byte {
	t.Helper()
	var body []byte
	natstest.WaitFor(t, 10*time.Second, func() error {
		for _, r := range rcv.Received() {
			var b struct {
				JobID string `json:"job_id"`
			}
			if json.Unmarshal(r.Body, &b) == nil && b.JobID == id {
				body = r.Body
				return nil
			}
		}
		return errors.New("no webhook of " + id)
	})
	return body
}
