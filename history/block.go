package history

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/google/uuid"
)

// The layout of a block's value. A block's key is "b" for the root, "b.<prefix>" below it, where
// prefix is the first hex digits (one a level) of the ids the block holds.
const (
	// kindLeaf starts a leaf: this byte, then the leaf's ids in ascending order, 16 bytes each.
	kindLeaf byte = 1
	// kindSplit is a split marker, this byte alone: the block's ids live in its 16 children.
	kindSplit byte = 2

	idLen = 16
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

// parseIDs parses jobIDs into ascending order without repeats.
func parseIDs(jobIDs []string) ([]id, error) {
	out := make([]id, 0, len(jobIDs))
	for _, s := range jobIDs {
		x, err := parseID(s)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	slices.SortFunc(out, compareIDs)
	return slices.Compact(out), nil
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

// block is one block as read: absent (rev 0), a split marker, or a leaf and its ids.
type block struct {
	rev   uint64
	split bool
	ids   []id
}

// decode reads a block's value: a split marker, or a leaf whose ids are strictly ascending.
func decode(v []byte) (split bool, ids []id, err error) {
	switch {
	case len(v) == 1 && v[0] == kindSplit:
		return true, nil, nil
	case len(v) == 0 || v[0] != kindLeaf || (len(v)-1)%idLen != 0:
		return false, nil, fmt.Errorf("%w: %d bytes, kind %v", ErrCorrupt, len(v), v[:min(len(v), 1)])
	}
	ids = make([]id, (len(v)-1)/idLen)
	for i := range ids {
		ids[i] = id(v[1+i*idLen : 1+(i+1)*idLen])
		if i > 0 && compareIDs(ids[i-1], ids[i]) >= 0 {
			return false, nil, fmt.Errorf("%w: ids out of order at %d", ErrCorrupt, i)
		}
	}
	return false, ids, nil
}

// encodeLeaf is the value of a leaf holding ids (ascending).
func encodeLeaf(ids []id) []byte {
	v := make([]byte, 1, 1+len(ids)*idLen)
	v[0] = kindLeaf
	for _, x := range ids {
		v = append(v, x[:]...)
	}
	return v
}

// union merges two ascending lists, and says how many of b's ids a lacked.
func union(a, b []id) (out []id, added int) {
	out = make([]id, 0, len(a)+len(b))
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
func cmpAt(a, b []id, i, j int) int {
	switch {
	case i == len(a):
		return 1
	case j == len(b):
		return -1
	}
	return compareIDs(a[i], b[j])
}

// contains reports whether the ascending ids hold x.
func contains(ids []id, x id) bool {
	_, found := slices.BinarySearchFunc(ids, x, compareIDs)
	return found
}
