package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/umbra-iot/umbra/client"
	"github.com/umbra-iot/umbra/internal/rollout"
)

// terminal reports whether a rollout has ended.
func terminal(r client.Rollout) bool {
	switch r.State {
	case "completed", "cancelled", "rolled_back", "halted":
		return true
	}
	return false
}

func rolloutPath(id string) string { return "/api/rollouts/" + url.PathEscape(id) }

// readSpec reads a JSON spec file ("-" is stdin) and checks it is an object.
func readSpec(cmd, path string) ([]byte, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = readAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %v", cmd, err)}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, usageError{fmt.Errorf("%s: %s is not a JSON object: %v", cmd, path, err)}
	}
	return b, nil
}

func readAll(f *os.File) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(f)
	return buf.Bytes(), err
}

func rolloutCreate(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "-f spec.json [--start]", "Create a rollout from a JSON spec (see README: Fleet actions).")
	file := fs.String("f", "", "spec file (JSON; - for stdin)")
	start := fs.Bool("start", false, "start it at once")
	plan := fs.String("plan", "", "plan token printed by rollout preview: freeze exactly the previewed waves, or fail if the fleet changed")
	if _, err := c.parse(fs, args, 0, 0, "-f spec.json"); err != nil {
		return err
	}
	if *file == "" {
		return usageError{fmt.Errorf("%s: missing -f spec.json", cmd)}
	}
	b, err := readSpec(cmd, *file)
	if err != nil {
		return err
	}
	if *start || *plan != "" {
		var m map[string]json.RawMessage
		_ = json.Unmarshal(b, &m)
		if *start {
			m["start"] = json.RawMessage("true")
		}
		if *plan != "" {
			tok, err := parsePlanToken(*plan)
			if err != nil {
				return usageError{fmt.Errorf("%s: --plan: %v", cmd, err)}
			}
			m["plan"], _ = json.Marshal(tok)
		}
		b, _ = json.Marshal(m)
	}
	return rolloutAnswer(c, "POST", "/api/rollouts", nil, b, "created rollout %s (%s)\n")
}

// planToken is the preview's plan (the API's rollout.PlanToken), written on
// the command line as SEED:FINGERPRINT:COUNT,COUNT,… (rollout preview
// prints it).
type planToken rollout.PlanToken

func (p planToken) String() string {
	var counts []string
	for _, n := range p.Counts {
		counts = append(counts, fmt.Sprint(n))
	}
	return p.Seed + ":" + p.Fingerprint + ":" + strings.Join(counts, ",")
}

func parsePlanToken(s string) (planToken, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return planToken{}, fmt.Errorf("%q: want SEED:FINGERPRINT:COUNTS as printed by umbra rollout preview", s)
	}
	p := planToken{Seed: parts[0], Fingerprint: parts[1]}
	for _, c := range strings.Split(parts[2], ",") {
		var n int
		if _, err := fmt.Sscanf(c, "%d", &n); err != nil || n < 0 {
			return planToken{}, fmt.Errorf("%q: wave count %q is not a number", s, c)
		}
		p.Counts = append(p.Counts, n)
	}
	return p, nil
}

// rolloutAnswer sends a request answered with a rollout and prints the
// answer as JSON or as one line (format takes the id and the state).
func rolloutAnswer(c *cli, method, path string, q url.Values, body any, format string) error {
	raw, err := c.request(method, path, q, body)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	var r client.Rollout
	_ = json.Unmarshal(raw, &r)
	fmt.Fprintf(c.stdout, format, r.ID, r.State)
	return nil
}

func rolloutPreview(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "(-f spec.json | ID)", "Show which devices each wave of a spec (or of an existing rollout) takes.")
	file := fs.String("f", "", "spec file (JSON; - for stdin)")
	pos, err := c.parse(fs, args, 0, 1, "(-f spec.json | ID)")
	if err != nil {
		return err
	}
	var raw []byte
	switch {
	case *file != "" && len(pos) == 1, *file == "" && len(pos) == 0:
		return usageError{fmt.Errorf("%s: give -f spec.json or a rollout ID (one of them)", cmd)}
	case *file != "":
		b, err := readSpec(cmd, *file)
		if err != nil {
			return err
		}
		raw, err = c.request("POST", "/api/rollouts/preview", nil, b)
		if err != nil {
			return err
		}
	default:
		if raw, err = c.request("GET", rolloutPath(pos[0])+"/preview", nil, nil); err != nil {
			return err
		}
	}
	if c.json {
		return c.printJSON(raw)
	}
	var out struct {
		Waves []struct {
			Name   string   `json:"name"`
			Count  int      `json:"count"`
			Things []string `json:"things"`
		} `json:"waves"`
		Plan  *planToken `json:"plan"`
		Empty []string   `json:"empty"`
	}
	_ = json.Unmarshal(raw, &out)
	tw := c.table()
	fmt.Fprintln(tw, "WAVE\tDEVICES\tTHINGS")
	for _, w := range out.Waves {
		things := strings.Join(w.Things, ",")
		if len(w.Things) > 8 {
			things = strings.Join(w.Things[:8], ",") + fmt.Sprintf(",… (+%d)", len(w.Things)-8)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", w.Name, w.Count, orDash(things))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(out.Empty) > 0 {
		fmt.Fprintf(c.stdout, "empty: %s select no device (create refuses this unless the spec sets allowEmpty)\n", strings.Join(out.Empty, ", "))
	}
	if out.Plan != nil {
		fmt.Fprintf(c.stdout, "plan: %s\ncreate exactly these waves with: umbra rollout create -f %s --plan %s\n", out.Plan, *file, out.Plan)
	}
	return nil
}

