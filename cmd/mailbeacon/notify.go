package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifier tells systemd (Type=notify) what serve is doing: READY=1 once
// the listeners are open, RELOADING=1 and READY=1 around a reload,
// STOPPING=1 when it drains. Without $NOTIFY_SOCKET (not under systemd)
// it does nothing. The environment stays set: a reload notifies again.
type notifier struct{ log *slog.Logger }

func (n notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("could not notify systemd", "state", state, "err", err)
	}
}

func (n notifier) ready(status string) {
	n.send(daemon.SdNotifyReady + "\nSTATUS=" + status)
}

// reloading carries the monotonic time systemd (≥ 253) wants with
// RELOADING=1 to tell this reload from an earlier one.
func (n notifier) reloading() {
	n.send(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=reloading the configuration")
}

func (n notifier) stopping() {
	n.send(daemon.SdNotifyStopping + "\nSTATUS=draining requests")
}

// watchdog pings systemd's watchdog (WatchdogSec=) at half its interval
// until ctx ends; it returns at once when no watchdog is asked for. The
// ping comes from this goroutine: a process that is stopped, or whose
// runtime no longer schedules, misses it and systemd restarts it.
func (n notifier) watchdog(ctx context.Context) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("ignoring the systemd watchdog", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.send(daemon.SdNotifyWatchdog)
		}
	}
}
