package main

import (
	"fmt"
	"io"
	"reflect"
	"strings"
)

// writeConfigTable prints the configuration table of README.md from the Config struct, so docs and
// parser share one source (bridge help config).
func writeConfigTable(w io.Writer) {
	fmt.Fprintln(w, "| variable | meaning | default |")
	fmt.Fprintln(w, "| --- | --- | --- |")
	for f := range reflect.TypeFor[Config]().Fields() {
		key := envPrefix + strings.Split(f.Tag.Get("env"), ",")[0]
		def := f.Tag.Get("envDefault")
		if def != "" {
			def = "`" + def + "`"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s |\n", key, f.Tag.Get("help"), def)
	}
}
