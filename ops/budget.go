package ops

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/contract"
)

// BudgetStatus is the account-wide upstream budget as BRIDGE_BUDGET holds it: the shared bucket and each
// live process's use of it.
type BudgetStatus struct {
	// RPM is the limit the processes run the budget with (BRIDGE_API_RPM); 0 when no process has yet.
	RPM int `json:"rpm"`
	// Level is the requests in the bucket now; PausedFor the rest of a 429 pause, seconds.
	Level     float64 `json:"level"`
	PausedFor float64 `json:"paused_for_seconds,omitempty"`
	// Account is the upstream account whose budget this is (BRIDGE_BUDGET_ACCOUNT, or a hash of the API
	// key); empty for a budget of a release before namespaces.
	Account string `json:"account,omitempty"`
	// RateFactor is the share of RPM in force after 429s (1 = full rate).
	RateFactor float64 `json:"rate_factor"`
	// Leased counts every request leased since the bucket was created.
	Leased uint64 `json:"leased"`
	// Owed is the pending jobs of the account, each owing one verification (from JOBS).
	Owed int `json:"owed"`
	// Processes are the processes that reported in the last 30 s.
	Processes []budget.Usage `json:"processes"`
}

// budgetStatus reads BRIDGE_BUDGET: the budget of the upstream account that was used last (its state
// key written most recently), and the processes that report on it. A deployment older than the shared
// budget has no bucket: nil.
func budgetStatus(ctx context.Context, js jetstream.JetStream, owed int, now time.Time) (*BudgetStatus, error) {
	kv, err := js.KeyValue(ctx, contract.BucketBudget)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	bs := &BudgetStatus{Owed: owed, RateFactor: 1, Processes: []budget.Usage{}}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	account, e := latestAccount(ctx, kv, keys)
	if e != nil {
		var st budget.State
		if json.Unmarshal(e.Value(), &st) == nil {
			p := budget.NewParams(max(1, st.RPM), 0)
			cur := st.Refilled(p, now)
			bs.Account, bs.RPM, bs.Level, bs.Leased = account, st.RPM, cur.Level, st.Leased
			if cur.Paused(now) {
				bs.PausedFor = time.Duration(cur.PausedUntil - now.UnixNano()).Seconds()
			}
			if st.Factor > 0 && st.Factor < 1 {
				bs.RateFactor = st.Factor // as of the last 429; it doubles back every budget.RecoverEvery
			}
		}
	}
	procs := budget.StateKey(account, budget.ProcPrefix)
	for _, k := range keys {
		if !strings.HasPrefix(k, procs) {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var u budget.Usage
		if json.Unmarshal(e.Value(), &u) == nil && now.Sub(u.At) < 30*time.Second {
			bs.Processes = append(bs.Processes, u)
		}
	}
	slices.SortFunc(bs.Processes, func(a, b budget.Usage) int { return strings.Compare(a.Instance, b.Instance) })
	return bs, nil
}

// latestAccount finds, among the bucket's keys, the account budgets (account, or <account>.account) and
// returns the one written most recently, with its entry; nil when there is none.
func latestAccount(ctx context.Context, kv jetstream.KeyValue, keys []string) (string, jetstream.KeyValueEntry) {
	var account string
	var latest jetstream.KeyValueEntry
	for _, k := range keys {
		acct, ok := "", k == budget.KeyAccount
		if !ok {
			acct, ok = strings.CutSuffix(k, "."+budget.KeyAccount)
			ok = ok && !strings.Contains(acct, ".")
		}
		if !ok {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		if latest == nil || e.Created().After(latest.Created()) {
			account, latest = acct, e
		}
	}
	return account, latest
}
