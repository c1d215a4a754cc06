// core/cuda/stub_attention.cpp: placeholder (CPU-only build stubs of core/cuda/attention.h).
#include "core/cuda/attention.h"
