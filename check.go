package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/proc"
)

// check prints what this host offers and proves it: it creates a small
// memory-limited group, starts a probe child in it the way a run's child
// is started, checks from inside the child that it ran there, tries each
// kernel feature guardrun uses, and removes the group. It returns 0 when
// a ceiling can be enforced.
func check(w io.Writer) int {
	h := cgroup.Discover()
	fmt.Fprintf(w, "memory controller: %s\n", h.Version())
	fmt.Fprintf(w, "kernel:            Linux %s\n", cgroup.KernelRelease())
	if h.V2 != "" {
		ctl := strings.Join(h.V2Controls, " ")
		if ctl == "" {
			ctl = "none"
		}
		fmt.Fprintf(w, "cgroup2 mount:     %s (controllers: %s; this process: %s)\n", h.V2, ctl, h.V2Own)
	}
	if p := cgroup.Placement(h); p != "" {
		fmt.Fprintf(w, "v2 groups go to:   %s\n", p)
	}
	// In a container whose cgroupfs guardrun may not write, --cgroup auto
	// observes the container's own group (cgroup.Enclosing): the kernel
	// holds the container's ceiling and names each OOM kill, and there is
	// no group of guardrun's own to prove.
	if g, err := cgroup.Open(cgroup.Options{Name: fmt.Sprintf("check-auto-%d", os.Getpid()), Backend: "auto"}); err == nil {
		e, enclosed := cgroup.Enclosing(g)
		g.Remove()
		if enclosed {
			fmt.Fprintf(w, "container group:   %s (cgroup %s; guardrun may not make groups here: %s)\n", e.Dir, e.Backend, e.Why)
			fmt.Fprintf(w, "can enforce:       under --cgroup auto, %s\n", e)
			for _, n := range e.Notes() {
				fmt.Fprintf(w, "note:              %s\n", n)
			}
			if e.OOMGroup {
				fmt.Fprintf(w, "memory.oom.group:  1: an OOM kill ends guardrun too; see docs/CONTAINERS.md for singleProcessOOMKill, or give the child a --max below the container's limit\n")
			}
			if e.Ceiling == 0 {
				return 1
			}
			return 0
		}
	}
	if h.V1Memory != "" {
		fmt.Fprintf(w, "cgroup v1 memory:  %s (this process: %s)\n", h.V1Memory, h.V1OwnMemory)
	}
	if h.V1Pids != "" {
		fmt.Fprintf(w, "cgroup v1 pids:    %s\n", h.V1Pids)
	}
	if m, err := proc.ReadMemInfo(); err == nil {
		fmt.Fprintf(w, "MemAvailable:      %s of %s\n", cgroup.FormatSize(m.Available), cgroup.FormatSize(m.Total))
		if m.SwapTotal == 0 {
			fmt.Fprintf(w, "swap:              none\n")
		} else {
			fmt.Fprintf(w, "swap:              %s of %s used (guardrun's default --swap-max 0 keeps the group out of it)\n", cgroup.FormatSize(m.SwapTotal-m.SwapFree), cgroup.FormatSize(m.SwapTotal))
		}
	}
	name := fmt.Sprintf("check-%d", os.Getpid())
	g, err := cgroup.Open(cgroup.Options{Name: name, Backend: h.Version(), Limits: cgroup.Limits{Ceiling: 64 << 20}})
	if err != nil || g.Backend() == "none" {
		why := h.Why()
		if err != nil {
			why = err.Error()
		}
		fmt.Fprintf(w, "can enforce:       no: %s\n", why)
		fmt.Fprintf(w, "                   guardrun would fall back to sampling RSS (--cgroup none), which a fast leak can outrun\n")
		if g != nil {
			printFeatures(w, cgroup.Features(g, cgroup.Proof{}))
		}
		return 1
	}
	proof, perr := cgroup.Prove(g)
	features := cgroup.Features(g, proof)
	dirs := cgroup.Dirs(g)
	if err := g.Remove(); err != nil {
		fmt.Fprintf(w, "can enforce:       no: created %s but could not remove it: %v\n", g.Path(), err)
		return 1
	}
	fmt.Fprintf(w, "test group:        %s (made for this check and removed)\n", strings.Join(dirs, " "))
	if perr != nil {
		fmt.Fprintf(w, "can enforce:       no: %v\n", perr)
		printFeatures(w, features)
		return 1
	}
	fmt.Fprintf(w, "can enforce:       yes, with cgroup %s groups like %s (a probe child ran inside a 64 MiB test group, which was then removed)\n", g.Backend(), g.Path())
	fmt.Fprintf(w, "probe child:       pid %d ran inside %s, by its own /proc/self/cgroup; %s\n", proof.Pid, proof.Inside, proof.How)
	printFeatures(w, features)
	return 0
}

// printFeatures prints each kernel feature guardrun uses with the
// release that brought it, whether this kernel has it (tried, not looked
// up), and what guardrun does without it.
func printFeatures(w io.Writer, fs []cgroup.Feature) {
	for _, f := range fs {
		have := "yes"
		if !f.Have {
			have = "no (" + f.Why + ")"
		}
		fmt.Fprintf(w, "feature:           %s (Linux %s): %s; without it %s\n", f.Name, f.Since, have, f.Without)
	}
}
