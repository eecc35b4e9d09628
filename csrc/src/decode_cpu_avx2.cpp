// The CPU decode kernel built for the avx2 instruction set (flags set in CMakeLists.txt).
#define E3DMM_ISA_NS isa_avx2
#include "decode_cpu_kernel.h"
