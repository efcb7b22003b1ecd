package notify

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/guardrun/guardrun/internal/testchild"
	"github.com/guardrun/guardrun/supervise"
)

// TestHookRunsOncePerNotificationWithInitOn is issue 11's "a hook run
// twice": with Init on, the supervise loop reaps every child of the
// process with wait4(-1), the hook's sh -c among them. The exec sink must
// get each hook's status from the reaper, not see ECHILD and run it again.
func TestHookRunsOncePerNotificationWithInitOn(t *testing.T) {
	dir := t.TempDir()
	runs, ready := filepath.Join(dir, "runs.log"), filepath.Join(dir, "ready")
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() {
		_, err := supervise.Run(ctx, supervise.Config{Name: fmt.Sprintf("grtest-hook-%d", os.Getpid()), Backend: "none", Init: true,
			Command: testchild.Command("ready", ready, "5m"), Env: testchild.Environ(), StopTimeout: 5 * time.Second})
		ran <- err
	}()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("supervise.Run: %v", err)
		}
	}()
	testchild.WaitFile(t, ready) // the reaper is in its loop

	const want = 200
	n := New(Config{Sinks: []Sink{NewExecSink("echo x >> " + runs)}, Queue: want, Retries: 3, RetryBase: 10 * time.Millisecond})
	for i := range want {
		// gave_up is sent every time: one notification per event.
		n.Observe(supervise.Event{Kind: supervise.GaveUp, Run: "app", Time: time.Now(), Detail: fmt.Sprint("loop ", i)})
	}
	r := n.Close(time.Minute)
	b, err := os.ReadFile(runs)
	if err != nil {
		t.Fatal(err)
	}
	if got := bytes.Count(b, []byte("x\n")); got != want || r.Delivered != want || r.Undelivered+r.Dropped != 0 {
		t.Fatalf("the hook ran %d times for %d notifications (report %+v)", got, want, r)
	}
}
