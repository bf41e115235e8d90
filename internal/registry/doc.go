// Package registry is the central registry of a ketnoi instance: it holds
// members, subsystems, nodes, service descriptors, access grants and the
// shared catalogue's code lists, and publishes them as a signed, versioned
// global configuration.
//
// State lives in one bbolt file. Every accepted change is validated against
// that state, stored, and published in the same write transaction as a new
// configuration version signed with the registry's signing key; bad input
// changes nothing. Nodes fetch or watch the configuration over mutual TLS;
// operators change it through the admin service.
//
// A published configuration expires after the configured TTL. While the
// registry runs it re-issues the same content under a new version when half
// the TTL has passed, so that nodes never reach expiry unless the registry is
// unreachable.
package registry
