package main

import (
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/umbra-iot/umbra/registry"
)

// groupJSON is the API's wire type for a group.
type groupJSON = registry.Group

func groupKind(g groupJSON) string {
	if g.Query != "" {
		return "dynamic"
	}
	return "static"
}

func groupPath(name string) string { return "/api/groups/" + url.PathEscape(name) }

func groupsLs(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "", "List groups.")
	if _, err := c.parse(fs, args, 0, 0, ""); err != nil {
		return err
	}
	var out struct {
		Groups []groupJSON `json:"groups"`
	}
	raw, err := c.getJSON("GET", "/api/groups", nil, nil, &out)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	tw := c.table()
	fmt.Fprintln(tw, "NAME\tKIND\tPARENT\tQUERY\tDESCRIPTION")
	for _, g := range out.Groups {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", g.Name, groupKind(g), orDash(g.Parent), orDash(g.Query), orDash(g.Description))
	}
	return tw.Flush()
}

func groupsGet(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "GROUP", "Show a group and its members.")
	pos, err := c.parse(fs, args, 1, 1, "GROUP")
	if err != nil {
		return err
	}
	var g groupJSON
	raw, err := c.getJSON("GET", groupPath(pos[0]), nil, nil, &g)
	if err != nil {
		return err
	}
	var members struct {
		Things []string `json:"things"`
		Total  int64    `json:"total"`
	}
	mraw, err := c.getJSON("GET", groupPath(pos[0])+"/things", url.Values{"pageSize": {"1000"}}, nil, &members)
	if err != nil {
		return err
	}
	if c.json {
		b, _ := json.Marshal(map[string]json.RawMessage{"group": raw, "members": mraw})
		return c.printJSON(b)
	}
	tw := c.table()
	fmt.Fprintf(tw, "NAME\t%s\n", g.Name)
	fmt.Fprintf(tw, "KIND\t%s\n", groupKind(g))
	fmt.Fprintf(tw, "PARENT\t%s\n", orDash(g.Parent))
	fmt.Fprintf(tw, "QUERY\t%s\n", orDash(g.Query))
	fmt.Fprintf(tw, "DESCRIPTION\t%s\n", orDash(g.Description))
	fmt.Fprintf(tw, "MEMBERS\t%d\n", members.Total)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range members.Things {
		fmt.Fprintf(c.stdout, "  %s\n", t)
	}
	return nil
}

func groupsCreate(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "GROUP [--query Q] [--parent P] [--description D]", "Create a static group, or a dynamic one whose members are the things matching --query.")
	q := fs.String("query", "", "fleet query of a dynamic group")
	parent := fs.String("parent", "", "parent group")
	desc := fs.String("description", "", "description")
	pos, err := c.parse(fs, args, 1, 1, "GROUP")
	if err != nil {
		return err
	}
	raw, err := c.request("POST", "/api/groups", nil, groupJSON{Name: pos[0], Query: *q, Parent: *parent, Description: *desc})
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	kind := "static"
	if *q != "" {
		kind = "dynamic"
	}
	fmt.Fprintf(c.stdout, "created %s group %s\n", kind, pos[0])
	return nil
}

func groupsRm(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "GROUP", "Delete a group.")
	pos, err := c.parse(fs, args, 1, 1, "GROUP")
	if err != nil {
		return err
	}
	if _, err := c.request("DELETE", groupPath(pos[0]), nil, nil); err != nil {
		return err
	}
	if c.json {
		return c.printJSON([]byte(fmt.Sprintf(`{"deleted":%q}`, pos[0])))
	}
	fmt.Fprintf(c.stdout, "deleted group %s\n", pos[0])
	return nil
}

func groupsMember(method string) func(c *cli, cmd string, args []string) error {
	return func(c *cli, cmd string, args []string) error {
		fs := c.flagSet(cmd, "GROUP THING ...", "Add things to (or remove them from) a static group.")
		pos, err := c.parse(fs, args, 2, -1, "GROUP THING ...")
		if err != nil {
			return err
		}
		for _, t := range pos[1:] {
			if _, err := c.request(method, groupPath(pos[0])+"/things/"+url.PathEscape(t), nil, nil); err != nil {
				return err
			}
		}
		if c.json {
			b, _ := json.Marshal(map[string]any{"group": pos[0], "things": pos[1:]})
			return c.printJSON(b)
		}
		verb, prep := "added", "to"
		if method == "DELETE" {
			verb, prep = "removed", "from"
		}
		fmt.Fprintf(c.stdout, "%s %d things %s %s\n", verb, len(pos)-1, prep, pos[0])
		return nil
	}
}
