package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/umbra-iot/umbra/client"
)

func thingPath(name string) string { return "/api/things/" + url.PathEscape(name) }

func thingsLs(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "[--limit N]", "List things by name (every page, or the first --limit).")
	limit := fs.Int("limit", 0, "at most this many things (0: all)")
	if _, err := c.parse(fs, args, 0, 0, ""); err != nil {
		return err
	}
	all, err := fetchPages[json.RawMessage](c, "/api/things", "things", *limit, 1000)
	if err != nil {
		return err
	}
	if c.json {
		b, _ := json.Marshal(map[string]any{"things": all})
		return c.printJSON(b)
	}
	tw := c.table()
	wide := c.output == "wide"
	if wide {
		fmt.Fprintln(tw, "NAME\tTYPE\tVERSION\tCREATED\tUPDATED\tATTRIBUTES")
	} else {
		fmt.Fprintln(tw, "NAME\tTYPE\tVERSION\tATTRIBUTES")
	}
	for _, raw := range all {
		var t client.Thing
		_ = json.Unmarshal(raw, &t)
		if wide {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", t.Name, orDash(t.Type), t.Version, formatTime(t.CreatedAt), formatTime(t.UpdatedAt), joinAttrs(t.Attributes))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", t.Name, orDash(t.Type), t.Version, joinAttrs(t.Attributes))
	}
	return tw.Flush()
}

func printThing(c *cli, raw []byte) error {
	if c.json {
		return c.printJSON(raw)
	}
	var t client.Thing
	if err := json.Unmarshal(raw, &t); err != nil {
		return err
	}
	conn := "never connected"
	if t.Connectivity != nil {
		conn = "disconnected since " + formatTime(t.Connectivity.Timestamp)
		if t.Connectivity.Connected {
			conn = "connected since " + formatTime(t.Connectivity.Timestamp)
		}
	}
	tw := c.table()
	fmt.Fprintf(tw, "NAME\t%s\n", t.Name)
	fmt.Fprintf(tw, "TYPE\t%s\n", orDash(t.Type))
	fmt.Fprintf(tw, "VERSION\t%d\n", t.Version)
	fmt.Fprintf(tw, "ATTRIBUTES\t%s\n", joinAttrs(t.Attributes))
	fmt.Fprintf(tw, "GROUPS\t%s\n", orDash(strings.Join(t.Groups, ",")))
	fmt.Fprintf(tw, "CONNECTIVITY\t%s\n", conn)
	fmt.Fprintf(tw, "CREATED\t%s\n", formatTime(t.CreatedAt))
	fmt.Fprintf(tw, "UPDATED\t%s\n", formatTime(t.UpdatedAt))
	return tw.Flush()
}

func thingsGet(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "THING", "Show a thing with its groups and connectivity.")
	pos, err := c.parse(fs, args, 1, 1, "THING")
	if err != nil {
		return err
	}
	raw, err := c.request("GET", thingPath(pos[0]), nil, nil)
	if err != nil {
		return err
	}
	return printThing(c, raw)
}

func thingsConnectivity(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "THING", "List a thing's last connects and disconnects, newest first (the broker keeps 16).")
	pos, err := c.parse(fs, args, 1, 1, "THING")
	if err != nil {
		return err
	}
	var out struct {
		History []struct {
			Connected       bool   `json:"connected"`
			Timestamp       int64  `json:"timestamp"`
			Version         int64  `json:"versionNumber"`
			Reason          string `json:"disconnectReason"`
			ClientAddress   string `json:"clientAddress"`
			ProtocolVersion int    `json:"protocolVersion"`
		} `json:"history"`
	}
	raw, err := c.getJSON("GET", thingPath(pos[0])+"/connectivity", nil, nil, &out)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	tw := c.table()
	fmt.Fprintln(tw, "TIME\tEVENT\tSESSION\tDETAIL")
	for _, t := range out.History {
		event, detail := "disconnected", orDash(t.Reason)
		if t.Connected {
			event, detail = "connected", fmt.Sprintf("%s MQTT %s", orDash(t.ClientAddress), mqttVersion(t.ProtocolVersion))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", formatTime(t.Timestamp), event, t.Version, detail)
	}
	return tw.Flush()
}

// mqttVersion names an MQTT protocol level.
func mqttVersion(level int) string {
	switch level {
	case 3:
		return "3.1"
	case 4:
		return "3.1.1"
	case 5:
		return "5"
	}
	return "?"
}

func thingsCreate(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "THING [--type T] [key=value ...]", "Register a thing with optional type and attributes.")
	typ := fs.String("type", "", "thing type")
	pos, err := c.parse(fs, args, 1, -1, "THING [key=value ...]")
	if err != nil {
		return err
	}
	attrs := map[string]string{}
	for _, a := range pos[1:] {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return usageError{fmt.Errorf("%s: attribute %q: want key=value", cmd, a)}
		}
		attrs[k] = v
	}
	body := map[string]any{"thingName": pos[0], "attributes": attrs}
	if *typ != "" {
		body["thingTypeName"] = *typ
	}
	raw, err := c.request("POST", "/api/things", nil, body)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	fmt.Fprintf(c.stdout, "created thing %s\n", pos[0])
	return nil
}

func thingsTag(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "THING key=value ... key- ...", "Set attributes (key=value) or remove them (key-).")
	pos, err := c.parse(fs, args, 2, -1, "THING key=value|key- ...")
	if err != nil {
		return err
	}
	attrs := map[string]*string{}
	for _, a := range pos[1:] {
		if k, ok := strings.CutSuffix(a, "-"); ok && k != "" && !strings.Contains(k, "=") {
			attrs[k] = nil
			continue
		}
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return usageError{fmt.Errorf("%s: %q: want key=value to set or key- to remove", cmd, a)}
		}
		attrs[k] = &v
	}
	raw, err := c.request("PATCH", thingPath(pos[0]), nil, map[string]any{"attributes": attrs})
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	var t client.Thing
	_ = json.Unmarshal(raw, &t)
	fmt.Fprintf(c.stdout, "%s: %s (version %d)\n", t.Name, joinAttrs(t.Attributes), t.Version)
	return nil
}

func thingsRm(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "THING [--expected-version N]", "Delete a thing.")
	expected := fs.Int64("expected-version", 0, "fail unless the thing has this version")
	pos, err := c.parse(fs, args, 1, 1, "THING")
	if err != nil {
		return err
	}
	var q url.Values
	if *expected > 0 {
		q = url.Values{"expectedVersion": {fmt.Sprint(*expected)}}
	}
	if _, err := c.request("DELETE", thingPath(pos[0]), q, nil); err != nil {
		return err
	}
	if c.json {
		return c.printJSON([]byte(fmt.Sprintf(`{"deleted":%q}`, pos[0])))
	}
	fmt.Fprintf(c.stdout, "deleted thing %s\n", pos[0])
	return nil
}
