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

// TestProcessRolesInANamespace: with a namespace, every subject, stream and bucket of a role's
// permissions is the namespace's (the budget bucket, shared by every namespace, the stream names and
// service discovery aside), and every JetStream API or KV subject is also allowed in any JetStream
// domain. No role has a deny list: each is an allow list.
func TestProcessRolesInANamespace(t *testing.T) {
	n, err := contract.NamesFor("acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Role{Ingest, Verify, Submit, Reconcile, Provision, Downstream, Ops} {
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
}

// TestOpsIsAnAllowListOfItsCommands: the ops role may do what the operator's commands do on its
// namespace's streams and buckets, in any JetStream domain, and subscribe only to replies; but not write
// a result, its fence, a dead letter, the slow lane, a job, the history, an idempotency key, a lease or
// the budget, nor delete or purge any stream, nor update any but JOBS (upgrade finalize), nor delete a
// message of any but DEADLETTER (redrive -delete), nor create any but the replay bucket; nor touch the
// default namespace's streams and subjects.
func TestOpsIsAnAllowListOfItsCommands(t *testing.T) {
	n, err := contract.NamesFor("acme")
	if err != nil {
		t.Fatal(err)
	}
	p := For(Ops, n)
	if !slices.Equal(p.SubscribeAllow, []string{"_INBOX.>"}) {
		t.Errorf("ops: subscribe %v, want _INBOX.> only", p.SubscribeAllow)
	}
	for _, s := range []string{"$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.INFO.KV_ACME_BRIDGE_REPLAY",
		"$JS.API.CONSUMER.LIST.ACME_SLOWLANE", "$JS.API.CONSUMER.CREATE.ACME_DEADLETTER.x.acme.deadletter.>",
		"$JS.API.CONSUMER.MSG.NEXT.ACME_WEBHOOKS.x", "$JS.API.STREAM.MSG.GET.ACME_RESULTS",
		"$JS.API.STREAM.MSG.DELETE.ACME_DEADLETTER", "$JS.API.STREAM.UPDATE.KV_ACME_JOBS",
		"$JS.API.DIRECT.GET.KV_ACME_JOBS.$KV.ACME_JOBS.x", "$JS.API.CONSUMER.CREATE.KV_ACME_JOBS.x.$KV.ACME_JOBS.>",
		"$JS.API.STREAM.CREATE.KV_ACME_BRIDGE_REPLAY", "$KV.ACME_BRIDGE_REPLAY.r1", "acme.webhooks.prompt",
		"acme.replay.results.prompt", "acme.jobs.status", "acme.moderate.prompt", "$SRV.PING.acme_moderation",
		"$JS.hub.API.STREAM.MSG.DELETE.ACME_DEADLETTER", "$JS.hub.API.$KV.ACME_BRIDGE_REPLAY.r1"} {
		if !allowed(p.PublishAllow, s) {
			t.Errorf("ops may not publish %s, which its commands need", s)
		}
	}
	denied := []string{"acme.results.prompt", "acme.bridge.result.x", "acme.deadletter.not_found", "acme.slowlane.unknown_job",
		"$KV.ACME_JOBS.x", "$KV.ACME_BRIDGE_HISTORY.x", "$KV.ACME_BRIDGE_IDEMPOTENCY.x", "$KV.ACME_BRIDGE_LEASES.x",
		"$KV.BRIDGE_BUDGET.x", "$JS.API.STREAM.UPDATE.ACME_RESULTS", "$JS.API.STREAM.MSG.DELETE.ACME_RESULTS",
		"$JS.API.STREAM.CREATE.ACME_RESULTS", "$JS.API.CONSUMER.CREATE.KV_ACME_BRIDGE_IDEMPOTENCY.x",
		"$JS.API.STREAM.MSG.GET.KV_ACME_BRIDGE_LEASES", "webhooks.prompt", "results.prompt", "replay.results.prompt",
		"$JS.API.STREAM.INFO.WEBHOOKS", "$JS.API.STREAM.UPDATE.KV_JOBS", "$JS.API.STREAM.MSG.DELETE.DEADLETTER",
		"$JS.API.CONSUMER.CREATE.RESULTS.x", "$JS.API.DIRECT.GET.KV_JOBS.$KV.JOBS.x", "moderate.prompt", "jobs.status"}
	for _, s := range n.StoreNames(true) {
		denied = append(denied, js("STREAM.DELETE", s), js("STREAM.PURGE", s), "$JS.hub.API.STREAM.DELETE."+s)
	}
	for _, s := range denied {
		if allowed(p.PublishAllow, s) {
			t.Errorf("ops may publish %s", s)
		}
	}
}

// allowed reports whether a subject of one of patterns (with NATS's * and > wildcards) is subject.
func allowed(patterns []string, subject string) bool {
	for _, p := range patterns {
		if subjectMatches(strings.Split(p, "."), strings.Split(subject, ".")) {
			return true
		}
	}
	return false
}

// subjectMatches reports whether the tokens of a pattern match those of a subject.
func subjectMatches(pattern, subject []string) bool {
	for i, tok := range pattern {
		switch {
		case tok == ">":
			return len(subject) > i
		case i >= len(subject) || (tok != "*" && tok != subject[i]):
			return false
		}
	}
	return len(pattern) == len(subject)
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
	for _, shared := range []string{"_INBOX.>", "$JS.API.INFO", "$JS.*.API.INFO", "$JS.API.STREAM.NAMES", "$JS.*.API.STREAM.NAMES", "$SRV.*", "$SRV.>",
		contract.BucketBudget, "acme_moderation"} {
		if strings.Contains(s, shared) {
			return true
		}
	}
	return strings.HasPrefix(s, "acme.") || strings.Contains(s, "ACME_") || strings.Contains(s, ".acme.")
}
