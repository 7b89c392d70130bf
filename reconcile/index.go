package reconcile

import (
	"container/heap"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/evershield/bridge/jobs"
)

// maxModalities caps the label values of the pending gauge; further modalities count as "other".
const maxModalities = 32

// entryFlag is a bit set of an entry's state.
type entryFlag uint8

const (
	// flagLate: the job was timed out; it is watched for a late completion until due, outside the heap.
	flagLate entryFlag = 1 << iota
	// flagBusy: a sweep GET or a deadline check is handling the job.
	flagBusy
	// flagInFlight: the job was in the in-flight list of the last sweep.
	flagInFlight
	// flagGone: the upstream answered 404 for the job goneAfter times in a row, each at least a poll
	// interval after the one before; sweeps no longer fetch it, its deadline check still asks once more.
	flagGone
)

// goneAfter is how many 404s in a row, each at least a poll interval apart, end the sweeps' fetches of
// a pending job. One 404 is not enough: the upstream may answer 404 for a job it has not made visible
// yet, or during a bad deploy.
const goneAfter = 3

// entry is what the index keeps of one job: about 64 bytes plus the id and the map and heap slots.
type entry struct {
	id  string
	mod *modality
	// due is, for a pending job, when its deadline check runs (the deadline, later after a failed
	// check); for a late-watched job, when the watch ends. Unix nanoseconds.
	due int64
	// submitted is the record's submitted_at, unix nanoseconds.
	submitted int64
	// missing is when a sweep first found the job missing from the in-flight list, 0 while it is not.
	missing int64
	// gen is the index generation at insertion; a sweep skips entries newer than its in-flight list.
	gen uint32
	// notFoundAt is when a sweep GET last answered 404 for the job, 0 after any other answer.
	notFoundAt int64
	// pos is the position in the deadline heap, -1 when not in it.
	pos   int32
	flags entryFlag
	// notFound counts the 404s in a row of sweep GETs.
	notFound uint8
	// failures counts the deadline checks in a row whose delivery (Deliver or TimeOut) failed.
	failures uint8
}

func (e *entry) late() bool { return e.flags&flagLate != 0 }

// modality is one interned modality and its pending gauge.
type modality struct {
	name  string
	gauge prometheus.Gauge
}

// recordView is the part of a JOBS record the index reads.
type recordView struct {
	Modality        string     `json:"modality"`
	State           jobs.State `json:"state"`
	SubmittedAt     time.Time  `json:"submitted_at"`
	Deadline        time.Time  `json:"deadline"`
	LateDeliveredAt *time.Time `json:"late_delivered_at"`
}

// task is a job handed to a sweep GET or a deadline check, with its flags at hand-over.
type task struct {
	e       *entry
	id      string
	mod     string
	flags   entryFlag
	missing int64
}

// index is the in-process index of pending (and late-watched) jobs, fed by the JOBS watch. It is safe
// for concurrent use.
type index struct {
	lateWatch time.Duration
	poll      time.Duration // the poll interval: the least spacing of a job's counted 404s
	m         *metrics

	mu      sync.Mutex // mu guards the fields below
	byID    map[string]*entry
	heap    dueHeap
	mods    map[string]*modality
	pending int
	late    int
	gen     uint32

	wake chan struct{} // signalled when the earliest due time moved earlier
	// added is signalled when a job becomes pending (the poll-only loop waits on it while nothing is).
	added chan struct{}
}

func newIndex(lateWatch, poll time.Duration, m *metrics) *index {
	return &index{
		lateWatch: lateWatch, poll: poll, m: m,
		byID: make(map[string]*entry), mods: make(map[string]*modality),
		wake:  make(chan struct{}, 1),
		added: make(chan struct{}, 1),
	}
}

// has reports whether the index holds job id (pending or late-watched).
func (x *index) has(id string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.byID[id]
	return ok
}

