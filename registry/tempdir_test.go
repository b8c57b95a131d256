package registry_test

import (
	"os"
	"testing"
)

// mkTemp makes the benchmark fleet's directory, shared by benchmarks in one
// run and removed by TestMain.
func mkTemp() (string, error) { return os.MkdirTemp("", "umbra-registry-bench-") }

func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" {
		_ = os.RemoveAll(benchDir)
	}
	os.Exit(code)
}
