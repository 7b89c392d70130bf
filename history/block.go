package history

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// The layout of a block's value. A block's key is "b" for the root, "b.<prefix>" below it, where
// prefix is the first hex digits (one a level) of the ids the block holds.
const (
	// kindIDs starts a leaf of ids alone: this byte, then the ids in ascending order, 16 bytes each. Only
	// read (the first history written, in tests and trials, before entries had their delivery).
	kindIDs byte = 1
	// kindSplit is a split marker, this byte alone: the block's ids live in its 16 children.
	kindSplit byte = 2
	// kindLeaf starts a leaf: this byte, then its entries in ascending order of id, 32 bytes each: the
	// id's 16 bytes, the delivery time in Unix milliseconds (8 bytes, big-endian, 0 when unknown) and
	// the result's RESULTS sequence (8 bytes, big-endian, 0 when unknown).
	kindLeaf byte = 3

	idLen    = 16
	entryLen = 32
	// maxDepth is the deepest prefix: all 32 hex digits of an id.
	maxDepth  = 2 * idLen
	hexDigits = "0123456789abcdef"
)

// id is a job id as stored: the UUID's 16 bytes. Byte order is the order of the lower-case strings.
type id [idLen]byte

// parseID takes a job id in its 36-character form, in either case.
func parseID(s string) (id, error) {
	u, err := uuid.Parse(s)
	if len(s) != 36 || err != nil {
		return id{}, fmt.Errorf("%w: %q", ErrInvalidID, s)
	}
	return id(u), nil
}

func compareIDs(a, b id) int { return bytes.Compare(a[:], b[:]) }

// nibble is the hex digit of x at depth (0 is the first).
func nibble(x id, depth int) byte {
	if depth%2 == 0 {
		return x[depth/2] >> 4
	}
	return x[depth/2] & 0x0f
}

// key is the KV key of the block of prefix.
func key(prefix string) string {
	if prefix == "" {
		return "b"
	}
	return "b." + prefix
}

// child is the prefix of the child of prefix that holds x.
func child(prefix string, x id) string { return prefix + string(hexDigits[nibble(x, len(prefix))]) }

// hasPrefix reports whether x's hex digits start with prefix.
func hasPrefix(x id, prefix string) bool {
	for d := range len(prefix) {
		if hexDigits[nibble(x, d)] != prefix[d] {
			return false
		}
	}
	return true
}

// errDeepSplit is a split marker at the last digit, which no id can be below.
func errDeepSplit(prefix string) error {
	return fmt.Errorf("%w: block %s is split below the last digit", ErrCorrupt, key(prefix))
}

// Entry is one delivered job as the history keeps it.
type Entry struct {
	// JobID is the job's id, a UUID in its 36-character form (any case; kept as bytes).
	JobID string `json:"job_id"`
	// DeliveredAt is when its result went out, to the millisecond; zero when unknown.
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	// ResultSeq is the RESULTS sequence its result was stored at (gone once retention passed); 0 when
	// unknown.
	ResultSeq uint64 `json:"result_seq,omitempty"`
}

// entry is an [Entry] as stored.
type entry struct {
	id  id
	at  int64 // Unix milliseconds, 0 when unknown
	seq uint64
}

func (e entry) export() Entry {
	out := Entry{JobID: uuid.UUID(e.id).String(), ResultSeq: e.seq}
	if e.at != 0 {
		out.DeliveredAt = time.UnixMilli(e.at).UTC()
	}
	return out
}

// parseEntries parses entries into ascending order of id, the first of repeated ids kept.
func parseEntries(in []Entry) ([]entry, error) {
	out := make([]entry, 0, len(in))
	for _, e := range in {
		x, err := parseID(e.JobID)
		if err != nil {
			return nil, err
		}
		var at int64
		if !e.DeliveredAt.IsZero() {
			at = e.DeliveredAt.UnixMilli()
		}
		out = append(out, entry{id: x, at: at, seq: e.ResultSeq})
	}
	slices.SortStableFunc(out, compareEntries)
	return slices.CompactFunc(out, func(a, b entry) bool { return a.id == b.id }), nil
}

func compareEntries(a, b entry) int { return compareIDs(a.id, b.id) }

// block is one block as read: absent (rev 0), a split marker, or a leaf and its entries.
type block struct {
	rev     uint64
	split   bool
	entries []entry
}

// decode reads a block's value: a split marker, or a leaf whose ids are strictly ascending.
func decode(v []byte) (split bool, entries []entry, err error) {
	size := 0
	switch {
	case len(v) == 1 && v[0] == kindSplit:
		return true, nil, nil
	case len(v) > 0 && v[0] == kindLeaf:
		size = entryLen
	case len(v) > 0 && v[0] == kindIDs:
		size = idLen
	}
	if size == 0 || (len(v)-1)%size != 0 {
		return false, nil, fmt.Errorf("%w: %d bytes, kind %v", ErrCorrupt, len(v), v[:min(len(v), 1)])
	}
	entries = make([]entry, (len(v)-1)/size)
	for i := range entries {
		rec := v[1+i*size : 1+(i+1)*size]
		entries[i].id = id(rec[:idLen])
		if size == entryLen {
			entries[i].at = int64(binary.BigEndian.Uint64(rec[idLen:]))
			entries[i].seq = binary.BigEndian.Uint64(rec[idLen+8:])
		}
		if i > 0 && compareIDs(entries[i-1].id, entries[i].id) >= 0 {
			return false, nil, fmt.Errorf("%w: ids out of order at %d", ErrCorrupt, i)
		}
	}
	return false, entries, nil
}

// encodeLeaf is the value of a leaf holding entries (ascending).
func encodeLeaf(entries []entry) []byte {
	v := make([]byte, 1, 1+len(entries)*entryLen)
	v[0] = kindLeaf
	for _, e := range entries {
		v = append(v, e.id[:]...)
		v = binary.BigEndian.AppendUint64(v, uint64(e.at))
		v = binary.BigEndian.AppendUint64(v, e.seq)
	}
	return v
}

// union merges two ascending lists, and says how many of b's ids a lacked. An id in both keeps a's
// entry: the first delivery recorded stays.
func union(a, b []entry) (out []entry, added int) {
	out = make([]entry, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch c := cmpAt(a, b, i, j); {
		case c < 0:
			out, i = append(out, a[i]), i+1
		case c > 0:
			out, j, added = append(out, b[j]), j+1, added+1
		default:
			out, i, j = append(out, a[i]), i+1, j+1
		}
	}
	return out, added
}

// cmpAt compares a[i] with b[j], an exhausted list coming last.
func cmpAt(a, b []entry, i, j int) int {
	switch {
	case i == len(a):
		return 1
	case j == len(b):
		return -1
	}
	return compareEntries(a[i], b[j])
}

// find returns the entry of x in the ascending entries.
func find(entries []entry, x id) (entry, bool) {
	i, found := slices.BinarySearchFunc(entries, x, func(e entry, x id) int { return compareIDs(e.id, x) })
	if !found {
		return entry{}, false
	}
	return entries[i], true
}
