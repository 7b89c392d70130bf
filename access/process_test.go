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
// permissions, and of downstream's, is the namespace's (the budget bucket, shared by every namespace, and
// service discovery aside), and every JetStream API or KV subject is also allowed in any JetStream
// domain. The ops role, which may do anything else, is denied the namespace's writes, deletes and purges,
// in any domain too.
func TestProcessRolesInANamespace(t *testing.T) {
	n, err := contract.NamesFor("acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Role{Ingest, Verify, Submit, Reconcile, Provision, Downstream} {
		p := For(r, n)
		if len(p.PublishAllow) == 0 || len(p.PublishDeny)+len(p.SubscribeDeny) != 0 {
			t.Errorf("%s: %d allows, denies %v %v; want allows only", r, len(p.PublishAllow), p.PublishDeny, p.SubscribeDeny)
		}
		wantNamespacedInDomains(t, r, append(slices.Clone(p.PublishAllow), p.SubscribeAllow...), p.PublishAllow)
	}
	want := []string{"acme.moderate.>", "acme.jobs.status", "$JS.API.CONSUMER.CREATE.ACME_RESULTS.>", "$JS.ACK.ACME_RESULTS.>"}
	if pub := For(Downstream, n).PublishAllow; !containsAll(pub, want) {
		t.Errorf("downstream: publish %v, want among them %v", pub, want)
	}
	if sub := For(Downstream, n).SubscribeAllow; !slices.Equal(sub, []string{"acme.results.>", "_INBOX.>"}) {
		t.Errorf("downstream: subscribe %v, want acme.results.> and _INBOX.>", sub)
	}

	p := For(Ops, n)
	if !slices.Equal(p.PublishAllow, []string{">"}) || !slices.Equal(p.SubscribeAllow, []string{">"}) {
		t.Errorf("ops: allows %v %v, want > and >", p.PublishAllow, p.SubscribeAllow)
	}
	wantNamespacedInDomains(t, Ops, p.PublishDeny, p.PublishDeny)
	for _, s := range []string{"acme.results.>", "acme.bridge.result.>", "acme.deadletter.>", "acme.slowlane.>", "$KV.ACME_JOBS.>",
		"$KV.ACME_BRIDGE_HISTORY.>", "$JS.API.STREAM.DELETE.ACME_RESULTS", "$JS.API.STREAM.PURGE.ACME_RESULTS",
		"$JS.API.STREAM.DELETE.ACME_WEBHOOKS", "$JS.API.STREAM.PURGE.ACME_DEADLETTER", "$JS.API.STREAM.DELETE.KV_ACME_JOBS",
		"$JS.*.API.STREAM.DELETE.ACME_RESULTS"} {
		if !slices.Contains(p.PublishDeny, s) {
			t.Errorf("ops: %s not denied", s)
		}
	}
}

// wantNamespacedInDomains wants each of subjects to be the acme namespace's, and each JetStream API or KV
// subject among them to have its domain form in domainForms.
func wantNamespacedInDomains(t *testing.T, r Role, subjects, domainForms []string) {
	t.Helper()
	for _, s := range subjects {
		if !namespaced(s) {
			t.Errorf("%s: %s is not the namespace's", r, s)
		}
		if rest, ok := strings.CutPrefix(s, "$JS.API."); ok && !slices.Contains(domainForms, "$JS.*.API."+rest) {
			t.Errorf("%s: %s without its domain form", r, s)
		}
		if strings.HasPrefix(s, "$KV.") && !slices.Contains(domainForms, "$JS.*.API."+s) {
			t.Errorf("%s: %s without its domain form", r, s)
		}
	}
}

// containsAll reports whether list contains each of want.
func containsAll(list, want []string) bool {
	for _, s := range want {
		if !slices.Contains(list, s) {
			return false
		}
	}
	return true
}

// namespaced reports whether a subject of the acme namespace's permissions names only acme's things.
func namespaced(s string) bool {
	for _, shared := range []string{"_INBOX.>", "$JS.API.INFO", "$JS.*.API.INFO", "$SRV.*", "$SRV.>",
		contract.BucketBudget, "acme_moderation"} {
		if strings.Contains(s, shared) {
			return true
		}
	}
	return strings.HasPrefix(s, "acme.") || strings.Contains(s, "ACME_") || strings.Contains(s, ".acme.")
}
