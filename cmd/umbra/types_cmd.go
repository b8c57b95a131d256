package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/umbra-iot/umbra/registry"
)

// typeJSON is the API's wire type for a thing type.
type typeJSON = registry.ThingType

func typePath(name string) string { return "/api/thing-types/" + url.PathEscape(name) }

func printTypes(c *cli, types []typeJSON) error {
	tw := c.table()
	fmt.Fprintln(tw, "TYPE\tDEPRECATED\tATTRIBUTES\tDESCRIPTION")
	for _, t := range types {
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\n", t.Name, t.Deprecated, orDash(strings.Join(t.Attributes, ",")), orDash(t.Description))
	}
	return tw.Flush()
}

func typesLs(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "", "List thing types.")
	if _, err := c.parse(fs, args, 0, 0, ""); err != nil {
		return err
	}
	var out struct {
		Types []typeJSON `json:"thingTypes"`
	}
	raw, err := c.getJSON("GET", "/api/thing-types", nil, nil, &out)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	return printTypes(c, out.Types)
}

func typesCreate(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "TYPE", "Create a thing type.")
	desc := fs.String("description", "", "what the type is")
	attrs := fs.String("attributes", "", "comma-separated attribute names things of this type carry")
	pos, err := c.parse(fs, args, 1, 1, "TYPE")
	if err != nil {
		return err
	}
	body := map[string]any{"thingTypeName": pos[0]}
	if *desc != "" {
		body["description"] = *desc
	}
	if *attrs != "" {
		body["searchableAttributes"] = strings.Split(*attrs, ",")
	}
	return typeAnswer(c, "POST", "/api/thing-types", body)
}

func typesDeprecate(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "TYPE", "Deprecate a thing type: existing things keep it, new things may not use it.")
	undo := fs.Bool("undo", false, "allow the type for new things again")
	pos, err := c.parse(fs, args, 1, 1, "TYPE")
	if err != nil {
		return err
	}
	return typeAnswer(c, "PATCH", typePath(pos[0]), map[string]any{"deprecated": !*undo})
}

func typeAnswer(c *cli, method, path string, body any) error {
	raw, err := c.request(method, path, nil, body)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	var t typeJSON
	if err := json.Unmarshal(raw, &t); err != nil {
		return err
	}
	return printTypes(c, []typeJSON{t})
}

func typesRm(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "TYPE", "Delete a thing type that no thing uses.")
	pos, err := c.parse(fs, args, 1, 1, "TYPE")
	if err != nil {
		return err
	}
	if _, err := c.request("DELETE", typePath(pos[0]), nil, nil); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(fmt.Appendf(nil, `{"deleted":%q}`, pos[0]))
	}
	fmt.Fprintf(c.stdout, "deleted type %s\n", pos[0])
	return nil
}
