package main

import (
	"fmt"
	"io"

	"github.com/evershield/bridge/bridge"
)

// writeConfigTable prints the configuration table of README.md from bridge.Vars, so docs and parser
// share one source (bridge help config).
func writeConfigTable(w io.Writer) {
	fmt.Fprintln(w, "| variable | meaning | default |")
	fmt.Fprintln(w, "| --- | --- | --- |")
	for _, v := range bridge.Vars() {
		def := v.Default
		if def != "" {
			def = "`" + def + "`"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s |\n", v.Name, v.Help, def)
	}
}
