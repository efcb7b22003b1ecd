package notify

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/guardrun/guardrun/supervise"
)

// Config shapes a Notifier. Zero values take the defaults in brackets.
type Config struct {
	Sinks   []Sink
	Window  time.Duration // dedup window [10m]
	Host    string
	Command []string
	Log     *slog.Logger
	Timeout time.Duration // per request [5s]
	// Retries after a failed request, with RetryBase doubling between
	// them [3 retries from 1s: 1s, 2s, 4s].
	Retries   int
	RetryBase time.Duration
	Queue     int              // notifications waiting per sink; past it the oldest is dropped [64]
	Now       func() time.Time // [time.Now]
	// Kept keeps critical notifications on disk until they are delivered
	// (nil: none are). What the retries could not deliver is tried again
	// from KeptRetry, doubling to KeptRetryMax [1s, 5m], and at once when
	// the sink answers again; what an earlier run kept is tried first.
	Kept                    *Kept
	KeptRetry, KeptRetryMax time.Duration
}

// Notifier runs the dedup contract on a goroutine of its own and delivers
// to each sink from another, through bounded queues: a sink that is down,
// slow or failing never blocks supervision (Observe never waits for one)
// and never grows guardrun's memory without bound.
type Notifier struct {
	cfg    Config
	dedup  Dedup
	events chan observed
	quit   chan struct{}
	done   chan struct{}
	sinks  []*worker
	cancel context.CancelFunc // ends every delivery: the exit deadline

	dropped atomic.Int64 // events Observe could not queue
}

