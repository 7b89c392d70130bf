package main

import (
	"context"
	"fmt"

	"github.com/evershield/bridge/bridge"
)

var helpCommand = &command{
	name: "help", aliases: []string{"-h", "-help", "--help"}, args: "[command | config]",
	summary: "this text, a command's usage, or the table of BRIDGE_* variables",
	run: func(ctx context.Context, c *cli, args []string) error {
		fs := newFlagSet("bridge help", `bridge help [command [sub-command] | config]

Without arguments, lists the commands. With a command, prints its usage, as bridge <command> -h does.
bridge help config prints the table of BRIDGE_* variables (as in docs/CONFIG.md).`, c)
		pos, err := fs.parse(args)
		if err != nil {
			return err
		}
		switch {
		case len(pos) == 0:
			fmt.Fprint(c.stdout, usageHeader)
			writeSynopsis(c.stdout, "bridge", commands())
			fmt.Fprint(c.stdout, usageFooter)
			return nil
		case len(pos) == 1 && pos[0] == "config":
			bridge.WriteConfigTable(c.stdout)
			return nil
		}
		cmd := lookup(commands(), pos[0])
		if cmd == nil {
			return fs.fail(fmt.Errorf("bridge help: no command %q", pos[0]))
		}
		// Every command prints its usage and does nothing else when given -h.
		return cmd.exec(ctx, c, "bridge "+cmd.name, append(pos[1:], "-h"))
	},
}

var versionCommand = &command{
	name: "version", aliases: []string{"-v", "--version"}, summary: "print the version",
	run: func(_ context.Context, c *cli, args []string) error {
		if err := newFlagSet("bridge version", "bridge version\n\nPrints the version, the commit and the Go toolchain of this build, one a line.", c).noArgs(args); err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, versionString())
		return nil
	},
}