// apply handles one JOBS watch entry: a put of a record (value) or a delete (value nil).
func (x *index) apply(key string, value []byte, deleted bool, now time.Time) error {
	if deleted {
		x.mu.Lock()
		x.removeLocked(key)
		x.mu.Unlock()
		return nil
	}
	var v recordView
	if err := json.Unmarshal(value, &v); err != nil {
		x.mu.Lock()
		x.removeLocked(key)
		x.mu.Unlock()
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	switch {
	case v.State == jobs.StatePending:
		x.putPendingLocked(key, v)
	case v.State == jobs.StateTimedOut && x.lateWatch > 0 && v.LateDeliveredAt == nil &&
		now.Before(v.Deadline.Add(x.lateWatch)):
		x.putLateLocked(key, v)
	default:
		x.removeLocked(key)
	}
	return nil
}

func (x *index) putPendingLocked(key string, v recordView) {
	dl := v.Deadline.UnixNano()
	e := x.byID[key]
	if e != nil && e.late() {
		x.removeLocked(key) // back to pending: not a transition the bridge makes, but follow the record
		e = nil
	}
	if e != nil {
		// Another update of a pending record (attempts, last status). Only a later deadline moves the
		// check: an earlier due time may be a retry after a failed check, and a deadline is never
		// brought forward.
		if dl > e.due {
			e.due = dl
			if e.pos >= 0 {
				heap.Fix(&x.heap, int(e.pos))
			}
		}
		return
	}
	e = &entry{id: strings.Clone(key), mod: x.modalityLocked(v.Modality), due: dl, submitted: v.SubmittedAt.UnixNano(),
		gen: x.gen, pos: -1}
	x.byID[e.id] = e
	x.pending++
	e.mod.gauge.Inc()
	x.pushLocked(e)
	select {
	case x.added <- struct{}{}:
	default:
	}
}

func (x *index) putLateLocked(key string, v recordView) {
	until := v.Deadline.Add(x.lateWatch).UnixNano()
	e := x.byID[key]
	if e != nil && e.late() {
		return
	}
	if e != nil {
		// pending → timed_out: leave the heap, keep the entry (a running check sees the flag).
		if e.pos >= 0 {
			heap.Remove(&x.heap, int(e.pos))
		}
		x.pending--
		e.mod.gauge.Dec()
		x.clearFailuresLocked(e)
		e.flags, e.notFound, e.notFoundAt = flagLate, 0, 0
		e.due, e.missing = until, 0
		x.late++
		x.m.lateWatched.Inc()
		return
	}
	e = &entry{id: strings.Clone(key), mod: x.modalityLocked(v.Modality), due: until, submitted: v.SubmittedAt.UnixNano(),
		gen: x.gen, pos: -1, flags: flagLate}
	x.byID[e.id] = e
	x.late++
	x.m.lateWatched.Inc()
}

func (x *index) removeLocked(key string) {
	e := x.byID[key]
	if e == nil {
		return
	}
	delete(x.byID, key)
	if e.pos >= 0 {
		heap.Remove(&x.heap, int(e.pos))
	}
	x.clearFailuresLocked(e)
	if e.late() {
		x.late--
		x.m.lateWatched.Dec()
	} else {
		x.pending--
		e.mod.gauge.Dec()
	}
}

func (x *index) modalityLocked(name string) *modality {
	if m := x.mods[name]; m != nil {
		return m
	}
	label := name
	if len(x.mods) >= maxModalities {
		label = "other"
	}
	m := &modality{name: strings.Clone(name), gauge: x.m.pending.WithLabelValues(label)}
	x.mods[m.name] = m
	return m
}

// pushLocked puts a pending entry in the heap and wakes the deadline loop if it became the earliest.
func (x *index) pushLocked(e *entry) {
	heap.Push(&x.heap, e)
	if e.pos == 0 {
		select {
		case x.wake <- struct{}{}:
		default:
		}
	}
}

// reset empties the index before a new watch replays the bucket. Running checks find their entry gone
// and drop it; the replay adds it again.
func (x *index) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range x.byID {
		x.clearFailuresLocked(e)
		if e.late() {
			x.m.lateWatched.Dec()
		} else {
			e.mod.gauge.Dec()
		}
	}
	x.byID = make(map[string]*entry) // a fresh map lets the old buckets go
	x.heap = nil
	x.pending, x.late = 0, 0
}

