package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/internal/store"
)

const dbUsage = `Usage: umbra db COMMAND [flags]

Maintenance of the database file (DIR/umbra.db; --data-dir, $UMBRA_DATA_DIR,
default ./umbra-data). check, compact, salvage and an offline backup need the
file not to be in use: stop umbra serve first. A running broker is backed up
online, through the HTTP API, with backup --online.

Commands:
  check               verify every page (bbolt) and Umbra's buckets and records
  backup FILE         copy the database to FILE (a consistent snapshot)
  backup --online FILE  the same from a running broker (GET /api/admin/backup, admin key)
  compact FILE        copy the database to FILE without its free pages
  salvage FILE        copy what can still be read from a damaged file to FILE

Exit codes: 0 ok, 1 a problem was found or the command failed, 2 usage error.
Recovery: see RELIABILITY.md, "Recovering the database".
`

func dbCmd(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, dbUsage)
		return usageError{errors.New("db: missing command: want check, backup, compact or salvage")}
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, dbUsage)
		return flag.ErrHelp
	case "check":
		return dbCheck(args[1:], stdout, stderr, env)
	case "backup":
		return dbBackup(ctx, args[1:], stdout, stderr, env)
	case "compact":
		return dbCopy("compact", args[1:], stdout, stderr, env)
	case "salvage":
		return dbCopy("salvage", args[1:], stdout, stderr, env)
	}
	return usageError{fmt.Errorf("db: unknown command %q: want check, backup, compact or salvage", args[0])}
}

// dbFlags are the flags of the offline commands.
func dbFlags(name, argsUsage string, stderr io.Writer) (*flag.FlagSet, *string, *bool) {
	fs := flag.NewFlagSet("umbra db "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data-dir", "", "data directory holding umbra.db (default $UMBRA_DATA_DIR or ./umbra-data)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: umbra db %s [flags] %s\n\nFlags:\n", name, argsUsage)
		fs.PrintDefaults()
	}
	return fs, dir, asJSON
}

// dbPath is the database file of the data directory given, configured or
// defaulted.
func dbPath(dir string, env []string) string {
	if dir == "" {
		dir = lookup(env, "UMBRA_DATA_DIR")
	}
	if dir == "" {
		dir = broker.DefaultDataDir
	}
	return filepath.Join(dir, store.FileName)
}

// parseDB parses flags and positional arguments in any order.
func parseDB(fs *flag.FlagSet, args []string, want int, what string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{fmt.Errorf("%s: %v", strings.TrimPrefix(fs.Name(), "umbra "), err)}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != want {
		return nil, usageError{fmt.Errorf("%s: want %s, got %q (see %s -h)", strings.TrimPrefix(fs.Name(), "umbra "), what, pos, fs.Name())}
	}
	return pos, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dbCheck(args []string, stdout, stderr io.Writer, env []string) error {
	fs, dir, asJSON := dbFlags("check", "", stderr)
	if _, err := parseDB(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	rep, err := store.Check(dbPath(*dir, env))
	if err != nil {
		return err
	}
	if *asJSON {
		if err := printJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%s: %d bytes, schema %d\n", rep.Path, rep.Size, rep.Schema)
		names := make([]string, 0, len(rep.Buckets))
		for n := range rep.Buckets {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(stdout, "  %-20s %d keys\n", n, rep.Buckets[n])
		}
		for _, p := range rep.Problems {
			fmt.Fprintf(stdout, "PROBLEM: %s\n", p)
		}
	}
	if !rep.OK() {
		return fmt.Errorf("db check: %d problem(s) in %s; see RELIABILITY.md, \"Recovering the database\"", len(rep.Problems), rep.Path)
	}
	if !*asJSON {
		fmt.Fprintln(stdout, "ok: no problems found")
	}
	return nil
}

func dbBackup(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) error {
	for _, a := range args {
		if a == "--online" || a == "-online" {
			return dbBackupOnline(ctx, args, stdout, stderr, env)
		}
	}
	fs, dir, asJSON := dbFlags("backup", "FILE", stderr)
	fs.Bool("online", false, "back up a running broker through its HTTP API (--server, --api-key: an admin key)")
	pos, err := parseDB(fs, args, 1, "FILE")
	if err != nil {
		return err
	}
	path := dbPath(*dir, env)
	n, err := store.BackupFile(path, pos[0])
	if err != nil {
		return err
	}
	return reportBackup(stdout, *asJSON, path, pos[0], n)
}

func reportBackup(stdout io.Writer, asJSON bool, from, to string, n int64) error {
	if asJSON {
		return printJSON(stdout, map[string]any{"from": from, "backup": to, "bytes": n})
	}
	fmt.Fprintf(stdout, "backed up %s to %s (%d bytes); restore by stopping umbra and copying it to DIR/%s\n", from, to, n, store.FileName)
	return nil
}

// dbBackupOnline fetches GET /api/admin/backup into FILE, then checks the
// copy before reporting success.
func dbBackupOnline(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) error {
	c := &cli{ctx: ctx, stdout: stdout, stderr: stderr, env: env}
	fs := c.flagSet("db backup", "--online FILE", "Back up a running broker through its HTTP API (an admin API key when auth is on).")
	fs.Bool("online", true, "back up a running broker through its HTTP API")
	pos, err := c.parse(fs, args, 1, 1, "FILE")
	if err != nil {
		return err
	}
	resp, err := c.send(ctx, "GET", broker.BackupPath, nil, nil, 0)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := store.WriteFileAtomic(pos[0], func(w io.Writer) (int64, error) {
		n, err := io.Copy(w, resp.Body)
		if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
			err = fmt.Errorf("backup truncated: %d of %d bytes", n, resp.ContentLength)
		}
		return n, err
	})
	if err != nil {
		return fmt.Errorf("db backup: %w", err)
	}
	rep, err := store.Check(pos[0])
	if err != nil {
		return fmt.Errorf("db backup: the copy does not check: %w", err)
	}
	if !rep.OK() {
		_ = os.Rename(pos[0], pos[0]+".bad")
		return fmt.Errorf("db backup: the copy has %d problem(s) (kept as %s.bad): %s", len(rep.Problems), pos[0], rep.Problems[0])
	}
	return reportBackup(stdout, c.json, c.base+broker.BackupPath, pos[0], n)
}

func dbCopy(name string, args []string, stdout, stderr io.Writer, env []string) error {
	fs, dir, asJSON := dbFlags(name, "FILE", stderr)
	pos, err := parseDB(fs, args, 1, "FILE")
	if err != nil {
		return err
	}
	path := dbPath(*dir, env)
	if name == "compact" {
		before, after, err := store.Compact(path, pos[0])
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, map[string]any{"from": path, "to": pos[0], "bytes_before": before, "bytes_after": after})
		}
		fmt.Fprintf(stdout, "compacted %s (%d bytes) into %s (%d bytes); to use it, stop umbra and move it to DIR/%s\n", path, before, pos[0], after, store.FileName)
		return nil
	}
	rep, err := store.Salvage(path, pos[0])
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	names := make([]string, 0, len(rep.Copied))
	for n := range rep.Copied {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(stdout, "salvaged %s into %s:\n", path, pos[0])
	for _, n := range names {
		fmt.Fprintf(stdout, "  %-20s %d keys copied\n", n, rep.Copied[n])
	}
	for _, l := range rep.Lost {
		fmt.Fprintf(stdout, "LOST: %s\n", l)
	}
	fmt.Fprintf(stdout, "check it with `umbra db check`, then stop umbra and move it to DIR/%s\n", store.FileName)
	return nil
}
