package query_test

import (
	"errors"
	"fmt"

	"github.com/umbra-iot/umbra/registry/query"
)

// thing is a Record over a map of field → values.
type thing map[string][]query.Value

func (t thing) Values(field string) []query.Value { return t[field] }

func Example() {
	q, err := query.Parse(`attributes.location:factory-A shadow.reported.firmware_version<2.2.0 -thingGroupNames:(canary OR beta*)`)
	if err != nil {
		panic(err)
	}
	sensor := thing{
		"thingName":                        {query.Str("sensor-1")},
		"thingGroupNames":                  {query.Str("line-1"), query.Str("eu")},
		"attributes.location":              {query.Str("Factory-A")},
		"shadow.reported.firmware_version": {query.Str("2.1.10")},
	}
	fmt.Println(q.Match(sensor))
	fmt.Println(q)
	// Output:
	// true
	// attributes.location:factory-A AND shadow.reported.firmware_version<2.2.0 AND NOT (thingGroupNames:canary OR thingGroupNames:beta*)
}

func ExampleParse_error() {
	_, err := query.Parse(`attributes.location:factory-A AND shadow.reported.temp:[10 20]`)
	var se *query.SyntaxError
	if errors.As(err, &se) {
		fmt.Println(se.Pos)
	}
	fmt.Println(err)
	// Output:
	// 59
	// query: position 60: expected "TO" after the range's lower bound
}

func ExampleTerm_MatchValue() {
	t := query.MustParse("shadow.reported.battery:[80 TO 100}").Terms()[0]
	for _, v := range []query.Value{query.Num("80.0"), query.Num("1e2"), query.Str("85"), query.Num("79.99")} {
		fmt.Println(v.S, t.MatchValue(v))
	}
	// Output:
	// 80.0 true
	// 1e2 false
	// 85 true
	// 79.99 false
}
