// C shim for hwloc 2.x: loads a topology (this machine, an XML file or a
// synthetic description), flattens it into plain arrays, and binds threads and
// memory. hwloc's own types and macros stay in shardwise_hwloc.c; only
// ShardwiseTopology imports this module.
#ifndef SHARDWISE_HWLOC_H
#define SHARDWISE_HWLOC_H

#include <stddef.h>

typedef struct sw_topology sw_topology;

/// SW_TOPOLOGY_THIS_SYSTEM_BOUND: this system, with only the PUs of the process's CPU binding allowed.
enum { SW_TOPOLOGY_THIS_SYSTEM = 0, SW_TOPOLOGY_XML = 1, SW_TOPOLOGY_SYNTHETIC = 2, SW_TOPOLOGY_THIS_SYSTEM_BOUND = 3 };

/// One processing unit and the objects above it (logical indices; -1 when absent).
typedef struct {
    int os_index;
    int logical_index;
    int core;
    int l3;
    int numa;
    int package;
    /// 1 when the PU is in the allowed cpuset (cgroup cpusets remove PUs).
    int allowed;
} sw_pu;

typedef struct {
    int os_index;
    int logical_index;
    int package;
    unsigned long long local_memory;
} sw_numa_node;

/// Loads a topology. `argument` is the XML path or synthetic description.
/// Returns NULL and writes a message into `error` on failure.
sw_topology *sw_topology_load(int source, const char *argument, char *error, size_t error_length);
void sw_topology_destroy(sw_topology *topology);

int sw_topology_count(sw_topology *topology, const char *type);
int sw_topology_pu_count(sw_topology *topology);
void sw_topology_pus(sw_topology *topology, sw_pu *out);
int sw_topology_numa_count(sw_topology *topology);
void sw_topology_numa_nodes(sw_topology *topology, sw_numa_node *out);
/// Fills `matrix` (n x n, row-major) with the NUMA latency matrix; returns 0, or -1 when hwloc has none.
int sw_topology_numa_distances(sw_topology *topology, unsigned long long *matrix, int n);
/// 1 when the topology describes the running machine (binding is possible).
int sw_topology_is_this_system(sw_topology *topology);

/// Binds the calling thread to the PU with this OS index. Returns 0, or errno-style -1 with `error` set.
int sw_topology_bind_thread(sw_topology *topology, int pu_os_index, char *error, size_t error_length);
/// Allocates `bytes` bound to the NUMA node with this OS index (falls back to plain malloc-like
/// allocation when binding is not supported). Free with sw_topology_free.
void *sw_topology_alloc_on_node(sw_topology *topology, size_t bytes, int numa_os_index);
void sw_topology_free(sw_topology *topology, void *memory, size_t bytes);
/// Writes the OS indices of the NUMA nodes holding the area's pages into `nodes`
/// (at most `capacity`); returns how many, or -1 when hwloc cannot tell.
int sw_topology_area_nodes(sw_topology *topology, const void *memory, size_t bytes, int *nodes, int capacity);

/// The CPU the calling thread runs on now (sched_getcpu), or -1.
int sw_current_cpu(void);
/// The kernel's id of the calling thread (gettid), as listed in /proc/self/task.
int sw_thread_id(void);

#endif
