#include "shardwise_mpi.h"

#include <stdio.h>
#include <string.h>

#if __has_include(<mpi.h>)
#include <mpi.h>
#define SW_HAVE_MPI 1
#elif __has_include(<openmpi/mpi.h>)
#include <openmpi/mpi.h>
#define SW_HAVE_MPI 1
#else
#define SW_HAVE_MPI 0
#endif

#if SW_HAVE_MPI && defined(OMPI_PREDEFINED_GLOBAL)

#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

// Open MPI is opened with dlopen when a launcher started the process (sw_mpi_init), never at
// start-up: a binary that does not link libmpi starts on a machine without Open MPI, and only an
// MPI run needs it. mpi.h gives the types and the compile-time constants; its calls go through
// pointers looked up at load time, and its handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM: each the
// address of one of the library's globals, through OMPI_PREDEFINED_GLOBAL) through dlsym.
static void *mpi_library;

static void *global_symbol(void **cache, const char *name) {
    if (*cache == NULL && mpi_library != NULL) *cache = dlsym(mpi_library, name);
    return *cache;
}
#undef OMPI_PREDEFINED_GLOBAL
#define OMPI_PREDEFINED_GLOBAL(type, global) ({ static void *cached; (type)global_symbol(&cached, #global); })

#define SW_MPI_FUNCTIONS(X) X(MPI_Init_thread) X(MPI_Error_string) X(MPI_Comm_set_errhandler) X(MPI_Comm_rank) \
    X(MPI_Comm_size) X(MPI_Comm_split_type) X(MPI_Comm_split) X(MPI_Comm_free) X(MPI_Finalize) X(MPI_Abort) \
    X(MPI_Get_processor_name) X(MPI_Wtime) X(MPI_Testall) X(MPI_Testsome) X(MPI_Isend) X(MPI_Irecv) \
    X(MPI_Iallgatherv) X(MPI_Iallreduce) X(MPI_Ibarrier)
#define SW_DECLARE(f) static __typeof__(f) *sw_##f;
SW_MPI_FUNCTIONS(SW_DECLARE)
#define MPI_Init_thread (*sw_MPI_Init_thread)
#define MPI_Error_string (*sw_MPI_Error_string)
#define MPI_Comm_set_errhandler (*sw_MPI_Comm_set_errhandler)
#define MPI_Comm_rank (*sw_MPI_Comm_rank)
#define MPI_Comm_size (*sw_MPI_Comm_size)
#define MPI_Comm_split_type (*sw_MPI_Comm_split_type)
#define MPI_Comm_split (*sw_MPI_Comm_split)
#define MPI_Comm_free (*sw_MPI_Comm_free)
#define MPI_Finalize (*sw_MPI_Finalize)
#define MPI_Abort (*sw_MPI_Abort)
#define MPI_Get_processor_name (*sw_MPI_Get_processor_name)
#define MPI_Wtime (*sw_MPI_Wtime)
#define MPI_Testall (*sw_MPI_Testall)
#define MPI_Testsome (*sw_MPI_Testsome)
#define MPI_Isend (*sw_MPI_Isend)
#define MPI_Irecv (*sw_MPI_Irecv)
#define MPI_Iallgatherv (*sw_MPI_Iallgatherv)
#define MPI_Iallreduce (*sw_MPI_Iallreduce)
#define MPI_Ibarrier (*sw_MPI_Ibarrier)

