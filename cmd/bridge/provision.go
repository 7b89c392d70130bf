package main

import (
	"context"
	"fmt"
	"maps"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/natsx"
)

var provisionCommand = &command{
	name: "provision", args: "[-check]",
	summary: "create or update the streams and buckets, then exit (-check: only check them)", run: runProvision,
}

const provisionUsage = `bridge provision [-check] [-json] [-namespace NS] [-s URL] [-creds FILE] [-context NAME]

Creates or updates the bridge's streams and KV buckets, as every bridge process does at start-up, and
exits: for operators who own stream configuration and run the bridge with BRIDGE_PROVISION=false. The
sizes come from the same variables as the bridge's (BRIDGE_REPLICAS, BRIDGE_RETENTION,
BRIDGE_DUPLICATE_WINDOW, BRIDGE_MAX_BODY, BRIDGE_STREAM_MAX_BYTES), the names from the namespace, the
JetStream domain from BRIDGE_JS_DOMAIN or the nats context. With -check it changes nothing, and says
what a bridge with BRIDGE_PROVISION=false would find missing or different (exit code 1).`

// provisionReport is what bridge provision prints with -json.
type provisionReport struct {
	Namespace string   `json:"namespace"`
	Checked   bool     `json:"checked"`
	Streams   []string `json:"streams"`
	Layout    int      `json:"jobs_layout"`
}

func runProvision(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet("bridge provision", provisionUsage, c)
	var nf natsFlags
	nf.register(fs)
	check := fs.Bool("check", false, "only check the streams and buckets; create and change nothing")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.noArgs(args); err != nil {
		return err
	}
	// The sizes are the bridge's; the roles do not matter here, and ingest needs no upstream settings.
	env := maps.Clone(c.env)
	env[envPrefix+"ROLES"] = "ingest"
	cfg, err := parseConfig(env)
	if err != nil {
		return usageError{err}
	}
	nc, js, conn, err := opsConnect(ctx, c, nf)
	if err != nil {
		return err
	}
	defer nc.Close()
	pcfg := cfg.ProvisionConfig()
	pcfg.Names = conn.names
	apply := natsx.Provision
	if *check {
		apply = natsx.Check
	}
	res, err := apply(ctx, js, pcfg)
	if err != nil {
		return fmt.Errorf("bridge provision: %w", err)
	}
	rep := provisionReport{Namespace: conn.names.Namespace, Checked: *check, Layout: res.Layout,
		Streams: conn.names.StoreNames(false)}
	if *asJSON {
		return writeJSON(c.stdout, rep)
	}
	verb := "provisioned"
	if *check {
		verb = "checked"
	}
	fmt.Fprintf(c.stdout, "%s %d streams and buckets%s: %v; JOBS at layout %d\n", verb, len(rep.Streams),
		namespaceNote(conn.names), rep.Streams, rep.Layout)
	return nil
}

// namespaceNote is " in namespace ns", or "" without one.
func namespaceNote(n contract.Names) string {
	if n.Namespace == "" {
		return ""
	}
	return " in namespace " + n.Namespace
}
