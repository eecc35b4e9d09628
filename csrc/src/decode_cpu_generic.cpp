// The CPU decode kernel built for the generic instruction set (flags set in CMakeLists.txt).
#define E3DMM_ISA_NS isa_generic
#include "decode_cpu_kernel.h"
