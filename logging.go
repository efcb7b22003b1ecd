package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
)

// newLogger is guardrun's one structured log: slog text or JSON on stderr,
// and journal lines with priorities when stderr is the journal.
func newLogger(w io.Writer, format string, quiet, journal bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if quiet {
		opts.Level = slog.LevelError
	}
	if journal {
		// The journal stamps each line itself.
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
		return slog.New(&journalHandler{w: w, format: format, opts: opts})
	}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// journalHandler writes each record as one line with the syslog priority
// prefix sd-daemon(3) defines ("<3>" for an error), which journald turns
// into the entry's PRIORITY=.
type journalHandler struct {
	w      io.Writer
	format string
	opts   *slog.HandlerOptions
	attrs  []slog.Attr
	mu     sync.Mutex
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.opts.Level.Level()
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	var buf bytes.Buffer
	var inner slog.Handler = slog.NewTextHandler(&buf, h.opts)
	if h.format == "json" {
		inner = slog.NewJSONHandler(&buf, h.opts)
	}
	if err := inner.WithAttrs(h.attrs).Handle(ctx, r); err != nil {
		return err
	}
	level := 6
	switch {
	case r.Level >= slog.LevelError:
		level = 3
	case r.Level >= slog.LevelWarn:
		level = 4
	case r.Level < slog.LevelInfo:
		level = 7
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := fmt.Fprintf(h.w, "%s%s", prio(true, level), buf.Bytes())
	return err
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{w: h.w, format: h.format, opts: h.opts, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *journalHandler) WithGroup(string) slog.Handler { return h }

// prio is the syslog priority prefix of a line for the journal, or "".
func prio(journal bool, level int) string {
	if !journal {
		return ""
	}
	return fmt.Sprintf("<%d>", level)
}
