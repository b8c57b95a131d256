package auth

import "strings"

// ValidFilter reports whether f is a well-formed MQTT topic filter: not
// empty, '+' and '#' only as whole levels, '#' only last.
func ValidFilter(f string) bool {
	if f == "" {
		return false
	}
	for rest, more := f, true; more; {
		var level string
		level, rest, more = strings.Cut(rest, "/")
		if level == "#" && more {
			return false
		}
		if len(level) > 1 && strings.ContainsAny(level, "+#") {
			return false
		}
	}
	return true
}

// Match reports whether topic name t matches MQTT topic filter f
// (MQTT 3.1.1 §4.7; a filter starting with a wildcard never matches a topic
// starting with '$'). A malformed filter matches nothing.
func Match(f, t string) bool {
	if !ValidFilter(f) || strings.ContainsAny(t, "+#") {
		return false
	}
	if t != "" && t[0] == '$' && (strings.HasPrefix(f, "+") || strings.HasPrefix(f, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(f, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(t, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a" (the parent level).
			return fmore == tmore || (fmore && frest == "#")
		}
		f, t = frest, trest
	}
}

// Covers reports whether every topic matched by filter sub is also matched
// by filter f: a subscription to sub stays within what f grants. Malformed
// filters cover and are covered by nothing.
func Covers(f, sub string) bool {
	if !ValidFilter(f) || !ValidFilter(sub) {
		return false
	}
	// A grant that begins with a wildcard never reaches '$' topics, so it
	// cannot cover a filter that names one.
	if sub != "" && sub[0] == '$' && (strings.HasPrefix(f, "+") || strings.HasPrefix(f, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(f, "/")
		if fl == "#" {
			return true
		}
		sl, srest, smore := strings.Cut(sub, "/")
		switch {
		case sl == "#":
			return false // sub reaches deeper than any non-# grant level
		case fl == "+":
			// '+' covers one level, literal or '+'.
		case sl == "+" || fl != sl:
			return false
		}
		if !fmore || !smore {
			if fmore == smore {
				return true
			}
			// f continues with "/#": it also covers the parent level sub names.
			return fmore && frest == "#"
		}
		f, sub = frest, srest
	}
}

// SharedFilter splits "$share/{group}/{filter}" into its filter.
func SharedFilter(f string) (filter string, shared bool) {
	rest, ok := strings.CutPrefix(f, "$share/")
	if !ok {
		return f, false
	}
	_, filter, ok = strings.Cut(rest, "/")
	return filter, ok
}
