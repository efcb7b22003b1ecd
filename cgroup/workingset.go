package cgroup

// memoryStat is the kernel's breakdown of a group's usage (both versions).
const memoryStat = "memory.stat"

// WorkingSet splits a group's usage into the memory the kernel cannot
// simply reclaim and its page cache, from memory.stat:
//
//	working set = usage - (page cache - shmem)
//
// Page cache that is not shmem or tmpfs is dropped (clean) or written back
// and dropped (dirty) before the kernel OOM-kills at the ceiling, so a
// threshold or a leak forecast that counts it restarts healthy services:
// a static-file server, a log writer, a build reading node_modules. shmem
// and tmpfs pages look like cache but can go nowhere without swap, so
// they stay in.
//
// Why not the kubelet's usage - inactive_file: a file read more than once
// is promoted to the active list, and is still reclaimable. Measured here
// on v1: a child that wrote a 300 MiB file and read it three times had
// usage 308 MiB, total_active_file 300 MiB, total_inactive_file 0; the
// kubelet's figure is 308 MiB, this one 8 MiB (the kernel's own memory).
//
// Keys are memory.stat's: v2 "file" and "shmem" (file includes shmem),
// v1 "total_cache" and "total_shmem" (hierarchical, as usage is). A key
// the kernel does not give reads as 0, and the working set never reads
// above usage or below 0.
func WorkingSet(backend string, usage uint64, stat map[string]uint64) (ws, cache uint64) {
	file, shmem := "file", "shmem"
	if backend == "v1" {
		file, shmem = "total_cache", "total_shmem"
	}
	cache = stat[file]
	reclaimable := cache - min(stat[shmem], cache)
	if reclaimable >= usage {
		return 0, cache
	}
	return usage - reclaimable, cache
}
