package main

import (
	"github.com/evershield/bridge/bridge"
)

// envPrefix prefixes every configuration variable.
const envPrefix = bridge.EnvPrefix

// parseConfig reads the configuration from envMap ([bridge.ConfigFromEnv]). Errors name the variable,
// one line each.
func parseConfig(envMap map[string]string) (bridge.Config, error) {
	return bridge.ConfigFromEnv(envMap)
}

// envKeys maps each bridge.Config field name to its environment variable.
func envKeys() map[string]string {
	keys := map[string]string{}
	for _, v := range bridge.Vars() {
		keys[v.Field] = v.Name
	}
	return keys
}
