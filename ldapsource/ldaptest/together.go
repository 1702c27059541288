package ldaptest

import "sync"

// Together starts n goroutines, releases them at the same instant once all
// have started, runs f(i) in goroutine i, and returns when every one has
// returned: for tests that attack shared state (the cache, the bind
// backoff) with hundreds of callers at once.
func Together(n int, f func(i int)) {
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
