package history

// Test hooks of Store, for the external tests of this package.

// SetBeforeWrite makes s call f before each block write, with the block's key and whether the write is
// a split marker; an error from f stops the add there, as a process stopped at that point would.
func (s *Store) SetBeforeWrite(f func(key string, split bool) error) { s.beforeWrite = f }

// Reads says how many blocks s has read, and their bytes.
func (s *Store) Reads() (blocks, bytes uint64) { return s.reads.Load(), s.readBytes.Load() }
