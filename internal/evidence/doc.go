// Package evidence keeps a node's append-only evidence log: every signed
// header the node sent, received or refused, with its signature, the signer
// certificate, the outcome and the node's receive time.
//
// # Tree
//
// Records are the leaves of an RFC 6962 Merkle tree (the tree of
// golang.org/x/mod/sumdb/tlog). A leaf is the deterministic protobuf
// encoding of a ketnoi.evidence.v1.Record; its leaf hash covers those exact
// bytes, so changing one byte of a stored record is caught by [Log.Verify].
//
// # Durability
//
// One writer goroutine owns every write. [Log.Append] queues a record and
// returns only after the bbolt transaction holding it has been synced to
// disk: no exchange proceeds without its evidence. Records queued while a
// commit runs are written together in the next one (group commit), and
// indexes follow queue order. With a gather policy ([Options.Gather]) a
// commit also waits briefly for more records while the node is busy; an
// idle node's commits never wait.
//
// # Signing
//
// A node's outgoing headers are signed by the writer ([Item.Sign],
// [Options.Seal]): all those of one commit under one signature over their
// Merkle root, just before the commit. A header has to wait for the commit
// that makes its record durable in any case, so this costs the exchange no
// time, and the signature is amortised over everything the commit holds.
// The signed header is handed back through [Receipt.Signed] before the
// commit completes, for callers allowed to send before their record is
// durable.
//
// # Storage
//
// The log is one bbolt file with five buckets:
//
//	leaves    index (8 bytes, big endian) -> leaf bytes
//	hashes    tlog stored-hash index (8 bytes, big endian) -> 32-byte hash
//	certs     SHA-256 of the DER certificate -> DER
//	messages  message id, 0x00, index (8 bytes) -> empty
//	meta      "size", "root", "node"
//
// Keys and value layouts never change meaning; new buckets or meta keys may
// be added. A running node holds the file exclusively; tools open it with
// [OpenReadOnly], which fails with [ErrLocked] while the node runs.
package evidence
