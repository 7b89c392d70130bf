package upstream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/evershield/bridge/internal/text"
)

// ExportColumns are the columns of GET /jobs/export, in order (upstream-api.md §2.7). The last three are
// "category_" and a built-in category of [BuiltinCategories].
var ExportColumns = []string{"job_id", "type", "status", "is_prohibited", "created_at", "completed_at", "prompt",
	"reason", "category_ai_adult_general", "category_underage", "category_nsfw"}

// ExportWindowMax is the longest window of created_at one GET /jobs/export may cover; the upstream
// refuses a longer one with 400 INVALID_REQUEST.
const ExportWindowMax = 366 * 24 * time.Hour

// DefaultMaxExportBytes is the default of Config.MaxExportBytes: 64 MiB.
const DefaultMaxExportBytes = 64 << 20

// MaxExportRow bounds one row of an export, in bytes; a longer row fails the export.
const MaxExportRow = 1 << 20

// utf8BOM starts the upstream's CSV.
var utf8BOM = []byte("\xEF\xBB\xBF")

// readAhead is how far the CSV reader's buffer (bufio's default size) may read past the row it parses.
const readAhead = 4096

// ExportJobs streams GET /jobs/export: the jobs of the account created in [from, to), as the upstream
// orders them, each handed to each as it is read. It is one request of the budget at [ClassVerify],
// never retried. A window over [ExportWindowMax], or to not after from, is refused with
// [ErrInvalidArgument] without a call.
//
// Each Job is what GET /job/{id} returns for the fields a row carries: JobID (lower case, as
// [Client.GetJob] keys it), Type as given (legacy pre and post too), Status, IsProhibited (nil when
// empty), CreatedAt and CompletedAt (nil when empty), and Raw, built from the row as the JSON object
// {job_id, type, status, is_prohibited, categories, reason (only when not empty), created_at,
// completed_at}, whose categories hold each non-empty category column as a boolean and an empty custom
// (the export carries no custom categories, and no error_code). The prompt column is read past and
// never kept or logged.
//
// An error from each stops the export and is returned as it is. An error answer is an *Error, as for
// any call. A body that breaks the contract is an *Error matching [ErrBadResponse]: columns other than
// [ExportColumns] (the export's columns changed: contract drift), a row that is not CSV or has another
// number of fields, a value that is not a boolean where one belongs; a body over Config.MaxExportBytes
// or a row over [MaxExportRow] also matches [ErrAnswerTooLarge]. Jobs handed to each before such an
// error stay handed. Config.Timeout bounds each wait for the upstream (the headers, then each read of
// the body), not the whole export: the time each takes is the caller's, and ctx bounds it all.
func (c *Client) ExportJobs(ctx context.Context, from, to time.Time, each func(Job) error) error {
	switch {
	case each == nil:
		return fmt.Errorf("%w: export without a func for its jobs", ErrInvalidArgument)
	case !to.After(from):
		return fmt.Errorf("%w: export window: to %s is not after from %s", ErrInvalidArgument,
			to.UTC().Format(time.RFC3339Nano), from.UTC().Format(time.RFC3339Nano))
	case to.Sub(from) > ExportWindowMax:
		return fmt.Errorf("%w: export window of %v is longer than %v", ErrInvalidArgument, to.Sub(from), ExportWindowMax)
	}
	q := url.Values{"from": {from.UTC().Format(time.RFC3339Nano)}, "to": {to.UTC().Format(time.RFC3339Nano)}}
	_, err := c.do(ctx, request{class: ClassVerify, ep: "GET /jobs/export", method: http.MethodGet,
		path: "/jobs/export?" + q.Encode(), accept: "text/csv", stream: func(body io.Reader) error {
			return readExport(body, c.cfg.MaxExportBytes, each)
		}})
	return err
}

