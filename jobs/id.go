package jobs

import "github.com/google/uuid"

// ValidID reports whether id is a job_id as the upstream issues them: a UUID in its 36-character form
// (either case), which is also a valid KV key and subject token.
func ValidID(id string) bool {
	return len(id) == 36 && uuid.Validate(id) == nil
}
