// C shim for MPI: the few calls and constants Shardwise uses, behind plain C types
// (Open MPI's handles are macros over its own globals, which Swift cannot import).
// Compiled against Open MPI's mpi.h when the headers are present, as stubs that
// report "not built with MPI" otherwise. The library itself is opened with dlopen by
// sw_mpi_init, so the binary starts without Open MPI installed (only MPI runs need it). Only ShardwiseRuntime imports this module.
//
// Every call is made by one thread at a time (MPI_THREAD_SERIALIZED). Calls that
// wait for other ranks take a timeout in seconds: they post a nonblocking
// operation and poll it, and return SW_MPI_TIMEOUT when it has not completed in
// time (Open MPI 4.1 has no timeout of its own on collectives).
#ifndef SHARDWISE_MPI_H
#define SHARDWISE_MPI_H

#include <stddef.h>

enum { SW_MPI_OK = 0, SW_MPI_TIMEOUT = 1, SW_MPI_ERROR = 2 };
enum { SW_MPI_SUM = 0, SW_MPI_MIN = 1, SW_MPI_MAX = 2 };

/// 1 when compiled against Open MPI's headers (sw_mpi_init then opens the library).
int sw_mpi_available(void);

/// MPI_Init_thread (serialized); writes the rank, the size, and this rank's place
/// among the ranks on its host that share the same set of allowed cores
/// (`cpuset_key`: a non-negative hash of the host's allowed cores, computed by the caller).
/// Opens Open MPI first (SHARDWISE_MPI_LIBRARY, else libmpi.so.40).
/// Returns SW_MPI_OK, or SW_MPI_ERROR with a message in `error`.
int sw_mpi_init(int cpuset_key, int *rank, int *size, int *local_rank, int *local_size,
                char *error, size_t error_length);
void sw_mpi_finalize(void);
/// Ends every rank of the job (MPI_Abort on the world communicator).
void sw_mpi_abort(int code);
/// The host name as MPI reports it.
void sw_mpi_processor_name(char *name, size_t length);

/// One point-to-point transfer of `count` floats with `peer`; `send` 1 or 0 (receive).
typedef struct {
    int peer;
    int send;
    int tag;
    float *buffer;
    long count;
} sw_mpi_transfer;

/// Posts every transfer, then waits for all of them.
int sw_mpi_exchange(const sw_mpi_transfer *transfers, int count, double timeout, char *error, size_t error_length);
/// In-place allgather of floats: rank r's part is buffer[displacements[r] ..< + counts[r]].
int sw_mpi_allgatherv_floats(float *buffer, const int *counts, const int *displacements, double timeout,
                             char *error, size_t error_length);
/// In-place allreduce.
int sw_mpi_allreduce_floats(float *values, int count, int op, double timeout, char *error, size_t error_length);
int sw_mpi_allreduce_doubles(double *values, int count, int op, double timeout, char *error, size_t error_length);
int sw_mpi_allreduce_longs(long *values, int count, int op, double timeout, char *error, size_t error_length);
/// Overlapped steps: operations posted one by one into a table of requests (slots), then
/// tested for completion while computing goes on. The table is the process's (calls are serialized).
/// Makes room for `count` slots; call before a step, never during one.
int sw_mpi_reserve_requests(int count, char *error, size_t error_length);
/// Posts transfer `t` (MPI_Isend or MPI_Irecv) into slot `slot`.
int sw_mpi_post(const sw_mpi_transfer *t, int slot, char *error, size_t error_length);
/// Posts an in-place MPI_Iallreduce (sum) of `count` floats into slot `slot`; every rank must
/// post its all-reduces in the same order.
int sw_mpi_post_allreduce(float *values, long count, int slot, char *error, size_t error_length);
/// Tests slots [0, count) once (MPI_Testsome): writes the slots that completed since the last
/// call into `completed` (room for `count`) and their number into `completed_count`.
int sw_mpi_test(int count, int *completed, int *completed_count, char *error, size_t error_length);
/// `nap_microseconds` > 0: sleep between polls (a rank idling while another measures), else spin.
int sw_mpi_barrier(double timeout, int nap_microseconds, char *error, size_t error_length);

#endif