/// Opens Open MPI (SHARDWISE_MPI_LIBRARY, else libmpi.so.40, then libmpi.so) with its symbols
/// global (its plugins resolve against them) and looks up every call.
static int load(char *error, size_t length) {
    if (mpi_library != NULL) return SW_MPI_OK;
    const char *chosen = getenv("SHARDWISE_MPI_LIBRARY");
    const char *names[] = {chosen && *chosen ? chosen : "libmpi.so.40", chosen && *chosen ? NULL : "libmpi.so"};
    char first[256] = "";
    for (int i = 0; i < 2 && names[i] != NULL && mpi_library == NULL; i++) {
        mpi_library = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
        if (mpi_library == NULL && i == 0) snprintf(first, sizeof first, "%s", dlerror());
    }
    if (mpi_library == NULL) {
        snprintf(error, length, "started by an MPI launcher, but no MPI library could be loaded (%s); install Open MPI "
                 "(Debian: apt-get install openmpi-bin) or name its libmpi.so with SHARDWISE_MPI_LIBRARY", first);
        return SW_MPI_ERROR;
    }
#define SW_LOOK_UP(f) sw_##f = (__typeof__(sw_##f))dlsym(mpi_library, #f); \
    if (sw_##f == NULL) { snprintf(error, length, "the MPI library has no %s: Shardwise needs Open MPI 4 or later", #f); return SW_MPI_ERROR; }
    SW_MPI_FUNCTIONS(SW_LOOK_UP)
    if (dlsym(mpi_library, "ompi_mpi_comm_world") == NULL) {
        snprintf(error, length, "the MPI library is not Open MPI (no ompi_mpi_comm_world): this shardwise speaks Open MPI's ABI");
        return SW_MPI_ERROR;
    }
    return SW_MPI_OK;
}

int sw_mpi_available(void) { return 1; }

static void describe(int code, const char *what, char *error, size_t length) {
    char text[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(code, text, &n) != MPI_SUCCESS) snprintf(text, sizeof text, "MPI error %d", code);
    snprintf(error, length, "%s: %s", what, text);
}

int sw_mpi_init(int cpuset_key, int *rank, int *size, int *local_rank, int *local_size,
                char *error, size_t error_length) {
    if (load(error, error_length) != SW_MPI_OK) return SW_MPI_ERROR;
    int provided = 0;
    int code = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
    if (code != MPI_SUCCESS) { describe(code, "MPI_Init_thread", error, error_length); return SW_MPI_ERROR; }
    if (provided < MPI_THREAD_SERIALIZED) {
        snprintf(error, error_length, "MPI_Init_thread: the library gives thread level %d; Shardwise needs MPI_THREAD_SERIALIZED", provided);
        return SW_MPI_ERROR;
    }
    // Errors come back as return codes, so each one is reported with what was being done.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    MPI_Comm host, group;
    code = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, *rank, MPI_INFO_NULL, &host);
    if (code != MPI_SUCCESS) { describe(code, "MPI_Comm_split_type", error, error_length); return SW_MPI_ERROR; }
    code = MPI_Comm_split(host, cpuset_key, *rank, &group);
    if (code != MPI_SUCCESS) { describe(code, "MPI_Comm_split", error, error_length); return SW_MPI_ERROR; }
    MPI_Comm_rank(group, local_rank);
    MPI_Comm_size(group, local_size);
    MPI_Comm_free(&group);
    MPI_Comm_free(&host);
    return SW_MPI_OK;
}

void sw_mpi_finalize(void) { if (mpi_library != NULL) MPI_Finalize(); }

void sw_mpi_abort(int code) { if (mpi_library != NULL) MPI_Abort(MPI_COMM_WORLD, code); }

void sw_mpi_processor_name(char *name, size_t length) {
    char text[MPI_MAX_PROCESSOR_NAME];
    int n = 0;
    if (mpi_library == NULL || MPI_Get_processor_name(text, &n) != MPI_SUCCESS) n = 0;
    text[n] = 0;
    snprintf(name, length, "%s", text);
}

/// Polls requests until all complete or `timeout` seconds pass. MPI progresses
/// only inside its calls, so polling is what moves the data.
static int wait_all(int count, MPI_Request *requests, double timeout, int nap_microseconds, const char *what, char *error, size_t length) {
    double deadline = MPI_Wtime() + timeout;
    for (unsigned long polls = 0;; polls++) {
        int done = 0;
        int code = MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE);
        if (code != MPI_SUCCESS) { describe(code, what, error, length); return SW_MPI_ERROR; }
        if (done) return SW_MPI_OK;
        if (nap_microseconds > 0) usleep((useconds_t)nap_microseconds);
        if ((polls & 1023) == 0 && MPI_Wtime() > deadline) {
            snprintf(error, length, "%s: no answer from the other ranks within %.0f s", what, timeout);
            return SW_MPI_TIMEOUT;
        }
    }
}

