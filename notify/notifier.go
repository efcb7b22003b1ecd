package notify

import (
	"context"
	"log/slog"
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
}

// Notifier runs the dedup contract on a goroutine of its own and delivers
// to each sink from another, through bounded queues: a sink that is down,
// slow or failing never blocks supervision (Observe never waits) and never
// grows guardrun's memory without bound.
type Notifier struct {
	cfg    Config
	dedup  Dedup
	events chan supervise.Event
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
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{
		cfg:    cfg,
		dedup:  Dedup{Window: cfg.Window, Host: cfg.Host, Command: cfg.Command},
		events: make(chan supervise.Event, 256),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	var ctx context.Context
	ctx, n.cancel = context.WithCancel(context.Background())
	for _, s := range cfg.Sinks {
		w := &worker{sink: s, cfg: &n.cfg, ctx: ctx, wake: make(chan struct{}, 1)}
		n.sinks = append(n.sinks, w)
		w.wg.Add(1)
		go w.run()
	}
	go n.loop()
	return n
}

// Observe hands an event over without waiting; it is supervise.Config.Events.
func (n *Notifier) Observe(e supervise.Event) {
	if e.Kind == supervise.Sampled {
		return // data, never an incident: it must not crowd the queue
	}
	select {
	case n.events <- e:
	default:
		n.dropped.Add(1)
	}
}

func (n *Notifier) loop() {
	defer close(n.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
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
		case e := <-n.events:
			n.send(n.dedup.Observe(e, n.cfg.Now()))
		case <-tick:
			n.send(n.dedup.Tick(n.cfg.Now()))
		case <-n.quit:
			for {
				select {
				case e := <-n.events:
					n.send(n.dedup.Observe(e, n.cfg.Now()))
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

// Report is what Close could and could not deliver.
type Report struct {
	Delivered, Undelivered, Dropped int
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
		r.Delivered += w.delivered
		r.Undelivered += w.failed + len(w.queue)
		r.Dropped += w.dropped
		if w.failed+len(w.queue)+w.dropped > 0 {
			n.cfg.Log.Error("notify: not delivered", "sink", w.sink.Name(), "failed", w.failed, "pending", len(w.queue), "dropped", w.dropped)
		}
		w.mu.Unlock()
	}
	if d := int(n.dropped.Load()); d > 0 {
		r.Dropped += d
		n.cfg.Log.Error("notify: events dropped: the notifier fell behind", "events", d)
	}
	return r
}

// worker delivers to one sink, in order, with retries.
type worker struct {
	sink Sink
	cfg  *Config
	ctx  context.Context
	wake chan struct{}
	wg   sync.WaitGroup

	mu                         sync.Mutex
	queue                      []Notification
	closed                     bool
	delivered, failed, dropped int
}

func (w *worker) enqueue(x Notification) {
	w.mu.Lock()
	if len(w.queue) >= w.cfg.Queue {
		// The oldest goes: the newest says most about now, and a
		// summary later still carries the count.
		w.queue = w.queue[1:]
		w.dropped++
		w.cfg.Log.Warn("notify: queue full, oldest notification dropped", "sink", w.sink.Name())
	}
	w.queue = append(w.queue, x)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) run() {
	defer w.wg.Done()
	for {
		w.mu.Lock()
		if len(w.queue) == 0 {
			closed := w.closed
			w.mu.Unlock()
			if closed {
				return
			}
			select {
			case <-w.wake:
			case <-w.ctx.Done():
				return
			}
			continue
		}
		x := w.queue[0]
		w.mu.Unlock()
		err := w.deliver(x)
		w.mu.Lock()
		if w.ctx.Err() != nil && err != nil {
			w.mu.Unlock()
			return // the exit deadline passed: x stays counted as pending
		}
		w.queue = w.queue[1:]
		if err != nil {
			w.failed++
		} else {
			w.delivered++
		}
		w.mu.Unlock()
	}
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
