package access

import "github.com/evershield/bridge/contract"

// The permissions of the bridge's own processes, one role each (a process with several gets their union,
// [ForRoles]). Each is what the role's code does on NATS, and no more; each assumes that an
// administrator provisioned ([Provision]), so a process checks the streams and buckets
// (BRIDGE_PROVISION=false) but cannot create, update, delete or purge them, but for the purges of
// compaction (reconcile).

// checked are the API subjects of checking and opening the streams and buckets made at start-up
// (natsx.Check): the account's JetStream info and each stream's.
func checked(n contract.Names) []string {
	out := []string{"$JS.API.INFO"}
	for _, s := range n.StoreNames(false) {
		out = append(out, js("STREAM.INFO", s))
	}
	return out
}

// getMsgs are the API subjects of reading single messages of a stream: by sequence, and the last of a
// subject (direct gets where the stream allows them).
func getMsgs(stream string) []string {
	return []string{js("STREAM.MSG.GET", stream), js("DIRECT.GET", stream), js("DIRECT.GET", stream+".>")}
}

// kvRead reads a bucket's keys: the last message of a key's subject, by a direct get where the bucket
// allows them.
func kvRead(bucket string) []string {
	s := contract.KVStream(bucket)
	return []string{js("STREAM.MSG.GET", s), js("DIRECT.GET", s+".>")}
}

// kvWrite creates, updates and deletes a bucket's keys.
func kvWrite(bucket string) []string { return []string{contract.KVSubject(bucket, ">")} }

// kvWatch watches a bucket: an ordered push consumer of its stream (filtered to the watched keys),
// made, answered for flow control, and deleted.
func kvWatch(bucket string) []string {
	s := contract.KVStream(bucket)
	return []string{js("CONSUMER.CREATE", s+".>"), js("CONSUMER.DELETE", s+".>"), "$JS.FC." + s + ".>"}
}

// kvUse reads, writes and watches a bucket.
func kvUse(bucket string) []string {
	return append(append(kvRead(bucket), kvWrite(bucket)...), kvWatch(bucket)...)
}

// durable consumes a stream through the durable consumer of that name: made or updated (with or without
// its filter in the subject), read, acknowledged and looked at (the lag metrics).
func durable(stream, consumer string) []string {
	c := stream + "." + consumer
	return []string{js("CONSUMER.CREATE", c), js("CONSUMER.CREATE", c+".>"), js("CONSUMER.INFO", c),
		js("CONSUMER.MSG.NEXT", c), "$JS.ACK." + c + ".>"}
}

// scan reads a stream through ephemeral consumers (jobs.OncePublisher's search of a result).
func scan(stream string) []string {
	return []string{js("CONSUMER.CREATE", stream), js("CONSUMER.CREATE", stream+".>"), js("CONSUMER.INFO", stream+".>"),
		js("CONSUMER.DELETE", stream+".>"), js("CONSUMER.MSG.NEXT", stream+".>"), "$JS.ACK." + stream + ".>"}
}

// delivers writes results once each (jobs.Deliverer): results and their fences in RESULTS, read back
// to find a result a fence names; JOBS read and updated; the history read.
func delivers(n contract.Names) []string {
	out := []string{n.SubjectResults + ">", n.SubjectResultFence + ">"}
	out = append(append(out, getMsgs(n.StreamResults)...), scan(n.StreamResults)...)
	out = append(append(out, kvRead(n.BucketJobs)...), kvWrite(n.BucketJobs)...)
	return append(out, kvRead(n.BucketHistory)...)
}

// upstreamBudget takes the account-wide upstream budget (package budget): the shared bucket read,
// written and watched.
func upstreamBudget() []string { return kvUse(contract.BucketBudget) }

