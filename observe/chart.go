package observe

import (
	"fmt"
	"path/filepath"
	"strings"
)

// ChartFormat returns the format for a --chart path by its extension.
// It is here, apart from the drawing in observe/chart, so that guardrun
// can check --chart at start without linking gonum/plot: its package
// initialisation (the fonts parsed) would be paid by every run.
func ChartFormat(path string) (string, error) {
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".svg", ".png":
		return ext[1:], nil
	case "":
		return "", fmt.Errorf("%s: no extension to tell the format; accepted: .svg, .png", path)
	default:
		return "", fmt.Errorf("%s: %s is not a chart format; accepted: .svg, .png", path, ext)
	}
}
