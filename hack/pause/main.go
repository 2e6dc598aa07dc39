// Command routing-pause is the sandbox ("pause") container of the local node: it holds a pod's
// namespaces open and does nothing else. It is PID 1 in the pod, so it reaps any orphan that
// gets re-parented to it, and it exits cleanly on SIGINT or SIGTERM when the pod is torn down.
// Built static (CGO_ENABLED=0) so it runs in an image FROM scratch.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
