// core/cuda/optim.cu: placeholder (fused multi-tensor Adam on the GPU, issue #5).
#include "core/cuda/optim.h"
