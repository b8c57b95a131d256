package main

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
)

type executionJSON struct {
	JobID         string            `json:"jobId"`
	Thing         string            `json:"thingName"`
	Status        string            `json:"status"`
	StatusDetails map[string]string `json:"statusDetails"`
	VersionNumber int64             `json:"versionNumber"`
	LastUpdatedAt int64             `json:"lastUpdatedAt"`
}

// jobsExecutions lists the AWS IoT Jobs executions of a job document (or of
// a rollout delivered through one).
func jobsExecutions(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "ID", "List a job document's AWS IoT Jobs executions: each thing's status, version and statusDetails.")
	pos, err := c.parse(fs, args, 1, 1, "ID")
	if err != nil {
		return err
	}
	var out struct {
		Executions []executionJSON `json:"executions"`
	}
	raw, err := c.getJSON("GET", "/api/jobs/"+url.PathEscape(pos[0])+"/executions", nil, nil, &out)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	tw := c.table()
	fmt.Fprintln(tw, "THING\tSTATUS\tVERSION\tUPDATED\tDETAILS")
	for _, e := range out.Executions {
		keys := make([]string, 0, len(e.StatusDetails))
		for k := range e.StatusDetails {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var details []string
		for _, k := range keys {
			details = append(details, k+"="+e.StatusDetails[k])
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", e.Thing, e.Status, e.VersionNumber,
			time.UnixMilli(e.LastUpdatedAt).UTC().Format(time.RFC3339), strings.Join(details, " "))
	}
	return tw.Flush()
}