static MPI_Op operation(int op) { return op == SW_MPI_MIN ? MPI_MIN : op == SW_MPI_MAX ? MPI_MAX : MPI_SUM; }

/// The exchange's requests, kept between calls so a training step allocates nothing
/// (grown when a larger exchange comes; calls are serialized).
static MPI_Request *exchange_requests = NULL;
static int exchange_capacity = 0;

int sw_mpi_exchange(const sw_mpi_transfer *transfers, int count, double timeout, char *error, size_t error_length) {
    if (count > exchange_capacity) {
        MPI_Request *grown = realloc(exchange_requests, sizeof(MPI_Request) * (size_t)count);
        if (!grown) { snprintf(error, error_length, "gradient exchange: out of memory"); return SW_MPI_ERROR; }
        exchange_requests = grown;
        exchange_capacity = count;
    }
    // Receives first, so sends find a posted buffer.
    int posted = 0, code = MPI_SUCCESS;
    for (int pass = 0; pass < 2 && code == MPI_SUCCESS; pass++) {
        for (int i = 0; i < count && code == MPI_SUCCESS; i++) {
            const sw_mpi_transfer *t = &transfers[i];
            if (t->send != pass) continue;
            code = t->send ? MPI_Isend(t->buffer, (int)t->count, MPI_FLOAT, t->peer, t->tag, MPI_COMM_WORLD, &exchange_requests[posted])
                           : MPI_Irecv(t->buffer, (int)t->count, MPI_FLOAT, t->peer, t->tag, MPI_COMM_WORLD, &exchange_requests[posted]);
            if (code == MPI_SUCCESS) posted++;
        }
    }
    if (code != MPI_SUCCESS) { describe(code, "gradient exchange", error, error_length); return SW_MPI_ERROR; }
    return wait_all(posted, exchange_requests, timeout, 0, "gradient exchange", error, error_length);
}

int sw_mpi_allgatherv_floats(float *buffer, const int *counts, const int *displacements, double timeout,
                             char *error, size_t error_length) {
    MPI_Request request;
    int code = MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buffer, counts, displacements, MPI_FLOAT, MPI_COMM_WORLD, &request);
    if (code != MPI_SUCCESS) { describe(code, "allgather", error, error_length); return SW_MPI_ERROR; }
    return wait_all(1, &request, timeout, 0, "allgather", error, error_length);
}

static int allreduce(void *values, int count, MPI_Datatype type, int op, double timeout, char *error, size_t error_length) {
    MPI_Request request;
    int code = MPI_Iallreduce(MPI_IN_PLACE, values, count, type, operation(op), MPI_COMM_WORLD, &request);
    if (code != MPI_SUCCESS) { describe(code, "allreduce", error, error_length); return SW_MPI_ERROR; }
    return wait_all(1, &request, timeout, 0, "allreduce", error, error_length);
}

int sw_mpi_allreduce_floats(float *values, int count, int op, double timeout, char *error, size_t error_length) {
    return allreduce(values, count, MPI_FLOAT, op, timeout, error, error_length);
}

int sw_mpi_allreduce_doubles(double *values, int count, int op, double timeout, char *error, size_t error_length) {
    return allreduce(values, count, MPI_DOUBLE, op, timeout, error, error_length);
}

int sw_mpi_allreduce_longs(long *values, int count, int op, double timeout, char *error, size_t error_length) {
    return allreduce(values, count, MPI_LONG, op, timeout, error, error_length);
}

static MPI_Request *posted_requests = NULL;
static int posted_capacity = 0;

int sw_mpi_reserve_requests(int count, char *error, size_t error_length) {
    if (count <= posted_capacity) return SW_MPI_OK;
    MPI_Request *grown = realloc(posted_requests, sizeof(MPI_Request) * (size_t)count);
    if (!grown) { snprintf(error, error_length, "overlapped exchange: out of memory"); return SW_MPI_ERROR; }
    for (int i = posted_capacity; i < count; i++) grown[i] = MPI_REQUEST_NULL;
    posted_requests = grown;
    posted_capacity = count;
    return SW_MPI_OK;
}

