package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// command is one entry of the command table: a command, or a group of sub-commands (bridge deadletter).
// Each command lives in its own file; bridge help's synopsis is made from the table.
type command struct {
	// name is the word that selects it; aliases select it too (bridge --version).
	name    string
	aliases []string
	// args is the synopsis after the name, e.g. "[-json]".
	args string
	// summary says in one line what it does.
	summary string
	// run runs the command with the arguments after its name. Every command parses its flags before it
	// does anything, so run with -h it only prints its usage: bridge help <command> relies on that.
	run func(ctx context.Context, c *cli, args []string) error
	// subs are the sub-commands of a group, which has no run of its own.
	subs []*command
}

// cli is what a command runs with: the environment and the output streams.
type cli struct {
	env            map[string]string
	stdout, stderr io.Writer
	// refuse ends the command's context with NATS's refusal of an operation (see opsConnect).
	refuse context.CancelCauseFunc
}

// commandTable is the command table, in the order bridge help lists it. It is filled in init, since
// bridge help reads it.
var commandTable []*command

func init() {
	commandTable = []*command{
		runCommand, demoCommand, simulateCommand, benchCommand,
		statusCommand, replayCommand, deadletterCommand, upgradeCommand, provisionCommand, submitCommand, jobCommand,
		webhookCommand, healthcheckCommand, versionCommand, helpCommand,
	}
}

// commands returns the command table.
func commands() []*command { return commandTable }

const usageHeader = `bridge: a durable, verifying bridge from the moderation API's webhooks to NATS JetStream.

Usage:
`

const usageFooter = `
Every command takes -h. Configuration is read from BRIDGE_* variables: bridge help config lists them.
`

// run is the whole program; tests call it too.
func run(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	ctx, refuse := context.WithCancelCause(ctx)
	defer refuse(nil)
	c := &cli{env: env, stdout: stdout, stderr: stderr, refuse: refuse}
	if len(args) == 0 {
		args = []string{runCommand.name}
	}
	cmd := lookup(commands(), args[0])
	if cmd == nil {
		return usageError{fmt.Errorf("unknown command %q; see bridge help", args[0])}
	}
	err := cmd.exec(ctx, c, "bridge "+cmd.name, args[1:])
	if errors.Is(err, errHelp) {
		return nil
	}
	// What the command saw of a refusal is only "context canceled", or a report with gaps.
	if refused := (refusedError{}); errors.As(context.Cause(ctx), &refused) {
		return refused
	}
	return err
}

// lookup finds a command by name or alias.
func lookup(cmds []*command, name string) *command {
	for _, c := range cmds {
		if c.name == name || slices.Contains(c.aliases, name) {
			return c
		}
	}
	return nil
}

// exec runs the command, or picks the sub-command of a group. path is the command line so far.
func (cmd *command) exec(ctx context.Context, c *cli, path string, args []string) error {
	if cmd.subs == nil {
		return cmd.run(ctx, c, args)
	}
	if len(args) > 0 && isHelpFlag(args[0]) {
		cmd.writeGroupUsage(c.stdout, path)
		return errHelp
	}
	var sub *command
	if len(args) > 0 {
		sub = lookup(cmd.subs, args[0])
	}
	if sub == nil {
		cmd.writeGroupUsage(c.stderr, path)
		if len(args) == 0 {
			return usageError{fmt.Errorf("%s: want a sub-command", path)}
		}
		return usageError{fmt.Errorf("%s: unknown sub-command %q", path, args[0])}
	}
	return sub.exec(ctx, c, path+" "+sub.name, args[1:])
}

func (cmd *command) writeGroupUsage(w io.Writer, path string) {
	fmt.Fprintf(w, "Usage: %s <sub-command> [flags]\n\n%s\n\nSub-commands:\n", path, cmd.summary)
	writeSynopsis(w, path, cmd.subs)
	fmt.Fprintf(w, "\n%s <sub-command> -h shows a sub-command's flags.\n", path)
}

// writeSynopsis lists cmds, one line each (two when the synopsis is long), as bridge help shows them.
func writeSynopsis(w io.Writer, path string, cmds []*command) {
	const width = 26
	for _, c := range cmds {
		line := strings.TrimSpace(c.name + " " + c.args)
		if c.subs != nil {
			var names []string
			for _, s := range c.subs {
				names = append(names, s.name)
			}
			line = c.name + " " + strings.Join(names, "|")
		}
		if len(line) > width {
			fmt.Fprintf(w, "  %s %s\n  %s %-*s%s\n", path, line, strings.Repeat(" ", len(path)), width, "", c.summary)
			continue
		}
		fmt.Fprintf(w, "  %s %-*s%s\n", path, width, line, c.summary)
	}
}

// errHelp is returned by a command whose usage was asked for and printed; the program exits 0.
var errHelp = errors.New("help requested")

func isHelpFlag(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// flagSet is a command's flags and usage: -h prints the usage on stdout and returns errHelp, a bad
// flag prints it on stderr and returns a usage error (exit code 2).
type flagSet struct {
	*flag.FlagSet
	usage          string
	stdout, stderr io.Writer
}

// newFlagSet returns the flag set of the command name (such as "bridge status"); usage is the text
// printed above the flags, starting with the synopsis.
func newFlagSet(name, usage string, c *cli) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package prints errors and usage to its output; we print them ourselves, to the right stream.
	fs.SetOutput(io.Discard)
	return &flagSet{FlagSet: fs, usage: usage, stdout: c.stdout, stderr: c.stderr}
}

// writeUsage prints the usage text and the flags.
func (f *flagSet) writeUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n", strings.TrimRight(f.usage, "\n"))
	var hasFlags bool
	f.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprint(w, "\nFlags:\n")
		f.SetOutput(w)
		f.PrintDefaults()
		f.SetOutput(io.Discard)
	}
}

// fail prints the usage on stderr and returns err as a usage error.
func (f *flagSet) fail(err error) error {
	f.writeUsage(f.stderr)
	return usageError{err}
}

// parse parses flags and positional arguments in any order, and returns the positional ones.
func (f *flagSet) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := f.Parse(args); errors.Is(err, flag.ErrHelp) {
			f.writeUsage(f.stdout)
			return nil, errHelp
		} else if err != nil {
			return nil, f.fail(fmt.Errorf("%s: %w", f.Name(), err))
		}
		args = f.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// noArgs parses flags and refuses positional arguments.
func (f *flagSet) noArgs(args []string) error {
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return f.fail(fmt.Errorf("%s: unexpected argument %q", f.Name(), pos[0]))
	}
	return nil
}
