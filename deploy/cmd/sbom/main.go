// Command sbom writes the software bill of materials of a Go binary as CycloneDX 1.6 JSON
// (https://cyclonedx.org/docs/1.6/json/), from the build information the go command embeds in every
// binary (debug/buildinfo: the main module, each dependency with its version and go.sum hash, the Go
// toolchain and the build settings). It needs nothing but the binary, so what it lists is what was
// linked, not what go.mod names. scripts/release.sh writes one beside each release's binaries.
//
//	go run ./cmd/sbom -version v0.9.0 dist/bridge-v0.9.0-linux-amd64 > dist/bridge-v0.9.0.cdx.json
//
// Each module is a component with its package URL (pkg:golang/<path>@<version>) and, where the binary
// carries its go.sum hash (h1:, the SHA-256 of the module's file tree), that hash in hex; the standard
// library is the component pkg:golang/stdlib@<go version>, as vulnerability scanners name it. The BOM's
// serial number is derived from the binary's SHA-256 and no time is written, so the same binary gives the
// same file.
package main

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
)

func main() {
	version := flag.String("version", "", "the release's version of the main module (default: the binary's own)")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: sbom [-version vX.Y.Z] BINARY")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := write(os.Stdout, flag.Arg(0), *version); err != nil {
		fmt.Fprintln(os.Stderr, "sbom:", err)
		os.Exit(1)
	}
}

// write writes the BOM of the binary at path to w.
func write(w io.Writer, path, version string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: no Go build information: %w", path, err)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(bom(info, sha256.Sum256(b), version))
}

// BOM is the part of a CycloneDX 1.6 document this command writes.
type BOM struct {
	Format       string       `json:"bomFormat"`
	Spec         string       `json:"specVersion"`
	Serial       string       `json:"serialNumber"`
	Version      int          `json:"version"`
	Metadata     Metadata     `json:"metadata"`
	Components   []Component  `json:"components"`
	Dependencies []Dependency `json:"dependencies"`
}

// Metadata names the binary the BOM describes.
type Metadata struct {
	Component Component `json:"component"`
}

// Component is a module, the standard library or the binary itself.
type Component struct {
	Type       string     `json:"type"`
	Ref        string     `json:"bom-ref"`
	Name       string     `json:"name"`
	Version    string     `json:"version,omitempty"`
	PURL       string     `json:"purl,omitempty"`
	Hashes     []Hash     `json:"hashes,omitempty"`
	Properties []Property `json:"properties,omitempty"`
}

// Hash is a component's digest.
type Hash struct {
	Alg     string `json:"alg"`
	Content string `json:"content"`
}

// Property is a name and value CycloneDX does not define; here the binary's build settings.
type Property struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Dependency says what a component depends on: the binary on every module it links.
type Dependency struct {
	Ref       string   `json:"ref"`
	DependsOn []string `json:"dependsOn"`
}

// bom builds the document: the binary (its main module at version, or the binary's own version), and a
// component for the standard library and for each module linked (a replacement stands for what it replaces).
func bom(info *buildinfo.BuildInfo, sum [32]byte, version string) BOM {
	if version == "" {
		version = info.Main.Version
	}
	goVersion := strings.TrimPrefix(info.GoVersion, "go")
	main := Component{Type: "application", Name: info.Main.Path, Version: version, PURL: purl(info.Main.Path, version),
		Hashes: []Hash{{Alg: "SHA-256", Content: hex.EncodeToString(sum[:])}}}
	main.Ref = main.PURL
	for _, s := range info.Settings {
		main.Properties = append(main.Properties, Property{Name: "go:build:" + s.Key, Value: s.Value})
	}
	std := Component{Type: "library", Name: "stdlib", Version: goVersion, PURL: purl("stdlib", goVersion)}
	std.Ref = std.PURL
	comps := []Component{std}
	for _, d := range info.Deps {
		comps = append(comps, module(d))
	}
	dep := Dependency{Ref: main.Ref}
	for _, c := range comps {
		dep.DependsOn = append(dep.DependsOn, c.Ref)
	}
	return BOM{Format: "CycloneDX", Spec: "1.6", Serial: serial(sum), Version: 1,
		Metadata: Metadata{Component: main}, Components: comps, Dependencies: []Dependency{dep}}
}

// module is the component of a linked module, or of its replacement.
func module(d *debug.Module) Component {
	if d.Replace != nil {
		d = d.Replace
	}
	c := Component{Type: "library", Name: d.Path, Version: d.Version, PURL: purl(d.Path, d.Version)}
	c.Ref = c.PURL
	if h, ok := strings.CutPrefix(d.Sum, "h1:"); ok {
		if raw, err := base64.StdEncoding.DecodeString(h); err == nil {
			c.Hashes = []Hash{{Alg: "SHA-256", Content: hex.EncodeToString(raw)}}
		}
	}
	return c
}

// purl is a Go module's package URL (https://github.com/package-url/purl-spec, type golang).
func purl(path, version string) string {
	if version == "" || version == "(devel)" {
		return "pkg:golang/" + path
	}
	return "pkg:golang/" + path + "@" + version
}

// serial is the BOM's serial number: a version 4 style UUID made of the binary's digest, the same for the
// same binary.
func serial(sum [32]byte) string {
	u := sum[:16]
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
