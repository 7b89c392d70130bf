package contract

import "strconv"

// The layout of the bridge's state is a number kept in the metadata of the JOBS bucket's stream, under
// [LayoutKey]. It names what every process must know to read the state safely; a process refuses to start
// on a layout newer than [Layout]. See docs/DESIGN.md, History, and docs/OPERATIONS.md, Upgrade.
const (
	// LayoutKey is the metadata key of KV_JOBS that holds the layout.
	LayoutKey = "bridge.layout"
	// LayoutTombstones (1) keeps a tombstone in JOBS for every delivered job, for ever: the layout of the
	// releases before the history, and of a JOBS bucket without the metadata key.
	LayoutTombstones = 1
	// LayoutHistory (2) moves delivered jobs out of JOBS into BRIDGE_HISTORY once their duplicate window has
	// passed. JOBS then also allows per-message TTLs, which a process of an earlier release cannot turn off:
	// its start-up stops at its update of JOBS.
	LayoutHistory = 2
	// Layout is the newest layout this release reads and writes.
	Layout = LayoutHistory
)

// LayoutOf reads the layout from a stream's metadata: [LayoutTombstones] without the key, 0 when the value is
// not a positive number (a layout no release wrote).
func LayoutOf(metadata map[string]string) int {
	v, ok := metadata[LayoutKey]
	if !ok {
		return LayoutTombstones
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0
	}
	return n
}

// LayoutMetadata returns metadata with the layout set to layout, leaving the other keys as they are.
func LayoutMetadata(metadata map[string]string, layout int) map[string]string {
	out := make(map[string]string, len(metadata)+1)
	for k, v := range metadata {
		out[k] = v
	}
	out[LayoutKey] = strconv.Itoa(layout)
	return out
}