int sw_mpi_post(const sw_mpi_transfer *t, int slot, char *error, size_t error_length) {
    int code = t->send ? MPI_Isend(t->buffer, (int)t->count, MPI_FLOAT, t->peer, t->tag, MPI_COMM_WORLD, &posted_requests[slot])
                       : MPI_Irecv(t->buffer, (int)t->count, MPI_FLOAT, t->peer, t->tag, MPI_COMM_WORLD, &posted_requests[slot]);
    if (code != MPI_SUCCESS) { describe(code, t->send ? "posting a send" : "posting a receive", error, error_length); return SW_MPI_ERROR; }
    return SW_MPI_OK;
}

int sw_mpi_post_allreduce(float *values, long count, int slot, char *error, size_t error_length) {
    int code = MPI_Iallreduce(MPI_IN_PLACE, values, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &posted_requests[slot]);
    if (code != MPI_SUCCESS) { describe(code, "posting an all-reduce", error, error_length); return SW_MPI_ERROR; }
    return SW_MPI_OK;
}

int sw_mpi_test(int count, int *completed, int *completed_count, char *error, size_t error_length) {
    int n = 0;
    int code = MPI_Testsome(count, posted_requests, &n, completed, MPI_STATUSES_IGNORE);
    if (code != MPI_SUCCESS) { describe(code, "testing transfers", error, error_length); return SW_MPI_ERROR; }
    *completed_count = n == MPI_UNDEFINED ? 0 : n;  // MPI_UNDEFINED: no active request left
    return SW_MPI_OK;
}

int sw_mpi_barrier(double timeout, int nap_microseconds, char *error, size_t error_length) {
    MPI_Request request;
    int code = MPI_Ibarrier(MPI_COMM_WORLD, &request);
    if (code != MPI_SUCCESS) { describe(code, "barrier", error, error_length); return SW_MPI_ERROR; }
    return wait_all(1, &request, timeout, nap_microseconds, "barrier", error, error_length);
}

#else  // no (Open) MPI headers: every call reports it

static int missing(char *error, size_t length) {
    snprintf(error, length, "this shardwise was built without MPI (no mpi.h; install libopenmpi-dev and rebuild)");
    return SW_MPI_ERROR;
}

int sw_mpi_available(void) { return 0; }
int sw_mpi_init(int cpuset_key, int *rank, int *size, int *local_rank, int *local_size, char *error, size_t error_length) {
    (void)cpuset_key; *rank = 0; *size = 1; *local_rank = 0; *local_size = 1;
    return missing(error, error_length);
}
void sw_mpi_finalize(void) {}
void sw_mpi_abort(int code) { (void)code; }
void sw_mpi_processor_name(char *name, size_t length) { snprintf(name, length, "localhost"); }
int sw_mpi_exchange(const sw_mpi_transfer *t, int c, double s, char *e, size_t l) { (void)t; (void)c; (void)s; return missing(e, l); }
int sw_mpi_reserve_requests(int c, char *e, size_t l) { (void)c; return missing(e, l); }
int sw_mpi_post(const sw_mpi_transfer *t, int s, char *e, size_t l) { (void)t; (void)s; return missing(e, l); }
int sw_mpi_post_allreduce(float *v, long c, int s, char *e, size_t l) { (void)v; (void)c; (void)s; return missing(e, l); }
int sw_mpi_test(int c, int *d, int *n, char *e, size_t l) { (void)c; (void)d; *n = 0; return missing(e, l); }
int sw_mpi_allgatherv_floats(float *b, const int *c, const int *d, double s, char *e, size_t l) { (void)b; (void)c; (void)d; (void)s; return missing(e, l); }
int sw_mpi_allreduce_floats(float *v, int c, int o, double s, char *e, size_t l) { (void)v; (void)c; (void)o; (void)s; return missing(e, l); }
int sw_mpi_allreduce_doubles(double *v, int c, int o, double s, char *e, size_t l) { (void)v; (void)c; (void)o; (void)s; return missing(e, l); }
int sw_mpi_allreduce_longs(long *v, int c, int o, double s, char *e, size_t l) { (void)v; (void)c; (void)o; (void)s; return missing(e, l); }
int sw_mpi_barrier(double s, int n, char *e, size_t l) { (void)s; (void)n; return missing(e, l); }

#endif
