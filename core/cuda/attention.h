// core/cuda/attention.h: placeholder, filled by the issue-#5 work on the CUDA attention path.
#pragma once
