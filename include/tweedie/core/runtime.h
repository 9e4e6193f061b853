// Process set-up for CPU runs: threads and the allocator.
//
// Threads:
// Debian's libtorch sizes its OpenMP pool by physical cores, which on a
// 2-vCPU (one core, two hyperthreads) machine is 1, while OpenBLAS starts its
// own pthread pool that then spins in sched_yield against torch's threads.
// Measured here (80 Fashion-MNIST samples, 20 steps, CFG): torch 1 thread
// 16.3 s; torch 2 + OpenBLAS 2 threads 13.2 s; torch 2 + OpenBLAS 1 thread
// 9.4 s.
#pragma once

namespace tweedie {

// Use every hardware thread for torch's intra-op pool and one OpenBLAS thread
// (torch already parallelizes around BLAS). `threads` > 0 overrides the
// count; an explicit OMP_NUM_THREADS / OPENBLAS_NUM_THREADS in the
// environment is respected.
void configure_threads(int threads = 0);

// Allocator: glibc returns large freed blocks to the kernel (munmap / heap
// trimming), so every step of a network re-faults its activations' pages.
// Serving every block from the heap (M_MMAP_MAX = 0; mallopt caps the mmap
// threshold at 32 MB, below one batch's activations) and raising the trim
// threshold keeps them: measured here (`tweedie bench fid --samplers euler
// --nfe 10 -n 200 --batch 250`), generation took 19 s before and 9 s after,
// system time 21 s -> 0.8 s. An explicit MALLOC_* environment setting is
// respected.
void configure_allocator();

}  // namespace tweedie