func rolloutLs(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "", "List rollouts.")
	if _, err := c.parse(fs, args, 0, 0, ""); err != nil {
		return err
	}
	var out struct {
		Rollouts []client.Rollout `json:"rollouts"`
	}
	raw, err := c.getJSON("GET", "/api/rollouts", nil, nil, &out)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	tw := c.table()
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tWAVE\tDEVICES\tSUCCEEDED\tFAILED")
	for _, r := range out.Rollouts {
		var size, ok, failed int
		for _, w := range r.Waves {
			size, ok, failed = size+w.Size, ok+w.Succeeded, failed+w.Failed
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%d\t%d\n", r.ID, r.Spec.Name, r.State, min(r.CurrentWave+1, len(r.Waves)), len(r.Waves), size, ok, failed)
	}
	return tw.Flush()
}

func rolloutAction(action string) func(c *cli, cmd string, args []string) error {
	return func(c *cli, cmd string, args []string) error {
		fs := c.flagSet(cmd, "ID", "Rollout action: "+action+".")
		wave := -1
		if action == "approve" {
			fs.IntVar(&wave, "wave", -1, "wave index to approve (default: the current wave)")
		}
		pos, err := c.parse(fs, args, 1, 1, "ID")
		if err != nil {
			return err
		}
		var q url.Values
		if wave >= 0 {
			q = url.Values{"wave": {fmt.Sprint(wave)}}
		}
		return rolloutAnswer(c, "POST", rolloutPath(pos[0])+"/"+action, q, nil, "rollout %s: %s\n")
	}
}

// renderRollout draws the status frame: a header line and one progress
// bar per wave.
func renderRollout(r client.Rollout) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rollout %s %q  state %s  wave %d/%d\n", r.ID, r.Spec.Name, r.State, min(r.CurrentWave+1, len(r.Waves)), len(r.Waves))
	tw := newTabWriter(&b)
	fmt.Fprintln(tw, "WAVE\tSTATE\tSIZE\tSUCCEEDED\tFAILED\tREGRESSED\tIN PROGRESS\tPENDING\tSKIPPED\tROLLED BACK\tNEW VERSION\tPROGRESS")
	for _, w := range r.Waves {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", w.Name, strings.ToUpper(orDash(w.State)), w.Size, w.Succeeded, w.Failed, w.Regressed,
			w.InProgress, w.Pending, w.Skipped, w.RolledBack, w.Installed, bar(w.Size, w.Succeeded, w.Failed, w.InProgress))
	}
	tw.Flush()
	t := r.Totals
	fmt.Fprintf(&b, "devices %d: %d succeeded, %d failed (%d regressed), %d in progress, %d pending, %d skipped, %d rolled back; %d run the new version\n",
		t.Size, t.Succeeded, t.Failed, t.Regressed, t.InProgress, t.Pending, t.Skipped, t.RolledBack, t.Installed)
	if r.Reason != "" {
		fmt.Fprintf(&b, "reason: %s\n", r.Reason)
	}
	if r.Notice != "" {
		fmt.Fprintf(&b, "note: %s\n", r.Notice)
	}
	return b.String()
}

// bar is a 20-cell progress bar: # succeeded, x failed, > in progress,
// . pending; then the finished share.
func bar(size, ok, failed, running int) string {
	const width = 20
	if size == 0 {
		return "[" + strings.Repeat(" ", width) + "]    -"
	}
	cells := func(n int) int { return n * width / size }
	o, f, r := cells(ok), cells(failed), cells(running)
	rest := max(width-o-f-r, 0)
	return fmt.Sprintf("[%s%s%s%s] %3d%%", strings.Repeat("#", o), strings.Repeat("x", f), strings.Repeat(">", r), strings.Repeat(".", rest), (ok+failed)*100/size)
}

