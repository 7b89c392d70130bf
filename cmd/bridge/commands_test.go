package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestEveryCommandHelpExitsZero walks the command table: -h and --help on every command and
// sub-command print its usage on stdout and exit 0, bridge help <command> prints the same, and a bad
// flag is a usage error (exit code 2) with the usage on stderr. The environment is broken on purpose:
// asking for help must not read it or connect anywhere.
func TestEveryCommandHelpExitsZero(t *testing.T) {
	env := map[string]string{"BRIDGE_TIMEOUT_VIDEO": "soon", "BRIDGE_NATS_URL": "nats://127.0.0.1:1"}
	exec := func(args ...string) (string, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var out, errOut bytes.Buffer
		err := run(ctx, args, env, &out, &errOut)
		return out.String(), errOut.String(), err
	}
	var walk func(path []string, cmds []*command)
	seen := 0
	walk = func(path []string, cmds []*command) {
		for _, c := range cmds {
			p := append(append([]string{}, path...), c.name)
			name := strings.Join(p, " ")
			seen++
			var first string
			for _, h := range []string{"-h", "--help"} {
				out, errOut, err := exec(append(p, h)...)
				if err != nil || exitCode(err) != 0 {
					t.Errorf("bridge %s %s: %v (exit %d)", name, h, err, exitCode(err))
				}
				if !strings.HasPrefix(out, "Usage: bridge "+name) {
					t.Errorf("bridge %s %s: stdout %q, want the usage", name, h, out)
				}
				if errOut != "" {
					t.Errorf("bridge %s %s: stderr %q, want nothing", name, h, errOut)
				}
				first = out
			}
			if out, _, err := exec(append([]string{"help"}, p...)...); err != nil || out != first {
				t.Errorf("bridge help %s: %v\n%s\nwant the -h text\n%s", name, err, out, first)
			}
			if c.subs != nil {
				walk(p, c.subs)
				continue
			}
			_, errOut, err := exec(append(p, "-no-such-flag")...)
			if exitCode(err) != 2 || !strings.Contains(errOut, "Usage: bridge "+name) {
				t.Errorf("bridge %s -no-such-flag: %v (exit %d), stderr %q; want exit 2 and the usage on stderr", name, err, exitCode(err), errOut)
			}
		}
	}
	walk(nil, commands())
	if seen < 15 {
		t.Errorf("walked %d commands, want every one of the table", seen)
	}
	// The synopsis lists every command of the table.
	out, _, err := exec("help")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range commands() {
		if !strings.Contains(out, "\n  bridge "+c.name) {
			t.Errorf("bridge help does not list %s:\n%s", c.name, out)
		}
	}
	if _, _, err := exec("deadletter"); exitCode(err) != 2 {
		t.Errorf("bridge deadletter without a sub-command: %v, want exit 2", err)
	}
	if _, _, err := exec("help", "nosuch"); exitCode(err) != 2 {
		t.Errorf("bridge help nosuch: %v, want exit 2", err)
	}
}

// TestOperationsListsTheCommands keeps the "Commands" block of docs/OPERATIONS.md equal to the synopsis
// bridge help prints.
func TestOperationsListsTheCommands(t *testing.T) {
	b, err := os.ReadFile(repoFile("docs/OPERATIONS.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Commands\n")
	if !ok {
		t.Fatal("docs/OPERATIONS.md has no ## Commands section")
	}
	_, block, _ := strings.Cut(section, "```text\n")
	block, _, _ = strings.Cut(block, "```")
	var want bytes.Buffer
	writeSynopsis(&want, "bridge", commands())
	if block != want.String() {
		t.Errorf("docs/OPERATIONS.md's command list:\n%s\nwant (bridge help):\n%s", block, want.String())
	}
}
