package contract

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// The contract's names from DESIGN.md, as a bridge without a namespace spells them. Role code takes them
// from its [Names] (Default, or that of BRIDGE_NAMESPACE) and never spells a subject, stream or bucket
// itself; these constants are what Names is built from.
const (
	baseStreamWebhooks        = "WEBHOOKS"
	baseSubjectWebhooks       = "webhooks."
	baseStreamResults         = "RESULTS"
	baseSubjectResults        = "results."
	baseSubjectLateResults    = "results.late."
	baseSubjectResultFence    = "bridge.result."
	baseStreamDeadLetter      = "DEADLETTER"
	baseSubjectDeadLetter     = "deadletter."
	baseStreamSlowLane        = "SLOWLANE"
	baseSubjectSlowLane       = "slowlane."
	baseUnknownLane           = "unknown_job"
	baseBucketJobs            = "JOBS"
	baseBucketLeases          = "BRIDGE_LEASES"
	baseBucketIdempotency     = "BRIDGE_IDEMPOTENCY"
	baseBucketReplay          = "BRIDGE_REPLAY"
	baseBucketHistory         = "BRIDGE_HISTORY"
	baseConsumerVerify        = "verify"
	baseConsumerVerifyUnknown = "verify-unknown"
	baseServiceName           = "moderation"
	baseSubjectSubmit         = "moderate."
	baseSubjectJobStatus      = "jobs.status"
	baseSubjectReplayPrefix   = "replay."
)

// Names shared by every bridge on a NATS account, whatever its namespace.
const (
	// BucketBudget is the account-wide upstream budget: the shared token bucket and each process's usage,
	// under keys of the upstream account (a hash of the API key by default), so that bridges of two
	// namespaces that use one upstream account share one budget. It is never namespaced.
	BucketBudget = "BRIDGE_BUDGET"
	// IntentPrefix prefixes the submission intents in the idempotency bucket (intent.<id>): a submission
	// on its way to the upstream, removed once its job is recorded or the upstream said there is none.
	IntentPrefix = "intent."
	// ModalityUnknown is the webhook subject token when the request path names no modality.
	ModalityUnknown = "unknown"
	// LateSuffix is appended to the job_id to form the Nats-Msg-Id of a late result.
	LateSuffix = ".late"
)

// MaxNamespaceLen bounds a namespace, so that every name it prefixes stays short.
const MaxNamespaceLen = 32

// ErrNamespace means a namespace is not [a-z0-9_]{1,MaxNamespaceLen}.
var ErrNamespace = errors.New("namespace must be 1 to 32 of a-z, 0-9 and _")

// Names are every subject, stream, KV bucket, consumer and service name a bridge owns, in one namespace
// ([NamesFor]). With the namespace ns, subjects are prefixed "ns." and streams, buckets and consumers
// "NS_" (ns in upper case); the service is "ns_moderation". Without one (Default) they are DESIGN.md's
// names. The budget bucket ([BucketBudget]) is shared by every namespace. Names are values: compare them
// with ==.
type Names struct {
	// Namespace is the namespace, "" for none.
	Namespace string

	// StreamWebhooks holds every raw webhook the ingest role accepted.
	StreamWebhooks string
	// SubjectWebhooks prefixes raw webhook subjects: webhooks.<modality>.
	SubjectWebhooks string

	// StreamResults holds one verified result per job.
	StreamResults string
	// SubjectResults prefixes result subjects: results.<type>.
	SubjectResults string
	// SubjectLateResults prefixes results of jobs the upstream completed after the bridge timed them out.
	SubjectLateResults string
	// SubjectResultFence prefixes the result fences in RESULTS: bridge.result.<job_id> (and
	// bridge.result.<job_id>.late). Before its result, a publisher claims the fence (an empty message,
	// stored only while the subject is empty, or expecting the stale claim it takes over); the result is
	// stored only while the fence's last message is that claim; a done message then names the result.
	// It keeps a job's result single for as long as RESULTS keeps it, after the duplicate window too (see
	// OncePublisher). Consumers of results filter on results.>.
	SubjectResultFence string

	// StreamDeadLetter keeps webhooks that could not be verified, with the reason in headers.
	StreamDeadLetter string
	// SubjectDeadLetter prefixes dead-letter subjects: deadletter.<reason>.
	SubjectDeadLetter string

	// StreamSlowLane holds the webhooks waiting in the verifier's slow lane, each until the lane has
	// handled it (work-queue retention): webhooks of jobs without a JOBS record and without provenance
	// that the unknown-job budget could not take at once.
	StreamSlowLane string
	// SubjectSlowLane prefixes the slow lanes' subjects: slowlane.<lane>.
	SubjectSlowLane string
	// SubjectUnknownLane is the slow lane of webhooks of unknown jobs.
	SubjectUnknownLane string

	// BucketJobs is the KV bucket of jobs, keyed by job_id.
	BucketJobs string
	// BucketLeases is the KV bucket of role leases (the active reconciler).
	BucketLeases string
	// BucketIdempotency maps submit idempotency keys to job_ids. It is separate from JOBS so that
	// everything watching JOBS sees job records only.
	BucketIdempotency string
	// BucketReplay is the KV bucket of replay progress, keyed by replay name; bridge replay creates it
	// on first use.
	BucketReplay string
	// BucketHistory keeps the ids of delivered jobs for ever, compacted into sorted blocks (package
	// history): "was this job delivered?" for a job without a hot JOBS record, in a bounded number of
	// reads.
	BucketHistory string

	// ConsumerVerify is the durable pull consumer of the verifier on StreamWebhooks.
	ConsumerVerify string
	// ConsumerVerifyUnknown is the durable pull consumer of the verifier's slow lane on StreamSlowLane,
	// filtered to SubjectUnknownLane. (Before SLOWLANE it was on StreamDeadLetter, filtered to
	// deadletter.unknown_job: natsx.MoveOldSlowLane moves what still waits there.)
	ConsumerVerifyUnknown string

	// ServiceName is the micro service that accepts submissions.
	ServiceName string
	// SubjectSubmit prefixes submit endpoints: moderate.<modality>.
	SubjectSubmit string
	// SubjectJobStatus answers {"job_id": "..."} with the JOBS record and the result.
	SubjectJobStatus string
	// SubjectReplayPrefix is the default prefix of replayed messages.
	SubjectReplayPrefix string
}

