package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/evershield/bridge/internal/text"
	"github.com/evershield/bridge/jobs"
)

// jobIDKey is the only field of a webhook body ingest looks at.
const jobIDKey = "job_id"

// jobID checks that body is one JSON object whose top level has exactly one "job_id" key (exact, case-sensitive
// match, as the verifier reads it) holding a string with a UUID in 8-4-4-4-12 form, and returns that string.
// Nothing else is decoded: json.Valid checks the whole body without allocating, then a small scanner walks only
// the top-level keys. A repeated job_id is rejected, since JSON parsers disagree on which one wins.
func jobID(body []byte) (string, error) {
	if !json.Valid(body) {
		return "", malformed(body)
	}
	// From here body is known to be valid JSON, so the scanner needs no bounds or syntax checks.
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return "", fmt.Errorf("%w: top level is %s", ErrNotObject, kind(body[i]))
	}
	var raw []byte
	i++
	for {
		i = skipSpace(body, i)
		if body[i] == '}' {
			break
		}
		if body[i] == ',' {
			i = skipSpace(body, i+1)
		}
		keyEnd := stringEnd(body, i)
		key := body[i:keyEnd]
		i = skipSpace(body, keyEnd) // at ':'
		i = skipSpace(body, i+1)
		valEnd := valueEnd(body, i)
		if isJobIDKey(key) {
			if raw != nil {
				return "", fmt.Errorf("%w: job_id appears more than once", ErrJobID)
			}
			raw = body[i:valEnd]
		}
		i = valEnd
	}
	if raw == nil {
		return "", fmt.Errorf("%w: no job_id", ErrJobID)
	}
	if raw[0] != '"' {
		return "", fmt.Errorf("%w: job_id is %s", ErrJobID, kind(raw[0]))
	}
	id, err := unquote(raw)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrJobID, err)
	}
	canon, ok := jobs.CanonicalID(id)
	if !ok {
		return "", fmt.Errorf("%w: %q is not a UUID", ErrJobID, text.Truncate(id, 64))
	}
	return canon, nil
}

// malformed describes why body is not JSON; it runs only on the rejection path.
func malformed(body []byte) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return fmt.Errorf("%w: empty body", ErrMalformed)
	}
	var v json.RawMessage
	err := json.Unmarshal(body, &v)
	if se, ok := err.(*json.SyntaxError); ok {
		return fmt.Errorf("%w: %v at offset %d", ErrMalformed, se, se.Offset)
	}
	return ErrMalformed
}

// isJobIDKey reports whether the quoted key decodes to job_id; escapes such as \u005f are decoded.
func isJobIDKey(key []byte) bool {
	if len(key) == len(jobIDKey)+2 {
		return string(key[1:len(key)-1]) == jobIDKey
	}
	if bytes.IndexByte(key, '\\') < 0 {
		return false
	}
	s, err := unquote(key)
	return err == nil && s == jobIDKey
}

// unquote decodes a JSON string literal, taking the fast path when it has no escapes.
func unquote(lit []byte) (string, error) {
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), nil
	}
	var s string
	err := json.Unmarshal(lit, &s)
	return s, err
}

// skipSpace returns the index of the first non-whitespace byte at or after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just past the string literal starting at b[i] == '"'.
func stringEnd(b []byte, i int) int {
	for j := i + 1; ; j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
}

// valueEnd returns the index just past the JSON value starting at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; ; j++ {
			switch b[j] {
			case '"':
				j = stringEnd(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
	default: // number, true, false, null
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return j
			}
			j++
		}
		return j
	}
}

// kind names the JSON type a value starting with c has.
func kind(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}
