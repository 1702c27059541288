// Package memstat reads a benchmark process's memory the same way for
// every memory benchmark: after a collection, with freed memory returned
// to the system.
package memstat

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// Usage is the resident size and the heap in use, in bytes.
type Usage struct{ RSS, Heap uint64 }

// Settle collects garbage, returns freed memory to the system and reads
// the resident size from /proc (0 where there is none).
func Settle() Usage {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return Usage{RSS: residentBytes(), Heap: ms.HeapInuse}
}

func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
