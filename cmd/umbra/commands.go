package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// The command tree of umbra's client commands, built in this one place:
// nouns (plural, singular kept as alias) with their verbs
// (ls/get/create/rm, delete kept as alias of rm). Dispatch, help, "did you
// mean" suggestions and shell completion all read this table.

// verb is one client command, e.g. "shadow get".
type verb struct {
	name, args, summary string
	run                 func(c *cli, name string, args []string) error
	aliases             []string
}

func v(name, args, summary string, run func(c *cli, name string, args []string) error, aliases ...string) verb {
	return verb{name: name, args: args, summary: summary, run: run, aliases: aliases}
}

// group is a command group (a noun), e.g. "things".
type group struct {
	name    string
	aliases []string
	summary string
	verbs   []verb
}

var clientGroups = []*group{
	{name: "shadow", summary: "read, change and follow device shadows", verbs: []verb{
		v("get", "THING [--name N]", "print a shadow's desired, reported and delta state", shadowGet),
		v("ls", "THING [--limit N]", "list a thing's named shadows", shadowLs, "list"),
		v("update", "THING ['{\"state\":...}' | --desired k=v ... | --reported k=v ...] [--name N]", "change a shadow (k=v sets a string, k:=JSON any value)", shadowUpdate),
		v("rm", "THING [--name N]", "delete a shadow", shadowDelete, "delete"),
		v("history", "THING [--name N] [--limit N]", "list a shadow's accepted changes, newest first", shadowHistory),
		v("watch", "THING [--name N] [--count N]", "follow a shadow's changes live", shadowWatch),
	}},
	{name: "things", aliases: []string{"thing"}, summary: "the device registry", verbs: []verb{
		v("ls", "[--limit N]", "list things", thingsLs, "list"),
		v("get", "THING", "show a thing: type, attributes, groups, connectivity", thingsGet),
		v("connectivity", "THING", "a thing's last connects and disconnects, newest first", thingsConnectivity),
		v("create", "THING [--type T] [key=value ...]", "register a thing", thingsCreate),
		v("tag", "THING key=value ... key- ...", "set (k=v) or remove (k-) attributes", thingsTag),
		v("rm", "THING [--expected-version N]", "delete a thing", thingsRm, "delete"),
	}},
	{name: "types", aliases: []string{"type"}, summary: "thing types", verbs: []verb{
		v("ls", "", "list thing types", typesLs, "list"),
		v("create", "TYPE [--description D] [--attributes a,b,...]", "create a thing type", typesCreate),
		v("deprecate", "TYPE [--undo]", "stop (or allow again) new things of a type", typesDeprecate),
		v("rm", "TYPE", "delete a type no thing uses", typesRm, "delete"),
	}},
	{name: "credentials", summary: "device secrets (MQTT password per thing)", verbs: []verb{
		v("issue", "THING", "create or rotate a thing's secret (printed once)", credentialsIssue),
		v("revoke", "THING", "delete a thing's secret (its connection is ended)", credentialsRevoke),
	}},
	{name: "query", summary: "run a fleet query", verbs: []verb{
		v("query", `"QUERY" [--count | --buckets FIELD] [--limit N]`, "run a fleet query: matching things, their count, or counts by a field's values", queryCmd),
	}},
	{name: "groups", aliases: []string{"group"}, summary: "thing groups (static or dynamic)", verbs: []verb{
		v("ls", "", "list groups", groupsLs, "list"),
		v("get", "GROUP", "show a group and its members", groupsGet),
		v("create", "GROUP [--query Q] [--parent P] [--description D]", "create a static group, or a dynamic one with --query", groupsCreate),
		v("rm", "GROUP", "delete a group", groupsRm, "delete"),
		v("add", "GROUP THING ...", "add things to a static group", groupsMember("PUT")),
		v("remove", "GROUP THING ...", "remove things from a static group", groupsMember("DELETE")),
	}},
	{name: "jobs", aliases: []string{"job"}, summary: "bulk configuration jobs", verbs: []verb{
		v("create", "NAME (--target Q | --group G) (--set k=v ... | --patch JSON | --document FILE) [--condition Q] [--rate N]", "write desired state to many things, or queue an AWS IoT Jobs document for them", jobsCreate),
		v("ls", "", "list jobs", jobsLs, "list"),
		v("get", "ID [--watch [--until applied|converged]]", "show a job's progress", jobsGet),
		v("cancel", "ID [--force]", "cancel a running job (--force: also IN_PROGRESS job executions)", jobsCancel),
		v("executions", "ID", "list a job document's (or a rollout's) AWS IoT Jobs executions", jobsExecutions),
		v("watch", "ID [--until applied|converged]", "follow a job's progress until it is done (= get --watch)", withWatch(jobsGet)),
	}},
	{name: "rollouts", aliases: []string{"rollout"}, summary: "phased rollouts", verbs: []verb{
		v("create", "-f spec.json [--start] [--plan TOKEN]", "create a rollout from a JSON spec (--plan: exactly the previewed waves)", rolloutCreate),
		v("preview", "(-f spec.json | ID)", "show the devices of each wave", rolloutPreview),
		v("status", "ID [--watch] [--devices]", "show per-wave progress (--watch: live until the rollout ends; --devices: each device)", rolloutStatus, "get"),
		v("ls", "", "list rollouts", rolloutLs, "list"),
		v("watch", "ID [--devices]", "follow a rollout live until it ends (= status --watch)", withWatch(rolloutStatus)),
		v("start", "ID", "start a created rollout", rolloutAction("start")),
		v("pause", "ID", "pause a rollout", rolloutAction("pause")),
		v("resume", "ID", "resume a paused or halted rollout", rolloutAction("resume")),
		v("cancel", "ID", "cancel a rollout", rolloutAction("cancel")),
		v("rollback", "ID", "restore the previous desired values", rolloutAction("rollback")),
		v("approve", "ID [--wave N]", "approve a wave that waits for approval", rolloutAction("approve")),
	}},
	{name: "artifacts", aliases: []string{"artifact"}, summary: "firmware images served to devices", verbs: []verb{
		v("push", "FILE --version V --type T [--signature SIGFILE]", "upload a firmware image (SHA-256 checked, signature verified when a key is configured)", artifactsPush),
		v("ls", "", "list artifacts", artifactsLs, "list"),
		v("get", "ID|TYPE@VERSION", "show an artifact", artifactsGet),
		v("rm", "ID|TYPE@VERSION", "delete an artifact no rollout references", artifactsRm, "delete"),
		v("url", "ID|TYPE@VERSION --thing THING", "print a device's download URL", artifactsURL),
	}},
}

