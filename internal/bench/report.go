package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as an aligned text table with its notes.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "umbra bench — %s, broker %s, %d CPUs, %.1f GiB, %s\n",
		r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Broker, r.Machine.CPUs, float64(r.Machine.MemBytes)/(1<<30), r.Machine.Go)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tvariant\tclients\tops\tops/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\terrors\tsrv cpu\tsrv rss\tcommits/s\twrites/commit\tpages/op\tcommit ms\tshadow ms\tsrv p99 ms\t")
	for _, x := range r.Results {
		commits := "-"
		perCommit, commitMs, shadowMs, pages, srvP99 := "-", "-", "-", "-", "-"
		if x.Server.ShadowMs > 0 {
			shadowMs = fmt.Sprintf("%.2f", x.Server.ShadowMs)
		}
		if x.Server.ShadowP99Ms > 0 && x.Scenario == ShadowUpdate {
			srvP99 = fmt.Sprintf("%.2f", x.Server.ShadowP99Ms)
		}
		if x.Server.Commits > 0 && x.Seconds > 0 {
			commits = fmt.Sprintf("%.0f", float64(x.Server.Commits)/x.Seconds)
			perCommit = fmt.Sprintf("%.1f", x.Server.WritesPerCommit)
			commitMs = fmt.Sprintf("%.2f", x.Server.CommitMs)
			if x.Server.Pages > 0 && x.Ops > 0 {
				pages = fmt.Sprintf("%.2f", float64(x.Server.Pages)/float64(x.Ops))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			x.Scenario, x.Variant, x.Clients, x.Ops, x.PerSec, x.Latency.P50, x.Latency.P90, x.Latency.P99, x.Latency.Max,
			x.Errors, x.Server.CPUCores, bytesString(x.Server.RSS), commits, perCommit, pages, commitMs, shadowMs, srvP99)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if r.ShadowVsRaw > 0 {
		fmt.Fprintf(w, "durable shadow updates ÷ raw QoS 1 round trips (max rate, same server): %.2f\n", r.ShadowVsRaw)
	}
	if r.HistoryOnVsOff > 0 {
		fmt.Fprintf(w, "shadow updates with history ÷ without (max rate): %.2f\n", r.HistoryOnVsOff)
	}
	for _, x := range r.Results {
		if x.Scenario == ShadowUpdate || (x.Scenario == Raw && x.TargetRate > 0) {
			fmt.Fprintf(w, "%s %s: %.0f/s, p50 %.2f ms, p99 %.2f ms", x.Scenario, x.Variant, x.PerSec, x.Latency.P50, x.Latency.P99)
			if x.Rejected > 0 {
				fmt.Fprintf(w, ", %d REJECTED", x.Rejected)
			}
			fmt.Fprintln(w)
		}
	}
	for _, x := range r.Results {
		if x.Scenario == Connections && x.Ops > 0 {
			fmt.Fprintf(w, "connections: %d idle at %.0f/s; broker RSS %s (+%s), %.1f KiB RSS per connection",
				x.Ops, x.PerSec, bytesString(x.Server.RSS), bytesString(x.Server.RSSGrowth), x.RSSPerConn/1024)
			if x.HeapStackPerConn > 0 {
				fmt.Fprintf(w, ", %.1f KiB Go heap+stacks per connection", x.HeapStackPerConn/1024)
			}
			fmt.Fprintln(w)
		}
	}
	var notes []string
	notes = append(notes, r.Notes...)
	for _, x := range r.Results {
		for _, n := range x.Notes {
			notes = append(notes, x.Scenario+": "+n)
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range notes {
			fmt.Fprintln(w, "  - "+n)
		}
	}
	return nil
}

func bytesString(n int64) string {
	neg := ""
	if n < 0 {
		neg, n = "-", -n
	}
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%s%.2f GiB", neg, float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%s%.1f MiB", neg, float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%s%.1f KiB", neg, float64(n)/(1<<10))
	}
	return neg + strings.TrimSpace(fmt.Sprintf("%d B", n))
}
