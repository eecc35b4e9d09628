// The CPU decode kernel built for the avx512 instruction set (flags set in CMakeLists.txt).
#define E3DMM_ISA_NS isa_avx512
#include "decode_cpu_kernel.h"