// process returns the permissions of one of the bridge's process roles.
func process(role Role, n contract.Names) Permissions {
	pub := checked(n)
	p := Permissions{SubscribeAllow: []string{inbox}}
	switch role {
	case Ingest:
		// Webhooks stored; JOBS only watched, for the pending jobs (a webhook's job tracked or not).
		pub = append(append(pub, n.SubjectWebhooks+">"), kvWatch(n.BucketJobs)...)
	case Verify:
		pub = append(pub, verifies(n)...)
	case Submit:
		pub = append(pub, submits(n)...)
		p.SubscribeAllow = append(p.SubscribeAllow, n.SubjectSubmit+">", n.SubjectJobStatus,
			"$SRV.*", "$SRV.*."+n.ServiceName, "$SRV.*."+n.ServiceName+".*")
		p.Responses = true // the service's replies, to the requester's inbox
	case Reconcile:
		pub = append(pub, reconciles(n)...)
	}
	p.PublishAllow = inDomains(appendNew(nil, pub)) // each once: the roles' parts overlap
	return p
}

// verifies: the verifier's two lanes (WEBHOOKS, and the slow lane of SLOWLANE) through their durable
// consumers, their dead letters and slow-lane entries, the results it delivers, the unknown-job budget,
// and, without a namespace, the move of the earlier slow lane out of DEADLETTER (natsx.MoveOldSlowLane).
func verifies(n contract.Names) []string {
	out := append(durable(n.StreamWebhooks, n.ConsumerVerify), durable(n.StreamSlowLane, n.ConsumerVerifyUnknown)...)
	out = append(out, n.SubjectDeadLetter+">", n.SubjectSlowLane+">")
	out = append(append(out, delivers(n)...), upstreamBudget()...)
	if n.Namespace == "" {
		out = append(append(out, durable(n.StreamDeadLetter, n.ConsumerVerifyUnknown)...),
			js("CONSUMER.DELETE", n.StreamDeadLetter+"."+n.ConsumerVerifyUnknown),
			js("STREAM.PURGE", n.StreamDeadLetter), js("STREAM.MSG.DELETE", n.StreamDeadLetter))
	}
	return out
}

// submits: JOBS (records made, read, updated and watched for the ledger), the idempotency keys and
// submission intents (watched for those in flight, and purged when they end: natsx.PurgeKey), the
// history and RESULTS read for jobs.status and for a retried key whose job was compacted, and the
// upstream budget.
func submits(n contract.Names) []string {
	out := append(kvUse(n.BucketJobs), kvUse(n.BucketIdempotency)...)
	out = append(out, js("STREAM.PURGE", contract.KVStream(n.BucketIdempotency)))
	out = append(out, kvRead(n.BucketHistory)...)
	out = append(out, getMsgs(n.StreamResults)...)
	return append(out, upstreamBudget()...)
}

// reconciles: the lease, JOBS followed and its records updated (and adopted ones made), the results it
// delivers, and compaction: the history written, and the purge of a compacted job's key in JOBS, its
// fence in RESULTS and its Idempotency-Key's entry in BRIDGE_IDEMPOTENCY. A purge cannot be narrowed to
// a subject by permissions: this role may purge any of RESULTS, JOBS or BRIDGE_IDEMPOTENCY.
func reconciles(n contract.Names) []string {
	out := append(kvUse(n.BucketLeases), kvUse(n.BucketJobs)...)
	out = append(append(out, delivers(n)...), kvWrite(n.BucketHistory)...)
	out = append(out, js("STREAM.PURGE", contract.KVStream(n.BucketJobs)), js("STREAM.PURGE", n.StreamResults),
		js("STREAM.PURGE", contract.KVStream(n.BucketIdempotency)))
	return append(out, upstreamBudget()...)
}

// provision: what bridge provision (natsx.Provision) needs to create and update every stream and
// bucket made at start-up, and nothing else.
func provision(n contract.Names) Permissions {
	pub := []string{"$JS.API.INFO"}
	for _, s := range n.StoreNames(false) {
		pub = append(pub, js("STREAM.CREATE", s), js("STREAM.UPDATE", s), js("STREAM.INFO", s))
	}
	return Permissions{PublishAllow: inDomains(pub), SubscribeAllow: []string{inbox}}
}
