// Package history keeps the delivered jobs for ever, on disk, in the KV bucket BRIDGE_HISTORY: each
// job's id, when its result went out and the RESULTS sequence of that result (an [Entry]). It answers
// "was this job delivered, and when?" in a bounded number of block reads whatever the length of the
// history, and holds no entries in memory between calls.
//
// Layout. A block is one KV value. Its key is "b" for the root and "b.<prefix>" below, prefix being the
// first hex digits of the ids it holds (the job id's 32 hex digits, dashes dropped, one digit a level:
// b.7, b.7f, b.7f0, ...). A block is either a leaf, one kind byte and then its entries in ascending
// order of id, 32 bytes each (the id's 16 bytes, the delivery time in Unix milliseconds and the result's
// sequence, 8 bytes each; at most [Config.MaxBlockIDs], 4096 by default: 128 KiB), or a split marker,
// one byte, meaning its ids live in its 16 children. (A leaf of 16-byte ids alone, as the first history
// wrote them, is read too, its deliveries unknown, and rewritten with entries at its next add.) The tree starts as the one leaf "b" and grows by splits
// only where ids are; a split marker never becomes a leaf again. Missing blocks are empty.
//
// What it guarantees:
//
//   - Exact answers. [Store.Lookup] finds every id an [Store.Add] that returned nil recorded, in any
//     process, after restarts of the server, and never an id that was not added: it is a set, not a
//     filter.
//   - Bounded lookups. A lookup reads the root and follows split markers down: one read a level, all
//     from the stream leader. With random ids and 4096 entries a leaf, the leaves of n ids sit where
//     n/16^d is at most 4096: 1 read up to 4096 ids, 2 up to 65k, 3 up to about 1M, 4 up to 16.7M, 5
//     up to 268M; every read but the last is of a 1-byte marker, the last of one leaf (at most 128 KiB).
//   - Adds that lose and double nothing, from any number of writers in any number of processes. Each
//     block is written with compare-and-set on its revision, merging (a sorted union) what it holds
//     with what is added, so that adding an id twice is harmless (the first entry stays), and a writer
//     that lost the race reads again and merges on the winner's version.
//   - Splits that a crash cannot spoil. A leaf that would pass its size first puts all its ids, the new
//     ones with them, into its children (merged with what they hold), and only then becomes a split
//     marker, with compare-and-set. Stopped before the marker, the leaf still holds every id it held
//     and lookups read it alone; the children it wrote are unreachable subsets, which the next split of
//     that leaf merges into again. Only the ids of the interrupted Add may be missing, and that Add did
//     not return nil: its caller adds them again.
//   - Size. About 32 bytes a job in the stream (State.Bytes) plus one message header a block, and one
//     subject a block (256 jobs each at the least) in the server's memory. The files on disk
//     may hold up to about twice that, replaced versions of leaves waiting for the file store to compact.
//
// The bucket is made by natsx.Provision, without direct gets: a direct get is answered by any replica,
// however far behind, and could miss a block written a moment before (a split's children); every read
// of a Store is the stream leader's.
package history
