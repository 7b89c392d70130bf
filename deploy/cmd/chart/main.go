//go:build helm

// Command chart packages the bridge's Helm chart for a release with Helm's own packages (helm.sh/helm/v4),
// as `helm lint` and `helm package --version V --app-version V` would: it loads the chart directory, sets
// the chart's version and appVersion, lints it (any warning or error stops it) and writes
// <name>-<version>.tgz into the output directory, whose path it prints. scripts/release.sh runs it.
//
//	go run ./cmd/chart -version 0.9.0 -out ../dist helm/bridge
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/Masterminds/semver/v3"
	chartcommon "helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
}

// lintKubeVersion is the Kubernetes version the chart is linted for: Helm's default is that of the
// client-go it was built with, and v1.20 in a build without module information (go run has it).
const lintKubeVersion = "v1.34.0"

// run parses the flags, then lints and packages the chart.
func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("chart", flag.ContinueOnError)
	version := fs.String("version", "", "the release's version, X.Y.Z (a leading v is dropped): the chart's version and appVersion")
	out := fs.String("out", "", "the directory to write the packaged chart into")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *version == "" || *out == "" {
		return errors.New("usage: chart -version X.Y.Z -out DIR CHARTDIR")
	}
	path, err := pack(fs.Arg(0), strings.TrimPrefix(*version, "v"), *out)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, path)
	return err
}

// pack loads the chart in dir, sets its version and appVersion, lints it and saves it into out.
func pack(dir, version, out string) (string, error) {
	if _, err := semver.StrictNewVersion(version); err != nil {
		return "", fmt.Errorf("version %q: %w", version, err)
	}
	ch, err := loader.LoadDir(dir)
	if err != nil {
		return "", fmt.Errorf("load %s: %w", dir, err)
	}
	ch.Metadata.Version = version
	ch.Metadata.AppVersion = version
	if err := ch.Validate(); err != nil {
		return "", fmt.Errorf("%s: %w", dir, err)
	}
	if err := lintChart(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	return chartutil.Save(ch, out)
}

// lintChart runs Helm's linter on the chart in dir with its default values, and fails on any warning.
func lintChart(dir string) error {
	kv, err := chartcommon.ParseKubeVersion(lintKubeVersion)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range lint.RunAll(dir, nil, "default", lint.WithKubeVersion(kv)).Messages {
		if m.Severity >= support.WarningSev {
			errs = append(errs, errors.New(m.Error()))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("helm lint %s: %w", dir, errors.Join(errs...))
	}
	return nil
}