// Default are the names of a bridge without a namespace: DESIGN.md's.
var Default = mustNames("")

// NamesFor returns the names of namespace ns ("" for none), or ErrNamespace.
func NamesFor(ns string) (Names, error) {
	if ns != "" && (len(ns) > MaxNamespaceLen || strings.Trim(ns, "abcdefghijklmnopqrstuvwxyz0123456789_") != "") {
		return Names{}, fmt.Errorf("%w; got %q", ErrNamespace, ns)
	}
	subj, res, svc := "", "", ""
	if ns != "" {
		subj, res, svc = ns+".", strings.ToUpper(ns)+"_", ns+"_"
	}
	return Names{
		Namespace:             ns,
		StreamWebhooks:        res + baseStreamWebhooks,
		SubjectWebhooks:       subj + baseSubjectWebhooks,
		StreamResults:         res + baseStreamResults,
		SubjectResults:        subj + baseSubjectResults,
		SubjectLateResults:    subj + baseSubjectLateResults,
		SubjectResultFence:    subj + baseSubjectResultFence,
		StreamDeadLetter:      res + baseStreamDeadLetter,
		SubjectDeadLetter:     subj + baseSubjectDeadLetter,
		StreamSlowLane:        res + baseStreamSlowLane,
		SubjectSlowLane:       subj + baseSubjectSlowLane,
		SubjectUnknownLane:    subj + baseSubjectSlowLane + baseUnknownLane,
		BucketJobs:            res + baseBucketJobs,
		BucketLeases:          res + baseBucketLeases,
		BucketIdempotency:     res + baseBucketIdempotency,
		BucketReplay:          res + baseBucketReplay,
		BucketHistory:         res + baseBucketHistory,
		ConsumerVerify:        res + baseConsumerVerify,
		ConsumerVerifyUnknown: res + baseConsumerVerifyUnknown,
		ServiceName:           svc + baseServiceName,
		SubjectSubmit:         subj + baseSubjectSubmit,
		SubjectJobStatus:      subj + baseSubjectJobStatus,
		SubjectReplayPrefix:   subj + baseSubjectReplayPrefix,
	}, nil
}

func mustNames(ns string) Names {
	n, err := NamesFor(ns)
	if err != nil {
		panic(err)
	}
	return n
}

// OrDefault is n, or Default when n is the zero Names (a Config that set none).
func (n Names) OrDefault() Names {
	if n == (Names{}) {
		return Default
	}
	return n
}

