package simulator

import (
	"encoding/csv"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/evershield/bridge/upstream"
)

// exportBatch is how many rows the export renders under one read lock and writes before it flushes.
const exportBatch = 256

// exportJobs serves GET /api/v1/jobs/export: a UTF-8 BOM, the header row of [upstream.ExportColumns],
// then one row per job of the account created in [from, to), newest first, streamed in batches. The jobs
// are chosen when the request comes; each row shows its job as it is when the row is written.
func (s *Simulator) exportJobs(w http.ResponseWriter, r *http.Request, req request) {
	if !req.key.has(ScopeJobs) {
		writeErr(w, http.StatusForbidden, "FORBIDDEN", "API key lacks scope job:read")
		return
	}
	from, to, msg := exportWindow(r.URL.Query())
	if msg != "" {
		writeErr(w, http.StatusBadRequest, "INVALID_REQUEST", msg)
		return
	}
	var sel []*job
	s.mu.RLock()
	js := req.acct.jobs
	for i := len(js) - 1; i >= 0; i-- { // newest first, as GET /jobs
		if c := js[i].created; !c.Before(from) && c.Before(to) {
			sel = append(sel, js[i])
		}
	}
	s.mu.RUnlock()

	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if _, err := io.WriteString(w, "\uFEFF"); err != nil {
		return // the client went away
	}
	cw := csv.NewWriter(w)
	cw.Write(upstream.ExportColumns) //nolint:errcheck // checked with cw.Error below
	rows := make([][]string, 0, exportBatch)
	flush := http.NewResponseController(w)
	for len(sel) > 0 {
		batch := sel[:min(exportBatch, len(sel))]
		sel = sel[len(batch):]
		rows = rows[:0]
		s.mu.RLock()
		for _, j := range batch {
			rows = append(rows, j.exportRow())
		}
		s.mu.RUnlock()
		for _, row := range rows {
			cw.Write(row) //nolint:errcheck // checked with cw.Error below
		}
		cw.Flush()
		if cw.Error() != nil || flush.Flush() != nil {
			return // the client went away
		}
	}
	cw.Flush()
}

// exportWindow reads the required from and to of an export; a bad or missing one, to not after from, or a
// window over [upstream.ExportWindowMax] is the 400 message.
func exportWindow(q url.Values) (from, to time.Time, msg string) {
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"from", &from}, {"to", &to}} {
		v := q.Get(p.name)
		if v == "" {
			return from, to, p.name + " is required"
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return from, to, p.name + " must be an ISO 8601 date-time"
		}
		*p.t = t
	}
	switch {
	case !to.After(from):
		return from, to, "to must be after from"
	case to.Sub(from) > upstream.ExportWindowMax:
		return from, to, "the window from..to must not be longer than 366 days"
	}
	return from, to, ""
}

// exportRow renders the job as an export row: is_prohibited empty while undecided, completed_at while not
// finished, a category column empty when the job has no such category (no decision yet, not a media
// job). Called with mu held (read).
func (j *job) exportRow() []string {
	decided, done := "", ""
	if p := j.decision(); p != nil {
		decided = strconv.FormatBool(*p)
	}
	if !j.completed.IsZero() {
		done = stamp(j.completed)
	}
	row := make([]string, 0, len(upstream.ExportColumns))
	row = append(row, j.id, j.typ, j.status, decided, stamp(j.created), done, j.prompt, j.reason)
	for _, c := range upstream.BuiltinCategories {
		cell := ""
		if v, ok := j.categories[c]; ok {
			cell = strconv.FormatBool(v)
		}
		row = append(row, cell)
	}
	return row
}
