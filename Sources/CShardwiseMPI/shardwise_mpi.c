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

#if SW_HAVE_MPI

#include <stdlib.h>
#include <unistd.h>

int sw_mpi_available(void) { return 1; }

static void describe(int code, const char *what, char *error, size_t length) {
    char text[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(code, text, &n) != MPI_SUCCESS) snprintf(text, sizeof text, "MPI error %d", code);
    snprintf(error, length, "%s: %s", what, text);
}

int sw_mpi_init(int cpuset_key, int *rank, int *size, int *local_rank, int *local_size,
                char *error, size_t error_length) {
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

void sw_mpi_finalize(void) { MPI_Finalize(); }

void sw_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

void sw_mpi_processor_name(char *name, size_t length) {
    char text[MPI_MAX_PROCESSOR_NAME];
    int n = 0;
    if (MPI_Get_processor_name(text, &n) != MPI_SUCCESS) n = 0;
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

#else  // no MPI headers: every call reports it

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
