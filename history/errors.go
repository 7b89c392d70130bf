package history

import "errors"

// ErrInvalidConfig is returned by [New] for a [Config] it cannot work with; the message names the field.
var ErrInvalidConfig = errors.New("invalid history config")

// ErrInvalidID is returned for a job id that is not a UUID in its 36-character form.
var ErrInvalidID = errors.New("not a job id")

// ErrCorrupt is returned for a block that is neither a leaf nor a split marker of this package's
// layout, a leaf whose ids are not sorted, or (from [Store.Census]) an id in a leaf of another prefix.
var ErrCorrupt = errors.New("history block corrupt")

// errConflict is a compare-and-set that lost to another writer: read again and redo on its version.
var errConflict = errors.New("history block changed meanwhile")
