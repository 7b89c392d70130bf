package bridge

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	// Named envtag: this package's tests declare a type env.
	envtag "github.com/caarlos0/env/v11"
)

// ConfigFromEnv parses the BRIDGE_* variables of environ (names as keys, e.g. from os.Environ split at
// the first "=") into a [Config], with the defaults of its envDefault tags, and validates it
// ([Config.Validate]). A nil environ is the empty one, never the process's environment. Errors name the
// variable, one line each, e.g. "BRIDGE_POLL_INTERVAL: invalid value: time: invalid duration "soon"".
//
// It reads the files the BRIDGE_*_FILE variables name. Nothing else of the process is read.
func ConfigFromEnv(environ map[string]string) (Config, error) {
	cfg, err := ParseEnv[Config](environ)
	if err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// DefaultConfig is the Config of an empty environment: every field at the default of its envDefault tag
// (BRIDGE_HTTP_ADDR ":8080", BRIDGE_API_RPM 60, every role, ...), the others at their zero value. It is
// not valid as it is: the roles that call the upstream need APIURL and APIKey. To build a Config by hand,
// start from it, set what differs and call [Config.Validate]:
//
//	cfg := bridge.DefaultConfig()
//	cfg.APIURL, cfg.APIKey = "https://api.example/api/v1", key
//	cfg.PublicURL = "https://hooks.example/moderation"
//	if err := cfg.Validate(); err != nil { ... }
func DefaultConfig() Config {
	cfg, err := ParseEnv[Config](nil)
	if err != nil {
		// The defaults are constants of this package, and a test parses them.
		panic(fmt.Sprintf("bridge: the defaults of Config do not parse: %v", err))
	}
	return cfg
}

// ParseEnv parses the BRIDGE_* variables of environ into a T, a struct whose fields carry env tags
// without the prefix, as [Config] does (the operator commands parse a part of Config's variables this
// way). A nil environ is the empty one. Errors name the variable, one line each. It does not validate.
func ParseEnv[T any](environ map[string]string) (T, error) {
	if environ == nil {
		environ = map[string]string{} // caarlos0/env reads the process's environment for a nil map
	}
	v, err := envtag.ParseAsWithOptions[T](envtag.Options{Prefix: EnvPrefix, Environment: environ})
	if err != nil {
		var zero T
		return zero, envErrors[T](err)
	}
	return v, nil
}

// envErrors rewrites caarlos0/env errors, which name Go fields, into one line per variable of T.
func envErrors[T any](err error) error {
	var agg envtag.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	keys := envKeys[T]()
	var out []error
	for _, e := range agg.Errors {
		var pe envtag.ParseError
		if errors.As(e, &pe) {
			out = append(out, fmt.Errorf("%s: invalid value: %v", keys[pe.Name], unwrapParse(pe.Err)))
			continue
		}
		var fe envtag.LoadFileContentError
		if errors.As(e, &fe) {
			out = append(out, fmt.Errorf("%s: cannot read the file: %v", fe.Key, fe.Err))
			continue
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

func unwrapParse(err error) error {
	var pv envtag.ParseValueError
	if errors.As(err, &pv) && pv.Err != nil {
		return pv.Err
	}
	return err
}

// envKeys maps each field name of T to its environment variable, prefix included.
func envKeys[T any]() map[string]string {
	keys := map[string]string{}
	for f := range reflect.TypeFor[T]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		keys[f.Name] = EnvPrefix + name
	}
	return keys
}
