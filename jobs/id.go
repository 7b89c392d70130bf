package jobs

import (
	"strings"

	"github.com/google/uuid"
)

// ValidID reports whether id is a job_id as the upstream issues them: a UUID in its 36-character form
// (either case), which is also a valid KV key and subject token.
func ValidID(id string) bool {
	return len(id) == 36 && uuid.Validate(id) == nil
}

// CanonicalID returns id in the one form the bridge keys a job by, lower case, and whether it is a job_id
// at all. A UUID's hex digits may come in either case, and 7B0C... and 7b0c... are one job: every entry
// point (a webhook, a submission's answer, jobs.status, replay, dead letters) keys by this form, so they
// can never become two records or two results.
func CanonicalID(id string) (string, bool) {
	if !ValidID(id) {
		return "", false
	}
	return strings.ToLower(id), true
}
