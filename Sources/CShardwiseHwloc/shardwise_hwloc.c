#define _GNU_SOURCE
#include "shardwise_hwloc.h"

#include <errno.h>
#include <hwloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>

struct sw_topology {
    hwloc_topology_t topology;
    /// The PUs placement may use: hwloc's allowed set (the cgroup's), narrowed to the
    /// process's CPU binding for SW_TOPOLOGY_THIS_SYSTEM_BOUND.
    hwloc_bitmap_t allowed;
};

sw_topology *sw_topology_load(int source, const char *argument, char *error, size_t error_length) {
    hwloc_topology_t t;
    if (hwloc_topology_init(&t) != 0) {
        snprintf(error, error_length, "hwloc_topology_init failed: %s", strerror(errno));
        return NULL;
    }
    int status = 0;
    if (source == SW_TOPOLOGY_XML) {
        status = hwloc_topology_set_xml(t, argument);
        if (status != 0) snprintf(error, error_length, "cannot read hwloc XML: %s", strerror(errno));
    } else if (source == SW_TOPOLOGY_SYNTHETIC) {
        status = hwloc_topology_set_synthetic(t, argument);
        if (status != 0) snprintf(error, error_length, "invalid synthetic description (hwloc syntax, e.g. \"pack:2 numa:2 l3:2 core:8 pu:2\")");
    }
    if (status == 0 && hwloc_topology_load(t) != 0) {
        status = -1;
        snprintf(error, error_length, "hwloc_topology_load failed: %s", strerror(errno));
    }
    if (status != 0) {
        hwloc_topology_destroy(t);
        return NULL;
    }
    sw_topology *result = malloc(sizeof *result);
    result->topology = t;
    result->allowed = hwloc_bitmap_dup(hwloc_topology_get_allowed_cpuset(t));
    if (source == SW_TOPOLOGY_THIS_SYSTEM_BOUND) {
        hwloc_bitmap_t bound = hwloc_bitmap_alloc();
        if (hwloc_get_cpubind(t, bound, HWLOC_CPUBIND_PROCESS) == 0) hwloc_bitmap_and(result->allowed, result->allowed, bound);
        hwloc_bitmap_free(bound);
    }
    return result;
}

void sw_topology_destroy(sw_topology *topology) {
    if (topology == NULL) return;
    hwloc_bitmap_free(topology->allowed);
    hwloc_topology_destroy(topology->topology);
    free(topology);
}

int sw_topology_count(sw_topology *topology, const char *type) {
    hwloc_obj_type_t kind;
    if (strcasecmp(type, "l3") == 0) kind = HWLOC_OBJ_L3CACHE;
    else if (hwloc_type_sscanf(type, &kind, NULL, 0) != 0) return -1;
    return hwloc_get_nbobjs_by_type(topology->topology, kind);
}

int sw_topology_pu_count(sw_topology *topology) {
    return hwloc_get_nbobjs_by_type(topology->topology, HWLOC_OBJ_PU);
}

static int ancestor_index(hwloc_topology_t t, hwloc_obj_type_t type, hwloc_obj_t obj) {
    hwloc_obj_t a = hwloc_get_ancestor_obj_by_type(t, type, obj);
    return a == NULL ? -1 : (int)a->logical_index;
}

static int numa_of_cpuset(hwloc_topology_t t, hwloc_const_cpuset_t set) {
    hwloc_obj_t node = NULL;
    while ((node = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, node)) != NULL) {
        if (hwloc_bitmap_intersects(node->cpuset, set)) return (int)node->logical_index;
    }
    return -1;
}

void sw_topology_pus(sw_topology *topology, sw_pu *out) {
    hwloc_topology_t t = topology->topology;
    hwloc_const_cpuset_t allowed = topology->allowed;
    int n = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU);
    for (int i = 0; i < n; i++) {
        hwloc_obj_t pu = hwloc_get_obj_by_type(t, HWLOC_OBJ_PU, (unsigned)i);
        out[i].os_index = (int)pu->os_index;
        out[i].logical_index = (int)pu->logical_index;
        out[i].core = ancestor_index(t, HWLOC_OBJ_CORE, pu);
        out[i].l3 = ancestor_index(t, HWLOC_OBJ_L3CACHE, pu);
        out[i].package = ancestor_index(t, HWLOC_OBJ_PACKAGE, pu);
        out[i].numa = numa_of_cpuset(t, pu->cpuset);
        out[i].allowed = hwloc_bitmap_isset(allowed, pu->os_index);
    }
}

