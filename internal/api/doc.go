// Package api is Umbra's HTTP face: the AWS IoT data-plane shadow paths
// (so AWS SDK HTTP clients and curl scripts work unchanged) and Umbra's own
// admin API. Handlers only translate HTTP to domain service calls; they
// never touch storage directly.
//
// Every handler is a HandlerFunc: it writes its answer on success and
// returns its failure, and WriteError writes every failure as one JSON
// error document (errors.go). Routes wraps the router so that its own
// refusals, unknown routes (404) and wrong methods (405), are that
// document too.
package api
