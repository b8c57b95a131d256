// Bare Mochi MQTT v2.7.9: allow-all auth, one TCP listener, no persistence;
// the baseline for issue 17's "raw through Umbra ÷ bare Mochi" row.
package main

import (
	"log"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func main() {
	addr := "127.0.0.1:18831"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	s := mqtt.New(&mqtt.Options{InlineClient: true})
	_ = s.AddHook(new(auth.AllowHook), nil)
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "t1", Address: addr})); err != nil {
		log.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = s.Close()
}
