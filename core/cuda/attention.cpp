// core/cuda/attention.cpp: placeholder (cuDNN fused attention, issue #5).
#include "core/cuda/attention.h"
