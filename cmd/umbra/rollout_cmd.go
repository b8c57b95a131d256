package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

func init() {
	addVerbs("rollout",
		verb{"create", "-f spec.json [--start]", "create a rollout from a JSON spec", rolloutCreate},
		verb{"preview", "(-f spec.json | ID)", "show the devices of each wave", rolloutPreview},
		verb{"status", "ID [--watch]", "show per-wave progress (--watch: live until the rollout ends)", rolloutStatus},
		verb{"ls", "", "list rollouts", rolloutLs},
		verb{"start", "ID", "start a created rollout", rolloutAction("start")},
		verb{"pause", "ID", "pause a rollout", rolloutAction("pause")},
		verb{"resume", "ID", "resume a paused or halted rollout", rolloutAction("resume")},
		verb{"cancel", "ID", "cancel a rollout", rolloutAction("cancel")},
		verb{"rollback", "ID", "restore the previous desired values", rolloutAction("rollback")},
		verb{"approve", "ID [--wave N]", "approve a wave that waits for approval", rolloutAction("approve")},
	)
}

type rolloutJSON struct {
	ID   string `json:"id"`
	Spec struct {
		Name   string `json:"name"`
		Target string `json:"target"`
	} `json:"spec"`
	State       string `json:"state"`
	Reason      string `json:"reason"`
	CurrentWave int    `json:"currentWave"`
	Waves       []struct {
		Name       string `json:"name"`
		Size       int    `json:"size"`
		Pending    int    `json:"pending"`
		InProgress int    `json:"inProgress"`
		Succeeded  int    `json:"succeeded"`
		Failed     int    `json:"failed"`
		Skipped    int    `json:"skipped"`
	} `json:"waves"`
}

func (r rolloutJSON) terminal() bool {
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
	if *start {
		var m map[string]json.RawMessage
		_ = json.Unmarshal(b, &m)
		m["start"] = json.RawMessage("true")
		b, _ = json.Marshal(m)
	}
	return rolloutAnswer(c, "POST", "/api/rollouts", nil, b, "created rollout %s (%s)\n")
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
	var r rolloutJSON
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
	return tw.Flush()
}

func rolloutLs(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "", "List rollouts.")
	if _, err := c.parse(fs, args, 0, 0, ""); err != nil {
		return err
	}
	var out struct {
		Rollouts []rolloutJSON `json:"rollouts"`
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
func renderRollout(r rolloutJSON) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rollout %s %q  state %s  wave %d/%d\n", r.ID, r.Spec.Name, r.State, min(r.CurrentWave+1, len(r.Waves)), len(r.Waves))
	tw := newTabWriter(&b)
	fmt.Fprintln(tw, "WAVE\tSIZE\tSUCCEEDED\tFAILED\tIN PROGRESS\tPENDING\tPROGRESS")
	for _, w := range r.Waves {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", w.Name, w.Size, w.Succeeded, w.Failed, w.InProgress, w.Pending, bar(w.Size, w.Succeeded, w.Failed, w.InProgress))
	}
	tw.Flush()
	if r.Reason != "" {
		fmt.Fprintf(&b, "reason: %s\n", r.Reason)
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

func rolloutStatus(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "ID [--watch]", "Show a rollout's per-wave progress. --watch redraws on each rollout event\n(or every second) until the rollout completes, halts, is cancelled or rolled back;\nit exits 0 if the rollout completed, 1 otherwise.")
	watch := fs.Bool("watch", false, "follow the rollout live until it ends")
	pos, err := c.parse(fs, args, 1, 1, "ID")
	if err != nil {
		return err
	}
	id := pos[0]
	get := func() (rolloutJSON, []byte, error) {
		var r rolloutJSON
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
		if r.terminal() {
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
