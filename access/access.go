// Package access says who may publish and subscribe to what on the bridge's NATS: the permissions of the
// clients that are not the bridge (downstream services, the operator's commands), of each of the bridge's
// own processes (one user per role, on a cluster) and of whoever provisions, generated from the one list
// of the bridge's names (contract.Names), so that a namespace applies to them as to everything else.
// Only the bridge writes results, the webhooks it keeps and its jobs; docs/SECURITY.md is generated from
// here.
package access

import (
	"slices"
	"strings"

	"github.com/evershield/bridge/contract"
)

// Permissions are what one NATS user may publish and subscribe to: allow lists, and deny lists that win
// over them. An empty allow list allows nothing.
type Permissions struct {
	PublishAllow, PublishDeny     []string
	SubscribeAllow, SubscribeDeny []string
	// Responses lets the user answer requests that reach its subscriptions (a service's replies).
	Responses bool
}

// Role is a kind of client with its own permissions.
type Role string

// Roles of [For]. The bridge's process roles are spelled as BRIDGE_ROLES spells them.
const (
	// Downstream reads results, submits jobs and asks about them: what a service using the bridge needs.
	Downstream Role = "downstream"
	// Ops is the operator's commands: bridge status, job, submit, replay, deadletter, upgrade and
	// provision -check, on its namespace's streams and buckets only: an allow list of what they do. It
	// reads what the bridge keeps and puts webhooks back for verification, but cannot write a result, a
	// job or the history, nor delete or purge a stream, nor reach another namespace's.
	Ops Role = "ops"
	// Ingest stores the upstream's webhooks in WEBHOOKS and follows JOBS.
	Ingest Role = "ingest"
	// Verify consumes WEBHOOKS and the slow lane, checks each webhook with the upstream and writes the
	// result, the dead letters and the slow lane.
	Verify Role = "verify"
	// Submit serves the moderation service (moderate.>, jobs.status) and writes JOBS and the idempotency
	// keys.
	Submit Role = "submit"
	// Reconcile polls the pending jobs while it holds the lease, writes their results, and compacts
	// delivered jobs into the history.
	Reconcile Role = "reconcile"
	// Provision creates and updates the streams and buckets: bridge provision, run by an administrator.
	// The process roles assume it ran (BRIDGE_PROVISION=false), and only check what it made.
	Provision Role = "provision"
)

// Roles are the roles, in the order docs/SECURITY.md lists them.
func Roles() []Role { return []Role{Downstream, Ops, Ingest, Verify, Submit, Reconcile, Provision} }

// inbox is where replies come: nats.go's default inbox prefix.
const inbox = "_INBOX.>"

// For returns the permissions of role for the bridge of names.
func For(role Role, names contract.Names) Permissions {
	n := names.OrDefault()
	switch role {
	case Downstream:
		return downstream(n)
	case Ops:
		return ops(n)
	case Ingest, Verify, Submit, Reconcile:
		return process(role, n)
	case Provision:
		return provision(n)
	}
	return Permissions{}
}

// ForRoles returns the permissions of a process with every one of roles (BRIDGE_ROLES): the union of
// theirs, each subject once. Deny lists are joined too and win over every role's allows; the bridge's
// process roles have none.
func ForRoles(roles []Role, names contract.Names) Permissions {
	var p Permissions
	for _, r := range roles {
		q := For(r, names)
		p.PublishAllow = appendNew(p.PublishAllow, q.PublishAllow)
		p.PublishDeny = appendNew(p.PublishDeny, q.PublishDeny)
		p.SubscribeAllow = appendNew(p.SubscribeAllow, q.SubscribeAllow)
		p.SubscribeDeny = appendNew(p.SubscribeDeny, q.SubscribeDeny)
		p.Responses = p.Responses || q.Responses
	}
	return p
}

// appendNew appends to list each of more that it lacks.
func appendNew(list, more []string) []string {
	for _, s := range more {
		if !slices.Contains(list, s) {
			list = append(list, s)
		}
	}
	return list
}

// js is the JetStream API subject of op on the stream (or stream and consumer) rest.
func js(op, rest string) string { return "$JS.API." + op + "." + rest }

