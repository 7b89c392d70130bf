package upstream

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
)

// ModerationConfig is the account's GET /me/moderation-config.
type ModerationConfig struct {
	// EnabledCategories are the toggles as sent: ai_adult_general, underage, nsfw and text. The upstream's
	// prose says a check missing from it is enabled (upstream-api.md §2.10).
	EnabledCategories map[string]bool `json:"enabled_categories"`
	// Catalogue describes each category by key ({label, description, icon}), each kept as sent.
	Catalogue map[string]json.RawMessage `json:"catalogue"`
}

// Custom returns the account's custom categories, sorted: the catalogue's keys beyond
// [BuiltinCategories]. That is our reading; the documented response does not say where custom
// categories appear. Nil when there are none.
func (m ModerationConfig) Custom() []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m.Catalogue)) {
		if !slices.Contains(BuiltinCategories, k) {
			out = append(out, k)
		}
	}
	return out
}

// ModerationConfig fetches GET /me/moderation-config at [ClassPoll]: one request of the budget, never
// retried. A body that is not a JSON object is an *Error matching [ErrBadResponse].
func (c *Client) ModerationConfig(ctx context.Context) (ModerationConfig, error) {
	var m ModerationConfig
	_, err := c.do(ctx, request{class: ClassPoll, ep: "GET /me/moderation-config", method: http.MethodGet,
		path: "/me/moderation-config", decode: func(res []byte) error { return json.Unmarshal(res, &m) }})
	if err != nil {
		return ModerationConfig{}, err
	}
	return m, nil
}
