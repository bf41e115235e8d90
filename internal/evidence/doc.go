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
// returns only once the record is on disk: no exchange proceeds without its
// evidence. Records queued while a commit runs are written together in the
// next one (group commit), and indexes follow queue order. With a gather
// policy ([Options.Gather]) a commit also waits briefly for more records
// while the node is busy; an idle node's commits never wait.
//
// A commit is one frame appended to the journal, a file beside the bbolt
// file, made durable by one fdatasync. The writer folds journaled records
// into the bbolt tree, in synced bbolt transactions, at most 100 ms later or
// once 4096 wait, and whenever a reader needs them: reads of a writable log
// ([Log.ByMessageID], [Log.Entry], [Log.Certificate], [Log.Verify],
// [Log.Search], [Log.TreeHead]) fold first and so see every appended record.
// A bbolt commit costs two syncs and rewrites the pages at the edge of the
// tree, so folding many commits at once takes that off the exchange's path
// (about half the latency of a lone record, see BenchmarkAppend). Open folds
// in whatever a crash left in the journal; [OpenReadOnly] refuses such a log
// with [ErrUnfolded] until its node has been started once, and both fail
// with [ErrDamaged] if its journal is missing. A log closed cleanly has
// everything in its tree and needs no journal. A fold that fails leaves the
// records journaled and is tried again; while the tree is 65,536 records
// behind, new records are refused. The journal's frames carry a random
// generation that the tree stores, so frames left over from before, or
// frame-shaped bytes inside records, are never read as new (see journal.go).
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
// The log is one bbolt file, with the journal beside it (same name plus
// ".journal", 16 MiB), and the bbolt file has five buckets:
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
