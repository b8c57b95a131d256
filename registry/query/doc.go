// Package query is Umbra's fleet query language: the AWS IoT Fleet Indexing
// query syntax (Lucene-like) over the registry, connectivity and device
// shadows, used by search, dynamic thing groups and aggregations. It is
// pure: Parse turns text into a tree, Match evaluates the tree against one
// thing seen through the Record interface, and Term.MatchValue tests one
// value, which is what an index needs to test its distinct values.
//
// # Examples
//
//	attributes.location:factory-A AND shadow.reported.firmware_version:2.1.3
//	thingName:sensor-*                       wildcard (* any run, ? one character)
//	connectivity.connected:true
//	thingGroupNames:canary                   any of the thing's groups
//	shadow.reported.battery>80               also <, <=, >=; field:>80 works too
//	shadow.reported.temp:[10 TO 20]          inclusive; {10 TO 20] and [10 TO 20} exclude an end; * = unbounded
//	shadow.name.config.reported.x:5          named shadow
//	shadow.reported.firmware_version<2.2.0   semantic-version order
//	shadow.hasDelta:true AND shadow.deltaAgeSeconds>3600   drift that never converged
//	thingName:(tv* OR radio*)                field group
//	shadow.reported.location:*               the field exists
//	attributes.name:"hall 2"                 quoted value (\" and \\ escapes)
//	NOT connectivity.connected:true -thingGroupNames:canary (a OR b)
//	*                                        every thing (also *:*)
//
// # Fields
//
// Field names are case-sensitive and validated; an unknown one is a parse
// error that names it, suggests a near spelling and lists the accepted
// forms (AcceptedFields):
//
//	thingName, thingTypeName, thingGroupNames     strings (registry.thingTypeName and
//	                                              registry.thingGroupNames are AWS aliases)
//	registry.version                              number
//	attributes.<key>                              string; <key> may contain dots
//	connectivity.connected                        bool
//	connectivity.timestamp                        number, ms since the epoch
//	connectivity.disconnectReason                 string
//	shadow.version                                number
//	shadow.hasDelta                               bool
//	shadow.deltaAgeSeconds                        number
//	shadow.reported.<path>, shadow.desired.<path>, shadow.delta.<path>   any JSON scalar
//	shadow.name.<shadowName>.<any of the six shadow.* forms above>
//
// A <path> is dot-separated JSON keys of letters, digits, "_", "-" (and
// "@", "/", "#"); a shadow name likewise (so a shadow name containing ":"
// can't be queried). Literals on the typed fields are checked when parsing:
// connectivity.connected:maybe, registry.version:abc and wildcards on a
// number or bool field are errors.
//
// # What a Record provides
//
// Values(field) returns every scalar value at a field: one per array
// element (arrays match when any element matches, including the leaves of
// objects inside arrays, flattened to the array's path plus their keys),
// several for thingGroupNames; nil when absent. Numbers are Kind Number with
// their JSON text, strings Kind String, booleans Kind Bool "true"/"false".
// For field:* a Record may implement Exister so that object-valued paths
// (shadow.reported.location = {"lat":…}) exist; otherwise a field exists
// when it has values.
//
// Drift fields are computed by the Record at query time: shadow.hasDelta is
// true when the shadow's delta is non-empty and false for a shadow without
// delta (absent for a thing without that shadow); shadow.deltaAgeSeconds is
// now minus the time of the oldest desired change still in the delta (the
// oldest desired metadata timestamp among the delta's leaves), absent when
// there is no delta. So shadow.deltaAgeSeconds>3600 finds devices that have
// not converged for an hour, and NOT shadow.hasDelta:true includes things
// without a shadow.
//
// # Values and comparison
//
// A query literal has no type of its own: against a value of Kind Number it
// is read as a number if it is one ([+-]digits[.digits][e[+-]digits]),
// against a Bool as true/false (any case) if it is one, otherwise it is a
// string. Then:
//
//   - ":" is EqualFold: numbers by exact decimal value (1 == 1.0 == 1e0,
//     and 100000000000000000001 != 1e20: no float rounding), bools by truth,
//     strings case-insensitively (AWS search is case-insensitive; Unicode
//     simple folding, so Küche == KÜCHE). A quoted literal is the same
//     literal: attributes.x:"80" equals the number 80. Equality of strings
//     is textual even for versions: firmware_version:2.1 does not match
//     "2.1.0" (use a range or >= and <= for that).
//   - <, <=, >, >= and ranges use Compare: two numbers by exact value; else
//     if both texts are versions (semver and the loose forms "2", "1.2",
//     "v2.0.0-rc1", parsed with github.com/Masterminds/semver/v3, case
//     folded), semver order (1.9 < 1.10, 2.2.0-rc1 < 2.2.0, build metadata
//     ignored); two bools false < true; otherwise case-insensitive text
//     order. So comparisons apply to strings too, and a string "90"
//     compares with 80 as the version 90.0.0. Numbers must be JSON numbers
//     to compare numerically: the strings "3.14159" and "3.2" compare as
//     versions (3.14159 > 3.2).
//   - Wildcards match the value's text (a number's JSON text, "true") case-
//     insensitively: * any run of characters, ? exactly one. A value may not
//     start with a wildcard (AWS rule), except "*" alone, which tests that
//     the field exists. In a bare value \ escapes the next character
//     (thingName:a\*b has no wildcard; a\ b has a space); quoted values
//     never contain wildcards. Fuzzy (~) and boosting (^) are rejected
//     with a message, not silently taken as text.
//   - Range bounds are bare or quoted literals, or * for no bound; a bound
//     that is exactly "*" (even quoted) is unbounded. Wildcards are not
//     allowed in bounds or comparisons.
//
// # Boolean structure
//
// Precedence, tightest first: NOT and "-" (the same: complement), then AND
// (explicit, or implicit between adjacent clauses, AWS's default operator),
// then OR; both binary operators associate to the left. So
// "a OR b c" is a OR (b AND c) and "NOT a b" is (NOT a) AND b. These are
// boolean operators, not Lucene's MUST/SHOULD clauses. NOT x matches every
// thing x does not match, including things that lack x's field. AND, OR,
// NOT and TO are keywords only in upper case; write them quoted to search
// for the words. A field group applies one field to a boolean expression of
// values: thingName:(tv* AND -plasma) is thingName:tv* AND NOT
// thingName:plasma; inside it, values may also be ranges, comparisons (>5)
// and *; "-" still means NOT, so a negative number in a group is written
// quoted ("-5") or escaped (\-5). Each value of a group tests the thing's
// values independently: shadow.reported.tags:(blue AND indoor) matches
// tags ["blue","indoor"].
//
// # Canonical form
//
// Query.String writes every operator out (AND, OR, NOT; never implicit AND
// or "-"), expands field groups, keeps only the parentheses precedence
// needs, and quotes or escapes values only where needed. Parsing it gives
// an Equal query with the same String; golden and fuzz tests hold this.
//
// # Limits and errors
//
// An empty (or all-space) query is an error; "*" is the query for every
// thing. A query is at most MaxQueryBytes (4096) bytes, and so is its
// canonical form (which field groups can make longer); nesting of
// parentheses, field groups, NOT and "-" is at most MaxDepth (32). The
// parser is recursive only in nesting, which is checked before descending,
// and evaluation recursion is bounded by the tree those limits allow, so no
// input exhausts the stack. AWS's limit of 7 terms per query is not
// imposed.
//
// Every error is a *SyntaxError whose Pos is the byte offset the message
// is about (Error() prints it as a 1-based position) and whose Msg says
// what was expected: `expected a value after "attributes.location:"`,
// `unbalanced ")"`, `expected ")" to close the "(" at position 5`,
// `unknown field "atributes.x" (did you mean "attributes.x"?); accepted:
// …`, `expected "TO" after the range's lower bound`, and so on
// (testdata/query/invalid.json has them all).
//
// # Not supported
//
// Regular expressions, fuzzy and proximity search, boosting, && || ! as
// operators, a default field (every clause names its field), and AWS's
// deviceDefender.* and connectivity.version fields.
package query
