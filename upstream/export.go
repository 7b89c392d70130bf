package upstream

import "time"

// ExportColumns are the columns of GET /jobs/export, in order (upstream-api.md §2.7). The last three are
// "category_" and a built-in category of [BuiltinCategories].
var ExportColumns = []string{"job_id", "type", "status", "is_prohibited", "created_at", "completed_at", "prompt",
	"reason", "category_ai_adult_general", "category_underage", "category_nsfw"}

// ExportWindowMax is the longest window of created_at one GET /jobs/export may cover; the upstream
// refuses a longer one with 400 INVALID_REQUEST.
const ExportWindowMax = 366 * 24 * time.Hour
