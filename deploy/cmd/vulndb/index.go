package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/semver"
)

// dbMeta is index/db.json.
type dbMeta struct {
	// Modified is the latest modified time of any entry.
	Modified time.Time `json:"modified"`
}

// module is an element of index/modules.json: a module with one or more vulnerabilities.
type module struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

// moduleVuln is one vulnerability of a module in index/modules.json.
type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	// Fixed is the version (without v) from which no later version is affected, empty if there is none:
	// govulncheck fetches the entry only for a module older than it.
	Fixed string `json:"fixed,omitempty"`
}

// vuln is an element of index/vulns.json.
type vuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
}

// indexes are the three index files of a database.
type indexes struct {
	db      dbMeta
	modules []module
	vulns   []vuln
}

// index builds the indexes of entries, which are sorted by id: modules sorted by path, each one's
// vulnerabilities in the entries' order, as golang.org/x/vulndb's own generator writes them, but once
// for an entry that names the module in several affected blocks (the standard library's entries do,
// one per release branch): govulncheck would fetch and report such an entry once per listing.
func index(entries []entry) indexes {
	var idx indexes
	byPath := map[string]*module{}
	for _, e := range entries {
		if e.Modified.After(idx.db.Modified) {
			idx.db.Modified = e.Modified
		}
		idx.vulns = append(idx.vulns, vuln{ID: e.ID, Modified: e.Modified, Aliases: e.Aliases})
		for _, a := range e.Affected {
			m := byPath[a.Module.Path]
			if m == nil {
				m = &module{Path: a.Module.Path, Vulns: []moduleVuln{}}
				byPath[a.Module.Path] = m
			}
			m.add(moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: latestFixed(a.Ranges)})
		}
	}
	for _, m := range byPath {
		idx.modules = append(idx.modules, *m)
	}
	slices.SortFunc(idx.modules, func(a, b module) int { return strings.Compare(a.Path, b.Path) })
	return idx
}

// add lists v for the module, or merges it into the module's listing of the same entry, which the entries'
// order makes the last. govulncheck fetches an entry when the module's version is older than one of its
// listings' fixed versions, or a listing has none: the merged listing keeps that, with the later fixed
// version, or none.
func (m *module) add(v moduleVuln) {
	if n := len(m.Vulns); n > 0 && m.Vulns[n-1].ID == v.ID {
		last := &m.Vulns[n-1]
		if last.Fixed != "" && (v.Fixed == "" || before(last.Fixed, v.Fixed)) {
			last.Fixed = v.Fixed
		}
		return
	}
	m.Vulns = append(m.Vulns, v)
}

// latestFixed is the latest fixed version of the SEMVER ranges, or "" when the vulnerability is
// introduced again after it (so that no version is known to be clear of it). It is the rule of
// golang.org/x/vulndb's osvutils.LatestFixed and golang.org/x/vuln's semver.NonSupersededFix.
func latestFixed(ranges []osvRange) string {
	var latest string
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			continue
		}
		for _, e := range r.Events {
			if e.Fixed != "" && before(latest, e.Fixed) {
				latest = e.Fixed
			}
		}
		for _, e := range r.Events {
			if e.Introduced != "" && e.Introduced != "0" && before(latest, e.Introduced) {
				latest = ""
				break
			}
		}
	}
	return latest
}

// before reports whether the version v (without v) is older than w. An empty version is older than any.
func before(v, w string) bool {
	return semver.Compare("v"+v, "v"+w) < 0
}

// write writes the database into dir: the indexes of the entries and an ID/<id>.json per entry.
func write(dir string, idx indexes, entries []entry) error {
	for _, d := range []string{"index", "ID"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	files := map[string]any{
		"index/db.json":      idx.db,
		"index/modules.json": idx.modules,
		"index/vulns.json":   idx.vulns,
	}
	for _, e := range entries {
		files["ID/"+e.ID+".json"] = e.raw
	}
	for name, v := range files {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(name)), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