// withWatch is a "watch" verb: the given verb with --watch, so that every
// noun whose objects change follows them the same way (shadow watch, jobs
// watch, rollouts watch).
func withWatch(run func(c *cli, name string, args []string) error) func(c *cli, name string, args []string) error {
	return func(c *cli, name string, args []string) error {
		return run(c, name, append([]string{"--watch"}, args...))
	}
}

// topCommands are the commands outside the client groups.
var topCommands = []string{"serve", "keygen", "sim", "bench", "db", "version", "completion", "help"}

func findGroup(name string) *group {
	for _, g := range clientGroups {
		if g.name == name || contains(g.aliases, name) {
			return g
		}
	}
	return nil
}

func (g *group) findVerb(name string) *verb {
	for i := range g.verbs {
		if g.verbs[i].name == name || contains(g.verbs[i].aliases, name) {
			return &g.verbs[i]
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
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
	if len(g.aliases) > 0 {
		fmt.Fprintf(w, "\nAliases: %s\n", strings.Join(g.aliases, ", "))
	}
	fmt.Fprintf(w, "\nEvery command takes --server, --api-key, --ca-file, --config and -o json|yaml|wide (umbra %s <verb> -h).\n", g.name)
}

// runClient runs a client command group; ok is false if args[0] is not one.
func runClient(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) (err error, ok bool) {
	if args[0] == "__complete" {
		c := &cli{ctx: ctx, stdout: stdout, stderr: stderr, env: env}
		return complete(c, args[1:]), true
	}
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
	if v := g.findVerb(rest[0]); v != nil {
		return v.run(c, args[0]+" "+v.name, rest[1:]), true
	}
	var names []string
	for _, v := range g.verbs {
		names = append(names, v.name)
		names = append(names, v.aliases...)
	}
	return usageError{fmt.Errorf("%s: unknown command %q%s: want one of %s", g.name, rest[0], didYouMean(rest[0], names), g.verbNames())}, true
}

func (g *group) verbNames() string {
	var names []string
	for _, v := range g.verbs {
		names = append(names, v.name)
	}
	return strings.Join(names, ", ")
}

// allNouns lists every top-level word: commands, groups and their aliases.
func allNouns() []string {
	names := append([]string(nil), topCommands...)
	for _, g := range clientGroups {
		names = append(names, g.name)
		names = append(names, g.aliases...)
	}
	return names
}

// didYouMean returns ` (did you mean "x"?)` for the closest of names to
// word (Levenshtein distance at most 2, or a prefix), or "".
func didYouMean(word string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		d := levenshtein(strings.ToLower(word), n)
		if len(word) >= 2 && strings.HasPrefix(n, strings.ToLower(word)) && d > 1 {
			d = 1
		}
		if d < bestD || (d == bestD && best != "" && n < best) {
			best, bestD = n, d
		}
	}
	if best == "" || bestD >= len(word) && len(word) <= 2 && !strings.HasPrefix(best, word) {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// levenshtein is the edit distance of a and b, counting a swap of two
// neighbouring letters as one edit (optimal string alignment), so that
// "stauts" is nearest to "status".
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
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

// complete is the hidden "umbra __complete WORD... CURRENT" verb the
// completion scripts call: it prints the candidates for the last word, one
// a line. Thing names, group names, job and rollout ids come from the
// server; when it cannot be asked, only the static words are offered.
func complete(c *cli, words []string) error {
	if len(words) == 0 {
		words = []string{""}
	}
	cur := words[len(words)-1]
	// Drop the flags (honouring the connection ones) so that words holds
	// only the command, the verb and the positional arguments.
	var pos []string
	prevFlag := ""
	for _, w := range words[:len(words)-1] {
		if prevFlag != "" {
			c.setFlag(prevFlag, w)
			prevFlag = ""
			continue
		}
		if strings.HasPrefix(w, "-") && w != "-" {
			name, val, hasVal := strings.Cut(strings.TrimLeft(w, "-"), "=")
			switch {
			case hasVal:
				c.setFlag(name, val)
			case !boolFlags[name]:
				prevFlag = name
			}
			continue
		}
		pos = append(pos, w)
	}
	if prevFlag == "o" || prevFlag == "output" {
		for _, s := range []string{"json", "wide", "yaml"} {
			if strings.HasPrefix(s, cur) {
				fmt.Fprintln(c.stdout, s)
			}
		}
		return nil
	}
	if prevFlag != "" { // a flag's value: nothing to offer
		return nil
	}
	words = append(pos, cur)
	var cands []string
	switch {
	case strings.HasPrefix(cur, "-"):
		cands = []string{"--server", "--api-key", "--ca-file", "--config", "--json", "-o", "--name", "--help"}
	case len(words) == 1:
		cands = append(cands, topCommands...)
		for _, g := range clientGroups {
			cands = append(cands, g.name)
		}
	case len(words) == 2 && words[0] == "completion":
		cands = []string{"bash", "zsh"}
	case len(words) >= 2 && findGroup(words[0]) != nil:
		g := findGroup(words[0])
		if len(words) == 2 && !(len(g.verbs) == 1 && g.verbs[0].name == g.name) {
			for _, v := range g.verbs {
				cands = append(cands, v.name)
			}
			break
		}
		cands = dynamicCandidates(c, g, words)
	}
	sort.Strings(cands)
	for _, s := range cands {
		if strings.HasPrefix(s, cur) {
			fmt.Fprintln(c.stdout, s)
		}
	}
	return nil
}

// dynamicCandidates asks the server for the names a verb's arguments take.
func dynamicCandidates(c *cli, g *group, words []string) []string {
	vb := g.findVerb(words[1])
	if vb == nil {
		return nil
	}
	argIdx := len(words) - 3 // position among the verb's arguments
	if c.connect() != nil {
		return nil
	}
	// A shell waits for the answer: give up on a slow server.
	ctx, cancel := context.WithTimeout(c.ctx, 3*time.Second)
	defer cancel()
	c.ctx = ctx
	var kind string
	switch g.name {
	case "shadow", "things", "credentials":
		if argIdx == 0 && vb.name != "ls" && vb.name != "create" || g.name == "shadow" && argIdx == 0 {
			kind = "things"
		}
	case "groups":
		switch {
		case argIdx == 0 && vb.name != "ls" && vb.name != "create":
			kind = "groups"
		case argIdx > 0 && (vb.name == "add" || vb.name == "remove"):
			kind = "things"
		}
	case "jobs":
		if argIdx == 0 && (vb.name == "get" || vb.name == "cancel") {
			kind = "jobs"
		}
	case "rollouts":
		if argIdx == 0 && vb.name != "ls" && vb.name != "create" {
			kind = "rollouts"
		}
	}
	var out []string
	switch kind {
	case "things":
		things, err := c.api.ListThings(c.ctx)
		if err != nil {
			return nil
		}
		for _, t := range things {
			out = append(out, t.Name)
		}
	case "groups":
		groups, err := c.api.ListGroups(c.ctx)
		if err != nil {
			return nil
		}
		for _, g := range groups {
			out = append(out, g.Name)
		}
	case "rollouts":
		out, _ = c.api.RolloutIDs(c.ctx)
	case "jobs":
		var doc struct {
			Jobs []struct {
				ID string `json:"id"`
			} `json:"jobs"`
		}
		if _, err := c.getJSON("GET", "/api/jobs", nil, nil, &doc); err != nil {
			return nil
		}
		for _, j := range doc.Jobs {
			out = append(out, j.ID)
		}
	}
	return out
}

// boolFlags are the client flags that take no value (for __complete).
var boolFlags = map[string]bool{"json": true, "watch": true, "devices": true, "count": true, "start": true, "undo": true, "online": true, "h": true, "help": true}

// setFlag applies a connection flag seen on the command line being completed.
func (c *cli) setFlag(name, val string) {
	switch name {
	case "server":
		c.server = val
	case "api-key":
		c.apiKey = val
	case "ca-file":
		c.caFile = val
	case "config":
		c.config = val
	}
}