// readExport reads an export's CSV from body, at most limit bytes: the BOM if any, the header row, then
// each row as a Job for each. An error of each comes back as *stopped.
func readExport(body io.Reader, limit int64, each func(Job) error) error {
	src := &exportBody{r: body, limit: limit}
	br := bufio.NewReaderSize(src, readAhead)
	var skipped int64 // the BOM's bytes
	if head, _ := br.Peek(len(utf8BOM)); bytes.Equal(head, utf8BOM) {
		n, _ := br.Discard(len(utf8BOM))
		skipped = int64(n)
	}
	cr := csv.NewReader(br)
	cr.ReuseRecord = true
	cr.FieldsPerRecord = -1 // the header is checked by name below
	head, err := cr.Read()
	switch {
	case err == io.EOF:
		return errors.New("export without a header row")
	case err != nil:
		return fmt.Errorf("export header: %w", err)
	case !slices.Equal(head, ExportColumns):
		return fmt.Errorf("the export's columns changed (contract drift): got %s, want %s",
			text.Truncate(strings.Join(head, ","), 400), strings.Join(ExportColumns, ","))
	}
	cr.FieldsPerRecord = len(ExportColumns)
	for n := 1; ; n++ {
		start := cr.InputOffset()
		src.rowStart = skipped + start
		rec, err := cr.Read()
		switch {
		case err == io.EOF:
			return nil
		case err != nil:
			return fmt.Errorf("export row %d: %w", n, err)
		case cr.InputOffset()-start > MaxExportRow:
			return fmt.Errorf("export row %d: %w", n, errRowTooLong)
		}
		j, err := exportedJob(rec)
		if err != nil {
			return fmt.Errorf("export row %d: %w", n, err)
		}
		if err := each(j); err != nil {
			return &stopped{err}
		}
	}
}

// errRowTooLong is a row over MaxExportRow.
var errRowTooLong = fmt.Errorf("%w: row over %d bytes (MaxExportRow)", ErrAnswerTooLarge, MaxExportRow)

// exportBody is an export's body, failing a read once more than limit bytes came, or once the row being
// read (from rowStart) is longer than MaxExportRow and the CSV reader's buffer.
type exportBody struct {
	r        io.Reader
	limit    int64
	n        int64 // bytes delivered
	rowStart int64 // where the row being read began, in bytes from the start
}

func (b *exportBody) Read(p []byte) (int, error) {
	switch {
	case b.n-b.rowStart > MaxExportRow+readAhead:
		return 0, errRowTooLong
	case b.n >= b.limit:
		var one [1]byte
		if n, err := b.r.Read(one[:]); n == 0 {
			return 0, err // the end, or no byte yet
		}
		return 0, fmt.Errorf("%w: export over %d bytes (Config.MaxExportBytes)", ErrAnswerTooLarge, b.limit)
	}
	n, err := b.r.Read(p[:min(int64(len(p)), b.limit-b.n)])
	b.n += int64(n)
	return n, err
}

// exportRaw is the GET /job/{id} object an export row stands for, fields in the upstream's order.
type exportRaw struct {
	JobID        string         `json:"job_id"`
	Type         string         `json:"type"`
	Status       string         `json:"status"`
	IsProhibited *bool          `json:"is_prohibited"`
	Categories   map[string]any `json:"categories"`
	Reason       string         `json:"reason,omitempty"`
	CreatedAt    string         `json:"created_at"`
	CompletedAt  *string        `json:"completed_at"`
}

// exportedJob turns an export row (the columns of ExportColumns) into its Job. Every kept string is a
// copy: the row's strings share one allocation with its prompt, which must not outlive the row.
func exportedJob(rec []string) (Job, error) {
	if rec[0] == "" {
		return Job{}, errors.New("row without job_id")
	}
	prohibited, err := optBool(ExportColumns[3], rec[3])
	if err != nil {
		return Job{}, err
	}
	raw := exportRaw{JobID: strings.Clone(rec[0]), Type: strings.Clone(rec[1]), Status: strings.Clone(rec[2]),
		IsProhibited: prohibited, Categories: map[string]any{"custom": struct{}{}}, Reason: rec[7],
		CreatedAt: strings.Clone(rec[4])}
	if rec[5] != "" {
		done := strings.Clone(rec[5])
		raw.CompletedAt = &done
	}
	for i := 8; i < len(ExportColumns); i++ {
		v, err := optBool(ExportColumns[i], rec[i])
		if err != nil {
			return Job{}, err
		}
		if v != nil {
			raw.Categories[strings.TrimPrefix(ExportColumns[i], "category_")] = *v
		}
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return Job{}, err
	}
	return Job{JobID: strings.ToLower(raw.JobID), Type: raw.Type, Status: raw.Status, IsProhibited: prohibited,
		CreatedAt: raw.CreatedAt, CompletedAt: raw.CompletedAt, Raw: b}, nil
}

// optBool reads a boolean cell: empty is nil.
func optBool(column, v string) (*bool, error) {
	if v == "" {
		return nil, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return nil, fmt.Errorf("%s %q is not true, false or empty", column, text.Truncate(v, 40))
	}
	return &b, nil
}
