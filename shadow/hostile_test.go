package shadow

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
)

// Bad input never hurts anyone (DESIGN.md invariant 5): every payload below
// gets its rejection, or is accepted, without panicking or exhausting the stack.
func TestHostilePayloads(t *testing.T) {
	big := Options{MaxPayloadBytes: 4 << 20}
	deep := func(open, close string, n int) string {
		return strings.Repeat(open, n) + "1" + strings.Repeat(close, n)
	}
	for _, c := range []struct {
		name    string
		payload string
		o       Options
		want    *Error // nil: accepted
	}{
		{"100k open brackets", strings.Repeat("[", 100_000), big, ErrInvalidJSON},
		{"100k open braces", strings.Repeat(`{"a":`, 100_000), big, ErrInvalidJSON},
		{"200k-deep valid arrays in an ignored field", `{"state":{},"junk":` + deep("[", "]", 200_000) + `}`, big, nil},
		{"200k-deep valid arrays in desired", `{"state":{"desired":{"a":` + deep("[", "]", 200_000) + `}}}`, big, TooDeep(6)},
		{"100k-deep objects in reported", `{"state":{"reported":` + deep(`{"a":`, "}", 100_000) + `}}`, big, TooDeep(6)},
		{"1 MiB string over the document limit", `{"state":{"reported":{"s":"` + strings.Repeat("x", 1<<20) + `"}}}`, big, ErrPayloadTooLarge},
		{"1 MiB string over the payload limit", `{"state":{"reported":{"s":"` + strings.Repeat("x", 1<<20) + `"}}}`, Options{}, ErrPayloadTooLarge},
		{"1 MiB string within raised limits", `{"state":{"reported":{"s":"` + strings.Repeat("x", 1<<20) + `"}}}`, Options{MaxPayloadBytes: 4 << 20, MaxDocumentBytes: 4 << 20}, nil},
		{"100k-digit number", `{"state":{"reported":{"n":` + strings.Repeat("9", 100_000) + `}}}`, big, ErrPayloadTooLarge},
		{"100k-digit exponent", `{"state":{"desired":{"n":1e` + strings.Repeat("9", 100_000) + `}}}`, Options{MaxPayloadBytes: 4 << 20, MaxDocumentBytes: 4 << 20}, nil},
		{"invalid UTF-8 inside a string", "{\"state\":{\"reported\":{\"s\":\"\xff\xfe\"}}}", Options{}, ErrUnsupportedEncoding},
		{"raw NUL bytes", "{\"state\":{\"reported\":{\"s\":\"\x00\x00\"}}}", Options{}, ErrInvalidJSON},
		{"escaped NULs are fine", `{"state":{"reported":{"s\u0000":"\u0000"}}}`, Options{}, nil},
		{"only NUL bytes", "\x00\x00\x00", Options{}, ErrInvalidJSON},
		{"lone surrogates", `{"state":{"reported":{"\ud800":"\udfff"}}}`, Options{}, nil},
		{"20k null keys", `{"state":{"reported":{` + keys(20_000, "k", "null") + `}}}`, big, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _, _, err := ParseUpdate([]byte(c.payload), c.o)
			if err == nil {
				_, err = Update(Current{}, req, t0, c.o)
			}
			if (err == nil) != (c.want == nil) || err != nil && *err != *c.want {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if _, _, terr := ParseTokenOnly([]byte(c.payload), c.o); terr != nil {
				t.Errorf("ParseTokenOnly: %v", terr)
			}
		})
	}
}

// Large objects stay linear (objects above indexAbove members are indexed):
// 20k deletions of absent keys plus 1000 writes against a 2000-key document,
// after which convergence empties desired.
func TestManyKeys(t *testing.T) {
	o := Options{MaxPayloadBytes: 4 << 20, MaxDocumentBytes: 1 << 20}
	doc := mustUpdate(t, Current{}, `{"state":{"reported":{`+keys(1000, "k", "1")+`},"desired":{`+keys(1000, "k", "2")+`}}}`, o).Doc
	res := mustUpdate(t, Current{Doc: doc}, `{"state":{"reported":{`+keys(20_000, "x", "null")+`,`+keys(1000, "k", "2")+`}}}`, o)
	d, r := DocState(res.Doc)
	if d != nil || !bytes.Equal(r, []byte(`{`+keys(1000, "k", "2")+`}`)) {
		t.Errorf("desired %.60s, reported %.60s", d, r)
	}
	if DocDelta(res.Doc) != nil || res.Delta != nil {
		t.Errorf("converged, yet delta = %.100s", DocDelta(res.Doc))
	}
}

// keys writes n members "<prefix>0":value, "<prefix>1":value, ...
func keys(n int, prefix, value string) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + prefix + strconv.Itoa(i) + `":` + value)
	}
	return b.String()
}
