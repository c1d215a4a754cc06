# The backend-specific sources of zt_core: the CUDA backend's .cu files and the libraries they link
# when ZT_WITH_CUDA, the CPU-only stub (core/cuda/stub.cpp: no GPUs, "built without CUDA") otherwise.
# Exactly one implementation of core/cuda/{device,stream,allocator,ops}.h is linked either way, so
# no caller needs an #if. Three .cu files (device, elementwise, nn: each kernel instantiated for
# f32/bf16/f16 only) keep nvcc's share of a CI build small; host-only CUDA code (runtime.cpp:
# streams, events, allocator; blas.cpp: cuBLASLt) is .cpp, built by the host compiler.
# core/cuda/caching_allocator.cpp is plain C++ and in core/CMakeLists.txt for both builds.
#
# Included from core/CMakeLists.txt after add_library(zt_core ...), as `include(ZtCoreBackends)`:
# it runs in core/'s scope, so CMAKE_CURRENT_SOURCE_DIR is core/.
# The CUDA libraries are PRIVATE: no public header of core includes cuda_runtime.h, cudnn.h or
# nccl.h (CONVENTIONS.md 2); a static zt_core still passes them on to the final link.
include_guard(DIRECTORY)

if(NOT TARGET zt_core)
  message(FATAL_ERROR "ZtCoreBackends.cmake: include it from core/CMakeLists.txt after add_library(zt_core)")
endif()

if(ZT_WITH_CUDA)
  target_sources(zt_core PRIVATE
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/device.cu
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/elementwise.cu
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/nn.cu
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/runtime.cpp
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/blas.cpp
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/attention.cpp  # cuDNN fused attention (backend graph API)
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/optim.cu       # fused multi-tensor Adam/AdamW, overflow flag
  )
  target_link_libraries(zt_core PRIVATE
    zt::cuda_options
    CUDA::cudart CUDA::cublas CUDA::cublasLt CUDNN::cudnn NCCL::nccl)
else()
  target_sources(zt_core PRIVATE
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/stub.cpp
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/stub_attention.cpp
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda/stub_optim.cpp
  )
endif()
