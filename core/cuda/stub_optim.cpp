// core/cuda/stub_optim.cpp: placeholder (CPU-only build stubs of core/cuda/optim.h).
#include "core/cuda/optim.h"
