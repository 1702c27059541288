package policy

import (
	"context"
	"sync/atomic"
	"time"
)

// maxPad bounds any wait a timePad makes.
const maxPad = 2 * time.Second

// timePad makes a fast answer as slow as a slow one, so that the time
// taken does not tell them apart: refusing an unknown address as slow as
// refusing a wrong password. It waits on a timer, so it imitates waits of
// milliseconds well and shorter ones poorly: a busy machine fires a 200µs
// timer after 2ms. Its zero value is ready and waits for nothing.
type timePad struct {
	avg  atomic.Int64 // moving average of the slow path, in nanoseconds
	late atomic.Int64 // moving average of how late wait's timer wakes, in nanoseconds
}

// note adds one duration of the slow path to the average.
func (p *timePad) note(d time.Duration) { movingAverage(&p.avg, d) }

// wait sleeps for the average of the slow path. Timers wake late (on
// Linux up to about a millisecond, more on a busy machine), which alone
// made the padded answers ~13% slower than the ones they imitate: the
// lateness seen so far is taken off.
func (p *timePad) wait(ctx context.Context, sleep func(context.Context, time.Duration), now func() time.Time) {
	d := time.Duration(p.avg.Load())
	if d <= 0 {
		return
	}
	want := max(d-time.Duration(p.late.Load()), 0)
	start := now()
	sleep(ctx, want)
	if ctx.Err() == nil {
		movingAverage(&p.late, now().Sub(start)-want)
	}
}

// movingAverage adds d, bounded to [0, maxPad], to the average in avg
// with weight 1/8.
func movingAverage(avg *atomic.Int64, d time.Duration) {
	d = min(max(d, 0), maxPad)
	for {
		old := avg.Load()
		next := int64(d)
		if old != 0 {
			next = old + (int64(d)-old)/8
		}
		if avg.CompareAndSwap(old, next) {
			return
		}
	}
}
