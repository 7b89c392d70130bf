package budget

// Queued is the number of this process's calls waiting for the budget.
func (s *Shared) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting
}