// inDomains adds, to each JetStream API subject of subjects, the same in any JetStream domain
// ($JS.<domain>.API...), which a client of a leaf node or hub names (BRIDGE_JS_DOMAIN); and to each KV
// subject the one nats.go writes a bucket through in a domain ($JS.<domain>.API.$KV...).
func inDomains(subjects []string) []string {
	out := slices.Clip(subjects)
	for _, s := range subjects {
		if rest, ok := strings.CutPrefix(s, "$JS.API."); ok {
			out = append(out, "$JS.*.API."+rest)
		} else if strings.HasPrefix(s, "$KV.") {
			out = append(out, "$JS.*.API."+s)
		}
	}
	return out
}

// consumeStream are the API subjects of reading a stream through consumers of one's own: its info,
// creating, reading, acknowledging and deleting consumers, and getting single messages.
func consumeStream(stream string) []string {
	return []string{
		js("STREAM.INFO", stream),
		js("STREAM.MSG.GET", stream),
		js("DIRECT.GET", stream), js("DIRECT.GET", stream+".>"),
		js("CONSUMER.CREATE", stream), js("CONSUMER.CREATE", stream+".>"),
		js("CONSUMER.DURABLE.CREATE", stream+".>"),
		js("CONSUMER.INFO", stream+".>"),
		js("CONSUMER.DELETE", stream+".>"),
		js("CONSUMER.MSG.NEXT", stream+".>"),
		js("CONSUMER.NAMES", stream), js("CONSUMER.LIST", stream),
		"$JS.ACK." + stream + ".>",
		"$JS.FC." + stream + ".>",
	}
}

func downstream(n contract.Names) Permissions {
	pub := []string{n.SubjectSubmit + ">", n.SubjectJobStatus, "$SRV.>", "$JS.API.INFO"}
	pub = append(pub, consumeStream(n.StreamResults)...)
	return Permissions{
		PublishAllow:   inDomains(pub),
		SubscribeAllow: []string{n.SubjectResults + ">", inbox},
	}
}

// ops: what the operator's commands do, on the namespace's streams and buckets only, and nothing else.
// Another namespace's streams, buckets and subjects are out of its reach, and so are deletes and purges.
func ops(n contract.Names) Permissions {
	pub := append(opsReads(n), opsWrites(n)...)
	return Permissions{PublishAllow: inDomains(appendNew(nil, pub)), SubscribeAllow: []string{inbox}}
}

// opsReads: bridge status (the account's info, the stream names, each stream's and bucket's info, the
// durable consumers of the streams, JOBS and the history and the budget read and watched),
// bridge deadletter list, bridge replay's sources (WEBHOOKS, RESULTS) read through ordered consumers and
// single gets, bridge upgrade status and bridge provision -check (infos only).
func opsReads(n contract.Names) []string {
	out := []string{"$JS.API.INFO", "$JS.API.STREAM.NAMES"}
	for _, s := range n.StoreNames(true) {
		out = append(out, js("STREAM.INFO", s))
	}
	for _, s := range []string{n.StreamWebhooks, n.StreamResults, n.StreamDeadLetter, n.StreamSlowLane} {
		out = append(out, js("CONSUMER.LIST", s))
	}
	for _, s := range []string{n.StreamWebhooks, n.StreamResults, n.StreamDeadLetter} {
		out = append(append(out, scan(s)...), getMsgs(s)...)
	}
	for _, b := range []string{n.BucketJobs, n.BucketHistory, contract.BucketBudget} {
		out = append(append(out, kvRead(b)...), kvWatch(b)...)
	}
	return out
}

// opsWrites: webhooks put back for the verifier (deadletter redrive, replay -reverify) and a redriven dead
// letter deleted (-delete); a replay's copies on the namespace's replay prefix, and its progress in the
// replay bucket, made on first use; JOBS moved to this release's layout (upgrade finalize); and the
// requests of bridge job and submit (jobs.status, moderate.>, the service's discovery).
func opsWrites(n contract.Names) []string {
	replay := contract.KVStream(n.BucketReplay)
	out := []string{n.SubjectWebhooks + ">", js("STREAM.MSG.DELETE", n.StreamDeadLetter),
		n.SubjectReplayPrefix + ">", js("STREAM.CREATE", replay)}
	out = append(out, kvUse(n.BucketReplay)...)
	out = append(out, js("STREAM.UPDATE", contract.KVStream(n.BucketJobs)))
	return append(out, n.SubjectJobStatus, n.SubjectSubmit+">",
		"$SRV.*", "$SRV.*."+n.ServiceName, "$SRV.*."+n.ServiceName+".*")
}
