package contract

import (
	"errors"
	"testing"
)

// TestNamesOfANamespace: subjects get "ns.", streams, buckets and consumers "NS_", the service "ns_"; the
// budget bucket is shared; no namespace keeps DESIGN.md's names.
func TestNamesOfANamespace(t *testing.T) {
	n, err := NamesFor("eu_staging")
	if err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{
		n.StreamWebhooks:                    "EU_STAGING_WEBHOOKS",
		n.WebhookSubject("prompt"):          "eu_staging.webhooks.prompt",
		n.ResultSubject("image"):            "eu_staging.results.image",
		n.LateResultSubject("image"):        "eu_staging.results.late.image",
		n.ResultFenceSubject("j1", true):    "eu_staging.bridge.result.j1.late",
		n.DeadLetterSubject("not_terminal"): "eu_staging.deadletter.not_terminal",
		n.SubjectUnknownLane:                "eu_staging.slowlane.unknown_job",
		n.BucketJobs:                        "EU_STAGING_JOBS",
		n.BucketHistory:                     "EU_STAGING_BRIDGE_HISTORY",
		n.ConsumerVerifyUnknown:             "EU_STAGING_verify-unknown",
		n.ServiceName:                       "eu_staging_moderation",
		n.SubjectSubmit + "prompt":          "eu_staging.moderate.prompt",
		n.SubjectJobStatus:                  "eu_staging.jobs.status",
		n.SubjectReplayPrefix:               "eu_staging.replay.",
		Default.StreamResults:               "RESULTS",
		Default.SubjectSubmit:               "moderate.",
		Default.ServiceName:                 "moderation",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	for _, r := range n.Owned() {
		if r.Kind == KindBucket && r.Name == BucketBudget {
			continue // shared by every namespace
		}
		for _, d := range Default.Owned() {
			if r.Name == d.Name {
				t.Errorf("%s %s is the same in the namespace and without one", r.Kind, r.Name)
			}
		}
	}
	for _, bad := range []string{"Prod", "prod.eu", "a-b", "prod eu", "abcdefghijklmnopqrstuvwxyz0123456"} {
		if _, err := NamesFor(bad); !errors.Is(err, ErrNamespace) {
			t.Errorf("NamesFor(%q) = %v, want ErrNamespace", bad, err)
		}
	}
	if !IsBridgeStream("EU_STAGING_RESULTS") || !IsBridgeStream("DEADLETTER") || IsBridgeStream("AUDIT") {
		t.Error("IsBridgeStream: want the bridge's streams of any namespace, and nothing else")
	}
}
