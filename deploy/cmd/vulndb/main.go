// Command vulndb turns the OSV entries of the golang.org/x/vulndb module (its data/osv directory) into a
// Go vulnerability database in the v1 layout that govulncheck reads with -db file://DIR
// (https://go.dev/security/vuln/database, and golang.org/x/vuln's internal/client):
//
//	index/db.json       {"modified": the latest modified time of any entry}
//	index/modules.json  [{"path", "vulns": [{"id", "modified", "fixed"}]}], one per affected module
//	index/vulns.json    [{"id", "modified", "aliases"}]
//	ID/<id>.json        each OSV entry
//
// The module's entries carry no modified time (the published database takes it from git history, which a
// module zip has not): -modified gives it, the time of the vulndb version the entries come from, and it
// is written into every entry that has none. scripts/vulncheck.sh runs this command, then govulncheck.
//
//	go run ./cmd/vulndb -osv $VULNDB_DIR/data/osv -modified 2026-11-05T23:49:57Z -out /tmp/vulndb
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "vulndb:", err)
		os.Exit(1)
	}
}

// run parses the flags, reads the OSV entries and writes the database.
func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("vulndb", flag.ContinueOnError)
	osvDir := fs.String("osv", "", "the directory of OSV entries, <id>.json each (golang.org/x/vulndb's data/osv)")
	out := fs.String("out", "", "the directory to write the database into")
	modified := fs.String("modified", "", "RFC 3339 time written into entries that have no modified time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *osvDir == "" || *out == "" || *modified == "" {
		return errors.New("-osv, -out and -modified are required")
	}
	when, err := time.Parse(time.RFC3339, *modified)
	if err != nil {
		return fmt.Errorf("-modified: %w", err)
	}
	entries, err := load(*osvDir, when.UTC())
	if err != nil {
		return err
	}
	idx := index(entries)
	if err := write(*out, idx, entries); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "vulndb: %d entries, %d modules, modified %s, in %s\n",
		len(entries), len(idx.modules), idx.db.Modified.Format(time.RFC3339), *out)
	return nil
}

// entry is one OSV entry: the fields the indexes need, and the entry as read, to write back.
type entry struct {
	ID       string     `json:"id"`
	Modified time.Time  `json:"modified"`
	Aliases  []string   `json:"aliases,omitempty"`
	Affected []affected `json:"affected"`
	raw      map[string]json.RawMessage
}

// affected is an OSV entry's affected module: its path and the version ranges that are vulnerable.
type affected struct {
	Module struct {
		Path string `json:"name"`
	} `json:"package"`
	Ranges []osvRange `json:"ranges"`
}

// osvRange is an OSV range: SEMVER events, each introducing or fixing the vulnerability at a version
// (without the leading v).
type osvRange struct {
	Type   string `json:"type"`
	Events []struct {
		Introduced string `json:"introduced,omitempty"`
		Fixed      string `json:"fixed,omitempty"`
	} `json:"events"`
}

// load reads every <id>.json of dir, sorted by id. An entry whose modified time is zero gets modified.
func load(dir string, modified time.Time) ([]entry, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no OSV entries in %s", dir)
	}
	entries := make([]entry, 0, len(files))
	for _, file := range files {
		e, err := readEntry(file, modified)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.ID, b.ID) })
	return entries, nil
}

// readEntry reads and checks one OSV entry file.
func readEntry(file string, modified time.Time) (entry, error) {
	var e entry
	b, err := os.ReadFile(file)
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("%s: %w", file, err)
	}
	if err := json.Unmarshal(b, &e.raw); err != nil {
		return e, fmt.Errorf("%s: %w", file, err)
	}
	if e.ID == "" || filepath.Base(file) != e.ID+".json" {
		return e, fmt.Errorf("%s: entry id %q: an entry's file must be named <id>.json", file, e.ID)
	}
	for _, a := range e.Affected {
		if a.Module.Path == "" {
			return e, fmt.Errorf("%s: an affected package has no name", file)
		}
	}
	if e.Modified.IsZero() {
		e.Modified = modified
		if e.raw["modified"], err = json.Marshal(modified); err != nil {
			return e, err
		}
	}
	return e, nil
}
