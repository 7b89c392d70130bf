package simulator

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/evershield/bridge/upstream"
)

// MarkerCustom followed by a custom category's slug, in any form field of a submission, makes that
// category true on the job (e.g. "sim:custom:brand_logos"), which rejects it; every other custom category
// is false.
const MarkerCustom = "sim:custom:"

// maxSlug is the longest custom category slug the simulator takes.
const maxSlug = 64

// catalogueEntry is one category of GET /me/moderation-config's catalogue.
type catalogueEntry struct {
	Label       string `json:"label"`
	Description string `json:"description"`
	Icon        string `json:"icon"`
}

// builtinCatalogue describes the built-in categories; a custom one is labelled with its slug.
var builtinCatalogue = map[string]catalogueEntry{
	"ai_adult_general": {"Adult content", "Sexual or adult content, AI-generated or not", "eye-off"},
	"underage":         {"Minors", "Content that depicts or sexualises minors", "shield-alert"},
	"nsfw":             {"NSFW", "Nudity and sexually explicit content", "flame"},
}

// checkSlugs reports the first slug that cannot name a custom category: empty, over 64 bytes, other than
// lower-case letters, digits, '_' and '-', a name of the upstream's own (a built-in category, custom,
// text), or given twice.
func checkSlugs(slugs []string) error {
	seen := make(map[string]bool, len(slugs))
	for _, s := range slugs {
		switch {
		case s == "" || len(s) > maxSlug || strings.TrimLeft(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") != "":
			return fmt.Errorf("custom category %q: want 1 to %d of a-z, 0-9, _ and -", s, maxSlug)
		case slices.Contains(upstream.BuiltinCategories, s) || s == "custom" || s == "text":
			return fmt.Errorf("custom category %q: a name of the upstream's own", s)
		case seen[s]:
			return fmt.Errorf("custom category %q: given twice", s)
		}
		seen[s] = true
	}
	return nil
}

// SetCustomCategories replaces the account-wide custom categories (every account's) with slugs; none
// clears them. Jobs that complete from now on carry each in categories.custom (see [MarkerCustom]), and
// GET /me/moderation-config lists them in its catalogue. A slug that cannot name a category is an error
// matching [ErrInvalidConfig], and nothing changes.
func (s *Simulator) SetCustomCategories(slugs ...string) error {
	if err := checkSlugs(slugs); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.custom = slices.Clone(slugs)
	return nil
}

// markedCustom returns the slugs that follow MarkerCustom in marks.
func markedCustom(marks string) []string {
	var out []string
	for rest := marks; ; {
		_, after, ok := strings.Cut(rest, MarkerCustom)
		if !ok {
			return out
		}
		end := strings.IndexFunc(after, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-')
		})
		if end < 0 {
			end = len(after)
		}
		if end > 0 {
			out = append(out, after[:end])
		}
		rest = after[end:]
	}
}

// customOf is the custom categories of a job completing now with o: each slug set now, true when o says
// so. Nil when none is set. Called with mu held.
func (s *Simulator) customOf(o *Outcome) map[string]bool {
	if len(s.custom) == 0 {
		return nil
	}
	c := make(map[string]bool, len(s.custom))
	for _, slug := range s.custom {
		c[slug] = o.Custom[slug]
	}
	return c
}

// moderationConfig serves GET /api/v1/me/moderation-config: every built-in category and text enabled,
// and a catalogue of the built-in categories plus the custom ones set now.
func (s *Simulator) moderationConfig(w http.ResponseWriter, _ *http.Request, req request) {
	if !req.key.has(ScopeJobs) {
		writeErr(w, http.StatusForbidden, "FORBIDDEN", "API key lacks scope job:read")
		return
	}
	enabled := map[string]bool{"text": true}
	catalogue := make(map[string]catalogueEntry, len(upstream.BuiltinCategories))
	for _, c := range upstream.BuiltinCategories {
		enabled[c] = true
		catalogue[c] = builtinCatalogue[c]
	}
	s.mu.RLock()
	for _, slug := range s.custom {
		catalogue[slug] = catalogueEntry{Label: slug, Description: "Custom category " + slug, Icon: "tag"}
	}
	s.mu.RUnlock()
	writeJSON(w, http.StatusOK, map[string]any{"enabled_categories": enabled, "catalogue": catalogue})
}