// Headers set by the bridge. Nats-Msg-Id comes from nats.go (jetstream.MsgIDHeader).
const (
	// HeaderBridgeSource says how a result was obtained: webhook, poll or timeout.
	HeaderBridgeSource = "Bridge-Source"
	// HeaderReceivedAt is the RFC 3339 time ingest received a webhook.
	HeaderReceivedAt = "Bridge-Received-At"
	// HeaderRemoteAddr is the address a webhook came from.
	HeaderRemoteAddr = "Bridge-Remote-Addr"
	// HeaderModality is the modality named in the webhook path, if any.
	HeaderModality = "Bridge-Modality"
	// HeaderReason says why a message was dead-lettered.
	HeaderReason = "Bridge-Reason"
	// HeaderAttempts counts verification attempts of a dead-lettered webhook.
	HeaderAttempts = "Bridge-Attempts"
	// HeaderIdempotencyKey on a submit request makes it idempotent: a retry returns the same job.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderRetryAfter is on a BUSY refusal of moderate.<modality>: seconds to wait before retrying.
	HeaderRetryAfter = "Retry-After"
	// HeaderOriginalSubject is the subject a dead-lettered or replayed message was first published on.
	HeaderOriginalSubject = "Bridge-Original-Subject"
	// HeaderOriginalSeq is the stream sequence a replayed or redriven message was read from.
	HeaderOriginalSeq = "Bridge-Original-Seq"
	// HeaderOriginalMsgID is the Nats-Msg-Id a replayed message had in its source stream.
	HeaderOriginalMsgID = "Bridge-Original-Msg-Id"
	// HeaderReplay names the replay (or "redrive") that republished a message.
	HeaderReplay = "Bridge-Replay"
	// HeaderUpstreamEndpoint is on a submit reply: the upstream path the submission went to, e.g.
	// /moderate/text for moderate.prompt under the v2 contract.
	HeaderUpstreamEndpoint = "Bridge-Upstream-Endpoint"
	// HeaderDeliveryID is on a stored webhook: the upstream's delivery id (v2: X-Omnifence-Delivery-Id,
	// else the body's delivery_id, else webhook-id), the same on every retry of one webhook; for tracing.
	HeaderDeliveryID = "Bridge-Delivery-Id"
	// HeaderFence says what a message on a result fence (bridge.result.>) is: FenceClaim or FenceDone.
	// A fence message without it is a fence of the earlier atomic-batch design: its result is the next
	// stream message.
	HeaderFence = "Bridge-Fence"
	// HeaderResultSeq is on a done message of a result fence: the stream sequence of the job's result.
	HeaderResultSeq = "Bridge-Result-Seq"
	// HeaderAuthenticated is on a stored webhook whose sender proved itself: "signature" (a valid
	// Standard Webhooks signature, BRIDGE_WEBHOOK_SECRET) or "token" (?token=, BRIDGE_WEBHOOK_TOKEN).
	HeaderAuthenticated = "Bridge-Authenticated"
	// HeaderTraceParent is the W3C Trace Context traceparent (version-trace_id-parent_id-flags): taken
	// from a webhook's HTTP request or a submit request's NATS headers, kept on the stored webhook and in
	// the job's JOBS record, and set on the job's result, so that one trace ties the webhook, its
	// verification and the result together. Lower case, as W3C spells it: NATS headers are
	// case-sensitive.
	HeaderTraceParent = "traceparent"
	// HeaderTraceState is the W3C Trace Context tracestate that travels with HeaderTraceParent.
	HeaderTraceState = "tracestate"
)

// Values of HeaderFence.
const (
	// FenceClaim: a publisher holds the fence and may store the result while this is the fence's last
	// message. Its Bridge-Source is the claimant's.
	FenceClaim = "claim"
	// FenceDone: the result is stored, at Bridge-Result-Seq, with the source in Bridge-Source.
	FenceDone = "done"
)

// Values of HeaderAuthenticated.
const (
	AuthenticatedSignature = "signature"
	AuthenticatedToken     = "token"
)

// Headers of the upstream's webhooks (v2), read by ingest.
const (
	// UpstreamHeaderDeliveryID is the v2 upstream's delivery id header.
	UpstreamHeaderDeliveryID = "X-Omnifence-Delivery-Id"
)

// Result sources, the value of HeaderBridgeSource and of the result's bridge.source.
const (
	SourceWebhook = "webhook"
	SourcePoll    = "poll"
	SourceTimeout = "timeout"
	// SourceExport: the result was verified from a row of GET /jobs/export (a batch), not GET /job.
	SourceExport = "export"
)

// ResultSchemaVersion is the version of the result message, its bridge.schema_version, and of its JSON
// Schema (docs/schema/result.v<N>.schema.json). Within a version fields are only added (a consumer ignores
// what it does not know); a change that removes, renames or retypes a field, or changes its meaning, is the
// next version. A result without schema_version (published before it existed) is version 1.
const ResultSchemaVersion = 1

// Upstream contracts, the values of BRIDGE_API_CONTRACT.
const (
	// ContractV1 is the documented ("evershield") contract: /moderate/prompt, image, video and chat, with
	// the fields prompt, image_url and video_url.
	ContractV1 = "v1"
	// ContractV2 is the newer contract of the vendor's integration material (upstream-api.md §10):
	// /moderate/text (field text), image (image), video (video) and audio (audio); prompt and chat
	// retired upstream, served by the bridge on /moderate/text.
	ContractV2 = "v2"
	// ContractAuto decides between them at the first submission.
	ContractAuto = "auto"
)

