package notify

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// This file keeps the critical notifications (oom_kill, heap_oom, gave_up,
// preflight_failed) that are not delivered yet, on disk, until they are:
// a receiver that is down for longer than the retries, or a guardrun that
// is killed before its retries are done, must not lose an OOM kill while
// a later minor alert goes out (issue 11). Warnings and resolutions are
// not kept: they say how things are now, and are soon out of date.

// KeptSchema names the layout of a kept notification's file.
const KeptSchema = "guardrun.pending/v1"

// maxKept bounds what one run keeps for one sink: a crash loop against a
// receiver that is gone for a week must not fill the state directory (a
// tmpfs under /run). Past it the oldest goes, logged and counted: the
// newest say most about now, and each carries the restart count.
const maxKept = 100

// KeptDir is where a run's kept notifications are: pending/NAME in the
// state directory.
func KeptDir(stateDir, run string) string { return filepath.Join(stateDir, "pending", run) }

// CountKept is how many notifications dir keeps, for every sink: what the
// state file and the report call pending_notifications. No directory is
// none.
func CountKept(dir string) int {
	names, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	return len(names)
}

// keptFile is one kept notification. It names its sink redacted, for a
// person who looks; never the target itself, which may carry a token. A
// later guardrun re-sends it only to a target it was given itself, the
// one whose key is in the file's name.
type keptFile struct {
	Schema       string       `json:"schema"`
	Sink         string       `json:"sink"` // Redact'ed, as logs show it
	Kept         time.Time    `json:"kept"`
	Notification Notification `json:"notification"`
}

// Kept is a run's kept notifications: a directory with a file per
// notification, KEY-STAMP.json. KEY is the first 16 hex digits of the
// SHA-256 of the sink's target (the URL with its token, or the command),
// so each sink has its own and no secret is in a name; STAMP orders them,
// oldest first. The directory is locked (flock) for as long as it is
// open: one guardrun of a name at a time keeps and re-sends them.
type Kept struct {
	dir  string
	lock *os.File
	now  func() time.Time

	mu    sync.Mutex
	last  int64           // the latest stamp handed out
	taken map[string]bool // keys with a queue: one sink each
}

// OpenKept opens dir, which the caller has made and checked (owned by this
// user or root, writable by nobody else), and locks it.
func OpenKept(dir string) (*Kept, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("pending notifications %q: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("pending notifications %q: another guardrun of this name holds them", dir)
		}
		return nil, fmt.Errorf("pending notifications %q: lock: %w", dir, err)
	}
	return &Kept{dir: dir, lock: f, now: time.Now, taken: map[string]bool{}}, nil
}

// Dir is the directory Kept keeps in.
func (k *Kept) Dir() string { return k.dir }

// Close lets the next guardrun of the name have the directory.
func (k *Kept) Close() error { return k.lock.Close() }

// keyed is a sink that names its receiver for good, so what it did not
// deliver can be kept for it.
type keyed interface{ key() string }

// queue is sink's share of the directory, with what earlier runs kept for
// it; nil for a sink that cannot be keyed or whose target another sink of
// this run already has.
func (k *Kept) queue(s Sink) *keptQueue {
	ks, ok := s.(keyed)
	if k == nil || !ok {
		return nil
	}
	sum := sha256.Sum256([]byte(ks.key()))
	key := hex.EncodeToString(sum[:8])
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.taken[key] {
		return nil
	}
	k.taken[key] = true
	q := &keptQueue{k: k, key: key, name: s.Name()}
	names, _ := filepath.Glob(filepath.Join(k.dir, key+"-*.json"))
	for _, p := range names {
		q.files = append(q.files, filepath.Base(p))
	}
	slices.Sort(q.files) // fixed-width stamps: by name is by age
	return q
}

// keptQueue is what one sink keeps. It is safe from any goroutine: the
// notifier's loop keeps, the sink's worker loads and removes.
type keptQueue struct {
	k         *Kept
	key, name string

	mu    sync.Mutex
	files []string // oldest first
}

// keep writes n to a new file and returns its name, and the name of the
// oldest file if it had to go to stay within maxKept.
func (q *keptQueue) keep(n Notification) (file, dropped string, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.files) >= maxKept {
		dropped, q.files = q.files[0], q.files[1:]
		os.Remove(filepath.Join(q.k.dir, dropped))
	}
	now := q.k.now()
	q.k.mu.Lock()
	stamp := max(now.UnixNano(), q.k.last+1)
	q.k.last = stamp
	q.k.mu.Unlock()
	file = fmt.Sprintf("%s-%019d.json", q.key, stamp)
	b, err := json.MarshalIndent(keptFile{Schema: KeptSchema, Sink: q.name, Kept: now, Notification: n}, "", "  ")
	if err == nil {
		err = writeFile(filepath.Join(q.k.dir, file), append(b, '\n'), 0o600)
	}
	if err != nil {
		return "", dropped, err
	}
	q.files = append(q.files, file)
	return file, dropped, nil
}

// load reads a kept notification back. A file that is not one (it cannot
// be: the directory is ours and files are replaced whole) is an error.
func (q *keptQueue) load(file string) (Notification, error) {
	path := filepath.Join(q.k.dir, file)
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return Notification{}, err
	}
	defer f.Close()
	var kf keptFile
	if err := json.NewDecoder(f).Decode(&kf); err != nil || kf.Schema != KeptSchema {
		return Notification{}, fmt.Errorf("%q: not a kept notification (%s): %v", path, KeptSchema, err)
	}
	return kf.Notification, nil
}

// remove forgets a kept file: it was delivered, or cannot be.
func (q *keptQueue) remove(file string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if i := slices.Index(q.files, file); i >= 0 {
		q.files = slices.Delete(q.files, i, i+1)
	}
	os.Remove(filepath.Join(q.k.dir, file))
}

// held is what the sink has kept, oldest first.
func (q *keptQueue) held() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.files)
}

// writeFile replaces path with data atomically and never writes through a
// symlink planted at path: the data goes to a new file made with O_EXCL
// (CreateTemp) in the same directory, which is renamed over path; rename
// replaces a symlink rather than following it. It is observe.WriteFile's
// pattern: observe imports this package (for RedactArgs), so this one
// cannot import it.
func writeFile(path string, data []byte, perm os.FileMode) error {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+strings.TrimSuffix(base, ".json")+".tmp*")
	if err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the rename there is nothing to remove
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync() // a kept alert is worth a flush: it may be all that is left of an incident
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	return nil
}