// New starts a Notifier. Close it to flush and stop.
func New(cfg Config) *Notifier {
	if cfg.Window <= 0 {
		cfg.Window = 10 * time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Retries == 0 {
		cfg.Retries = 3
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = time.Second
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 64
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.KeptRetry <= 0 {
		cfg.KeptRetry = time.Second
	}
	if cfg.KeptRetryMax < cfg.KeptRetry {
		cfg.KeptRetryMax = max(5*time.Minute, cfg.KeptRetry)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{
		cfg:    cfg,
		dedup:  Dedup{Window: cfg.Window, Host: cfg.Host, Command: cfg.Command},
		events: make(chan observed, 256),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	var ctx context.Context
	ctx, n.cancel = context.WithCancel(context.Background())
	for _, s := range cfg.Sinks {
		w := &worker{sink: s, cfg: &n.cfg, ctx: ctx, wake: make(chan struct{}, 1), kept: cfg.Kept.queue(s)}
		if w.kept != nil {
			w.held = w.kept.held()
			if len(w.held) > 0 {
				cfg.Log.Warn("notify: sending what an earlier run kept", "sink", s.Name(), "kept", len(w.held), "dir", cfg.Kept.Dir())
			}
		}
		n.sinks = append(n.sinks, w)
		w.wg.Add(1)
		go w.run()
	}
	go n.loop()
	return n
}

// observed is an event handed over, and what to close once the
// notifications it made are queued (nil: nothing).
type observed struct {
	e    supervise.Event
	done chan struct{}
}

// keptWait bounds how long Observe waits for a critical notification to be
// kept: one small file, never a sink.
const keptWait = time.Second

// Observe hands an event over, as a supervise.Observer. It never
// waits for a sink. An event that makes a critical notification, while
// notifications are kept, returns once that is on disk (keptWait at
// most), so that the report written at the run's end, or a guardrun
// killed the moment after, finds it kept.
func (n *Notifier) Observe(e supervise.Event) {
	if e.Kind == supervise.Sampled {
		return // data, never an incident: it must not crowd the queue
	}
	o := observed{e: e}
	if n.cfg.Kept != nil && severity(e.Kind) == Critical {
		o.done = make(chan struct{})
	}
	select {
	case n.events <- o:
	default:
		n.dropped.Add(1)
		return
	}
	if o.done != nil {
		t := time.NewTimer(keptWait)
		defer t.Stop()
		select {
		case <-o.done:
		case <-t.C:
		}
	}
}

func (n *Notifier) loop() {
	defer close(n.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	observe := func(o observed) {
		n.send(n.dedup.Observe(o.e, n.cfg.Now()))
		if o.done != nil {
			close(o.done)
		}
	}
	for {
		next := n.dedup.Next()
		if !next.IsZero() {
			timer.Reset(max(next.Sub(n.cfg.Now()), 0))
		}
		var tick <-chan time.Time
		if !next.IsZero() {
			tick = timer.C
		}
		select {
		case o := <-n.events:
			observe(o)
		case <-tick:
			n.send(n.dedup.Tick(n.cfg.Now()))
		case <-n.quit:
			for {
				select {
				case o := <-n.events:
					observe(o)
					continue
				default:
				}
				break
			}
			n.send(n.dedup.Flush())
			return
		}
	}
}

// send logs each notification as one line and queues it for every sink.
func (n *Notifier) send(ns []Notification) {
	for _, x := range ns {
		n.cfg.Log.Warn("notification", "run", x.Run, "kind", x.Kind, "status", x.Status, "count", x.Count, "message", x.Message)
		for _, w := range n.sinks {
			w.enqueue(x)
		}
	}
}

// Report is what Close could and could not deliver. Kept are critical
// notifications not delivered yet and kept on disk for a later run;
// Undelivered are the others, lost.
type Report struct {
	Delivered, Undelivered, Dropped, Kept int
}

// Close stops taking events, sends what dedup still holds folded, and gives
// pending deliveries until deadline. What is left is counted, logged and
// reported, never silently dropped.
func (n *Notifier) Close(deadline time.Duration) Report {
	close(n.quit)
	<-n.done
	timeout := time.AfterFunc(deadline, n.cancel)
	defer timeout.Stop()
	defer n.cancel()
	var r Report
	for _, w := range n.sinks {
		w.close()
		w.wg.Wait()
		w.mu.Lock()
		kept, lost := len(w.held), w.failed
		for _, it := range w.queue {
			if it.file != "" {
				kept++
			} else {
				lost++
			}
		}
		r.Delivered += w.delivered
		r.Undelivered += lost
		r.Kept += kept
		r.Dropped += w.dropped
		if lost+w.dropped > 0 {
			n.cfg.Log.Error("notify: not delivered", "sink", w.sink.Name(), "failed", w.failed, "pending", lost-w.failed, "dropped", w.dropped)
		}
		if kept > 0 {
			n.cfg.Log.Error("notify: critical notifications not delivered, kept for the next guardrun of this name", "sink", w.sink.Name(), "kept", kept, "dir", n.cfg.Kept.Dir())
		}
		w.mu.Unlock()
	}
	if d := int(n.dropped.Load()); d > 0 {
		r.Dropped += d
		n.cfg.Log.Error("notify: events dropped: the notifier fell behind", "events", d)
	}
	return r
}

// worker delivers to one sink, in order, with retries. A critical
// notification is kept on disk from the moment it is queued (so a
// guardrun killed before its retries are done loses none) until it is
// delivered; one the retries did not deliver is held and tried again
// with a backoff of its own, for as long as guardrun runs, and by the
// next guardrun of the name after that.
type worker struct {
	sink Sink
	cfg  *Config
	ctx  context.Context
	wake chan struct{}
	wg   sync.WaitGroup
	kept *keptQueue // nil: nothing is kept for this sink

	mu      sync.Mutex
	queue   []item
	held    []string      // kept files the retries did not deliver, oldest first
	retryAt time.Time     // when held[0] is tried next
	backoff time.Duration // between tries of held[0]; 0 after a delivery
	closed  bool

	delivered, failed, dropped int
}

// item is a queued notification and the file that keeps it ("": none).
type item struct {
	n    Notification
	file string
}

func (w *worker) enqueue(x Notification) {
	it := item{n: x}
	var dropped string
	if w.kept != nil && x.Severity == Critical {
		var err error
		it.file, dropped, err = w.kept.keep(x)
		if err != nil {
			w.cfg.Log.Warn("notify: cannot keep a critical notification on disk: it is lost if the retries fail", "sink", w.sink.Name(), "err", err)
		}
	}
	w.mu.Lock()
	if dropped != "" {
		w.unhold(dropped)
		w.dropped++
		w.cfg.Log.Warn("notify: too many critical notifications kept, the oldest was dropped", "sink", w.sink.Name(), "max", maxKept)
	}
	if len(w.queue) >= w.cfg.Queue {
		// The oldest goes: the newest says most about now, and a
		// summary later still carries the count. A kept one is not
		// lost: it waits on disk with the others the sink missed.
		old := w.queue[0]
		w.queue = w.queue[1:]
		if old.file != "" {
			w.hold(old.file)
		} else {
			w.dropped++
			w.cfg.Log.Warn("notify: queue full, oldest notification dropped", "sink", w.sink.Name())
		}
	}
	w.queue = append(w.queue, it)
	w.mu.Unlock()
	w.poke()
}

func (w *worker) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.poke()
}

func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) run() {
	defer w.wg.Done()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		w.mu.Lock()
		now := time.Now()
		switch {
		case len(w.held) > 0 && !now.Before(w.retryAt):
			// What the sink missed goes first: it is older, and critical.
			file := w.held[0]
			w.mu.Unlock()
			if !w.retry(file) {
				return
			}
			continue
		case len(w.queue) > 0:
			x := w.queue[0]
			w.mu.Unlock()
			if !w.send(x) {
				return
			}
			continue
		case w.closed:
			// What is held stays on disk for the next guardrun.
			w.mu.Unlock()
			return
		}
		var retry <-chan time.Time
		if len(w.held) > 0 {
			if timer == nil {
				timer = time.NewTimer(w.retryAt.Sub(now))
			} else {
				timer.Reset(w.retryAt.Sub(now))
			}
			retry = timer.C
		}
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-retry:
		case <-w.ctx.Done():
			return
		}
	}
}

// send delivers the head of the queue with the retries. It returns false
// when the exit deadline passed: x stays counted as pending, and on disk
// if it is kept.
func (w *worker) send(x item) bool {
	err := w.deliver(x.n)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx.Err() != nil && err != nil {
		return false
	}
	w.queue = w.queue[1:]
	switch {
	case err == nil:
		w.delivered++
		if x.file != "" {
			w.kept.remove(x.file)
		}
		// The sink answers again: what it missed goes now.
		w.retryAt, w.backoff = time.Time{}, 0
	case x.file != "":
		w.hold(x.file)
		w.cfg.Log.Warn("notify: critical notification kept, to be retried until it is delivered", "sink", w.sink.Name(), "kind", x.n.Kind, "next", w.backoff)
	default:
		w.failed++
	}
	return true
}

// retry tries a held notification once; the backoff is between tries of
// it. It returns false when the exit deadline passed.
func (w *worker) retry(file string) bool {
	x, err := w.kept.load(file)
	if err != nil {
		w.cfg.Log.Error("notify: a kept notification cannot be read, removed", "sink", w.sink.Name(), "err", err)
		w.kept.remove(file)
		w.mu.Lock()
		w.unhold(file)
		w.mu.Unlock()
		return true
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.Timeout)
	err = w.sink.Send(ctx, x)
	cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		w.kept.remove(file)
		w.unhold(file)
		w.delivered++
		w.backoff = 0 // the next goes at once
		w.cfg.Log.Info("notify: kept notification delivered", "sink", w.sink.Name(), "kind", x.Kind, "first_seen", x.FirstSeen)
		return true
	}
	if w.ctx.Err() != nil {
		return false
	}
	w.later(time.Now())
	w.cfg.Log.Warn("notify: kept notification not delivered yet", "sink", w.sink.Name(), "kind", x.Kind, "held", len(w.held), "next", w.backoff, "err", err)
	return true
}