// Modality is one submit modality of the upstream contracts.
type Modality struct {
	// Name is the modality as the submit endpoint (moderate.<name>), the webhook subject token
	// (webhooks.<name>), the JOBS record and the result subject (results.<name>) spell it.
	Name string
	// Field is the form field a submission of this modality must carry, as the bridge's callers name it.
	// Under v2 the upstream client renames it (prompt → text, image_url → image, video_url → video).
	Field string
	// Deadline is how long a job of this modality may stay pending by default, the upstream's
	// recommended give-up time.
	Deadline time.Duration
	// V1 and V2 say which contracts serve the modality.
	V1, V2 bool
	// UpstreamV2 is the upstream path's modality under v2 when it is not Name: prompt and chat are
	// retired there and go to /moderate/text.
	UpstreamV2 string
}

// modalities is the one table of the modalities; [Modalities] and [ModalitiesFor] hand out copies.
var modalities = [...]Modality{
	{Name: "prompt", Field: "prompt", Deadline: 5 * time.Minute, V1: true, V2: true, UpstreamV2: "text"},
	{Name: "image", Field: "image_url", Deadline: 5 * time.Minute, V1: true, V2: true},
	{Name: "video", Field: "video_url", Deadline: 15 * time.Minute, V1: true, V2: true},
	{Name: "chat", Field: "prompt", Deadline: 5 * time.Minute, V1: true, V2: true, UpstreamV2: "text"},
	{Name: "text", Field: "text", Deadline: 5 * time.Minute, V2: true},
	{Name: "audio", Field: "audio", Deadline: 15 * time.Minute, V2: true},
}

// Modalities returns the submit modalities of the documented (v1) upstream contract, in the contract's
// order (prompt, image, video, chat). The slice is the caller's own.
func Modalities() []Modality { return ModalitiesFor(ContractV1) }

// ModalitiesFor returns the submit modalities served under contract: v1's four; under v2 also text and
// audio (prompt and chat map to text upstream); under auto every one, since the contract is decided only
// at the first submission. The slice is the caller's own.
func ModalitiesFor(contract string) []Modality {
	var out []Modality
	for _, m := range modalities {
		if contract == ContractAuto || m.V1 && contract == ContractV1 || m.V2 && contract == ContractV2 {
			out = append(out, m)
		}
	}
	return out
}

// LookupModality returns the modality called name, of either contract, and whether there is one.
func LookupModality(name string) (Modality, bool) {
	for _, m := range modalities {
		if m.Name == name {
			return m, true
		}
	}
	return Modality{}, false
}

// MediaField reports whether a submit form field carries a media URL: a name ending in _url (v1), or
// the v2 names image, video and audio.
func MediaField(field string) bool {
	switch field {
	case "image", "video", "audio":
		return true
	}
	return strings.HasSuffix(field, "_url")
}

// WebhookSubject is the subject a raw webhook for modality is published on.
func (n Names) WebhookSubject(modality string) string {
	if modality == "" {
		modality = ModalityUnknown
	}
	return n.SubjectWebhooks + modality
}

// ResultSubject is the subject of a verified result of the given upstream job type.
func (n Names) ResultSubject(jobType string) string { return n.SubjectResults + token(jobType) }

// LateResultSubject is the subject of a result that arrived after the job was timed out.
func (n Names) LateResultSubject(jobType string) string { return n.SubjectLateResults + token(jobType) }

// ResultFenceSubject is the fence of a job's result; with late, of its late result: bridge.result. and
// the result's Nats-Msg-Id.
func (n Names) ResultFenceSubject(jobID string, late bool) string {
	return n.SubjectResultFence + ResultMsgID(token(jobID), late)
}

// DeadLetterSubject is the subject of a dead letter with the given reason.
func (n Names) DeadLetterSubject(reason string) string { return n.SubjectDeadLetter + token(reason) }

// kvStreamPrefix starts the name of the stream that holds a KV bucket.
const kvStreamPrefix = "KV_"

// KVStream is the name of the stream that holds the KV bucket called bucket.
func KVStream(bucket string) string { return kvStreamPrefix + bucket }

// KVSubject is the subject of key in the KV bucket called bucket, in the bucket's stream: $KV.<bucket>.<key>
// (a key of ">" is every key's).
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// KVBucket returns the bucket that the stream called stream holds, and whether it holds one.
func KVBucket(stream string) (string, bool) { return strings.CutPrefix(stream, kvStreamPrefix) }

// token makes s safe as one subject token: no dots, wildcards or spaces.
func token(s string) string {
	if s == "" {
		return ModalityUnknown
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			return '_'
		}
		return r
	}, s)
}
