package bridge

import (
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

// Vars returns the configuration variables in Config's field order. The README's configuration table
// (bridge help config) and the errors that name a variable are made from it, so docs and parser share
// one source.
func Vars() []Var {
	var vars []Var
	for f := range reflect.TypeFor[Config]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		vars = append(vars, Var{Field: f.Name, Name: EnvPrefix + name, Help: f.Tag.Get("help"), Default: f.Tag.Get("envDefault")})
	}
	return vars
}