// counts returns the number of pending and late-watched jobs.
func (x *index) counts() (pending, late int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.pending, x.late
}

// oldestSubmitted is the earliest submission time of the jobs in the index, and how many there are.
func (x *index) oldestSubmitted() (time.Time, int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var oldest int64
	for _, e := range x.byID {
		if oldest == 0 || (e.submitted != 0 && e.submitted < oldest) {
			oldest = e.submitted
		}
	}
	return time.Unix(0, oldest), len(x.byID)
}

// nextDue is the earliest due time in the heap.
func (x *index) nextDue() (time.Time, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.heap) == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, x.heap[0].due), true
}

// popDue takes up to limit pending entries due at now out of the heap and marks them busy. Entries a
// sweep is fetching go back with due = now + later.
func (x *index) popDue(now time.Time, limit int, later time.Duration) []task {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := now.UnixNano()
	var out []task
	var deferred []*entry
	for len(x.heap) > 0 && x.heap[0].due <= n && len(out) < limit {
		e := heap.Pop(&x.heap).(*entry)
		if e.flags&flagBusy != 0 {
			deferred = append(deferred, e)
			continue
		}
		e.flags |= flagBusy
		out = append(out, task{e: e, id: e.id, mod: e.mod.name, flags: e.flags, missing: e.missing})
	}
	for _, e := range deferred {
		e.due = n + int64(later)
		heap.Push(&x.heap, e)
	}
	return out
}

// release ends a deadline check: the entry goes back into the heap, due no earlier than now + retry,
// unless the record left pending meanwhile.
func (x *index) release(t task, now time.Time, retry time.Duration) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.releaseLocked(t.e, now, retry)
}

// delivered ends a deadline check whose delivery worked (or had nothing to do): the job's failures
// are forgotten and it goes back into the heap as release does.
func (x *index) delivered(t task, now time.Time, retry time.Duration) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.clearFailuresLocked(t.e)
	x.releaseLocked(t.e, now, retry)
}

// backOff ends a deadline check whose delivery failed: the job's failures in a row go up, and it is
// checked again after base·2^(failures-1), at most ceil. It returns that delay and the failures.
func (x *index) backOff(t task, now time.Time, base, ceil time.Duration) (time.Duration, int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e := t.e
	if x.byID[e.id] == e && !e.late() {
		if e.failures == 0 {
			x.m.deliverFailing.Inc()
		}
		if e.failures < 255 {
			e.failures++
		}
	}
	delay := ceil
	if n := max(int(e.failures), 1) - 1; n < 32 && base<<n < ceil && base<<n > 0 {
		delay = base << n
	}
	x.releaseLocked(e, now, delay)
	return delay, int(e.failures)
}

func (x *index) releaseLocked(e *entry, now time.Time, retry time.Duration) {
	e.flags &^= flagBusy
	if x.byID[e.id] != e || e.late() || e.pos >= 0 {
		return
	}
	e.due = max(e.due, now.Add(retry).UnixNano())
	x.pushLocked(e)
}

// forgetFailures forgets every job's failed deliveries, when this replica stops leading: the gauge
// bridge_reconcile_deliver_failing is the leader's alone.
func (x *index) forgetFailures() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range x.byID {
		x.clearFailuresLocked(e)
	}
}

// clearFailuresLocked forgets the failed deliveries of e.
func (x *index) clearFailuresLocked(e *entry) {
	if e.failures > 0 {
		e.failures = 0
		x.m.deliverFailing.Dec()
	}
}

