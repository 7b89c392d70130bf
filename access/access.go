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
	// Ops is the operator's commands: bridge status, job, replay, deadletter, upgrade and provision -check.
	// It reads everything the bridge keeps and puts webhooks back for verification, but cannot write a
	// result, a job or the history, nor delete or purge what the bridge keeps.
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

func ops(n contract.Names) Permissions {
	var deny []string
	// Only the bridge writes results, their fences, jobs, the history, idempotency keys, leases and
	// the slow lane; webhooks may be put back (redrive, reverify), for the verifier to check.
	for _, subj := range []string{n.SubjectResults + ">", n.SubjectResultFence + ">", n.SubjectSlowLane + ">",
		n.SubjectDeadLetter + ">"} {
		deny = append(deny, subj)
	}
	for _, b := range []string{n.BucketJobs, n.BucketHistory, n.BucketIdempotency, n.BucketLeases, contract.BucketBudget} {
		deny = append(deny, contract.KVSubject(b, ">"))
	}
	for _, s := range n.StoreNames(false) { // every stream the bridge keeps, buckets too, but the replay bucket
		deny = append(deny, js("STREAM.DELETE", s), js("STREAM.PURGE", s))
		if s != contract.KVStream(n.BucketJobs) { // bridge upgrade finalize moves JOBS's layout
			deny = append(deny, js("STREAM.UPDATE", s))
		}
		if s != n.StreamDeadLetter { // bridge deadletter redrive -delete
			deny = append(deny, js("STREAM.MSG.DELETE", s))
		}
	}
	return Permissions{
		PublishAllow:   []string{">"},
		PublishDeny:    inDomains(deny),
		SubscribeAllow: []string{">"},
	}
}
