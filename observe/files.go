package observe

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, atomically: readers (status, a
// node_exporter textfile collector, a CI step) see the old file or the new
// one, never half of one. The data goes to a new temporary file in the
// same directory, created with O_EXCL (so nothing planted there is
// followed), and is renamed over path; rename replaces a symlink at path
// instead of writing through it. perm must not be world-writable.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	if perm&0o002 != 0 {
		return fmt.Errorf("write %q: refusing world-writable mode %v", path, perm)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	return nil
}