// rolloutDevices prints each device of a rollout: state, OTA progress and
// why it failed (gate, value, time).
func rolloutDevices(c *cli, id string) error {
	var out struct {
		Devices []struct {
			Thing   string `json:"thing"`
			Wave    int    `json:"wave"`
			State   string `json:"state"`
			Before  string `json:"before"`
			Reason  string `json:"reason"`
			Failure *struct {
				Gate  string `json:"gate"`
				Value string `json:"value"`
				Time  int64  `json:"time"`
			} `json:"failure"`
			Installed bool `json:"installed"`
			OTA       *struct {
				Status   string   `json:"status"`
				Progress *float64 `json:"progress"`
				Error    string   `json:"error"`
			} `json:"ota"`
		} `json:"devices"`
	}
	if _, err := c.getJSON("GET", rolloutPath(id)+"/devices", nil, nil, &out); err != nil {
		return err
	}
	tw := c.table()
	fmt.Fprintln(tw, "THING\tWAVE\tSTATE\tOTA\tNEW VERSION\tFAILURE")
	for _, d := range out.Devices {
		st := d.State
		if d.Before != "" {
			st += " (was " + d.Before + ")"
		}
		ota := "-"
		if d.OTA != nil {
			ota = orDash(d.OTA.Status)
			if d.OTA.Progress != nil && d.OTA.Status != "succeeded" {
				ota += fmt.Sprintf(" %.0f%%", *d.OTA.Progress)
			}
			if d.OTA.Error != "" {
				ota += ": " + d.OTA.Error
			}
		}
		fail := "-"
		if d.Failure != nil {
			fail = fmt.Sprintf("%s %s at %s", d.Failure.Gate, d.Failure.Value, time.UnixMilli(d.Failure.Time).UTC().Format(time.RFC3339))
		}
		yes := "no"
		if d.Installed {
			yes = "yes"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", d.Thing, d.Wave, st, ota, yes, fail)
	}
	return tw.Flush()
}

func rolloutStatus(c *cli, cmd string, args []string) (err error) {
	fs := c.flagSet(cmd, "ID [--watch]", "Show a rollout's per-wave progress. --watch redraws on each rollout event\n(or every second) until the rollout completes, halts, is cancelled or rolled back;\nit exits 0 if the rollout completed, 1 otherwise.")
	watch := fs.Bool("watch", false, "follow the rollout live until it ends")
	devices := fs.Bool("devices", false, "list every device with its state, OTA progress and failure")
	pos, err := c.parse(fs, args, 1, 1, "ID")
	if err != nil {
		return err
	}
	id := pos[0]
	if *devices && !*watch {
		defer func() {
			if err == nil && !c.json {
				err = rolloutDevices(c, id)
			}
		}()
	}
	get := func() (client.Rollout, []byte, error) {
		var r client.Rollout
		raw, err := c.getJSON("GET", rolloutPath(id), nil, nil, &r)
		return r, raw, err
	}
	r, raw, err := get()
	if err != nil {
		return err
	}
	if !*watch {
		if c.json {
			return c.printJSON(raw)
		}
		_, err := fmt.Fprint(c.stdout, renderRollout(r))
		return err
	}
	// Redraw on every rollout event; poll every second besides, in case
	// the stream is unavailable or an event was dropped.
	kick := make(chan struct{}, 1)
	ctx, cancel := contextWithCancel(c.ctx)
	defer cancel()
	go func() {
		_ = c.stream(ctx, "/api/events", url.Values{"types": {"rollout"}}, nil, func(_ string, data []byte) (bool, error) {
			if bytes.Contains(data, []byte(`"`+id+`"`)) {
				select {
				case kick <- struct{}{}:
				default:
				}
			}
			return false, nil
		})
	}()
	tty := isTerminal(c.stdout)
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	last, lines := "", 0
	for {
		if c.json {
			if s := string(bytes.TrimSpace(raw)); s != last {
				fmt.Fprintln(c.stdout, s)
				last = s
			}
		} else if frame := renderRollout(r); frame != last {
			if tty && lines > 0 {
				fmt.Fprintf(c.stdout, "\033[%dA\033[J", lines)
			} else if lines > 0 {
				fmt.Fprintln(c.stdout)
			}
			fmt.Fprint(c.stdout, frame)
			last, lines = frame, strings.Count(frame, "\n")
		}
		if terminal(r) {
			if r.State != "completed" {
				reason := ""
				if r.Reason != "" {
					reason = ": " + r.Reason
				}
				return fmt.Errorf("rollout %s ended %s%s", id, r.State, reason)
			}
			return nil
		}
		select {
		case <-c.ctx.Done():
			return nil
		case <-kick:
		case <-ticker.C:
		}
		if r, raw, err = get(); err != nil {
			return err
		}
	}
}
