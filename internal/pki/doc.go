// Package pki is the development public-key infrastructure of ketnoi: a
// self-signed instance CA that issues X.509-SVIDs (transport identities of
// the registry, nodes and operators) and signing certificates (the member
// and registry keys that sign exchange headers and the global
// configuration).
//
// It exists for development, tests and demonstrations. A production
// instance gets its SVIDs from the registry's CA or a SPIRE agent and keeps
// its CA key out of ordinary files.
//
// # Certificate profiles
//
// The CA certificate is self-signed, ECDSA P-256, with basic constraints
// CA:true, key usage certSign and cRLSign, and the URI SAN "spiffe://<td>".
// It carries no URI name constraint, because such a constraint only admits
// URIs with a host and would make every "urn:ketnoi:..." signing
// certificate fail verification.
//
// An SVID ([CA.IssueSVID]) has an empty subject, exactly one URI SAN (its
// SPIFFE ID, with a non-root path), key usage digitalSignature only and
// extended key usages serverAuth and clientAuth, as the X509-SVID
// specification asks and go-spiffe checks.
//
// A signing certificate ([CA.IssueSigning]) has exactly one URI SAN that is
// not a SPIFFE ID, such as "urn:ketnoi:member:VN/NN/000.00.00.G22", key
// usages digitalSignature and contentCommitment, and no extended key usage.
//
// Every issued certificate has a fresh ECDSA P-256 key, a random 128-bit
// serial number, a NotBefore one minute in the past to absorb clock skew,
// and a NotAfter that never passes the CA's own.
//
// # Files
//
// Keys are written as PEM "PRIVATE KEY" blocks (PKCS#8) with mode 0600,
// certificates as PEM "CERTIFICATE" blocks with mode 0644. A CA directory
// holds ca.pem, ca-key.pem and bundle.pem, the trust bundle that nodes and
// the registry load.
package pki