int sw_topology_numa_count(sw_topology *topology) {
    return hwloc_get_nbobjs_by_type(topology->topology, HWLOC_OBJ_NUMANODE);
}

void sw_topology_numa_nodes(sw_topology *topology, sw_numa_node *out) {
    hwloc_topology_t t = topology->topology;
    int n = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
    for (int i = 0; i < n; i++) {
        hwloc_obj_t node = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, (unsigned)i);
        out[i].os_index = (int)node->os_index;
        out[i].logical_index = (int)node->logical_index;
        out[i].package = ancestor_index(t, HWLOC_OBJ_PACKAGE, node);
        out[i].local_memory = (unsigned long long)node->attr->numanode.local_memory;
    }
}

int sw_topology_numa_distances(sw_topology *topology, unsigned long long *matrix, int n) {
    hwloc_topology_t t = topology->topology;
    struct hwloc_distances_s *distances[1];
    unsigned count = 1;
    unsigned long kind = HWLOC_DISTANCES_KIND_MEANS_LATENCY;
    if (hwloc_distances_get_by_type(t, HWLOC_OBJ_NUMANODE, &count, distances, kind, 0) != 0 || count == 0) return -1;
    struct hwloc_distances_s *d = distances[0];
    int status = -1;
    if ((int)d->nbobjs == n) {
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < n; j++) {
                unsigned li = d->objs[i]->logical_index, lj = d->objs[j]->logical_index;
                matrix[li * (unsigned)n + lj] = (unsigned long long)d->values[i * n + j];
            }
        }
        status = 0;
    }
    hwloc_distances_release(t, d);
    return status;
}

int sw_topology_is_this_system(sw_topology *topology) {
    return hwloc_topology_is_thissystem(topology->topology);
}

int sw_topology_bind_thread(sw_topology *topology, int pu_os_index, char *error, size_t error_length) {
    hwloc_topology_t t = topology->topology;
    hwloc_obj_t pu = hwloc_get_pu_obj_by_os_index(t, (unsigned)pu_os_index);
    if (pu == NULL) {
        snprintf(error, error_length, "no PU with OS index %d", pu_os_index);
        return -1;
    }
    hwloc_cpuset_t set = hwloc_bitmap_dup(pu->cpuset);
    hwloc_bitmap_singlify(set);
    int status = hwloc_set_cpubind(t, set, HWLOC_CPUBIND_THREAD);
    if (status != 0) snprintf(error, error_length, "hwloc_set_cpubind(PU P#%d) failed: %s", pu_os_index, strerror(errno));
    hwloc_bitmap_free(set);
    return status;
}

void *sw_topology_alloc_on_node(sw_topology *topology, size_t bytes, int numa_os_index) {
    hwloc_topology_t t = topology->topology;
    hwloc_obj_t node = hwloc_get_numanode_obj_by_os_index(t, (unsigned)numa_os_index);
    if (node != NULL) {
        void *memory = hwloc_alloc_membind(t, bytes, node->nodeset, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_BYNODESET);
        if (memory != NULL) return memory;
    }
    return hwloc_alloc(t, bytes);
}

void sw_topology_free(sw_topology *topology, void *memory, size_t bytes) {
    hwloc_free(topology->topology, memory, bytes);
}

int sw_topology_area_nodes(sw_topology *topology, const void *memory, size_t bytes, int *nodes, int capacity) {
    hwloc_nodeset_t set = hwloc_bitmap_alloc();
    int status = hwloc_get_area_memlocation(topology->topology, memory, bytes, set, HWLOC_MEMBIND_BYNODESET);
    int count = -1;
    if (status == 0) {
        count = 0;
        int index;
        hwloc_bitmap_foreach_begin(index, set)
            if (count < capacity) nodes[count++] = index;
        hwloc_bitmap_foreach_end();
    }
    hwloc_bitmap_free(set);
    return count;
}

int sw_current_cpu(void) { return sched_getcpu(); }

int sw_thread_id(void) { return (int)gettid(); }