// beginSweep starts a sweep generation: entries added from now on are newer than its in-flight list.
func (x *index) beginSweep() uint32 {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.gen++
	return x.gen
}

// sweepPlan is what mark found.
type sweepPlan struct {
	tasks     []task
	nextCheck int64 // earliest time a missing job's grace ends, 0 if none
	oldest    int64 // earliest submitted_at of a pending job, 0 if none
}

// mark compares the index with an in-flight list taken in sweep generation gen (inflight nil: a check
// pass that only looks at jobs already found missing) and returns the jobs whose grace ended, marked
// busy: pending jobs first, then late-watched ones, each oldest-missing first. Expired late watches
// are dropped. It runs in O(entries) under the lock.
func (x *index) mark(inflight map[string]struct{}, gen uint32, now time.Time, grace time.Duration) sweepPlan {
	x.mu.Lock()
	defer x.mu.Unlock()
	n, g := now.UnixNano(), int64(grace)
	var p sweepPlan
	for id, e := range x.byID {
		if e.late() && e.due <= n {
			x.removeLocked(id)
			continue
		}
		if !e.late() && (p.oldest == 0 || e.submitted < p.oldest) {
			p.oldest = e.submitted
		}
		if inflight != nil {
			if e.gen >= gen {
				continue // recorded after the list was asked for: it may be missing from it
			}
			if _, ok := inflight[id]; ok {
				e.flags |= flagInFlight
				e.missing = 0
				continue
			}
			e.flags &^= flagInFlight
			if e.missing == 0 {
				e.missing = n
			}
		}
		if e.missing == 0 || e.flags&(flagBusy|flagGone) != 0 {
			continue
		}
		if e.notFound > 0 && n-e.notFoundAt < int64(x.poll) {
			continue // a 404 is asked about again a poll interval later, not at every check pass
		}
		if n-e.missing < g {
			if p.nextCheck == 0 || e.missing+g < p.nextCheck {
				p.nextCheck = e.missing + g
			}
			continue
		}
		e.flags |= flagBusy
		p.tasks = append(p.tasks, task{e: e, id: e.id, mod: e.mod.name, flags: e.flags, missing: e.missing})
	}
	slices.SortFunc(p.tasks, func(a, b task) int {
		if la, lb := a.flags&flagLate != 0, b.flags&flagLate != 0; la != lb {
			if lb {
				return -1
			}
			return 1
		}
		switch {
		case a.missing < b.missing:
			return -1
		case a.missing > b.missing:
			return 1
		}
		return 0
	})
	return p
}

// fetched records the outcome of a sweep GET at now and clears busy: stillRunning resets the missing
// time (the job is back in flight or was never out); notFound counts a 404. A pending job is marked
// gone after goneAfter 404s in a row (a late-watched one is dropped at the first); any other answer
// starts the count again.
func (x *index) fetched(t task, now time.Time, stillRunning, notFound bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e := t.e
	e.flags &^= flagBusy
	if x.byID[e.id] != e {
		return
	}
	if !notFound {
		e.notFound, e.notFoundAt = 0, 0
	}
	switch {
	case notFound && e.late():
		x.removeLocked(e.id)
	case notFound:
		e.notFound++
		e.notFoundAt = now.UnixNano()
		if e.notFound >= goneAfter {
			e.flags |= flagGone
		}
	case stillRunning:
		e.missing = 0
	}
}

// unbusy clears busy on tasks a sweep did not get to.
func (x *index) unbusy(ts []task) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, t := range ts {
		t.e.flags &^= flagBusy
	}
}

// dueHeap is a min-heap of pending entries by due time.
type dueHeap []*entry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = int32(i), int32(j)
}
func (h *dueHeap) Push(v any) {
	e := v.(*entry)
	e.pos = int32(len(*h))
	*h = append(*h, e)
}
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.pos = -1
	return e
}
