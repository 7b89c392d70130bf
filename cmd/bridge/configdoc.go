package main

import (
	"fmt"
	"io"
	"reflect"
)

// writeConfigTable prints the configuration table of README.md from the Config struct, so docs and
// parser share one source (bridge help config).
func writeConfigTable(w io.Writer) {
	fmt.Fprintln(w, "| variable | meaning | default |")
	fmt.Fprintln(w, "| --- | --- | --- |")
	for f := range reflect.TypeFor[Config]().Fields() {
		def := f.Tag.Get("envDefault")
		if def != "" {
			def = "`" + def + "`"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s |\n", envKey(f), f.Tag.Get("help"), def)
	}
}
