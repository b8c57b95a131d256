// Package api is Umbra's HTTP face: the AWS IoT data-plane shadow paths
// (so AWS SDK HTTP clients and curl scripts work unchanged) and Umbra's own
// admin API. Handlers only translate HTTP to domain service calls; they
// never touch storage directly.
package api
