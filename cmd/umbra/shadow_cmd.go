package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

func shadowPath(thing string) string { return "/things/" + url.PathEscape(thing) + "/shadow" }

// shadowLabel names a shadow in messages: the thing, and the shadow's name
// unless it is the classic shadow.
func shadowLabel(thing, name string) string {
	if name == "" {
		return thing
	}
	return thing + " (named shadow " + name + ")"
}

func shadowQuery(name string) url.Values {
	if name == "" {
		return nil
	}
	return url.Values{"name": {name}}
}

// shadowLs pages through AWS's ListNamedShadowsForThing.
func shadowLs(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "THING [--limit N]", "List a thing's named shadows by name (every page, or the first --limit).\nThe classic shadow has no name and is not listed.")
	limit := fs.Int("limit", 0, "at most this many names (0: all)")
	pos, err := c.parse(fs, args, 1, 1, "THING")
	if err != nil {
		return err
	}
	if *limit < 0 {
		return usageError{fmt.Errorf("shadow ls: --limit must be 0 or more, not %d", *limit)}
	}
	names, err := fetchPages[string](c, "/api/things/shadow/ListNamedShadowsForThing/"+url.PathEscape(pos[0]), "results", *limit, 100)
	if err != nil {
		return err
	}
	if names == nil {
		names = []string{}
	}
	if c.json {
		b, _ := json.Marshal(map[string]any{"thing": pos[0], "results": names})
		return c.printJSON(b)
	}
	tw := c.table()
	fmt.Fprintln(tw, "NAME")
	for _, n := range names {
		fmt.Fprintln(tw, n)
	}
	return tw.Flush()
}

func shadowGet(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "THING [--name N]", "Print a shadow: its version and each desired, reported and delta value.")
	name := fs.String("name", "", "named shadow (default: the classic shadow)")
	pos, err := c.parse(fs, args, 1, 1, "THING")
	if err != nil {
		return err
	}
	var doc struct {
		State     map[string]json.RawMessage `json:"state"`
		Version   int64                      `json:"version"`
		Timestamp int64                      `json:"timestamp"`
	}
	raw, err := c.getJSON("GET", shadowPath(pos[0]), shadowQuery(*name), nil, &doc)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	title := pos[0]
	if *name != "" {
		title += " (shadow " + *name + ")"
	}
	fmt.Fprintf(c.stdout, "%s  version %d\n", title, doc.Version)
	tw := c.table()
	fmt.Fprintln(tw, "SECTION\tKEY\tVALUE")
	for _, sec := range []string{"desired", "reported", "delta"} {
		var m map[string]any
		_ = decodeExact(doc.State[sec], &m)
		for _, kv := range flatten("", m) {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", sec, kv[0], kv[1])
		}
	}
	return tw.Flush()
}

// flatten lists an object's leaves as dotted keys and printed values,
// sorted by key.
func flatten(prefix string, m map[string]any) [][2]string {
	var out [][2]string
	for k, v := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
			out = append(out, flatten(key, sub)...)
			continue
		}
		out = append(out, [2]string{key, valueString(v)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

func valueString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func shadowUpdate(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "THING ['{\"state\":...}' | --desired k=v ... | --reported k=v ...] [--name N]",
		"Change a shadow with a JSON update document, or with --desired / --reported pairs:\nkey=value sets a string, key:=JSON any JSON value (key:=null removes the key).")
	name := fs.String("name", "", "named shadow (default: the classic shadow)")
	var desired, reported multiFlag
	fs.Var(&desired, "desired", "desired key=value or key:=JSON (repeatable)")
	fs.Var(&reported, "reported", "reported key=value or key:=JSON (repeatable)")
	version := fs.Int64("version", 0, "fail with 409 unless the shadow has this version")
	pos, err := c.parse(fs, args, 1, 2, "THING ['{\"state\":...}' | --desired k=v]")
	if err != nil {
		return err
	}
	var body []byte
	switch {
	case len(pos) == 2 && (len(desired) > 0 || len(reported) > 0):
		return usageError{fmt.Errorf("%s: give a JSON document or --desired/--reported pairs, not both", cmd)}
	case len(pos) == 2:
		var doc map[string]any
		if err := decodeExact([]byte(pos[1]), &doc); err != nil {
			return usageError{fmt.Errorf("%s: the update document is not a JSON object: %v (example: '{\"state\":{\"desired\":{\"led\":\"on\"}}}')", cmd, err)}
		}
		if *version != 0 {
			doc["version"] = *version
		}
		body, _ = json.Marshal(doc)
	case len(desired) == 0 && len(reported) == 0:
		return usageError{fmt.Errorf("%s: nothing to update: give a JSON document or --desired k=v", cmd)}
	default:
		state := map[string]any{}
		if len(desired) > 0 {
			if state["desired"], err = pairs(desired, "--desired"); err != nil {
				return err
			}
		}
		if len(reported) > 0 {
			if state["reported"], err = pairs(reported, "--reported"); err != nil {
				return err
			}
		}
		doc := map[string]any{"state": state}
		if *version != 0 {
			doc["version"] = *version
		}
		body, _ = json.Marshal(doc)
	}
	var out struct {
		Version int64 `json:"version"`
	}
	raw, err := c.getJSON("POST", shadowPath(pos[0]), shadowQuery(*name), body, &out)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	fmt.Fprintf(c.stdout, "updated %s: version %d\n", shadowLabel(pos[0], *name), out.Version)
	return nil
}

func shadowDelete(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "THING [--name N]", "Delete a shadow.")
	name := fs.String("name", "", "named shadow (default: the classic shadow)")
	pos, err := c.parse(fs, args, 1, 1, "THING")
	if err != nil {
		return err
	}
	var out struct {
		Version int64 `json:"version"`
	}
	raw, err := c.getJSON("DELETE", shadowPath(pos[0]), shadowQuery(*name), nil, &out)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	fmt.Fprintf(c.stdout, "deleted the shadow of %s (version %d)\n", shadowLabel(pos[0], *name), out.Version)
	return nil
}

