package contract

import "strings"

// Kind is the sort of a NATS resource the bridge owns.
type Kind string

// Kinds of [Resource].
const (
	KindStream   Kind = "stream"
	KindBucket   Kind = "bucket"
	KindConsumer Kind = "consumer"
	KindService  Kind = "service"
	// KindSubject is a request-reply subject (or wildcard) that no stream keeps.
	KindSubject Kind = "subject"
)

// Resource is one stream, KV bucket, durable consumer, micro service or request subject of the bridge.
type Resource struct {
	Kind Kind
	// Name is the stream, bucket, consumer or service name, or the subject.
	Name string
	// Subjects are a stream's subjects.
	Subjects []string
	// Stream is a consumer's stream.
	Stream string
	// OnDemand: made on first use (bridge replay's bucket) rather than at start-up.
	OnDemand bool
}

// Owned lists every stream, bucket, consumer, service and request subject the bridge of these names owns,
// in one place: provisioning takes the streams' subjects from it, bridge status the streams and buckets it
// checks, and the tests of the contract, of namespaces and of permissions iterate it. A new resource is
// added here. The budget bucket is listed in every namespace: they share it.
func (n Names) Owned() []Resource {
	return []Resource{
		{Kind: KindStream, Name: n.StreamWebhooks, Subjects: []string{n.SubjectWebhooks + ">"}},
		{Kind: KindStream, Name: n.StreamResults, Subjects: []string{n.SubjectResults + ">", n.SubjectResultFence + ">"}},
		{Kind: KindStream, Name: n.StreamDeadLetter, Subjects: []string{n.SubjectDeadLetter + ">"}},
		{Kind: KindStream, Name: n.StreamSlowLane, Subjects: []string{n.SubjectSlowLane + ">"}},
		{Kind: KindBucket, Name: n.BucketJobs},
		{Kind: KindBucket, Name: n.BucketLeases},
		{Kind: KindBucket, Name: n.BucketIdempotency},
		{Kind: KindBucket, Name: BucketBudget},
		{Kind: KindBucket, Name: n.BucketHistory},
		{Kind: KindBucket, Name: n.BucketReplay, OnDemand: true},
		{Kind: KindConsumer, Name: n.ConsumerVerify, Stream: n.StreamWebhooks},
		{Kind: KindConsumer, Name: n.ConsumerVerifyUnknown, Stream: n.StreamSlowLane},
		{Kind: KindService, Name: n.ServiceName},
		{Kind: KindSubject, Name: n.SubjectSubmit + ">"},
		{Kind: KindSubject, Name: n.SubjectJobStatus},
	}
}

// IsBridgeStream reports whether a stream called name is one of the four streams of a bridge of any
// namespace (WEBHOOKS, RESULTS, DEADLETTER, SLOWLANE, or NS_ and one of them), which nothing but a bridge
// may write.
func IsBridgeStream(name string) bool {
	for _, base := range []string{baseStreamWebhooks, baseStreamResults, baseStreamDeadLetter, baseStreamSlowLane} {
		if name == base || strings.HasSuffix(name, "_"+base) {
			return true
		}
	}
	return false
}

// OwnedStream returns the stream named name from [Names.Owned].
func (n Names) OwnedStream(name string) (Resource, bool) {
	for _, r := range n.Owned() {
		if r.Kind == KindStream && r.Name == name {
			return r, true
		}
	}
	return Resource{}, false
}

// StoreNames are the JetStream stream names behind the bridge's streams and buckets (a bucket's is
// KV_<bucket>), those made at start-up first; with onDemand, also those made on first use.
func (n Names) StoreNames(onDemand bool) []string {
	var out []string
	for _, r := range n.Owned() {
		if r.OnDemand && !onDemand {
			continue
		}
		switch r.Kind {
		case KindStream:
			out = append(out, r.Name)
		case KindBucket:
			out = append(out, KVStream(r.Name))
		}
	}
	return out
}
