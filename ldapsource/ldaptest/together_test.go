package ldaptest

import (
	"sync/atomic"
	"testing"
)

// Every goroutine runs, once, and none starts before all have started.
func TestTogether(t *testing.T) {
	const n = 300
	var started, ran atomic.Int32
	seen := make([]atomic.Bool, n)
	Together(n, func(i int) {
		started.Add(1)
		if seen[i].Swap(true) {
			t.Errorf("goroutine %d ran twice", i)
		}
		ran.Add(1)
	})
	if ran.Load() != n {
		t.Errorf("%d of %d ran", ran.Load(), n)
	}
}
