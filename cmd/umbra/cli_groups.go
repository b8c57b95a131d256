package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// verb is one client command, e.g. "shadow get".
type verb struct {
	name, args, summary string
	run                 func(c *cli, name string, args []string) error
}

// group is a command group, e.g. "shadow".
type group struct {
	name, summary string
	verbs         []verb
}

// clientGroups is the table dispatch, help and shell completion read.
// Verbs are filled in by each *_cmd.go file's init.
var clientGroups = []*group{
	{name: "shadow", summary: "read, change and follow device shadows"},
	{name: "things", summary: "the device registry"},
	{name: "types", summary: "thing types"},
	{name: "credentials", summary: "device secrets (MQTT password per thing)"},
	{name: "query", summary: "run a fleet query"},
	{name: "groups", summary: "thing groups (static or dynamic)"},
	{name: "jobs", summary: "bulk configuration jobs"},
	{name: "rollout", summary: "phased rollouts"},
}

func findGroup(name string) *group {
	for _, g := range clientGroups {
		if g.name == name {
			return g
		}
	}
	return nil
}

func addVerbs(groupName string, vs ...verb) {
	g := findGroup(groupName)
	g.verbs = append(g.verbs, vs...)
}

func (g *group) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage:\n")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, v := range g.verbs {
		name := g.name + " " + v.name
		if g.name == v.name {
			name = g.name
		}
		fmt.Fprintf(tw, "  umbra %s %s\t%s\n", name, v.args, v.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nEvery command takes --server, --api-key, --ca-file, --config and --json (umbra %s <verb> -h).\n", g.name)
}

// runClient runs a client command group; ok is false if args[0] is not one.
func runClient(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) (err error, ok bool) {
	g := findGroup(args[0])
	if g == nil {
		return nil, false
	}
	c := &cli{ctx: ctx, stdout: stdout, stderr: stderr, env: env}
	rest := args[1:]
	// A group with a single verb of its own name (query) takes its
	// arguments directly.
	if len(g.verbs) == 1 && g.verbs[0].name == g.name {
		return g.verbs[0].run(c, g.name, rest), true
	}
	if len(rest) == 0 {
		g.usage(stderr)
		return usageError{fmt.Errorf("%s: missing command: want one of %s", g.name, g.verbNames())}, true
	}
	if rest[0] == "-h" || rest[0] == "--help" || rest[0] == "help" {
		g.usage(stdout)
		return flag.ErrHelp, true
	}
	for _, v := range g.verbs {
		if v.name == rest[0] {
			return v.run(c, g.name+" "+v.name, rest[1:]), true
		}
	}
	return usageError{fmt.Errorf("%s: unknown command %q: want one of %s", g.name, rest[0], g.verbNames())}, true
}

func (g *group) verbNames() string {
	var names []string
	for _, v := range g.verbs {
		names = append(names, v.name)
	}
	return strings.Join(names, ", ")
}

// clientUsage is the client part of umbra's usage text.
func clientUsage() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	for _, g := range clientGroups {
		var names []string
		for _, v := range g.verbs {
			if v.name != g.name {
				names = append(names, v.name)
			}
		}
		verbs := strings.Join(names, "|")
		if verbs == "" {
			verbs = "\"QUERY\""
		}
		fmt.Fprintf(tw, "  umbra %s %s\t%s\n", g.name, verbs, g.summary)
	}
	fmt.Fprintf(tw, "  umbra completion bash|zsh\tprint a shell completion script\n")
	tw.Flush()
	return b.String()
}

// errIs reports whether err (or what it wraps) is target; a small helper
// for the commands.
func errIs(err, target error) bool { return errors.Is(err, target) }
