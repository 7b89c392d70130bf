package serving

import "testing"

func TestSignalAndAll(t *testing.T) {
	var a, b Signal
	early := a.Done() // taken before Set
	if All(early, b.Done(), nil) {
		t.Fatal("All true before any Set")
	}
	a.Set()
	a.Set() // idempotent
	if !All(early) || All(early, b.Done()) {
		t.Fatalf("after a.Set: All(a) %v, All(a, b) %v; want true, false", All(early), All(early, b.Done()))
	}
	b.Set()
	if !All(a.Done(), b.Done(), nil) {
		t.Fatal("All false after both Set")
	}
}
