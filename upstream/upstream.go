package upstream

import (
	"encoding/json"
	"strconv"
	"time"
)

// Class is a budget priority class. Lower values are served first, so work already accepted is finished
// before new work starts: a waiting verification is served before a waiting poll, and a poll before a
// submission.
type Class int

// Budget classes, highest priority first.
const (
	ClassVerify Class = iota
	ClassPoll
	ClassSubmit
	numClasses
)

// String returns "submit", "verify" or "poll".
func (c Class) String() string {
	switch c {
	case ClassSubmit:
		return "submit"
	case ClassVerify:
		return "verify"
	case ClassPoll:
		return "poll"
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// Job statuses of the upstream.
const (
	StatusQueued     = "queued"
	StatusProcessing = "processing"
	StatusCompleted  = "completed"
	StatusFailed     = "failed"
)

// BuiltinCategories are the upstream's built-in moderation categories, in the order of the export's
// category columns (upstream-api.md §2.7, §4): keys of a job's categories object (each only when enabled
// for the account) and of the moderation config. Any other key of the catalogue is a custom category
// ([ModerationConfig.Custom]).
var BuiltinCategories = []string{"ai_adult_general", "underage", "nsfw"}

// Job is the upstream's GET /job/{id} object. Raw holds the object exactly as returned, unknown fields
// included (or, for [Client.ExportJobs], as built from an export row); the typed fields are decoded from
// it for the bridge's own decisions.
type Job struct {
	JobID        string          `json:"job_id"`
	Type         string          `json:"type"`
	Status       string          `json:"status"`
	IsProhibited *bool           `json:"is_prohibited"`
	CompletedAt  *string         `json:"completed_at"`
	CreatedAt    string          `json:"created_at,omitempty"`
	ErrorCode    string          `json:"error_code,omitempty"`
	Raw          json.RawMessage `json:"-"`
}

// Terminal reports whether the job reached completed or failed.
func (j Job) Terminal() bool { return j.Status == StatusCompleted || j.Status == StatusFailed }

// Submission is the answer to a job submission.
type Submission struct {
	JobID  string `json:"job_id"`
	Status string `json:"status"`
	// StatusUnknown is set when the upstream answered 503 SUBMISSION_STATUS_UNKNOWN with a job_id: the job
	// may exist; poll it before submitting again.
	StatusUnknown bool `json:"-"`
	// Endpoint is the upstream path the submission went to, e.g. "/moderate/text" for a prompt under the
	// v2 contract.
	Endpoint string `json:"-"`
}

// ListFilter selects jobs for GET /jobs. Zero fields are left out of the query.
type ListFilter struct {
	Status []string
	Type   string
	// Decision is "pass" or "reject".
	Decision string
	// Search is a job_id prefix.
	Search string
	From   time.Time
	To     time.Time
	Limit  int
	Offset int
}

// JobList is one page of GET /jobs.
type JobList struct {
	Jobs   []Job `json:"jobs"`
	Total  int   `json:"total"`
	Limit  int   `json:"limit"`
	Offset int   `json:"offset"`
}

// InFlightPage is how many jobs one GET /jobs page of [Client.InFlight] asks for.
const InFlightPage = 100
