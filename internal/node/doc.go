// Package node is the security server an agency runs: a local endpoint where
// the agency's applications call other agencies' services with ordinary
// generated gRPC clients, and a federation endpoint where other nodes call
// the services this agency provides.
//
// Between two nodes every message travels as a signed frame (package
// exchange) over mutual TLS, and each node writes every message it sends,
// receives or refuses to its evidence log before the exchange proceeds: no
// exchange without evidence. Policy comes from the registry's signed global
// configuration (package gconf), cached so the node keeps serving while the
// registry is down.
//
// The flow of one call:
//
//	app --(gRPC, loopback)--> consumer node ==(mTLS, signed frames)==> provider node --(gRPC)--> backend
package node
