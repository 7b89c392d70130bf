package main

import (
	"context"
	"fmt"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/natsx"
)

var upgradeCommand = &command{
	name: "upgrade", summary: "show and finalize the layout of the bridge's state after an upgrade",
	subs: []*command{
		{name: "status", args: "[-json]", summary: "the layout JOBS is at, and whether delivered jobs are compacted", run: runUpgradeStatus},
		{name: "finalize", args: "[-json]", summary: "move JOBS to this release's layout once no earlier release runs", run: runUpgradeFinalize},
	},
}

const (
	upgradeStatusUsage = `bridge upgrade status [-json]

Prints the layout the JOBS bucket is at and the layout of this release. At layout 1 (a store of an
earlier release) delivered jobs stay in JOBS, so that earlier processes running side by side still find
them; at layout 2 the reconciler's compactor moves them into the history.`
	upgradeFinalizeUsage = `bridge upgrade finalize [-json]

Moves JOBS to this release's layout, once every process runs this release or a newer one: from then on
delivered jobs are compacted into the history, and a process of an earlier release stops at start-up
(a rollback is refused with one line rather than unsafe). Running it again does nothing.`
)

// upgradeReport is what bridge upgrade prints with -json.
type upgradeReport struct {
	Layout  int  `json:"layout"`
	Release int  `json:"release_layout"`
	From    int  `json:"from_layout,omitempty"`
	Compact bool `json:"compaction"`
}

// upgradeMode is one of the bridge upgrade sub-commands.
type upgradeMode struct {
	name, usage string
	finalize    bool
}

func runUpgradeStatus(ctx context.Context, c *cli, args []string) error {
	return runUpgrade(ctx, c, args, upgradeMode{"bridge upgrade status", upgradeStatusUsage, false})
}

func runUpgradeFinalize(ctx context.Context, c *cli, args []string) error {
	return runUpgrade(ctx, c, args, upgradeMode{"bridge upgrade finalize", upgradeFinalizeUsage, true})
}

func runUpgrade(ctx context.Context, c *cli, args []string, mode upgradeMode) error {
	fs := newFlagSet(mode.name, mode.usage, c)
	var nf natsFlags
	nf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.noArgs(args); err != nil {
		return err
	}
	nc, js, conn, err := opsConnect(ctx, c, nf)
	if err != nil {
		return err
	}
	defer nc.Close()
	rep := upgradeReport{Release: contract.Layout}
	if mode.finalize {
		if rep.From, err = natsx.UpgradeLayout(ctx, js, conn.names); err != nil {
			return err
		}
	}
	stream, err := js.Stream(ctx, contract.KVStream(conn.names.BucketJobs))
	if err != nil {
		return fmt.Errorf("bucket %s: %w (start the bridge once to provision it)", conn.names.BucketJobs, err)
	}
	if rep.Layout, err = natsx.JobsLayout(ctx, stream); err != nil {
		return err
	}
	rep.Compact = rep.Layout >= contract.LayoutHistory
	if *asJSON {
		return writeJSON(c.stdout, rep)
	}
	switch {
	case mode.finalize && rep.From == rep.Layout:
		fmt.Fprintf(c.stdout, "JOBS is at layout %d already: nothing to do\n", rep.Layout)
	case mode.finalize:
		fmt.Fprintf(c.stdout, "JOBS moved from layout %d to %d: delivered jobs are compacted into the history from the compactor's next round; processes of an earlier release no longer start\n", rep.From, rep.Layout)
	case rep.Compact:
		fmt.Fprintf(c.stdout, "JOBS is at layout %d (this release: %d): delivered jobs are compacted into the history\n", rep.Layout, rep.Release)
	default:
		fmt.Fprintf(c.stdout, "JOBS is at layout %d (this release: %d): compaction is held so that earlier processes still find every delivered job; run bridge upgrade finalize once every process runs this release\n", rep.Layout, rep.Release)
	}
	return nil
}
