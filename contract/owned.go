package contract

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

// Owned lists every stream, bucket, consumer, service and request subject the bridge owns, in one place:
// provisioning takes the streams' subjects from it, bridge status the streams and buckets it checks, and
// the tests of the contract, of namespaces and of permissions iterate it. A new resource is added here.
func Owned() []Resource {
	return []Resource{
		{Kind: KindStream, Name: StreamWebhooks, Subjects: []string{SubjectWebhooks + ">"}},
		{Kind: KindStream, Name: StreamResults, Subjects: []string{SubjectResults + ">", SubjectResultFence + ">"}},
		{Kind: KindStream, Name: StreamDeadLetter, Subjects: []string{SubjectDeadLetter + ">"}},
		{Kind: KindStream, Name: StreamSlowLane, Subjects: []string{SubjectSlowLane + ">"}},
		{Kind: KindBucket, Name: BucketJobs},
		{Kind: KindBucket, Name: BucketLeases},
		{Kind: KindBucket, Name: BucketIdempotency},
		{Kind: KindBucket, Name: BucketBudget},
		{Kind: KindBucket, Name: BucketHistory},
		{Kind: KindBucket, Name: BucketReplay, OnDemand: true},
		{Kind: KindConsumer, Name: ConsumerVerify, Stream: StreamWebhooks},
		{Kind: KindConsumer, Name: ConsumerVerifyUnknown, Stream: StreamSlowLane},
		{Kind: KindService, Name: ServiceName},
		{Kind: KindSubject, Name: SubjectSubmit + ">"},
		{Kind: KindSubject, Name: SubjectJobStatus},
	}
}

// OwnedStream returns the stream named name from [Owned].
func OwnedStream(name string) (Resource, bool) {
	for _, r := range Owned() {
		if r.Kind == KindStream && r.Name == name {
			return r, true
		}
	}
	return Resource{}, false
}

// StoreNames are the JetStream stream names behind the bridge's streams and buckets (a bucket's is
// KV_<bucket>), those made at start-up first; with onDemand, also those made on first use.
func StoreNames(onDemand bool) []string {
	var out []string
	for _, r := range Owned() {
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
