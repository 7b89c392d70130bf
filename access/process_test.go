package access

import (
	"slices"
	"strings"
	"testing"

	"github.com/evershield/bridge/contract"
)

// TestForRolesIsTheUnion: a process with several roles may do what each of them may, each subject
// listed once, and answers requests when one of its roles does.
func TestForRolesIsTheUnion(t *testing.T) {
	got := ForRoles([]Role{Ingest, Submit}, contract.Default)
	for _, r := range []Role{Ingest, Submit} {
		p := For(r, contract.Default)
		for _, s := range p.PublishAllow {
			if !slices.Contains(got.PublishAllow, s) {
				t.Errorf("union lacks %s's publish %s", r, s)
			}
		}
		for _, s := range p.SubscribeAllow {
			if !slices.Contains(got.SubscribeAllow, s) {
				t.Errorf("union lacks %s's subscription %s", r, s)
			}
		}
	}
	for _, list := range [][]string{got.PublishAllow, got.SubscribeAllow} {
		seen := map[string]bool{}
		for _, s := range list {
			if seen[s] {
				t.Errorf("%s listed twice", s)
			}
			seen[s] = true
		}
	}
	if !got.Responses {
		t.Error("ingest and submit: no responses, want submit's")
	}
	if p := ForRoles([]Role{Ingest, Verify}, contract.Default); p.Responses {
		t.Error("ingest and verify answer no requests, but may respond")
	}
}

// TestProcessRolesInANamespace: with a namespace, every subject, stream and bucket of a process role's
// permissions is the namespace's (the budget bucket, shared by every namespace, aside), and every
// JetStream API or KV subject is also allowed in any JetStream domain.
func TestProcessRolesInANamespace(t *testing.T) {
	n, err := contract.NamesFor("acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Role{Ingest, Verify, Submit, Reconcile, Provision} {
		p := For(r, n)
		if len(p.PublishAllow) == 0 || len(p.PublishDeny)+len(p.SubscribeDeny) != 0 {
			t.Errorf("%s: %d allows, denies %v %v; want allows only", r, len(p.PublishAllow), p.PublishDeny, p.SubscribeDeny)
		}
		for _, s := range append(slices.Clone(p.PublishAllow), p.SubscribeAllow...) {
			if !namespaced(s) {
				t.Errorf("%s: %s is not the namespace's", r, s)
			}
			if rest, ok := strings.CutPrefix(s, "$JS.API."); ok && !slices.Contains(p.PublishAllow, "$JS.*.API."+rest) {
				t.Errorf("%s: %s without its domain form", r, s)
			}
			if strings.HasPrefix(s, "$KV.") && !slices.Contains(p.PublishAllow, "$JS.*.API."+s) {
				t.Errorf("%s: %s without its domain form", r, s)
			}
		}
	}
}

// namespaced reports whether a subject of the acme namespace's permissions names only acme's things.
func namespaced(s string) bool {
	for _, shared := range []string{"_INBOX.>", "$JS.API.INFO", "$JS.*.API.INFO", "$SRV.*",
		contract.BucketBudget, "acme_moderation"} {
		if strings.Contains(s, shared) {
			return true
		}
	}
	return strings.HasPrefix(s, "acme.") || strings.Contains(s, "ACME_") || strings.Contains(s, ".acme.")
}
