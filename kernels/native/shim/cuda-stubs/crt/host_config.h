// Stand-in for the CUDA toolkit's crt/host_config.h, used only when the CUDA
// headers at hand lack crt/ (the PyPI wheels ship cuda_runtime.h without it).
// The shim is plain host C++ that never compiles device code, so nothing from
// the real file is needed.
#pragma once
