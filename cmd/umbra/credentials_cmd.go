package main

import (
	"encoding/json"
	"fmt"
	"net/url"
)

func credentialsPath(thing string) string {
	return "/api/things/" + url.PathEscape(thing) + "/credentials"
}

func credentialsIssue(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "THING", "Create or rotate a thing's secret. Umbra keeps only its hash: the secret is printed once.")
	pos, err := c.parse(fs, args, 1, 1, "THING")
	if err != nil {
		return err
	}
	raw, err := c.request("POST", credentialsPath(pos[0]), nil, nil)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	var out struct{ Thing, Secret string }
	if err := json.Unmarshal(raw, &out); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "thing:  %s\nsecret: %s\nConnect with client id %s, username %s and this secret as the password; it is not shown again.\n",
		out.Thing, out.Secret, out.Thing, out.Thing)
	return nil
}

func credentialsRevoke(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "THING", "Delete a thing's secret; a connection made with it is ended.")
	pos, err := c.parse(fs, args, 1, 1, "THING")
	if err != nil {
		return err
	}
	if _, err := c.request("DELETE", credentialsPath(pos[0]), nil, nil); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(fmt.Appendf(nil, `{"revoked":%q}`, pos[0]))
	}
	fmt.Fprintf(c.stdout, "revoked the secret of %s\n", pos[0])
	return nil
}
