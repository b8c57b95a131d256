package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"

	"github.com/umbra-iot/umbra/internal/artifact"
)

// umbra artifacts push|ls|get|rm|url: firmware images stored by Umbra.

func artifactPath(ref string) string { return "/api/artifacts/" + url.PathEscape(ref) }

func artifactsPush(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "FILE --version V --type T [--signature SIGFILE]",
		"Upload a firmware image. Its SHA-256 is computed here and sent along, so an image changed in transit is refused.\n"+
			"SIGFILE holds the signature over the image's SHA-256 (ECDSA P-256: openssl dgst -sha256 -sign key.pem -out SIGFILE FILE).")
	version := fs.String("version", "", "firmware version, e.g. 1.2.0 (required)")
	typ := fs.String("type", "", "device type, e.g. esp32 (required)")
	sigFile := fs.String("signature", "", "file with the signature (raw bytes)")
	pos, err := c.parse(fs, args, 1, 1, "FILE")
	if err != nil {
		return err
	}
	if *version == "" || *typ == "" {
		return usageError{fmt.Errorf("%s: --version and --type are required", cmd)}
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return usageError{err}
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	hdr := map[string]string{"X-Umbra-SHA256": hex.EncodeToString(h.Sum(nil))}
	if *sigFile != "" {
		sig, err := os.ReadFile(*sigFile)
		if err != nil {
			return usageError{err}
		}
		hdr["X-Umbra-Signature"] = base64.StdEncoding.EncodeToString(sig)
	}
	if err := c.lazyConnect(); err != nil {
		return err
	}
	var a artifact.Artifact
	raw, err := c.api.Upload(c.ctx, "POST", "/api/artifacts", url.Values{"version": {*version}, "type": {*typ}}, f, size, hdr, &a)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	return printArtifacts(c, []artifact.Artifact{a})
}

func printArtifacts(c *cli, all []artifact.Artifact) error {
	tw := c.table()
	fmt.Fprintln(tw, "ID\tTYPE\tVERSION\tSIZE\tSIGNED\tUPLOADED\tUPLOADER")
	for _, a := range all {
		signed := "-"
		if len(a.Signature) > 0 {
			signed = orDash(a.SigAlg)
			if a.SigAlg == "" {
				signed = "unchecked"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", a.ID[:12], a.Type, a.Version, a.Size, signed, formatTime(a.UploadedAt), orDash(a.Uploader))
	}
	return tw.Flush()
}

func artifactsLs(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "", "List firmware artifacts, newest first.")
	if _, err := c.parse(fs, args, 0, 0, ""); err != nil {
		return err
	}
	var out struct {
		Artifacts []artifact.Artifact `json:"artifacts"`
	}
	raw, err := c.getJSON("GET", "/api/artifacts", nil, nil, &out)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	return printArtifacts(c, out.Artifacts)
}

func artifactsGet(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "ID|TYPE@VERSION", "Show an artifact: size, SHA-256, signature, uploader.")
	pos, err := c.parse(fs, args, 1, 1, "ID|TYPE@VERSION")
	if err != nil {
		return err
	}
	var a artifact.Artifact
	raw, err := c.getJSON("GET", artifactPath(pos[0]), nil, nil, &a)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	tw := c.table()
	fmt.Fprintf(tw, "id\t%s\ntype\t%s\nversion\t%s\nsize\t%d\nsha256\t%s\nuploaded\t%s\nuploader\t%s\n",
		a.ID, a.Type, a.Version, a.Size, a.SHA256, formatTime(a.UploadedAt), orDash(a.Uploader))
	if len(a.Signature) > 0 {
		fmt.Fprintf(tw, "signature\t%s (%s)\n", base64.StdEncoding.EncodeToString(a.Signature), orDash(a.SigAlg))
	}
	return tw.Flush()
}

func artifactsRm(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "ID|TYPE@VERSION", "Delete an artifact (refused while a rollout or running job references it).")
	pos, err := c.parse(fs, args, 1, 1, "ID|TYPE@VERSION")
	if err != nil {
		return err
	}
	if _, err := c.request("DELETE", artifactPath(pos[0]), nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "artifact %s deleted\n", pos[0])
	return nil
}

func artifactsURL(c *cli, cmd string, args []string) error {
	fs := c.flagSet(cmd, "ID|TYPE@VERSION --thing THING", "Print a device's download URL (with its short-lived token), as rollouts write it into desired ota_url.")
	thing := fs.String("thing", "", "the device (required)")
	pos, err := c.parse(fs, args, 1, 1, "ID|TYPE@VERSION")
	if err != nil {
		return err
	}
	if *thing == "" {
		return usageError{fmt.Errorf("%s: --thing is required", cmd)}
	}
	var out struct {
		URL string `json:"url"`
	}
	raw, err := c.getJSON("POST", artifactPath(pos[0])+"/url", url.Values{"thing": {*thing}}, nil, &out)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	fmt.Fprintln(c.stdout, out.URL)
	return nil
}
