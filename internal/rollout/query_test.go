package rollout_test

import (
	"testing"

	"github.com/umbra-iot/umbra/registry/query"
)

func mustQuery(t *testing.T, s string) *query.Query {
	t.Helper()
	q, err := query.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return q
}
