// Barrier order of the host launches made by the calling OS thread (see
// shim/cuda_host_shim.h): kind 0 ascending thread index, 1 descending, 2 shuffled from `seed`.
#include <cstdint>

extern "C" void bz_host_set_thread_order(int32_t kind, uint64_t seed) {
    bz_host::order_kind = kind;
    bz_host::order_seed = seed;
}

extern "C" int32_t bz_host_thread_order_kind() { return bz_host::order_kind; }

extern "C" uint64_t bz_host_thread_order_seed() { return bz_host::order_seed; }
