// Package together starts goroutines that begin at the same instant, for
// tests that attack shared state with hundreds of callers at once.
package together

import "sync"

// Run starts n goroutines, releases them together once all have started,
// runs f(i) in goroutine i, and returns when every one has returned.
func Run(n int, f func(i int)) {
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			f(i)
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
}
