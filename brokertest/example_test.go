package brokertest_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/brokertest"
)

// Start a whole Umbra in-process, write a shadow over the HTTP data plane
// and read it back. In a test, brokertest.Start(t) does the same and cleans
// up when the test ends.
func Example() {
	srv, err := brokertest.New()
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	resp, err := http.Post(srv.HTTPURL()+"/things/esp32-1/shadow", "application/json",
		strings.NewReader(`{"state":{"desired":{"led_is_on":true}}}`))
	if err != nil {
		panic(err)
	}
	resp.Body.Close()

	resp, err = http.Get(srv.HTTPURL() + "/things/esp32-1/shadow")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println("version:", gjson.GetBytes(body, "version"))
	fmt.Println("delta:", gjson.GetBytes(body, "state.delta"))
	// Output:
	// version: 1
	// delta: {"led_is_on":true}
}