func shadowHistory(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "THING [--name N] [--limit N]", "List a shadow's accepted changes, newest first.")
	name := fs.String("name", "", "named shadow (default: the classic shadow)")
	limit := fs.Int("limit", 20, "entries to show (1-1000)")
	pos, err := c.parse(fs, args, 1, 1, "THING")
	if err != nil {
		return err
	}
	q := url.Values{"limit": {fmt.Sprint(*limit)}}
	if *name != "" {
		q.Set("name", *name)
	}
	var out struct {
		Entries []struct {
			Version   int64           `json:"version"`
			Op        string          `json:"op"`
			Timestamp int64           `json:"timestamp"`
			Principal string          `json:"principal"`
			Origin    string          `json:"origin"`
			Request   json.RawMessage `json:"request"`
		} `json:"entries"`
	}
	raw, err := c.getJSON("GET", shadowPath(pos[0])+"/history", q, nil, &out)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	tw := c.table()
	fmt.Fprintln(tw, "VERSION\tOP\tTIME\tORIGIN\tPRINCIPAL\tREQUEST")
	for _, e := range out.Entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Version, e.Op, formatTime(e.Timestamp), orDash(e.Origin), orDash(e.Principal), compact(e.Request, 60))
	}
	return tw.Flush()
}

// compact prints JSON on one line, cut to max runes.
func compact(raw json.RawMessage, max int) string {
	if len(raw) == 0 {
		return "-"
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return "-"
	}
	s := []rune(b.String())
	if len(s) > max {
		return string(s[:max-1]) + "…"
	}
	return string(s)
}

func shadowWatch(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "THING [--name N] [--count N]", "Follow a shadow's changes (GET /api/events?thing=THING&types=shadow) until\ninterrupted, or until --count changes were printed.")
	name := fs.String("name", "", "only this named shadow (default: every shadow of the thing)")
	count := fs.Int("count", 0, "exit after this many changes (0: never)")
	pos, err := c.parse(fs, args, 1, 1, "THING")
	if err != nil {
		return err
	}
	seen := 0
	q := url.Values{"thing": {pos[0]}, "types": {"shadow"}}
	return c.stream(c.ctx, "/api/events", q, func() {
		fmt.Fprintf(c.stderr, "watching %s (Ctrl-C to stop)\n", pos[0])
	}, func(typ string, data []byte) (bool, error) {
		if typ != "shadow" {
			return false, nil
		}
		var ev struct {
			Time int64 `json:"time"`
			Data struct {
				Shadow  string                     `json:"shadow"`
				Op      string                     `json:"op"`
				Version int64                      `json:"version"`
				State   map[string]json.RawMessage `json:"state"`
			} `json:"data"`
		}
		if json.Unmarshal(data, &ev) != nil {
			return false, nil
		}
		if fs.Lookup("name") != nil && *name != "" && ev.Data.Shadow != *name {
			return false, nil
		}
		if c.json {
			fmt.Fprintf(c.stdout, "%s\n", data)
		} else {
			parts := []string{formatTime(ev.Time), fmt.Sprintf("v%d", ev.Data.Version), ev.Data.Op}
			if ev.Data.Shadow != "" {
				parts = append(parts, "shadow="+ev.Data.Shadow)
			}
			for _, sec := range []string{"desired", "reported", "delta"} {
				if s := compact(ev.Data.State[sec], 200); s != "-" && s != "null" {
					parts = append(parts, sec+"="+s)
				}
			}
			fmt.Fprintln(c.stdout, strings.Join(parts, "  "))
		}
		seen++
		return *count > 0 && seen >= *count, nil
	})
}
