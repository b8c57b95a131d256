package main

import (
	"fmt"
	"net/url"
)

func queryCmd(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, `"QUERY" [--count | --buckets FIELD] [--limit N]`,
		"Run a fleet query, e.g. umbra query 'attributes.ring:canary AND shadow.reported.firmware_version<2.0.0'.")
	count := fs.Bool("count", false, "print only the number of matching things")
	buckets := fs.String("buckets", "", "count matching things by the values of this field (e.g. shadow.reported.firmware_version)")
	limit := fs.Int("limit", 100, "things to list (1-1000)")
	pos, err := c.parse(fs, args, 1, 1, `"QUERY"`)
	if err != nil {
		return err
	}
	if *count && *buckets != "" {
		return usageError{fmt.Errorf("query: give --count or --buckets, not both")}
	}
	q := url.Values{"query": {pos[0]}}
	switch {
	case *count:
		var out struct {
			Count int64 `json:"count"`
		}
		raw, err := c.getJSON("GET", "/api/aggregations/count", q, nil, &out)
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(raw)
		}
		fmt.Fprintln(c.stdout, out.Count)
		return nil
	case *buckets != "":
		q.Set("field", *buckets)
		var out struct {
			Total   int64 `json:"totalCount"`
			Buckets []struct {
				Value string `json:"keyValue"`
				Count int64  `json:"count"`
			} `json:"buckets"`
		}
		raw, err := c.getJSON("GET", "/api/aggregations/buckets", q, nil, &out)
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(raw)
		}
		tw := c.table()
		fmt.Fprintf(tw, "%s\tCOUNT\n", *buckets)
		for _, b := range out.Buckets {
			fmt.Fprintf(tw, "%s\t%d\n", b.Value, b.Count)
		}
		fmt.Fprintf(tw, "(total)\t%d\n", out.Total)
		return tw.Flush()
	}
	q.Set("pageSize", fmt.Sprint(*limit))
	var out struct {
		Things []string `json:"things"`
		Total  int64    `json:"total"`
	}
	raw, err := c.getJSON("GET", "/api/search", q, nil, &out)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	for _, t := range out.Things {
		fmt.Fprintln(c.stdout, t)
	}
	fmt.Fprintf(c.stderr, "%d of %d matching things\n", len(out.Things), out.Total)
	return nil
}