// hold puts a kept file among those the sink missed, in age order, and
// schedules a try if none is. The caller holds mu.
func (w *worker) hold(file string) {
	if i, found := slices.BinarySearch(w.held, file); !found {
		w.held = slices.Insert(w.held, i, file)
	}
	if now := time.Now(); !w.retryAt.After(now) {
		w.later(now)
	}
}

// unhold forgets a held file. The caller holds mu.
func (w *worker) unhold(file string) {
	if i := slices.Index(w.held, file); i >= 0 {
		w.held = slices.Delete(w.held, i, i+1)
	}
}

// later backs the next try of what is held off: KeptRetry, doubling to
// KeptRetryMax. The caller holds mu.
func (w *worker) later(now time.Time) {
	w.backoff = min(max(2*w.backoff, w.cfg.KeptRetry), w.cfg.KeptRetryMax)
	w.retryAt = now.Add(w.backoff)
}

// deliver tries a notification with a per-request timeout and retries with
// backoff, until it is delivered, the retries are spent, or the exit
// deadline passes.
func (w *worker) deliver(x Notification) error {
	var err error
	delay := w.cfg.RetryBase
	for try := 0; try <= w.cfg.Retries; try++ {
		if try > 0 {
			select {
			case <-time.After(delay):
			case <-w.ctx.Done():
				return err
			}
			delay *= 2
		}
		ctx, cancel := context.WithTimeout(w.ctx, w.cfg.Timeout)
		err = w.sink.Send(ctx, x)
		cancel()
		if err == nil {
			return nil
		}
		w.cfg.Log.Warn("notify: delivery failed", "sink", w.sink.Name(), "try", try+1, "of", w.cfg.Retries+1, "err", err)
		if w.ctx.Err() != nil {
			return err
		}
	}
	return err
}
