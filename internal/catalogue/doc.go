// Package catalogue reads and fingerprints the shared code lists ("danh mục
// dùng chung") that the registry publishes to every node: administrative
// units, countries and the like.
//
// A code list version is a set of [cataloguev1.CodeEntry] values, each a code
// kept as text (leading zeros matter) with named fields. [ReadCSV] builds the
// entries from a CSV file with a header row; [Digest] computes the SHA-256
// fingerprint that nodes and applications compare to know they hold the same
// version; [Sort] puts entries in the code order in which they are served.
// [ValidListName] and [ValidVersion] check the identifiers under which a
// version is stored.
package catalogue
