package main

import (
	"errors"
	"fmt"

	"github.com/caarlos0/env/v11"

	"github.com/evershield/bridge/bridge"
)

// envPrefix prefixes every configuration variable.
const envPrefix = bridge.EnvPrefix

// parseConfig reads the configuration from envMap. Errors name the variable, one line each.
func parseConfig(envMap map[string]string) (bridge.Config, error) {
	cfg, err := env.ParseAsWithOptions[bridge.Config](env.Options{Prefix: bridge.EnvPrefix, Environment: envMap})
	if err != nil {
		return bridge.Config{}, envErrors(err)
	}
	if err := cfg.Validate(); err != nil {
		return bridge.Config{}, err
	}
	return cfg, nil
}

// envErrors rewrites caarlos0/env errors, which name Go fields, into one line per variable.
func envErrors(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	keys := envKeys()
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			key := keys[pe.Name]
			out = append(out, fmt.Errorf("%s: invalid value: %v", key, unwrapParse(pe.Err)))
			continue
		}
		var fe env.LoadFileContentError
		if errors.As(e, &fe) {
			out = append(out, fmt.Errorf("%s: cannot read the file: %v", fe.Key, fe.Err))
			continue
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

func unwrapParse(err error) error {
	var pv env.ParseValueError
	if errors.As(err, &pv) && pv.Err != nil {
		return pv.Err
	}
	return err
}

// envKeys maps each bridge.Config field name to its environment variable.
func envKeys() map[string]string {
	keys := map[string]string{}
	for _, v := range bridge.Vars() {
		keys[v.Field] = v.Name
	}
	return keys
}
