package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/umbra-iot/umbra/client"
)

func jobTable(c *cli, jobs []client.Job) error {
	tw := c.table()
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tTARGETED\tAPPLIED\tCONVERGED\tPENDING\tINELIGIBLE\tFAILED")
	for _, j := range jobs {
		p := j.Progress
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", j.ID, j.Spec.Name, j.State, p.Targeted, p.Applied, p.Converged, p.Pending, p.Ineligible, p.Failed)
	}
	return tw.Flush()
}

func printJob(c *cli, raw []byte) error {
	if c.json {
		return c.printJSON(raw)
	}
	var j client.Job
	if err := json.Unmarshal(raw, &j); err != nil {
		return err
	}
	if err := jobTable(c, []client.Job{j}); err != nil {
		return err
	}
	for _, e := range j.Errors {
		fmt.Fprintf(c.stdout, "error: %s\n", e)
	}
	return nil
}

func jobsCreate(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "NAME (--target Q | --group G) (--set k=v ... | --patch JSON | --document FILE) [--artifact REF]", "Create a bulk configuration job: write a desired patch to every targeted thing, or (--document) queue an AWS IoT Jobs execution of a job document for each, which devices run through the Jobs MQTT API.")
	document := fs.String("document", "", "AWS IoT Jobs job document: a file holding a JSON object (- for stdin)")
	target := fs.String("target", "", "fleet query selecting the things")
	grp := fs.String("group", "", "or a group")
	patch := fs.String("patch", "", "desired patch as a JSON object")
	var set multiFlag
	fs.Var(&set, "set", "desired key=value (string) or key:=JSON (repeatable)")
	cond := fs.String("condition", "", "query a thing must match to be patched")
	rate := fs.Int("rate", 0, "things written per second (0: unlimited)")
	shadowName := fs.String("shadow", "", "named shadow (default: classic)")
	artifact := fs.String("artifact", "", "a stored firmware artifact (type@version, id or id prefix): each thing gets its own ota_url and the image's fields in desired state (--set/--patch then optional); with --document, the document refers to it with ${umbra:artifact.url}, .sha256, .size, .version, .signature placeholders, replaced per device")
	pos, err := c.parse(fs, args, 1, 1, "NAME")
	if err != nil {
		return err
	}
	if (*target == "") == (*grp == "") {
		return usageError{fmt.Errorf("%s: give --target QUERY or --group GROUP (one of them)", cmd)}
	}
	var p json.RawMessage
	switch {
	case *document != "" && (*patch != "" || len(set) > 0):
		return usageError{fmt.Errorf("%s: give --document or --patch/--set, not both", cmd)}
	case *document != "":
		doc, err := readSpec(cmd+" --document", *document)
		if err != nil {
			return err
		}
		body := map[string]any{"name": pos[0], "document": json.RawMessage(doc)}
		for k, v := range map[string]string{"target": *target, "group": *grp, "condition": *cond, "artifact": *artifact} {
			if v != "" {
				body[k] = v
			}
		}
		if *rate > 0 {
			body["ratePerSecond"] = *rate
		}
		raw, err := c.request("POST", "/api/jobs", nil, body)
		if err != nil {
			return err
		}
		return printJob(c, raw)
	case *patch != "" && len(set) > 0:
		return usageError{fmt.Errorf("%s: give --patch or --set, not both", cmd)}
	case *patch != "":
		var m map[string]any
		if err := decodeExact([]byte(*patch), &m); err != nil {
			return usageError{fmt.Errorf("%s: --patch is not a JSON object: %v", cmd, err)}
		}
		p = json.RawMessage(*patch)
	case len(set) > 0:
		m, err := pairs(set, "--set")
		if err != nil {
			return err
		}
		p, _ = json.Marshal(m)
	case *artifact != "":
		// The artifact's fields are the patch.
	default:
		return usageError{fmt.Errorf("%s: nothing to write: give --set k=v or --patch JSON", cmd)}
	}
	body := map[string]any{"name": pos[0]}
	if p != nil {
		body["patch"] = p
	}
	for k, v := range map[string]string{"target": *target, "group": *grp, "condition": *cond, "shadow": *shadowName, "artifact": *artifact} {
		if v != "" {
			body[k] = v
		}
	}
	if *rate > 0 {
		body["ratePerSecond"] = *rate
	}
	raw, err := c.request("POST", "/api/jobs", nil, body)
	if err != nil {
		return err
	}
	return printJob(c, raw)
}

func jobsLs(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "", "List jobs.")
	if _, err := c.parse(fs, args, 0, 0, ""); err != nil {
		return err
	}
	var out struct {
		Jobs []client.Job `json:"jobs"`
	}
	raw, err := c.getJSON("GET", "/api/jobs", nil, nil, &out)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	return jobTable(c, out.Jobs)
}

func jobsGet(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "ID [--watch]", "Show a job's progress; --watch follows it until it is done.")
	watch := fs.Bool("watch", false, "print progress every second until the job is done")
	until := fs.String("until", "applied", "with --watch: stop once every eligible thing is applied (the job is no longer running) or also converged")
	pos, err := c.parse(fs, args, 1, 1, "ID")
	if err != nil {
		return err
	}
	if *until != "applied" && *until != "converged" {
		return usageError{fmt.Errorf("%s: --until %q: want applied or converged", cmd, *until)}
	}
	path := "/api/jobs/" + url.PathEscape(pos[0])
	if !*watch {
		raw, err := c.request("GET", path, nil, nil)
		if err != nil {
			return err
		}
		return printJob(c, raw)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		raw, err := c.request("GET", path, nil, nil)
		if err != nil {
			return err
		}
		var j client.Job
		if err := json.Unmarshal(raw, &j); err != nil {
			return err
		}
		p := j.Progress
		if c.json {
			if err := c.printJSON(raw); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(c.stdout, "%s %-9s %s applied %d/%d  converged %d  pending %d  ineligible %d  failed %d\n",
				j.ID, j.State, progressBar(p.Applied+p.Ineligible+p.Failed, p.Targeted, 20), p.Applied, p.Targeted-p.Ineligible, p.Converged, p.Pending, p.Ineligible, p.Failed)
		}
		done := j.State != "running"
		switch {
		case *until == "converged" && j.Executions != nil:
			done = done && p.Pending == 0 // every execution ended
		case *until == "converged":
			done = done && p.Converged == p.Applied
		}
		if done {
			if j.State == "cancelled" || p.Failed > 0 {
				return fmt.Errorf("job %s ended %s with %d failed", j.ID, j.State, p.Failed)
			}
			return nil
		}
		select {
		case <-c.ctx.Done():
			return c.ctx.Err()
		case <-tick.C:
		}
	}
}

// progressBar draws done/total as a text progress bar of width cells.
func progressBar(done, total, width int) string {
	if total <= 0 {
		return "[" + strings.Repeat("-", width) + "]"
	}
	n := min(width, done*width/total)
	return "[" + strings.Repeat("#", n) + strings.Repeat("-", width-n) + "]"
}

func jobsCancel(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "ID [--force]", "Cancel a running job. For a job document, QUEUED executions become CANCELED; --force cancels IN_PROGRESS ones too.")
	force := fs.Bool("force", false, "job documents: also cancel IN_PROGRESS executions")
	pos, err := c.parse(fs, args, 1, 1, "ID")
	if err != nil {
		return err
	}
	var q url.Values
	if *force {
		q = url.Values{"force": {"true"}}
	}
	raw, err := c.request("POST", "/api/jobs/"+url.PathEscape(pos[0])+"/cancel", q, nil)
	if err != nil {
		return err
	}
	return printJob(c, raw)
}
