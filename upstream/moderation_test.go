package upstream_test

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestModerationConfig: the config lists every toggle, and Custom names the custom categories, with and
// without them, in both contracts: the keys a job that completes then carries in categories.custom. Each
// read is one call.
func TestModerationConfig(t *testing.T) {
	for _, contract := range []string{simulator.ContractV1, simulator.ContractV2} {
		t.Run(contract, func(t *testing.T) {
			sim := simtest.Run(t, simulator.Config{QueueDelay: -1, ProcessDelay: -1}, simtest.WithContract(contract))
			c := simtest.Client(t, sim, func(cfg *upstream.Config) { cfg.Contract = contract })
			ctx := natstest.Ctx(t)
			m, err := c.ModerationConfig(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]bool{"ai_adult_general": true, "underage": true, "nsfw": true, "text": true}
			if !maps.Equal(m.EnabledCategories, want) || len(m.Custom()) != 0 || len(m.Catalogue) != 3 {
				t.Fatalf("config %+v, custom %v; want every toggle on and no custom category", m, m.Custom())
			}
			var entry struct{ Label, Description, Icon string }
			if err := json.Unmarshal(m.Catalogue["nsfw"], &entry); err != nil || entry.Label == "" || entry.Icon == "" {
				t.Fatalf("catalogue nsfw %s", m.Catalogue["nsfw"])
			}
			if err := sim.SetCustomCategories("weapons", "brand_logos"); err != nil {
				t.Fatal(err)
			}
			if m, err = c.ModerationConfig(ctx); err != nil || !slices.Equal(m.Custom(), []string{"brand_logos", "weapons"}) {
				t.Fatalf("Custom() = %v, %v; want brand_logos, weapons", m.Custom(), err)
			}
			s, err := c.Submit(ctx, "prompt", map[string]string{"prompt": "sim:custom:weapons"}, "")
			if err != nil {
				t.Fatal(err)
			}
			var j upstream.Job
			natstest.WaitFor(t, 10*time.Second, func() error {
				if j, err = c.GetJob(ctx, s.JobID, upstream.ClassPoll); err == nil && !j.Terminal() {
					err = errors.New("status " + j.Status)
				}
				return err
			})
			var got struct {
				Categories struct {
					Custom map[string]bool `json:"custom"`
				} `json:"categories"`
			}
			if err := json.Unmarshal(j.Raw, &got); err != nil || !slices.Equal(slices.Sorted(maps.Keys(got.Categories.Custom)), m.Custom()) ||
				!got.Categories.Custom["weapons"] || !*j.IsProhibited {
				t.Fatalf("job %s: want categories.custom over %v, weapons true, rejected", j.Raw, m.Custom())
			}
			if n := sim.CallCount(simulator.EndpointModerationConfig); n != 2 {
				t.Fatalf("%d moderation-config calls, want 2", n)
			}
			sim.SetFault(simulator.EndpointModerationConfig, simulator.Fault{ErrorRate: 1})
			if _, err := c.ModerationConfig(ctx); !errors.Is(err, upstream.ErrUnavailable) ||
				!strings.Contains(err.Error(), "GET /me/moderation-config") {
				t.Fatalf("injected 503: %v", err)
			}
		})
	}
}

// TestModerationConfigCustom: Custom is every catalogue key beyond the built-in categories, sorted.
func TestModerationConfigCustom(t *testing.T) {
	m := upstream.ModerationConfig{Catalogue: map[string]json.RawMessage{
		"nsfw": nil, "zebra": nil, "underage": nil, "alpha": nil, "ai_adult_general": nil,
	}}
	if got := m.Custom(); !slices.Equal(got, []string{"alpha", "zebra"}) {
		t.Fatalf("Custom() = %v", got)
	}
}
