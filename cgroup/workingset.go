package cgroup

// memoryStat is the kernel's breakdown of a group's usage (both versions).
const memoryStat = "memory.stat"

// WorkingSet splits a group's usage into the memory the kernel cannot
// simply reclaim and its page cache, from memory.stat:
//
//	working set = usage - (active_file + inactive_file)
//
// The two file LRU lists are the page cache the kernel reclaims before it
// OOM-kills at the ceiling: clean pages are dropped, dirty ones written
// back and dropped. A threshold or a leak forecast that counts them
// restarts healthy services: a static-file server, a log writer, a build
// reading node_modules. What the lists leave out stays in the working
// set, as it should: shmem and tmpfs pages (on the anon lists: they can
// go nowhere without swap), and ramfs and mlocked pages (on the
// unevictable list).
//
// Why not the kubelet's usage - inactive_file: a file read more than once
// is promoted to the active list, and is still reclaimable. Measured here
// on v1: a child that wrote a 300 MiB file and read it three times had
// usage 308 MiB, total_active_file 300 MiB, total_inactive_file 0; the
// kubelet's figure is 308 MiB, this one 8 MiB (the kernel's own memory
// for the group).
//
// Keys are memory.stat's: v2 "active_file" and "inactive_file", v1
// "total_active_file" and "total_inactive_file" (hierarchical, as usage
// is). cache is the page cache as a person knows it: v2 "file", v1
// "total_cache" (both with shmem). A key the kernel does not give reads as
// 0, and the working set never reads above usage or below 0.
func WorkingSet(backend string, usage uint64, stat map[string]uint64) (ws, cache uint64) {
	active, inactive, file := "active_file", "inactive_file", "file"
	if backend == "v1" {
		active, inactive, file = "total_active_file", "total_inactive_file", "total_cache"
	}
	reclaimable := stat[active] + stat[inactive]
	if reclaimable >= usage {
		return 0, stat[file]
	}
	return usage - reclaimable, stat[file]
}
