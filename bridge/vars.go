package bridge

import (
	"fmt"
	"io"
	"reflect"
	"strings"
)

// EnvPrefix prefixes every configuration variable.
const EnvPrefix = "BRIDGE_"

// Var is one configuration variable, as the tags of a [Config] field describe it.
type Var struct {
	// Field is the name of the Config field.
	Field string
	// Name is the environment variable, EnvPrefix included.
	Name string
	// Help says what the variable means.
	Help string
	// Default is the variable's default, "" when it has none or it is computed from others.
	Default string
}

// Vars returns the configuration variables in Config's field order. The configuration table
// ([WriteConfigTable]) and the errors that name a variable are made from it, so docs and parser share
// one source.
func Vars() []Var {
	var vars []Var
	for f := range reflect.TypeFor[Config]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		vars = append(vars, Var{Field: f.Name, Name: EnvPrefix + name, Help: f.Tag.Get("help"), Default: f.Tag.Get("envDefault")})
	}
	return vars
}

// WriteConfigTable writes the Markdown table of every variable of [Vars], with its meaning and default:
// what bridge help config prints and docs/CONFIG.md holds.
func WriteConfigTable(w io.Writer) {
	fmt.Fprintln(w, "| variable | meaning | default |")
	fmt.Fprintln(w, "| --- | --- | --- |")
	for _, v := range Vars() {
		def := v.Default
		if def != "" {
			def = "`" + def + "`"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s |\n", v.Name, v.Help, def)
	}
}
