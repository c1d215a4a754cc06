// core/cuda/optim.h: placeholder, filled by the issue-#5 work on the CUDA optim path.
#pragma once
