package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// osvEntry is an OSV entry as golang.org/x/vulndb's data/osv has them: no modified time.
const osvEntry = `{
  "schema_version": "1.3.1",
  "id": "GO-2026-0002",
  "modified": "0001-01-01T00:00:00Z",
  "aliases": ["CVE-2026-1"],
  "summary": "one in the standard library, on two branches, and one in a module",
  "affected": [
    {"package": {"name": "stdlib", "ecosystem": "Go"},
     "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.25.9"}, {"introduced": "1.26.0"}, {"fixed": "1.26.9"}]}],
     "ecosystem_specific": {"imports": [{"path": "net/http", "symbols": ["Get"]}]}},
    {"package": {"name": "stdlib", "ecosystem": "Go"},
     "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.27.0-0"}, {"fixed": "1.27.2"}]}]},
    {"package": {"name": "example.com/m", "ecosystem": "Go"},
     "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}]}]}
  ]
}`

// modifiedEntry already has a modified time, which is kept.
const modifiedEntry = `{"id": "GO-2026-0001", "modified": "2026-01-02T03:04:05Z",
  "affected": [{"package": {"name": "stdlib"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.24.1"}]}]}]}`

// TestRunWritesTheV1Layout converts two entries and reads back the files govulncheck asks for.
func TestRunWritesTheV1Layout(t *testing.T) {
	in, out := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(in, "GO-2026-0002.json"), osvEntry)
	writeFile(t, filepath.Join(in, "GO-2026-0001.json"), modifiedEntry)
	var stdout bytes.Buffer
	if err := run([]string{"-osv", in, "-out", out, "-modified", "2026-11-05T23:49:57Z"}, &stdout); err != nil {
		t.Fatal(err)
	}
	if want := "2 entries, 2 modules"; !strings.Contains(stdout.String(), want) {
		t.Errorf("run printed %q, want %q in it", stdout.String(), want)
	}
	files := map[string]string{
		"index/db.json": `{"modified":"2026-11-05T23:49:57Z"}`,
		"index/modules.json": `[{"path":"example.com/m","vulns":[{"id":"GO-2026-0002","modified":"2026-11-05T23:49:57Z"}]},` +
			`{"path":"stdlib","vulns":[{"id":"GO-2026-0001","modified":"2026-01-02T03:04:05Z","fixed":"1.24.1"},` +
			`{"id":"GO-2026-0002","modified":"2026-11-05T23:49:57Z","fixed":"1.27.2"}]}]`,
		"index/vulns.json": `[{"id":"GO-2026-0001","modified":"2026-01-02T03:04:05Z"},` +
			`{"id":"GO-2026-0002","modified":"2026-11-05T23:49:57Z","aliases":["CVE-2026-1"]}]`,
	}
	for name, want := range files {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != want {
			t.Errorf("%s:\n got %s\nwant %s", name, b, want)
		}
	}
	var e map[string]any
	b, err := os.ReadFile(filepath.Join(out, "ID", "GO-2026-0002.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if e["modified"] != "2026-11-05T23:49:57Z" || e["summary"] == nil || e["affected"] == nil {
		t.Errorf("ID/GO-2026-0002.json lost its fields or its modified time: %s", b)
	}
}

// TestLatestFixed: the fixed version of an index entry, as golang.org/x/vulndb computes it.
func TestLatestFixed(t *testing.T) {
	tests := []struct {
		name   string
		events string
		want   string
	}{
		{"fixed once", `[{"introduced":"0"},{"fixed":"1.2.3"}]`, "1.2.3"},
		{"two branches", `[{"introduced":"0"},{"fixed":"1.25.9"},{"introduced":"1.26.0"},{"fixed":"1.26.9"}]`, "1.26.9"},
		{"never fixed", `[{"introduced":"0"}]`, ""},
		{"introduced again", `[{"introduced":"0"},{"fixed":"1.0.0"},{"introduced":"2.0.0"}]`, ""},
		{"pseudo-version", `[{"introduced":"0"},{"fixed":"0.0.0-20260610131716-5dc8f53b70a3"}]`, "0.0.0-20260610131716-5dc8f53b70a3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r osvRange
			if err := json.Unmarshal([]byte(`{"type":"SEMVER","events":`+tt.events+`}`), &r); err != nil {
				t.Fatal(err)
			}
			if got := latestFixed([]osvRange{r}); got != tt.want {
				t.Errorf("latestFixed(%s) = %q, want %q", tt.events, got, tt.want)
			}
		})
	}
}

// TestModuleListsAnEntryOnce: an entry with several affected blocks for a module is listed once, with a
// fixed version that lets govulncheck skip it only where every block would have.
func TestModuleListsAnEntryOnce(t *testing.T) {
	tests := []struct {
		name  string
		fixed []string
		want  string
	}{
		{"later fix wins", []string{"1.26.9", "1.27.2"}, "1.27.2"},
		{"earlier after later", []string{"1.27.2", "1.26.9"}, "1.27.2"},
		{"unfixed block", []string{"1.26.9", ""}, ""},
		{"unfixed first", []string{"", "1.26.9"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m module
			m.add(moduleVuln{ID: "GO-2026-0001", Fixed: "1.0.0"})
			for _, f := range tt.fixed {
				m.add(moduleVuln{ID: "GO-2026-0002", Fixed: f})
			}
			if len(m.Vulns) != 2 || m.Vulns[0].Fixed != "1.0.0" || m.Vulns[1].Fixed != tt.want {
				t.Errorf("listings %+v, want GO-2026-0001 fixed 1.0.0 and GO-2026-0002 fixed %q", m.Vulns, tt.want)
			}
		})
	}
}

// TestRunRefusesBadInput: a file not named after its entry, a directory without entries, missing flags.
func TestRunRefusesBadInput(t *testing.T) {
	misnamed := t.TempDir()
	writeFile(t, filepath.Join(misnamed, "GO-2026-9999.json"), modifiedEntry)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"misnamed", []string{"-osv", misnamed, "-out", t.TempDir(), "-modified", "2026-11-05T23:49:57Z"}, "must be named"},
		{"empty", []string{"-osv", t.TempDir(), "-out", t.TempDir(), "-modified", "2026-11-05T23:49:57Z"}, "no OSV entries"},
		{"no time", []string{"-osv", misnamed, "-out", t.TempDir()}, "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(tt.args, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%v) = %v, want an error with %q", tt.args, err, tt.want)
			}
		})
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
