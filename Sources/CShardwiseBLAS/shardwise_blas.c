#include "shardwise_blas.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                         const float *, int, float, float *, int);
typedef char *(*string_fn)(void);
typedef void (*set_threads_fn)(int);
typedef int (*arch_id_fn)(void);
typedef const char *(*arch_string_fn)(int);

static sgemm_fn sgemm_ptr;
static void *library;

int sw_blas_open(const char *path, char *error, size_t error_length) {
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        snprintf(error, error_length, "%s", dlerror());
        return -1;
    }
    sgemm_fn f = (sgemm_fn)dlsym(handle, "cblas_sgemm");
    if (f == NULL) {
        snprintf(error, error_length, "%s has no cblas_sgemm", path);
        dlclose(handle);
        return -1;
    }
    library = handle;
    sgemm_ptr = f;
    return 0;
}

static int use_portable = 0;

void sw_use_portable_kernels(int on) { use_portable = on; }
int sw_portable_kernels_in_use(void) { return use_portable; }

int sw_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
             const float *a, int lda, const float *b, int ldb, float beta,
             float *c, int ldc) {
    if (use_portable && alpha == 1.0f && beta == 0.0f) {
        sw_portable_sgemm(trans_a == SW_BLAS_TRANS, trans_b == SW_BLAS_TRANS, m, n, k, a, lda, b, ldb, c, ldc);
        return 0;
    }
    if (sgemm_ptr == NULL) return -1;
    sgemm_ptr(SW_BLAS_ROW_MAJOR, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
              beta, c, ldc);
    return 0;
}

const char *sw_blas_kernel_name(void) {
    if (library == NULL) return NULL;
    string_fn corename = (string_fn)dlsym(library, "openblas_get_corename");
    if (corename != NULL) return corename();
    arch_id_fn arch_id = (arch_id_fn)dlsym(library, "bli_arch_query_id");
    arch_string_fn arch_string = (arch_string_fn)dlsym(library, "bli_arch_string");
    if (arch_id != NULL && arch_string != NULL) return arch_string(arch_id());
    return NULL;
}

const char *sw_blas_build_description(void) {
    if (library == NULL) return NULL;
    string_fn config = (string_fn)dlsym(library, "openblas_get_config");
    if (config != NULL) return config();
    string_fn version = (string_fn)dlsym(library, "bli_info_get_version_str");
    if (version != NULL) return version();
    return NULL;
}

void sw_blas_set_single_threaded(void) {
    if (library == NULL) return;
    set_threads_fn set = (set_threads_fn)dlsym(library, "openblas_set_num_threads");
    if (set != NULL) set(1);
}

int sw_cpu_has_avx512(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
    return 0;
#endif
}

int sw_cpu_has_avx2_fma(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

const char *sw_cpu_vendor(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_is("intel")) return "intel";
    if (__builtin_cpu_is("amd")) return "amd";
#endif
    return "other";
}

#ifndef SHARDWISE_GIT_COMMIT
#define SHARDWISE_GIT_COMMIT "unknown"
#endif

const char *sw_build_commit(void) { return SHARDWISE_GIT_COMMIT; }
