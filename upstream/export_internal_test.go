package upstream

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// endless is a body that, after its start, sends 'a' for ever, counting what it sent.
type endless struct {
	start io.Reader
	sent  int64
}

func (e *endless) Read(p []byte) (int, error) {
	n, err := e.start.Read(p)
	if err == io.EOF {
		for i := range p {
			p[i] = 'a'
		}
		n, err = len(p), nil
	}
	e.sent += int64(n)
	return n, err
}

// TestEndlessRowStopsEarly: a row that never ends fails the export once it is MaxExportRow (and the CSV
// reader's buffer) long, long before the body's bound: the row bound bounds memory, not only the result.
func TestEndlessRowStopsEarly(t *testing.T) {
	head := "\uFEFF" + strings.Join(ExportColumns, ",") + "\nid,prompt,queued,,t,,"
	body := &endless{start: strings.NewReader(head)}
	err := readExport(body, DefaultMaxExportBytes, func(Job) error { return nil })
	if !errors.Is(err, ErrAnswerTooLarge) || !strings.Contains(err.Error(), "MaxExportRow") {
		t.Fatalf("err = %v, want ErrAnswerTooLarge naming MaxExportRow", err)
	}
	if most := int64(len(head) + MaxExportRow + 2*readAhead); body.sent > most {
		t.Fatalf("read %d bytes of an endless row, want at most %d", body.sent, most)
	}
}
